"""What the fast tests share: an engine over the fake executor (no process, no sandbox, no Docker)."""
from __future__ import annotations

from engine.app import build_engine
from engine.config import EngineConfig
from runners.executors.fake import FakeExecutor


def fake_engine(tmp_path, **cfg):
    """A started engine whose attempts the fake executor scripts; ``engine.fake`` is that executor."""
    fake = FakeExecutor()
    cfg = {"sandbox": "none", "docker": False, "max_concurrent_jobs": 2, "reconcile_interval_s": 0.2, **cfg}
    e = build_engine(EngineConfig(data_dir=tmp_path / "data", **cfg), executor=fake).start()
    e.fake = fake
    return e
