"""Cancel: graceful signal then SIGKILL of the whole tree, outputs kept, nothing left behind."""
from __future__ import annotations

import time

import pytest

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from tests.helpers import create, survivors, wait_op, wait_status

pytestmark = pytest.mark.e2e


def graceful(sig: int, timeout_s: int) -> jpb.GracefulShutdownParameters:
    g = jpb.GracefulShutdownParameters(signal=sig)
    g.timeout.seconds = timeout_s
    return g


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
