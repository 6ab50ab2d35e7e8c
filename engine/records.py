"""The job records and what every writer of them shares: the store, the hub that tells log followers of each
change, the clock, the one lock for read-modify-write, and where each job's run directory is.

JobService (what the API's methods mean) and Lifecycle (the only writer of a job's status after Execute) both
work on these; neither needs the other to get at a record.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

from engine.config import EngineConfig
from engine.follow import LogHub
from engine.model import Job
from engine.state import TRANSITIONS, JobStatus, check_transition
from engine.store import Store
from runners import journal
from runners.rundir import PROGRESS, RunDir

log = logging.getLogger(__name__)
S = JobStatus


class Records:
    def __init__(self, cfg: EngineConfig, store: Store, clock: Callable[[], float] = time.time):
        self.cfg = cfg
        self._jobs_dir = str(cfg.data_dir / "jobs")
        self._runs: dict[str, RunDir] = {}  # RunDirs are immutable: one per job, not one per question
        self.store = store
        self.clock = clock
        (cfg.data_dir / "jobs").mkdir(mode=0o700, exist_ok=True)
        self.hub = LogHub(self.journal)  # followers of the jobs' logs, told of every status change here
        self.lock = threading.RLock()  # serialises read-modify-write of job records within this engine

    @contextmanager
    def locked(self, job_id: str) -> Iterator[Job]:
        """The job's current record, with no other writer of this engine until the block ends."""
        with self.lock:
            yield self.store.get_job(job_id)

    # --- paths -----------------------------------------------------------------------------------------------

    def run(self, job_id: str) -> RunDir:
        made = self._runs.get(job_id)
        if made is None:
            if len(self._runs) >= 4096:
                self._runs.clear()
            made = self._runs[job_id] = RunDir(self.cfg.data_dir / "jobs" / job_id)
        return made

    def run_dir(self, job_id: str) -> Path:
        return self.cfg.data_dir / "jobs" / job_id

    def progress_file(self, job_id: str) -> str:
        """progress_path as a string, made without pathlib (it is stat'ed at every poll of the job's operation)."""
        return os.path.join(self._jobs_dir, job_id, *PROGRESS)

    def progress_path(self, job_id: str) -> Path:
        """JOB_PROGRESS_FILENAME: in a directory of its own, so a container can get it bind-mounted."""
        return self.run(job_id).progress

    def journal(self, job_id: str) -> str:
        return str(self.run(job_id).journal)

    def system_log(self, job_id: str, message: str) -> None:
        """A line of the job's system log. Best effort: on a full disk the line goes to the engine's own log
        instead, and the job's record (its status, its error) says what happened."""
        try:
            self.run_dir(job_id).mkdir(parents=True, exist_ok=True, mode=0o700)
            journal.append_line(self.journal(job_id), journal.Stream.SYSTEM, message)
        except OSError as e:
            log.warning("job %s: cannot write its system log (%s): %s", job_id, e, message)

    def lease(self, job_id: str) -> Callable[[str], None]:
        """What a writer of the job's blobs calls with each digest (engine/cas.py's protocol)."""
        return lambda sha: self.store.add_blob_ref(job_id, sha)

    # --- writes ----------------------------------------------------------------------------------------------

    def update(self, job_id: str, fn: Callable[[Job], None], *, to: Optional[JobStatus] = None,
               via: Optional[JobStatus] = None, current: Optional[Job] = None) -> Job:
        """Apply ``fn`` to the job as stored and store it; with ``to``, through the transition table
        (which also stamps when the job started and when it finished). Only engine/lifecycle.py passes ``to``.
        ``via``: a status the job passes through on its way to ``to`` in the same commit (recorded in its history,
        never stored alone): one durable write where there were two, and no client could see the one between.
        ``current``: the record ``locked`` gave the caller, in whose block this is (not read again, and changed in
        place); only a record read under this lock is still the stored one."""
        with self.lock:
            job = current if current is not None and current.id == job_id else self.store.get_job(job_id)
            before = job.status
            steps = (to,)
            if via is not None and via in TRANSITIONS[before] and to in TRANSITIONS[via]:
                steps = (via, to)  # else (a cancel came in between, say) straight to ``to``, as the table allows
            for step in steps:
                if step is not None and step != job.status:
                    check_transition(job.status, step)
                    job.status = step
                    now = self.clock()
                    job.status_history.append([step.name, now])
                    if step == S.EXECUTING and job.started_at is None:
                        job.started_at = now
                    if step.terminal:
                        job.finished_at = now
            fn(job)
            self.store.update_job(job, expect=before)
        self.hub.notify(job_id, "finished" if job.status.terminal else "active")
        return job
