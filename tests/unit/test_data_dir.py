"""One engine per data dir (engine/app.py lock_data_dir): another live engine is refused at once, naming it; a lock
left held by what a killed engine was forking is waited for, not mistaken for an engine."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from engine.app import lock_data_dir
from engine.config import EngineConfig
from engine.errors import FailedPrecondition

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
if sys.argv[2] == "engine":
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
print("held", flush=True)
time.sleep(float(sys.argv[3]))
"""


def _hold(path, role, seconds):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path), role, str(seconds)], stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline() == "held\n"
    return p


def test_a_live_engine_is_refused_at_once_and_named(tmp_path):
    cfg = EngineConfig(data_dir=tmp_path / "data")
    cfg.data_dir.mkdir(mode=0o700)
    holder = _hold(cfg.data_dir / "engine.lock", "engine", 30)
    try:
        t = time.monotonic()
        with pytest.raises(FailedPrecondition, match=rf"is in use by another dsjobs engine \(pid {holder.pid}\)"):
            lock_data_dir(cfg)
        assert time.monotonic() - t < 1
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_a_killed_engines_child_still_holds_is_waited_for(tmp_path):
    cfg = EngineConfig(data_dir=tmp_path / "data")
    cfg.data_dir.mkdir(mode=0o700)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (cfg.data_dir / "engine.lock").write_text(gone.stdout.strip())  # the engine that wrote it is gone
    holder = _hold(cfg.data_dir / "engine.lock", "child", 0.7)  # its child, between fork and exec
    try:
        fd = lock_data_dir(cfg)
        assert holder.wait(5) is not None  # taken once the child let go (it exits right after)
        assert (cfg.data_dir / "engine.lock").read_text() == str(os.getpid())
        os.close(fd)
    finally:
        holder.kill()
        holder.wait()
