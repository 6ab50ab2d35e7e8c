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


@pytest.fixture
def served(tmp_path):
    """A `dsjobs serve` of the test's own: (client, port)."""
    srv = Serve(tmp_path / "data")
    client = srv.start()
    yield client, client.endpoint.rsplit(":", 1)[1]
    client.close()
    srv.proc.terminate()
    srv.proc.wait(10)


def cli(port, *args, cwd):
    env = dict(os.environ, DSJOBS_ENDPOINT=f"127.0.0.1:{port}")
    return subprocess.run([sys.executable, "-m", "dsjobs", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_project_job_commands(tmp_path, served):
    work = tmp_path / "hello"
    shutil.copytree(HELLO, work, ignore=shutil.ignore_patterns("out"))
    client, port = served
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


def test_fork_delete_output_files_and_full_ids(tmp_path, served):
    work = tmp_path / "hello"
    shutil.copytree(HELLO, work, ignore=shutil.ignore_patterns("out"))
    client, port = served
    r = cli(port, "project", "job", "execute", "-p", "proj", "-c", "config.yaml", cwd=work)
    assert r.returncode == 0, r.stderr
    src = client.list("proj")[0].id
    (work / "other.txt").write_text("Greetings")
    r = cli(port, "project", "job", "fork", "--id", src, "--arg", "WHO=fork", "--var", "GREETING=other.txt",
            "--var", "RESULT=forked.txt", "--env-var", "MOOD=calm", "--name", "forked", cwd=work)
    assert r.returncode == 0, r.stderr
    assert (work / "forked.txt").read_text().startswith("Greetings, fork!")
    forked = client.list("proj")[0]
    assert forked.parent_job_id == src and forked.name == "forked"
    r = cli(port, "project", "job", "fork", "--id", src, "--var", "NOPE=x", cwd=work)
    assert r.returncode == 1 and "No variable path in source job: NOPE" in r.stderr
    r = cli(port, "project", "job", "fork", "--id", src, "--arg", "NOPE=x", cwd=work)
    assert r.returncode == 1 and "Argument with name 'NOPE' is not present in source job" in r.stderr

    # -o, and a table that never cuts an id, in a pipe or at 60 columns
    r = cli(port, "project", "job", "list", "-p", "proj", "-o", "jobs.txt", cwd=work)
    assert r.returncode == 0 and r.stdout == ""
    table = (work / "jobs.txt").read_text()
    assert src in table and forked.id in table
    import pty
    main_fd, term_fd = pty.openpty()  # a terminal 60 columns wide
    env = dict(os.environ, DSJOBS_ENDPOINT=f"127.0.0.1:{port}", COLUMNS="60", LINES="40")
    narrow = subprocess.run([sys.executable, "-m", "dsjobs", "project", "job", "list", "-p", "proj"], cwd=work,
                            env=env, stdout=term_fd, stderr=subprocess.PIPE, timeout=60)
    os.close(term_fd)
    shown = b""
    while True:
        try:
            chunk = os.read(main_fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(main_fd)
    assert narrow.returncode == 0 and src.encode() in shown and forked.id.encode() in shown, shown
    r = cli(port, "project", "job", "get", "--id", src, "--format", "json", "-o", "job.json", cwd=work)
    assert json.loads((work / "job.json").read_text())["id"] == src

    r = cli(port, "project", "job", "delete", "--id", forked.id, cwd=work)
    assert r.returncode == 0, r.stderr
    assert [j.id for j in client.list("proj")] == [src]
    r = cli(port, "project", "job", "execute", "--help", cwd=work)
    assert "config file" in r.stdout and "project ID" in r.stdout


def test_a_project_named_datasphere_is_just_a_project(tmp_path, served):
    work = tmp_path / "hello"
    shutil.copytree(HELLO, work, ignore=shutil.ignore_patterns("out"))
    client, port = served
    r = cli(port, "project", "job", "execute", "-p", "datasphere", "-c", "config.yaml", cwd=work)
    assert r.returncode == 0, r.stderr
    assert client.list("datasphere")[0].status == 4
    r = cli(port, "--endpoint", f"127.0.0.1:{port}", "project", "job", "list", "-p", "datasphere", cwd=work)
    assert r.returncode == 0 and client.list("datasphere")[0].id in r.stdout


def _dsjobs_run_started(tmp_path) -> subprocess.Popen:
    """`dsjobs run` of tmp_path/config.yaml, once its job printed "started" (its trap, if any, is set by then)."""
    import time
    proc = subprocess.Popen([sys.executable, "-m", "dsjobs", "run", "-c", "config.yaml", "--data-dir",
                             str(tmp_path / "data")], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    line = ""
    while "started" not in line and time.monotonic() < deadline:
        line = proc.stdout.readline()
    if "started" not in line:
        proc.kill()
        raise AssertionError(f"the job never said it started: {proc.communicate(timeout=10)[1][-2000:]}")
    return proc


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_dsjobs_run_downloads_what_a_cancelled_job_kept(tmp_path, sig):
    """Ctrl-C in `dsjobs run` cancels the job (gracefully: its handler saves a checkpoint); the outputs it kept come
    back, and the user is told where the rest is. A SIGTERM (a service manager) or a SIGHUP (its terminal closed)
    does the same: they ended `dsjobs run`, and the engine in it, at once, the job left running unowned."""
    import re
    import signal
    from tests.helpers import survivors
    (tmp_path / "config.yaml").write_text(
        "cmd: \"trap 'echo saved > ckpt.txt; exit 0' TERM; echo started; while true; do sleep 0.1; done\"\n"
        "outputs:\n  - ckpt.txt\ngraceful-shutdown:\n  signal: SIGTERM\n  timeout: 30s\n")
    proc = _dsjobs_run_started(tmp_path)
    try:
        proc.send_signal(getattr(signal, sig))
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, (proc.returncode, err[-2000:])
    assert survivors(re.search(r"download-files --id (ds\w+)", err).group(1)) == []
    assert (tmp_path / "ckpt.txt").read_text() == "saved\n"
    assert "outputs the job left, downloaded" in err and "ckpt.txt" in err
    assert f"dsjobs serve --data-dir {tmp_path / 'data'}" in err and "download-files --id ds" in err


def test_a_job_of_dsjobs_run_dies_with_it_even_by_kill_9(tmp_path):
    """Found by an attack: `dsjobs run` killed outright (kill -9, the OOM killer) left its job running unowned, and
    the next `dsjobs run` on that data dir re-adopted it and queued its own job behind it. The engine it embeds
    owns its jobs: each job's supervisor holds the engine's pidfd and kills the whole job when it dies."""
    import re
    import signal
    from tests.helpers import survivors, wait_for
    (tmp_path / "config.yaml").write_text("cmd: \"echo started; sleep 300 & sleep 301; wait\"\n")
    proc = _dsjobs_run_started(tmp_path)
    try:
        jid = re.search(r"(ds[0-9a-v]{18})", next((tmp_path / "data" / "jobs").iterdir()).name).group(1)
        assert survivors(jid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: survivors(jid) == [], timeout=10, what="the job's processes gone with `dsjobs run`")
        from runners import journal
        said = b"".join(r.content for r in journal.records(str(tmp_path / "data" / "jobs" / jid / "journal"))
                        if r.stream == journal.Stream.SYSTEM).decode()
        assert f"the process that owned the job (pid {proc.pid}) is gone" in said
    finally:
        if proc.poll() is None:
            proc.kill()


def test_an_output_that_cannot_be_put_in_place_is_named_and_the_others_come_back(tmp_path):
    """Found by an attack: a directory where an output goes made `dsjobs run` stop at that file (exit 1, though the
    job succeeded), the outputs after it never fetched and a partial download left; the official client names the
    file it cannot download and fetches the rest."""
    (tmp_path / "config.yaml").write_text("cmd: echo A > a.txt; echo BBBBBBBBBBBB > b.txt\n"
                                          "outputs:\n  - a.txt\n  - b.txt\n")
    (tmp_path / "a.txt").mkdir()  # smallest first: a.txt is fetched before b.txt
    r = subprocess.run([sys.executable, "-m", "dsjobs", "run", "-c", "config.yaml", "--data-dir",
                        str(tmp_path / "data")], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "cannot download file a.txt: " in r.stderr and "Is a directory" in r.stderr
    assert (tmp_path / "b.txt").read_text() == "BBBBBBBBBBBB\n" and (tmp_path / "a.txt").is_dir()
    assert not (tmp_path / "a.txt.download").exists()
    assert "b.txt (13 bytes)" in r.stderr and "a.txt (" not in r.stderr.split("success in")[-1]


def test_quoted_vars_work_under_a_data_dir_with_letters_past_ascii(tmp_path):
    """Found by an attack: the paths put for ${VAR} were shell-quoted whenever they had a character past ASCII, so
    under a data dir (or a HOME) such as .../данные the common "${VAR}" (the cloud's paths are /job/..., so users
    quote them freely) named '...'-in-quotes, a file that does not exist."""
    (tmp_path / "in.txt").write_text("hello\n")
    (tmp_path / "config.yaml").write_text("cmd: 'cat \"${A}\" > \"${O}\"; cat ${A}'\ninputs:\n  - in.txt: A\n"
                                          "outputs:\n  - out.txt: O\n")
    r = subprocess.run([sys.executable, "-m", "dsjobs", "run", "-c", "config.yaml", "--data-dir",
                        str(tmp_path / "данные")], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello\n" and (tmp_path / "out.txt").read_text() == "hello\n"


def test_serve_says_where_its_job_pages_are_or_in_one_line_why_there_are_none(tmp_path):
    """Run by every Python the client side is tested on: 3.11+ with the `ui` extra serves the pages; the others
    (3.10, below the UI's floor; 3.13 here, without the extra) say why not, and serve the API all the same."""
    import re
    from engine.ui import missing
    srv = Serve(tmp_path / "data")
    client = srv.start()
    try:
        lines = [srv.proc.stdout.readline() for _ in range(2)]  # after the first, whose form stays as it was
        assert lines[0].startswith("dsjobs: every call needs `authorization: Bearer <token>`")
        why = missing()
        if why:
            assert lines[1] == f"dsjobs: {why}\n"
        else:
            assert re.fullmatch(r"dsjobs: job pages on http://127\.0\.0\.1:\d+/ \(`dsjobs ui \[JOB_ID\]` opens one "
                                r"logged in\)\n", lines[1]), lines[1]
        token = (tmp_path / "data" / "token").read_text().strip()
        assert token not in "".join(lines)
        client.list("nothing-yet")  # the API answers either way
    finally:
        client.close()
        srv.proc.terminate()
        srv.proc.wait(30)
