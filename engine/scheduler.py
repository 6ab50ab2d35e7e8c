"""The persistent queue (PREPARING jobs not yet claimed, in the store) and a bounded pool of workers.

A worker claims a job (attempt 0 -> 1, compare-and-set), lays out its working directory, starts it under its
supervisor, waits, collects outputs and logs, and writes the final state. On start, the scheduler re-adopts
jobs whose supervisor is still alive, collects those that finished while the engine was down, and marks the
rest ERROR with the reason.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Optional

from engine import logs
from engine.errors import EngineError, FailedPrecondition
from engine.ids import path_safe
from engine.jobs import JobService
from engine.cas import file_digest
from engine.model import File, FileDesc, Job, OperationError
from engine.state import JobStatus
from engine.preparation import Preparation, chown_tree, uses_docker
from engine.store import StaleWrite
from engine.validation import MAX_DURATION_VAR, parse_duration
from runners import sandbox as sbx
from runners.base import ExitResult, Executor, Handle, RunSpec
from runners.outputs import collect
from runners.process import read_status
from runners.docker import DockerError
from runners.pyenv import EnvCache, EnvError
from runners.supervisor import SYSTEM
from runners.workspace import Layout, materialise, substitute

log = logging.getLogger(__name__)
S = JobStatus



class _Stop(Exception):
    """The job was cancelled while it was being prepared."""


class Scheduler:
    def __init__(self, jobs: JobService, executor: Executor, workers: int, envs: Optional[EnvCache] = None,
                 docker: Optional[Executor] = None):
        self.jobs = jobs
        self.envs = envs
        self.executor = executor
        self.docker = docker
        self.prep = Preparation(jobs, envs, docker)
        self.remote = None  # engine/remote.py RayBackend, when jobs (or some projects' jobs) go to a Ray cluster
        self.n_workers = max(1, workers)
        self._wake = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._running: dict[str, Handle] = {}
        self._running_mu = threading.Lock()
        jobs.on_queued = self.notify
        jobs.on_cancel = self.stop_job

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.recover()
        if self.remote is not None:
            self.remote.sweep()
        for i in range(self.n_workers):
            t = threading.Thread(target=self._loop, name=f"dsjobs-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        threading.Thread(target=self._janitor, name="dsjobs-janitor", daemon=True).start()

    def _janitor(self) -> None:
        while True:
            with self._wake:
                if self._stopping:
                    return
            try:
                self.jobs.expire_data()
            except Exception:  # noqa: BLE001 - the next pass tries again
                log.exception("janitor pass failed")
            time.sleep(self.jobs.cfg.janitor_interval_s)

    def shutdown(self, stop_jobs: bool = False, timeout: float = 15.0) -> None:
        """Stop taking work; running jobs keep running under their supervisors unless ``stop_jobs``."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if stop_jobs:
            # Every job this engine runs or prepares (one engine per data dir). Listing under the job lock means no
            # worker is between "EXECUTING" and "handle registered", and a job still being prepared sees
            # CANCELLING before it would start.
            with self.jobs._mu:
                active = [j.id for j in self.jobs.store.jobs_with_status(S.PREPARING, S.EXECUTING,
                                                                         S.UPLOADING_OUTPUT)
                          if j.status != S.PREPARING or j.attempt > 0]
            log.info("stopping %d running job(s)", len(active))
            for job_id in active:
                try:
                    self.jobs.cancel(job_id, "engine shutting down", graceful=True)
                except EngineError:
                    log.exception("cannot stop job %s", job_id)
            deadline = time.monotonic() + timeout
            for t in self._threads:
                t.join(max(0.0, deadline - time.monotonic()))

    def notify(self) -> None:
        with self._wake:
            self._wake.notify()

    # --- claiming ----------------------------------------------------------------------------------------------

    def _claim(self) -> Optional[Job]:
        for job in self.jobs.store.jobs_with_status(S.PREPARING):
            if job.attempt != 0:
                continue
            try:
                def claim(j: Job):
                    if j.attempt != 0:
                        raise StaleWrite("claimed by another worker")
                    j.attempt = 1
                    j.status_details = "preparing"
                return self.jobs.update(job.id, claim)
            except StaleWrite:
                continue
        return None

    def _loop(self) -> None:
        while True:
            with self._wake:
                if self._stopping:
                    return
            job = self._claim()
            if job is None:
                with self._wake:
                    if self._stopping:
                        return
                    self._wake.wait(1.0)
                continue
            try:
                self.run(job)
            except Exception as e:  # noqa: BLE001 - a bug must end the job truthfully, not kill the worker
                log.exception("job %s failed in the engine", job.id)
                self._fail(job.id, f"internal error of the engine: {e}")

    # --- one job -----------------------------------------------------------------------------------------------

    def _fail(self, job_id: str, message: str, code: str = "INTERNAL") -> None:
        try:
            self.jobs.system_log(job_id, f"error: {message}")

            def fail(j: Job):
                j.status_details = message
                j.error = OperationError(code, message)
            self.jobs.update(job_id, fail, to=S.ERROR)
        except EngineError:
            log.exception("cannot mark job %s failed", job_id)

    def run(self, job: Job) -> None:
        jobs = self.jobs
        why = self.prep.unsupported(job)
        if why:
            self._fail(job.id, why, code="FAILED_PRECONDITION")
            return
        if self.remote is not None and self.remote.wants(job):
            self.remote.run(job)
            return
        run_dir = jobs.run_dir(job.id)
        work = run_dir / "work"
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        jobs.progress_path(job.id).parent.mkdir(exist_ok=True)
        journal = jobs.journal(job.id)
        try:
            docker = uses_docker(job)
            if docker and self.docker is None:
                raise DockerError("this engine runs without Docker", code="FAILED_PRECONDITION")
            inst = self.prep.instance(job, lambda m: jobs.system_log(job.id, m)) if docker else None
            instance = inst.name if inst else (job.params.cloud_instance_types[0] if job.params.cloud_instance_types
                                               else jobs.cfg.default_instance_type)
            project_home = None
            if job.params.attach_project_disk:
                if not path_safe(job.project_id):
                    raise FailedPrecondition(f"project {job.project_id!r} cannot have a project disk "
                                             "(not a valid project id)")
                project_home = str(jobs.cfg.data_dir / "projects" / job.project_id / "home")
                os.makedirs(project_home, mode=0o700, exist_ok=True)
            jobs.system_log(job.id, f"preparing: instance type {instance}, working directory {work}")
            venv = None if docker else self.prep.python_env(job, run_dir)
            image_env = None
            resources = self.prep.resources(job)
            self.prep.check_storage(job, work)
            layout = materialise(job.params, work, lambda sha: str(jobs.blobs.path(sha)), project_home=project_home,
                                 mounts={rid: host for rid, (host, _) in resources.items()},
                                 to_job_path=self.prep.to_job_path(job, work, project_home, resources))
            (run_dir / "layout").write_text(_layout_text(layout))  # what a restarted engine needs to collect
            cmd = substitute(job.params.cmd, layout.vars)
            container = self.prep.container(job, run_dir, work, project_home, inst, resources) if docker else None
            if container is not None and job.params.env.python_env is not None:
                image_env = self.prep.image_python_env(job, run_dir, container.image)
                container.binds[str(image_env)] = {"bind": str(image_env), "mode": "ro"}  # the cache stays as built
            box = None if docker else self.prep.sandbox(job, run_dir, work, venv, project_home, resources)
            env = self.prep.env(job, run_dir, layout, project_home, venv, image_env, sandbox=box)
            argv = ["bash", "-c", cmd]
            if box is not None:
                argv = sbx.argv(sbx.check(jobs.cfg.bwrap), box, argv)
            limit = self.max_duration(job)
            sig, grace = self.stop_params(job, graceful=True)
            spec = RunSpec(job_id=job.id, run_dir=str(run_dir), argv=argv, cwd=str(work), env=env,
                           secret_env={} if docker else self.prep.secret_env(job), sandboxed=box is not None,
                           journal=journal, stdout=str(run_dir / "stdout.txt"), stderr=str(run_dir / "stderr.txt"),
                           log_limit_bytes=jobs.cfg.log_limit_bytes, max_duration_s=limit,
                           container=container,
                           deadline_stop={"signal": int(sig if sig != signal.SIGKILL else signal.SIGTERM),
                                          "timeout": float(grace or jobs.cfg.default_graceful_timeout_s),
                                          "reason": f"the job's maximum running time ({limit:g}s) was reached"
                                          if limit else ""})
            if limit:
                jobs.system_log(job.id, f"maximum running time: {limit:g}s")

            def executing(j: Job):
                j.started_at = jobs.clock()
                j.status_details = ""
                j.actual_cloud_instance_type = instance
            with jobs._mu:
                current = jobs.store.get_job(job.id)
                if current.status != S.PREPARING:
                    raise _Stop()
                jobs.update(job.id, executing, to=S.EXECUTING)
                jobs.system_log(job.id, f"running: {cmd}")
                executor = self.docker if docker else self.executor
                handle = executor.start(spec)
                with self._running_mu:
                    self._running[job.id] = handle
        except _Stop:
            self._finish(job.id, layout=None, result=None)
            return
        except (EnvError, DockerError) as e:
            self._fail(job.id, str(e), code=e.code)
            return
        except sbx.SandboxUnavailable as e:
            self._fail(job.id, str(e), code="FAILED_PRECONDITION")
            return
        except EngineError as e:
            self._fail(job.id, e.message, code=e.code)
            return
        except ValueError as e:  # a bad input (zip slip, a path through a symlink, ...)
            self._fail(job.id, str(e), code="INVALID_ARGUMENT")
            return
        except OSError as e:
            self._fail(job.id, f"cannot prepare the job: {e}")
            return
        self._wait_and_finish(job.id, handle, layout, executor)

    def _wait_and_finish(self, job_id: str, handle: Handle, layout: Optional[Layout], executor: Executor) -> None:
        result = executor.wait(handle)
        if result is not None and result.note:
            self.jobs.system_log(job_id, result.note)
        if executor is self.docker and self.jobs.cfg.docker_run_as_root and layout is not None:
            owner = os.stat(self.jobs.cfg.data_dir)
            if owner.st_uid != 0:  # a root container: what it wrote goes back to the working directory's owner
                chown_tree(layout.work, owner.st_uid, owner.st_gid)
        try:
            # Outputs are collected before the container is removed (they are on the bind mount anyway).
            self._finish(job_id, layout, result)
        finally:
            with self._running_mu:
                self._running.pop(job_id, None)
            executor.cleanup(handle)
            shutil.rmtree(self.jobs.run_dir(job_id) / "secrets", ignore_errors=True)

    def _finish(self, job_id: str, layout: Optional[Layout], result: Optional[ExitResult],
                collected: Optional[tuple[list, list]] = None) -> None:
        """The final state; outputs are collected from ``layout`` here, or were by a remote agent (``collected``)."""
        jobs = self.jobs
        run_dir = jobs.run_dir(job_id)
        job = jobs.store.get_job(job_id)
        if job.status.terminal:
            return
        cancelled = job.status == S.CANCELLING
        if result is not None:
            if result.error:
                jobs.system_log(job_id, f"error: {result.error}")
            else:
                jobs.system_log(job_id, f"program exited with return code {result.return_code}")
        if job.status == S.EXECUTING:
            job = jobs.update(job_id, lambda j: None, to=S.UPLOADING_OUTPUT)
        files, errors = collected or ([], [])
        if layout is not None:
            got = collect(layout.work, layout.outputs, jobs.blobs.put_stream, str(jobs.blobs.tmp),
                                note=lambda m: jobs.system_log(job_id, m))
            files, errors = got.files, got.errors
        ok = result is not None and result.error is None
        deadline = result is not None and (result.stopped or {}).get("kind") == "deadline"
        if cancelled:
            final = S.CANCELLED
        elif deadline:
            final = S.ERROR
        elif ok and result.return_code == 0:
            final = S.SUCCESS
        else:
            final = S.ERROR
        summary = {S.SUCCESS: "job completed successfully", S.CANCELLED: "job cancelled"}.get(
            final, "job failed" if not ok else
            "job stopped: maximum running time reached" if deadline else
            f"job finished with return code {result.return_code}")
        jobs.system_log(job_id, summary)
        datasets = self._publish_datasets(job, layout) if final == S.SUCCESS and layout is not None else []
        log_files = self._store_logs(job_id, run_dir)
        diagnostics = []
        if (run_dir / "env_build.log").exists():
            sha, size = file_digest(run_dir / "env_build.log")
            diagnostics.append(File(desc=FileDesc(path=f"job_logs/{job_id}/env_build.log"), sha256=sha,
                                    size_bytes=size))

        def done(j: Job):
            j.output_files, j.file_errors, j.log_files = files, errors, log_files
            j.output_datasets = datasets
            j.diagnostic_files = diagnostics
            j.data_size_bytes = sum(f.size_bytes for f in files + log_files)
            if result is not None:
                j.return_code = result.return_code
                if deadline and not cancelled:
                    why = result.stopped.get("reason") or "the job's maximum running time was reached"
                    j.error = OperationError("DEADLINE_EXCEEDED", why)
                    j.status_details = why
                elif result.error and final == S.ERROR:
                    j.error = OperationError("INTERNAL", result.error)
                    j.status_details = result.error
                elif final == S.ERROR:
                    j.status_details = f"program returned code {result.return_code}"
        jobs.update(job_id, done, to=final)

    def _publish_datasets(self, job: Job, layout: Layout) -> list:
        """After a successful run, each output dataset's directory becomes a new local dataset."""
        from engine.ids import new_id
        from engine.model import OutputDataset
        out = []
        for desc in job.params.output_datasets:
            rel = layout.output_datasets.get(desc.var)
            if rel is None:
                continue
            rid = new_id("bt")
            dest = self.jobs.cfg.data_dir / "datasets" / rid
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(layout.work / rel), dest)
            self.prep.datasets.add(rid, dest, name=desc.name, description=desc.description, labels=desc.labels,
                              source_job=job.id)
            self.jobs.system_log(job.id, f"dataset {desc.name!r} created: {rid}")
            out.append(OutputDataset(desc=desc, id=rid))
        return out

    def _store_logs(self, job_id: str, run_dir: Path) -> list[File]:
        """Describe the job's log files; their bytes enter the blob store only when someone downloads them."""
        jobs = self.jobs
        logs.extract_stream(jobs.journal(job_id), SYSTEM, str(run_dir / "system.log"))
        out = []
        for name in ("stdout.txt", "stderr.txt", "system.log"):
            p = run_dir / name
            if p.exists():
                sha, size = file_digest(p)
                out.append(File(desc=FileDesc(path=f"job_logs/{job_id}/{name}"), sha256=sha, size_bytes=size))
        return out

    # --- cancel ------------------------------------------------------------------------------------------------

    def stop_params(self, job: Job, graceful: bool) -> tuple[int, float]:
        """(signal, seconds before SIGKILL): the job's graceful-shutdown when asked for, else SIGKILL at once."""
        g = job.params.graceful_shutdown
        if graceful and g is not None:
            return g.signal or signal.SIGTERM, g.timeout_s if g.timeout_s else self.jobs.cfg.default_graceful_timeout_s
        return signal.SIGKILL, 0.0

    def max_duration(self, job: Job) -> Optional[float]:
        """The engine's limit and the job's own (env var DSJOBS_MAX_DURATION, e.g. "90s" or "2h"), the smaller."""
        limits = [self.jobs.cfg.max_job_duration_s]
        own = job.params.env.vars.get(MAX_DURATION_VAR)
        if own:
            limits.append(parse_duration(own))
        limits = [x for x in limits if x]
        return min(limits) if limits else None

    def stop_job(self, job: Job, graceful: bool) -> None:
        if self.remote is not None:
            sig, timeout = self.stop_params(job, graceful)
            if self.remote.stop(job, sig, timeout, job.status_details or "cancelled"):
                return
        with self._running_mu:
            handle = self._running.get(job.id)
        if handle is None:
            return  # still preparing: the worker sees CANCELLING before it starts the program
        sig, timeout = self.stop_params(job, graceful)
        (self.docker if uses_docker(job) else self.executor).stop(handle, sig, timeout,
                                                                    job.status_details or "cancelled")

    # --- recovery ----------------------------------------------------------------------------------------------

    def recover(self) -> None:
        jobs = self.jobs
        jobs.blobs.sweep_tmp()
        for job in jobs.store.jobs_with_status(S.PREPARING, S.EXECUTING, S.UPLOADING_OUTPUT, S.CANCELLING):
            if self.remote is not None and self.remote.adopt(job):
                continue
            run_dir = jobs.run_dir(job.id)
            if job.status == S.PREPARING and not (run_dir / "supervisor").exists():
                if job.attempt:  # claimed, but the program never started: prepare it again from scratch
                    shutil.rmtree(run_dir / "work", ignore_errors=True)

                    def requeue(j: Job):
                        j.attempt = 0
                        j.status_details = "queued (engine restarted during preparation)"
                    jobs.update(job.id, requeue)
                continue
            layout = _read_layout(run_dir)
            executor = self.docker if uses_docker(job) else self.executor
            try:
                handle = executor.adopt(str(run_dir)) if executor is not None else None
            except DockerError as e:
                self._fail(job.id, f"the engine restarted and cannot reach the job's container: {e}")
                continue
            if handle is not None:
                jobs.system_log(job.id, "engine restarted: job re-adopted")
                with self._running_mu:
                    self._running[job.id] = handle
                threading.Thread(target=self._wait_and_finish, args=(job.id, handle, layout, executor),
                                 name=f"dsjobs-adopted-{job.id}", daemon=True).start()
                continue
            result = read_status(str(run_dir))
            if result is not None and layout is not None:
                jobs.system_log(job.id, "engine restarted: the job finished while it was down")
                if job.status == S.PREPARING:
                    jobs.update(job.id, lambda j: None, to=S.EXECUTING)
                self._finish(job.id, layout, result)
                continue
            # The supervisor is gone without an exit status: nothing of the job may run on unsupervised.
            from runners.supervisor import kill_marked
            if kill_marked(job.id):
                jobs.system_log(job.id, "engine restarted: the job's supervisor was gone; its processes were killed")
            self._fail(job.id, "the engine stopped during the run and the job's supervisor is gone; "
                               "the job did not finish")


def _layout_text(layout: Layout) -> str:
    return json.dumps({"work": str(layout.work),
                       "outputs": [[d.path, d.var, rel] for d, rel in layout.outputs],
                       "output_datasets": layout.output_datasets})


def _read_layout(run_dir: Path) -> Optional[Layout]:
    try:
        d = json.loads((run_dir / "layout").read_text())
    except (OSError, ValueError):
        return None
    return Layout(work=Path(d["work"]), outputs=[(FileDesc(p, v), rel) for p, v, rel in d["outputs"]],
                  output_datasets=d.get("output_datasets", {}))
