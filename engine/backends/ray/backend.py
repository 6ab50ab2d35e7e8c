"""Jobs on a Ray cluster: placement and admission by the engine, one Ray job per attempt whose entrypoint is the
dsjobs agent (runners/agent.py: the node runner behind an HTTP NodeIO), everything else through the runner
channel (channel.py).

Jobs waiting for room wait here, in one admission thread, never in a local slot: how many run at once is the
cluster's capacity. Ray's own stop is only the backstop; the graceful signal and timeout go to the agent. An attempt
that Ray says failed, or no longer knows, without a result from its agent, is fenced and the job ends ERROR with
Ray's message: the job is never reported twice and never run twice.
"""
from __future__ import annotations

import logging
import math
import shlex
import threading
import time
from typing import Optional

from engine.backends.base import Backend, Sink
from engine.backends.ray.channel import RunnerChannel
from engine.backends.ray.client import TERMINAL, RayClient, RayError, place, shape
from engine.cas import BlobStore
from engine.config import EngineConfig
from engine.files import Signer
from engine.model import Attempt, Job
from engine.records import Records
from engine.state import JobStatus
from runners import journal
from runners.spec import (AttemptResult, AttemptSpec, Failure, FailureKind, JobFailure, OutputError, OutputFile,
                          StopRequest, from_plain, plain)

log = logging.getLogger(__name__)
S = JobStatus
ACTIVE = ("SUBMITTED", "RUNNING")
NODES_TTL_S = 1.0


class RayBackend(Backend):
    name = "ray"

    def __init__(self, cfg: EngineConfig, records: Records, blobs: BlobStore, lease, signer: Signer):
        self.cfg = cfg
        self.records = records
        self.store = records.store
        self.signer = signer
        self.ray = RayClient(cfg.ray_address, cfg.ray_token)
        self.channel = RunnerChannel(records, blobs, lease, self._spec)
        self._closing = threading.Event()
        self._deleters: set[threading.Thread] = set()  # joined by close(): none may touch the store after it
        self._room = threading.Condition()  # notified when an attempt ends or a job is queued
        self._nodes: tuple[float, list] = (0.0, [])
        self._mu = threading.Lock()  # the queue and placement: choosing a node and reserving room on it is one step
        self._queue: dict[str, Job] = {}  # jobs waiting for room, in the order they came
        self._waiting_for: dict[str, str] = {}
        self._watched: set[str] = set()  # jobs whose attempt a watcher follows

    def open(self, sink: Sink) -> None:
        super().open(sink)
        self.channel.sink = sink
        self.sweep()
        threading.Thread(target=self._admit_loop, name="dsjobs-ray-admission", daemon=True).start()

    def owns(self, job_id: str) -> bool:
        with self._mu:
            return job_id in self._queue or job_id in self._watched

    def unsupported(self, spec: AttemptSpec) -> Optional[str]:
        """What needs the engine's own disk (the node has no way to it): refused here, in one place."""
        what = [name for name, used in [("s3 mounts", any(m.container_dir.startswith("/job/s3/")
                                                           for m in spec.mounts)),
                                        ("datasets", any(m.container_dir.startswith("/dsjobs/datasets/")
                                                         for m in spec.mounts)),
                                        ("output datasets", spec.output_datasets),
                                        ("the project disk", spec.project_home)] if used]
        if what:
            return (f"{', '.join(what)}: not available on the ray backend (they need the engine's disk); "
                    f"pin the project to the local backend")
        return None

    # --- admission --------------------------------------------------------------------------------------------

    def start(self, job: Job) -> None:
        with self._mu:
            self._queue[job.id] = job
        with self._room:
            self._room.notify_all()

    def _admit_loop(self) -> None:
        while not self._closing.is_set():
            with self._mu:
                queued = list(self._queue.values())
            for job in queued:
                try:
                    self._admit(job)
                except Exception as e:  # noqa: BLE001 - the job ends truthfully; the others wait on
                    log.exception("cannot place job %s on Ray", job.id)
                    self._drop(job.id, AttemptResult(failure=Failure(FailureKind.INTERNAL,
                                                                     f"internal error of the engine: {e}")))
            with self._room:
                if not self._closing.is_set():
                    self._room.wait(NODES_TTL_S)

    def _drop(self, job_id: str, result: Optional[AttemptResult]) -> None:
        """The job leaves the queue without an attempt; ``result`` ends it."""
        with self._mu:
            if self._queue.pop(job_id, None) is None:
                return  # cancelled meanwhile: that already ended it
            self._waiting_for.pop(job_id, None)
        if result is not None:
            self.sink.result(job_id, result)

    def _admit(self, job: Job) -> None:
        try:
            # An unknown image id or secret, or what the cluster cannot give, fails now, not on the node.
            spec = self.sink.resolve(job.id)
        except JobFailure as e:
            return self._drop(job.id, AttemptResult(failure=Failure(e.kind, e.message)))
        names = [t.instance for t in spec.instance_types]
        types = [self.cfg.instance_types[n] for n in names]
        with self._mu:
            if job.id not in self._queue:
                return
            err = None
            try:
                nodes = self._alive_nodes()
                t, node, could = place(types, nodes, self._used())
            except RayError as e:
                t = node = could = nodes = None
                err = e
            a = None
            if t is not None:
                a, token = self.channel.new_attempt(job.id, "ray", instance=t.name, node_id=node.id, shape=shape(t))
                del self._queue[job.id]
                self._waiting_for.pop(job.id, None)
                self._watched.add(job.id)
        if err is not None and err.status in (401, 403):
            return self._drop(job.id, AttemptResult(failure=Failure(
                FailureKind.MISCONFIGURED, f"the Ray cluster refused the engine's credentials (is ray_token set to "
                                           f"the cluster's token?): {err}")))
        if a is None:
            if nodes is not None and could is None:
                return self._drop(job.id, AttemptResult(failure=Failure(
                    FailureKind.UNSUPPORTED, f"no node of the Ray cluster can run instance type {' or '.join(names)} "
                                             f"(alive nodes: {len(nodes)}); the job was not submitted")))
            msg = (f"waiting for a free node of type {could.name}" if nodes is not None
                   else f"waiting for the Ray cluster: {err}")
            if self._waiting_for.get(job.id) != msg:
                self._waiting_for[job.id] = msg
                self.sink.log(job.id, msg)
                self.sink.waiting(job.id, msg)
            return
        self.sink.log(job.id, f"instance type {t.name}: submitting attempt {a.id} to Ray node {node.id[:12]}")
        if self.sink.may_start(job.id):
            try:
                self._submit(job, a, token, t)
            except RayError as e:
                self.channel.fence(a.id, f"cannot submit the job to Ray: {e}")
        else:
            self.channel.fence(a.id, "cancelled before it was submitted")
        threading.Thread(target=self.watch, args=(job.id, a.id), daemon=True, name=f"dsjobs-ray-{job.id}").start()

    def _used(self) -> dict[str, dict]:
        used: dict[str, dict] = {}
        for a in self.store.attempts(states=ACTIVE):
            u = used.setdefault(a.node_id, {"cpus": 0.0, "gpus": 0.0, "memory": 0.0})
            for k in u:
                u[k] += a.shape.get(k, 0.0)
        return used

    def _alive_nodes(self) -> list:
        """The node list, read at most once a second however many jobs wait for room (the dashboard is slow)."""
        at, nodes = self._nodes
        if time.monotonic() - at > NODES_TTL_S:
            nodes = self.ray.nodes()
            self._nodes = (time.monotonic(), nodes)
        return nodes

    def _submit(self, job: Job, a: Attempt, token: str, t) -> None:
        g = job.params.graceful_shutdown
        grace = (g.timeout_s if g and g.timeout_s else self.cfg.default_graceful_timeout_s)
        argv = [self.cfg.ray_agent_python, "-m", "runners.agent", self.cfg.ray_engine_url or self.signer.base_url,
                a.id, token]
        s = a.shape
        self.ray.submit(a.id, " ".join(shlex.quote(x) for x in argv), cpus=s["cpus"], gpus=s["gpus"],
                        memory=s["memory"], selector={"ray.io/node-id": a.node_id},
                        # Ray's stop is the backstop only: it waits longer than the agent's own graceful path.
                        env_vars={"RAY_JOB_STOP_WAIT_TIME_S": str(math.ceil(grace) + 30)},
                        metadata={"dsjobs_job_id": job.id, "instance_type": t.name})

    def _spec(self, a: Attempt) -> dict:
        """What the agent needs, sent once over the channel (never through Ray: it keeps and shows its job info):
        the attempt's spec, with the input URLs it downloads from; the password and secrets travel only here."""
        job = self.store.get_job(a.job_id)
        spec = self.sink.resolve(a.job_id, a.instance)
        spec.attempt = a.id
        spec.bwrap = ""  # bwrap as the node has it
        spec.input_urls = {f.sha256: self.signer.url("GET", f.sha256, f.size_bytes, ttl_s=24 * 3600)
                           for f in job.params.all_uploads()}
        return {"spec": plain(spec), "node_dir": self.cfg.ray_node_dir}

    def watch(self, job_id: str, attempt_id: str) -> None:
        """The attempt's watcher (it owns the job until it is finished): survives anything a pass raises."""
        try:
            while True:
                try:
                    return self._watch(job_id, attempt_id)
                except Exception:  # noqa: BLE001 - e.g. a full disk under the store: watch on
                    log.exception("watching attempt %s of job %s", attempt_id, job_id)
                    time.sleep(1.0)
        finally:
            with self._mu:
                self._watched.discard(job_id)

    def _watch(self, job_id: str, attempt_id: str) -> None:
        """Wait for the agent's result; meanwhile watch Ray for an attempt that died without one."""
        ended_at = None
        pending_since = watch_since = time.monotonic()
        backstop_at = None
        while True:
            a = self.channel.wait(attempt_id, self.cfg.ray_poll_s)
            if a is not None:
                break
            job = self.store.get_job(job_id)
            if job.status == S.CANCELLING and backstop_at is None:
                stop = self.channel.stop_request(attempt_id)
                backstop_at = time.monotonic() + (stop.grace_s if stop else 0.0) + self.cfg.ray_backstop_margin_s
            try:
                info = self.ray.job(attempt_id)
            except RayError as e:
                # The head is unreachable: the agent reports through the engine, not through Ray, so only an
                # agent that is silent as well is given up on.
                seen = self.channel.last_seen.get(attempt_id, watch_since)
                if time.monotonic() - seen > self.cfg.ray_lost_after_s:
                    self._lose(attempt_id, f"neither Ray nor the attempt's agent answered for "
                                           f"{self.cfg.ray_lost_after_s:g}s ({e})")
                continue
            if info is None:
                self._lose(attempt_id, "the Ray cluster no longer knows this attempt (was the head restarted?)")
                continue
            status = info.get("status")
            if status in TERMINAL:
                ended_at = ended_at or time.monotonic()
                if time.monotonic() - ended_at > self.cfg.ray_result_grace_s:
                    why = f"Ray reports the attempt {status}: {info.get('message') or ''}".strip()
                    self._lose(attempt_id, why, ray_logs=True)
            elif status == "PENDING":
                if time.monotonic() - pending_since > self.cfg.ray_pending_timeout_s:
                    self._lose(attempt_id, f"Ray did not start the attempt in {self.cfg.ray_pending_timeout_s:g}s")
                    self._ray_stop(attempt_id)
            if backstop_at is not None and time.monotonic() > backstop_at and status not in TERMINAL:
                self.sink.log(job_id, "the agent did not stop the job in time: asking Ray to stop it")
                self._ray_stop(attempt_id)
                backstop_at = float("inf")
        self._complete(a)

    def _ray_stop(self, attempt_id: str) -> None:
        try:
            self.ray.stop(attempt_id)
        except RayError as e:
            log.warning("cannot stop Ray job %s: %s", attempt_id, e)

    def _lose(self, attempt_id: str, reason: str, ray_logs: bool = False) -> None:
        a = self.store.get_attempt(attempt_id)
        if ray_logs:
            try:
                text = self.ray.logs(attempt_id)
                if text.strip():
                    self.sink.log(a.job_id, "Ray's log of the attempt (last lines):\n"
                                         + "\n".join(text.rstrip().splitlines()[-20:]))
            except RayError:
                pass
        self.channel.fence(attempt_id, reason)

    def _complete(self, a: Attempt) -> None:
        run = self.records.run(a.job_id).make()
        for stream, path in ((journal.Stream.STDOUT, run.stdout), (journal.Stream.STDERR, run.stderr)):
            journal.extract_raw(str(run.journal), stream, str(path))
        if a.state == "LOST":
            result = AttemptResult(failure=Failure(FailureKind.RUNNER_LOST, f"attempt {a.id} lost: {a.reason}"))
        else:
            result = attempt_result(a.result or {})
        self.sink.result(a.job_id, result)  # a cancelled job ends CANCELLED whatever the attempt says
        with self._room:
            self._room.notify_all()
        t = threading.Thread(target=self._delete, args=(a.id,), daemon=True, name="dsjobs-ray-delete")
        with self._mu:
            self._deleters.add(t)
        t.start()

    def _delete(self, attempt_id: str, tries: int = 60) -> None:
        """Ray keeps every job forever (and its dashboard slows with them): delete it once it is finished."""
        try:
            for _ in range(tries):
                if self._closing.is_set() or self._delete_once(attempt_id):
                    return
                if self._closing.wait(0.5):
                    return
        finally:
            with self._mu:
                self._deleters.discard(threading.current_thread())

    def _delete_once(self, attempt_id: str, unreachable: Optional[threading.Event] = None) -> bool:
        """True once Ray no longer knows the attempt. A job deleted just as its supervisor actor exits comes back
        (as FAILED, "actor died", written by Ray's job monitor), so a job is deleted only once it has been finished
        for a while, and only Ray's 404 counts, never the DELETE's own answer."""
        try:
            info = self.ray.job(attempt_id)
            if info is None:
                a = self.store.get_attempt(attempt_id)
                a.ray_deleted = True
                self.store.put_attempt(a)
                return True
            settled = time.time() - (info.get("end_time") or 0) / 1000 > self.cfg.ray_settle_s
            if info.get("status") in TERMINAL and settled:
                self.ray.delete(attempt_id)
            elif self.store.get_attempt(attempt_id).state == "LOST":
                self.ray.stop(attempt_id)
        except RayError as e:
            if unreachable is not None and not e.status:
                unreachable.set()
        return False

    # --- cancel and restart ------------------------------------------------------------------------------------

    def stop(self, job: Job, request: StopRequest) -> None:
        with self._mu:
            queued = self._queue.pop(job.id, None) is not None
            self._waiting_for.pop(job.id, None)
        if queued:  # still waiting for room: Ray never saw it
            self.sink.result(job.id, AttemptResult(stopped=request))
            return
        active = self.store.attempts(job_id=job.id, states=ACTIVE)
        if not active:
            return
        a = active[-1]
        if a.state == "SUBMITTED":
            # Its agent has not started: fence it, so it exits at once when Ray starts it; Ray cannot stop PENDING.
            self.channel.fence(a.id, f"cancelled before it started: {request.reason}")
            self._ray_stop(a.id)
            return
        self.channel.request_stop(a.id, request)

    def adopt(self, job: Job) -> None:
        """After an engine restart: follow the job's attempt again (its agent retries until the engine is back);
        a job claimed but not yet placed waits for room again."""
        attempts = self.store.attempts(job_id=job.id)
        if not attempts:
            return self.start(job)
        a = attempts[-1]
        if a.state in ACTIVE:
            self.sink.log(job.id, f"engine restarted: following attempt {a.id} on Ray again")
        with self._mu:
            self._watched.add(job.id)
        threading.Thread(target=self.watch, args=(job.id, a.id), daemon=True,
                         name=f"dsjobs-ray-{job.id}").start()

    def sweep(self) -> None:
        """Delete the Ray jobs of attempts that finished while the engine was down."""
        for a in self.store.attempts(states=("DONE", "LOST"), ray_undeleted=True):
            threading.Thread(target=self._delete, args=(a.id, 5), daemon=True).start()

    def close(self, timeout: float = 15.0) -> None:
        """The engine is stopping: finish deleting harvested attempts from Ray (running ones stay, re-adopted at
        the next start). With Ray unreachable it gives up at once: the next start's sweep deletes them."""
        deadline = time.monotonic() + timeout
        # The delete threads stop first (a store closed under one of them would fail it); this sweep does their work.
        self._closing.set()
        with self._mu:
            deleters = list(self._deleters)
        for t in deleters:
            t.join(max(0.0, deadline - time.monotonic()))
        unreachable = threading.Event()
        while time.monotonic() < deadline and not unreachable.is_set():
            left = [a for a in self.store.attempts(states=("DONE", "LOST"), ray_undeleted=True)
                    if not self._delete_once(a.id, unreachable)]
            if not left:
                break
            time.sleep(0.3)
        with self._room:
            self._room.notify_all()
        self.channel.close()


def attempt_result(r: dict) -> AttemptResult:
    """An agent's result; agents of earlier releases sent another form, converted here."""
    if "started" in r or "failure" in r:
        return from_plain(AttemptResult, r)
    if r.get("prepare_error"):
        kinds = {"INVALID_ARGUMENT": FailureKind.INVALID_INPUT, "DEADLINE_EXCEEDED": FailureKind.DEADLINE,
                 "UNAVAILABLE": FailureKind.SERVICE_UNAVAILABLE}
        return AttemptResult(failure=Failure(kinds.get(r.get("code"), FailureKind.UNSUPPORTED), r["prepare_error"]))
    stopped = r.get("stopped")
    return AttemptResult(
        started=True, return_code=r.get("return_code"), signal=r.get("signal"), note=r.get("note") or "",
        stopped=StopRequest.from_dict(stopped) if stopped else None,
        failure=Failure(FailureKind.INTERNAL, r["error"]) if r.get("error") else None,
        outputs=[OutputFile(f["desc"]["path"], f["desc"]["var"], f["sha256"], f["size_bytes"],
                            f.get("compression_type") == "ZIP") for f in r.get("files", [])],
        output_errors=[OutputError((e.get("output_file_desc") or {}).get("path", ""),
                                   (e.get("output_file_desc") or {}).get("var", ""), e.get("type", "UPLOAD_FAILED"),
                                   e.get("description", "")) for e in r.get("errors", [])])
