"""GetOperation held until the job changes (engine/api/servicers.py PolledOperations.held): dsjobs' client asks for
it in a call's metadata and sees a job's end at once, with one call where a poll made dozens. Official clients never
ask, and are answered at once, as in the cloud."""
from __future__ import annotations

import threading
import time

import grpc
import pytest

from dsjobs.client import HELD, HOLD
from dsjobs.inprocess import LocalClient
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from dsjobs_pb.yandex.cloud.operation import operation_service_pb2 as ops
from engine.api.server import start_grpc
from engine.api.servicers import OperationServicer
from tests.conftest import Server
from tests.helpers import create, wait_for, wait_status

pytestmark = pytest.mark.e2e
WAITING = "while [ ! -e go ]; do sleep 0.01; done"  # runs until the test puts `go` in its working dir


def hold(client, op_id: str, seconds, timeout=None):
    """(answer, whether the engine said it held, seconds the call took)."""
    t = time.monotonic()
    op, call = client.ops.Get.with_call(ops.GetOperationRequest(operation_id=op_id),
                                        metadata=((HOLD, str(seconds)),), timeout=timeout)
    return op, dict(call.trailing_metadata() or ()).get(HELD) == "1", time.monotonic() - t


def polled(grpc_server):
    """The server's PolledOperations (its ``holding``: GetOperations held now)."""
    return next(s for s, _ in grpc_server.services if isinstance(s, OperationServicer)).polled


def waiting_job(server, client=None):
    client = client or server.client
    jid = create(client, jpb.JobParameters(cmd=WAITING))
    op = client.execute(jid)
    wait_status(client, jid, {jpb.EXECUTING})
    return jid, op


def go_later(server, jid: str, after: float) -> dict:
    said = {}

    def go():
        time.sleep(after)
        said["at"] = time.time()
        (server.work_dir(jid) / "go").touch()
    threading.Thread(target=go, daemon=True).start()
    return said


def test_a_held_get_answers_at_the_jobs_end_not_at_a_poll(server):
    jid, op = waiting_job(server)
    go_later(server, jid, 0.5)
    calls, held_all = 0, True
    while not op.done:
        op, held, took = hold(server.client, op.id, 20)
        calls += 1
        held_all = held_all and held
        assert took < 15, "a hold that nothing ended ran its whole time"
    seen = time.time()
    assert held_all, "the engine said it held every call"
    assert calls <= 4, f"{calls} calls: one per change of the job, not a poll"
    finished = server.client.get(jid).finished_at.ToNanoseconds() / 1e9
    assert 0 <= seen - finished < 1.0, f"seen done {seen - finished:.3f} s after the job's end"


def test_a_hold_ends_after_its_time_and_before_the_calls_deadline(server):
    jid, op = waiting_job(server)
    answer, held, took = hold(server.client, op.id, 0.3)
    assert held and not answer.done and 0.3 <= took < 3, (held, answer.done, took)
    answer, held, took = hold(server.client, op.id, 30, timeout=4)  # no DEADLINE_EXCEEDED: answered before it
    assert held and not answer.done and 2.0 <= took < 4, (held, answer.done, took)
    (server.work_dir(jid) / "go").touch()


def test_a_bad_hold_is_invalid_argument_naming_it(client):
    jid = create(client, jpb.JobParameters(cmd="true"))
    op = client.execute(jid)
    for bad in ("abc", "-1", "nan", "inf", ""):
        with pytest.raises(grpc.RpcError) as e:
            hold(client, op.id, bad)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (bad, e.value)
        assert HOLD in e.value.details() and repr(bad) in e.value.details(), e.value.details()


def test_holds_are_bounded_and_given_back(server):
    """Past MAX_HOLDS at once a hold is answered at once, unheld (its client polls): the server's threads stay
    free for every other call. The holds are given back when they end."""
    jid, op = waiting_job(server)
    n = polled(server.grpc).max_holds
    assert n == 16, "a quarter of the server's 64 threads"
    ends = []
    threads = [threading.Thread(target=lambda: ends.append(hold(server.client, op.id, 30)), daemon=True)
               for _ in range(n)]
    for t in threads:
        t.start()
    wait_for(lambda: polled(server.grpc).holding == n, what=f"{n} holds")
    answer, held, took = hold(server.client, op.id, 5)
    assert not held, "a hold past the bound was held"
    assert took < 2 and not answer.done
    t = time.monotonic()
    (server.work_dir(jid) / "go").touch()
    for th in threads:
        th.join(20)
    assert len(ends) == n and time.monotonic() - t < 10
    assert all(held for _, held, _ in ends), "the first MAX_HOLDS were held"
    answer, held, _ = hold(server.client, op.id, 5)
    assert answer.done and not held, "a done operation is answered at once"
    jid, op = waiting_job(server)
    assert hold(server.client, op.id, 0.1)[1], "the holds were given back"
    (server.work_dir(jid) / "go").touch()


def test_a_stopping_server_ends_its_holds(tmp_path):
    server = Server(tmp_path / "data")
    try:
        jid, op = waiting_job(server)
        ended = {}

        def held():
            try:
                ended["answer"] = hold(server.client, op.id, 30)
            except grpc.RpcError as e:
                ended["error"] = e.code()
        t = threading.Thread(target=held, daemon=True)
        t.start()
        wait_for(lambda: polled(server.grpc).holding == 1, what="the hold")
        took = time.monotonic()
        server.grpc.stop(15).wait()
        took = time.monotonic() - took
        t.join(5)
        assert took < 5, f"the server's stop waited {took:.1f} s for a hold"
        assert ended, "the held call ended"
    finally:
        server.client.close()
        server.engine.stop(stop_jobs=True)


def test_the_in_process_api_holds_too(server):
    """`dsjobs run` and dsjobs.api call the engine in-process (engine/api/local.py): the same holds."""
    local = LocalClient(server.engine)
    try:
        jid, op = waiting_job(server, local)
        go_later(server, jid, 0.3)
        answer, held, took = hold(local, op.id, 20)
        assert held and took < 15, (held, took)
        assert local.wait_operation(op, poll_s=5).done  # held, so not a 5 s poll
        finished = local.get(jid).finished_at.ToNanoseconds() / 1e9
        assert time.time() - finished < 1.0
    finally:
        local.close()


def test_another_servers_stop_leaves_this_ones_holds(server):
    """An engine served on two ports (a second server, `dsjobs serve --ui`'s): the one stopped ends its own holds
    only."""
    other, _ = start_grpc(server.engine, "127.0.0.1:0")
    other.stop(0).wait()
    jid, op = waiting_job(server)
    go_later(server, jid, 0.5)
    answer, held, took = hold(server.client, op.id, 20)
    assert held and took >= 0.3, (held, took)
