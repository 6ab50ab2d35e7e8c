"""ZIP extraction that cannot write outside its target (zip slip) and stops decompression bombs while streaming."""
from __future__ import annotations

import errno
import os
import shutil
import stat
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import zipfile


class UnsafeArchive(ValueError):
    """The archive has an entry that would land outside the target or breaks a limit; the message names it."""


@dataclass(frozen=True)
class ZipLimits:
    max_entries: int = 10_000
    max_bytes: int = 10 * (1 << 30)
    # Uncompressed/compressed, checked on the bytes actually produced, for each entry and for the whole archive
    # (many small entries add up); below ``small_bytes`` the ratio does not matter (a bomb needs size to hurt),
    # and a 1 GB CSV that zips 20x is an ordinary input.
    max_ratio: int = 100
    small_bytes: int = 1 << 20
    # Free space left on the target's filesystem after extraction (the engine and the other jobs need it too).
    reserve_bytes: int = 256 << 20


class _Budget:
    """What one extraction may still write: the limits, and the free disk of the target minus the reserve."""

    def __init__(self, target: str, zip_size: int, limits: ZipLimits):
        self.limits = limits
        self.zip_size = max(zip_size, 1)
        self.total = 0
        try:
            free = shutil.disk_usage(target).free
        except OSError:
            free = limits.max_bytes
        self.disk = max(0, free - limits.reserve_bytes)

    def add(self, n: int, name: str) -> None:
        self.total += n
        lim = self.limits
        if self.total > lim.max_bytes:
            raise UnsafeArchive(f"archive expands past the limit of {lim.max_bytes} bytes at {name!r}")
        if self.total > self.disk:
            raise UnsafeArchive(f"archive expands past the free disk space ({self.disk} bytes after a reserve of "
                                f"{lim.reserve_bytes}) at {name!r}")
        if self.total > lim.small_bytes and self.total > self.zip_size * lim.max_ratio:
            raise UnsafeArchive(f"archive expands more than {lim.max_ratio}x its {self.zip_size} bytes at "
                                f"{name!r} (a zip bomb?)")


def _entry_parts(name: str) -> list[str]:
    if "\\" in name or "\x00" in name:
        raise UnsafeArchive(f"entry {name!r} has a backslash or NUL in its name")
    p = PurePosixPath(name)
    if p.is_absolute() or name.startswith("/"):
        raise UnsafeArchive(f"entry {name!r} has an absolute path")
    parts = [x for x in p.parts if x not in ("", ".")]
    if any(x == ".." for x in parts):
        raise UnsafeArchive(f"entry {name!r} points outside the target directory")
    if not parts:
        raise UnsafeArchive(f"entry {name!r} has an empty name")
    return parts


def _open_dir(parent_fd: int, name: str, create: bool) -> int:
    if create:
        try:
            os.mkdir(name, 0o755, dir_fd=parent_fd)
        except FileExistsError:
            pass
    # O_NOFOLLOW: a symlink planted earlier (by another archive or the job) is never traversed.
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)


def extract(zip_path: str, target: str, limits: ZipLimits = ZipLimits()) -> list[str]:
    """Extract regular files and directories of ``zip_path`` under ``target``; returns the top-level names.

    Symlinks, devices and other special entries are refused, as are names with ``..`` or absolute paths. Each
    directory on the way is opened relative to its parent without following symlinks, so an existing symlink in
    the target cannot redirect a write either. A corrupt archive, an entry that conflicts with what is already
    there (a file where a directory is, or the other way round), and an archive that expands past its limits or
    the free disk are refused too. Raises UnsafeArchive naming the entry.
    """
    import zipfile  # only for jobs with archives (a node's start-up time)
    os.makedirs(target, exist_ok=True)
    top: list[str] = []
    try:
        with zipfile.ZipFile(zip_path) as zf:
            infos = zf.infolist()
            if len(infos) > limits.max_entries:
                raise UnsafeArchive(f"archive has {len(infos)} entries, more than the limit of {limits.max_entries}")
            budget = _Budget(target, os.path.getsize(zip_path), limits)
            root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
            try:
                for info in infos:
                    _extract_one(zf, info, root_fd, top, budget, limits)
            finally:
                os.close(root_fd)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
        raise UnsafeArchive(f"archive is corrupt or not a zip file ({type(e).__name__}: {e})") from None
    return top


def _extract_one(zf: zipfile.ZipFile, info: zipfile.ZipInfo, root_fd: int, top: list[str], budget: _Budget,
                 limits: ZipLimits) -> None:
    parts = _entry_parts(info.filename)
    mode = info.external_attr >> 16
    is_dir = info.is_dir()
    ftype = stat.S_IFMT(mode)  # 0 when the archiver stored permissions only
    if ftype and not is_dir and ftype != stat.S_IFREG:
        raise UnsafeArchive(f"entry {info.filename!r} is not a regular file or directory")
    if parts[0] not in top:
        top.append(parts[0])
    dirs = parts if is_dir else parts[:-1]
    fd = os.dup(root_fd)
    try:
        for d in dirs:
            try:
                nfd = _open_dir(fd, d, create=True)
            except OSError as e:
                if e.errno in (errno.ENOTDIR, errno.ELOOP):
                    raise UnsafeArchive(f"entry {info.filename!r} needs {d!r} to be a directory, and it is a file "
                                        "or a symlink (two inputs that conflict?)") from None
                raise
            os.close(fd)
            fd = nfd
        if is_dir:
            return
        try:
            out = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o755, dir_fd=fd)
        except OSError as e:
            if e.errno in (errno.EISDIR, errno.ELOOP):
                raise UnsafeArchive(f"entry {info.filename!r} would replace a directory or a symlink (two inputs "
                                    "that conflict?)") from None
            raise
        written = 0
        entry_budget = max(info.compress_size, 1) * limits.max_ratio
        with zf.open(info) as src, os.fdopen(out, "wb") as dst:
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                written += len(chunk)
                budget.add(len(chunk), info.filename)
                if written > entry_budget and written > limits.small_bytes:
                    raise UnsafeArchive(
                        f"entry {info.filename!r} expands more than {limits.max_ratio}x (a zip bomb?)")
                dst.write(chunk)
    finally:
        os.close(fd)


def open_beneath(root: str, rel: str, *, create_dirs: bool = False) -> tuple[int, str]:
    """Open the parent directory of ``rel`` under ``root`` without following any symlink on the way.

    Returns (parent_fd, last_name); the caller closes the fd. Raises UnsafeArchive (a ValueError) for ``..``,
    absolute paths or a symlink among the components, FileNotFoundError when a component is missing.
    """
    parts = _entry_parts(rel)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for d in parts[:-1]:
            try:
                nfd = _open_dir(fd, d, create=create_dirs)
            except OSError as e:
                if e.errno in (40, 20):  # ELOOP: a symlink; ENOTDIR: a file where a directory should be
                    raise UnsafeArchive(f"path {rel!r} passes through {d!r}, which is a symlink or not a directory")
                raise
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd, parts[-1]
