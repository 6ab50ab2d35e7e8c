"""The real official `datasphere` CLI (PyPI, in its own virtual environment) against `dsjobs serve`, both ways a
user gets there (`dsjobs datasphere ...`, and `datasphere ...` in a venv with `dsjobs hook install`): every command, on jobs with files, directories, args, env vars, a python env, a Docker
image, a non-zero exit and a graceful cancel. Outputs are compared byte for byte."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from tests.helpers import Serve, client_venv, copy_example, official_python, wait_output, wait_status

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def engine(tmp_path_factory, via):
    srv = Serve(tmp_path_factory.mktemp("official") / "data")
    client = srv.start()
    yield srv, client
    client.close()
    srv.proc.terminate()
    srv.proc.wait(10)


VIA: list = []  # how the official CLI is started, for the tests of this module (the `via` fixture's parameter)


@pytest.fixture(scope="module", autouse=True, params=["dsjobs datasphere", "hook"])
def via(request, tmp_path_factory):
    if request.param == "hook":
        venv = tmp_path_factory.mktemp("hooked") / "venv"
        client_venv(venv, hooked=True)
        VIA[:] = [str(venv / "bin" / "datasphere")]
    else:
        VIA[:] = [sys.executable, "-m", "dsjobs", "datasphere"]
    yield request.param


def ds(engine, *args, cwd, check=True):
    _, client = engine
    env = dict(os.environ, DSJOBS_DATASPHERE_PYTHON=official_python(), DSJOBS_ENDPOINT=client.endpoint)
    res = subprocess.run([*VIA, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    if check:
        assert res.returncode == 0, res.stdout + res.stderr
    # the token reaches the client in-process: no YC_IAM_TOKEN, so none of its warnings at every call
    assert "not refreshable" not in res.stdout + res.stderr
    return res


def tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_execute_fork_list_get_ttl_download(engine, tmp_path):
    work = copy_example("hello", tmp_path)
    res = ds(engine, "--log-dir", str(tmp_path / "logs"), "project", "job", "execute", "-p", "official", "-c",
             "config.yaml", cwd=work)
    # The client appends the operation's progress to its job_progress.jsonl on every poll.
    progress = [json.loads(x) for x in (tmp_path / "logs" / "job_progress.jsonl").read_text().splitlines()]
    assert progress and progress[-1]["progress"] == 100
    assert "job completed successfully" in res.stdout + res.stderr
    assert "hello from job" in res.stdout + res.stderr
    mine = copy_example("hello", tmp_path / "mine")
    subprocess.run([sys.executable, "-m", "dsjobs", "run", "-c", "config.yaml", "--data-dir", str(tmp_path / "d2")],
                   cwd=mine, check=True, capture_output=True)
    assert tree(work / "out") == tree(mine / "out") and tree(work / "out")  # identical results, byte for byte

    _, client = engine
    src = client.list("official")[0].id
    res = ds(engine, "project", "job", "fork", "--id", src, "--arg", "WHO=fork", "--env-var", "MOOD=grumpy",
             "--var", "RESULT=forked/result.txt", cwd=work)
    assert (work / "forked" / "result.txt").read_text().startswith("Hello, fork!")
    assert "mood is grumpy" in res.stdout + res.stderr
    forked = client.list("official")[0]
    assert forked.parent_job_id == src

    ds(engine, "project", "job", "list", "-p", "official", "--format", "json", "-o", "list.json", cwd=work)
    ids = [j["id"] for j in json.loads((work / "list.json").read_text())]
    assert ids[:2] == [forked.id, src]
    got = ds(engine, "project", "job", "get", "--id", src, cwd=work)
    assert src in got.stdout + got.stderr
    ds(engine, "project", "job", "set-data-ttl", "--id", src, "--days", "3", cwd=work)
    job = client.get(src)
    assert 2.9 * 86400 < job.data_expires_at.seconds - time.time() < 3.1 * 86400
    ds(engine, "project", "job", "set-data-ttl", "--id", src, "--days", "infinity", cwd=work)
    assert not client.get(src).HasField("data_expires_at")
    dl = tmp_path / "dl"
    ds(engine, "project", "job", "download-files", "--id", src, "--with-logs", "--with-diagnostics",
       "--output-dir", str(dl), cwd=work)
    assert (dl / "result.txt").read_bytes() == (mine / "out" / "result.txt").read_bytes()
    assert (dl / "stdout.txt").read_text().startswith("hello from job")
    assert tree(dl / "report") == tree(mine / "out" / "report")


def test_nonzero_exit_async_and_attach(engine, tmp_path):
    work = copy_example("failing", tmp_path)
    ds(engine, "project", "job", "execute", "-p", "official", "-c", "config.yaml", "--async", "-o", "ids.json",
       cwd=work)
    ids = json.loads((work / "ids.json").read_text())
    res = ds(engine, "project", "job", "attach", "--id", ids["job_id"], cwd=work, check=False)
    assert res.returncode == 1 and "Program returned code 3" in res.stdout + res.stderr
    assert (work / "partial.txt").read_text() == "partial result\n"  # downloaded before the error, as in the cloud


def test_graceful_cancel(engine, tmp_path):
    (tmp_path / "config.yaml").write_text(
        "cmd: \"trap 'echo bye; echo saved > ckpt.txt; exit 0' TERM; echo trapped; while true; do sleep 0.1; done\"\n"
        "outputs:\n  - ckpt.txt\ngraceful-shutdown:\n  signal: SIGTERM\n  timeout: 30s\n")
    ds(engine, "project", "job", "execute", "-p", "official", "-c", "config.yaml", "--async", "-o", "ids.json",
       cwd=tmp_path)
    job_id = json.loads((tmp_path / "ids.json").read_text())["job_id"]
    _, client = engine
    wait_output(client, job_id, b"trapped")  # its TERM handler is in place
    res = ds(engine, "project", "job", "cancel", "--id", job_id, "--graceful", cwd=tmp_path)
    assert "job is canceled" in res.stdout + res.stderr
    job = wait_status(client, job_id, {jpb.CANCELLED})
    assert [f.desc.path for f in job.output_files] == ["ckpt.txt"]


def test_python_env_and_docker_jobs(engine, tmp_path):
    work = copy_example("python-env", tmp_path)
    res = ds(engine, "project", "job", "execute", "-p", "official", "-c", "config.yaml", cwd=work)
    assert "python 3.12" in res.stdout + res.stderr
    assert (work / "greeting.txt").read_text() == "Hello from a local module, jobs!\n"
    from tests.dockerenv import shell_image
    image = shell_image()
    (tmp_path / "dk").mkdir()
    (tmp_path / "dk" / "config.yaml").write_text(
        "cmd: 'echo \"in a container: $BASH_VERSION\" > where.txt; head -1 /etc/passwd'\n"
        f"outputs:\n  - where.txt\nenv:\n  docker:\n    image: {image}\n")
    ds(engine, "project", "job", "execute", "-p", "official", "-c", "config.yaml", cwd=tmp_path / "dk")
    assert (tmp_path / "dk" / "where.txt").read_text().startswith("in a container: 5.")


def test_python_auto_gives_the_same_env_through_either_cli(engine, tmp_path):
    work = tmp_path / "auto"
    (work / "lib").mkdir(parents=True)
    (work / "lib" / "__init__.py").write_text("")
    (work / "lib" / "util.py").write_text("def shout(s):\n    return s.upper()\n")
    (work / "main.py").write_text("import sys\nfrom lib.util import shout\n\nif __name__ == '__main__':\n"
                                  "    print(shout('auto'), sys.version_info[:2])\n")
    (work / "config.yaml").write_text("cmd: python main.py\nenv:\n  python: auto\n")
    _, client = engine
    ds(engine, "project", "job", "execute", "-p", "auto", "-c", "config.yaml", cwd=work)
    env = dict(os.environ, DSJOBS_DATASPHERE_PYTHON=official_python(), DSJOBS_ENDPOINT=client.endpoint)
    mine = subprocess.run([sys.executable, "-m", "dsjobs", "project", "job", "execute", "-p", "auto", "-c",
                           "config.yaml"], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert mine.returncode == 0, mine.stderr
    assert "AUTO" in mine.stdout
    ours, theirs = client.list("auto")[:2]

    def shape(job):
        pe = job.job_parameters.env.python_env
        return (pe.python_version, list(pe.requirements), len(pe.local_modules),
                sorted(f.desc.path for f in job.job_parameters.input_files))
    assert shape(ours) == shape(theirs) and shape(ours)[0] and shape(ours)[2] == 1
