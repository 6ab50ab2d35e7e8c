"""Confinement of process jobs and environment builds with bubblewrap (Debian's ``bubblewrap``).

What a confined process sees: the system directories read-only (/usr, /bin, /lib*, /etc, /opt, /sys), a /proc of
its own (it is in a PID namespace of its own: it can neither see nor signal the engine or other jobs), a minimal
/dev, a private /tmp and HOME, and exactly the paths it was given: read-write (its working directory, its job
layer venv, its progress directory, the project disk) or read-only (its Python env and interpreters, mounts and
datasets). The engine's data dir and the real HOME are masked with an empty tmpfs before those paths are bound
back, so nothing else of them (the signing key, the database, other jobs, other projects' files and secrets, the
token) exists inside. A few root-only files of /etc are masked too, for engines that run as root.

The job's own processes get the signal: the two bwrap processes (the monitor and the namespace's init) are left
out of a graceful stop, and when the namespace's init dies the kernel kills whatever is left inside it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Optional

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
MASKED = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers", "/etc/sudoers.d",
          "/etc/ssh")
# What a user can do when the machine cannot confine jobs (named in the error), for each way of running jobs.
OPT_OUT = ("--sandbox none (dsjobs serve, dsjobs run), sandbox=\"none\" (dsjobs.run_job) or --dsjobs-sandbox none "
           "(the pytest plugin)")


class SandboxUnavailable(Exception):
    """bubblewrap is missing or cannot create namespaces here (an ordinary Docker container's seccomp profile)."""


@dataclass
class Sandbox:
    """The paths one confined process is given, beyond the system directories."""

    rw: list[str] = field(default_factory=list)
    ro: list[str] = field(default_factory=list)
    hide: list[str] = field(default_factory=list)  # masked with an empty tmpfs first (data dir, real HOME)
    tmp: str = ""  # the host directory that is /tmp inside; a tmpfs when empty
    chdir: str = ""
    devices: list[str] = field(default_factory=list)  # device nodes passed through (GPUs)
    path: list[str] = field(default_factory=list)  # directories to put first on the confined process's PATH
    home: str = ""


def find_bwrap(path: str = "") -> str:
    found = path or shutil.which("bwrap") or ""
    if not found or not os.access(found, os.X_OK):
        raise SandboxUnavailable(f"the job sandbox needs bubblewrap (bwrap), which is not installed"
                                 f"{f' at {path}' if path else ''}: install it (Debian: apt-get install bubblewrap), "
                                 f"or run process jobs unconfined with {OPT_OUT}")
    return found


_WORKS: set[str] = set()
_PROBE_MU = threading.Lock()


def check(path: str = "") -> str:
    """The bwrap to use, once it was seen to work here; raises SandboxUnavailable saying why and what to do.
    A failure is looked at again next time (it may have been fixed meanwhile); a success is never probed again."""
    bwrap = find_bwrap(path)
    with _PROBE_MU:
        if bwrap in _WORKS:
            return bwrap
        try:
            r = subprocess.run([bwrap, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--unshare-pid",
                                "--cap-drop", "ALL", "--", "true"], capture_output=True, text=True, timeout=20)
            err = None if r.returncode == 0 else (r.stderr.strip() or f"exit status {r.returncode}")
        except (OSError, subprocess.TimeoutExpired) as e:
            err = str(e)
        if err is not None:
            raise SandboxUnavailable(f"the job sandbox (bubblewrap) cannot start on this machine: {err}; "
                                     f"run process jobs unconfined with {OPT_OUT}")
        _WORKS.add(bwrap)
    return bwrap


def _resolv_conf_target() -> Optional[str]:
    """/etc/resolv.conf is often a symlink into /run (systemd-resolved): its target must be visible for DNS."""
    try:
        target = os.path.realpath("/etc/resolv.conf")
    except OSError:
        return None
    return target if not target.startswith("/etc/") and os.path.exists(target) else None


def argv(bwrap: str, sb: Sandbox, command: list[str]) -> list[str]:
    a = [bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc", "--cap-drop", "ALL"]
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            a += ["--symlink", os.readlink(d), d]  # merged /usr: /bin -> usr/bin
        elif os.path.isdir(d):
            a += ["--ro-bind", d, d]
    resolv = _resolv_conf_target()
    if resolv:
        a += ["--ro-bind", resolv, resolv]
    a += ["--ro-bind", "/sys", "/sys", "--proc", "/proc", "--dev", "/dev"]
    for dev in sb.devices:
        a += ["--dev-bind", dev, dev]
    for m in MASKED:
        if os.path.isdir(m) and not os.path.islink(m):
            a += ["--tmpfs", m]
        elif os.path.lexists(m):
            a += ["--ro-bind", "/dev/null", m]
    for h in sb.hide:
        if h and os.path.isabs(h) and h != "/":
            a += ["--tmpfs", h]
    a += ["--bind", sb.tmp, "/tmp"] if sb.tmp else ["--tmpfs", "/tmp"]
    for p in sb.ro:
        if os.path.exists(p):
            a += ["--ro-bind", p, p]
    for p in sb.rw:
        a += ["--bind", p, p]
    if sb.chdir:
        a += ["--chdir", sb.chdir]
    return a + ["--", *command]


def python_prefix(executable: str) -> str:
    """The installation an interpreter runs from (its bin/ and lib/): what a confined job needs to run it."""
    real = os.path.realpath(executable)
    return os.path.dirname(os.path.dirname(real))


def job_sandbox(run_dir: str, work: str, *, rw: list[str] = (), ro: list[str] = (), hide: list[str] = (),
                devices: list[str] = (), python: str = "") -> Sandbox:
    """A job's sandbox: its working directory and ``rw`` read-write, ``ro`` read-only, a private HOME and /tmp
    in its run dir (on disk, as the cloud's are, rather than in memory). With ``python``, ``python`` and
    ``python3`` on the job's PATH are that interpreter (PATH entries such as pyenv's shims live in the hidden HOME)."""
    home, tmp, bin_dir = (os.path.join(run_dir, x) for x in ("home", "tmp", "bin"))
    for d in (home, tmp):
        os.makedirs(d, mode=0o700, exist_ok=True)
    sb = Sandbox(rw=[work, home, *rw], ro=list(ro), hide=list(hide), tmp=tmp, chdir=work, devices=list(devices),
                 home=home)
    if python:
        os.makedirs(bin_dir, mode=0o700, exist_ok=True)
        for name in ("python", "python3"):
            link = os.path.join(bin_dir, name)
            if not os.path.lexists(link):
                os.symlink(os.path.realpath(python), link)
        sb.ro += [bin_dir, python_prefix(python)]
        sb.path = [bin_dir]
    return sb


def confiner(bwrap: str, hide: list[str]):
    """confine(argv, rw, ro) for environment builds (runners/pyenv.py): package setup code runs as confined as a
    job; what the build writes is only its env, its scratch dir and the download cache."""
    def confine(command: list[str], rw: list[str], ro: list[str]) -> list[str]:
        sb = Sandbox(rw=list(rw), ro=list(ro), hide=list(hide), chdir=rw[0] if rw else "")
        return argv(check(bwrap), sb, command)
    return confine


def engine_paths() -> list[str]:
    """The installation the engine (or a node's agent) runs from: its venv and its base interpreter."""
    import sys
    return sorted({os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)})


def hidden_paths(data_dir) -> list[str]:
    """Masked in every sandbox: the engine's data dir and the real HOME (default data dir, caches, pyenv's state)."""
    return [os.path.realpath(data_dir), os.path.realpath(os.path.expanduser("~"))]
