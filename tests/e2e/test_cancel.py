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


@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_nothing_of_a_job_runs_once_it_is_reported_ended(tmp_path, sandbox):
    """A job whose main process ends leaving a daemon (setsid, double fork): the end is reported only once no
    process of the job can run again; what is still in the kernel's exit() (a PID namespace's init tearing its
    namespaces down) is not waited for, and writes nothing."""
    from tests.conftest import Server
    from tests.helpers import run
    s = Server(tmp_path / "data", sandbox=sandbox)
    try:
        cmd = ("setsid bash -c 'while true; do date +%s%N >> beat; sleep 0.005; done' & "
               "python3 -c 'import os,time\nif os.fork()==0:\n  os.setsid()\n  if os.fork()==0:\n"
               "    while True: open(\"beat2\",\"a\").write(\"x\"); time.sleep(0.005)' ; "
               "sleep 0.3; echo main done")
        jid, op = run(s.client, jpb.JobParameters(cmd=cmd))
        assert not op.HasField("error") and s.client.get(jid).status == jpb.SUCCESS
        work = s.work_dir(jid)
        sizes = [(work / f).stat().st_size for f in ("beat", "beat2")]
        assert all(sizes)  # they ran
        time.sleep(0.3)
        assert [(work / f).stat().st_size for f in ("beat", "beat2")] == sizes  # and run no more
        assert survivors(jid) == []
    finally:
        s.stop()
