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
import functools
import json
import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Optional

from runners import faults as rf
from runners import gpus as gpumod, journal
from runners.executors.base import ExitResult, Executor, Handle, RunSpec
from runners.fsops import chown_tree, read_regular, write_private
from runners.outputs import collect
from runners.rundir import RunDir
from runners.safezip import UnsafeArchive
from runners.spec import (AttemptResult, AttemptSpec, Failure, FailureKind, FaultSpec, JobFailure, Limits, StopRequest,
                          parse_faults)
from runners.workspace import Layout, job_env, materialise, process_env, substitute

if TYPE_CHECKING:
    from runners.pyenv import EnvCache, Interpreter
    from runners.sandbox import Sandbox

WATCHDOG = str(Path(__file__).parent / "executors" / "container_watchdog.py")
CONTAINER_PROGRESS = "/dsjobs/progress"
CONTAINER_PROJECT_HOME = "/dsjobs/project"
CONTAINER_SA = "/dsjobs/sa"
JOB_DIR = "/job"
MOVED_OUTPUTS = "outputs.moved"  # in the run dir: outputs moved into the store, each recorded before its move


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

    def move_output(self, fd: int, parent_fd: int, name: str, before_move) -> Optional[tuple[str, int]]:
        """A finished output file into the store without a copy (runners/outputs.py Mover); None: store_output."""
        return None

    def claim_output(self, sha256: str, size: int) -> bool:
        """Whether the store holds an output moved there before a restart (it is then leased to the job)."""
        return False

    def may_start(self) -> bool:
        """Whether the job may still start (it was not cancelled while it was prepared)."""
        return True

    def started(self, instance: str, at: Optional[float] = None) -> None:
        """The start is confirmed: the job is EXECUTING, since ``at`` (this machine's clock) when known."""

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
    # The GPUs this machine is said to have instead of those NVML reports: the one thing tests may fake (a
    # count, or a device list: runners.gpus.fake).
    fake_gpus: Optional[int] = None
    gpu_devices: Optional[list] = None
    mig_fallback: str = "refuse"  # a g2.mig job where no MIG instance exists: refused, or "shared" (a whole GPU)
    gpu_stats_interval_s: float = 5.0
    stopping: threading.Event = field(default_factory=threading.Event)
    _pool: Optional[gpumod.Pool] = field(default=None, repr=False)
    _pool_mu: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def pool(self) -> gpumod.Pool:
        """This machine's GPUs by device, and which job holds which (found once)."""
        with self._pool_mu:
            if self._pool is None:
                if self.gpu_devices is not None:
                    devices = list(self.gpu_devices)
                elif self.fake_gpus is not None:
                    devices = gpumod.fake(self.fake_gpus)
                else:
                    found = gpumod.discover()  # None: NVML cannot be asked; []: it says there is none
                    devices = _dev_gpus() if found is None else found
                self._pool = gpumod.Pool(devices, self.mig_fallback)
            return self._pool

    def gpus(self) -> int:
        return len(self.pool().whole())


@dataclass(frozen=True)
class WarmTemplate:
    """What a process job's sandbox was made of beyond its run dir: a sandbox made of the same for another run dir
    (prewarm), ahead of a job, is the one that job gets, argv for argv, when its job is like this one. Nothing
    trusts it to be: a job starts in a sandbox made ahead only when its own sandbox argv is that very argv."""

    bwrap: str
    project_home: str
    ro: tuple
    python: str
    # A Python-env job's: (its cached env, the interpreter chosen). Its sandbox made ahead binds a job layer made
    # over that env in the run dir then; the job's own layer is made in place over it (pyenv.job_layer).
    env: Optional[tuple] = None

    @property
    def kind(self) -> str:
        """What a Create can tell of the job it is for (engine/warm.py): a Python-env job's, or a plain one's."""
        return "python" if self.env is not None else ""


@functools.lru_cache(maxsize=None)
def _can_warm() -> bool:
    """The warm stub's shell is here (supervisor.WARM_STUB): where it is not, every sandbox is made at its job's
    start."""
    from runners.executors.supervisor import WARM_STUB
    return os.access(WARM_STUB[0], os.X_OK)


def job_box(run: RunDir, root: Path, *, project_home: str, ro: list, trees: list, python: str,
            devices: list) -> "Sandbox":
    """A process job's sandbox (runners/sandbox.py), for a job now or for one to come (prewarm)."""
    from runners import sandbox as sbx
    rw = [str(run.progress_dir)] + ([project_home] if project_home else [])
    return sbx.job_sandbox(str(run.path), str(run.work), rw=rw, ro=ro, rw_trees=trees, hide=sbx.hidden_paths(root),
                           python=python, devices=devices)


def prewarm(machine: Machine, run: RunDir, t: WarmTemplate) -> bool:
    """The sandbox a job like the template's would get in ``run``, made now, before that job exists, under a
    supervisor that waits for it (ProcessExecutor.warm). False when this machine cannot."""
    from runners import sandbox as sbx
    from runners.executors.supervisor import WARM_STUB
    run.make()
    run.work.mkdir(exist_ok=True)
    ro, trees = list(t.ro), []
    if t.env is not None:
        from runners import pyenv
        base, interp = t.env
        if machine.envs is not None:
            machine.envs.touch(Path(base))  # not pruned as unused while the sandbox waits (its in-use grace)
        layer = pyenv.job_layer(Path(base), run.venv, interp)
        trees, ro = [str(layer)], ro + [base] + pyenv.layer_extras(layer)  # as Attempt._sandbox gives them
    box = job_box(run, machine.root, project_home=t.project_home, ro=ro, trees=trees, python=t.python, devices=[])
    return machine.process.warm(str(run.path), sbx.argv(t.bwrap, box, list(WARM_STUB)), str(run.work))


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
        self.devices: list = []  # the GPUs (runners.gpus.Device) the job holds
        self._mu = threading.Lock()
        # Injected faults this machine cannot make real (runners/faults.py): watched while the job runs.
        self._watch_disk = self._watch_memory = 0
        self._cgroup: Optional[str] = None
        self._memory_limit = 0
        self.faults: FaultSpec = spec.faults if spec is not None else FaultSpec()  # a resumed run: its run dir's
        self._fault_elapsed_s = 0.0  # a re-adopted run: how long it ran before (preempt-after counts from its start)
        # Set by the preparation of a process job whose sandbox another run can have made ahead (prewarm).
        self.warm_template: Optional[WarmTemplate] = None

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
        self.faults = self.spec.faults  # a backend may give the spec after the attempt was made
        keep = False
        try:
            return self._run_once()
        except Interrupted:
            keep = True  # the engine is stopping: what the run holds stays for the next engine to adopt
            raise
        finally:
            if not keep:
                self._end_of_run()
            if self.machine.checks_gpus:
                self.machine.pool().release(self.job_id)

    def _end_of_run(self) -> None:
        """What the run was given on this machine, taken back however it ended (never started, failed, raised):
        what faults made for it, the service account's token, the S3 snapshots it read."""
        try:
            self._release_faults()
        finally:
            try:
                os.unlink(self.run_dir.sa / "token")  # the service account's token outlives no run
            except OSError:
                pass
            self._release_snapshots()

    def _run_once(self) -> AttemptResult:
        try:
            prepared = self._prepare()
        except _StoppedWaiting:
            return AttemptResult(stopped=self.stop_request)
        except Interrupted:
            raise
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
        keep = False
        try:
            return self._resume(handle, executor, confirm=confirm, finished=finished)
        except Interrupted:
            keep = True  # the engine is stopping again: the next one adopts the run
            raise
        finally:
            if not keep:
                self._end_of_run()
            if self.devices:
                self.machine.pool().release(self.job_id)

    def _resume(self, handle: Optional[Handle], executor: Executor, *, confirm: bool,
                finished: Optional[ExitResult] = None) -> AttemptResult:
        self.layout = Layout.load(self.run_dir.layout)
        instance = self.run_dir.read("instance")
        self.devices = self._held_devices()
        self._load_faults()
        with self._mu:
            self.handle, self.executor = handle, executor
            if handle is not None and self.stop_request is not None:
                executor.stop(handle, self.stop_request)
        if finished is not None:
            if confirm and finished.failure is None:  # it ran while no engine watched: since its own start
                self.io.started(instance, finished.started_at)
            return self._end(finished, instance)
        return self._follow(instance, confirm=confirm)

    # --- the run ----------------------------------------------------------------------------------------------

    def _follow(self, instance: str, confirm: bool) -> AttemptResult:
        handle, executor = self.handle, self.executor
        # The container's watchdog first: the job is reported EXECUTING below, and an agent killed after that but
        # before its watchdog existed left a container running unowned (seen twice: a `sleep 300` ran to its end).
        watchdog = self._watch_container(handle)
        try:
            if confirm:
                if self.machine.start_pause_s:
                    time.sleep(self.machine.start_pause_s)  # fault injection: between a start and its confirmation
                if executor.confirm(handle):
                    # EXECUTING only once the executor confirms the start: an engine killed in between finds a job
                    # still PREPARING and either adopts its run or starts it (once).
                    self.io.started(instance, executor.started_at(handle))
            stats = self._gpu_stats()
            watch = self._fault_watch(handle)
            try:
                result = executor.wait(handle)
            finally:
                if stats is not None:
                    done, thread = stats
                    done.set()
                    thread.join(30)  # no row after the job's end (one a hung NVML gives later is dropped)
                if watch is not None:
                    watch.close()
        finally:
            if watchdog is not None:
                watchdog.communicate(b"done")
        try:
            return self._end(result, instance)
        finally:
            executor.cleanup(handle)  # after collection: the outputs are on the container's bind mount anyway

    def _end(self, result: ExitResult, instance: str) -> AttemptResult:
        result = self._fault_result(result, instance)
        if result.return_code not in (0, None) and result.failure is None and result.stopped is None \
                and not result.note:
            hint = self._disk_full_hint()
            if hint:
                result = dataclasses.replace(result, note=hint)
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
        lost = result.stopped is not None and result.stopped.kind == "preempted"
        if self.layout is not None and not lost:  # a lost machine's disk is gone with it
            if self.layout.outputs or self.layout.output_datasets:
                # Shown (and committed) only when there is something to collect; otherwise the job passes through
                # UPLOADING_OUTPUT in its final commit.
                self.io.uploading()
            got = self._collect()
            out.outputs, out.output_errors = got.files, got.errors
            out.datasets = {var: str(self.layout.work / rel) for var, rel in self.layout.output_datasets.items()}
        return out  # what faults made for the run is released by run() / resume(), after the collection

    DISK_FULL = (b"No space left on device", b"Disk quota exceeded")  # strerror(ENOSPC), strerror(EDQUOT)

    def _disk_full_hint(self) -> str:
        """A failed program whose last output says a disk was full: said beside its return code, since the cause
        is the machine's, not the program's (the job's own writes fail where the engine cannot see them)."""
        for path in (self.run_dir.stderr, self.run_dir.stdout):
            # A regular file only, never followed or waited on (an unconfined job could replace it).
            tail = read_regular(str(path), 4096, tail=True) or b""
            for text in self.DISK_FULL:
                if text in tail:
                    return f"its last output says a disk was full ({text.decode()})"
        return ""

    # --- injected faults (runners/faults.py) -------------------------------------------------------------------

    def _fault_watch(self, handle) -> Optional[rf.Watch]:
        if not self.faults.any:
            return None
        pids = (lambda: [])
        if hasattr(handle, "pid"):
            from runners.executors.supervisor import descendants
            pids = (lambda: descendants(handle.pid))
        w = rf.Watch(self.faults, self.stop, self.log, work=str(self.run_dir.work), disk_bytes=self._watch_disk,
                     memory_bytes=self._watch_memory, pids=pids, elapsed_s=self._fault_elapsed_s)
        return w.start() if w.needed else None

    def _fault_result(self, result: ExitResult, instance: str) -> ExitResult:
        """What an injected fault's stop means: a lost machine, a full disk, a kill for memory."""
        st, failure, note = result.stopped, result.failure, result.note
        if st is not None and failure is None:
            if st.kind == "preempted":
                failure = Failure(FailureKind.RUNNER_LOST, st.reason)
            elif st.kind == "storage":
                failure = Failure(FailureKind.NO_SPACE, st.reason)
            elif st.kind == "oom":
                note = f"the job was killed: out of memory ({st.reason}; instance type {instance}, injected fault oom)"
        if self._cgroup and rf.oom_kills(self._cgroup) > 0:
            note = (f"the job was killed: out of memory (the memory limit of {self._memory_limit >> 20} MiB, "
                    f"instance type {instance}; injected fault oom)")
        if (failure, note) == (result.failure, result.note):
            return result
        return ExitResult(result.return_code, signal=result.signal, failure=failure, stopped=st, note=note)

    def _release_faults(self) -> None:
        """What faults made for the attempt (a size-limited working directory, a memory cgroup), taken down."""
        rf.release(str(self.run_dir.work))
        cgroup = self._cgroup or (rf.existing_cgroup(self.job_id) if self.spec is None else None)
        if cgroup:
            rf.remove_cgroup(cgroup)
            self._cgroup = None

    def _save_faults(self) -> None:
        """The run's faults and how this machine applies them, for an engine that re-adopts the run."""
        if not self.faults.any:
            return
        d = {"text": self.faults.text, "watch_disk": self._watch_disk, "watch_memory": self._watch_memory,
             "cgroup": self._cgroup or "", "memory_limit": self._memory_limit, "started": time.time()}
        write_private(self.run_dir.faults, json.dumps(d))

    def _load_faults(self) -> None:
        """A re-adopted run's faults, as the engine that started it wrote them (none: it had none)."""
        try:
            with open(self.run_dir.faults) as f:
                d = json.load(f)
            self.faults = parse_faults(str(d["text"]))
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as e:
            self.log(f"the run's injected faults cannot be read back ({e}): none applied after the restart")
            return
        self._watch_disk, self._watch_memory = int(d.get("watch_disk") or 0), int(d.get("watch_memory") or 0)
        self._cgroup = str(d.get("cgroup") or "") or None
        self._memory_limit = int(d.get("memory_limit") or 0)
        self._fault_elapsed_s = max(0.0, time.time() - float(d.get("started") or time.time()))

    def _collect(self):
        """The outputs; when the storage is full for now, again until there is room (the job then ends as it
        really ended, with its outputs, rather than as "the disk was full")."""
        delay, said = 0.5, False
        while True:
            try:
                return collect(self.layout.work, self.layout.outputs, self.io.store_output, str(self.run_dir.path),
                               note=self.log, mover=self.io, moved_log=str(self.run_dir.path / MOVED_OUTPUTS))
            except RetryLater as e:
                if not said:
                    self.log(f"the outputs cannot be stored now ({e}); again when there is room")
                    said = True
                if self.machine.stopping.wait(delay):
                    raise Interrupted() from None
                delay = min(delay * 2, 5.0)

    def _gpu_stats(self) -> Optional[tuple[threading.Event, threading.Thread]]:
        """`.gpu_stats.tsv` from NVML for the job's GPUs while it runs: (set when it ended, the writer)."""
        if not self.devices:
            return None
        done = threading.Event()
        t = gpumod.stream_stats(str(self.run_dir.gpu_stats), str(self.run_dir.journal), self.devices, done,
                                self.machine.gpu_stats_interval_s, self.log)
        return done, t

    def _take_gpus(self, limits: Limits) -> list:
        """The devices of the job's instance type (those the backend reserved for it, else free ones: waiting
        until there are), kept in the run dir for a restarted engine."""
        if not self.machine.checks_gpus:
            return []
        if limits.gpus <= 0:
            self.machine.pool().release(self.job_id)  # whatever was reserved for another choice is not this run's
            return []
        pool, said = self.machine.pool(), False
        while True:
            grant = pool.reserve(self.job_id, limits.gpus, limits.instance)
            if grant is not None:
                break
            if not said:
                self.log(f"waiting for {_gpus(limits.gpus) if limits.instance != gpumod.MIG_INSTANCE else 'a MIG instance'}"
                         f" of instance type {limits.instance}: other jobs hold them")
                said = True
            if self.stop_request is not None:
                raise _StoppedWaiting()
            if self.machine.stopping.is_set():
                raise Interrupted()  # the job stays PREPARING: the next engine queues it again
            pool.wait(0.5)
        if grant.shared:
            self.log(f"WARNING: instance type {limits.instance} asks for a MIG instance of an A100 and this machine has "
                     f"none: the job is given a WHOLE GPU ({grant.devices[0].uuid}) SHARED with other jobs "
                     "(--mig-fallback shared); its memory and speed are not those of the cloud's g2.mig")
        self.log(f"gpus: {', '.join(d.uuid + (f' ({d.name})' if d.name else '') for d in grant.devices)}")
        write_private(self.run_dir.gpus, json.dumps({"uuids": [d.uuid for d in grant.devices],
                                                     "shared": grant.shared}))
        return list(grant.devices)

    def _held_devices(self) -> list:
        """The devices a run an earlier engine started was given (back in the pool's books)."""
        held = held_gpus(self.run_dir)
        if held is None or not self.machine.checks_gpus:
            return []
        pool = self.machine.pool()
        pool.restore(self.job_id, held[0], held[1])
        return list(pool.held(self.job_id).devices)

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
        return choose_instance(self.spec.instance_types, self.spec.faults, self.machine, self.log)

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
        self.devices = self._take_gpus(limits)
        faults = spec.faults
        rf.slow_env_build(faults, spec.env.build_timeout_s, self.log, self._progress,
                          lambda: self.stop_request is not None)
        if faults.disk_full_at_bytes and not rf.mount_limited(str(run.work), faults.disk_full_at_bytes, self.log):
            self._watch_disk = faults.disk_full_at_bytes
        venv = None if docker else self._python_env()
        if spec.working_storage_gb:
            run.work.mkdir(parents=True, exist_ok=True)
            free = _free(run.work)
            if free < spec.working_storage_gb * (1 << 30):
                self.log(f"warning: working storage of {spec.working_storage_gb} GB was asked for; the disk holding "
                         f"the working directory has {free / (1 << 30):.1f} GB free")
        self._sync_s3()
        to_job = self._path_mapper() if docker else (lambda p: p)
        (run.path / MOVED_OUTPUTS).unlink(missing_ok=True)  # an earlier attempt's moves are not this one's outputs
        layout = materialise(spec, run.work, self.io.input_path, to_job_path=to_job)
        layout.save(run.layout)  # what a restarted engine needs to collect
        self.layout = layout
        cmd = substitute(spec.cmd, layout.vars, layout.paths)
        container = box = image_env = None
        if docker:
            container = self._container(limits)
            if faults.oom:
                container.memory_bytes = faults.oom_bytes or limits.memory_bytes
                self.log(f"injected fault: oom: the container's memory limit is {container.memory_bytes >> 20} MiB")
            if spec.python is not None:
                image_env = self._image_python_env(container.image)
                container.binds[str(image_env)] = {"bind": str(image_env), "mode": "ro"}  # the cache stays as built
        else:
            box = self._sandbox(venv)
        env = self._env(layout, venv, image_env, box)
        if spec.spark is not None:
            env.update(self._spark(limits, venv, box, docker))
        if spec.sa_token:
            env["SA_TOKEN_FILENAME"] = self._sa_token(box, container)
        argv = ["bash", "-c", cmd]
        warm_argv = None
        if box is not None:
            from runners import sandbox as sbx
            bwrap = sbx.check(spec.bwrap)
            argv = sbx.argv(bwrap, box, argv)
            if self.warm_template is not None:  # its sandbox may have been made ahead: with this argv, if so
                from runners.executors.supervisor import WARM_STUB
                warm_argv = argv[:-3] + WARM_STUB  # the command comes last, after setpriv's or bwrap's "--"
        if warm_argv is None:
            m.process.discard(str(run.path))  # made ahead for a job unlike this one: it goes unused
        if faults.oom and not docker:
            argv = self._memory_limit_argv(argv, faults.oom_bytes or limits.memory_bytes)
        runspec = RunSpec(job_id=self.job_id, run_dir=str(run.path), argv=argv, cwd=str(run.work), env=env,
                          secret_env={} if docker else dict(spec.secrets), sandboxed=box is not None,
                          journal=str(run.journal), stdout=str(run.stdout), stderr=str(run.stderr),
                          log_limit_bytes=spec.log_limit_bytes, max_duration_s=spec.max_duration_s,
                          deadline_stop=spec.deadline_stop, owner_pid=m.owner_pid, container=container,
                          warm_argv=warm_argv, command=["bash", "-c", cmd] if warm_argv else None)
        if spec.max_duration_s:
            self.log(f"maximum running time: {spec.max_duration_s:g}s")
        run.instance.write_text(limits.instance)  # for a restarted engine that confirms the start
        self._save_faults()
        return _Prepared(runspec, m.docker if docker else m.process, cmd, limits.instance)

    def _memory_limit_argv(self, argv: list[str], limit: int) -> list[str]:
        """The fault oom for a process job: a memory cgroup where this machine allows one, else a watch."""
        self._memory_limit = limit
        self._cgroup = rf.memory_cgroup(self.job_id, limit)
        if self._cgroup is not None:
            self.log(f"injected fault: oom: the job runs with a memory limit of {limit >> 20} MiB (memory cgroup "
                     f"{self._cgroup})")
            return rf.in_cgroup(argv, self._cgroup)
        self._watch_memory = limit
        self.log(f"injected fault: oom: no memory cgroup can be made here; the job is killed once its processes hold "
                 f"more than {limit >> 20} MiB")
        return argv

    def _spark(self, limits: Limits, venv: Optional["PythonLayer"], box: Optional["Sandbox"],
               docker: bool) -> dict[str, str]:
        """A local Spark for the job's connector: the connection config the official SDK's ``connect_to_spark()``
        reads (``JOB_DATAPROC_CONNECTION_CONFIG``, and ``.spark_connection_config.json`` in the working
        directory, its default), in its local mode with ``local[<vCPUs>]``; Java from this machine."""
        sp = self.spec.spark
        if docker:
            raise JobFailure(FailureKind.UNSUPPORTED, f"spark connector {sp.connector_id}: a local Spark runs "
                                                      "with the host's Java, for process jobs only")
        java = _java()
        if java is None:
            raise JobFailure(FailureKind.MISSING, f"spark connector {sp.connector_id}: a local Spark needs Java "
                                                  "(JAVA_HOME, or java on PATH), and this machine has none: "
                                                  "apt-get install openjdk-17-jre-headless (pyspark 3.5 runs on "
                                                  "Java 8, 11 and 17)")
        ncpu = os.cpu_count() or 1
        threads = max(1, min(int(limits.cpus) or 1, ncpu))
        if threads < limits.cpus:
            self.log(f"spark: local[{threads}] (instance type {limits.instance} has {limits.cpus:g} vCPUs, this "
                     f"machine {ncpu})")
        host_mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        mem = min(limits.memory_bytes or host_mem, host_mem)
        tmp = "/tmp/spark" if box is not None else str(self.run_dir.path / "tmp" / "spark")
        if box is None:
            os.makedirs(tmp, exist_ok=True)
        params = {
            "spark.master": f"local[{threads}]",  # over the SDK's .master("local") (it applies these after)
            "spark.app.name": f"dsjobs-{self.job_id}",
            "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
            "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
            "spark.driver.memory": f"{max(1, mem // 4 >> 30)}g",
            "spark.local.dir": tmp,
        }
        params.update(sp.conf)
        config = {"master_node_host": "localhost", "connection_mode": "SPARK_LOCAL", "session_params": params}
        path = self.run_dir.work / ".spark_connection_config.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f, indent=1)
        self.log(f"spark connector {sp.connector_id}: a local Spark, {params['spark.master']}, Java {java}")
        python = str(venv.layer / "bin" / "python") if venv is not None else "python3"
        env = {"JOB_DATAPROC_CONNECTION_CONFIG": str(path), "PYSPARK_PYTHON": python,
               "PYSPARK_DRIVER_PYTHON": python, "SPARK_LOCAL_IP": "127.0.0.1"}
        # SDK() opens gRPC channels before connect_to_spark(), and pyspark starts its JVM by a fork (Popen with a
        # preexec_fn): gRPC's fork handler (grpcio >= 1.80, grpc/grpc#43055) restarts its poller in the child,
        # which can abort ("epoll_wait error: Bad file descriptor") before the exec, and pyspark then says "Java
        # gateway process exited before sending its port number". The child only execs: it needs no fork support.
        if "GRPC_ENABLE_FORK_SUPPORT" not in self.spec.env_vars:
            env["GRPC_ENABLE_FORK_SUPPORT"] = "0"
        java_home = os.environ.get("JAVA_HOME") or os.path.dirname(os.path.dirname(os.path.realpath(java)))
        env["JAVA_HOME"] = java_home
        return env

    def _sync_s3(self) -> None:
        """S3 mounts backed by a bucket: the bucket's objects as a snapshot of their own (runners/s3sync.py), made
        before the job and never changed under it; the job's mount is that snapshot. The run dir names the
        snapshots it reads, so that they are released however the run ends (a restarted engine's included)."""
        if not self.spec.s3_sources:
            return
        from runners import s3sync
        by_rid = {mt.rid: mt for mt in self.spec.mounts}
        held: list[list[str]] = []
        for src in self.spec.s3_sources:
            where = f"s3://{src.bucket}/{src.prefix} at {src.endpoint}"
            self._progress(f"copying s3 mount {src.rid}")
            t = time.monotonic()
            bucket = s3sync.Bucket(src.endpoint, src.bucket, src.region, src.access_key, src.secret_key)
            mount = by_rid[src.rid]
            store = s3sync.snapshots_of(mount.host_dir)
            try:
                snap, fetched, unchanged = s3sync.snapshot(bucket, src.prefix, store, self.job_id, self.log)
            except s3sync.S3Error as e:
                raise JobFailure(s3_failure_kind(e), f"s3 mount {src.rid}: cannot copy {where}: {e}") from None
            held.append([store, os.path.basename(snap)])
            self._write_snapshots(held)
            mount.host_dir = snap  # what the job reads: this snapshot, whatever later syncs fetch
            self.log(f"s3 mount {src.rid}: {where}: {fetched} object(s) copied, {unchanged} unchanged (ETag) in "
                     f"{time.monotonic() - t:.2f}s")

    def _write_snapshots(self, held: list) -> None:
        write_private(self.run_dir.s3_snapshots, json.dumps(held))

    def _release_snapshots(self) -> None:
        """The S3 snapshots the run read: no longer its own (one no job reads, and not the latest, is removed)."""
        try:
            with open(self.run_dir.s3_snapshots) as f:
                held = json.load(f)
        except (OSError, ValueError):
            return
        from runners import s3sync
        for store, name in held:
            try:
                s3sync.release(str(store), str(name), self.job_id)
            except OSError as e:
                self.log(f"s3: the snapshot {name} cannot be released ({e})")
        try:
            os.unlink(self.run_dir.s3_snapshots)
        except OSError:
            pass

    def _sa_token(self, box: Optional["Sandbox"], container) -> str:
        """The service account's token in a file of its own (0600, the job's user's; never in a log), as the cloud
        gives it: the path SA_TOKEN_FILENAME names, read-only for the job, removed when the run ends."""
        d = self.run_dir.sa
        d.mkdir(mode=0o700, exist_ok=True)
        path = d / "token"
        write_private(path, self.spec.sa_token)
        owner = None
        if box is not None:
            owner = box.run_as
            box.ro.append(str(d))
        elif container is not None:
            container.binds[str(d)] = {"bind": CONTAINER_SA, "mode": "ro"}
            if container.user:
                owner = tuple(int(x) for x in container.user.split(":"))
        if owner is not None:
            for p in (d, path):
                os.chown(p, *owner)
        self.log("service account: its token is in the file SA_TOKEN_FILENAME names")
        return f"{CONTAINER_SA}/token" if container is not None else str(path)

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
        if im.default:
            self.log(f"image {im.image}: the engine's cloud-like default for jobs without env.docker (as the cloud "
                     "runs them in its default image), working directory /job")
        rd.ensure_image(dc, im.image, im.username, im.password, note=self.log, timeout_s=im.pull_timeout_s)
        cpus, memory = rd.capped(limits.cpus, limits.memory_bytes, self.log, limits.instance)
        binds = {str(run.work): {"bind": JOB_DIR, "mode": "rw"},
                 str(run.progress_dir): {"bind": CONTAINER_PROGRESS, "mode": "rw"}}
        if spec.project_home:
            binds[spec.project_home] = {"bind": CONTAINER_PROJECT_HOME, "mode": "rw"}
        for mt in spec.mounts:
            binds[mt.host_dir] = {"bind": mt.container_dir, "mode": "ro"}  # mounts and datasets are for reading
            if mt.container_dir.startswith(JOB_DIR + "/"):  # /job/s3/<id>: its mount point made by us, not by root
                (run.work / mt.container_dir[len(JOB_DIR) + 1:]).mkdir(parents=True, exist_ok=True)
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
                                user=user, network=network.name, cpus=cpus, memory_bytes=memory, secrets=secrets,
                                gpus=[d.uuid for d in self.devices], instance=limits.instance)

    def _sandbox(self, venv: Optional["PythonLayer"]) -> Optional["Sandbox"]:
        """What a process job may see (runners/sandbox.py); None when the engine runs jobs unconfined."""
        spec = self.spec
        if spec.sandbox == "none":
            return None
        from runners import pyenv, sandbox as sbx
        ro = [mt.host_dir for mt in spec.mounts]
        # The interpreter the engine chose (job_sandbox shows its installation), never a link in a built env.
        interp = venv.interpreter if venv is not None else pyenv.default_interpreter()
        if not (spec.faults.any or spec.sa_token or spec.spark is not None or self.devices) and _can_warm():
            # Nothing of this sandbox is the job's own but its run dir (and a Python-env job's layer in it, made
            # over a cached env): one like it can be made ahead of a job.
            self.warm_template = WarmTemplate(sbx.check(spec.bwrap), spec.project_home, tuple(ro), interp.path,
                                              env=(str(venv.base), venv.interpreter) if venv is not None else None)
        trees = []
        if venv is not None:
            trees.append(str(venv.layer))  # the job's own layer: what it pip-installs at run time lands there
            ro += [str(venv.base)] + pyenv.layer_extras(venv.layer)
        return job_box(self.run_dir, self.machine.root, project_home=spec.project_home, ro=ro, trees=trees,
                       python=interp.path, devices=gpumod.dev_nodes(self.devices))

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
            if self.machine.checks_gpus:
                env.update(gpumod.visible(self.devices, bool(self.machine.pool().devices)))
        else:
            # The image's own PATH, HOME and locale, except for a python env built for it.
            path = f"{image_env}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" if image_env else ""
            env = job_env(spec.env_vars, progress, self.job_id, path=path, venv=str(image_env or ""))
            if self.machine.checks_gpus:  # nvidia/cuda images say "all": the toolkit would give every GPU
                env.update(gpumod.container_visible(self.devices))
        if spec.project_home:
            env["DS_PROJECT_HOME"] = layout.to_job_path(spec.project_home)
        return env


@dataclass(frozen=True)
class PythonLayer:
    """A process job's Python: its own layer over a cached env, and the interpreter the engine chose for it."""

    layer: Path
    base: Path
    interpreter: "Interpreter"


def choose_instance(types: list[Limits], faults: FaultSpec, machine: Machine,
                    log: Callable[[str], None] = lambda line: None) -> Limits:
    """The instance type of the job's list it runs as on ``machine``: the first that has a machine (the fault
    no-capacity takes types away) and that this machine can ever serve (its GPUs). The one choice, made by the
    node before the run and by the local backend before the hand-over (which reserves the GPUs it needs).
    Raises JobFailure (NO_CAPACITY, UNSUPPORTED) when there is none."""
    types = rf.with_capacity(types, faults, log)
    if not machine.checks_gpus:
        return types[0]
    pool = machine.pool()
    i, skipped = gpumod.choose(types, pool)
    for why in skipped:
        log(f"{why}: skipped")
    if i is not None:
        return types[i]
    have = len(pool.whole())
    needs = ", ".join(f"{t.instance} needs {'a MIG instance' if t.instance == gpumod.MIG_INSTANCE else _gpus(t.gpus)}"
                      for t in types)
    raise JobFailure(FailureKind.UNSUPPORTED, f"none of the instance types {', '.join(t.instance for t in types)} "
                                              f"can run on this machine ({needs}): it has "
                                              f"{_gpus(have) if have else 'no GPU'}")


def s3_failure_kind(e: Exception) -> FailureKind:
    """An S3 error's meaning for the job: a bucket or key that is not there (404, NoSuchBucket, NoSuchKey) is
    MISSING, a request S3 refuses (403, another 4xx: the keys, the bucket's policy) MISCONFIGURED, both
    FAILED_PRECONDITION; a server error (5xx) or an endpoint that cannot be reached, SERVICE_UNAVAILABLE."""
    status, code = getattr(e, "status", None), getattr(e, "code", "")
    if status is None or status >= 500:
        return FailureKind.SERVICE_UNAVAILABLE
    if status == 404 or code in ("NoSuchBucket", "NoSuchKey"):
        return FailureKind.MISSING
    return FailureKind.MISCONFIGURED


def _gpus(n: int) -> str:
    return f"{n} GPU{'s' if n != 1 else ''}"


def _java() -> Optional[str]:
    home = os.environ.get("JAVA_HOME")
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return os.path.join(home, "bin", "java")
    import shutil
    return shutil.which("java")


def _dev_gpus() -> list:
    """GPUs by their /dev nodes where NVML cannot be asked (no UUIDs then: CUDA takes indexes too)."""
    try:
        found = sorted(int(d[6:]) for d in os.listdir("/dev") if d.startswith("nvidia") and d[6:].isdigit())
    except OSError:
        return []
    return [gpumod.Device(str(i), i, "", i) for i in found]


def held_gpus(run: RunDir) -> Optional[tuple[list[str], bool]]:
    """The GPUs (uuids, shared) a run was given, from its run dir; None when it has none."""
    try:
        d = json.loads(run.gpus.read_text())
        return [str(u) for u in d["uuids"]], bool(d.get("shared"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class _StoppedWaiting(Exception):
    """The job was stopped while it waited for a GPU."""


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
