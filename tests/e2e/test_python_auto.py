"""`python: auto` is analysed in the user's own environment (the active venv, or `--python`), as the official client
installed there would: here a Python 3.10 venv with a package the official CLI's own environment lacks. Loopback
only: envzy is installed from wheels on disk (uv's UV_FIND_LINKS), and asks the test index what is public."""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import ROOT, Serve, official_python

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
WHEELS = ROOT / ".cache" / "wheels" / "envzy-cp310"


def python310() -> str:
    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python")))
    assert found, "Python 3.10 (pyenv) is needed: it is DataSphere's default"
    return found[-1]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    srv = Serve(tmp_path_factory.mktemp("auto") / "data")
    client = srv.start()
    yield client
    client.close()
    srv.proc.terminate()
    srv.proc.wait(10)


@pytest.fixture
def project(indexes, tmp_path):
    a = indexes[0]
    assert WHEELS.is_dir() and list(WHEELS.glob("envzy-*.whl")), "`make test-deps` downloads envzy's wheels"
    venv = tmp_path / "venv"
    subprocess.run([python310(), "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / "python3.10" / "site-packages"
    with zipfile.ZipFile(a.root / "files" / "dsj_shared-1.0-py3-none-any.whl") as z:
        z.extractall(site)  # installed in the user's venv only
    work = tmp_path / "job"
    (work / "lib").mkdir(parents=True)
    (work / "lib" / "__init__.py").write_text("")
    (work / "lib" / "util.py").write_text("def shout(s):\n    return s.upper()\n")
    (work / "main.py").write_text(
        "import sys\nimport dsj_shared\nfrom lib.util import shout\n\nif __name__ == '__main__':\n"
        "    print(shout('auto'), 'dsj_shared', dsj_shared.VERSION, 'python', '%d.%d' % sys.version_info[:2])\n")
    (work / "config.yaml").write_text(f"cmd: python main.py\nenv:\n  python:\n    type: auto\n    pip:\n"
                                      f"      index-url: {a.url}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSJOBS_", "UV_", "PIP_"))}
    env.update(VIRTUAL_ENV=str(venv), XDG_CACHE_HOME=str(tmp_path / "cache"), UV_FIND_LINKS=str(WHEELS),
               UV_NO_INDEX="1", DSJOBS_ENVZY_INDEX_URL=a.url)
    return work, venv, env


def execute(client, work, env, *extra):
    env = dict(env, DSJOBS_ENDPOINT=client.endpoint)
    return subprocess.run([sys.executable, "-m", "dsjobs", "project", "job", "execute", "-p", "auto", "-c",
                           "config.yaml", *extra], cwd=work, env=env, capture_output=True, text=True, timeout=600)


def test_the_active_venv_is_analysed(engine, project):
    work, venv, env = project
    res = execute(engine, work, env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "AUTO dsj_shared 1.0 python 3.10" in res.stdout  # the job ran with what the venv has
    pe = engine.list("auto")[0].job_parameters.env.python_env
    assert (pe.python_version, list(pe.requirements), len(pe.local_modules)) == ("3.10", ["dsj-shared==1.0"], 1)
    assert "installing envzy==0.3.1" in res.stderr  # once, for that interpreter...
    assert "installing envzy" not in execute(engine, work, env).stderr  # ...and then from the cache


def test_what_is_missing_is_named_with_the_interpreter(engine, project):
    work, venv, env = project
    official = official_python()  # the official CLI's own environment: no dsj_shared there
    res = execute(engine, work, env, "--python", official)
    assert res.returncode == 1
    assert f"python environment analysis in {official}: ModuleNotFoundError: No module named 'dsj_shared'" \
        in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_python_dash_u_fails_as_the_official_client_does(engine, project):
    work, venv, env = project
    (work / "config.yaml").write_text((work / "config.yaml").read_text().replace("python main.py",
                                                                                "python -u main.py"))
    res = execute(engine, work, env)
    assert res.returncode == 1
    assert "FileNotFoundError: [Errno 2] No such file or directory: '-u'" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
