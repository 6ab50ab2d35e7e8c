"""runners/s3sync.py without an S3 server where none is needed: snapshots a running job reads that no later copy
changes, and what S3's errors mean (a real HTTP server on loopback for those)."""
from __future__ import annotations

import http.server
import os
import threading

import pytest

from runners import s3sync
from runners.node import s3_failure_kind
from runners.spec import FailureKind


class FakeBucket:
    """ListObjectsV2 and GET from a dict: key -> bytes (the ETag: the content)."""

    def __init__(self, objects: dict[str, bytes]):
        self.objects, self.gets = objects, []

    def list(self, prefix=""):
        for k in sorted(self.objects):
            if k.startswith(prefix):
                yield k, f'"{self.objects[k].hex()}"', len(self.objects[k])

    def get(self, key, dest):
        self.gets.append(key)
        with open(dest, "wb") as f:
            f.write(self.objects[key])


def read(d, rel):
    with open(os.path.join(d, rel), "rb") as f:
        return f.read()


def test_a_running_job_reads_its_snapshot_whatever_later_copies_fetch(tmp_path):
    store = s3sync.snapshots_of(str(tmp_path / "s3" / "mount0"))
    b = FakeBucket({"data/a.txt": b"alpha", "data/sub/b.txt": b"beta"})
    first, fetched, unchanged = s3sync.snapshot(b, "data/", store, "job1", print)
    assert (fetched, unchanged) == (2, 0) and read(first, "sub/b.txt") == b"beta"

    same, fetched, unchanged = s3sync.snapshot(b, "data/", store, "job2", print)  # the bucket did not change
    assert same == first and (fetched, unchanged) == (0, 2)

    b.objects["data/sub/b.txt"] = b"beta, changed"
    del b.objects["data/a.txt"]
    b.objects["data/c.txt"] = b"gamma"
    b.gets.clear()
    second, fetched, unchanged = s3sync.snapshot(b, "data/", store, "job3", print)
    assert second != first and (fetched, unchanged) == (2, 0) and sorted(b.gets) == ["data/c.txt", "data/sub/b.txt"]
    assert read(second, "sub/b.txt") == b"beta, changed" and not os.path.exists(os.path.join(second, "a.txt"))
    # job1 and job2 still read what they started with
    assert read(first, "a.txt") == b"alpha" and read(first, "sub/b.txt") == b"beta"

    s3sync.release(store, os.path.basename(first), "job1")
    assert os.path.isdir(first)  # job2 reads it still
    s3sync.release(store, os.path.basename(first), "job2")
    assert not os.path.exists(first)  # no reader and not the latest: gone
    s3sync.release(store, os.path.basename(second), "job3")
    assert os.path.isdir(second)  # the latest is kept: the next job that finds the bucket unchanged takes it

    b.objects["data/d.txt"] = b"delta"
    b.gets.clear()
    third, fetched, unchanged = s3sync.snapshot(b, "data/", store, "job4", print)
    assert (fetched, unchanged) == (1, 2) and b.gets == ["data/d.txt"]  # the rest linked from the latest
    assert not os.path.exists(second) and sorted(os.listdir(os.path.join(store, "snap"))) == \
        [os.path.basename(third)]


def test_an_unsafe_key_is_not_copied(tmp_path):
    b = FakeBucket({"p/../escape": b"x", "p/ok": b"y"})
    said = []
    d, fetched, _ = s3sync.snapshot(b, "p/", str(tmp_path / "store"), "j", said.append)
    assert fetched == 1 and os.listdir(d) == ["ok"] and "not a safe relative path" in said[0]


class _S3Errors(http.server.BaseHTTPRequestHandler):
    answers = {}

    def do_GET(self):
        status, body = self.answers[self.path.split("?")[0]]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def s3_errors():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _S3Errors)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("bucket,status,body,kind,code", [
    ("denied", 403, b"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>Acc", FailureKind.MISCONFIGURED,
     ""),  # a body cut short
    ("gone", 404, b"<Error><Code>NoSuchBucket</Code><Message>no</Message></Error>", FailureKind.MISSING,
     "NoSuchBucket"),
    ("busy", 503, b"<Error><Code>SlowDown</Code></Error>", FailureKind.SERVICE_UNAVAILABLE, "SlowDown"),
    ("html", 500, b"<html><body>oops", FailureKind.SERVICE_UNAVAILABLE, ""),
])
def test_s3_errors_are_named_and_classified_never_a_parse_error(s3_errors, bucket, status, body, kind, code):
    _S3Errors.answers = {f"/{bucket}": (status, body)}
    with pytest.raises(s3sync.S3Error) as e:
        list(s3sync.Bucket(s3_errors, bucket, "us-east-1", "k", "s").list())
    assert e.value.status == status and e.value.code == code and f"HTTP {status}" in str(e.value)
    assert s3_failure_kind(e.value) == kind


def test_an_unreachable_endpoint_is_service_unavailable():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(s3sync.S3Error) as e:
        list(s3sync.Bucket(f"http://127.0.0.1:{port}", "b", "us-east-1", "k", "s", timeout=5).list())
    assert e.value.status is None and s3_failure_kind(e.value) == FailureKind.SERVICE_UNAVAILABLE


def test_a_listing_that_is_not_xml_is_an_s3_error(s3_errors):
    _S3Errors.answers = {"/b": (200, b"<ListBucketResult><Contents>")}
    with pytest.raises(s3sync.S3Error, match="not an S3 object listing"):
        list(s3sync.Bucket(s3_errors, "b", "us-east-1", "k", "s").list())


def test_a_bad_key_secret_name_names_its_flag(tmp_path):
    from engine.errors import InvalidArgument
    from engine.resources import Directories
    for flag, kw in (("--access-key-secret", {"access_key_secret": "bad name"}),
                     ("--secret-key-secret", {"secret_key_secret": "bad name"})):
        with pytest.raises(InvalidArgument, match=f"s3 mount s3conn0000000000000a: {flag}: secret name"):
            Directories(tmp_path, "mount").add_s3("s3conn0000000000000a", "http://127.0.0.1:9000/bucket", **kw)
