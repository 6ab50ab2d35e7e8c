"""The blob store's ways in without a copy (engine/cas.py adopt, claim), the collection that uses them
(runners/outputs.py), the in-kernel copy of inputs (runners/fsops.py clone_or_copy) and the file endpoint's
streamed PUT and sendfile GET (engine/files.py): real files, a real HTTP server on loopback."""
from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest
import requests

from engine.cas import BlobStore, file_digest
from engine.files import FileServer, Signer
from runners.fsops import clone_or_copy
from runners.outputs import collect
from runners.spec import OutputDecl


@pytest.fixture
def store(tmp_path):
    return BlobStore(tmp_path / "blobs")


def opened(work: Path, name: str):
    pfd = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
    return pfd, os.open(name, os.O_RDONLY, dir_fd=pfd)


def test_clone_or_copy_makes_an_independent_file(tmp_path):
    data = os.urandom((5 << 20) + 7)
    (tmp_path / "src").write_bytes(data)
    s = os.open(tmp_path / "src", os.O_RDONLY)
    d = os.open(tmp_path / "dst", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        how = clone_or_copy(s, d)
    finally:
        os.close(s)
        os.close(d)
    assert how in ("clone", "copy_range", "sendfile", "copy")
    assert (tmp_path / "dst").read_bytes() == data
    assert os.stat(tmp_path / "dst").st_ino != os.stat(tmp_path / "src").st_ino
    with open(tmp_path / "dst", "r+b") as f:
        f.write(b"EDITED")
    assert (tmp_path / "src").read_bytes() == data  # the copy's edit is its own


def test_adopt_moves_a_quiet_output_under_its_hash_recording_it_first(store, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    data = os.urandom(3 << 20)
    (work / "out").write_bytes(data)
    os.chmod(work / "out", 0o755)
    sha = hashlib.sha256(data).hexdigest()
    seen, leased = [], []

    def before(s, n):  # the record comes while the file is still the job's and not yet a blob
        seen.append(((work / "out").exists(), store.has(s), s, n))

    pfd, fd = opened(work, "out")
    try:
        assert store.adopt(fd, pfd, "out", leased.append, before) == (sha, len(data))
    finally:
        os.close(fd)
        os.close(pfd)
    assert seen == [(True, False, sha, len(data))] and leased == [sha]
    assert not (work / "out").exists()
    assert file_digest(store.path(sha)) == (sha, len(data))
    assert os.stat(store.path(sha)).st_mode & 0o777 == 0o600
    assert list(store.tmp.iterdir()) == []


@pytest.mark.parametrize("why", ["a hard link", "a writer", "an mmap"])
def test_adopt_does_not_move_what_could_still_change(store, tmp_path, why):
    import mmap
    work = tmp_path / "work"
    work.mkdir()
    (work / "out").write_bytes(b"x" * 8192)
    keep = None
    if why == "a hard link":
        os.link(work / "out", work / "kept")
    elif why == "a writer":
        keep = open(work / "out", "r+b")
    else:
        with open(work / "out", "r+b") as f:
            keep = mmap.mmap(f.fileno(), 0)  # shared and writable, after the fd is closed
    pfd, fd = opened(work, "out")
    try:
        assert store.adopt(fd, pfd, "out") is None
    finally:
        os.close(fd)
        os.close(pfd)
        if keep is not None:
            keep.close()
    assert (work / "out").read_bytes() == b"x" * 8192 and list(store.all()) == []


def test_adopt_leaves_the_file_when_the_store_has_the_digest(store, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    sha, _ = store.write(iter([b"same"]))
    (work / "out").write_bytes(b"same")
    pfd, fd = opened(work, "out")
    try:
        assert store.adopt(fd, pfd, "out", before_move=lambda s, n: pytest.fail("nothing is moved")) == (sha, 4)
    finally:
        os.close(fd)
        os.close(pfd)
    assert (work / "out").read_bytes() == b"same"


class StoreIO:
    """What the local backend gives collect(): the store's sink, mover and claim."""

    def __init__(self, store: BlobStore):
        self.store, self.leased = store, []

    def store_output(self, stream):
        return self.store.put_stream(stream, self.leased.append)

    def move_output(self, fd, parent_fd, name, before_move):
        return self.store.adopt(fd, parent_fd, name, self.leased.append, before_move)

    def claim_output(self, sha, size):
        return self.store.claim(sha, size, self.leased.append)


def test_a_collection_again_after_a_move_finds_the_output_in_the_store(store, tmp_path):
    work = tmp_path / "work"
    (work / "d").mkdir(parents=True)
    (work / "res.bin").write_bytes(os.urandom(1 << 20))
    (work / "d" / "f").write_bytes(b"in a directory")
    sha = hashlib.sha256((work / "res.bin").read_bytes()).hexdigest()
    outputs = [(OutputDecl("res.bin", ""), "res.bin"), (OutputDecl("d", ""), "d"),
               (OutputDecl("none.bin", ""), "none.bin")]
    io_ = StoreIO(store)
    log = str(tmp_path / "outputs.moved")
    first = collect(work, outputs, io_.store_output, str(tmp_path), mover=io_, moved_log=log)
    assert [(f.path, f.sha256) for f in first.files][0] == ("res.bin", sha) and not (work / "res.bin").exists()
    assert [e.path for e in first.errors] == ["none.bin"]
    # a restart: collected again, from the same working directory and run dir
    again = collect(work, outputs, io_.store_output, str(tmp_path), mover=io_, moved_log=log)
    assert [(f.path, f.sha256, f.size) for f in again.files] == [(f.path, f.sha256, f.size) for f in first.files]
    assert [e.path for e in again.errors] == ["none.bin"] and io_.leased.count(sha) == 2
    # the record alone is no output: its blob must be there
    store.path(sha).unlink()
    gone = collect(work, outputs, io_.store_output, str(tmp_path), mover=io_, moved_log=log)
    assert sorted(e.path for e in gone.errors) == ["none.bin", "res.bin"]


@pytest.fixture
def files(store):
    srv = FileServer(("127.0.0.1", 0), store, lambda base: Signer(b"k" * 32, base))
    srv.start()
    yield srv
    srv.stop()


def test_a_put_in_pieces_is_hashed_as_written_and_a_cut_one_is_no_blob(files, store, tmp_path):
    from dsjobs.client import _CountingReader, _sha256_size
    data = os.urandom((9 << 20) + 3)
    (tmp_path / "up").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    assert _sha256_size(str(tmp_path / "up")) == (sha, len(data))
    url = files.signer.url("PUT", sha, len(data))
    counted = []
    with open(tmp_path / "up", "rb") as f:  # as the client uploads: 1 MiB pieces, with a Content-Length
        r = requests.put(url, data=_CountingReader(f, counted.append), headers={"Content-Length": str(len(data))})
    assert r.status_code == 201, r.text
    assert counted == [1 << 20] * 9 + [3]
    assert file_digest(store.path(sha)) == (sha, len(data))
    other = os.urandom(6 << 20)
    osha = hashlib.sha256(other).hexdigest()
    path = files.signer.url("PUT", osha, len(other)).split(str(files.server_address[1]), 1)[1]
    with socket.create_connection(files.server_address) as s:
        s.sendall(f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(other)}\r\n\r\n".encode() + other[:5 << 20])
        s.shutdown(socket.SHUT_WR)  # the client goes away 1 MiB short
        assert b" 400 " in s.recv(1 << 16).split(b"\r\n")[0] + b" "
    assert not store.has(osha) and list(store.tmp.iterdir()) == []


def test_a_get_sends_the_blob_whole(files, store):
    data = os.urandom((7 << 20) + 11)
    sha, _ = store.write(iter([data]))
    r = requests.get(files.signer.url("GET", sha, len(data)))
    assert r.status_code == 200 and r.headers["Content-Length"] == str(len(data)) and r.content == data
