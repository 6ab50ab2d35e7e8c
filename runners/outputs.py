"""Collect a job's declared outputs without ever reading outside its working directory.

Every path component is opened relative to its parent with O_NOFOLLOW, and what is finally read is checked with
fstat, so a symlink (``out -> /etc/passwd``, ``hop -> /proc/self``) or a swap during collection is refused rather
than followed. Directories are zipped with entries prefixed by the declared name, as the official client unpacks.

A regular file goes to the store without a copy where the store can take it so (``Mover``: a reflink, or a move
by rename; engine/cas.py says when that is safe). A moved file is no longer in the working directory, so the move
is first recorded in the run dir (``moved_log``, out of the job's reach): a collection again after a restart finds
the output in the store by that record.
"""
from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO, Callable, Optional, Protocol

from runners.fsops import walk_fd
from runners.safezip import UnsafeArchive, open_beneath
from runners.spec import OutputDecl, OutputError, OutputFile

if TYPE_CHECKING:
    import zipfile

# sink(stream) stores the bytes and returns (sha256, size)
Sink = Callable[[BinaryIO], "tuple[str, int]"]


class Mover(Protocol):
    def move_output(self, fd: int, parent_fd: int, name: str,
                    before_move: Callable[[str, int], None]) -> "Optional[tuple[str, int]]":
        """The file into the store without a copy (clone or rename); None when that cannot be done here."""

    def claim_output(self, sha256: str, size: int) -> bool:
        """Whether the store holds this object (a moved output, after a restart); it is then the job's."""


def _read_moved(path: Optional[str]) -> dict[str, tuple[str, int]]:
    out: dict[str, tuple[str, int]] = {}
    if not path:
        return out
    try:
        with open(path) as f:
            for line in f:
                try:
                    d = json.loads(line)
                    out[d["rel"]] = (str(d["sha256"]), int(d["size"]))
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a crash: that move did not happen either
    except FileNotFoundError:
        pass
    return out


def _recorder(path: str, rel: str) -> Callable[[str, int], None]:
    def record(sha: str, size: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, (json.dumps({"rel": rel, "sha256": sha, "size": size}) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    return record


@dataclass
class Collected:
    files: list[OutputFile]
    errors: list[OutputError]


MAX_DEPTH = 128  # levels under a declared output directory; deeper entries are the job's problem, reported


def _zip_dir(dir_fd: int, arc_root: str, zf: "zipfile.ZipFile", skipped: list[str]) -> None:
    import zipfile
    """The tree under ``dir_fd`` into ``zf``, iteratively (any depth costs no recursion): regular files and
    directories only, each opened with O_NOFOLLOW relative to its parent; what is not collected goes to
    ``skipped`` with the reason."""
    for parent_fd, rel, entry, depth in walk_fd(dir_fd, max_depth=MAX_DEPTH):
        name = f"{arc_root}/{rel}"
        shown = repr(name)  # a job's file name goes to the system log quoted: no newline forges a line there
        try:
            fd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=parent_fd)
        except OSError:
            skipped.append(f"{shown} (a symlink or a vanished entry)")
            continue
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                zf.writestr(zipfile.ZipInfo(name + "/"), b"")
                if depth >= MAX_DEPTH and any(True for _ in os.scandir(fd)):
                    skipped.append(f"{shown}/... (nested deeper than {MAX_DEPTH} levels)")
            elif stat.S_ISREG(st.st_mode):
                info = zipfile.ZipInfo(name)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = (stat.S_IFREG | (st.st_mode & 0o777)) << 16
                with os.fdopen(os.dup(fd), "rb") as src, zf.open(info, "w", force_zip64=True) as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
            else:
                skipped.append(f"{shown} (a special file)")
        finally:
            os.close(fd)


def collect(work: Path, outputs: list[tuple[OutputDecl, str]], sink: Sink, tmp_dir: str,
            note: Callable[[str], None] = lambda m: None, mover: Optional[Mover] = None,
            moved_log: Optional[str] = None) -> Collected:
    """Every declared output into the store (``sink``, or ``mover`` for a regular file where it can);
    ``moved_log``: the run dir's record of outputs moved out of ``work`` (required for a move)."""
    files: list[OutputFile] = []
    errors: list[OutputError] = []
    moved = _read_moved(moved_log) if mover is not None else {}
    for desc, rel in outputs:
        def fail(kind: str, why: str) -> None:
            if kind == "NOT_FOUND" and rel in moved and mover is not None and mover.claim_output(*moved[rel]):
                # moved into the store by a collection that a restart cut short
                files.append(OutputFile(path=desc.path, var=desc.var, sha256=moved[rel][0], size=moved[rel][1]))
                return
            errors.append(OutputError(path=desc.path, var=desc.var, kind=kind, description=why))
            note(f"output {desc.path!r}: {why}")

        try:
            parent_fd, name = open_beneath(str(work), rel)
        except FileNotFoundError:
            fail("NOT_FOUND", "file not found")
            continue
        except UnsafeArchive as e:
            fail("UPLOAD_FAILED", f"refused: {e}")
            continue
        try:
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=parent_fd)
            except FileNotFoundError:
                fail("NOT_FOUND", "file not found")
                continue
            except OSError as e:
                if e.errno == 40:  # ELOOP
                    fail("UPLOAD_FAILED", "is a symlink; symlinks are not followed")
                else:
                    fail("UPLOAD_FAILED", f"cannot open: {e.strerror}")
                continue
            try:
                st = os.fstat(fd)
                if stat.S_ISREG(st.st_mode):
                    got = None
                    if mover is not None and moved_log:
                        got = mover.move_output(fd, parent_fd, name, _recorder(moved_log, rel))
                    if got is None:
                        with os.fdopen(os.dup(fd), "rb") as src:
                            sha, size = sink(src)
                    else:
                        sha, size = got
                    files.append(OutputFile(path=desc.path, var=desc.var, sha256=sha, size=size))
                elif stat.S_ISDIR(st.st_mode):
                    arc_root = PurePosixPath(desc.path.rstrip("/")).name or "output"
                    skipped: list[str] = []
                    import tempfile  # only for directory outputs (a node's start-up time)
                    import zipfile
                    with tempfile.TemporaryFile(dir=tmp_dir) as tmp:
                        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
                            _zip_dir(fd, arc_root, zf, skipped)
                        tmp.seek(0)
                        sha, size = sink(tmp)
                    for s in skipped[:20]:
                        note(f"output {desc.path!r}: {s} not collected")
                    if len(skipped) > 20:
                        note(f"output {desc.path!r}: {len(skipped) - 20} more entries not collected")
                    files.append(OutputFile(path=desc.path, var=desc.var, sha256=sha, size=size, zipped=True))
                else:
                    fail("UPLOAD_FAILED", "not a regular file or directory")
            finally:
                os.close(fd)
        finally:
            os.close(parent_fd)
    return Collected(files, errors)
