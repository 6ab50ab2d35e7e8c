"""The per-job supervisor: one small process that owns one running job (Nomad's executor model).

It is started as ``python -I -S supervisor.py RUN_DIR`` in a session of its own, so it outlives the engine, and
it imports only light built-in modules (it starts in ~25 ms; ``json``, ``subprocess`` and ``signal`` alone would
double that). Its whole channel to the engine is files in RUN_DIR, in ``marshal`` format (plain dicts):

- ``spec`` (in): argv, cwd, env, log paths and limits, and optionally the pid of an owner whose death stops the job;
  secrets are never in it: they come on the supervisor's stdin, or on its go pipe when forked (the length of a
  marshalled dict, then the dict), and exist only in its memory and the job's environment;
- ``supervisor`` (out): its pid and start time, so a restarted engine can re-adopt it safely;
- ``stop`` (in, then SIGUSR1): a stop request ``{"signal": N, "timeout": seconds, "reason": str}``;
- ``status`` (out, written last, atomically): the job's exit status, even if the engine is down by then.

An engine starts supervisors through a fork server (``--forkserver=FD``): this module, started once and waiting on
a socket; each request forks a supervisor from it, so a job's supervisor costs a fork (~1 ms of CPU), not an
interpreter's start (~20 ms). Its secrets come from the engine on a pipe of its own, as a standalone one's do.
A supervisor can also be forked ahead of its job with the job's sandbox made at once (``warm``, see Warm): at the
go, the job's script is handed to the stub waiting in that sandbox, which saves the making of the sandbox (bwrap's
namespaces and mounts, setpriv) from the job's start, when the job's argv is the one the sandbox was made with.
The forked supervisor is what one started on its own is: a session of its own, its run dir and lock, no tie to the
engine or to the fork server (whose end, when its engine goes, ends no job).

Logs go to the job's journal (runners/journal.py, the one definition of its format) plus plain stdout/stderr
files. It is a child
subreaper: descendants that double-fork or call setsid are re-parented to it, and it kills every one of them when
the job's main process ends or a stop escalates, then reaps them.
"""
import _signal as signal
import ctypes
import fcntl
import marshal
import os
import select
import sys
import time

if __package__:
    from runners import journal
else:  # started as `python -I -S supervisor.py`: the package is not on the path; runners/journal.py alone is
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import journal

STDOUT, STDERR, SYSTEM = journal.Stream.STDOUT, journal.Stream.STDERR, journal.Stream.SYSTEM
MAX_RECORD = journal.MAX_RECORD
PR_SET_CHILD_SUBREAPER = 36
# The supervisor's exit code when it could not even write the job's exit status (a full disk): the engine says so.
EXIT_NO_SPACE = 75
LOCK = "lock"  # held (flock) by the supervisor of a run for its whole life: a restarted engine can tell it lives
TRUNCATED = b"[dsjobs] log limit reached: further output of this stream is dropped\n"
# A pipe to the engine that started this supervisor (``--notify=FD``): one byte once the job has started, and
# its end (this process's exit, after the exit status is on disk). The engine waits on it instead of polling for
# the ``supervisor`` file; an engine that is gone only makes the write fail, which changes nothing here.
NOTIFY = {"fd": -1}
# A sandbox made before its job (the engine's warm sandboxes, supervisor ``warm``): bwrap and setpriv run ahead with
# this stub as the command, a shell that waits for its script on stdin. The job's go hands it a script of exports
# and one exec (handoff): the job then starts as it would have, minus the sandbox's making. dash by its name, not
# /bin/sh: a bash as /bin/sh makes UID, EUID, SHELLOPTS... read-only (an export of one fails the script) and
# exports SHLVL; where there is no dash, no sandbox is made ahead (runners/node.py).
WARM_STUB = ["/bin/dash", "-s"]
# Names the stub shell gives a meaning of its own: an environment with one of them, or with a name no shell can
# export (a secret named MY-SECRET), is started cold, so the job's environment is what a cold start gives it.
_SHELL_NAMES = frozenset(("IFS", "PS1", "PS2", "PS4", "OPTIND", "OPTARG", "PPID", "ENV", "PWD", "OLDPWD", "CDPATH",
                          "MAIL", "MAILCHECK", "MAILPATH", "HISTSIZE", "LINENO", "FCEDIT", "TERM", "_"))
_HANDOFF_MAX = 60000  # under a pipe's 64 KiB: written whole without waiting for the stub to read it
REQUEST_MAX = 65536  # a fork server's request, a warm sandbox's argv included


def write_atomic(path: str, data: dict, durable: bool = True, before_sync=None) -> None:
    """``data`` at ``path`` whole or not at all; ``durable``: fsync'd with its directory. ``before_sync``: called
    once the file is in place, before the fsyncs; the directory may be gone by then (the run was removed)."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with open(fd, "wb") as f:
        f.write(marshal.dumps(data))
        f.flush()
        if durable and before_sync is None:
            os.fsync(fd)
        os.replace(tmp, path)
        if before_sync is not None:
            before_sync()
            if durable:
                os.fsync(fd)
    if durable:
        try:
            dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        except FileNotFoundError:
            if before_sync is None:
                raise
            return
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def read_file(path: str):
    """A file written by write_atomic, or None when it is absent or unreadable."""
    try:
        with open(path, "rb") as f:
            return marshal.loads(f.read())
    except (OSError, ValueError, EOFError, TypeError):
        return None


def proc_start_time(pid: int) -> int:
    """Start time of a process in clock ticks since boot: with the pid, an identity that survives pid reuse."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return int(data[data.rindex(b")") + 2:].split()[19])


PF_EXITING = 0x4  # the kernel's flag of a task in exit(): it runs no user code again


def _children_map(ending: set = None) -> dict:
    """ppid -> children, of every process; with ``ending``, that set gets those already dead or in exit()."""
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:  # os-level calls: this reads every process's stat, at every check of a job's end
            fd = os.open(f"/proc/{name}/stat", os.O_RDONLY)
            try:
                data = os.read(fd, 1024)
            finally:
                os.close(fd)
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2:].split(None, 7)
        kids.setdefault(int(fields[1]), []).append(int(name))
        if ending is not None and (fields[0] in (b"Z", b"X") or int(fields[6]) & PF_EXITING) \
                and not _threads_live(name):
            ending.add(int(name))
    return kids


def _threads_live(pid: str) -> bool:
    """Whether a process whose first thread is dead or in exit() still has other threads: a main thread that
    called pthread_exit() leaves its process a zombie in /proc/PID/stat while the rest of it runs on."""
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


def marked(job_id: str, exclude: int = 0) -> list:
    """Processes whose environment carries the job's marker (DSJOBS_JOB_ID=<id>): the last net for anything that
    left the supervisor's subtree (its supervisor died, say)."""
    marker = f"DSJOBS_JOB_ID={job_id}".encode()
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == exclude:
            continue
        if marker in _environ(name).split(b"\0"):
            out.append(int(name))
    return out


def _environ(pid: str) -> bytes:
    """A process's environment; that of another of its threads when its first thread is gone (a main thread
    that called pthread_exit(): /proc/PID/environ then fails while the process runs on)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read()
    except OSError:
        pass
    try:
        tids = [t for t in os.listdir(f"/proc/{pid}/task") if t != pid]
    except OSError:
        return b""
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/environ", "rb") as f:
                return f.read()
        except OSError:
            continue
    return b""


def kill_marked(job_id: str, exclude: int = 0, rounds: int = 50) -> int:
    killed = 0
    for _ in range(rounds):
        pids = marked(job_id, exclude)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, 9)
                killed += 1
            except OSError:
                pass
        time.sleep(0.01)
    return killed


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rindex(b")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _has_children(pid: int) -> bool:
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                if f.read().strip():
                    return True
        return False
    except OSError:
        return True  # cannot tell cheaply: let the full scan decide


def descendants(root: int, live: bool = False) -> list:
    """Every descendant of ``root``; ``live``: only those that can still run code of their own, leaving out the
    ones in exit() (a PID namespace's init tearing its namespaces down, ~10-20 ms of kernel time after the job's
    last process is gone) and zombies. An ending process's children are still looked through."""
    # Cheap first: a subreaper with no children has no descendants at all (orphans are re-parented to it).
    if not _has_children(root):
        return []
    ending: set = set()
    kids, out, todo = _children_map(ending if live else None), [], [root]
    while todo:
        for child in kids.get(todo.pop(), ()):
            out.append(child)
            todo.append(child)
    return [p for p in out if p not in ending] if live else out


def _quoted(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


def _exportable(name: str) -> bool:
    return bool(name) and name.isascii() and (name[0].isalpha() or name[0] == "_") \
        and all(c.isalnum() or c == "_" for c in name) and name not in _SHELL_NAMES


def handoff(env: dict, command: list):
    """The warm stub's script: the job's environment exported and its command exec'd with stdin from /dev/null,
    as a cold start runs it; None when the environment cannot be given this way (then the job starts cold)."""
    if not command or not all(_exportable(k) for k in env):
        return None
    # A NUL fails a cold start ("embedded null byte"); the shell would drop it silently and run the job altered.
    if any("\0" in w for w in (*env.values(), *command)):
        return None
    lines = [f"export {k}={_quoted(v)}" for k, v in env.items()]
    lines.append("exec " + " ".join(_quoted(a) for a in command) + " </dev/null")
    data = ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
    return data if len(data) <= _HANDOFF_MAX else None


class Warm:
    """The warm sandbox of a supervisor forked ahead of its job: bwrap ... setpriv ... WARM_STUB, forked at once,
    its stdin a pipe that gets the job's script at the go (or nothing, when the engine gives it up)."""

    def __init__(self, argv: list, cwd: str):
        self.argv = argv
        self.out_r, out_w = os.pipe()
        self.err_r, err_w = os.pipe()
        stdin_r, self.stdin_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.setsid()
                for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ,
                            signal.SIGCHLD, signal.SIGUSR1):
                    signal.signal(sig, signal.SIG_DFL)
                os.chdir(cwd)
                os.dup2(stdin_r, 0)
                os.dup2(out_w, 1)
                os.dup2(err_w, 2)
                os.closerange(3, 65536)
                os.execve(argv[0], argv, {})  # bwrap by its path; the job's environment comes at the go
            finally:
                os._exit(127)
        for fd in (stdin_r, out_w, err_w):
            os.close(fd)

    def alive(self) -> bool:
        try:
            return os.waitpid(self.pid, os.WNOHANG)[0] == 0
        except ChildProcessError:
            return False

    def give(self, script: bytes) -> bool:
        """The job's script to the stub; False when the sandbox is gone (then it is dropped, and the job starts
        cold)."""
        if not self.alive():
            return False
        try:
            view = memoryview(script)
            while view:
                view = view[os.write(self.stdin_w, view):]
        except OSError:
            return False
        finally:
            os.close(self.stdin_w)
            self.stdin_w = -1
        return True

    def drop(self) -> None:
        """Nothing of the job ran in it: the sandbox is killed and reaped, its pipes closed."""
        for fd in (self.stdin_w, self.out_r, self.err_r):
            if fd >= 0:
                os.close(fd)
        self.stdin_w = self.out_r = self.err_r = -1
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.kill(self.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


class LogSink:
    """A job's output: whole lines into the journal and into plain stdout/stderr files, each stream capped at
    ``limit`` bytes with a marker; a very long line is sent in pieces rather than held without bound."""

    def __init__(self, journal_path: str, stdout: str, stderr: str, limit: int = 0):
        self.journal = os.open(journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.limit = limit
        self.files = {STDOUT: open(os.open(stdout, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab"),
                      STDERR: open(os.open(stderr, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")}
        self.written = {STDOUT: 0, STDERR: 0}
        self.partial = {STDOUT: b"", STDERR: b""}
        # Why the logs could not be written (a full disk, an I/O error): output is dropped from then on, and the
        # owner of the job stops it, so that the job ends with this error rather than running on unlogged.
        self.failed = None

    def _guarded(self, write) -> None:
        if self.failed is not None:
            return
        try:
            write()
        except OSError as e:
            self.failed = f"the job's logs could not be written: {e.strerror or e}"

    def system(self, msg: str) -> None:
        self._guarded(lambda: journal.append(self.journal, SYSTEM, (msg.rstrip("\n") + "\n").encode()))

    def _emit(self, stream: int, data: bytes) -> None:
        if self.limit and self.written[stream] >= self.limit:
            return
        if self.limit and self.written[stream] + len(data) > self.limit:
            data = data[: self.limit - self.written[stream]]
            cut = data.rfind(b"\n") + 1
            data = (data[:cut] if cut else data + b"\n") + TRUNCATED
            self.written[stream] = self.limit
        else:
            self.written[stream] += len(data)

        def write():
            self.files[stream].write(data)
            self.files[stream].flush()
            journal.append(self.journal, stream, data)
        self._guarded(write)

    def feed(self, stream: int, data: bytes) -> None:
        buf = self.partial[stream] + data
        cut = buf.rfind(b"\n") + 1
        if cut:
            self._emit(stream, buf[:cut])
            buf = buf[cut:]
        if len(buf) >= MAX_RECORD:  # a line longer than a record goes out in pieces, cut between characters
            cut = journal.char_boundary(buf, len(buf))
            self._emit(stream, buf[:cut])
            buf = buf[cut:]
        self.partial[stream] = buf

    def flush_partial(self) -> None:
        for stream, buf in self.partial.items():
            if buf:
                self._emit(stream, buf + b"\n")
                self.partial[stream] = b""

    def close_files(self) -> None:
        for f in self.files.values():
            try:
                f.close()
            except OSError:  # the flush of a full disk: already reported through ``failed``
                pass

    def close(self) -> None:
        self.close_files()
        os.close(self.journal)


def read_stdin() -> bytes:
    out = b""
    while True:
        chunk = os.read(0, 65536)
        if not chunk:
            return out
        out += chunk


def parse_secrets(data: bytes) -> dict:
    """``<length>\n<marshalled dict>`` (what the executor writes on stdin), or nothing."""
    head, sep, rest = data.partition(b"\n")
    if not sep or not head.strip().isdigit():
        return {}
    try:
        env = marshal.loads(rest[:int(head)])
    except (ValueError, EOFError, TypeError):
        return {}
    return env if isinstance(env, dict) else {}


class Supervisor:
    POLL_S = 0.05

    def __init__(self, run_dir: str, secret_env: dict = None, warm: Warm = None):
        self.run_dir = run_dir
        self.secret_env = secret_env or {}
        self.warm = warm
        self.spec = read_file(os.path.join(run_dir, "spec"))
        self.sandboxed = bool(self.spec.get("sandboxed"))
        self.logs = LogSink(self.spec["journal"], self.spec["stdout"], self.spec["stderr"],
                            int(self.spec.get("log_limit_bytes") or 0))
        self.journal = self.logs.journal
        self.pid = None
        self.held: list = []  # the sandbox's mount namespace, held past the job (hold_mounts)
        self.kill_at = None
        self.stopped = None  # the stop request that ended the job, if any
        # A limit on running time is enforced here, not in the engine, so it holds while the engine is down. It
        # counts from the ``started_at`` of the ``supervisor`` file, which the job's recorded start is.
        self.deadline = None
        self.main_status = None
        # A graceful signal that reached no process of the job (asked for while bwrap was still making its sandbox:
        # only bwrap's own two processes existed), sent again at each turn until one gets it.
        self.pending_signal = None
        self.pending_pause = 0.002

    def system(self, msg: str) -> None:
        self.logs.system(msg)

    # --- process control -------------------------------------------------------------------------------------

    def _signal_tree(self, sig: int) -> int:
        """Signal the job's process group and every descendant (setsid and double-fork included). In a sandbox
        a graceful signal spares bwrap's own two processes: the job's exit status comes back through them, and
        the job's processes, all inside its PID namespace, are all descendants."""
        pids = descendants(os.getpid())
        if self.sandboxed and sig != signal.SIGKILL:
            spare = {self.pid} | {p for p in pids if _parent(p) == self.pid}
            pids = [p for p in pids if p not in spare]
        else:
            try:
                os.killpg(self.pid, sig)
            except OSError:
                pass
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        return len(pids)

    def _reap(self) -> bool:
        """Reap what has ended; True once this process has no child left at all, alive or not: as the job's
        subreaper, nothing of the job is left then (orphans are re-parented to it)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return True
            if pid == 0:
                return False
            if pid == self.pid and self.main_status is None:
                self.main_status = status

    def kill_all(self) -> None:
        """SIGKILL until nothing of the job is left; the subreaper role makes 'left' well defined, and the marker
        sweep catches whatever carries the job's id outside the subtree."""
        deadline, pause = time.monotonic() + 30, 0.0005
        while time.monotonic() < deadline:
            if self.sandboxed:
                self._reap()
                # Left: what can still run. Every process of the job is in its PID namespace, which the kernel
                # empties once its init is gone: a process in exit() cannot run (its descendants are still looked
                # at, and killed), and waiting for the kernel to finish the namespace's teardown guards nothing.
                # One look at the process table per round: the common end (nothing left, or only bwrap's init in
                # exit()) is one.
                live = descendants(os.getpid(), live=True)
                if not live:
                    break
            else:
                # Unconfined, only no child at all is nothing left: a process that forks and exits in a loop shows
                # the process table little but exiting parents (its children, re-parented here, come after the
                # look), so every descendant is killed, the exiting ones too, until none is left to reap.
                if self._reap():
                    break
                live = descendants(os.getpid())
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except OSError:
                pass
            for pid in live:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(pause)
            pause = min(pause * 2, 0.01)
        job_id = self.spec.get("job_id")
        if job_id and self.stopped is not None:
            kill_marked(job_id, exclude=os.getpid())

    def _check_stop_request(self, req: dict = None) -> None:
        req = req if req is not None else read_file(os.path.join(self.run_dir, "stop"))
        if not isinstance(req, dict):
            return
        sig = int(req.get("signal") or signal.SIGKILL)
        timeout = float(req.get("timeout") or 0)
        if self.stopped is not None and self.kill_at is not None and sig != signal.SIGKILL:
            return  # already stopping gracefully; only a forced stop changes anything
        self.stopped = req
        if sig == signal.SIGKILL or timeout <= 0:
            self.system(f"stop: SIGKILL to the whole job ({req.get('reason') or 'stop requested'})")
            self.kill_at = time.monotonic()
        else:
            self.system(f"stop: signal {sig} to the job, SIGKILL in {timeout:g}s ({req.get('reason') or 'stop requested'})")
            if not self._signal_tree(sig) and self.sandboxed:
                self.pending_signal = sig
            self.kill_at = time.monotonic() + timeout

    def _start(self, spec: dict):
        """The job in its warm sandbox when that was made with the very argv its cold start would use
        (``warm_argv``) and its environment can be handed over; else started cold. An error string on failure."""
        warm, self.warm = self.warm, None
        if warm is not None:
            script = handoff({**self.secret_env, **spec["env"]}, spec.get("command") or []) \
                if spec.get("warm_argv") == warm.argv else None
            # held before the script goes: a job as short as `true` could end, and its sandbox with it, before
            held = hold_mounts(warm.pid) if script is not None else []
            if script is not None and warm.give(script):
                self.pid, self.out_r, self.err_r = warm.pid, warm.out_r, warm.err_r
                self.held = held
                return None
            for fd in held:
                os.close(fd)
            warm.drop()
        return self._spawn(spec)

    def _spawn(self, spec: dict):
        """fork/exec the job as a session leader with its output on two pipes; an error string on failure."""
        self.out_r, out_w = os.pipe()
        self.err_r, err_w = os.pipe()
        exec_r, exec_w = os.pipe()  # closed by a successful exec (CLOEXEC); carries the error otherwise
        pid = os.fork()
        if pid == 0:
            try:
                os.close(exec_r)
                os.setsid()
                for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ,
                            signal.SIGCHLD, signal.SIGUSR1):
                    signal.signal(sig, signal.SIG_DFL)
                signal.set_wakeup_fd(-1)
                os.chdir(spec["cwd"])
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(out_w, 1)
                os.dup2(err_w, 2)
                os.closerange(3, exec_w)
                os.closerange(exec_w + 1, 65536)
                os.set_inheritable(exec_w, False)
                execvpe(spec["argv"], {**self.secret_env, **spec["env"]})
            except BaseException as e:  # noqa: BLE001 - anything here must reach the parent, then exit
                try:
                    os.write(exec_w, str(e).encode()[:1000])
                finally:
                    os._exit(127)
        os.close(out_w)
        os.close(err_w)
        os.close(exec_w)
        err = b""
        while True:
            chunk = os.read(exec_r, 1024)
            if not chunk:
                break
            err += chunk
        os.close(exec_r)
        self.pid = pid
        if err:
            os.waitpid(pid, 0)
            return err.decode(errors="replace")
        return None

    # --- main loop -------------------------------------------------------------------------------------------

    def run(self) -> int:
        become_subreaper()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGUSR1, lambda *_: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        # SIGTERM to the supervisor itself (e.g. from a service manager) means: stop the job now.
        signal.signal(signal.SIGTERM, lambda *_: None)

        started = time.time()
        spec = self.spec
        if spec.get("max_duration_s"):
            self.deadline = time.monotonic() + float(spec["max_duration_s"])
        err = self._start(spec)
        if err:
            self.system(f"cannot start the job: {err}")
            write_atomic(os.path.join(self.run_dir, "status"), {
                "return_code": 127, "signal": None, "started_at": started, "finished_at": time.time(),
                "error": f"cannot start the job: {err}", "error_kind": "START_FAILED", "stopped": None,
            })
            return 0
        # The start is confirmed by this file: the engine marks the job EXECUTING only once it is there.
        write_atomic(os.path.join(self.run_dir, "supervisor"), {
            "pid": os.getpid(), "start_time": proc_start_time(os.getpid()), "job_pid": self.pid,
            "started_at": started,
        }, durable=False)
        notify_started()
        if os.path.exists(os.path.join(self.run_dir, "stop")):
            self._check_stop_request()  # a stop that raced with the start

        streams = {self.out_r: STDOUT, self.err_r: STDERR}
        for fd in streams:
            os.set_blocking(fd, False)
        main_done_at = None
        # An owner (a node's agent; an engine embedded in `dsjobs run`): when it dies, however, so does the job. Its
        # pidfd says so (a supervisor forked by the fork server is not the owner's child); without pidfds here the
        # supervisor is the owner's own child, re-parented when the owner dies.
        owner, owner_fd = spec.get("owner_pid"), None
        if owner:
            try:
                owner_fd = os.pidfd_open(owner)
            except ProcessLookupError:
                owner_fd = -1  # gone before this started
            except (OSError, AttributeError):
                owner_fd = None
        while True:
            # A pending signal is tried again soon, then less often (each try reads the process table).
            timeout = self.POLL_S if self.pending_signal is None else self.pending_pause
            self.pending_pause = min(self.pending_pause * 2, self.POLL_S) if self.pending_signal is not None \
                else 0.002
            if self.kill_at is not None:
                timeout = max(0.0, min(timeout, self.kill_at - time.monotonic()))
            if self.deadline is not None and self.stopped is None:
                left = self.deadline - time.monotonic()
                if left <= 0 and self.main_status is None:
                    self._check_stop_request(dict(self.spec["deadline_stop"], kind="deadline"))
                else:
                    timeout = max(0.0, min(timeout, left))
            readable = select.select(list(streams) + [wake_r] + ([owner_fd] if owner_fd and owner_fd > 0 else []),
                                     [], [], timeout)[0]
            for fd in readable:
                if fd == owner_fd:
                    continue  # looked at below, once the turn's output is read
                if fd == wake_r:
                    try:
                        sigs = os.read(wake_r, 512)
                    except BlockingIOError:
                        sigs = b""
                    if signal.SIGUSR1 in sigs:
                        self._check_stop_request()
                    if signal.SIGTERM in sigs:
                        self.stopped = {"signal": signal.SIGKILL, "reason": "supervisor terminated", "kind": "owner"}
                        self.kill_at = time.monotonic()
                    continue
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if data:
                    self.logs.feed(streams[fd], data)
                else:
                    os.close(fd)
                    del streams[fd]
            self._reap()
            if self.pending_signal is not None and (self.main_status is not None or self._signal_tree(
                    self.pending_signal)):
                self.pending_signal = None
            if self.logs.failed and self.main_status is None and self.kill_at is None and self.stopped is None:
                # A full disk (or an I/O error) under the logs: the job is stopped rather than left unlogged.
                self.stopped = {"signal": signal.SIGKILL, "timeout": 0.0, "reason": self.logs.failed,
                                "kind": "storage"}
                self.kill_at = time.monotonic()
            if owner_fd is not None and owner_fd > 0 and owner_fd in readable:
                os.close(owner_fd)  # readable for good once the owner is gone: looked at no more
                owner_fd = -1
            if owner and self.main_status is None and (owner_fd == -1 or (owner_fd is None and os.getppid() != owner)):
                owner = None  # said once; what follows is the SIGKILL's
                self.system(f"stop: the process that owned the job (pid {spec['owner_pid']}) is gone; "
                            "SIGKILL to the whole job")
                self.stopped = {"signal": signal.SIGKILL, "reason": "the process that owned the job is gone",
                                "kind": "owner"}
                self.kill_at = time.monotonic()
            now = time.monotonic()
            if self.kill_at is not None and now >= self.kill_at and self.main_status is None:
                self.system("stop: timeout reached, SIGKILL to whatever is left")
                self.kill_all()
                self.kill_at = None
            if self.main_status is not None and main_done_at is None:
                main_done_at = now
                # As when a container's main process ends: nothing of the job outlives it.
                self.kill_all()
            if self.main_status is not None and (not streams or now - main_done_at > 2.0):
                break
        for fd in list(streams):
            os.close(fd)
        self.logs.flush_partial()
        self.kill_all()
        status = self.main_status
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            return_code, exit_signal = 128 + sig, sig
        else:
            return_code, exit_signal = os.WEXITSTATUS(status), None
        self.logs.close_files()
        status = {"return_code": return_code, "signal": exit_signal, "started_at": started,
                  "finished_at": time.time(), "stopped": self.stopped}
        if self.logs.failed:
            status.update(error=self.logs.failed, error_kind="NO_SPACE")  # runners/spec.py FailureKind
        try:
            # The engine is told once the file is in place, before it is made durable: the engine's own record of
            # the end is durable, and need not wait for these two fsyncs (~2 ms here). The file is what an engine
            # that was down meanwhile reads, and nothing is written into the run dir after it.
            write_atomic(os.path.join(self.run_dir, "status"), status, before_sync=notify_end)
        except OSError:
            return EXIT_NO_SPACE  # the engine reads this exit code as "no space for the exit status"
        os.close(self.journal)
        return 0


def execvpe(argv: list, env: dict) -> None:
    """os.execvpe's search of the new environment's PATH, without its ``import warnings`` (os.get_exec_path): in a
    supervisor forked from the fork server that import cost every job's start ~0.5 ms between fork and exec."""
    file = argv[0]
    if os.sep in file:
        os.execve(file, argv, env)
    saved = last = None
    for d in env.get("PATH", os.defpath).split(os.pathsep):
        try:
            os.execve(os.path.join(d, file), argv, env)
        except (FileNotFoundError, NotADirectoryError) as e:
            last = e
        except OSError as e:
            last = e
            saved = saved or e
    raise saved or last or FileNotFoundError(2, "No such file or directory", file)


def notify(what: bytes) -> None:
    """b"S": the job started; b"E": it ended, and its status file is in place; b"N": no space for its exit status
    (what an exit code says to a parent, for an engine that is not this process's parent)."""
    fd = NOTIFY["fd"]
    if fd < 0:
        return
    try:
        os.write(fd, what)
    except OSError:
        pass  # the engine went away: it learns of the start from the ``supervisor`` file


def notify_started() -> None:
    notify(b"S")


def notify_end() -> None:
    notify(b"E")


def become_subreaper() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except OSError:
        pass


def lock_run(run_dir: str, wait: bool = True):
    """The run's lock (fd, or None when another holds it and not ``wait``): one supervisor per run, ever."""
    fd = os.open(os.path.join(run_dir, LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def hold_mounts(bwrap_pid: int) -> list:
    """Descriptors of the mount namespace of the sandbox under ``bwrap_pid`` (that of its init, bwrap's child).
    When a sandbox's last process exits, the kernel unmounts its ~35 mounts there and then, ~2 ms here, and the
    job's output pipes reach their end only after: held by this supervisor, the namespace outlives its processes,
    and is let go after the job's end is told (let_go)."""
    try:
        with open(f"/proc/{bwrap_pid}/task/{bwrap_pid}/children") as f:
            kids = f.read().split()
    except OSError:
        return []
    out = []
    for kid in kids:
        try:
            out.append(os.open(f"/proc/{kid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            pass
    return out


def let_go(held: list) -> None:
    """The held namespaces closed by a child of this process, which holds nothing else (not the run's lock, nor
    the pipe whose end tells the engine this supervisor is done): their unmounting is then off the job's path."""
    if not held:
        return
    try:
        pid = os.fork()
    except OSError:
        pid = -1
    if pid == 0:
        try:
            lo = 0
            for fd in sorted(held):
                os.closerange(lo, fd)
                lo = fd + 1
            os.closerange(lo, 65536)
            for fd in held:
                os.close(fd)
        finally:
            os._exit(0)
    for fd in held:
        os.close(fd)


def supervise(run_dir: str, secret_env: dict, warm: Warm = None) -> int:
    # Held until this process ends (the fd is not passed to the job). An engine that restarted takes it to learn
    # that no supervisor lives for the run; if it gave the run up meanwhile (its spec is gone), nothing starts.
    lock_run(run_dir)
    if not os.path.exists(os.path.join(run_dir, "spec")) or os.path.exists(os.path.join(run_dir, "status")):
        if warm is not None:
            warm.drop()
        return 0
    sup = None
    try:
        sup = Supervisor(run_dir, secret_env, warm)
        code = sup.run()
    except OSError as e:
        if e.errno not in (28, 122):  # ENOSPC, EDQUOT: the engine says so, and kills what is left of the job
            raise
        code = EXIT_NO_SPACE
    if code == EXIT_NO_SPACE:
        notify(b"N")
    if sup is not None:
        let_go(sup.held)
    return code


def _fds_of(ancillary) -> list:
    import _socket
    out = []
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            out += [int.from_bytes(data[i:i + 4], sys.byteorder) for i in range(0, len(data) - len(data) % 4, 4)]
    return out


def _read_all(fd: int) -> bytes:
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        if not chunk:
            return out
        out += chunk


def _forked(req: dict, fds: list) -> int:
    """A supervisor forked by the fork server: nothing of the run is touched until the engine says go, by writing
    the job's secrets on the go pipe (the old standalone stdin's format) and closing it. Its EOF with nothing on it
    (the engine gave the start up, or died) ends this process before it took the run's lock: a start the engine
    never learned of is never made. A ``warm`` request (``{"argv": ..., "cwd": ...}``, the job's sandbox with
    WARM_STUB for its command) has the sandbox made at once, so that the go finds it ready; nothing of a job runs
    in it before the go, and an EOF kills it."""
    notify_w, err, go = fds
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    os.setsid()  # a session of its own, as a supervisor started alone has
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(err, 1)
    os.dup2(err, 2)
    for f in (null, err):
        os.close(f)
    os.set_inheritable(notify_w, False)
    NOTIFY["fd"] = notify_w
    warm = None
    ask = req.get("warm")
    if isinstance(ask, dict):  # a sandbox made now, for a job to come: its bwrap runs while the engine waits
        become_subreaper()
        os.set_inheritable(go, False)
        try:
            warm = Warm(list(ask["argv"]), str(ask["cwd"]))
        except OSError:
            warm = None  # (no fork here now) the job, if it comes, starts cold
    data = _read_all(go)
    os.close(go)
    if not data:
        if warm is not None:
            warm.drop()
        return 0
    return supervise(str(req["run_dir"]), parse_secrets(data), warm)


def forkserver(fd: int) -> int:
    """Fork a supervisor per request until the engine closes its end. A request (SOCK_SEQPACKET, one message) is
    ``{"run_dir": ...}`` (and ``"warm"``, see _forked) in marshal format with three descriptors: the supervisor's
    notify pipe, its supervisor.err, and the read end of its go pipe (see _forked); the answer is ``{"pid": ...,
    "start_time": ...}`` with a pidfd of the supervisor, opened before anything here could reap it, so the engine
    waits on that very process (never a reused pid). Secrets never pass through here."""
    import _socket
    sock = _socket.socket(fileno=fd)
    os.set_inheritable(fd, False)
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (OSError, AttributeError):
        return 3  # no pidfds here (an old kernel, a seccomp filter): the engine starts supervisors on their own

    # The processes a supervisor leaves behind (let_go's child, which closes a sandbox's mount namespace after the
    # job) become this server's children, reaped here, instead of init's, which a container's init may never reap.
    become_subreaper()

    def reap(*_):
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    return
            except ChildProcessError:
                return
    signal.signal(signal.SIGCHLD, reap)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            msg, anc, _, _ = sock.recvmsg(REQUEST_MAX, _socket.CMSG_SPACE(3 * 4))
        except InterruptedError:
            continue
        fds = _fds_of(anc)
        if not msg:
            return 0  # the engine is gone or done: the supervisors it started live on, each on its own
        pid, pidfd = 0, -1
        try:
            req = marshal.loads(msg)
            if not isinstance(req, dict) or len(fds) != 3:
                raise ValueError("malformed request")
            # SIGCHLD waits until the pidfd is open: the reaper cannot take the child (and free its pid) before.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
            try:
                pid = os.fork()
                if pid == 0:
                    code = 70
                    try:
                        sock.close()
                        code = _forked(req, fds)
                    except BaseException:  # noqa: BLE001 - into supervisor.err, as a supervisor started alone
                        import traceback
                        traceback.print_exc()
                    finally:
                        sys.stderr.flush()
                        os._exit(code)
                pidfd = os.pidfd_open(pid)
                answer = marshal.dumps({"pid": pid, "start_time": proc_start_time(pid)})
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        except (OSError, ValueError, EOFError, TypeError) as e:  # a fork refused (EAGAIN, ENOMEM), say
            # No answer with a pidfd: the engine closes the go pipe unwritten, and a child, if any, ends untouched.
            answer = marshal.dumps({"error": str(e) or type(e).__name__})
        finally:
            for f in fds:
                os.close(f)
            req = msg = None
        try:
            if pidfd >= 0:
                sock.sendmsg([answer], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, pidfd.to_bytes(4, sys.byteorder))])
            else:
                sock.send(answer)
        except OSError:
            return 0  # the engine went away meanwhile (the child finds its go pipe closed)
        finally:
            if pidfd >= 0:
                os.close(pidfd)


def main() -> int:
    args = sys.argv[1:]
    if args and args[-1].startswith("--notify="):
        try:
            NOTIFY["fd"] = int(args.pop()[len("--notify="):])
            os.set_inheritable(NOTIFY["fd"], False)  # the job never holds it: its end is this process's end
        except (ValueError, OSError):
            NOTIFY["fd"] = -1
    if len(args) == 1 and args[0].startswith("--forkserver="):
        return forkserver(int(args[0][len("--forkserver="):]))
    if len(args) != 1:
        print("usage: supervisor.py RUN_DIR [--notify=FD] | --forkserver=FD", file=sys.stderr)
        return 2
    secret_env = parse_secrets(read_stdin())
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    return supervise(args[0], secret_env)


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    os._exit(code)  # the status is on disk: skip interpreter teardown, the engine is waiting on our exit
