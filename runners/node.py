"""The node runner: one attempt of a job on this machine, the same code for both backends.

The local backend runs it in a thread of the engine; on a Ray node the agent (runners/agent.py) runs it. Either
hands it an AttemptSpec (runners/spec.py) and a NodeIO, the only thing that differs between the two: where inputs
come from, where outputs go, and whom the node tells that the job started. From there it is one path: the
working directory (inputs placed, archives unpacked safely), the Python env (built or taken from the cache, on the
host or inside the job's image), the image and its container, the sandbox, the per-job supervisor, the wait, and
the collection of outputs, giving back an AttemptResult.

Heavy modules (Docker, the env builder) are imported only by the jobs that need them: the agent's start-up is on
every Ray job's path.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Optional

from runners import journal
from runners.executors.base import ExitResult, Executor, Handle, RunSpec
from runners.fsops import chown_tree
from runners.outputs import collect
from runners.rundir import RunDir
from runners.safezip import UnsafeArchive
from runners.spec import (AttemptResult, AttemptSpec, Failure, FailureKind, JobFailure, Limits, StopRequest)
from runners.workspace import Layout, job_env, materialise, process_env, substitute

if TYPE_CHECKING:
    from runners.pyenv import EnvCache, Interpreter
    from runners.sandbox import Sandbox

WATCHDOG = str(Path(__file__).parent / "executors" / "container_watchdog.py")
CONTAINER_PROGRESS = "/dsjobs/progress"
CONTAINER_PROJECT_HOME = "/dsjobs/project"
JOB_DIR = "/job"


class RetryLater(Exception):
    """Raised by a NodeIO whose storage is full or failing for now: outputs are stored again, later."""


class Interrupted(Exception):
    """The machine is shutting down while an attempt waits: it is left as it is, for the next start to adopt."""


class NodeIO:
    """What the node needs from whoever handed it the attempt (the engine directly, or over the runner channel)."""

    def input_path(self, sha256: str) -> str:
        """A local file holding the input with this digest (verified)."""
        raise NotImplementedError

    def store_output(self, stream: BinaryIO) -> tuple[str, int]:
        """Store an output's bytes; (sha256, size). Raises RetryLater when that cannot be done now."""
        raise NotImplementedError

    def may_start(self) -> bool:
        """Whether the job may still start (it was not cancelled while it was prepared)."""
        return True

    def started(self, instance: str) -> None:
        """The start is confirmed: the job is EXECUTING."""

    def uploading(self) -> None:
        """The program ended; outputs are being collected."""


@dataclass
class Machine:
    """What this machine has, set up once (the engine's machine, or a Ray node)."""

    root: Path  # the data dir or the node dir: hidden from sandboxed jobs; its owner gets what containers write
    process: Executor
    envs: Optional["EnvCache"] = None
    docker: Optional[Executor] = None  # runners.executors.docker.DockerExecutor, when this machine runs containers
    run_as_root: bool = False  # containers run as root (else as the owner of ``root``)
    owner_pid: Optional[int] = None  # a node's agent: the job dies with it, and so does its container
    start_pause_s: float = 0.0  # fault injection for tests: a pause before a start and before its confirmation
    where: str = ""  # said after "working directory ..." on a remote node: " on node HOST"
    # Whether the GPUs an instance type needs are looked for here; a cluster's placement has done it already.
    checks_gpus: bool = True
    # The GPUs this machine is said to have instead of those /dev shows: the one thing tests may fake.
    fake_gpus: Optional[int] = None
    stopping: threading.Event = field(default_factory=threading.Event)

    def gpus(self) -> int:
        if self.fake_gpus is not None:
            return self.fake_gpus
        return len([d for d in os.listdir("/dev") if d.startswith("nvidia") and d[6:].isdigit()]) \
            if os.path.isdir("/dev") else 0


@dataclass
class _Prepared:
    run: RunSpec
    executor: Executor
    cmd: str
    instance: str


def failure_of(e: BaseException, where: str = "") -> Failure:
    """What an exception of the preparation means for the job (never a traceback)."""
    if isinstance(e, JobFailure):
        return Failure(e.kind, e.message)
    if isinstance(e, UnsafeArchive):
        return Failure(FailureKind.INVALID_INPUT, str(e))
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return Failure(FailureKind.NO_SPACE, f"no space left on the device holding the job's working directory"
                                             f"{where}: {e}")
    return Failure(FailureKind.INTERNAL, f"cannot prepare the job{where}: {e}")


class Attempt:
    """One attempt: prepared and started by ``run``, or taken over from an earlier engine by ``resume``."""

    def __init__(self, job_id: str, run: RunDir, machine: Machine, io: NodeIO, spec: Optional[AttemptSpec] = None):
        self.job_id, self.run_dir, self.machine, self.io, self.spec = job_id, run, machine, io, spec
        self.layout: Optional[Layout] = None
        self.handle: Optional[Handle] = None
        self.executor: Optional[Executor] = None
        self.stop_request: Optional[StopRequest] = None
        self._mu = threading.Lock()

    def log(self, line: str) -> None:
        """A line of the job's system log; best effort (a full disk must not hide how the job ended)."""
        try:
            journal.append_line(str(self.run_dir.journal), journal.Stream.SYSTEM, line)
        except OSError as e:
            print(f"dsjobs: job {self.job_id}: cannot write its system log ({e}): {line}", file=sys.stderr)

    # --- stop: from any thread, at any moment ---------------------------------------------------------------

    def stop(self, request: StopRequest) -> None:
        with self._mu:
            if self.stop_request is not None and (self.stop_request.forced or not request.forced):
                return  # a forced stop is never softened, and a graceful one is asked for once
            self.stop_request = request
            if self.handle is not None:
                self.executor.stop(self.handle, request)

    # --- a fresh attempt --------------------------------------------------------------------------------------

    def run(self) -> AttemptResult:
        try:
            prepared = self._prepare()
        except Exception as e:  # noqa: BLE001 - every failure of the preparation ends the attempt, said clearly
            return AttemptResult(failure=failure_of(e, self.machine.where))
        if self.machine.start_pause_s:
            time.sleep(self.machine.start_pause_s)  # fault injection: a kill -9 of the engine here, in tests
        if not self.io.may_start():
            return AttemptResult(stopped=self.stop_request, instance=prepared.instance)
        with self._mu:
            if self.stop_request is not None:
                return AttemptResult(stopped=self.stop_request, instance=prepared.instance)
            self.log(f"running: {prepared.cmd}")
            try:
                self.handle = prepared.executor.start(prepared.run)
            except Exception as e:  # noqa: BLE001 - e.g. Docker refusing the container
                return AttemptResult(failure=Failure(getattr(e, "kind", FailureKind.START_FAILED),
                                                     f"cannot start the job{self.machine.where}: {e}"),
                                     instance=prepared.instance)
            self.executor = prepared.executor
        return self._follow(prepared.instance, confirm=True)

    # --- an attempt an earlier engine started -----------------------------------------------------------------

    def resume(self, handle: Optional[Handle], executor: Executor, *, confirm: bool,
               finished: Optional[ExitResult] = None) -> AttemptResult:
        """Follow a live run (``handle``) to its end, or collect one that ended while no engine watched
        (``finished``)."""
        self.layout = Layout.load(self.run_dir.layout)
        instance = self.run_dir.read("instance")
        with self._mu:
            self.handle, self.executor = handle, executor
            if handle is not None and self.stop_request is not None:
                executor.stop(handle, self.stop_request)
        if finished is not None:
            if confirm and finished.failure is None:
                self.io.started(instance)
            return self._end(finished, instance)
        return self._follow(instance, confirm=confirm)

    # --- the run ----------------------------------------------------------------------------------------------

    def _follow(self, instance: str, confirm: bool) -> AttemptResult:
        handle, executor = self.handle, self.executor
        watchdog = None
        try:
            if confirm:
                if self.machine.start_pause_s:
                    time.sleep(self.machine.start_pause_s)  # fault injection: between a start and its confirmation
                if executor.confirm(handle):
                    # EXECUTING only once the executor confirms the start: an engine killed in between finds a job
                    # still PREPARING and either adopts its run or starts it (once).
                    self.io.started(instance)
            watchdog = self._watch_container(handle)
            result = executor.wait(handle)
        finally:
            if watchdog is not None:
                watchdog.communicate(b"done")
        try:
            return self._end(result, instance)
        finally:
            executor.cleanup(handle)  # after collection: the outputs are on the container's bind mount anyway

    def _end(self, result: ExitResult, instance: str) -> AttemptResult:
        if result.note:
            self.log(result.note)
        if result.failure is not None:
            self.log(f"error: {result.failure.message}")
        else:
            self.log(f"program exited with return code {result.return_code}")
        if self.executor is self.machine.docker and self.machine.run_as_root and self.layout is not None:
            owner = os.stat(self.machine.root)
            if owner.st_uid != 0:  # a root container: what it wrote goes back to the working directory's owner
                chown_tree(str(self.layout.work), owner.st_uid, owner.st_gid)
        out = AttemptResult(started=True, return_code=result.return_code, signal=result.signal,
                            stopped=result.stopped, failure=result.failure, note=result.note, instance=instance)
        if self.layout is not None:
            self.io.uploading()
            got = self._collect()
            out.outputs, out.output_errors = got.files, got.errors
            out.datasets = {var: str(self.layout.work / rel) for var, rel in self.layout.output_datasets.items()}
        return out

    def _collect(self):
        """The outputs; when the storage is full for now, again until there is room (the job then ends as it
        really ended, with its outputs, rather than as "the disk was full")."""
        delay, said = 0.5, False
        while True:
            try:
                return collect(self.layout.work, self.layout.outputs, self.io.store_output, str(self.run_dir.path),
                               note=self.log)
            except RetryLater as e:
                if not said:
                    self.log(f"the outputs cannot be stored now ({e}); again when there is room")
                    said = True
                if self.machine.stopping.wait(delay):
                    raise Interrupted() from None
                delay = min(delay * 2, 5.0)

    def _watch_container(self, handle) -> Optional[subprocess.Popen]:
        """On a node, a process that kills the container if the agent dies (Docker, not the agent, owns it)."""
        if self.machine.owner_pid is None or not hasattr(handle, "container_id"):
            return None
        return subprocess.Popen([sys.executable, "-I", "-S", WATCHDOG, handle.container_id],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True)

    # --- preparation ------------------------------------------------------------------------------------------

    def _instance(self) -> Limits:
        """The first instance type of the job's list this machine can serve, for a process job as for a
        container: a job asking for a GPU is never run (nor reported) as such on a machine without one."""
        types = self.spec.instance_types
        if not self.machine.checks_gpus:
            return types[0]
        have = self.machine.gpus()
        for t in types:
            if t.gpus <= have:
                return t
            self.log(f"instance type {t.instance} needs {_gpus(t.gpus)}; this machine has {have}: skipped")
        needs = ", ".join(f"{t.instance} needs {_gpus(t.gpus)}" for t in types)
        raise JobFailure(FailureKind.UNSUPPORTED, f"none of the instance types {', '.join(t.instance for t in types)} "
                                                  f"can run on this machine ({needs}): it has "
                                                  f"{_gpus(have) if have else 'no GPU'}")

    def _prepare(self) -> _Prepared:
        spec, run, m = self.spec, self.run_dir, self.machine
        run.make()
        docker = spec.image is not None
        if docker and m.docker is None:
            raise JobFailure(FailureKind.UNSUPPORTED, "this engine runs without Docker")
        if not docker and spec.sandbox == "none" and spec.mounts:
            # Unconfined, the job writes wherever its user can: no bind, copy or mode would keep a dataset as it
            # was, so the job is refused rather than given it writable.
            raise JobFailure(FailureKind.UNSUPPORTED, f"s3 mounts and datasets are read-only for a job, and this "
                             f"engine runs process jobs unconfined (sandbox \"none\"), where nothing can be made "
                             f"read-only: {', '.join(mt.rid for mt in spec.mounts)} cannot be given to this job; "
                             "run the engine with its sandbox (the default), or give the job a Docker image "
                             "(env.docker), where they are mounted read-only")
        limits = self._instance()
        self.log(f"preparing: instance type {limits.instance}, working directory {run.work}{m.where}")
        venv = None if docker else self._python_env()
        if spec.working_storage_gb:
            run.work.mkdir(parents=True, exist_ok=True)
            free = _free(run.work)
            if free < spec.working_storage_gb * (1 << 30):
                self.log(f"warning: working storage of {spec.working_storage_gb} GB was asked for; the disk holding "
                         f"the working directory has {free / (1 << 30):.1f} GB free")
        to_job = self._path_mapper() if docker else (lambda p: p)
        layout = materialise(spec, run.work, self.io.input_path, to_job_path=to_job)
        layout.save(run.layout)  # what a restarted engine needs to collect
        self.layout = layout
        cmd = substitute(spec.cmd, layout.vars)
        container = box = image_env = None
        if docker:
            container = self._container(limits)
            if spec.python is not None:
                image_env = self._image_python_env(container.image)
                container.binds[str(image_env)] = {"bind": str(image_env), "mode": "ro"}  # the cache stays as built
        else:
            box = self._sandbox(venv)
        env = self._env(layout, venv, image_env, box)
        argv = ["bash", "-c", cmd]
        if box is not None:
            from runners import sandbox as sbx
            argv = sbx.argv(sbx.check(spec.bwrap), box, argv)
        runspec = RunSpec(job_id=self.job_id, run_dir=str(run.path), argv=argv, cwd=str(run.work), env=env,
                          secret_env={} if docker else dict(spec.secrets), sandboxed=box is not None,
                          journal=str(run.journal), stdout=str(run.stdout), stderr=str(run.stderr),
                          log_limit_bytes=spec.log_limit_bytes, max_duration_s=spec.max_duration_s,
                          deadline_stop=spec.deadline_stop, owner_pid=m.owner_pid, container=container)
        if spec.max_duration_s:
            self.log(f"maximum running time: {spec.max_duration_s:g}s")
        run.instance.write_text(limits.instance)  # for a restarted engine that confirms the start
        return _Prepared(runspec, m.docker if docker else m.process, cmd, limits.instance)

    def _path_mapper(self) -> Callable[[str], str]:
        """Host path -> the path a container sees."""
        from runners.executors.docker import job_path_mapper
        run = self.run_dir
        table = [(str(run.work), JOB_DIR), (str(run.progress_dir), CONTAINER_PROGRESS)]
        table += [(mt.host_dir, mt.container_dir) for mt in self.spec.mounts]
        if self.spec.project_home:
            table.append((self.spec.project_home, CONTAINER_PROJECT_HOME))
        return job_path_mapper(table)

    def _progress(self, message: str) -> None:
        fd = os.open(self.run_dir.progress, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(json.dumps({"progress": 0, "message": message}) + "\n")

    def _build_log(self):
        """A line writer for the env build: into env_build.log and the system log."""
        f = open(self.run_dir.env_build_log, "a")

        def log(line: str) -> None:
            f.write(line + "\n")
            f.flush()
            self.log(line)
        return f, log

    def _python_env(self):
        """A process job's Python: its own thin layer over a cached env built for its requirements."""
        pe = self.spec.python
        if pe is None:
            return None
        from runners import pyenv  # only for the jobs that have a python env (start-up time)
        if self.machine.envs is None:
            raise JobFailure(FailureKind.UNSUPPORTED, "this machine has no environment cache")
        es = self.spec.env
        interp = pyenv.pick(pe.version, tuple(es.interpreters))
        ispec = pyenv.install_spec(pe, es.pip_index_url, tuple(es.pip_extra_index_urls))
        self._progress("building python environment")
        f, log = self._build_log()
        with f:
            t = time.monotonic()
            base, built = self.machine.envs.get(interp, ispec, log, project=self.spec.project_id)
            self.log(f"python environment {'built' if built else 'taken from the cache'} in "
                     f"{time.monotonic() - t:.2f}s{self.machine.where}: python {interp.full}, "
                     f"{len(ispec.requirements)} requirement(s)")
        return PythonLayer(pyenv.job_layer(base, self.run_dir.venv, interp), base, interp)

    def _image_python_env(self, image: str) -> Path:
        """A job in a container: its python_version must be the image's, and its env is built with it."""
        from runners import pyenv
        from runners.executors import docker as rd
        if self.machine.envs is None:
            raise JobFailure(FailureKind.UNSUPPORTED, "this machine has no environment cache")
        pe, es, dc = self.spec.python, self.spec.env, self.machine.docker.dc
        have = rd.image_pythons(dc, image)
        version = pe.version or (have[-1] if have else "")
        if version not in have:
            raise JobFailure(FailureKind.MISSING, f"python_version {version or '(any)'} is not in image {image} "
                                                  f"(it has: {', '.join('python' + v for v in have) or 'no python3.X'})")
        ispec = pyenv.install_spec(pe, es.pip_index_url, tuple(es.pip_extra_index_urls))
        interp = pyenv.Interpreter(version, version, f"python{version}")
        self._progress("building python environment")
        f, log = self._build_log()
        with f:
            image_id = dc.api.inspect_image(image)["Id"]
            t = time.monotonic()
            network = rd.job_network(dc, self.spec.image.build_network).name
            env_dir, built = self.machine.envs.get(
                interp, ispec, log, image=image_id, project=self.spec.project_id,
                build=lambda d: rd.build_env_in_image(dc, image, version, str(d), ispec, log, es.build_timeout_s,
                                                      network))
            self.log(f"python environment {'built' if built else 'taken from the cache'} in "
                     f"{time.monotonic() - t:.2f}s{self.machine.where}: python{version} of the image")
        return env_dir

    def _container(self, limits: Limits):
        from runners.executors import docker as rd
        spec, run, m = self.spec, self.run_dir, self.machine
        im, dc = spec.image, m.docker.dc
        rd.ensure_image(dc, im.image, im.username, im.password, note=self.log, timeout_s=im.pull_timeout_s)
        cpus, memory = rd.capped(limits.cpus, limits.memory_bytes, self.log, limits.instance)
        binds = {str(run.work): {"bind": JOB_DIR, "mode": "rw"},
                 str(run.progress_dir): {"bind": CONTAINER_PROGRESS, "mode": "rw"}}
        if spec.project_home:
            binds[spec.project_home] = {"bind": CONTAINER_PROJECT_HOME, "mode": "rw"}
        for mt in spec.mounts:
            binds[mt.host_dir] = {"bind": mt.container_dir, "mode": "ro"}  # mounts and datasets are for reading
        secrets = rd.secrets_script(spec.secrets, self.log)
        owner = os.stat(m.root)
        user = None if m.run_as_root or owner.st_uid == 0 else f"{owner.st_uid}:{owner.st_gid}"
        if user:
            # Outputs are not left root-owned: the job runs as the owner of its working directory.
            for d in [run.work, run.progress_dir] + ([Path(spec.project_home)] if spec.project_home else []):
                chown_tree(str(d), owner.st_uid, owner.st_gid)
        network = rd.job_network(dc, im.network)
        self.log(f"network: {network.name} ({network.why})")
        return rd.ContainerSpec(image=im.image, job_id=self.job_id, project_id=spec.project_id, binds=binds,
                                user=user, network=network.name, cpus=cpus, memory_bytes=memory, secrets=secrets)

    def _sandbox(self, venv: Optional["PythonLayer"]) -> Optional["Sandbox"]:
        """What a process job may see (runners/sandbox.py); None when the engine runs jobs unconfined."""
        spec = self.spec
        if spec.sandbox == "none":
            return None
        from runners import pyenv, sandbox as sbx
        rw = [str(self.run_dir.progress_dir)] + ([spec.project_home] if spec.project_home else [])
        ro = [mt.host_dir for mt in spec.mounts]
        # The interpreter the engine chose (job_sandbox shows its installation), never a link in a built env.
        interp = venv.interpreter if venv is not None else pyenv.default_interpreter()
        trees = []
        if venv is not None:
            trees.append(str(venv.layer))  # the job's own layer: what it pip-installs at run time lands there
            ro += [str(venv.base)] + pyenv.layer_extras(venv.layer)
        return sbx.job_sandbox(str(self.run_dir.path), str(self.run_dir.work), rw=rw, ro=ro, rw_trees=trees,
                               hide=sbx.hidden_paths(self.machine.root), python=interp.path)

    def _env(self, layout: Layout, venv: Optional["PythonLayer"], image_env: Optional[Path],
             box: Optional["Sandbox"]) -> dict[str, str]:
        """The job's environment without its project secrets (executors hand those over apart)."""
        spec = self.spec
        progress = layout.to_job_path(str(self.run_dir.progress))
        if spec.image is None:
            bins = [str(venv.layer / "bin"), str(venv.base / "bin")] if venv is not None else []
            if box is not None:
                bins += box.path
            env = process_env(layout.work, bins, spec.env_vars, progress, self.job_id,
                              venv=str(venv.layer) if venv is not None else "", home=box.home if box else "")
        else:
            # The image's own PATH, HOME and locale, except for a python env built for it.
            path = f"{image_env}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" if image_env else ""
            env = job_env(spec.env_vars, progress, self.job_id, path=path, venv=str(image_env or ""))
        if spec.project_home:
            env["DS_PROJECT_HOME"] = layout.to_job_path(spec.project_home)
        return env


@dataclass(frozen=True)
class PythonLayer:
    """A process job's Python: its own layer over a cached env, and the interpreter the engine chose for it."""

    layer: Path
    base: Path
    interpreter: "Interpreter"


def _gpus(n: int) -> str:
    return f"{n} GPU{'s' if n != 1 else ''}"


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


# --- what an earlier engine left ----------------------------------------------------------------------------------


@dataclass
class Found:
    """What became of a run an earlier engine started: ``running`` (``handle`` is live), ``finished`` (``result``
    is its exit status), ``never`` (no supervisor took it, and none will), ``gone`` (it started, then its
    supervisor or container vanished without an exit status) or ``unreachable`` (Docker cannot be asked)."""

    state: str
    handle: Optional[Handle] = None
    result: Optional[ExitResult] = None
    why: str = ""


def find_run(run: RunDir, executor: Executor, job_id: str, docker: bool, wait_s: float = 30.0) -> Found:
    from runners.executors.process import read_status, run_state
    if docker:
        try:
            handle = executor.adopt(str(run.path), job_id)
        except JobFailure as e:
            return Found("unreachable", why=e.message)
        return Found("running", handle) if handle is not None else Found("never")
    if not run.path.is_dir():
        return Found("never")
    # A live supervisor by its pid and start time (written by this engine or an older one), else by the run's
    # lock (one that is still starting has no pid file yet: it gets ``wait_s`` to write it).
    deadline = time.monotonic() + wait_s
    while True:
        handle = executor.adopt(str(run.path), job_id)
        if handle is not None:
            return Found("running", handle)
        state = run_state(str(run.path))
        if state != "running" or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if state == "running":
        return Found("gone", why="its supervisor holds the run but never said who it is")
    if state == "finished":
        return Found("finished", result=read_status(str(run.path)))
    return Found(state)


def node_name() -> str:
    return socket.gethostname()
