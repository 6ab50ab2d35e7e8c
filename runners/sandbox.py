"""Confinement of process jobs and environment builds with bubblewrap (Debian's ``bubblewrap``).

What a confined process sees: the system directories read-only (/usr, /bin, /lib*, /etc, /opt, /sys), a /proc of
its own (it is in a PID namespace of its own: it can neither see nor signal the engine or other jobs), a minimal
/dev, a private /tmp and HOME, and exactly the paths it was given: read-write (its working directory, its job
layer venv, its progress directory, the project disk) or read-only (its Python env and interpreters, mounts and
datasets). The engine's data dir and the real HOME are masked with an empty tmpfs before those paths are bound
back, so nothing else of them (the signing key, the database, other jobs, other projects' files and secrets, the
token) exists inside. A few root-only files of /etc are masked too, for engines that run as root.

Confined code never runs as root: when the engine is root, bwrap (as root, so that it can bind what only root can
reach) sets the sandbox up, and ``setpriv`` switches to an unprivileged uid (``nobody`` by default) before the job's
command, with no capabilities and no way to gain any. What the job may write is given to that uid first; /proc/sys
is read-only. A path that would show the job the hidden directories (``/`` itself, or an ancestor of the data dir
or of HOME) is refused outright, whatever asked for it.

The job's own processes get the signal: the two bwrap processes (the monitor and the namespace's init) are left
out of a graceful stop, and when the namespace's init dies the kernel kills whatever is left inside it.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Optional

from runners.spec import FailureKind, JobFailure

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
MASKED = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers", "/etc/sudoers.d",
          "/etc/ssh")
# What a user can do when the machine cannot confine jobs (named in the error), for each way of running jobs.
OPT_OUT = ("--sandbox none (dsjobs serve, dsjobs run), sandbox=\"none\" (dsjobs.run_job) or --dsjobs-sandbox none "
           "(the pytest plugin)")


class SandboxUnavailable(JobFailure):
    """bubblewrap is missing or cannot create namespaces here (an ordinary Docker container's seccomp profile)."""

    def __init__(self, message: str):
        super().__init__(FailureKind.SANDBOX_UNAVAILABLE, message)


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
    run_as: Optional[tuple[int, int]] = None  # (uid, gid) the command runs as; set when the engine is root


_FOUND: dict[str, str] = {}  # PATH -> the bwrap found on it, looked for again once it is no longer there


def find_bwrap(path: str = "") -> str:
    found = path
    if not found:
        key = os.environ.get("PATH", "")
        found = _FOUND.get(key, "")
        if not found or not os.access(found, os.X_OK):  # PATH's dirs walked at most when the last one went
            found = _FOUND[key] = shutil.which("bwrap") or ""
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
            # The system's directories as a job's sandbox binds them, not all of /: a recursive bind of / takes in
            # every mount of the machine, and failed on a Docker overlay being unmounted meanwhile (EINVAL).
            r = subprocess.run([bwrap, *_system_binds()[0], "--proc", "/proc", "--dev", "/dev", "--unshare-pid",
                                "--cap-drop", "ALL", "--", "true"], capture_output=True, text=True, timeout=20)
            err = None if r.returncode == 0 else (r.stderr.strip() or f"exit status {r.returncode}")
        except (OSError, subprocess.TimeoutExpired) as e:
            err = str(e)
        if err is not None:
            raise SandboxUnavailable(f"the job sandbox (bubblewrap) cannot start on this machine: {err}; "
                                     f"run process jobs unconfined with {OPT_OUT}")
        _WORKS.add(bwrap)
    return bwrap


_REAL: dict[str, tuple[tuple[int, int], str]] = {}
_REAL_MU = threading.Lock()


def _ident(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def real(path: str) -> str:
    """os.path.realpath of a path that seldom changes (an interpreter, the data dir, HOME, /etc/resolv.conf) in one
    stat: the walk (an lstat and readlink per component) is made again when the path names another file. Paths of
    a job are resolved in full, every time."""
    ident = _ident(path)
    if ident is None:
        return os.path.realpath(path)
    with _REAL_MU:
        hit = _REAL.get(path)
    if hit is not None and hit[0] == ident and _ident(hit[1]) == ident:  # (an inode number may be reused)
        return hit[1]
    resolved = os.path.realpath(path)
    with _REAL_MU:
        if len(_REAL) > 256:
            _REAL.clear()
        _REAL[path] = (ident, resolved)
    return resolved


def _resolv_conf_target() -> Optional[str]:
    """/etc/resolv.conf is often a symlink into /run (systemd-resolved): its target must be visible for DNS."""
    try:
        target = real("/etc/resolv.conf")
    except OSError:
        return None
    return target if not target.startswith("/etc/") and os.path.exists(target) else None


def unprivileged() -> Optional[tuple[int, int]]:
    """The (uid, gid) confined code runs as: None for an engine that is not root (it runs as the engine's user),
    ``nobody`` for a root engine."""
    if os.geteuid() != 0:
        return None
    try:
        import pwd
        pw = pwd.getpwnam("nobody")
        return pw.pw_uid, pw.pw_gid
    except (KeyError, ImportError):
        return 65534, 65534


def _refuse_revealing(sb: Sandbox) -> None:
    hidden = [real(h) for h in sb.hide if h]
    for p in sb.ro + sb.rw:
        shown = os.path.realpath(p)
        for h in hidden + ["/run"]:
            if shown == "/" or h == shown or h.startswith(shown.rstrip("/") + "/"):
                raise SandboxUnavailable(f"refusing to show {p} to a job: it would reveal {h if shown != '/' else '/'}"
                                         " (a dataset, a mount or an environment that points there?)")


def _depth(path: str) -> int:
    return len([c for c in os.path.normpath(path).split("/") if c])


def _ancestors(path: str) -> list[str]:
    parts, out = path.strip("/").split("/"), []
    for i in range(1, len(parts)):
        out.append("/" + "/".join(parts[:i]))
    return out


def _system_binds() -> tuple[list[str], list[str]]:
    """(bwrap arguments, directories bound): the system's directories, read-only, as every sandbox has them."""
    a, system = [], []
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            a += ["--symlink", os.readlink(d), d]  # merged /usr: /bin -> usr/bin
        elif os.path.isdir(d):
            a += ["--ro-bind", d, d]
            system.append(d)
    return a, system


def argv(bwrap: str, sb: Sandbox, command: list[str]) -> list[str]:
    _refuse_revealing(sb)
    a = [bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc", "--cap-drop", "ALL"]
    if sb.run_as is not None:
        a += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]  # for setpriv only, which drops them
    binds, system = _system_binds()
    a += binds
    resolv = _resolv_conf_target()
    if resolv:
        a += ["--ro-bind", resolv, resolv]
    a += ["--ro-bind", "/sys", "/sys", "--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys", "--dev", "/dev"]
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
    binds = [("--ro-bind", p) for p in sb.ro if os.path.exists(p)] + [("--bind", p) for p in sb.rw]
    # A later bind covers an earlier one below it: binds go outermost first, so a read-only dataset inside a
    # writable path (a project disk, say) stays read-only, and read-only wins over writable for the same path.
    binds.sort(key=lambda b: (_depth(b[1]), b[0] == "--ro-bind"))
    if sb.run_as is not None:
        # The directories above each bound path are made by bwrap (in a tmpfs, or in the job's /tmp): they must be
        # traversable by the unprivileged uid, as the real ones (the data dir, HOME) are not.
        made = []
        for _, p in binds:
            for anc in _ancestors(p):
                if anc not in made and not any(anc == d or anc.startswith(d + "/") for d in system):
                    made.append(anc)
        for anc in made:
            a += ["--perms", "0755", "--dir", anc]
    for flag, p in binds:
        a += [flag, p, p]
    if sb.chdir:
        a += ["--chdir", sb.chdir]
    if sb.run_as is not None:
        uid, gid = sb.run_as
        command = [_setpriv(), f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--inh-caps=-all",
                   "--no-new-privs", "--", *command]
    return a + ["--", *command]


@functools.lru_cache(maxsize=1)
def _setpriv() -> str:
    """setpriv by its path (the system dirs are the same inside): the job's PATH puts its own dirs first, and a
    search would try each of them, at every job's start."""
    return shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin") or "setpriv"


def give(paths: list[str], run_as: Optional[tuple[int, int]], tree: bool = False) -> None:
    """What confined code may write belongs to the uid it runs as (only when the engine is root)."""
    if run_as is None:
        return
    from runners.fsops import chown_tree
    for p in paths:
        if tree:
            chown_tree(p, *run_as)
        else:
            try:
                os.lchown(p, *run_as)
            except OSError:
                pass


def python_prefix(executable: str) -> str:
    """The installation an interpreter runs from (its bin/ and lib/): what a confined job needs to run it."""
    return os.path.dirname(os.path.dirname(real(executable)))


def job_sandbox(run_dir: str, work: str, *, rw: list[str] = (), ro: list[str] = (), hide: list[str] = (),
                devices: list[str] = (), python: str = "", rw_trees: list[str] = ()) -> Sandbox:
    """A job's sandbox: its working directory and ``rw`` read-write, ``ro`` read-only, a private HOME and /tmp
    in its run dir (on disk, as the cloud's are, rather than in memory). With ``python``, ``python`` and
    ``python3`` on the job's PATH are that interpreter (PATH entries such as pyenv's shims live in the hidden HOME).
    When the engine is root, the working directory and ``rw_trees`` (whole trees) and the other writable paths
    (themselves) are given to the unprivileged uid the job runs as."""
    home, tmp, bin_dir = (os.path.join(run_dir, x) for x in ("home", "tmp", "bin"))
    os.makedirs(home, mode=0o700, exist_ok=True)
    os.makedirs(tmp, exist_ok=True)
    os.chmod(tmp, 0o1777)  # a /tmp as a /tmp is: bwrap (root, without its capabilities) makes dirs in it too
    run_as = unprivileged()
    give([work, *rw_trees], run_as, tree=True)
    give([home, *rw], run_as)
    sb = Sandbox(rw=[work, home, *rw, *rw_trees], ro=list(ro), hide=list(hide), tmp=tmp, chdir=work,
                 devices=list(devices), home=home, run_as=run_as)
    if python:
        os.makedirs(bin_dir, exist_ok=True)
        os.chmod(bin_dir, 0o755)  # only links to the interpreter, and the job (nobody, under a root engine) runs them
        target = real(python)
        for name in ("python", "python3"):
            link = os.path.join(bin_dir, name)
            try:
                if os.readlink(link) == target:
                    continue
                os.unlink(link)  # made for another interpreter (a sandbox made ahead for another Python-env job)
            except FileNotFoundError:
                pass
            os.symlink(target, link)
        sb.ro += [bin_dir, python_prefix(python)]
        sb.path = [bin_dir]
    return sb


def confiner(bwrap: str, hide: list[str]):
    """confine(argv, rw, ro) for environment builds (runners/pyenv.py): package setup code runs as confined as a
    job, as the same unprivileged uid when the engine is root; what the build writes is only its env, its scratch
    dir and its project's download cache."""
    def confine(command: list[str], rw: list[str], ro: list[str]) -> list[str]:
        run_as = unprivileged()
        give(list(rw), run_as)
        sb = Sandbox(rw=list(rw), ro=list(ro), hide=list(hide), chdir=rw[0] if rw else "", run_as=run_as)
        return argv(check(bwrap), sb, command)
    return confine


def engine_paths() -> list[str]:
    """The installation the engine (or a node's agent) runs from: its venv and its base interpreter."""
    import sys
    return sorted({os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)})


def hidden_paths(data_dir) -> list[str]:
    """Masked in every sandbox: the engine's data dir and the real HOME (default data dir, caches, pyenv's state)."""
    return [real(str(data_dir)), real(os.path.expanduser("~"))]
