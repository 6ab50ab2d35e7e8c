"""Process executor: each job runs under its own supervisor process (runners/executors/supervisor.py)."""
from __future__ import annotations

import marshal
import os
import select
import signal as _signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from runners.executors import stats
from runners.executors import supervisor as sv
from runners.executors.base import ExitResult, Executor, Handle, RunSpec
from runners.spec import Failure, FailureKind, StopRequest

SUPERVISOR = sv.__file__


@dataclass
class ProcessHandle(Handle):
    run_dir: str
    pid: int
    start_time: int
    popen: Optional[subprocess.Popen] = None
    done: threading.Event = field(default_factory=threading.Event)
    job_id: str = ""
    notify: int = -1  # read end of the supervisor's notify pipe (supervisor.NOTIFY): its start, then EOF at its end

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        try:
            return sv.proc_start_time(self.pid) == self.start_time and not _is_zombie(self.pid)
        except (OSError, ValueError, IndexError):
            return False


def _is_zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return data[data.rindex(b")") + 2:].split()[0] == b"Z"


def _close_standby(standby: tuple, timeout: Optional[float] = None) -> None:
    popen, notify = standby
    os.close(notify)
    popen.stdin.close()  # an empty line: the standby exits
    popen.wait(timeout)


def _readable(fd: int, timeout: Optional[float]) -> bool:
    """poll(2), not select(2): an engine with many jobs holds descriptors past select's 1024."""
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(None if timeout is None else max(0, int(timeout * 1000) + 1)))


def _wait_pid(handle: "ProcessHandle", deadline: Optional[float]) -> bool:
    """Wait for a supervisor that is not our child (a re-adopted run) to end, woken by a pidfd; False on the
    deadline."""
    try:
        fd = os.pidfd_open(handle.pid)
    except OSError:  # gone already, or a kernel without pidfds: poll as before
        fd = None
    try:
        while handle.alive():  # checked after the open: the pidfd is of the supervisor, not a pid reused since
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            if fd is None:
                time.sleep(ProcessExecutor.POLL_S if left is None else min(ProcessExecutor.POLL_S, left))
            else:
                _readable(fd, left)
        return True
    finally:
        if fd is not None:
            os.close(fd)


def read_status(run_dir: str) -> Optional[ExitResult]:
    st = sv.read_file(os.path.join(run_dir, "status"))
    if not isinstance(st, dict):
        return None
    return ExitResult.from_status(st)


def run_state(run_dir: str) -> str:
    """What became of a run an engine handed to a supervisor, seen after that engine died:
    "running" (a supervisor holds the run's lock), "finished" (its exit status is there), "started" (a
    supervisor started the job, then died without a status), or "never" (no supervisor took it, and none
    will: the run is given up here, under the lock, so a late supervisor finds no spec and starts nothing)."""
    fd = sv.lock_run(run_dir, wait=False)
    if fd is None:
        return "running"
    try:
        if os.path.exists(os.path.join(run_dir, "status")):
            return "finished"
        if os.path.exists(os.path.join(run_dir, "supervisor")):
            return "started"
        try:
            os.unlink(os.path.join(run_dir, "spec"))
        except FileNotFoundError:
            pass
        return "never"
    finally:
        os.close(fd)


class ProcessExecutor(Executor):
    """Runs each job under a supervisor. One supervisor is kept started in advance (``--standby``): handing it a
    run dir skips the interpreter start-up that otherwise dominates a short job's latency."""

    name = "process"
    POLL_S = 0.05

    def __init__(self, standby: bool = True):
        self._standby_enabled = standby
        self._standby: Optional[subprocess.Popen] = None
        self._mu = threading.Lock()
        if standby:
            self._refill()

    @staticmethod
    def _popen(args: list, **kw) -> tuple[subprocess.Popen, int]:
        """A supervisor with its notify pipe: (process, read end)."""
        r, w = os.pipe()
        os.set_blocking(r, False)
        try:
            p = subprocess.Popen([sys.executable, "-I", "-S", SUPERVISOR, *args, f"--notify={w}"],
                                 stdin=subprocess.PIPE, start_new_session=True, close_fds=True, pass_fds=(w,), **kw)
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
        return p, r

    def _spawn_standby(self) -> tuple[subprocess.Popen, int]:
        return self._popen(["--standby"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _refill(self) -> None:
        def spawn():
            p = self._spawn_standby()
            with self._mu:
                if self._standby is None and self._standby_enabled:
                    self._standby, p = p, None
            if p is not None:  # not needed after all
                _close_standby(p)
        threading.Thread(target=spawn, name="dsjobs-standby", daemon=True).start()

    def _take_standby(self) -> Optional[tuple[subprocess.Popen, int]]:
        with self._mu:
            p, self._standby = self._standby, None
        if p is not None and p[0].poll() is not None:
            os.close(p[1])
            p = None
        if self._standby_enabled:
            self._refill()
        return p

    def close(self) -> None:
        with self._mu:
            self._standby_enabled = False
            p, self._standby = self._standby, None
        if p is not None:
            _close_standby(p, 5)

    def start(self, spec: RunSpec) -> ProcessHandle:
        sv.write_atomic(os.path.join(spec.run_dir, "spec"), spec.supervisor_spec(), durable=False)
        secrets = marshal.dumps(dict(spec.secret_env))
        secrets = str(len(secrets)).encode() + b"\n" + secrets  # on the supervisor's stdin, never on disk
        standby = self._take_standby()
        if standby is not None:
            popen, notify = standby
            try:
                popen.stdin.write(f"{spec.run_dir}\n".encode() + secrets)
                popen.stdin.close()
                h = ProcessHandle(spec.run_dir, popen.pid, sv.proc_start_time(popen.pid), popen, job_id=spec.job_id,
                                  notify=notify)
                self._sample(h, spec.journal)
                return h
            except (BrokenPipeError, OSError):
                os.close(notify)  # it died meanwhile: start one the slow way
        errlog = open(os.path.join(spec.run_dir, "supervisor.err"), "ab")
        with errlog:
            # a session of its own: the supervisor outlives the engine and the engine's terminal
            popen, notify = self._popen([spec.run_dir], stdout=errlog, stderr=errlog)
        try:
            popen.stdin.write(secrets)
            popen.stdin.close()
        except (BrokenPipeError, OSError):
            pass  # it died at once: wait() reports what supervisor.err says
        h = ProcessHandle(spec.run_dir, popen.pid, sv.proc_start_time(popen.pid), popen, job_id=spec.job_id,
                          notify=notify)
        self._sample(h, spec.journal)
        return h

    def confirm(self, handle: ProcessHandle, timeout: float = 60.0) -> bool:
        """Whether the supervisor started the job: its ``supervisor`` file (True), or its exit or an exit status
        without it (False, the job never ran). Waits up to ``timeout``."""
        deadline = time.monotonic() + timeout
        started = os.path.join(handle.run_dir, "supervisor")
        status = os.path.join(handle.run_dir, "status")
        if handle.notify >= 0:  # woken by the supervisor itself: its start, or its end (EOF)
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not _readable(handle.notify, left):
                    return os.path.exists(started)
                try:
                    if os.read(handle.notify, 1):
                        return True
                except BlockingIOError:
                    continue
                return os.path.exists(started)  # it ended: started only if it said so before
        delay = 0.0005
        while time.monotonic() < deadline:
            if os.path.exists(started):
                return True
            if os.path.exists(status) or not handle.alive():
                return os.path.exists(started)
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
        return os.path.exists(started)

    STATS_INTERVAL_S = 3.0

    def _sample(self, h: ProcessHandle, journal: str) -> None:
        """Resource stats of the job's process tree (psutil), as the cloud's .docker_stats.tsv."""
        import psutil
        procs: dict[int, psutil.Process] = {}  # kept, so cpu_percent measures since the previous sample

        def sample():
            try:
                tree = psutil.Process(h.pid).children(recursive=True)
            except psutil.Error:
                return None
            cpu = mem = rd = wr = 0
            for p in tree:
                p = procs.setdefault(p.pid, p)
                try:
                    cpu += p.cpu_percent(None)
                    mem += p.memory_info().rss
                    io = p.io_counters()
                    rd, wr = rd + io.read_bytes, wr + io.write_bytes
                except psutil.Error:
                    pass
            return cpu, mem, psutil.virtual_memory().total, rd, wr, len(tree)
        stats.start(h.run_dir, journal, h.done, self.STATS_INTERVAL_S, sample)

    def adopt(self, run_dir: str, job_id: str = "") -> Optional[ProcessHandle]:
        info = sv.read_file(os.path.join(run_dir, "supervisor"))
        if not isinstance(info, dict):
            return None
        spec = sv.read_file(os.path.join(run_dir, "spec"))
        h = ProcessHandle(run_dir, info["pid"], info["start_time"],
                          job_id=spec.get("job_id", "") if isinstance(spec, dict) else "")
        if not h.alive():
            return None
        if isinstance(spec, dict):
            self._sample(h, spec["journal"])
        return h

    def wait(self, handle: ProcessHandle, timeout: Optional[float] = None) -> Optional[ExitResult]:
        deadline = None if timeout is None else time.monotonic() + timeout
        if handle.popen is not None:
            try:
                handle.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
            handle.done.set()
        else:
            if not _wait_pid(handle, deadline):
                return None
            handle.done.set()
        if handle.notify >= 0:
            os.close(handle.notify)
            handle.notify = -1
        result = read_status(handle.run_dir)
        if result is None:
            # Nothing of a job may run on unsupervised: whatever carries its marker goes with its supervisor.
            if handle.job_id:
                sv.kill_marked(handle.job_id)
            if handle.popen is not None and handle.popen.returncode == sv.EXIT_NO_SPACE:
                return ExitResult(None, failure=Failure(FailureKind.NO_SPACE, "no space left on the device holding "
                                                        "the job's run directory: its exit status could not be "
                                                        "written"))
            try:
                with open(os.path.join(handle.run_dir, "supervisor.err"), "rb") as f:
                    tail = f.read()[-2000:].decode(errors="replace").strip()
            except OSError:
                tail = ""
            result = ExitResult(None, failure=Failure(FailureKind.START_FAILED if not os.path.exists(
                os.path.join(handle.run_dir, "supervisor")) else FailureKind.RUNNER_LOST,
                "the job's supervisor ended without an exit status" + (f": {tail}" if tail else "")))
        return result

    def cleanup(self, handle: ProcessHandle) -> None:
        if handle.notify >= 0:
            os.close(handle.notify)
            handle.notify = -1

    def stop(self, handle: ProcessHandle, request: StopRequest) -> None:
        sv.write_atomic(os.path.join(handle.run_dir, "stop"), request.as_dict(), durable=False)
        if handle.alive():
            try:
                os.kill(handle.pid, _signal.SIGUSR1)
            except ProcessLookupError:
                pass
