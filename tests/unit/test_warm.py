"""engine/warm.py's bookkeeping, with the making of a sandbox replaced by a callable the test holds: one sandbox
per project however many of its jobs start meanwhile, ids given back by failed Creates gone at once, ids taken by
Creates that were never stored gone when they expire."""
from __future__ import annotations

import threading
import time

from engine.warm import MARK, WarmSandboxes
from runners.rundir import RunDir


class Maker:
    """Counts the sandboxes made and dropped; ``hold`` keeps a making going until the test lets it end."""

    def __init__(self):
        self.made, self.dropped, self.hold, self.going = [], [], threading.Event(), threading.Event()
        self.hold.set()

    def make(self, run: RunDir, template) -> bool:
        self.made.append(run.path.name)
        self.going.set()
        assert self.hold.wait(10)
        return True

    def discard(self, run_dir: str) -> None:
        self.dropped.append(run_dir.rsplit("/", 1)[-1])


def _warm(tmp_path, maker, jobs=()):
    jobs_dir = tmp_path / "jobs"
    jobs_dir.mkdir(exist_ok=True)
    return WarmSandboxes(maker.make, maker.discard, lambda job_id: RunDir(jobs_dir / job_id), jobs_dir,
                         has_job=lambda job_id: job_id in jobs)


def _wait(cond, what):
    deadline = time.monotonic() + 10
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_jobs_started_while_a_projects_sandbox_is_made_make_no_second_one(tmp_path):
    maker = Maker()
    maker.hold.clear()
    w = _warm(tmp_path, maker)
    try:
        w.started("p", "template")
        assert maker.going.wait(10)
        for _ in range(3):  # more of its jobs start while the first is being made
            w.started("p", "template")
        maker.hold.set()
        _wait(lambda: w.take("p") is not None, "the sandbox made ahead")
        time.sleep(0.2)  # what a second making would have needed to begin
        assert len(maker.made) == 1, maker.made
    finally:
        w.close()


def test_an_id_a_failed_create_gives_back_goes_with_its_sandbox(tmp_path):
    maker = Maker()
    w = _warm(tmp_path, maker)
    try:
        w.started("p", "template")
        _wait(lambda: w._ready, "the sandbox made ahead")
        job_id = w.take("p")
        assert (tmp_path / "jobs" / job_id / MARK).exists()
        w.give_back(job_id)
        assert maker.dropped == [job_id] and not (tmp_path / "jobs" / job_id).exists()
        w.give_back(job_id)  # twice: nothing more
        assert maker.dropped == [job_id]
    finally:
        w.close()


def test_a_taken_id_that_never_became_a_job_is_removed_when_it_expires(tmp_path):
    maker = Maker()
    w = _warm(tmp_path, maker, jobs={"never"})
    w.IDLE_S = 0.3
    try:
        w.started("p", "template")
        _wait(lambda: w._ready, "the sandbox made ahead")
        lost = w.take("p")  # its Create died unseen (the engine's thread gone, say): no give_back
        _wait(lambda: maker.dropped == [lost], "its expiry")
        _wait(lambda: not (tmp_path / "jobs" / lost).exists(), "its run dir removed")
    finally:
        w.close()


class Template:
    def __init__(self, kind: str):
        self.kind = kind


def test_a_projects_plain_and_python_env_jobs_each_have_a_sandbox_taken_only_by_their_kind(tmp_path):
    maker = Maker()
    w = _warm(tmp_path, maker)
    try:
        w.started("p", Template("python"))
        _wait(lambda: w._ready, "the Python-env job's sandbox made ahead")
        assert w.take("p", "") is None  # a plain job's Create: not for it, and it stays for the next Python-env job
        w.started("p", Template(""))  # a plain job of the same project started: one for its kind too
        _wait(lambda: len(w._ready) == 2, "the plain job's sandbox made ahead")
        python_id, plain_id = maker.made
        w.started("p", Template("python"))  # another Python-env job: the one made stays
        time.sleep(0.1)
        assert len(maker.made) == 2 and maker.dropped == []
        assert w.take("p", "python") == python_id and w.take("p", "python") is None
        assert w.take("p", "") == plain_id
    finally:
        w.close()
