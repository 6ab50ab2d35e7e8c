"""ZIP extraction that cannot write outside its target (zip slip) and stops decompression bombs while streaming."""
from __future__ import annotations

import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath


class UnsafeArchive(ValueError):
    """The archive has an entry that would land outside the target or breaks a limit; the message names it."""


@dataclass(frozen=True)
class ZipLimits:
    max_entries: int = 10_000
    max_bytes: int = 10 * (1 << 30)
    max_ratio: int = 100  # uncompressed/compressed, per entry, checked on the bytes actually produced


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
    the target cannot redirect a write either. Raises UnsafeArchive naming the first bad entry.
    """
    os.makedirs(target, exist_ok=True)
    top: list[str] = []
    total = 0
    with zipfile.ZipFile(zip_path) as zf:
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            raise UnsafeArchive(f"archive has {len(infos)} entries, more than the limit of {limits.max_entries}")
        root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for info in infos:
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
                        nfd = _open_dir(fd, d, create=True)
                        os.close(fd)
                        fd = nfd
                    if is_dir:
                        continue
                    out = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o755,
                                  dir_fd=fd)
                    written = 0
                    budget = max(info.compress_size, 1) * limits.max_ratio
                    with zf.open(info) as src, os.fdopen(out, "wb") as dst:
                        while True:
                            chunk = src.read(1 << 20)
                            if not chunk:
                                break
                            written += len(chunk)
                            total += len(chunk)
                            if total > limits.max_bytes:
                                raise UnsafeArchive(
                                    f"archive expands past the limit of {limits.max_bytes} bytes at {info.filename!r}")
                            if written > budget and written > (1 << 20):
                                raise UnsafeArchive(
                                    f"entry {info.filename!r} expands more than {limits.max_ratio}x (a zip bomb?)")
                            dst.write(chunk)
                finally:
                    os.close(fd)
        finally:
            os.close(root_fd)
    return top


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
