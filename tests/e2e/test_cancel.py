"""Cancel: graceful signal then SIGKILL of the whole tree, outputs kept, nothing left behind."""
from __future__ import annotations

import time

import grpc
import pytest
import requests

from engine.api.pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from tests.helpers import create, logs, stdout_of, survivors, wait_op, wait_status

pytestmark = pytest.mark.e2e


def graceful(sig: int, timeout_s: int) -> jpb.GracefulShutdownParameters:
    g = jpb.GracefulShutdownParameters(signal=sig)
    g.timeout.seconds = timeout_s
    return g


def test_graceful_cancel_keeps_checkpoint(client):
    cmd = ("trap 'echo saving; echo checkpoint > ckpt.txt; exit 0' USR1; echo started;"
           " while true; do sleep 0.05; done")
    p = jpb.JobParameters(cmd=cmd, output_files=[jpb.FileDesc(path="ckpt.txt")],
                          graceful_shutdown_parameters=graceful(10, 5))
    jid = create(client, p)
    op = client.execute(jid)
    wait_status(client, jid, {jpb.EXECUTING})
    time.sleep(0.3)
    t = time.monotonic()
    client.cancel(jid, graceful=True, reason="user asked")
    op = wait_op(client, op, 10)
    assert time.monotonic() - t < 3
    assert op.error.code == grpc.StatusCode.CANCELLED.value[0] and "user asked" in op.error.message
    job = client.get(jid)
    assert job.status == jpb.CANCELLED
    assert [f.desc.path for f in job.output_files] == ["ckpt.txt"]  # collected, downloadable
    r = client.jobs.DownloadJobFiles(__import__("engine.api.pb.yandex.cloud.datasphere.v2.jobs.project_job_service_pb2",
                                                fromlist=["x"]).DownloadProjectJobFilesRequest(
        job_id=jid, files=list(job.output_files)))
    assert requests.get(r.download_files[0].url).content == b"checkpoint\n"
    assert b"saving" in stdout_of(logs(client, jid)[0])
    with pytest.raises(grpc.RpcError) as e:
        client.cancel(jid)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_forced_cancel_kills_setsid_and_double_forked(server):
    client = server.client
    cmd = ("sleep 300 & (sleep 301 | cat) & setsid bash -c 'while true; do date +%s%N > beat; sleep 0.05; done' &"
           " python3 -c 'import os,time\nif os.fork()==0:\n  os.setsid()\n  if os.fork()==0:\n    time.sleep(300)' ;"
           " echo up; wait")
    jid = create(client, jpb.JobParameters(cmd=cmd, graceful_shutdown_parameters=graceful(15, 30)))
    op = client.execute(jid)
    wait_status(client, jid, {jpb.EXECUTING})
    beat = server.work_dir(jid) / "beat"
    for _ in range(100):
        if beat.exists() and len(survivors(jid)) >= 5:
            break
        time.sleep(0.05)
    assert len(survivors(jid)) >= 5
    client.cancel(jid, graceful=False)  # not graceful: SIGKILL at once, whatever the config says
    op = wait_op(client, op, 10)
    assert client.get(jid).status == jpb.CANCELLED
    assert survivors(jid) == []
    if beat.parent.exists():  # a Ray node's agent removes the attempt's dir at its end: nothing can write there
        last = beat.read_text()
        time.sleep(0.3)
        assert beat.read_text() == last


def test_escalation_after_timeout_and_cancel_before_start(client):
    jid = create(client, jpb.JobParameters(cmd="trap '' TERM; echo ignoring; sleep 300",
                                           graceful_shutdown_parameters=graceful(15, 1)))
    op = client.execute(jid)
    wait_status(client, jid, {jpb.EXECUTING})
    time.sleep(0.2)
    t = time.monotonic()
    client.cancel(jid, graceful=True)
    assert client.get(jid).status == jpb.CANCELLING
    client.cancel(jid, graceful=True)  # twice: harmless
    wait_op(client, op, 10)
    took = time.monotonic() - t
    assert 0.9 < took < 4, took
    assert survivors(jid) == []
    never = create(client, jpb.JobParameters(cmd="true"))
    client.cancel(never)
    assert client.get(never).status == jpb.CANCELLED


def test_job_deadline_uses_the_graceful_path(client):
    cmd = "trap 'echo flushing; echo saved > ckpt.txt; exit 0' TERM; while true; do sleep 0.05; done"
    p = jpb.JobParameters(cmd=cmd, output_files=[jpb.FileDesc(path="ckpt.txt")],
                          env=jpb.Environment(vars={"DSJOBS_MAX_DURATION": "1s"}))
    jid = create(client, p)
    t = time.monotonic()
    op = wait_op(client, client.execute(jid), 15)
    assert 0.9 < time.monotonic() - t < 5, op.error
    assert op.error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0] and "maximum running time" in op.error.message
    job = client.get(jid)
    assert job.status == jpb.ERROR and "maximum running time" in job.status_details
    assert [f.desc.path for f in job.output_files] == ["ckpt.txt"]
    assert survivors(jid) == []
    with pytest.raises(grpc.RpcError) as e:
        create(client, jpb.JobParameters(cmd="true", env=jpb.Environment(vars={"DSJOBS_MAX_DURATION": "soon"})))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "DSJOBS_MAX_DURATION" in e.value.details()


def test_forced_cancel_during_a_graceful_wait_kills_at_once(client):
    jid = create(client, jpb.JobParameters(cmd="trap '' TERM; echo up; sleep 300",
                                           graceful_shutdown_parameters=graceful(15, 60)))
    op = client.execute(jid)
    wait_status(client, jid, {jpb.EXECUTING})
    time.sleep(0.2)
    client.cancel(jid, graceful=True)  # would wait 60 s
    time.sleep(0.3)
    assert client.get(jid).status == jpb.CANCELLING and survivors(jid)
    t = time.monotonic()
    client.cancel(jid, graceful=False)
    wait_op(client, op, 10)
    assert time.monotonic() - t < 3 and survivors(jid) == []
    assert client.get(jid).status == jpb.CANCELLED


def test_cancel_touches_only_its_own_job(server):
    client = server.client
    cmd = "sleep 300 & setsid sleep 301 & wait"
    victim = create(client, jpb.JobParameters(cmd=cmd))
    other = create(client, jpb.JobParameters(cmd="sleep 1.5; echo alive > other"))
    ops = [client.execute(victim), client.execute(other)]
    wait_status(client, victim, {jpb.EXECUTING})
    wait_status(client, other, {jpb.EXECUTING})
    time.sleep(0.3)
    before = survivors(other)
    client.cancel(victim)
    wait_op(client, ops[0], 10)
    assert survivors(victim) == [] and set(before) <= set(survivors(other) + before)
    done = wait_op(client, ops[1], 20)
    assert not done.HasField("error") and client.get(other).status == jpb.SUCCESS
    assert (server.work_dir(other) / "other").read_text() == "alive\n"
