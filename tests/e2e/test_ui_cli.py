"""The web UI from the command line: `dsjobs serve` without the `ui` extra, `--ui-listen`, `dsjobs run` (the web
stack imported only with `--ui`), and `dsjobs ui`, which opens a browser logged in without putting the token on a
command line, and prints a URL that logs in only to a terminal."""
from __future__ import annotations

import os
import pty
import re
import select
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from tests.helpers import EXAMPLES, create
from tests.ui_helpers import UiServe, env_without_dsjobs, free_port

pytestmark = pytest.mark.e2e
WEB_STACK = ("starlette", "uvicorn", "jinja2")


def dsjobs(*args, env=None, cwd=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "dsjobs", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout)


def imported(stderr: str) -> set:
    """Top-level packages a `python -X importtime` run imported."""
    return {m.group(1).split(".")[0] for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", stderr, re.M)}


def test_dsjobs_run_loads_the_web_stack_only_with_ui(tmp_path):
    work = tmp_path / "hello"
    shutil.copytree(EXAMPLES / "hello", work, ignore=shutil.ignore_patterns("out"))
    env = env_without_dsjobs()
    plain = subprocess.run([sys.executable, "-X", "importtime", "-m", "dsjobs", "run", "-c", "config.yaml",
                            "--data-dir", str(tmp_path / "data")], cwd=work, env=env, capture_output=True, text=True,
                           timeout=180)
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert not imported(plain.stderr) & set(WEB_STACK), imported(plain.stderr) & set(WEB_STACK)
    with_ui = subprocess.run([sys.executable, "-X", "importtime", "-m", "dsjobs", "run", "--ui", "-c", "config.yaml",
                              "--data-dir", str(tmp_path / "data")], cwd=work, env=env, capture_output=True,
                             text=True, timeout=180)
    assert with_ui.returncode == 0, with_ui.stderr[-2000:]
    assert set(WEB_STACK) <= imported(with_ui.stderr)
    token = (tmp_path / "data" / "token").read_text().strip()
    shown = re.search(r"^(http://127\.0\.0\.1:\d+/communities/local/projects/local/job/ds[0-9a-v]{18})$",
                      with_ui.stderr, re.M)
    assert shown and "no browser to open it in" in with_ui.stderr and token not in with_ui.stdout + with_ui.stderr


def test_serve_without_the_ui_extra_says_so_in_one_line_and_serves_the_api(tmp_path):
    # The extra's packages made unimportable, as in an environment that lacks them.
    blocked = "import sys; sys.modules['uvicorn'] = None; from dsjobs.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", blocked, "serve", "--listen", "127.0.0.1:0", "--data-dir",
                             str(tmp_path / "data"), "--log-level", "warning"], stdout=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        assert lines[0].startswith("dsjobs serving the DataSphere Jobs API on 127.0.0.1:")
        assert lines[2] == ("dsjobs: the web UI is not installed (uvicorn missing: pip install 'dsjobs[ui]'); serving "
                            "the API without it\n")
        from dsjobs.client import Client
        from dsjobs import discovery
        endpoint = "127.0.0.1:" + re.search(r"on 127\.0\.0\.1:(\d+)", lines[0]).group(1)
        desc = discovery.find_descriptor(endpoint)
        assert desc["ui_url"] == ""
        client = Client(endpoint, token=(tmp_path / "data" / "token").read_text().strip())
        jid = create(client, jpb.JobParameters(cmd="true"))
        link = f"{desc['files_url']}/communities/local/projects/p1/job/{jid}"  # what a hooked client prints then
        assert requests.get(link, timeout=10).text == f"job {jid} (project p1): CREATING\n"
        client.close()
        r = dsjobs("ui", env=dict(env_without_dsjobs(), DSJOBS_ENDPOINT=endpoint))
        assert r.returncode == 1 and "serves no web UI" in r.stderr
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_ui_listens_on_loopback_only_and_says_when_its_port_is_taken(tmp_path):
    r = dsjobs("serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "a"), "--ui-listen", "0.0.0.0:0")
    assert r.returncode == 2 and "loopback only" in r.stderr
    r = dsjobs("serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "a"), "--ui-listen", "nonsense")
    assert r.returncode == 2 and "loopback only" in r.stderr
    srv = UiServe(tmp_path / "b").start()
    try:
        r = dsjobs("serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "c"), "--ui-listen",
                   f"127.0.0.1:{srv.ui_port}", timeout=60)
        assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{srv.ui_port}" in r.stderr, r.stderr
    finally:
        srv.stop()


def _recorder(tmp_path: Path) -> tuple[Path, Path]:
    """A $BROWSER that records what it was asked to open, as a browser's command line shows it."""
    seen = tmp_path / "opened.txt"
    script = tmp_path / "browser.sh"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" >> {seen}\n")
    script.chmod(0o755)
    return script, seen


def test_dsjobs_ui_opens_a_browser_and_prints_a_login_url_only_to_a_terminal(tmp_path):
    srv = UiServe(tmp_path / "data").start()
    try:
        client = srv.client()
        jid = create(client, jpb.JobParameters(cmd="true"))
        client.close()
        env = dict(env_without_dsjobs(), DSJOBS_ENDPOINT=srv.endpoint)
        env.pop("DISPLAY", None), env.pop("WAYLAND_DISPLAY", None)
        script, seen = _recorder(tmp_path)
        r = dsjobs("ui", jid, env=dict(env, BROWSER=str(script)))
        assert r.returncode == 0 and f"opened {srv.url}/jobs/{jid} in a browser" in r.stdout
        opened = seen.read_text().split()
        assert len(opened) == 1 and opened[0].startswith("file://") and srv.token not in opened[0]
        login = Path(opened[0][len("file://"):])
        assert stat.S_IMODE(login.stat().st_mode) == 0o600 and stat.S_IMODE(login.parent.stat().st_mode) == 0o700
        assert f"{srv.url}/jobs/{jid}?token={srv.token}" in login.read_text()
        assert srv.token not in r.stdout + r.stderr

        # No browser, and not a terminal (a pipe, a log): the page's URL and how to log in, never the token.
        r = dsjobs("ui", jid, env=env)
        assert r.returncode == 0 and f"{srv.url}/jobs/{jid}\n" in r.stdout and "no browser" in r.stdout
        assert srv.token not in r.stdout + r.stderr
        r = dsjobs("ui", "--no-browser", env=dict(env, BROWSER=str(script)))
        assert srv.token not in r.stdout and seen.read_text().split() == opened

        # On a terminal, the URL that logs in.
        master, slave = pty.openpty()
        p = subprocess.Popen([sys.executable, "-m", "dsjobs", "ui", "--no-browser", jid], stdin=slave, stdout=slave,
                             stderr=slave, env=env)
        os.close(slave)
        out = b""
        while p.poll() is None or select.select([master], [], [], 0.1)[0]:
            if select.select([master], [], [], 1)[0]:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
        os.close(master)
        assert p.wait(30) == 0
        assert f"{srv.url}/jobs/{jid}?token={srv.token}" in out.decode()
        # That URL logs in (and comes back without the token).
        s = requests.Session()
        r = s.get(f"{srv.url}/jobs/{jid}?token={srv.token}", timeout=10)
        assert r.status_code == 200 and f"url=/jobs/{jid}\"" in r.text
        assert s.get(f"{srv.url}/jobs/{jid}", timeout=10).url.endswith(f"/job/{jid}")
    finally:
        srv.stop()


def test_dsjobs_ui_finds_the_engine_to_open(tmp_path):
    env = dict(env_without_dsjobs(), XDG_RUNTIME_DIR=str(tmp_path / "run"))  # these engines' descriptors only
    (tmp_path / "run").mkdir(mode=0o700)
    env.pop("DISPLAY", None), env.pop("WAYLAND_DISPLAY", None)
    one = UiServe(tmp_path / "one", env=env).start()
    two = UiServe(tmp_path / "two", env=env)
    try:
        r = dsjobs("ui", env=env)  # no endpoint named, none on the default port: the one engine there is
        assert r.returncode == 0 and f"{one.url}/\n" in r.stdout, r.stderr
        two.start()
        r = dsjobs("ui", env=env)
        assert r.returncode == 1 and "--endpoint" in r.stderr and one.endpoint in r.stderr and two.endpoint in r.stderr
        r = dsjobs("--endpoint", two.endpoint, "ui", env=env)
        assert r.returncode == 0 and f"{two.url}/\n" in r.stdout
        r = dsjobs("--endpoint", f"127.0.0.1:{free_port()}", "ui", env=env)
        assert r.returncode == 1 and "no dsjobs engine serves" in r.stderr
    finally:
        one.stop()
        two.stop()
