"""Jobs started by the engine of the release before the node runner (git history), re-adopted by this one: the run
dirs it left (spec, supervisor, status, layout, instance) are read as they are, a job still running is followed to
its end, and one that finished while no engine ran is collected."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from dsjobs.client import Client
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from tests.conftest import Server
from tests.helpers import ROOT, create, response, wait_for, wait_op, wait_status, work_dir

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
BEFORE_REDESIGN = "deda4f5"  # the last commit before runners/node.py


def test_jobs_of_the_engine_before_the_redesign_are_readopted(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE_REDESIGN], capture_output=True)
    assert archive.returncode == 0, f"git history with {BEFORE_REDESIGN} is needed: {archive.stderr.decode()}"
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    data = tmp_path / "data"
    env = dict(os.environ, PYTHONPATH=str(old))
    env.pop("DSJOBS_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "dsjobs", "serve", "--listen", "127.0.0.1:0", "--data-dir",
                             str(data), "--log-level", "warning"], env=env, cwd=old, stdout=subprocess.PIPE, text=True)
    try:
        port = re.search(r"on 127\.0\.0\.1:(\d+)", proc.stdout.readline()).group(1)
        c = Client(f"127.0.0.1:{port}", token=(data / "token").read_text().strip())
        running = create(c, jpb.JobParameters(
            cmd="echo started; while [ ! -f release ]; do sleep 0.05; done; echo kept > out.txt",
            output_files=[jpb.FileDesc(path="out.txt")]))
        finishing = create(c, jpb.JobParameters(
            cmd="while [ ! -f go ]; do sleep 0.05; done; echo while-down > o.txt; exit 3",
            output_files=[jpb.FileDesc(path="o.txt")]))
        ops = {j: c.execute(j) for j in (running, finishing)}
        for j in ops:
            wait_status(c, j, {jpb.EXECUTING})
            wait_for((data / "jobs" / j / "supervisor").exists, 10, "the old supervisor's start")
        c.close()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    from runners.executors.supervisor import read_file
    pid = read_file(str(data / "jobs" / running / "supervisor"))["pid"]
    assert str(old) in open(f"/proc/{pid}/cmdline").read()  # the old release's supervisor runs the job
    (work_dir(data, finishing) / "go").touch()  # it ends while no engine runs
    wait_for((data / "jobs" / finishing / "status").exists, 10, "the old supervisor's exit status")

    s = Server(data)
    try:
        done = wait_op(s.client, s.client.get_operation(ops[finishing].id), 30)
        job = s.client.get(finishing)
        assert job.status == jpb.ERROR and job.status_details == "program returned code 3"
        assert response(done).result.return_code == 3 and [f.desc.path for f in job.output_files] == ["o.txt"]
        assert s.client.get(running).status == jpb.EXECUTING  # followed again, not restarted
        (work_dir(data, running) / "release").touch()
        done = wait_op(s.client, s.client.get_operation(ops[running].id), 30)
        assert not done.HasField("error"), done.error.message
        assert [f.file.desc.path for f in response(done).output_files] == ["out.txt"]
        system = (data / "jobs" / running / "system.log").read_text()
        assert "engine restarted: job re-adopted" in system and system.count("running: ") == 1
    finally:
        s.stop()
