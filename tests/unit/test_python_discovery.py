"""The interpreters a Python-env job may ask for (runners/pyenv.py discover): looked up once and kept while nothing it
looked at changed, and seen again as soon as something did (installed, removed, re-linked). Real interpreters,
linked into a PATH directory and a pyenv root of the test's own."""
from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import time

import pytest

from runners import pyenv

REAL = os.path.realpath(sys.executable)
MM = "%d.%d" % sys.version_info[:2]
# another minor version of this machine's (pyenv has 3.8-3.13 here)
OTHER = next(p for p in sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3.*")))
             if re.fullmatch(r".*/python3\.\d+", p) and not p.endswith("python" + MM))
OTHER_MM = re.search(r"python(3\.\d+)$", OTHER).group(1)


def later():
    """Past the filesystem's timestamp tick (a few ms): a change now gives its directory a new mtime."""
    time.sleep(0.02)


@pytest.fixture
def listed(monkeypatch):
    """The directories discover lists."""
    seen = []
    real = os.listdir

    def listdir(path="."):
        seen.append(str(path))
        return real(path)
    monkeypatch.setattr(pyenv.os, "listdir", listdir)
    return seen


@pytest.fixture
def machine(tmp_path, monkeypatch):
    # Kept even when just made: these tests wait out the timestamp tick themselves (later()).
    monkeypatch.setattr(pyenv, "_RACY_NS", 0)
    bin_dir, root = tmp_path / "bin", tmp_path / "pyenv"
    bin_dir.mkdir()
    (root / "versions").mkdir(parents=True)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("PYENV_ROOT", str(root))
    return bin_dir, root


def test_an_interpreter_linked_into_path_is_found_kept_and_its_removal_seen(machine, listed):
    bin_dir, _ = machine
    assert pyenv.discover() == {}
    later()
    (bin_dir / f"python{MM}").symlink_to(REAL)
    found = pyenv.discover()
    assert found[MM].path == str(bin_dir / f"python{MM}")
    del listed[:]
    assert pyenv.discover() == found and str(bin_dir) not in listed  # kept: nothing it looked at changed
    later()
    (bin_dir / f"python{MM}").unlink()
    assert pyenv.discover() == {}


def test_what_was_found_just_after_a_change_is_looked_up_again(machine, listed, monkeypatch):
    # A second change within the same timestamp tick would leave the directory's mtime as it was when listed.
    monkeypatch.setattr(pyenv, "_RACY_NS", 2_000_000_000)
    bin_dir, _ = machine
    (bin_dir / f"python{MM}").symlink_to(REAL)
    assert MM in pyenv.discover()
    del listed[:]
    assert MM in pyenv.discover() and str(bin_dir) in listed


def test_a_pyenv_version_completed_after_its_dir_was_made_is_seen(machine):
    # `pyenv install` makes versions/X.Y.Z first and its interpreter later: the versions dir does not change then.
    _, root = machine
    full = "%d.%d.%d" % sys.version_info[:3]
    bin_dir = root / "versions" / full / "bin"
    bin_dir.mkdir(parents=True)
    assert pyenv.discover() == {}
    later()
    (bin_dir / f"python{MM}").symlink_to(REAL)
    assert pyenv.discover()[MM].path == str(bin_dir / f"python{MM}")


def test_an_interpreter_retargeted_outside_path_is_seen_as_what_it_now_is(machine, tmp_path, listed):
    # update-alternatives: /usr/bin/python3 -> /etc/alternatives/python3 -> a version; only the latter link moves
    bin_dir, _ = machine
    alt = tmp_path / "alternatives"
    alt.mkdir()
    (alt / "python3").symlink_to(REAL)
    (bin_dir / "python3").symlink_to(alt / "python3")
    assert set(pyenv.discover()) == {MM}
    later()
    (alt / "python3").unlink()
    (alt / "python3").symlink_to(OTHER)
    del listed[:]
    assert set(pyenv.discover()) == {OTHER_MM}
    assert str(bin_dir) not in listed  # PATH's directory did not change: not listed again, its link resolved again


def test_a_relinked_interpreter_is_seen_as_what_it_now_is(machine, tmp_path):
    bin_dir, _ = machine
    fake = tmp_path / "not-python"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    (bin_dir / "python3").symlink_to(fake)
    assert pyenv.discover() == {}  # it does not run as a Python
    later()
    (bin_dir / "python3").unlink()
    (bin_dir / "python3").symlink_to(REAL)
    assert pyenv.discover()[MM].path == str(bin_dir / "python3")


# --- the env cache's record of use (what its size limit evicts by) --------------------------------------------------

def _env(cache, name: str, size: int):
    def build(d):
        (d / "payload").write_bytes(b"x" * size)
    return cache.get(pyenv.Interpreter(MM, "%d.%d.%d" % sys.version_info[:3], REAL), pyenv.InstallSpec([name]),
                     lambda line: None, image="img", build=build)


def test_the_size_limit_evicts_the_env_used_least_recently(tmp_path):
    cache = pyenv.EnvCache(tmp_path / "envs", installer="pip", size_limit_bytes=0)
    a, _ = _env(cache, "a", 4000)
    b, _ = _env(cache, "b", 4000)
    base = time.time() - 3600  # both idle for an hour, b the more recent
    for d, at in ((a, base), (b, base + 60)):
        os.utime(str(d) + ".used", (at, at))
    assert _env(cache, "a", 4000) == (a, False)  # a used again: now the most recent
    assert [e["key"] for e in sorted(cache.entries(), key=lambda e: e["last_used"])] == [b.name, a.name]
    cache.size_limit_bytes = 6000
    assert cache.prune(in_use_grace_s=600) == [b.name]
    assert a.is_dir() and not b.exists()
    assert cache.prune(older_than_s=60) == []  # a's use was just now


# --- the per-job layer, made again in place over what was made ahead -------------------------------------------------

def _base(tmp_path, name: str, mm: str):
    base = tmp_path / name
    (base / "lib" / f"python{mm}" / "site-packages").mkdir(parents=True)
    return base


def test_a_layer_made_ahead_over_the_same_env_is_made_again_in_place(tmp_path):
    interp = pyenv.Interpreter(MM, "%d.%d.%d" % sys.version_info[:3], REAL)
    base, dest = _base(tmp_path, "env", MM), tmp_path / "run" / "venv"
    pyenv.job_layer(base, dest, interp)
    ino = os.stat(dest).st_ino
    pyenv.job_layer(base, dest, interp)
    assert os.stat(dest).st_ino == ino  # the same directory: a sandbox made ahead binds this very one
    assert pyenv.layer_base(dest) == base


def test_a_layer_made_ahead_for_another_python_leaves_nothing_in_the_jobs(tmp_path):
    full = subprocess.run([OTHER, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    other = pyenv.Interpreter(OTHER_MM, full, OTHER)
    mine = pyenv.Interpreter(MM, "%d.%d.%d" % sys.version_info[:3], REAL)
    dest = tmp_path / "run" / "venv"
    pyenv.job_layer(_base(tmp_path, "other-env", OTHER_MM), dest, other)  # the sandbox made ahead's
    base = _base(tmp_path, "env", MM)
    pyenv.job_layer(base, dest, mine)  # the job's own
    assert os.listdir(dest / "lib") == [f"python{MM}"]
    assert not any(OTHER_MM in name for name in os.listdir(dest / "bin")), os.listdir(dest / "bin")
    assert pyenv.layer_base(dest) == base and os.path.realpath(dest / "bin" / "python") == REAL


def test_the_sandboxs_python_links_follow_the_jobs_interpreter(tmp_path):
    from runners import sandbox as sbx
    run_dir, work = tmp_path / "run", tmp_path / "run" / "work"
    work.mkdir(parents=True)
    sbx.job_sandbox(str(run_dir), str(work), python=OTHER)  # made ahead, for a job of another Python
    sbx.job_sandbox(str(run_dir), str(work), python=REAL)
    for name in ("python", "python3"):
        assert os.readlink(run_dir / "bin" / name) == REAL


def test_an_env_a_sandbox_made_ahead_binds_counts_as_used(tmp_path):
    cache = pyenv.EnvCache(tmp_path / "envs", installer="pip")
    env, _ = _env(cache, "a", 10)
    hour_ago = time.time() - 3600
    os.utime(str(env) + ".used", (hour_ago, hour_ago))
    cache.touch(env)
    assert cache.prune(older_than_s=60) == [] and env.is_dir()
    cache.touch(tmp_path / "elsewhere")  # not one of its envs: nothing made
    assert sorted(p.name for p in cache.root.iterdir() if "elsewhere" in p.name) == []


def test_an_interpreter_that_can_no_longer_run_is_not_found(machine, listed):
    # a chmod (or a rewrite with its mtime put back, as `cp -p` does) leaves the mtime as it was
    bin_dir, _ = machine
    wrapper = bin_dir / f"python{MM}"
    wrapper.write_text(f"#!/bin/sh\nexec {REAL} \"$@\"\n")
    wrapper.chmod(0o755)
    assert pyenv.discover()[MM].path == str(wrapper)
    later()
    wrapper.chmod(0o644)
    assert pyenv.discover() == {}
