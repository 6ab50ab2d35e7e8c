"""Files at disk speed, without giving up what a blob is: inputs reach the working directory by reflink or an
in-kernel copy (never a hard link), outputs enter the store by reflink or by a move, and a blob's name stays its
hash whatever a job does to its files. On this machine's default filesystem (ext4: no reflinks) and on XFS with
reflinks, on a loop device."""
from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from engine.cas import file_digest
from runners.fsops import FICLONE
from tests.conftest import Server
from tests.helpers import blob, response, run, work_dir


def reflinks(d: Path) -> bool:
    """Whether the filesystem holding ``d`` clones files (FICLONE)."""
    a, b = d / ".probe-a", d / ".probe-b"
    a.write_bytes(b"x" * 4096)
    try:
        with open(a, "rb") as src, open(b, "wb") as dst:
            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
        return True
    except OSError:
        return False
    finally:
        a.unlink()
        b.unlink(missing_ok=True)


def shared_extents(path: Path) -> bool:
    """Whether the file shares any extent with another file (FIEMAP's FIEMAP_EXTENT_SHARED, as filefrag shows)."""
    out = subprocess.run(["filefrag", "-v", str(path)], check=True, capture_output=True, text=True).stdout
    return any("shared" in line for line in out.splitlines()[3:])


@pytest.fixture
def xfs(tmp_path):
    """An XFS filesystem with reflinks (mkfs.xfs -m reflink=1) on a loop device, mounted under tmp_path.

    Root is needed: only root attaches loop devices and mounts filesystems (the suite runs as root; mkfs.xfs comes
    from tools/test-deps.sh). The mount and the loop device are always given back, whatever the test did."""
    assert os.geteuid() == 0, "this test attaches a loop device and mounts a filesystem: it needs root"
    img, mnt = tmp_path / "xfs.img", tmp_path / "xfs"
    with open(img, "wb") as f:
        f.truncate(512 << 20)  # sparse; XFS wants at least 300 MB
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(img)], check=True)
    dev = subprocess.run(["losetup", "--find", "--show", str(img)], check=True, capture_output=True,
                         text=True).stdout.strip()
    try:
        mnt.mkdir()
        subprocess.run(["mount", "-t", "xfs", dev, str(mnt)], check=True)
        try:
            yield mnt
        finally:
            if subprocess.run(["umount", str(mnt)]).returncode != 0:
                subprocess.run(["umount", "-l", str(mnt)], check=True)  # still busy: detached now, freed when let go
    finally:
        subprocess.run(["losetup", "-d", dev], check=True)


EDIT = "printf EDITED | dd of=in.bin conv=notrunc status=none"


def check_edit_in_place(server: Server, tmp_path: Path) -> tuple[str, Path, bytes]:
    """A job edits its input in place; the blob still hashes to its name, and the next job gets the bytes as
    uploaded. Returns (the first job's id, its input blob, the input's bytes)."""
    data = os.urandom(3 << 20)
    f, _ = blob(data, "in.bin")
    jid, op = run(server.client, jpb.JobParameters(cmd=f"{EDIT} && head -c 1M /dev/urandom > out.bin",
                                                   output_files=[jpb.FileDesc(path="out.bin")]), [(f, data)])
    assert not op.HasField("error"), op.error.message
    assert response(op).result.return_code == 0
    placed = work_dir(server.data_dir, jid) / "in.bin"
    assert placed.read_bytes()[:6] == b"EDITED"  # the job did edit its copy
    stored = server.engine.blobs.path(f.sha256)
    assert os.stat(placed).st_ino != os.stat(stored).st_ino and os.stat(stored).st_nlink == 1  # no hard link
    assert file_digest(stored) == (f.sha256, len(data))
    jid2, op2 = run(server.client, jpb.JobParameters(cmd="cp in.bin again.bin",
                                                     output_files=[jpb.FileDesc(path="again.bin")]), [(f, data)])
    assert not op2.HasField("error"), op2.error.message
    assert response(op2).output_files[0].file.sha256 == f.sha256  # the next job sees the bytes as uploaded
    return jid, stored, data


def check_output(server: Server, jid: str, cloned: bool) -> None:
    """The job's output is in the store under its hash: cloned (the job's file stays, sharing extents with the
    blob) or moved (the job's file is now the blob, the engine's and 0600)."""
    job = server.client.get(jid)
    out = job.output_files[0]
    stored = server.engine.blobs.path(out.sha256)
    assert file_digest(stored) == (out.sha256, out.size_bytes)
    assert stat_mode(stored) == 0o600 and os.stat(stored).st_uid == os.geteuid()
    left = work_dir(server.data_dir, jid) / "out.bin"
    moved = Path(server.data_dir) / "jobs" / jid / "outputs.moved"
    if cloned:
        assert left.exists() and shared_extents(stored) and shared_extents(left)
        assert not moved.exists()
    else:
        assert not left.exists()  # renamed into the store: no copy
        assert out.sha256 in moved.read_text()  # recorded before the move, for a collection after a restart


def stat_mode(p: Path) -> int:
    return os.stat(p).st_mode & 0o777


def test_on_the_default_filesystem_an_edited_input_leaves_its_blob_intact_and_outputs_are_moved(tmp_path):
    server = Server(tmp_path / "data")
    try:
        cloned = reflinks(server.engine.blobs.tmp)
        jid, _, _ = check_edit_in_place(server, tmp_path)
        check_output(server, jid, cloned)
    finally:
        server.stop()


def test_on_xfs_inputs_and_outputs_are_reflinked_and_an_edited_input_leaves_its_blob_intact(xfs, tmp_path):
    assert reflinks(xfs)
    server = Server(xfs / "data")
    try:
        jid, stored, data = check_edit_in_place(server, tmp_path)
        placed = work_dir(server.data_dir, jid) / "in.bin"
        # cloned: what the job did not edit still shares the blob's extents; the edited block was copied on write
        assert shared_extents(placed) and shared_extents(stored)
        assert hashlib.sha256(placed.read_bytes()).digest() != hashlib.sha256(data).digest()
        check_output(server, jid, cloned=True)
    finally:
        server.stop()
