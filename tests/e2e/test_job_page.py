"""The job link the official client prints, http://<files endpoint>/communities/local/projects/<p>/job/<id>,
answers over real HTTP, without a token: GET and HEAD give the job's status as one line and nothing more; an
unknown job, a job of another project or community, and any path that is not exactly the link's get the same 404;
other methods 405; nothing a request does there harms the endpoint."""
from __future__ import annotations

import http.client
import socket

import pytest

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from tests.helpers import create, run

pytestmark = pytest.mark.e2e


def _ask(server, method: str, path: str, body: bytes | None = None):
    host, port = server.engine.files.server_address[:2]
    c = http.client.HTTPConnection(host, port, timeout=10)
    try:
        c.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
        if body is not None:
            c.putheader("Content-Length", str(len(body)))
        c.endheaders(body)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def test_the_job_link_answers_with_the_status_only(server, client):
    queued = create(client, jpb.JobParameters(cmd="true"), project="p1", name="secret-name")
    link = f"/communities/local/projects/p1/job/{queued}"
    status, headers, body = _ask(server, "GET", link)
    assert (status, body) == (200, f"job {queued} (project p1): CREATING\n".encode())
    assert headers["Content-Type"] == "text/plain; charset=utf-8" and headers["Cache-Control"] == "no-store"
    assert headers["X-Content-Type-Options"] == "nosniff"
    jid, _ = run(client, jpb.JobParameters(cmd="echo private-output"), project="p1", name="secret-name")
    status, headers, body = _ask(server, "GET", f"/communities/local/projects/p1/job/{jid}")
    assert (status, body) == (200, f"job {jid} (project p1): SUCCESS\n".encode())  # no name, no logs
    status, head_headers, body = _ask(server, "HEAD", f"/communities/local/projects/p1/job/{jid}")
    assert status == 200 and body == b"" and head_headers["Content-Length"] == headers["Content-Length"]
    assert _ask(server, "GET", f"/communities/local/projects/p1/job/{jid}/?x=1")[0] == 200

    create(client, jpb.JobParameters(cmd="true"), project="p2")
    not_found = _ask(server, "GET", "/communities/local/projects/p1/job/ds" + "0" * 18)
    assert not_found[0] == 404 and b"not found" in not_found[2]
    for path in [
        f"/communities/local/projects/p2/job/{jid}",  # another project's link for this job
        f"/communities/other/projects/p1/job/{jid}",
        f"/communities/local/projects/p1/job/{jid}/..",
        f"/communities/local/projects/p2/job/../../p1/job/{jid}",
        f"/communities/local/projects/p1/job/%2e%2e/{jid}",
        f"/communities/local/projects/p1%2Fjob/job/{jid}",
        f"/communities/local/projects/p1/job/{jid}/logs",
        f"/communities/local/projects/p1/job/{jid.upper()}",
        "/communities/local/projects/p1/job/",
        "/communities/" + "a" * 60000,
    ]:
        assert _ask(server, "GET", path)[::2] == not_found[::2], path  # the same answer: nothing to tell apart
        status, _, body = _ask(server, "HEAD", path)
        assert status == 404 and body == b"", path

    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO"):
        status, headers, _ = _ask(server, method, f"/communities/local/projects/p1/job/{jid}", b"x" * 10)
        assert status == 405 and headers["Allow"] == "GET, HEAD", (method, status)
    assert client.get(jid).status == jpb.SUCCESS  # nothing a request sent there changed the job

    host, port = server.engine.files.server_address[:2]
    with socket.create_connection((host, port), 10) as c:  # a request line past the server's limit
        c.sendall(b"GET /communities/" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.recv(4096).startswith(b"HTTP/1.1 414")
    assert _ask(server, "GET", f"/communities/local/projects/p1/job/{jid}")[0] == 200  # and it still serves
    # Elsewhere on the endpoint, methods it never had are still not implemented, and HEAD is not allowed.
    assert _ask(server, "DELETE", "/blobs/" + "0" * 64)[0] == 501
    assert _ask(server, "HEAD", "/blobs/" + "0" * 64)[0] == 405
