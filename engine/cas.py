"""Content-addressed blob store on disk: objects/<2 hex>/<62 hex>, written through tmp/ and verified first.

``write`` verifies the digest and size before the object appears under its name (tmp -> fsync -> rename ->
fsync dir), so a partial or corrupt upload is never visible; leftover temp files are swept at start. Every byte
is read once: hashed as it is written (an upload), or as it is cloned or moved in (``adopt``: a job's output).

Objects are shared by every job that holds the same bytes, so no delete may race a writer. The protocol: a job's
reference to a digest is recorded (``lease``) before the store is asked whether the object exists, and under the
digest's lock; a delete re-checks, under the same lock, that nothing references the digest any more. Whoever
comes second sees the other's work.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import stat
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, Optional

from engine.errors import InvalidArgument, ResourceExhausted
from runners.fsops import FICLONE

SHA_RE = re.compile(r"[0-9a-f]{64}")
CHUNK = 1 << 20
HASH_CHUNK = 4 << 20  # hashlib releases the GIL for the whole piece: few, large reads
WRITEBACK = 32 << 20  # an upload's bytes are sent to disk in steps of this much as they arrive
STRIPES = 64
Lease = Callable[[str], None]  # records a job's reference to a digest (Store.add_blob_ref)


class DigestMismatch(InvalidArgument):
    pass


def file_digest(path: str | Path) -> tuple[str, int]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return fd_digest(fd)
    finally:
        os.close(fd)


def fd_digest(fd: int) -> tuple[str, int]:
    """(sha256, size) of an open file from its start, in one pass, into one reused buffer."""
    h, n = hashlib.sha256(), 0
    # sized to the file: a job's logs are mostly tiny, and a 4 MiB buffer is 4 MiB to zero for each of them
    buf = bytearray(min(HASH_CHUNK, max(os.fstat(fd).st_size + 1, 1 << 16)))
    view = memoryview(buf)
    while got := os.preadv(fd, [buf], n):
        h.update(view[:got])
        n += got
    return h.hexdigest(), n


def _views(stream: BinaryIO) -> Iterator[memoryview]:
    """A stream's bytes as views of one reused buffer: each is consumed (hashed, written) before the next read."""
    if not hasattr(stream, "readinto"):
        yield from iter(lambda: stream.read(CHUNK), b"")
        return
    buf = bytearray(HASH_CHUNK)
    view = memoryview(buf)
    while n := stream.readinto(buf):
        yield view[:n]


_sync_file_range = None


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing these bytes to disk now (sync_file_range(2), SYNC_FILE_RANGE_WRITE: it
    does not wait): the disk works while more of the body arrives, and the fsync at the end has little left.
    Durability is still the fsync's; where the call is missing this does nothing."""
    global _sync_file_range
    if _sync_file_range is None:
        try:
            import ctypes
            fn = ctypes.CDLL(None, use_errno=True).sync_file_range
            fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
            _sync_file_range = fn
        except (OSError, AttributeError):
            _sync_file_range = False
    if _sync_file_range:
        _sync_file_range(fd, offset, length, 2)  # SYNC_FILE_RANGE_WRITE


def _no_writer(fd: int) -> bool:
    """Whether no process has this file open for writing (or mapped writable) right now: a read lease is granted
    only then. Taken and given back at once, never held (a held lease's break would signal the engine)."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError:
        return False  # EAGAIN: a writer; EACCES/EINVAL: neither owner nor CAP_LEASE, or no leases here
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    return True


def _fsync_dir(path: str | Path, dir_fd: Optional[int] = None) -> None:
    fd = os.open(path, os.O_RDONLY, dir_fd=dir_fd)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"
        for d in (self.root, self.objects, self.tmp):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._locks = [threading.Lock() for _ in range(STRIPES)]

    def lock(self, sha: str) -> threading.Lock:
        return self._locks[int(sha[:4], 16) % STRIPES] if SHA_RE.fullmatch(sha) else self._locks[0]

    @contextmanager
    def locked(self, shas: Iterable[str]):
        """The locks of several digests at once, in one order (no deadlock between two such callers)."""
        with ExitStack() as stack:
            for lk in sorted({id(self.lock(s)): self.lock(s) for s in shas}.items()):
                stack.enter_context(lk[1])
            yield

    def path(self, sha: str) -> Path:
        if not SHA_RE.fullmatch(sha):
            raise InvalidArgument(f"invalid sha256 {sha!r}")
        return self.objects / sha[:2] / sha[2:]

    def has(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def missing(self, shas: Iterable[str]) -> set[str]:
        return {s for s in shas if not self.has(s)}

    def size(self, sha: str) -> int:
        return self.path(sha).stat().st_size

    def sweep_tmp(self, older_than_s: float = 0) -> int:
        n, now = 0, time.time()
        for p in self.tmp.iterdir():
            try:
                if now - p.stat().st_mtime >= older_than_s:
                    p.unlink()
                    n += 1
            except FileNotFoundError:
                pass
        return n

    def _publish(self, tmp_path: Path, sha: str) -> None:
        final = self.path(sha)
        final.parent.mkdir(exist_ok=True, mode=0o700)
        os.replace(tmp_path, final)
        _fsync_dir(final.parent)

    def _tmp_name(self) -> Path:
        return self.tmp / f"{os.getpid()}-{time.monotonic_ns()}-{os.urandom(4).hex()}"

    def write(self, chunks: Iterator[bytes], *, expect_sha: str | None = None,
              expect_size: int | None = None, lease: Optional[Lease] = None) -> tuple[str, int]:
        """Store a stream; verify it against the expected digest and size when given. Returns (sha, size).
        ``lease`` records who holds the object, before it is published (or found there already)."""
        h = hashlib.sha256()
        size = 0
        fd_path = self._tmp_name()
        try:
            with open(os.open(fd_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                flushed = 0
                for chunk in chunks:
                    size += len(chunk)
                    if expect_size is not None and size > expect_size:
                        raise DigestMismatch(f"body is longer than the declared size {expect_size}")
                    h.update(chunk)
                    f.write(chunk)
                    if size - flushed >= WRITEBACK:
                        f.flush()
                        _start_writeback(f.fileno(), flushed, size - flushed)
                        flushed = size
                f.flush()
                os.fsync(f.fileno())
            sha = h.hexdigest()
            if expect_size is not None and size != expect_size:
                raise DigestMismatch(f"body has {size} bytes, the declared size is {expect_size}")
            if expect_sha is not None and sha != expect_sha:
                raise DigestMismatch(f"body has sha256 {sha}, the declared one is {expect_sha}")
            with self.lock(sha):
                if lease is not None:
                    lease(sha)
                if self.has(sha):
                    fd_path.unlink()
                else:
                    self._publish(fd_path, sha)
            return sha, size
        except OSError as e:
            fd_path.unlink(missing_ok=True)
            if e.errno == 28:  # ENOSPC
                raise ResourceExhausted("no space left on the device holding the file store") from None
            raise
        except BaseException:
            fd_path.unlink(missing_ok=True)
            raise

    def put_stream(self, stream: BinaryIO, lease: Optional[Lease] = None) -> tuple[str, int]:
        return self.write(_views(stream), lease=lease)

    def put_file(self, path: str | Path, expect_sha: str | None = None,
                 lease: Optional[Lease] = None) -> tuple[str, int]:
        with open(path, "rb") as f:
            return self.write(_views(f), expect_sha=expect_sha, lease=lease)

    def adopt(self, fd: int, parent_fd: int, name: str, lease: Optional[Lease] = None,
              before_move: Callable[[str, int], None] = lambda sha, size: None) -> Optional[tuple[str, int]]:
        """A job's finished output file (``name`` in the directory ``parent_fd``, open as ``fd``) into the store
        without copying its bytes, each read once; (sha, size), or None when neither way applies here (the caller
        then streams it through ``write``).

        A reflink (XFS, btrfs): the clone is a file of the store's own that shares the output's extents; it is
        hashed, fsynced and published, and the job's file stays as it was. Otherwise a move: the file itself is
        hashed, fsynced and renamed to its digest, given to the engine (owner, 0600) first. A move is done only
        when nothing else can change the bytes after they are hashed: the file is on the store's filesystem,
        has no other name (nlink 1: no hard link the job kept elsewhere), nobody has it open for writing or
        mapped writable (a read lease is granted), and its size and mtime did not move while it was hashed.
        ``before_move(sha, size)`` is called first (the node records that the output now lives in the store, for
        a collection after a restart), and only when the file is moved: when the store has the digest already, the
        job's file is left where it is."""
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        got = self._adopt_clone(fd, lease)
        if got is not None:
            return got
        if st.st_nlink != 1 or st.st_dev != os.stat(self.objects).st_dev or not _no_writer(fd):
            return None
        sha, size = fd_digest(fd)
        after = os.fstat(fd)
        if (after.st_size, after.st_mtime_ns, after.st_nlink) != (size, st.st_mtime_ns, 1) or not _no_writer(fd):
            return None  # it changed under the hash: copied instead, as it is then
        with self.lock(sha):
            if lease is not None:
                lease(sha)
            if self.has(sha):
                return sha, size  # the store has these bytes already: nothing to write, nothing to sync
        try:
            os.fsync(fd)  # outside the lock, as write() does: the stripe's other digests do not wait on the disk
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise ResourceExhausted("no space left on the device holding the file store") from None
            raise
        with self.lock(sha):
            if self.has(sha):  # published meanwhile by another writer (the lease is recorded already)
                return sha, size
            final = self.path(sha)
            final.parent.mkdir(exist_ok=True, mode=0o700)
            try:
                if (after.st_uid, after.st_gid) != (os.geteuid(), os.getegid()):
                    os.fchown(fd, os.geteuid(), os.getegid())
                os.fchmod(fd, 0o600)
            except OSError:
                return None  # a job user's file and no right to take it: a copy
            before_move(sha, size)
            try:
                os.rename(name, final, src_dir_fd=parent_fd)
            except OSError as e:
                if e.errno == errno.EXDEV:  # another mount of the same filesystem
                    return None
                raise
            _fsync_dir(final.parent)
            os.fsync(parent_fd)
        return sha, size

    def _adopt_clone(self, fd: int, lease: Optional[Lease]) -> Optional[tuple[str, int]]:
        tmp = self._tmp_name()
        out = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                fcntl.ioctl(out, FICLONE, fd)
            except OSError:
                os.close(out)
                out = -1
                tmp.unlink()
                return None  # EOPNOTSUPP (ext4, tmpfs), EXDEV (another filesystem)
            sha, size = fd_digest(out)  # the clone's bytes: a snapshot, whatever happens to the job's file
            with self.lock(sha):
                if lease is not None:
                    lease(sha)
                known = self.has(sha)
            if not known:
                os.fsync(out)
            os.close(out)
            out = -1
            with self.lock(sha):
                if known or self.has(sha):
                    tmp.unlink()
                else:
                    self._publish(tmp, sha)
            return sha, size
        except BaseException as e:
            if out >= 0:
                os.close(out)
            tmp.unlink(missing_ok=True)
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                raise ResourceExhausted("no space left on the device holding the file store") from None
            raise

    def claim(self, sha: str, size: int, lease: Optional[Lease] = None) -> bool:
        """Whether the store holds this object of this size, leased first (a moved output found again after a
        restart)."""
        if not SHA_RE.fullmatch(sha):
            return False
        with self.lock(sha):
            if lease is not None:
                lease(sha)
            try:
                return self.size(sha) == size
            except FileNotFoundError:
                return False

    def delete(self, sha: str, referenced: Callable[[str], bool]) -> bool:
        """Remove the object unless ``referenced(sha)``, checked under the digest's lock; True when removed."""
        with self.lock(sha):
            if referenced(sha):
                return False
            self.path(sha).unlink(missing_ok=True)
            return True

    def all(self) -> Iterator[str]:
        for d in self.objects.iterdir():
            for p in d.iterdir():
                yield d.name + p.name
