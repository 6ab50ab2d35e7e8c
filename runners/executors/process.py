"""Process executor: each job runs under its own supervisor process (runners/executors/supervisor.py)."""
from __future__ import annotations

import marshal
import os
import select
import signal as _signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from runners.executors import stats
from runners.workers import Workers
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
    pidfd: int = -1  # a supervisor from the fork server: not our child, waited for by this pidfd
    no_space: bool = False  # it said (on the notify pipe) that it had no room for the exit status
    # The pidfd is used by a stop (another thread) and closed by the job's own thread: never one while the other.
    pidfd_mu: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        with self.pidfd_mu:
            if self.pidfd >= 0:
                return not _readable(self.pidfd, 0)
        try:
            return sv.proc_start_time(self.pid) == self.start_time and not is_zombie(self.pid)
        except (OSError, ValueError, IndexError):
            return False


def is_zombie(pid: int) -> bool:
    """Dead, not yet reaped by its parent (raises OSError when there is no such process)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return data[data.rindex(b")") + 2:].split()[0] == b"Z"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


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


_TIMED_OUT = object()


def _told_end(handle: "ProcessHandle", deadline: Optional[float]):
    """The exit status, once the supervisor said on its notify pipe that its file is in place (supervisor
    notify_end: it makes it durable and ends meanwhile); None when the pipe ended without that (its end is then
    learned as before); _TIMED_OUT at the deadline."""
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0 or not _readable(handle.notify, left):
            return _TIMED_OUT
        try:
            data = os.read(handle.notify, 64)
        except BlockingIOError:
            continue
        except OSError:
            return None
        if not data:
            return None
        at = data.find(b"E")
        handle.no_space = handle.no_space or b"N" in (data if at < 0 else data[:at])
        if at >= 0:
            return read_status(handle.run_dir)


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


LOST = object()  # ForkServer.spawn: the answer was lost


_BINDS = frozenset(("--bind", "--bind-try", "--ro-bind", "--ro-bind-try", "--dev-bind", "--dev-bind-try"))


def bound_files(argv: list) -> tuple:
    """The files a bwrap argv binds into its sandbox, as (device, inode) of each source: a sandbox made ahead
    holds the files that were there when it was made, so it is its job's own only while every source is still the
    same file (a resolv.conf or a dataset dir replaced by a rename meanwhile would be the old one inside). While the
    sandbox lives its binds hold each source's inode, so a source removed and made again (a cached Python env
    rebuilt) cannot get that inode number back, as ext4 otherwise often gives it."""
    out = []
    for i, a in enumerate(argv[:-1]):
        if a == "--":  # the command's, after bwrap's options
            break
        if a in _BINDS:
            try:
                st = os.stat(argv[i + 1])
                out.append((st.st_dev, st.st_ino))
            except OSError:
                out.append(None)
    return tuple(out)


@dataclass
class WarmSlot:
    """A supervisor forked ahead of its job, its sandbox made with ``argv`` (supervisor.py Warm), waiting for its
    go: the go pipe's write end is held here until the job starts in it, or it is dropped (closed unwritten)."""
    run_dir: str
    argv: list
    pid: int
    start_time: int
    pidfd: int
    notify: int
    go: int
    files: tuple = ()  # bound_files(argv) when it was made

    def close(self) -> None:
        for fd in (self.go, self.notify, self.pidfd):
            if fd >= 0:
                os.close(fd)
        self.go = self.notify = self.pidfd = -1


class ForkServer:
    """The supervisors' fork server (supervisor.py ``--forkserver``): one interpreter started once, in a session of
    its own; each start is a request on a socket pair and a fork there. Started again when it is found gone."""

    TIMEOUT_S = 30.0

    def __init__(self):
        self._mu = threading.Lock()
        self._sock: Optional[socket.socket] = None
        self._popen: Optional[subprocess.Popen] = None
        self._closed = False

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._popen = subprocess.Popen([sys.executable, "-I", "-S", SUPERVISOR, f"--forkserver={theirs.fileno()}"],
                                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True,
                                           pass_fds=(theirs.fileno(),))
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.settimeout(self.TIMEOUT_S)
        self._sock = ours

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._popen is not None:
            try:
                self._popen.kill()  # only the server: every supervisor it forked is in a session of its own
                self._popen.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
            self._popen = None

    def warm(self) -> None:
        with self._mu:
            if self._sock is None and not self._closed:
                self._start()

    def spawn(self, run_dir: str, notify_w: int, err: int, go_r: int, warm: Optional[dict] = None):
        """(pid, start time, pidfd) of a supervisor forked for ``run_dir``, waiting for its go (supervisor.py
        _forked); None when the server cannot (then the caller starts one on its own); LOST when the answer was
        lost (the server is dropped). A child forked for a lost answer holds these very descriptors: the caller
        closes them, the go pipe unwritten, so that child finds it at EOF and ends untouched, and asks again with
        new ones (never these: that child would read the secrets meant for the next)."""
        req = marshal.dumps({"run_dir": run_dir, **({"warm": warm} if warm else {})})
        if len(req) > sv.REQUEST_MAX:
            return None
        with self._mu:
            if self._closed:
                return None
            fds: list = []
            try:
                if self._sock is None:
                    self._start()
                socket.send_fds(self._sock, [req], [notify_w, err, go_r])
                msg, fds, _, _ = socket.recv_fds(self._sock, 4096, 1)
                answer = marshal.loads(msg) if msg else None
            except (OSError, ValueError, EOFError, TypeError):
                answer = None
            for fd in fds:
                os.set_inheritable(fd, False)
            if answer is None:  # the server is gone (or garbled): the next request starts a new one
                for fd in fds:
                    os.close(fd)
                self._drop()
                return LOST
            if not fds or not isinstance(answer, dict) or "error" in answer:
                for fd in fds:
                    os.close(fd)
                return None  # it could not fork this one (EAGAIN, say): this job's supervisor starts alone
            return answer["pid"], answer["start_time"], fds[0]

    def give_up(self) -> None:
        """It cannot run here (no pidfds, say): every supervisor is started on its own from now on."""
        with self._mu:
            self._closed = True

    def close(self) -> None:
        with self._mu:
            self._closed = True
            if self._sock is not None:
                self._sock.close()  # its EOF: the server exits; the supervisors live on
                self._sock = None
            if self._popen is not None:
                try:
                    self._popen.wait(5)
                except subprocess.TimeoutExpired:
                    self._popen.kill()
                self._popen = None


class ProcessExecutor(Executor):
    """Runs each job under a supervisor, forked by a fork server (``forkserver``, the engine's way: a fork instead
    of an interpreter start per job) or started on its own (a Ray node's agent, which runs one job)."""

    name = "process"
    POLL_S = 0.05

    def __init__(self, forkserver: bool = True):
        self._server = ForkServer() if forkserver else None
        self._warm: dict[str, WarmSlot] = {}  # run dir -> the sandbox made for it ahead of its job
        self._warm_mu = threading.Lock()
        self._samplers = Workers("dsjobs-stats-idle")  # each job's stats sampler, in a thread an ended job left
        if self._server is not None:  # its start-up paid now, beside the engine's, not by the first job
            def warm():
                import psutil  # noqa: F401 - the stats sampler's, imported here rather than at the first start
                self._server.warm()
            threading.Thread(target=warm, name="dsjobs-forkserver", daemon=True).start()

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

    def close(self) -> None:
        self._samplers.close()  # idle ones end now; running ones with their jobs (their ``done``), or at adoption
        with self._warm_mu:
            slots, self._warm = list(self._warm.values()), {}
        for slot in slots:
            slot.close()
        if self._server is not None:
            self._server.close()

    # --- sandboxes made ahead of their jobs -------------------------------------------------------------------

    def warm(self, run_dir: str, argv: list, cwd: str) -> bool:
        """Make the sandbox ``argv`` (bwrap ... with supervisor.WARM_STUB for its command) now, under a supervisor
        forked for ``run_dir``, for a job to come: a start of that run whose ``warm_argv`` is this very argv then
        starts in it. False when it cannot be made here (no fork server)."""
        if self._server is None:
            return False
        self.discard(run_dir)
        files = bound_files(argv)  # before its bwrap binds them: a file replaced meanwhile is seen at the take
        notify_r, notify_w = os.pipe()
        go_r, go_w = os.pipe()
        err, got = -1, None
        try:
            os.set_blocking(notify_r, False)
            err = os.open(os.path.join(run_dir, "supervisor.err"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            got = self._server.spawn(run_dir, notify_w, err, go_r, warm={"argv": list(argv), "cwd": cwd})
        finally:
            for fd in (notify_w, go_r, err):
                if fd >= 0:
                    os.close(fd)
            if got is None or got is LOST:
                os.close(notify_r)
                os.close(go_w)
        if got is None or got is LOST:
            return False
        pid, start_time, pidfd = got
        slot = WarmSlot(run_dir, list(argv), pid, start_time, pidfd, notify_r, go_w, files)
        with self._warm_mu:
            old, self._warm[run_dir] = self._warm.get(run_dir), slot
        if old is not None:
            old.close()
        return True

    def discard(self, run_dir: str) -> None:
        """The sandbox made for ``run_dir``, if any, is dropped unused (its supervisor kills it and ends)."""
        with self._warm_mu:
            slot = self._warm.pop(run_dir, None)
        if slot is not None:
            slot.close()

    def warmed(self) -> list[str]:
        with self._warm_mu:
            return list(self._warm)

    def _take_warm(self, spec: RunSpec, secrets: bytes) -> Optional[ProcessHandle]:
        """The job started in the sandbox made for its run dir, when that was made with the argv the job asks
        for (``spec.warm_argv``) and is still there; None: it starts cold (a mismatched sandbox is dropped)."""
        with self._warm_mu:
            slot = self._warm.pop(spec.run_dir, None)
        if slot is None:
            return None
        if spec.warm_argv != slot.argv or _readable(slot.pidfd, 0) or bound_files(slot.argv) != slot.files:
            slot.close()
            return None
        try:
            _write_all(slot.go, secrets)
        except OSError:
            slot.close()  # it died meanwhile: nothing of the job ran there
            return None
        os.close(slot.go)
        slot.go = -1
        h = ProcessHandle(spec.run_dir, slot.pid, slot.start_time, job_id=spec.job_id, notify=slot.notify,
                          pidfd=slot.pidfd)
        self._sample(h, spec.journal)
        return h

    # --- starts -----------------------------------------------------------------------------------------------

    def start(self, spec: RunSpec) -> ProcessHandle:
        sv.write_atomic(os.path.join(spec.run_dir, "spec"), spec.supervisor_spec(), durable=False)
        secrets = marshal.dumps(dict(spec.secret_env))
        secrets = str(len(secrets)).encode() + b"\n" + secrets  # on a pipe to the supervisor, never on disk
        h = self._take_warm(spec, secrets) if self._warm else None
        if h is not None:
            return h
        if self._server is not None:
            h = self._fork(spec, secrets)
            if h is not None:
                return h
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

    def _fork(self, spec: RunSpec, secrets: bytes) -> Optional[ProcessHandle]:
        """The job's supervisor forked by the fork server; None: it is to be started on its own. A server found
        dead is started again, once, with new pipes; twice, and the fork server is given up."""
        for _ in range(2):
            got = self._fork_once(spec, secrets)
            if got is not LOST:
                return got
        self._server.give_up()
        return None

    def _fork_once(self, spec: RunSpec, secrets: bytes):
        notify_r, notify_w = os.pipe()
        go_r, go_w = os.pipe()
        err, got = -1, None
        try:
            os.set_blocking(notify_r, False)
            err = os.open(os.path.join(spec.run_dir, "supervisor.err"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            got = self._server.spawn(spec.run_dir, notify_w, err, go_r)
            if got is not None and got is not LOST:
                try:  # the go: the secrets, then EOF (a supervisor that died meanwhile just ends without a status)
                    _write_all(go_w, secrets)
                except OSError:
                    pass
        finally:
            for fd in (notify_w, go_r, go_w, err):
                if fd >= 0:
                    os.close(fd)
            if got is None or got is LOST:
                os.close(notify_r)
        if got is None or got is LOST:
            return got
        pid, start_time, pidfd = got
        h = ProcessHandle(spec.run_dir, pid, start_time, job_id=spec.job_id, notify=notify_r, pidfd=pidfd)
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
                    said = os.read(handle.notify, 1)
                except BlockingIOError:
                    continue
                if said == b"S":
                    return True
                handle.no_space = handle.no_space or said == b"N"
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

    def started_at(self, handle: ProcessHandle) -> Optional[float]:
        try:
            at = sv.read_file(os.path.join(handle.run_dir, "supervisor")).get("started_at")
        except (OSError, ValueError, AttributeError):
            return None
        return float(at) if isinstance(at, (int, float)) else None

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
        stats.start(h.run_dir, journal, h.done, self.STATS_INTERVAL_S, sample, self._samplers)

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
        # A supervisor from the fork server (reaped there) is done with once it tells its end; one started alone is
        # this process's child, waited for (reaped) as before.
        if handle.notify >= 0 and handle.popen is None:
            told = _told_end(handle, deadline)
            if told is _TIMED_OUT:
                return None
            if told is not None:  # the supervisor makes its status durable and ends meanwhile
                handle.done.set()
                self.cleanup(handle)
                return told
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if handle.popen is not None:
            try:
                handle.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
            handle.done.set()
        elif handle.pidfd >= 0:
            if not _readable(handle.pidfd, timeout):
                return None
            handle.done.set()
        else:
            if not _wait_pid(handle, deadline):
                return None
            handle.done.set()
        if handle.notify >= 0:
            try:
                handle.no_space = handle.no_space or b"N" in os.read(handle.notify, 64)
            except OSError:
                pass
        self.cleanup(handle)
        result = read_status(handle.run_dir)
        if result is None:
            # Nothing of a job may run on unsupervised: whatever carries its marker goes with its supervisor.
            if handle.job_id:
                sv.kill_marked(handle.job_id)
            if handle.no_space or (handle.popen is not None and handle.popen.returncode == sv.EXIT_NO_SPACE):
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
        with handle.pidfd_mu:
            if handle.pidfd >= 0:
                os.close(handle.pidfd)
                handle.pidfd = -1

    def stop(self, handle: ProcessHandle, request: StopRequest) -> None:
        sv.write_atomic(os.path.join(handle.run_dir, "stop"), request.as_dict(), durable=False)
        with handle.pidfd_mu:
            if handle.pidfd >= 0:  # the fork server reaps its supervisors at once: by pid, a reused one could be hit
                try:
                    _signal.pidfd_send_signal(handle.pidfd, _signal.SIGUSR1)
                except ProcessLookupError:
                    pass
                return
        if handle.alive():
            try:
                os.kill(handle.pid, _signal.SIGUSR1)
            except ProcessLookupError:
                pass
