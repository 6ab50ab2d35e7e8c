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
import signal
import stat
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional

from engine import logs
from engine.errors import EngineError, FailedPrecondition, disk_full, io_error
from engine.ids import path_safe
from engine.jobs import JobService
from engine.cas import file_digest
from engine.model import File, FileDesc, Job, OperationError
from engine.state import JobStatus
from engine.preparation import Preparation, uses_docker
from engine.store import StaleWrite
from engine.validation import MAX_DURATION_VAR, parse_duration
from runners import sandbox as sbx
from runners.base import ExitResult, Executor, Handle, RunSpec
from runners.outputs import collect
from runners.process import read_status, run_state
from runners.docker import DockerError
from runners.pyenv import EnvCache, EnvError
from runners.fsops import chown_tree, rmtree
from runners.supervisor import SYSTEM, kill_marked
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
        # Jobs a thread of this engine looks after (prepares, waits for, finishes); any other active job is picked
        # up again by the reconciler, so a job whose thread failed (a full disk, say) is never left behind.
        # A job's end that could not be written (the disk was full) waits here to be written as it was meant,
        # by the reconciler, once there is room again.
        self._unwritten: dict[str, Callable[[], None]] = {}
        self._owners: dict[str, int] = {}  # job id -> how many threads look after it
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
        last_expiry = 0.0
        while True:
            with self._wake:
                if self._stopping:
                    return
            try:
                self.reconcile()
                if time.monotonic() - last_expiry >= self.jobs.cfg.janitor_interval_s:
                    self.jobs.expire_data()
                    last_expiry = time.monotonic()
            except Exception:  # noqa: BLE001 - the next pass tries again (a full disk comes back)
                log.exception("janitor pass failed")
            with self._wake:
                self._wake.wait(self.jobs.cfg.reconcile_interval_s)

    def own(self, job_id: str) -> None:
        """One more thread looks after the job (taken before that thread starts, so it is never unowned)."""
        with self._running_mu:
            self._owners[job_id] = self._owners.get(job_id, 0) + 1

    def release(self, job_id: str) -> None:
        with self._running_mu:
            n = self._owners.get(job_id, 0) - 1
            if n > 0:
                self._owners[job_id] = n
            else:
                self._owners.pop(job_id, None)

    def owned(self, job_id: str) -> bool:
        with self._running_mu:
            return job_id in self._owners

    @contextmanager
    def owning(self, job_id: str):
        self.own(job_id)
        try:
            yield
        finally:
            self.release(job_id)

    def reconcile(self) -> None:
        """Active jobs that no thread of this engine looks after go through recovery again: a finished run is
        collected, a live supervisor adopted, a run that never started prepared again, anything else ended."""
        for job_id, write in list(self._unwritten.items()):
            if not self.owned(job_id):
                with self.owning(job_id):
                    write()
        for job in self.jobs.store.jobs_with_status(S.PREPARING, S.EXECUTING, S.UPLOADING_OUTPUT, S.CANCELLING):
            if job.status == S.PREPARING and job.attempt == 0:
                continue  # queued: a worker will claim it
            if self.owned(job.id) or job.id in self._unwritten:
                continue
            with self.owning(job.id):  # taken before a second look: the listing may be older than its owner
                try:
                    current = self.jobs.store.get_job(job.id)
                    if current.status.terminal or (current.status == S.PREPARING and current.attempt == 0):
                        continue
                    log.warning("job %s is %s and nobody looks after it: recovering it", job.id,
                                current.status.name)
                    self._recover_one(current)
                except Exception:  # noqa: BLE001 - the next pass tries again
                    log.exception("cannot reconcile job %s", job.id)

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
            self.own(job.id)  # before the claim is written: the reconciler never sees it unowned
            try:
                def claim(j: Job):
                    if j.attempt != 0:
                        raise StaleWrite("claimed by another worker")
                    j.attempt = 1
                    j.status_details = "preparing"
                return self.jobs.update(job.id, claim)
            except StaleWrite:
                self.release(job.id)
                continue
            except BaseException:
                self.release(job.id)
                raise
        return None

    def _loop(self) -> None:
        backoff = 0.0
        while True:
            with self._wake:
                if self._stopping:
                    return
                if backoff:
                    self._wake.wait(backoff)
            try:
                job = self._claim()
            except Exception:  # noqa: BLE001 - e.g. a full disk under SQLite: the worker waits and tries again
                log.exception("cannot claim a job")
                backoff = min(max(backoff * 2, 0.5), 10.0)
                continue
            backoff = 0.0
            if job is None:
                with self._wake:
                    if self._stopping:
                        return
                    self._wake.wait(1.0)
                continue
            try:
                self.run(job)
            except Exception as e:  # noqa: BLE001 - a bug must end the job truthfully, not kill the worker
                if disk_full(e):
                    self._fail(job.id, f"no space left on the device holding the engine's data dir ({e})",
                               code="RESOURCE_EXHAUSTED")
                else:
                    log.exception("job %s failed in the engine", job.id)
                    self._fail(job.id, f"internal error of the engine: {e}")
            finally:
                self.release(job.id)

    # --- one job -----------------------------------------------------------------------------------------------

    def _fail(self, job_id: str, message: str, code: str = "INTERNAL") -> None:
        """End the job ERROR; never raises (when even that cannot be written, the reconciler comes back to it)."""
        self.jobs.system_log(job_id, f"error: {message}")

        def fail(j: Job):
            j.status_details = message
            j.error = OperationError(code, message)
        try:
            self.jobs.update(job_id, fail, to=S.ERROR)
            self._unwritten.pop(job_id, None)
        except EngineError as e:  # the job ended meanwhile, or is gone
            log.info("job %s not marked failed: %s", job_id, e.message)
        except Exception:  # noqa: BLE001 - a full disk: the reconciler writes it once there is room
            log.exception("cannot mark job %s failed (kept to be written later)", job_id)
            self._unwritten[job_id] = lambda: self._fail(job_id, message, code)

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

            (run_dir / "instance").write_text(instance)  # for a restarted engine that confirms the start
            if jobs.cfg.start_pause_s:
                time.sleep(jobs.cfg.start_pause_s)  # fault injection: a kill -9 of the engine here, in tests
            with jobs._mu:
                current = jobs.store.get_job(job.id)
                if current.status != S.PREPARING:
                    raise _Stop()
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
            self._fail(job.id, f"cannot prepare the job: {e}", code="RESOURCE_EXHAUSTED" if disk_full(e) else "INTERNAL")
            return
        self._confirm(job.id, handle, executor, instance)
        self._wait_and_finish(job.id, handle, layout, executor)

    def _confirm(self, job_id: str, handle: Handle, executor: Executor, instance: str) -> None:
        """EXECUTING is written once the executor confirms that the job started, never before: an engine killed
        in between finds a job that is still PREPARING and either adopts its run or starts it (once)."""
        if jobs_pause := self.jobs.cfg.start_pause_s:
            time.sleep(jobs_pause)  # fault injection: a kill -9 between the start and its confirmation
        if not executor.confirm(handle):
            return  # it never ran: its exit status says why

        def executing(j: Job):
            j.started_at = self.jobs.clock()
            j.status_details = ""
            j.actual_cloud_instance_type = instance
        with self.jobs._mu:
            if self.jobs.store.get_job(job_id).status == S.PREPARING:
                self.jobs.update(job_id, executing, to=S.EXECUTING)

    def _wait_and_finish(self, job_id: str, handle: Handle, layout: Optional[Layout], executor: Executor) -> None:
        result = executor.wait(handle)
        if result is not None and result.note:
            self.jobs.system_log(job_id, result.note)
        if executor is self.docker and self.jobs.cfg.docker_run_as_root and layout is not None:
            owner = os.stat(self.jobs.cfg.data_dir)
            if owner.st_uid != 0:  # a root container: what it wrote goes back to the working directory's owner
                chown_tree(str(layout.work), owner.st_uid, owner.st_gid)
        try:
            # Outputs are collected before the container is removed (they are on the bind mount anyway).
            self._finish_or_keep(job_id, layout, result)
        except Exception as e:  # noqa: BLE001 - a bug: the job ends truthfully
            log.exception("cannot finish job %s", job_id)
            self._fail(job_id, f"the job's outputs or record could not be stored: {e}")
        finally:
            with self._running_mu:
                self._running.pop(job_id, None)
            executor.cleanup(handle)

    def _finish_or_keep(self, job_id: str, layout: Optional[Layout], result: Optional[ExitResult],
                        again: bool = False) -> None:
        """_finish, or, when the disk is full or failing, keep it to be done again by the reconciler: the job
        then ends as it really ended (its outputs, its own error), not as 'the disk was full'."""
        try:
            self._finish(job_id, layout, result, quiet=again)
            self._unwritten.pop(job_id, None)
        except Exception as e:  # noqa: BLE001
            if not (disk_full(e) or io_error(e)):
                raise
            log.warning("job %s: cannot be finished now (%s); again when there is room", job_id, e)
            self._unwritten[job_id] = lambda: self._finish_or_keep(job_id, layout, result, again=True)

    def _finish(self, job_id: str, layout: Optional[Layout], result: Optional[ExitResult],
                collected: Optional[tuple[list, list]] = None, quiet: bool = False) -> None:
        """The final state; outputs are collected from ``layout`` here, or were by a remote agent (``collected``).
        ``quiet``: a second go after a full disk, whose lines the system log has already."""
        jobs = self.jobs
        say = (lambda m: None) if quiet else (lambda m: jobs.system_log(job_id, m))
        run_dir = jobs.run_dir(job_id)
        job = jobs.store.get_job(job_id)
        if job.status.terminal:
            return
        cancelled = job.status == S.CANCELLING
        if result is not None:
            if result.error:
                say(f"error: {result.error}")
            else:
                say(f"program exited with return code {result.return_code}")
        if job.status == S.EXECUTING:
            job = jobs.update(job_id, lambda j: None, to=S.UPLOADING_OUTPUT)
        files, errors = collected or ([], [])
        if layout is not None:
            lease = jobs.lease(job_id)
            got = collect(layout.work, layout.outputs, lambda f: jobs.blobs.put_stream(f, lease), str(jobs.blobs.tmp),
                          note=say)
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
        say(summary)
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
                    j.error = OperationError(result.error_code or "INTERNAL", result.error)
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
            src = layout.work / rel
            try:
                st = os.lstat(src)
            except FileNotFoundError:
                st = None
            if st is None or not stat.S_ISDIR(st.st_mode):  # the job replaced it (by a symlink to /, say)
                self.jobs.system_log(job.id, f"output dataset {desc.name!r}: {rel!r} is no longer a directory "
                                             "of the job's own; no dataset created")
                continue
            rid = new_id("bt")
            dest = self.jobs.cfg.data_dir / "datasets" / rid
            dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.rename(src, dest)  # the directory itself, never what a link points at
            self.prep.datasets.add(rid, dest, own=True, name=desc.name, description=desc.description,
                                   labels=desc.labels, source_job=job.id)
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
        """At start: every job that was active when the last engine stopped goes through _recover_one; one that
        cannot be recovered ends ERROR, and the engine starts anyway."""
        self.jobs.blobs.sweep_tmp()
        for job in self.jobs.store.jobs_with_status(S.PREPARING, S.EXECUTING, S.UPLOADING_OUTPUT, S.CANCELLING):
            if job.status == S.PREPARING and job.attempt == 0:
                continue  # still queued
            with self.owning(job.id):
                self._recover_one(job)

    def _recover_one(self, job: Job) -> None:
        try:
            self._recover(job)
        except Exception as e:  # noqa: BLE001 - one job's trouble never stops the engine from serving
            log.exception("cannot recover job %s", job.id)
            self._fail(job.id, f"the engine could not take the job over after a restart: {e}")

    def _requeue(self, job: Job, why: str) -> None:
        rmtree(str(self.jobs.run_dir(job.id) / "work"))

        def requeue(j: Job):
            j.attempt = 0
            j.status_details = f"queued ({why})"
        self.jobs.update(job.id, requeue)
        self.jobs.system_log(job.id, f"the job never started ({why}): it is prepared again")
        self.notify()

    def _recover(self, job: Job) -> None:
        jobs = self.jobs
        if self.remote is not None and self.remote.adopt(job):
            return
        run_dir = jobs.run_dir(job.id)
        docker = uses_docker(job)
        executor = self.docker if docker else self.executor
        layout = _read_layout(run_dir)
        instance = _read_text(run_dir / "instance") or job.actual_cloud_instance_type
        if job.status == S.CANCELLING and not (run_dir / "spec").exists() and not (run_dir / "container").exists():
            self._finish(job.id, layout=None, result=None)  # cancelled before anything started
            return
        if docker:
            try:
                handle = executor.adopt(str(run_dir)) if executor is not None else None
            except DockerError as e:
                self._fail(job.id, f"the engine restarted and cannot reach the job's container: {e}")
                return
            if handle is None and job.status == S.PREPARING:
                self._requeue(job, "the engine restarted before its container started")
                return
            state = "running" if handle is not None else "gone"
        else:
            # A live supervisor by its pid and start time (written by this engine or an older one), else by the
            # run's lock (one that is still starting has no pid file yet).
            handle = self.executor.adopt(str(run_dir)) if run_dir.is_dir() else None
            state = "running" if handle is not None else run_state(str(run_dir)) if run_dir.is_dir() else "never"
            if handle is None and state == "running":
                handle = self._adopt_process(run_dir)
                state = "running" if handle is not None else run_state(str(run_dir))
        if state == "running":
            jobs.system_log(job.id, "engine restarted: job re-adopted")
            with self._running_mu:
                self._running[job.id] = handle
            self.own(job.id)  # the following thread's, from before it starts

            def follow():
                try:
                    if job.status == S.PREPARING:
                        self._confirm(job.id, handle, executor, instance)
                    self._wait_and_finish(job.id, handle, layout, executor)
                finally:
                    self.release(job.id)
            threading.Thread(target=follow, name=f"dsjobs-adopted-{job.id}", daemon=True).start()
            return
        if state == "never" and job.status == S.PREPARING:
            self._requeue(job, "the engine restarted before its start was confirmed")
            return
        result = read_status(str(run_dir)) if state == "finished" else None
        if result is not None and layout is not None:
            jobs.system_log(job.id, "engine restarted: the job finished while it was down")
            if job.status == S.PREPARING and result.error is None:
                jobs.update(job.id, lambda j: setattr(j, "actual_cloud_instance_type", instance), to=S.EXECUTING)
            self._finish(job.id, layout, result)
            return
        # The supervisor is gone without an exit status: nothing of the job may run on unsupervised.
        if kill_marked(job.id):
            jobs.system_log(job.id, "engine restarted: the job's supervisor was gone; its processes were killed")
        self._fail(job.id, "the engine stopped during the run and the job's supervisor is gone; "
                           "the job did not finish")

    def _adopt_process(self, run_dir: Path, wait_s: float = 30.0) -> Optional[Handle]:
        """A live supervisor's run; one that is still starting gets ``wait_s`` to write its pid."""
        deadline = time.monotonic() + wait_s
        while True:
            handle = self.executor.adopt(str(run_dir))
            if handle is not None or time.monotonic() > deadline or run_state(str(run_dir)) != "running":
                return handle
            time.sleep(0.02)


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


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
