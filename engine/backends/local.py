"""The local backend: each attempt runs on this machine, in a thread of the engine, through the node runner.

How many jobs prepare or run at once is ``max_concurrent_jobs``: a job beyond that stays queued in the store
(``has_room``), so a restart loses nothing. Inputs are read from the blob store in place, outputs are written into
it under the job's lease (engine/cas.py), and the start is reported to the lifecycle directly.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Optional

from engine.backends.base import Backend, Sink
from engine.cas import BlobStore
from engine.errors import disk_full, io_error
from engine.model import Job
from engine.state import JobStatus
from runners.workers import Workers
from runners import gpus
from runners.executors.base import Executor
from runners.node import Attempt, Interrupted, Machine, NodeIO, RetryLater, choose_instance, find_run, held_gpus
from runners.rundir import RunDir
from runners.spec import AttemptResult, Failure, FailureKind, FaultSpec, JobFailure, StopRequest
from runners.executors.supervisor import kill_marked

if TYPE_CHECKING:
    from engine.warm import WarmSandboxes

log = logging.getLogger(__name__)
S = JobStatus


class LocalIO(NodeIO):
    def __init__(self, job_id: str, sink: Sink, blobs: BlobStore, lease: Callable[[str], None],
                 on_start: Callable[[], None] = lambda: None):
        self.job_id, self.sink, self.blobs, self.lease = job_id, sink, blobs, lease
        self.on_start = on_start

    def input_path(self, sha256: str) -> str:
        return str(self.blobs.path(sha256))

    def store_output(self, stream: BinaryIO) -> tuple[str, int]:
        try:
            return self.blobs.put_stream(stream, self.lease)
        except Exception as e:  # noqa: BLE001 - a full or failing disk: the node stores them again later
            if disk_full(e) or io_error(e):
                raise RetryLater(str(e)) from e
            raise

    def move_output(self, fd: int, parent_fd: int, name: str, before_move) -> Optional[tuple[str, int]]:
        try:
            return self.blobs.adopt(fd, parent_fd, name, self.lease, before_move)
        except Exception as e:  # noqa: BLE001 - as store_output
            if disk_full(e) or io_error(e):
                raise RetryLater(str(e)) from e
            raise

    def claim_output(self, sha256: str, size: int) -> bool:
        return self.blobs.claim(sha256, size, self.lease)

    def may_start(self) -> bool:
        return self.sink.may_start(self.job_id)

    def started(self, instance: str, at: Optional[float] = None) -> None:
        self.sink.executing(self.job_id, instance, at=at)
        self.on_start()

    def uploading(self) -> None:
        self.sink.uploading(self.job_id)


class LocalBackend(Backend):
    name = "local"

    def __init__(self, machine: Machine, run_dir: Callable[[str], Path], blobs: BlobStore,
                 lease: Callable[[str], Callable[[str], None]], slots: int,
                 instance_types: Optional[Callable[[Job], tuple[list, FaultSpec]]] = None,
                 warm: Optional["WarmSandboxes"] = None):
        self.machine = machine
        self.warm = warm  # sandboxes made ahead of jobs (engine/warm.py): told of each start
        # job -> its instance types (runners.spec.Limits, in order) and its injected faults: what GPUs it will
        # hold here, chosen as the node chooses (runners.node.choose_instance)
        self.instance_types = instance_types
        self.run_dir = run_dir
        self.blobs = blobs
        self.lease = lease
        self.slots = max(1, slots)
        self._attempts: dict[str, Attempt] = {}  # job id -> its attempt, from hand-over until its result is in
        self._waiting: set[str] = set()  # queued jobs whose system log says they wait for GPUs
        self._mu = threading.Lock()
        self._workers = Workers("dsjobs-attempt")  # a job's start does not wait for a new thread (runners/workers.py)

    def _gpu_need(self, job: Job):
        """The instance type of the job's list this machine will run it as (the node's own choice, faults
        included), when that one needs GPUs."""
        if self.instance_types is None or not self.machine.checks_gpus:
            return None
        types, faults = self.instance_types(job)
        if not types:
            return None
        try:
            t = choose_instance(types, faults, self.machine)
        except JobFailure:
            return None  # none can run here: the node fails the job, holding nothing
        return t if t.gpus > 0 else None

    def has_room(self, job: Optional[Job] = None) -> bool:
        """A job slot, and the GPUs of its instance type (a job waits in the queue until they are free)."""
        with self._mu:
            if len(self._attempts) >= self.slots:
                return False
        need = self._gpu_need(job) if job is not None else None
        if need is None or self.machine.pool().can_take(need.gpus, need.instance):
            return True
        with self._mu:
            said = job.id in self._waiting
            self._waiting.add(job.id)
        if not said:  # once per job: why it stays queued while the engine has job slots
            what = "a MIG instance" if need.instance == gpus.MIG_INSTANCE else \
                f"{need.gpus} GPU{'s' if need.gpus != 1 else ''}"
            self.sink.log(job.id, f"queued: waiting for {what} of instance type {need.instance}: other jobs hold "
                                  "them")
        return False

    def owns(self, job_id: str) -> bool:
        with self._mu:
            return job_id in self._attempts

    def _attempt(self, job_id: str, project_id: str = "") -> Attempt:
        io = LocalIO(job_id, self.sink, self.blobs, self.lease(job_id))
        a = Attempt(job_id, RunDir(self.run_dir(job_id)), self.machine, io)
        if self.warm is not None and project_id:
            warm = self.warm
            io.on_start = lambda: warm.started(project_id, a.warm_template)
        with self._mu:
            self._attempts[job_id] = a
        return a

    def _thread(self, job_id: str, body: Callable[[], Optional[AttemptResult]], name: str) -> None:
        """Run ``body`` in a thread of its own; its result ends the job. The attempt stays registered until the
        sink has it, so the reconciler never sees the job unowned."""
        def run():
            try:
                try:
                    result = body()
                except Interrupted:
                    return  # the engine is stopping: the next start adopts the run
                except Exception as e:  # noqa: BLE001 - a bug must end the job truthfully, not kill the engine
                    if disk_full(e):
                        result = AttemptResult(failure=Failure(FailureKind.NO_SPACE, f"no space left on the device "
                                                                                      f"holding the engine's data dir ({e})"))
                    else:
                        log.exception("job %s failed in the engine", job_id)
                        result = AttemptResult(failure=Failure(FailureKind.INTERNAL, f"internal error of the engine: {e}"))
                if result is not None:
                    self.sink.result(job_id, result)
            finally:
                with self._mu:
                    self._attempts.pop(job_id, None)
                if self.machine.checks_gpus and self.instance_types is not None:
                    self.machine.pool().release(job_id)
                self.sink.room()
        self._workers.run(run, name)

    # --- a fresh attempt --------------------------------------------------------------------------------------

    def start(self, job: Job) -> None:
        with self._mu:
            self._waiting.discard(job.id)
        need = self._gpu_need(job)
        if need is not None:  # held from the hand-over on, so the next has_room counts them
            self.machine.pool().reserve(job.id, need.gpus, need.instance)
        a = self._attempt(job.id, job.project_id)

        def body() -> AttemptResult:
            try:
                a.spec = self.sink.resolve(job.id)
            except JobFailure as e:
                return AttemptResult(failure=Failure(e.kind, e.message))
            return a.run()
        self._thread(job.id, body, f"dsjobs-job-{job.id}")

    def stop(self, job: Job, request: StopRequest) -> None:
        with self._mu:
            a = self._attempts.get(job.id)
        if a is not None:
            a.stop(request)

    # --- after a restart --------------------------------------------------------------------------------------

    def adopt(self, job: Job) -> None:
        run = RunDir(self.run_dir(job.id))
        # A container's run: the job named an image, or the engine ran it in its cloud-like default image.
        docker = job.params.uses_docker or run.container.exists()
        if job.status == S.CANCELLING and not run.spec.exists() and not run.container.exists():
            self.sink.result(job.id, AttemptResult())  # cancelled before anything started
            return
        executor: Optional[Executor] = self.machine.docker if docker else self.machine.process
        if executor is None:
            self.sink.result(job.id, AttemptResult(failure=Failure(
                FailureKind.UNSUPPORTED, "the engine restarted without Docker and cannot reach the job's container")))
            return
        found = find_run(run, executor, job.id, docker)
        held = held_gpus(run)
        if held is not None and self.machine.checks_gpus and found.state in ("running", "finished"):
            self.machine.pool().restore(job.id, *held)  # still its own, before anything new is handed out
        if found.state == "unreachable":
            self.sink.result(job.id, AttemptResult(failure=Failure(
                FailureKind.SERVICE_UNAVAILABLE, f"the engine restarted and cannot reach the job's container: "
                                                 f"{found.why}")))
            return
        if found.state == "never" and job.status == S.PREPARING:
            self.sink.requeue(job.id, "the engine restarted before its container started" if docker else
                              "the engine restarted before its start was confirmed")
            return
        confirm = job.status == S.PREPARING
        if found.state == "running":
            self.sink.log(job.id, "engine restarted: job re-adopted")
            a = self._attempt(job.id)
            self._thread(job.id, lambda: a.resume(found.handle, executor, confirm=confirm),
                         f"dsjobs-adopted-{job.id}")
            return
        if found.state == "finished" and found.result is not None and run.layout.exists():
            self.sink.log(job.id, "engine restarted: the job finished while it was down")
            a = self._attempt(job.id)
            self._thread(job.id, lambda: a.resume(None, executor, confirm=confirm, finished=found.result),
                         f"dsjobs-adopted-{job.id}")
            return
        # The supervisor is gone without an exit status: nothing of the job may run on unsupervised.
        if kill_marked(job.id):
            self.sink.log(job.id, "engine restarted: the job's supervisor was gone; its processes were killed")
        self.sink.result(job.id, AttemptResult(failure=Failure(
            FailureKind.ENGINE_STOPPED, "the engine stopped during the run and the job's supervisor is gone; "
                                        "the job did not finish")))

    def close(self) -> None:
        self.machine.stopping.set()
        self._workers.close()
        self.machine.process.close()
        if self.machine.docker is not None:
            self.machine.docker.close()
