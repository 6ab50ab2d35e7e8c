"""`dsjobs serve` at its default log level says one line when a job starts and one when it ends: its id, project,
final status, return code and how long it ran."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from dsjobs.client import Client
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from tests.helpers import create, run, wait_for

pytestmark = pytest.mark.e2e


def test_serve_logs_each_jobs_start_and_end(tmp_path):
    err = open(tmp_path / "serve.err", "w")
    proc = subprocess.Popen([sys.executable, "-m", "dsjobs", "serve", "--listen", "127.0.0.1:0", "--data-dir",
                             str(tmp_path / "data")], stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        port = re.search(r"on 127\.0\.0\.1:(\d+)", proc.stdout.readline()).group(1)
        client = Client(f"127.0.0.1:{port}", token=(tmp_path / "data" / "token").read_text().strip())
        ok, _ = run(client, jpb.JobParameters(cmd="echo fine"), project="alpha")
        failed, _ = run(client, jpb.JobParameters(cmd="exit 3"), project="beta")
        never = create(client, jpb.JobParameters(cmd="true"), project="beta")
        client.cancel(never)
        unready, _ = run(client, jpb.JobParameters(cmd="ls ${bt1234567890abcdefgh}",
                                                   dataset_ids=["bt1234567890abcdefgh"]), project="beta")

        def lines():
            text = (tmp_path / "serve.err").read_text()
            return text if text.count(" finished: ") >= 4 else ""
        text = wait_for(lines, 30, "four end lines")
        mine = lambda jid: [x for x in text.splitlines() if jid in x]
        assert len(mine(ok)) == 2 and len(mine(failed)) == 2, text
        assert re.search(rf"INFO engine\.lifecycle: job {ok} \(project alpha\) started: c1\.4 on local$",
                         mine(ok)[0]), mine(ok)
        assert re.search(rf"job {ok} \(project alpha\) finished: SUCCESS, return code 0, ran \d+\.\d\ds$",
                         mine(ok)[1]), mine(ok)
        assert re.search(rf"job {failed} \(project beta\) finished: ERROR, return code 3, ran \d+\.\d\ds: "
                         r"program returned code 3$", mine(failed)[1]), mine(failed)
        assert len(mine(never)) == 1 and re.search(
            rf"job {never} \(project beta\) finished: CANCELLED, return code -, never started \(\d+\.\d\ds after it "
            r"was created\): cancelled by user$", mine(never)[0]), mine(never)
        assert len(mine(unready)) == 1 and re.search(
            rf"job {unready} \(project beta\) finished: ERROR, return code -, never started \(\d+\.\d\ds after it "
            r"was queued\): dataset 'bt1234567890abcdefgh' is not registered", mine(unready)[0]), mine(unready)
    finally:
        proc.terminate()
        proc.wait(10)
        err.close()
