"""Jobs on a Ray cluster: placement and admission by the engine, one Ray job per attempt whose entrypoint is the
dsjobs agent (runners/agent.py), everything else through the runner channel (engine/channel.py).

Ray's own stop is only the backstop; the graceful signal and timeout go to the agent. An attempt that Ray says
failed, or no longer knows, without a result from its agent, is fenced and the job ends ERROR with Ray's message:
the job is never reported twice and never run twice.
"""
from __future__ import annotations

import logging
import math
import shlex
import threading
import time
from typing import Optional

from engine import logs
from engine.channel import RunnerChannel
from engine.config import EngineConfig
from engine.errors import EngineError
from engine.model import Attempt, File, FileError, Job, to_dict, from_dict
from engine.preparation import uses_docker
from engine.ray import TERMINAL, RayClient, RayError, place, shape
from engine.resources import Secrets
from engine.state import JobStatus
from runners.base import ExitResult
from runners.supervisor import STDERR, STDOUT

log = logging.getLogger(__name__)
S = JobStatus
ACTIVE = ("SUBMITTED", "RUNNING")
NODES_TTL_S = 1.0
RAY_SETTLE_S = 3.0  # Ray's job monitor notices the supervisor actor's exit within this after the job ends


class RayBackend:
    name = "ray"

    def __init__(self, scheduler, cfg: EngineConfig):
        self.sched = scheduler
        self.jobs = scheduler.jobs
        self.cfg = cfg
        self.ray = RayClient(cfg.ray_address, cfg.ray_token)
        self.channel = RunnerChannel(self.jobs, self._spec)
        self.secrets = Secrets(cfg.data_dir)
        self._closing = threading.Event()
        self._room = threading.Condition()  # notified when an attempt ends: jobs waiting for room try again
        self._nodes: tuple[float, list] = (0.0, [])
        self._mu = threading.Lock()  # placement: choosing a node and reserving room on it is one step

    # --- which jobs -------------------------------------------------------------------------------------------

    def wants(self, job: Job) -> bool:
        return self.cfg.project_backends.get(job.project_id, self.cfg.backend) == "ray"

    def unsupported(self, job: Job) -> Optional[str]:
        p = job.params
        what = [name for name, used in [
            ("a python_env in a Docker image", uses_docker(job) and p.env.python_env is not None),
            ("s3 mounts", p.s3_mount_ids), ("datasets", p.dataset_ids),
            ("output datasets", p.output_datasets), ("the project disk", p.attach_project_disk)] if used]
        if what:
            return (f"{', '.join(what)}: not available on the ray backend yet (they need the engine's disk); "
                    f"pin the project to the local backend")
        return None

    # --- one job ----------------------------------------------------------------------------------------------

    def _used(self) -> dict[str, dict]:
        used: dict[str, dict] = {}
        for a in self.jobs.store.attempts(states=ACTIVE):
            u = used.setdefault(a.node_id, {"cpus": 0.0, "gpus": 0.0, "memory": 0.0})
            for k in u:
                u[k] += a.shape.get(k, 0.0)
        return used

    def run(self, job: Job) -> None:
        jobs = self.jobs
        why = self.unsupported(job)
        if why:
            return self.sched._fail(job.id, why, code="FAILED_PRECONDITION")
        if uses_docker(job):
            try:
                self.sched.prep.image(job)  # an unknown image id or secret fails now, not on the node
            except EngineError as e:
                return self.sched._fail(job.id, e.message, code=e.code)
        names = job.params.cloud_instance_types or [self.cfg.default_instance_type]
        types = [self.cfg.instance_types[n] for n in names]
        waiting_for = None
        while True:
            with self._mu:
                try:
                    nodes = self._alive_nodes()
                    t, node, could = place(types, nodes, self._used())
                except RayError as e:
                    t = node = could = None
                    nodes = None
                    err = e
                if nodes is None and err.status in (401, 403):
                    return self.sched._fail(job.id, f"the Ray cluster refused the engine's credentials (is "
                                                    f"ray_token set to the cluster's token?): {err}",
                                            code="FAILED_PRECONDITION")
                if t is not None:
                    a, token = self.channel.new_attempt(job.id, "ray", instance=t.name, node_id=node.id,
                                                        shape=shape(t))
                    break
            if nodes is not None and could is None:
                return self.sched._fail(job.id, f"no node of the Ray cluster can run instance type "
                                                f"{' or '.join(names)} (alive nodes: {len(nodes)}); "
                                                f"the job was not submitted", code="FAILED_PRECONDITION")
            current = jobs.store.get_job(job.id)
            if current.status != S.PREPARING:
                return self.sched._finish(job.id, None, None)  # cancelled while it waited: Ray never saw it
            msg = (f"waiting for a free node of type {could.name}" if nodes is not None
                   else f"waiting for the Ray cluster: {err}")
            if msg != waiting_for:
                jobs.system_log(job.id, msg)
                jobs.update(job.id, lambda j: setattr(j, "status_details", msg))
                waiting_for = msg
            with self._room:
                self._room.wait(NODES_TTL_S)
        with jobs._mu:
            if jobs.store.get_job(job.id).status != S.PREPARING:
                self.channel.fence(a.id, "cancelled before it was submitted")
                return self.sched._finish(job.id, None, None)
            jobs.system_log(job.id, f"instance type {t.name}: submitting attempt {a.id} to Ray node {node.id[:12]}")
        try:
            self._submit(job, a, token, t)
        except RayError as e:
            self.channel.fence(a.id, f"submit failed: {e}")
            return self.sched._fail(job.id, f"cannot submit the job to Ray: {e}", code="UNAVAILABLE")
        # The worker is free for the next job: how many run at once is the cluster's capacity, not the engine's.
        self.sched.own(job.id)  # the watcher's, from before it starts: the worker lets go of the job now
        threading.Thread(target=self.watch, args=(job.id, a.id), daemon=True, name=f"dsjobs-ray-{job.id}").start()

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
        argv = [self.cfg.ray_agent_python, "-m", "runners.agent", self.cfg.ray_engine_url or self.jobs.signer.base_url,
                a.id, token]
        s = a.shape
        self.ray.submit(a.id, " ".join(shlex.quote(x) for x in argv), cpus=s["cpus"], gpus=s["gpus"],
                        memory=s["memory"], selector={"ray.io/node-id": a.node_id},
                        # Ray's stop is the backstop only: it waits longer than the agent's own graceful path.
                        env_vars={"RAY_JOB_STOP_WAIT_TIME_S": str(math.ceil(grace) + 30)},
                        metadata={"dsjobs_job_id": job.id, "instance_type": t.name})

    def _spec(self, a: Attempt) -> dict:
        """What the agent needs, sent once over the channel (never through Ray: it keeps and shows its job info)."""
        jobs, cfg = self.jobs, self.cfg
        job = jobs.store.get_job(a.job_id)
        urls = {f.sha256: jobs.signer.url("GET", f.sha256, f.size_bytes, ttl_s=24 * 3600)
                for f in job.params.all_uploads()}
        limit = self.sched.max_duration(job)
        sig, grace = self.sched.stop_params(job, graceful=True)
        return {
            "job_id": job.id, "project_id": job.project_id, "attempt": a.id, "params": to_dict(job.params),
            "inputs": urls,
            "secrets": self.secrets.all(job.project_id), "node_dir": cfg.ray_node_dir,
            "log_limit_bytes": cfg.log_limit_bytes, "max_duration_s": limit,
            "deadline_stop": {"signal": int(sig if sig != 9 else 15),
                              "timeout": float(grace or cfg.default_graceful_timeout_s),
                              "reason": f"the job's maximum running time ({limit:g}s) was reached" if limit else ""},
            "pip_index_url": cfg.pip_index_url, "pip_extra_index_urls": list(cfg.pip_extra_index_urls),
            "python_interpreters": list(cfg.python_interpreters), "env_installer": cfg.env_installer,
            "env_build_timeout_s": cfg.env_build_timeout_s, "env_cache_limit_bytes": cfg.env_cache_limit_bytes,
            "docker": self._docker(job, a) if uses_docker(job) else None,
            "sandbox": cfg.sandbox, "bwrap": "",  # bwrap as the node has it
        }

    def _docker(self, job: Job, a: Attempt) -> dict:
        image, user, password = self.sched.prep.image(job)  # the password travels only over the channel
        t = self.cfg.instance_types[a.instance]
        return {"image": image, "username": user, "password": password, "network": self.cfg.docker_network,
                "build_network": self.cfg.docker_build_network,
                "cpus": t.cpus, "memory_bytes": int(t.memory_gb * (1 << 30)), "instance": t.name,
                "pull_timeout_s": self.cfg.image_pull_timeout_s, "run_as_root": self.cfg.docker_run_as_root}

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
            self.sched.release(job_id)

    def _watch(self, job_id: str, attempt_id: str) -> None:
        """Wait for the agent's result; meanwhile watch Ray for an attempt that died without one."""
        ended_at = None
        pending_since = watch_since = time.monotonic()
        backstop_at = None
        while True:
            a = self.channel.wait(attempt_id, self.cfg.ray_poll_s)
            if a is not None:
                break
            job = self.jobs.store.get_job(job_id)
            if job.status == S.CANCELLING and backstop_at is None:
                stop = self.channel.stop_request(attempt_id) or {"timeout": 0}
                backstop_at = time.monotonic() + stop["timeout"] + self.cfg.ray_backstop_margin_s
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
                self.jobs.system_log(job_id, "the agent did not stop the job in time: asking Ray to stop it")
                self._ray_stop(attempt_id)
                backstop_at = float("inf")
        self._complete(a)

    def _ray_stop(self, attempt_id: str) -> None:
        try:
            self.ray.stop(attempt_id)
        except RayError as e:
            log.warning("cannot stop Ray job %s: %s", attempt_id, e)

    def _lose(self, attempt_id: str, reason: str, ray_logs: bool = False) -> None:
        a = self.jobs.store.get_attempt(attempt_id)
        if ray_logs:
            try:
                text = self.ray.logs(attempt_id)
                if text.strip():
                    self.jobs.system_log(a.job_id, "Ray's log of the attempt (last lines):\n"
                                         + "\n".join(text.rstrip().splitlines()[-20:]))
            except RayError:
                pass
        self.channel.fence(attempt_id, reason)

    def _complete(self, a: Attempt) -> None:
        jobs = self.jobs
        run_dir = jobs.run_dir(a.job_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        journal = jobs.journal(a.job_id)
        for stream, name in ((STDOUT, "stdout.txt"), (STDERR, "stderr.txt")):
            logs.extract_raw(journal, stream, str(run_dir / name))
        if a.state == "LOST":
            job = jobs.store.get_job(a.job_id)
            if job.status == S.CANCELLING:
                self.sched._finish(a.job_id, None, None)
            elif not job.status.terminal:
                self.sched._fail(a.job_id, f"attempt {a.id} lost: {a.reason}", code="UNAVAILABLE")
        else:
            r = a.result or {}
            if r.get("prepare_error"):
                self.sched._fail(a.job_id, r["prepare_error"], code=r.get("code", "INTERNAL"))
            else:
                result = ExitResult(return_code=r.get("return_code"), signal=r.get("signal"), error=r.get("error"),
                                    stopped=r.get("stopped"), note=r.get("note"))
                if result.note:
                    jobs.system_log(a.job_id, result.note)
                files = [from_dict(File, f) for f in r.get("files", [])]
                errors = [from_dict(FileError, e) for e in r.get("errors", [])]
                self.sched._finish(a.job_id, None, result, collected=(files, errors))
        with self._room:
            self._room.notify_all()
        threading.Thread(target=self._delete, args=(a.id,), daemon=True, name="dsjobs-ray-delete").start()

    def _delete(self, attempt_id: str, tries: int = 60) -> None:
        """Ray keeps every job forever (and its dashboard slows with them): delete it once it is finished."""
        for _ in range(tries):
            if self._closing.is_set() or self._delete_once(attempt_id):
                return
            time.sleep(0.5)

    def _delete_once(self, attempt_id: str) -> bool:
        """True once Ray no longer knows the attempt. A job deleted just as its supervisor actor exits comes back
        (as FAILED, "actor died", written by Ray's job monitor), so a job is deleted only once it has been finished
        for a while, and only Ray's 404 counts, never the DELETE's own answer."""
        try:
            info = self.ray.job(attempt_id)
            if info is None:
                a = self.jobs.store.get_attempt(attempt_id)
                a.ray_deleted = True
                self.jobs.store.put_attempt(a)
                return True
            if info.get("status") in TERMINAL and time.time() - (info.get("end_time") or 0) / 1000 > RAY_SETTLE_S:
                self.ray.delete(attempt_id)
            elif self.jobs.store.get_attempt(attempt_id).state == "LOST":
                self.ray.stop(attempt_id)
        except RayError:
            pass
        return False

    # --- cancel and restart ------------------------------------------------------------------------------------

    def stop(self, job: Job, sig: int, timeout_s: float, reason: str) -> bool:
        """False when the job has no attempt on Ray (still waiting for room: the worker sees CANCELLING)."""
        active = self.jobs.store.attempts(job_id=job.id, states=ACTIVE)
        if not active:
            return False
        a = active[-1]
        if a.state == "SUBMITTED":
            # Its agent has not started: fence it, so it exits at once when Ray starts it; Ray cannot stop PENDING.
            self.channel.fence(a.id, f"cancelled before it started: {reason}")
            self._ray_stop(a.id)
            return True
        self.channel.request_stop(a.id, sig, timeout_s, reason)
        return True

    def adopt(self, job: Job) -> bool:
        """After an engine restart: follow the job's attempt again (its agent retries until the engine is back)."""
        attempts = self.jobs.store.attempts(job_id=job.id)
        if not attempts:
            return False
        a = attempts[-1]
        if a.state in ACTIVE:
            self.jobs.system_log(job.id, f"engine restarted: following attempt {a.id} on Ray again")
            if job.status == S.CANCELLING:
                self.stop(job, *self.sched.stop_params(job, graceful=True), job.status_details or "cancelled")
        self.sched.own(job.id)
        threading.Thread(target=self.watch, args=(job.id, a.id), daemon=True,
                         name=f"dsjobs-ray-{job.id}").start()
        return True

    def sweep(self) -> None:
        """Delete the Ray jobs of attempts that finished while the engine was down."""
        for a in self.jobs.store.attempts(states=("DONE", "LOST"), ray_undeleted=True):
            threading.Thread(target=self._delete, args=(a.id, 5), daemon=True).start()

    def close(self, timeout: float = 15.0) -> None:
        """The engine is stopping: finish deleting harvested attempts from Ray (running ones stay, re-adopted at
        the next start)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = [a for a in self.jobs.store.attempts(states=("DONE", "LOST"), ray_undeleted=True)
                    if not self._delete_once(a.id)]
            if not left:
                break
            time.sleep(0.3)
        self._closing.set()
        self.channel.close()
