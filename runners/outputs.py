"""Collect a job's declared outputs without ever reading outside its working directory.

Every path component is opened relative to its parent with O_NOFOLLOW, and what is finally read is checked with
fstat, so a symlink (``out -> /etc/passwd``, ``hop -> /proc/self``) or a swap during collection is refused rather
than followed. Directories are zipped with entries prefixed by the declared name, as the official client unpacks.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO, Callable

from runners.fsops import walk_fd
from runners.safezip import UnsafeArchive, open_beneath
from runners.spec import OutputDecl, OutputError, OutputFile

if TYPE_CHECKING:
    import zipfile

# sink(stream) stores the bytes and returns (sha256, size)
Sink = Callable[[BinaryIO], "tuple[str, int]"]


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
            note: Callable[[str], None] = lambda m: None) -> Collected:
    files: list[OutputFile] = []
    errors: list[OutputError] = []
    for desc, rel in outputs:
        def fail(kind: str, why: str) -> None:
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
                    with os.fdopen(os.dup(fd), "rb") as src:
                        sha, size = sink(src)
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
