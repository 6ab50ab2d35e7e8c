"""The `dsjobs project job ...` commands against `dsjobs serve`, as a person at a terminal runs them."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import Serve

pytestmark = pytest.mark.e2e
HELLO = Path(__file__).resolve().parents[2] / "examples" / "jobs" / "hello"


def cli(port, *args, cwd):
    env = dict(os.environ, DSJOBS_ENDPOINT=f"127.0.0.1:{port}")
    return subprocess.run([sys.executable, "-m", "dsjobs", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_project_job_commands(tmp_path):
    work = tmp_path / "hello"
    shutil.copytree(HELLO, work, ignore=shutil.ignore_patterns("out"))
    srv = Serve(tmp_path / "data")
    client = srv.start()
    port = client.endpoint.rsplit(":", 1)[1]
    try:
        r = cli(port, "project", "job", "execute", "-p", "proj", "-c", "config.yaml", cwd=work)
        assert r.returncode == 0, r.stderr
        assert (work / "out/result.txt").read_text().startswith("Hello, DataSphere!")
        assert "mood is cheerful" in r.stdout
        r = cli(port, "project", "job", "execute", "-p", "proj", "-c", "config.yaml", "--async", "-o", "ids.json",
                cwd=work)
        assert r.returncode == 0, r.stderr
        ids = json.loads((work / "ids.json").read_text())
        r = cli(port, "project", "job", "attach", "--id", ids["job_id"], cwd=work)
        assert r.returncode == 0, r.stderr
        r = cli(port, "project", "job", "list", "-p", "proj", "--format", "json", cwd=work)
        jobs = json.loads(r.stdout)
        assert len(jobs) == 2 and jobs[0]["id"] == ids["job_id"] and {j["status"] for j in jobs} == {"SUCCESS"}
        r = cli(port, "project", "job", "get", "--id", ids["job_id"], "--format", "json", cwd=work)
        got = json.loads(r.stdout)
        assert got["instance_type"] == "c1.4" and got["outputs"]
        assert any("job queued" in h for h in got["history"]) and "job completed" in got["history"][-1]
        dl = tmp_path / "dl"
        r = cli(port, "project", "job", "download-files", "--id", ids["job_id"], "--with-logs", "--output-dir",
                str(dl), cwd=work)
        assert r.returncode == 0, r.stderr
        assert (dl / "result.txt").read_text().startswith("Hello") and (dl / "stdout.txt").exists()
        assert (dl / "report" / "listing.txt").exists()
        r = cli(port, "project", "job", "set-data-ttl", "--id", ids["job_id"], "--days", "infinity", cwd=work)
        assert r.returncode == 0 and json.loads(cli(port, "project", "job", "get", "--id", ids["job_id"], "--format",
                                                    "json", cwd=work).stdout)["data_expires_at"] == "Never"
        r = cli(port, "project", "job", "cancel", "--id", ids["job_id"], cwd=work)
        assert r.returncode == 1 and "FAILED_PRECONDITION" in r.stderr
        r = cli(port, "project", "job", "get", "--id", "ds" + "0" * 18, cwd=work)
        assert r.returncode == 1 and "NOT_FOUND" in r.stderr
        r = cli(port, "project", "job", "get", "--id", "nope", cwd=work)
        assert r.returncode == 1 and "INVALID_ARGUMENT" in r.stderr and "'nope'" in r.stderr
    finally:
        client.close()
        srv.proc.terminate()
        srv.proc.wait(10)
