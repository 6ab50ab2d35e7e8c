"""The runner channel (engine/backends/ray/channel.py) over real HTTP, without a Ray cluster: the one-time spec token, log
chunks appended once at their offset, the stop long poll, digest-checked output uploads and fencing."""
from __future__ import annotations

import hashlib
import threading
import time

import pytest
import requests

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from runners.journal import HEADER, Stream
from runners.spec import StopRequest

MARK, STDERR, STDOUT = Stream.MARK, Stream.STDERR, Stream.STDOUT
from tests.conftest import Server
from tests.helpers import create, logs

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(tmp_path):
    # The cluster is never reached here: attempts are made by hand, as the backend would make them.
    s = Server(tmp_path / "data", backend="ray", ray_address="http://127.0.0.1:9")
    yield s
    s.stop()


def record(stream: int, payload: bytes) -> bytes:
    return HEADER.pack(stream, time.time(), len(payload)) + payload


class Agent:
    def __init__(self, server, client):
        self.channel = server.engine.backends["ray"].channel
        self.job_id = create(client, jpb.JobParameters(cmd="true"))
        self.attempt, self.spec_token = self.channel.new_attempt(self.job_id, "ray", instance="c1.4", node_id="n1")
        self.url = f"{server.engine.files_url}/runner/{self.attempt.id}/"
        self.token = ""

    def call(self, method, verb, token=None, **kw):
        return requests.request(method, self.url + verb, timeout=10,
                                headers={"Authorization": f"Bearer {token if token is not None else self.token}"},
                                **kw)

    def fetch_spec(self):
        r = self.call("GET", "spec", token=self.spec_token)
        assert r.status_code == 200, r.text
        self.token = r.json()["token"]
        return r.json()["spec"]


def test_the_spec_token_works_once_and_gives_the_attempt_token(server, client):
    a = Agent(server, client)
    assert a.call("GET", "spec", token="guess").status_code == 403
    spec = a.fetch_spec()
    assert spec["job_id"] == a.job_id and spec["cmd"] == "true"
    assert a.call("GET", "spec", token=a.spec_token).status_code == 410  # spent
    assert a.call("GET", "stop", token=a.spec_token, params={"wait": 0}).status_code == 403
    assert a.call("GET", "stop", params={"wait": 0}).json() == {"stop": None}


def test_log_chunks_are_stored_once_at_their_offset(server, client):
    a = Agent(server, client)
    a.fetch_spec()
    one = record(STDOUT, b"one\n") + record(STDERR, b"err\n")
    two = record(STDOUT, b"two\n")
    r = a.call("PUT", "journal", params={"offset": 0}, data=one)
    assert r.status_code == 200 and r.json()["received"] == len(one)
    assert a.call("PUT", "journal", params={"offset": 0}, data=one).json()["received"] == len(one)  # resend
    gap = a.call("PUT", "journal", params={"offset": len(one) + 5}, data=two)
    assert gap.status_code == 409 and gap.json()["received"] == len(one)  # the agent rewinds to this
    assert a.call("PUT", "journal", params={"offset": 0}, data=one[:-2]).status_code == 400  # a torn record
    assert a.call("PUT", "journal", params={"offset": len(one)}, data=record(MARK, b"x")).status_code == 400
    assert a.call("PUT", "journal", params={"offset": len(one)}, data=two).json()["received"] == len(one + two)
    client.cancel(a.job_id)  # ReadLogs streams until the job is finished
    got, _ = logs(client, a.job_id)
    job_lines = [(m.standard_stream, m.content) for m in got if m.file_path != ".system.log"]
    assert job_lines == [(1, b"one\n"), (2, b"err\n"), (1, b"two\n")]  # once each, in order, no bookkeeping
    # A restarted engine knows the offset from its own journal.
    server.restart()
    a.channel = server.engine.backends["ray"].channel
    a.url = f"{server.engine.files_url}/runner/{a.attempt.id}/"
    assert a.call("PUT", "journal", params={"offset": 0}, data=one).json()["received"] == len(one + two)


def test_stop_is_a_long_poll(server, client):
    a = Agent(server, client)
    a.fetch_spec()
    got = {}

    def poll():
        t = time.monotonic()
        got["reply"] = a.call("GET", "stop", params={"wait": 10}).json()
        got["took"] = time.monotonic() - t
    th = threading.Thread(target=poll)
    th.start()
    time.sleep(0.3)
    a.channel.request_stop(a.attempt.id, StopRequest(10, 5.0, "user asked"))
    th.join(5)
    assert got["reply"]["stop"] == {"signal": 10, "timeout": 5.0, "reason": "user asked", "kind": "cancel"}
    assert got["took"] < 1.5
    a.channel.request_stop(a.attempt.id, StopRequest(9, 0.0, "forced"))
    a.channel.request_stop(a.attempt.id, StopRequest(15, 10.0, "graceful again"))  # never softens a forced stop
    assert a.call("GET", "stop", params={"wait": 0}).json()["stop"]["signal"] == 9


def test_outputs_are_digest_checked(server, client):
    a = Agent(server, client)
    a.fetch_spec()
    data = b"output bytes"
    sha = hashlib.sha256(data).hexdigest()
    bad = a.call("PUT", "blob", params={"sha": sha, "size": len(data)}, data=b"other bytes!")
    assert bad.status_code == 400 and "digest" in bad.text
    assert not server.engine.blobs.has(sha)
    assert a.call("PUT", "blob", params={"sha": sha, "size": len(data)}, data=data).status_code == 201
    assert server.engine.blobs.has(sha)


def test_a_fenced_attempt_is_refused_everything(server, client):
    a = Agent(server, client)
    a.fetch_spec()
    assert a.channel.fence(a.attempt.id, "node lost")
    for method, verb, kw in [("GET", "stop", {"params": {"wait": 0}}), ("PUT", "journal",
                             {"params": {"offset": 0}, "data": record(STDOUT, b"late\n")}),
                             ("PUT", "result", {"json": {"return_code": 0}}), ("POST", "state",
                                                                              {"json": {"status": "EXECUTING"}})]:
        r = a.call(method, verb, **kw)
        assert r.status_code == 410 and "node lost" in r.text, (verb, r.text)
    client.cancel(a.job_id)
    assert b"late" not in b"".join(m.content for m in logs(client, a.job_id)[0])
    # The other way round: a result that arrived first stands, and the fence is refused.
    b = Agent(server, client)
    b.fetch_spec()
    assert b.call("PUT", "result", json={"return_code": 0}).status_code == 200
    assert b.call("PUT", "result", json={"return_code": 0}).status_code == 200  # a retry is harmless
    assert not b.channel.fence(b.attempt.id, "too late")
    assert server.engine.store.get_attempt(b.attempt.id).state == "DONE"
