"""File operations on trees a job wrote: iterative (a tree 100 000 levels deep costs no recursion), relative to
directory descriptors, never following a symlink, and never blocking on a special file.

Whatever a job does to its own files (FIFOs, depth, symlinks, devices, floods) is its problem, never the
engine's: these are the only ways the engine walks or reads them.
"""
from __future__ import annotations

import errno
import os
import stat
from typing import Iterator, Optional

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)


def read_regular(path: str, max_bytes: int, *, tail: bool = False) -> Optional[bytes]:
    """At most ``max_bytes`` of a regular file (its end with ``tail``); None when ``path`` is missing, a symlink,
    a FIFO, a device or a directory. Never blocks: a FIFO is opened non-blocking and then refused."""
    try:
        fd = os.open(path, _FILE_FLAGS)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        if tail and st.st_size > max_bytes:
            os.lseek(fd, st.st_size - max_bytes, os.SEEK_SET)
        out, left = [], max_bytes
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            out.append(chunk)
            left -= len(chunk)
        return b"".join(out)
    except OSError:
        return None
    finally:
        os.close(fd)


def walk_fd(root_fd: int, max_depth: int = 0) -> Iterator[tuple[int, str, os.DirEntry, int]]:
    """Every entry under the directory ``root_fd``, depth first: (parent_fd, relative path, entry, depth). The
    parent fd stays open while its entries are yielded. ``max_depth`` > 0 stops descending past that depth (the
    caller sees the deeper directories as entries and decides). Directories are opened with O_NOFOLLOW."""
    stack: list[tuple[int, str, int, Iterator[os.DirEntry]]] = [(root_fd, "", 0, iter(sorted(
        os.scandir(root_fd), key=lambda e: e.name)))]
    try:
        while stack:
            fd, rel, depth, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                if fd != root_fd:
                    os.close(fd)
                continue
            path = f"{rel}/{entry.name}" if rel else entry.name
            yield fd, path, entry, depth + 1
            if entry.is_dir(follow_symlinks=False) and not (max_depth and depth + 1 >= max_depth):
                try:
                    child = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue
                try:
                    listing = sorted(os.scandir(child), key=lambda e: e.name)
                except OSError:
                    os.close(child)
                    continue
                stack.append((child, path, depth + 1, iter(listing)))
    finally:
        for fd, _, _, _ in stack:
            if fd != root_fd:
                os.close(fd)


def rmtree(path: str) -> None:
    """Remove ``path`` and everything under it, however deep, without following symlinks; missing is fine.

    Depth costs neither recursion nor descriptors: every directory met is first renamed up beside ``path`` (a
    rename within one filesystem is O(1)), then emptied and removed, so at most two directories are open."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    parent = os.path.dirname(os.path.abspath(path)) or "/"
    pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        todo, n = [os.path.basename(os.path.abspath(path))], 0
        while todo:
            name = todo.pop()
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
            except FileNotFoundError:
                continue
            except OSError as e:
                if e.errno in (errno.ENOTDIR, errno.ELOOP):
                    os.unlink(name, dir_fd=pfd)
                    continue
                raise
            try:
                for entry in list(os.scandir(fd)):
                    if entry.is_dir(follow_symlinks=False):
                        n += 1
                        up = f".rmtree-{os.getpid()}-{id(todo):x}-{n}"
                        os.rename(entry.name, up, src_dir_fd=fd, dst_dir_fd=pfd)
                        todo.append(up)
                    else:
                        try:
                            os.unlink(entry.name, dir_fd=fd)
                        except FileNotFoundError:
                            pass
            finally:
                os.close(fd)
            try:
                os.rmdir(name, dir_fd=pfd)
            except FileNotFoundError:
                pass
    finally:
        os.close(pfd)


def walk_paths(root: str) -> Iterator[tuple[int, str, os.DirEntry]]:
    """walk_fd from a path: (parent_fd, path relative to root, entry)."""
    try:
        fd = os.open(root, _DIR_FLAGS)
    except OSError:
        return
    try:
        for pfd, rel, entry, _ in walk_fd(fd):
            yield pfd, rel, entry
    finally:
        os.close(fd)


def chown_tree(root: str, uid: int, gid: int) -> None:
    """Give a tree (a root container's outputs) to ``uid:gid``, symlinks themselves included, never their targets."""
    try:
        os.lchown(root, uid, gid)
    except OSError:
        return
    for pfd, _, entry in walk_paths(root):
        try:
            os.chown(entry.name, uid, gid, dir_fd=pfd, follow_symlinks=False)
        except OSError:
            pass


def tree_size(root: str) -> int:
    total = 0
    for _, _, entry in walk_paths(root):
        try:
            total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            pass
    return total


def private_tree(root: str) -> None:
    """Nothing under ``root`` readable or writable by anyone but its owner."""
    try:
        st = os.lstat(root)
        os.chmod(root, stat.S_IMODE(st.st_mode) & 0o7700)
    except OSError:
        return
    for pfd, _, entry in walk_paths(root):
        try:
            st = entry.stat(follow_symlinks=False)
            if st.st_mode & 0o077 and not stat.S_ISLNK(st.st_mode):
                os.chmod(entry.name, stat.S_IMODE(st.st_mode) & 0o7700, dir_fd=pfd)
        except (OSError, NotImplementedError):
            pass


def write_private(path, text: str) -> None:
    """``text`` into ``path``, 0600 and never through a link a job may have planted there."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)


def clone_or_copy(src_fd: int, dst_fd: int) -> str:
    """The whole of ``src_fd`` into the empty ``dst_fd``, as cheaply as the filesystem allows: a reflink (XFS,
    btrfs: the two files share extents and diverge on write, so neither sees the other's later edits), else an
    in-kernel copy (copy_file_range, then sendfile: no pass through user space), else read/write. Never a hard
    link: the two stay separate files whatever the filesystem. Returns how it was done: clone, copy_range,
    sendfile or copy."""
    import fcntl
    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
        return "clone"
    except OSError:
        pass  # EOPNOTSUPP (ext4, tmpfs), EXDEV (another filesystem), EINVAL: copy instead
    size = os.fstat(src_fd).st_size
    for how, step in (("copy_range", lambda off, n: os.copy_file_range(src_fd, dst_fd, n, off, off)),
                      ("sendfile", lambda off, n: os.sendfile(dst_fd, src_fd, off, n))):
        off = 0
        try:
            while off < size:
                n = step(off, min(size - off, 1 << 30))
                if n == 0:
                    break  # the source got shorter meanwhile: what there is was copied
                off += n
            return how
        except OSError as e:
            if off or e.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF):
                raise
    off = 0
    while chunk := os.pread(src_fd, 1 << 20, off):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst_fd, view):]
        off += len(chunk)
    return "copy"
