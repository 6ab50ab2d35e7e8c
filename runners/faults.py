"""The cloud's failures, injected on a machine (the ``faults`` of an AttemptSpec, runners/spec.py FaultSpec): what
each does, as far as the cloud's behaviour is documented (datasphere-behaviour.md). Every fault that takes effect
says so in the job's system log, with "injected fault:" first.

- no-capacity[=TYPE]: no machine for that type (every type without one); the next type of the job's list is tried,
  as the cloud falls back through ``cloud-instance-types``; none left: the job fails at once (NO_CAPACITY).
- preempt-after=DURATION: the machine is lost: SIGKILL to every process of the job, no signal first, no outputs
  (the machine's disk went with it); RUNNER_LOST.
- disk-full-at=SIZE: the working directory is a tmpfs of SIZE where this engine may mount one (root, with
  CAP_SYS_ADMIN) and SIZE is at most half the memory the host has available (a tmpfs is RAM), so writes past it
  fail with ENOSPC as on a full disk; elsewhere the directory is watched and the job is stopped when it holds more
  than SIZE (NO_SPACE).
- oom[=SIZE]: a memory limit of the instance type's RAM (or SIZE): a memory cgroup where one can be made (cgroup v2,
  or v1's memory controller; the kernel's OOM killer then kills the job), else the job's resident memory is
  watched and the job SIGKILLed past the limit. A container gets the limit as its memory limit.
- slow-env-build=DURATION: the environment build (PREPARING) takes that much longer; past the build's time limit
  the job fails as a build that took too long (DEADLINE).

Standard library only.
"""
from __future__ import annotations

import ctypes
import errno
import os
import threading
import time
from typing import Callable, Optional

from runners.spec import FailureKind, FaultSpec, JobFailure, Limits, StopRequest

MNT_DETACH = 2


def _mb(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB" if n < (1 << 30) else f"{n / (1 << 30):.1f} GiB"


# --- no-capacity ---------------------------------------------------------------------------------------------------

def with_capacity(types: list[Limits], faults: FaultSpec, log: Callable[[str], None]) -> list[Limits]:
    """The instance types that have a machine; none left: NO_CAPACITY, at once."""
    if faults.no_capacity is None:
        return types
    out = []
    for t in types:
        if faults.no_capacity == [] or t.instance in faults.no_capacity:
            log(f"injected fault: no-capacity: no machine available for instance type {t.instance}"
                + ("; trying the next type" if t is not types[-1] else ""))
        else:
            out.append(t)
    if not out:
        names = ", ".join(t.instance for t in types)
        raise JobFailure(FailureKind.NO_CAPACITY, f"not enough resources: no machine available for instance "
                                                  f"type(s) {names} (injected fault no-capacity); try again later "
                                                  "or list other types in cloud-instance-types")
    return out


# --- slow-env-build ------------------------------------------------------------------------------------------------

def slow_env_build(faults: FaultSpec, limit_s: float, log: Callable[[str], None], progress: Callable[[str], None],
                   stopped: Callable[[], bool]) -> None:
    total = faults.slow_env_build_s
    if not total:
        return
    log(f"injected fault: slow-env-build: the environment build takes {total:g}s longer")
    start = time.monotonic()
    wait = min(total, limit_s) if limit_s else total
    said = -1
    while not stopped():
        done = time.monotonic() - start
        if done >= wait:
            break
        if int(done) != said:
            said = int(done)
            progress(f"building python environment ({said}s of {total:g}s, injected slow-env-build)")
        time.sleep(min(0.1, wait - done))
    if stopped():
        return
    if limit_s and total > limit_s:
        raise JobFailure(FailureKind.DEADLINE, f"environment build took longer than its limit of {limit_s:g}s "
                                               "(injected fault slow-env-build)")


# --- disk-full-at --------------------------------------------------------------------------------------------------

def _libc():
    return ctypes.CDLL(None, use_errno=True)


def mem_available() -> int:
    """The host's MemAvailable (/proc/meminfo) in bytes; 0 when it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def mount_limited(work: str, size: int, log: Callable[[str], None],
                  available: Callable[[], int] = mem_available) -> bool:
    """A tmpfs of ``size`` bytes at ``work`` (an empty directory); False when this machine does not allow it, or
    when ``size`` is more than half the host's available memory (what a job writes there is RAM)."""
    os.makedirs(work, exist_ok=True)  # as runners/workspace.py makes it, and with its mode
    if os.geteuid() != 0:
        return False
    avail = available()
    if size > avail // 2:
        log(f"injected fault: disk-full-at: a filesystem of {_mb(size)} in memory would take more than half of "
            f"the {_mb(avail)} this machine has available; the working directory is watched instead")
        return False
    opts = f"size={size},mode={os.stat(work).st_mode & 0o777:o}".encode()
    if _libc().mount(b"tmpfs", work.encode(), b"tmpfs", 0, opts) != 0:
        log(f"injected fault: disk-full-at: no filesystem of {_mb(size)} can be made here "
            f"({os.strerror(ctypes.get_errno())}); the working directory is watched instead")
        return False
    log(f"injected fault: disk-full-at: the working directory is a filesystem of {_mb(size)}: writes past it fail "
        "with ENOSPC (No space left on device)")
    return True


def is_mount(path: str) -> bool:
    path = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == path for line in f)
    except OSError:
        return False


def release(path: str) -> None:
    """Unmount what mount_limited made (its contents go with it: collect the outputs first). What it makes is a
    tmpfs, a device of its own: a working directory on its parent's device (every run's, but for that fault) is
    known to be none without reading the mount table."""
    try:
        if os.stat(path).st_dev == os.stat(os.path.dirname(os.path.realpath(path))).st_dev:
            return
    except OSError:
        pass
    if is_mount(path):
        _libc().umount2(os.path.realpath(path).encode(), MNT_DETACH)


def tree_bytes(root: str) -> int:
    """The disk space a tree takes (blocks, so sparse files count as what they hold), never following links."""
    total, stack = 0, [root]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                for e in it:
                    try:
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += st.st_blocks * 512
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
        except OSError:
            continue
    return total


# --- oom -----------------------------------------------------------------------------------------------------------

def _own_cgroup_dirs() -> list[str]:
    """Where a child memory cgroup of this process could be made: v2's unified tree, or v1's memory controller."""
    out = []
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "" and os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
            out.append(("/sys/fs/cgroup" + path).rstrip("/"))
        elif "memory" in controllers.split(","):
            out.append(("/sys/fs/cgroup/memory" + path).rstrip("/"))
    return out


def memory_cgroup(job_id: str, limit: int) -> Optional[str]:
    """A memory cgroup of ``limit`` bytes for the job; None when this machine allows none."""
    for parent in _own_cgroup_dirs():
        path = os.path.join(parent, f"dsjobs-{job_id}")
        try:
            os.makedirs(path, exist_ok=True)
            if os.path.exists(os.path.join(path, "memory.max")):  # v2
                with open(os.path.join(path, "memory.max"), "w") as f:
                    f.write(str(limit))
                if os.path.exists(os.path.join(path, "memory.swap.max")):
                    with open(os.path.join(path, "memory.swap.max"), "w") as f:
                        f.write("0")
            else:
                with open(os.path.join(path, "memory.limit_in_bytes"), "w") as f:
                    f.write(str(limit))
                sw = os.path.join(path, "memory.memsw.limit_in_bytes")
                if os.path.exists(sw):
                    with open(sw, "w") as f:
                        f.write(str(limit))
            return path
        except OSError:
            try:
                os.rmdir(path)
            except OSError:
                pass
    return None


def existing_cgroup(job_id: str) -> Optional[str]:
    """The job's memory cgroup an earlier engine made (a re-adopted job's), if there is one."""
    for parent in _own_cgroup_dirs():
        path = os.path.join(parent, f"dsjobs-{job_id}")
        if os.path.isdir(path):
            return path
    return None


def in_cgroup(argv: list[str], cgroup: str) -> list[str]:
    """argv, started inside ``cgroup`` (so that everything the job starts is in it, from its first instruction)."""
    return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, *argv]


def oom_kills(cgroup: str) -> int:
    """How many processes the OOM killer killed in ``cgroup``: v2's memory.events, v1's memory.oom_control (its
    ``oom_kill`` line; a kernel without one counts none). Never memory.failcnt: the limit being hit (the kernel
    reclaiming pages) is not a kill."""
    for name in ("memory.events", "memory.oom_control"):
        try:
            with open(os.path.join(cgroup, name)) as f:
                for line in f:
                    k, _, v = line.partition(" ")
                    if k == "oom_kill":
                        return int(v)
        except (OSError, ValueError):
            continue
    return 0


def remove_cgroup(cgroup: str) -> None:
    for _ in range(50):
        try:
            os.rmdir(cgroup)
            return
        except OSError as e:
            if e.errno == errno.ENOENT:
                return
            time.sleep(0.02)


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


# --- the watch: what needs an eye on a running job ------------------------------------------------------------------

class Watch:
    """A thread per running attempt with faults to apply while it runs: the preemption, and the disk and memory
    limits this machine cannot make real. ``stop`` is the attempt's own stop (the executor's stop path)."""

    POLL_S = 0.1

    def __init__(self, faults: FaultSpec, stop: Callable[[StopRequest], None], log: Callable[[str], None], *,
                 work: str = "", disk_bytes: int = 0, memory_bytes: int = 0, pids: Callable[[], list] = list,
                 elapsed_s: float = 0.0):
        """``elapsed_s``: how long the job ran before this watch (a re-adopted one: preempt-after counts from the
        job's start, not from the restart)."""
        self.faults, self._stop, self.log, self.elapsed_s = faults, stop, log, elapsed_s
        self.work, self.disk_bytes, self.memory_bytes, self.pids = work, disk_bytes, memory_bytes, pids
        self.done = threading.Event()
        self.fired: Optional[StopRequest] = None
        self._thread = threading.Thread(target=self._run, name="dsjobs-faults", daemon=True)

    @property
    def needed(self) -> bool:
        return bool(self.faults.preempt_after_s is not None or self.disk_bytes or self.memory_bytes)

    def start(self) -> "Watch":
        if self.needed:
            self._thread.start()
        return self

    def close(self) -> None:
        self.done.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _fire(self, request: StopRequest, line: str) -> None:
        if self.fired is None:
            self.fired = request
            self.log(line)
            self._stop(request)

    def _run(self) -> None:
        start = time.monotonic() - self.elapsed_s
        preempt = self.faults.preempt_after_s
        while not self.done.wait(self.POLL_S if preempt is None else
                                 max(0.0, min(self.POLL_S, start + preempt - time.monotonic()))):
            if self.fired is not None:
                return
            if preempt is not None and time.monotonic() - start >= preempt:
                self._fire(StopRequest(9, 0.0, PREEMPTED, kind="preempted"),
                           f"injected fault: preempt-after={preempt:g}s: the job's machine is lost now")
                return
            if self.disk_bytes and tree_bytes(self.work) > self.disk_bytes:
                why = (f"no space left on device: the job's working directory reached {_mb(self.disk_bytes)} "
                       "(injected fault disk-full-at)")
                self._fire(StopRequest(9, 0.0, why, kind="storage"), f"injected fault: disk-full-at: {why}")
                return
            if self.memory_bytes:
                used = sum(_rss(p) for p in self.pids())
                if used > self.memory_bytes:
                    self._fire(StopRequest(9, 0.0, f"out of memory: {_mb(used)} resident, over the limit of "
                                                   f"{_mb(self.memory_bytes)}", kind="oom"),
                               f"injected fault: oom: the job uses {_mb(used)}, over {_mb(self.memory_bytes)}: "
                               "killed")
                    return


PREEMPTED = ("the job's machine was lost during the run (preempted, injected fault preempt-after): its processes "
             "were killed and its outputs are gone; run the job again")
