"""A job's life after Execute, and the only writer of its status from then on.

Execute queues the job (PREPARING, attempt 0, in the store: a restart loses nothing). The dispatcher hands each
queued job to its backend (chosen once per job: the project's, else the engine's) when that backend has room,
claiming it first (attempt 0 -> 1, compare-and-set). The backend runs the attempt and reports through this class,
its Sink (engine/backends/base.py): started, uploading, and the AttemptResult, which ``outcome`` (a pure function)
turns into the job's final status. On start, every job that was active is handed to its backend to adopt;
``reconcile`` (run by the engine's janitor) does the same, while the engine runs, for any active job that nobody
looks after (a thread that met a full disk, say), and writes again what a full disk kept from being written.
"""
from __future__ import annotations

import logging
import os
import stat
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Optional

from engine.backends.base import Backend
from engine.cas import BlobStore, file_digest
from engine.config import EngineConfig
from engine.errors import EngineError, FailedPrecondition, disk_full, io_error
from engine.ids import new_id
from engine.model import File, FileDesc, FileError, Job, Operation, OutputDataset, OperationError
from engine.records import Records
from engine.spec import Resolver
from engine.state import JobStatus, check_transition
from engine.store import StaleWrite
from runners import journal
from runners.fsops import rmtree
from runners.spec import AttemptResult, AttemptSpec, Failure, FailureKind, JobFailure

log = logging.getLogger(__name__)
S = JobStatus


# --- the final status: a pure function of what the attempt says ---------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    status: JobStatus
    error: Optional[Failure]  # the Execute operation's error (None: as it is, e.g. a cancel's)
    details: Optional[str]  # the job's status_details (None: as it is)
    summary: str  # the system log's last line


def outcome(result: AttemptResult, cancelled: bool) -> Outcome:
    if cancelled:
        return Outcome(S.CANCELLED, None, None, "job cancelled")
    stopped = result.stopped
    if result.started and stopped is not None and stopped.kind == "deadline":
        why = stopped.reason or "the job's maximum running time was reached"
        return Outcome(S.ERROR, Failure(FailureKind.DEADLINE, why), why, "job stopped: maximum running time reached")
    if result.failure is not None:
        return Outcome(S.ERROR, result.failure, result.failure.message, "job failed")
    if not result.started:
        why = "the attempt ended before the job started" + (f" ({stopped.reason})" if stopped and stopped.reason
                                                             else "")
        return Outcome(S.ERROR, Failure(FailureKind.INTERNAL, why), why, "job failed")
    if result.return_code == 0:
        return Outcome(S.SUCCESS, None, None, "job completed successfully")
    # What the executor saw that the user should know (killed for memory, a full disk) goes with the code.
    note = f" ({result.note})" if result.note else ""
    return Outcome(S.ERROR, None, f"program returned code {result.return_code}{note}",
                   f"job finished with return code {result.return_code}")


def _said_end(job: Job) -> None:
    """The engine's one line for a job's end (with its start's, what `dsjobs serve` shows of each job)."""
    if job.started_at is not None:
        ran = f"ran {job.finished_at - job.started_at:.2f}s"
    else:
        since = job.queued_at or job.created_at
        ran = f"never started ({job.finished_at - since:.2f}s after it was {'queued' if job.queued_at else 'created'})"
    rc = "-" if job.return_code is None else str(job.return_code)
    why = f": {_shown(job.status_details[:300])}" if job.status != S.SUCCESS and job.status_details else ""
    log.info("job %s (project %s) finished: %s, return code %s, %s%s", job.id, _shown(job.project_id),
             job.status.name, rc, ran, why)


def _shown(text: str) -> str:
    """One line, whatever it holds: details can carry an installer's or a job's output, which must not forge a
    line of the engine's log (nor drive the terminal showing it)."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"
                   for c in text)


class Lifecycle:
    def __init__(self, cfg: EngineConfig, records: Records, blobs: BlobStore, resolver: Resolver,
                 backends: dict[str, Backend], lease: Callable[[str], Callable[[str], None]]):
        self.cfg = cfg
        self.records = records
        self.store = records.store
        self.blobs = blobs
        self.resolver = resolver
        self.backends = backends
        self.lease = lease
        self._wake = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._mu = threading.Lock()
        # Jobs this class itself looks after at the moment (claiming, handing over, recovering); a backend says
        # which it looks after. Any other active job is picked up again by the reconciler.
        self._owners: dict[str, int] = {}
        # A job's end that could not be written (the disk was full) waits here to be written as it was meant.
        self._unwritten: dict[str, Callable[[], None]] = {}

    # --- running ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        for b in self.backends.values():
            b.open(self)
        self.recover()
        t = threading.Thread(target=self._dispatch_loop, name="dsjobs-dispatcher", daemon=True)
        t.start()
        self._threads.append(t)

    def notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def shutdown(self, stop_jobs: bool = False, timeout: float = 15.0) -> None:
        """Stop taking work; running jobs keep running under their supervisors unless ``stop_jobs``."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        for t in self._threads:
            t.join(5)
        if stop_jobs:
            with self.records.lock:
                active = [j for j in self.store.jobs_with_status(S.PREPARING, S.EXECUTING, S.UPLOADING_OUTPUT)
                          if j.status != S.PREPARING or j.attempt > 0]
            log.info("stopping %d running job(s)", len(active))
            for job in active:
                try:
                    self.cancel(job.id, "engine shutting down", graceful=True)
                except EngineError:
                    log.exception("cannot stop job %s", job.id)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and any(self._looked_after(j.id) for j in active):
                time.sleep(0.05)
        for b in self.backends.values():
            b.close()

    def _backend_for(self, job: Job) -> Backend:
        """The job's backend: chosen when it was first claimed; records of earlier releases did not say, and their
        jobs were on Ray when they have attempts."""
        name = job.backend or ("ray" if "ray" in self.backends and self.store.attempts(job_id=job.id) else
                               self.cfg.project_backends.get(job.project_id, self.cfg.backend)
                               if job.attempt == 0 else "local")
        b = self.backends.get(name)
        if b is None:
            raise FailedPrecondition(f"job {job.id} runs on backend {name!r}, which this engine does not have")
        return b

    # --- ownership --------------------------------------------------------------------------------------------

    @contextmanager
    def owning(self, job_id: str):
        with self._mu:
            self._owners[job_id] = self._owners.get(job_id, 0) + 1
        try:
            yield
        finally:
            with self._mu:
                n = self._owners.get(job_id, 0) - 1
                if n > 0:
                    self._owners[job_id] = n
                else:
                    self._owners.pop(job_id, None)

    def _looked_after(self, job_id: str) -> bool:
        with self._mu:
            if job_id in self._owners:
                return True
        return any(b.owns(job_id) for b in self.backends.values())

    # --- Execute and Cancel -----------------------------------------------------------------------------------

    def enqueue(self, job: Job, op: Operation) -> None:
        """Queue the job; when nothing waits before it and its backend has room, it is claimed in the same
        commit and handed over at once (one durable write and no dispatcher hop on a short job's path)."""
        # The records lock is also the hand-over lock (no two hand-overs count the same free slot), and the job is
        # owned before it is stored claimed: the reconciler never sees it claimed and unowned.
        with self.owning(job.id), self.records.lock:
            check_transition(job.status, S.PREPARING)
            backend = self._queue_backend(job)
            take = backend is not None and not self.store.has_queued() and backend.has_room(job)
            job.status, job.queued_at, job.execute_operation_id = S.PREPARING, op.created_at, op.id
            if take:
                job.attempt, job.backend, job.status_details = 1, backend.name, "preparing"
            else:
                job.status_details = "queued"
            self.store.update_job(job, expect=S.CREATING, op=op)
            self.records.hub.notify(job.id, "active")
            self.records.system_log(job.id, "job queued")
            if take:
                self._hand_over(backend, job)
        if not take:
            self.notify()

    def _queue_backend(self, job: Job) -> Optional[Backend]:
        return self.backends.get(self.cfg.project_backends.get(job.project_id, self.cfg.backend))

    def _hand_over(self, backend: Backend, job: Job) -> None:
        try:
            backend.start(job)
        except Exception as e:  # noqa: BLE001 - the job ends truthfully
            log.exception("backend %s cannot take job %s", backend.name, job.id)
            self.result(job.id, AttemptResult(failure=Failure(FailureKind.INTERNAL,
                                                              f"internal error of the engine: {e}")))

    def cancel(self, job_id: str, reason: str, graceful: bool) -> None:
        why = reason or "cancelled by user"
        with self.records.locked(job_id) as job:
            if job.status.terminal:
                raise FailedPrecondition(f"job {job_id!r} is already finished ({job.status.name})")
            if job.status == S.CREATING or (job.status == S.PREPARING and job.attempt == 0):
                def done(j: Job):  # never started: nothing to stop
                    j.status_details = why
                    j.error = OperationError.of(FailureKind.CANCELLED, why)
                _said_end(self.records.update(job_id, done, to=S.CANCELLED))
                self.records.system_log(job_id, f"cancelled before start: {why}")
                return
            if job.status != S.CANCELLING:
                def mark(j: Job):
                    j.status_details = why
                    j.error = OperationError.of(FailureKind.CANCELLED, why)
                job = self.records.update(job_id, mark, to=S.CANCELLING)
        self._backend_for(job).stop(job, self.resolver.stop_request(job, graceful, job.status_details or why))

    # --- handing queued jobs to backends ----------------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        backoff = 0.0
        while True:
            with self._wake:
                if self._stopping:
                    return
            try:
                handed = self._dispatch_once()
                backoff = 0.0
            except Exception as e:  # noqa: BLE001 - e.g. a full disk under SQLite: wait and try again
                if disk_full(e):  # expected, and said once per wait: no traceback for it
                    log.warning("cannot hand queued jobs over now (%s); again when there is room", e)
                else:
                    log.exception("cannot hand queued jobs over")
                handed, backoff = False, min(max(backoff * 2, 0.5), 10.0)
            if not handed:
                with self._wake:
                    if not self._stopping:
                        self._wake.wait(backoff or 1.0)

    def _dispatch_once(self) -> bool:
        """Hand each queued job whose backend has room to that backend; True when one was handed. The queue is
        listed by id (no record is parsed for a backend that has no room), and the loop ends once every backend
        is full: with hundreds queued, a pass costs what the jobs handed over cost."""
        handed = False
        full: set[str] = set()
        for job_id, project_id in self.store.queued():
            with self._wake:
                if self._stopping:
                    return handed
            backend = self.backends.get(self.cfg.project_backends.get(project_id, self.cfg.backend))
            if backend is None or backend.name in full:
                continue
            if not backend.has_room(None):
                full.add(backend.name)
                if len(full) == len(self.backends):
                    break
                continue
            with self.owning(job_id), self.records.lock:  # a cancel waits for the hand-over, then finds the attempt
                try:
                    job = self.store.get_job(job_id)
                except EngineError:
                    continue
                if job.status != S.PREPARING or job.attempt != 0 or not backend.has_room(job):
                    continue

                def claim(j: Job):
                    if j.attempt != 0:
                        raise StaleWrite("claimed meanwhile")
                    j.attempt, j.backend, j.status_details = 1, backend.name, "preparing"
                try:
                    job = self.records.update(job_id, claim)
                except (StaleWrite, EngineError):
                    continue  # claimed or cancelled meanwhile
                self._hand_over(backend, job)
            handed = True
        return handed

    # --- the Sink: what backends report ------------------------------------------------------------------------

    def resolve(self, job_id: str, instance: str = "") -> AttemptSpec:
        job = self.store.get_job(job_id)
        spec = self.resolver.resolve(job, instance)
        why = self._backend_for(job).unsupported(spec)
        if why:
            raise JobFailure(FailureKind.UNSUPPORTED, why)
        if spec.faults.any:  # what was injected is said once, before anything of it takes effect
            self.records.system_log(job_id, f"injected faults (DSJOBS_FAULTS / project setting): {spec.faults.text}")
        return spec

    def may_start(self, job_id: str) -> bool:
        return self.store.get_job(job_id).status == S.PREPARING

    def executing(self, job_id: str, instance: str, at: Optional[float] = None) -> None:
        def executing(j: Job):
            j.status_details = ""
            j.actual_cloud_instance_type = instance
            if (at is not None and j.status_history and j.status_history[-1][0] == S.EXECUTING.name
                    and j.started_at == j.status_history[-1][1]):  # stamped by this very step
                # The executor's time of the start (the moment its deadline counts from), kept between the job's
                # previous step and now (a node's clock may be off): the report of a start comes late under load.
                # A job claimed in Execute's own commit has no earlier step in its history: its queueing bounds it.
                earlier = [t for _, t in j.status_history[:-1]] + [j.queued_at or j.created_at or 0.0]
                start = min(max(at, max(earlier)), j.started_at)
                j.started_at = j.status_history[-1][1] = start
        with self.records.locked(job_id) as job:
            if job.status == S.PREPARING:
                job = self.records.update(job_id, executing, to=S.EXECUTING, current=job)
                log.info("job %s (project %s) started: %s on %s", job.id, _shown(job.project_id),
                         _shown(instance) or "-", job.backend or "local")
            elif job.status == S.CANCELLING and not job.actual_cloud_instance_type:
                self.records.update(job_id, lambda j: setattr(j, "actual_cloud_instance_type", instance))

    def uploading(self, job_id: str) -> None:
        with self.records.locked(job_id) as job:
            if job.status == S.EXECUTING:
                self.records.update(job_id, lambda j: None, to=S.UPLOADING_OUTPUT)

    def waiting(self, job_id: str, why: str) -> None:
        with self.records.locked(job_id) as job:
            if job.status == S.PREPARING and job.status_details != why:
                self.records.update(job_id, lambda j: setattr(j, "status_details", why))

    def log(self, job_id: str, line: str) -> None:
        self.records.system_log(job_id, line)

    def room(self) -> None:
        self.notify()

    def requeue(self, job_id: str, why: str) -> None:
        rmtree(str(self.records.run(job_id).work))

        def requeue(j: Job):
            j.attempt = 0
            j.status_details = f"queued ({why})"
        self.records.update(job_id, requeue)
        self.records.system_log(job_id, f"the job never started ({why}): it is prepared again")
        self.notify()

    def result(self, job_id: str, result: AttemptResult) -> None:
        self._finish_or_keep(job_id, result)

    # --- the end of a job ---------------------------------------------------------------------------------------

    def _finish_or_keep(self, job_id: str, result: AttemptResult, again: bool = False) -> None:
        """finish, or, when the disk is full or failing, keep it to be done again by the reconciler: the job then
        ends as it really ended (its outputs, its own error), not as 'the disk was full'."""
        try:
            self.finish(job_id, result, quiet=again)
            self._unwritten.pop(job_id, None)
        except Exception as e:  # noqa: BLE001
            if disk_full(e) or io_error(e):
                log.warning("job %s: cannot be finished now (%s); again when there is room", job_id, e)
                self._unwritten[job_id] = lambda: self._finish_or_keep(job_id, result, again=True)
            elif isinstance(e, EngineError):
                log.info("job %s not finished: %s", job_id, e.message)  # it ended meanwhile, or is gone
            else:
                log.exception("cannot finish job %s", job_id)
                self.fail(job_id, FailureKind.INTERNAL, f"the job's outputs or record could not be stored: {e}")

    def fail(self, job_id: str, kind: FailureKind, message: str) -> None:
        """End the job ERROR at once, as simply as can be; never raises (when even that cannot be written, the
        reconciler comes back to it)."""
        self.records.system_log(job_id, f"error: {message}")

        def fail(j: Job):
            j.status_details = message
            j.error = OperationError.of(kind, message)
        try:
            _said_end(self.records.update(job_id, fail, to=S.ERROR))
            self._unwritten.pop(job_id, None)
        except EngineError as e:
            log.info("job %s not marked failed: %s", job_id, e.message)
        except Exception:  # noqa: BLE001 - a full disk: the reconciler writes it once there is room
            log.exception("cannot mark job %s failed (kept to be written later)", job_id)
            self._unwritten[job_id] = lambda: self.fail(job_id, kind, message)

    def finish(self, job_id: str, result: AttemptResult, quiet: bool = False) -> None:
        """The job's final state, from its attempt's result. ``quiet``: a second go after a full disk, whose lines
        the system log has already."""
        say = (lambda m: None) if quiet else (lambda m: self.records.system_log(job_id, m))
        job = self.store.get_job(job_id)
        if job.status.terminal:
            return
        cancelled = job.status == S.CANCELLING
        if result.failure is not None and not result.started and not cancelled:
            say(f"error: {result.failure.message}")
        # A run with nothing to collect was never shown UPLOADING_OUTPUT alone: it passes through it in the final
        # commit (the history has it), one durable write fewer on every short job's path.
        via = S.UPLOADING_OUTPUT if job.status == S.EXECUTING else None
        o = outcome(result, cancelled)
        say(o.summary)
        datasets = self._publish_datasets(job, result) if o.status == S.SUCCESS and result.datasets else []
        log_files, diagnostics = self._describe_logs(job_id)
        files = [File(desc=FileDesc(f.path, f.var), sha256=f.sha256, size_bytes=f.size,
                      compression_type="ZIP" if f.zipped else "NONE") for f in result.outputs]
        errors = [FileError(description=e.description, type=e.kind, output_file_desc=FileDesc(e.path, e.var))
                  for e in result.output_errors]

        def done(j: Job):
            j.output_files, j.file_errors, j.log_files = files, errors, log_files
            j.output_datasets, j.diagnostic_files = datasets, diagnostics
            j.data_size_bytes = sum(f.size_bytes for f in files + log_files)
            if result.started:
                j.return_code = result.return_code
            if result.instance and not j.actual_cloud_instance_type:
                j.actual_cloud_instance_type = result.instance
            if o.error is not None:
                j.error = OperationError.of(o.error.kind, o.error.message)
            if o.details is not None:
                j.status_details = o.details
        _said_end(self.records.update(job_id, done, to=o.status, via=via))

    def _publish_datasets(self, job: Job, result: AttemptResult) -> list:
        """After a successful run, each output dataset's directory becomes a new local dataset."""
        out = []
        for desc in job.params.output_datasets:
            src = result.datasets.get(desc.var)
            if src is None:
                continue
            try:
                st = os.lstat(src)
            except FileNotFoundError:
                st = None
            if st is None or not stat.S_ISDIR(st.st_mode):  # the job replaced it (by a symlink to /, say)
                self.records.system_log(job.id, f"output dataset {desc.name!r}: {os.path.basename(src)!r} is no "
                                                "longer a directory of the job's own; no dataset created")
                continue
            rid = new_id("bt")
            dest = self.cfg.data_dir / "datasets" / rid
            dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.rename(src, dest)  # the directory itself, never what a link points at
            self.resolver.datasets.add(rid, dest, own=True, name=desc.name, description=desc.description,
                                       labels=desc.labels, source_job=job.id)
            self.records.system_log(job.id, f"dataset {desc.name!r} created: {rid}")
            out.append(OutputDataset(desc=desc, id=rid))
        return out

    def _describe_logs(self, job_id: str) -> tuple[list[File], list[File]]:
        """The job's log files and diagnostics; their bytes enter the blob store only when someone downloads
        them."""
        run = self.records.run(job_id)
        journal.extract_stream(str(run.journal), journal.Stream.SYSTEM, str(run.system_log))
        logs, diagnostics = [], []
        for p, into in ((run.stdout, logs), (run.stderr, logs), (run.system_log, logs),
                        (run.env_build_log, diagnostics)):
            if p.exists():
                sha, size = file_digest(p)
                into.append(File(desc=FileDesc(path=f"job_logs/{job_id}/{p.name}"), sha256=sha, size_bytes=size))
        return logs, diagnostics

    # --- recovery -----------------------------------------------------------------------------------------------

    def recover(self) -> None:
        """At start: every job that was active when the last engine stopped is adopted by its backend; one that
        cannot be ends ERROR, and the engine starts anyway."""
        self.blobs.sweep_tmp()
        for job in self.store.jobs_with_status(S.PREPARING, S.EXECUTING, S.UPLOADING_OUTPUT, S.CANCELLING):
            if job.status == S.PREPARING and job.attempt == 0:
                continue  # still queued
            with self.owning(job.id):
                self._recover_one(job)

    def _recover_one(self, job: Job) -> None:
        try:
            backend = self._backend_for(job)
            backend.adopt(job)
            if job.status == S.CANCELLING:  # the stop may not have reached the run before the engine stopped
                backend.stop(job, self.resolver.stop_request(job, True, job.status_details or "cancelled"))
        except Exception as e:  # noqa: BLE001 - one job's trouble never stops the engine from serving
            log.exception("cannot recover job %s", job.id)
            self.fail(job.id, FailureKind.ENGINE_STOPPED,
                      f"the engine could not take the job over after a restart: {e}")

    def reconcile(self) -> None:
        """Active jobs that nobody looks after go through recovery again: a finished run is collected, a live
        supervisor adopted, a run that never started prepared again, anything else ended."""
        for job_id, write in list(self._unwritten.items()):
            if not self._looked_after(job_id):
                with self.owning(job_id):
                    write()
        for job in self.store.claimed_active():  # the queued ones are the dispatcher's
            if self._looked_after(job.id) or job.id in self._unwritten:
                continue
            with self.owning(job.id):  # taken before a second look: the listing may be older than its owner
                try:
                    current = self.store.get_job(job.id)
                    if current.status.terminal or (current.status == S.PREPARING and current.attempt == 0):
                        continue
                    if any(b.owns(job.id) for b in self.backends.values()):
                        continue
                    log.warning("job %s is %s and nobody looks after it: recovering it", job.id,
                                current.status.name)
                    self._recover_one(current)
                except Exception:  # noqa: BLE001 - the next pass tries again
                    log.exception("cannot reconcile job %s", job.id)
