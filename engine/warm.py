"""Sandboxes made before their jobs: a project's next job id is chosen ahead, and its sandbox is made for it.

A confined process job spends most of its start in making its sandbox (bwrap's namespaces and mounts, setpriv):
~7 ms of a no-op job's ~25. Once a job of a project has started, the engine chooses the id of that project's next
job and has the sandbox such a job would get made in that id's run dir (runners/node.py prewarm), under a
supervisor that waits. The next Create of the project takes that id; its Execute starts the job in the sandbox,
if the job's own sandbox argv is the very argv it was made with, else cold, as before. Nothing is given to it
that its own cold start would not give: the same argv, the same uid, the same paths.

A Python-env job's sandbox also binds a job layer, made in the run dir then over the project's cached env; the job's
own layer is made in place over it, so its argv is the same. Sandboxes are per project and kind of job (a
Python-env job's, or a plain one's: what a Create can tell), and a Create takes only one of its own kind.

At most one sandbox waits per project and kind (for the few used last), and none longer than ``IDLE_S``. An id
chosen ahead and never taken leaves nothing: its run dir is removed when its sandbox is dropped, or at the next
start of an engine that died holding it (the ``warm`` file marks such a run dir).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Optional

from engine.ids import new_id
from runners.fsops import rmtree
from runners.rundir import RunDir

log = logging.getLogger(__name__)
MARK = "warm"  # in a run dir made ahead of its job: removed with its dir unless a job took the id


def _kind(template: object) -> str:
    """The kind of job a template's sandbox is for, as a Create can tell it (runners/node.py WarmTemplate.kind)."""
    return getattr(template, "kind", "")


class WarmSandboxes:
    IDLE_S = 300.0
    PROJECTS = 4  # (project, kind) pairs with a sandbox waiting

    def __init__(self, make: Callable[[RunDir, object], bool], discard: Callable[[str], None],
                 run_of: Callable[[str], RunDir], jobs_dir: Path, has_job: Callable[[str], bool]):
        """``make(run, template)``: the sandbox of a job like the template's made in ``run`` (runners/node.py
        prewarm, on this machine); ``discard(run dir)``: the one made there dropped (the process executor's)."""
        self.make, self.discard = make, discard
        self.run_of, self.jobs_dir, self.has_job = run_of, jobs_dir, has_job
        self._mu = threading.Condition()
        # (project, kind) -> (job id ahead, made at)
        self._ready: "OrderedDict[tuple[str, str], tuple[str, float]]" = OrderedDict()
        self._taken: dict[str, float] = {}  # job id -> when its Create took it (its sandbox waits for Execute)
        # (project, kind) -> what to make next (runners/node.py WarmTemplate); the one being made, if any
        self._want: "OrderedDict[tuple[str, str], object]" = OrderedDict()
        self._making: Optional[tuple[str, str]] = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="dsjobs-warm", daemon=True)
        self._thread.start()

    # --- from the API and the backend ---------------------------------------------------------------------------

    def take(self, project_id: str, kind: str = "") -> Optional[str]:
        """The id of the project's next job, when a sandbox for its kind of job (WarmTemplate.kind) waits for it
        (Create calls this); None: a new id."""
        with self._mu:
            got = self._ready.pop((project_id, kind), None)
            if got is None:
                return None
            self._taken[got[0]] = time.monotonic()
            return got[0]

    def give_back(self, job_id: str) -> None:
        """A Create that took ``job_id`` failed before its job was stored: its sandbox and run dir go at once."""
        with self._mu:
            if self._taken.pop(job_id, None) is None:
                return
        if not self.has_job(job_id):
            self._drop(job_id, remove=True)

    def started(self, project_id: str, template: Optional[object]) -> None:
        """A job of the project started (its start confirmed): a sandbox like its own is made for the next one of
        its kind, unless one waits already."""
        if template is None:
            return
        key = (project_id, _kind(template))
        with self._mu:
            if self._closed or key in self._ready or key == self._making:
                return
            self._want[key] = template
            self._want.move_to_end(key)
            self._mu.notify()

    def close(self) -> None:
        with self._mu:
            self._closed = True
            ready, self._ready = list(self._ready.values()), OrderedDict()
            self._taken.clear()
            self._mu.notify()
        for job_id, _ in ready:
            self._drop(job_id, remove=True)
        self._thread.join(10)

    # --- the one thread that makes and drops them ------------------------------------------------------------------

    def _drop(self, job_id: str, remove: bool) -> None:
        run = self.run_of(job_id)
        self.discard(str(run.path))
        if remove:
            rmtree(str(run.path))

    def _sweep_left(self) -> None:
        """Run dirs made ahead by an engine that died before a job took their ids."""
        try:
            names = os.listdir(self.jobs_dir)
        except OSError:
            return
        for name in names:
            if os.path.exists(os.path.join(self.jobs_dir, name, MARK)) and not self.has_job(name):
                rmtree(os.path.join(self.jobs_dir, name))

    def _loop(self) -> None:
        try:
            self._sweep_left()
        except Exception:  # noqa: BLE001 - leftovers are only disk space; the engine runs on
            log.exception("warm sandboxes: cannot sweep what an earlier engine left")
        while True:
            with self._mu:
                if not self._want and not self._closed:
                    self._mu.wait(self._next_expiry())
                if self._closed:
                    return
                key, template = self._want.popitem(last=False) if self._want else (None, None)
                self._making = key
                expired = self._expired()
            for job_id, remove in expired:
                self._drop(job_id, remove)
            if key is not None:
                self._make(key, template)

    def _next_expiry(self) -> Optional[float]:
        times = [at for _, at in self._ready.values()] + list(self._taken.values())
        return max(0.05, min(times) + self.IDLE_S - time.monotonic()) if times else None

    def _expired(self) -> list[tuple[str, bool]]:
        now, out = time.monotonic(), []
        for key, (job_id, at) in list(self._ready.items()):
            if now - at >= self.IDLE_S:
                del self._ready[key]
                out.append((job_id, True))
        while len(self._ready) > self.PROJECTS:
            _, (job_id, _) = self._ready.popitem(last=False)
            out.append((job_id, True))
        for job_id, at in list(self._taken.items()):
            if now - at >= self.IDLE_S:  # created, never executed since: its job will start cold
                del self._taken[job_id]
                out.append((job_id, not self.has_job(job_id)))  # (a Create that failed unseen: nothing keeps it)
        return out

    def _make(self, key: tuple[str, str], template: object) -> None:
        job_id = new_id("ds")
        run = self.run_of(job_id)
        try:
            run.make()
            (run.path / MARK).touch(mode=0o600)
            made = self.make(run, template)
        except Exception as e:  # noqa: BLE001 - a sandbox not made ahead only means a cold start
            log.warning("warm sandboxes: cannot make one for project %s: %s", key[0], e)
            made = False
        with self._mu:
            self._making = None
            if made and not self._closed and key not in self._ready:
                self._ready[key] = (job_id, time.monotonic())
                return
        self._drop(job_id, remove=True)
