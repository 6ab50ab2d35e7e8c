"""Content-addressed blob store on disk: objects/<2 hex>/<62 hex>, written through tmp/ and verified first.

``write`` verifies the digest and size before the object appears under its name (tmp -> fsync -> rename ->
fsync dir), so a partial or corrupt upload is never visible; leftover temp files are swept at start.

Objects are shared by every job that holds the same bytes, so no delete may race a writer. The protocol: a job's
reference to a digest is recorded (``lease``) before the store is asked whether the object exists, and under the
digest's lock; a delete re-checks, under the same lock, that nothing references the digest any more. Whoever
comes second sees the other's work.
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, Optional

from engine.errors import InvalidArgument, ResourceExhausted

SHA_RE = re.compile(r"[0-9a-f]{64}")
CHUNK = 1 << 20
STRIPES = 64
Lease = Callable[[str], None]  # records a job's reference to a digest (Store.add_blob_ref)


class DigestMismatch(InvalidArgument):
    pass


def file_digest(path: str | Path) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


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
        dfd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def write(self, chunks: Iterator[bytes], *, expect_sha: str | None = None,
              expect_size: int | None = None, lease: Optional[Lease] = None) -> tuple[str, int]:
        """Store a stream; verify it against the expected digest and size when given. Returns (sha, size).
        ``lease`` records who holds the object, before it is published (or found there already)."""
        h = hashlib.sha256()
        size = 0
        fd_path = self.tmp / f"{os.getpid()}-{time.monotonic_ns()}-{os.urandom(4).hex()}"
        try:
            with open(os.open(fd_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                for chunk in chunks:
                    size += len(chunk)
                    if expect_size is not None and size > expect_size:
                        raise DigestMismatch(f"body is longer than the declared size {expect_size}")
                    h.update(chunk)
                    f.write(chunk)
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
        return self.write(iter(lambda: stream.read(CHUNK), b""), lease=lease)

    def put_file(self, path: str | Path, expect_sha: str | None = None,
                 lease: Optional[Lease] = None) -> tuple[str, int]:
        with open(path, "rb") as f:
            return self.write(iter(lambda: f.read(CHUNK), b""), expect_sha=expect_sha, lease=lease)

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
