"""Python environments for jobs: interpreters found on the machine, envs built once per content hash, and a thin
per-job layer so that nothing a job installs at run time reaches the cached env.

Layout under the cache root: ``<key>/`` is a virtualenv; ``<key>.json`` (its description, written by the engine
once the build succeeded: a build that failed or was interrupted is removed), ``<key>.used`` (its last use) and
``<key>.lock`` (one builder per key) sit beside it, never inside: what a build leaves in its env is untrusted
(package setup code ran there), so the engine writes nothing into it and derives no path from it. Envs and uv's
download cache are kept per project, so that a package's build code in one project can never change what another
project's jobs run.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from runners.fsops import chown_tree, rmtree, tree_size
from runners.journal import printable
from runners.sandbox import engine_paths, python_prefix
from runners.spec import FailureKind, JobFailure, PythonSpec

FORMAT = 2  # bump when the layout of a built env changes
_VERSION_CACHE: dict[tuple[str, float], str] = {}


class EnvError(JobFailure):
    """The environment cannot be built (ENV_BUILD_FAILED unless another kind says more)."""

    def __init__(self, message: str, kind: FailureKind = FailureKind.ENV_BUILD_FAILED):
        super().__init__(kind, message)


@dataclass(frozen=True)
class Interpreter:
    version: str  # major.minor
    full: str  # e.g. 3.12.1
    path: str


def _full_version(path: str) -> Optional[str]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (os.path.realpath(path), st.st_mtime)
    if key not in _VERSION_CACHE:
        try:
            out = subprocess.run([path, "-I", "-S", "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                                 capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if out.returncode != 0 or not re.fullmatch(r"\d+\.\d+\.\d+", out.stdout.strip()):
            return None
        _VERSION_CACHE[key] = out.stdout.strip()
    return _VERSION_CACHE[key]


def _stamp(path: str):
    """What ``path`` resolves to (links followed), by device, inode and ctime: a chmod, or a rewrite in place
    whose mtime was put back (``cp -p``), changes the ctime too, and nothing sets it back."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_ctime_ns


# What discover listed and found. PATH's directories are listed again only when one changed (by inode and ctime):
# listing them and matching their thousands of names took ~7 ms of every Python-env job's preparation here. What was
# found is kept while every candidate still resolves to the same file (a link retargeted outside PATH, as by
# update-alternatives, is seen). Nothing is kept from a look younger than a timestamp tick could hide a change in.
_LISTED: dict[tuple, list[str]] = {}
_DISCOVERED: dict[tuple, dict[str, Interpreter]] = {}
_RACY_NS = 2_000_000_000  # a change this recent may be followed by another within the same timestamp tick


def _settled(stamps) -> bool:
    recent = time.time_ns() - _RACY_NS
    return all(st is None or st[2] < recent for st in stamps)


def discover(extra: tuple[str, ...] = ()) -> dict[str, Interpreter]:
    """major.minor -> interpreter: configured paths first, then PATH, then pyenv's versions directory."""
    dirs = tuple(d for d in os.environ.get("PATH", "").split(os.pathsep)
                 if d and "/shims" not in d)  # pyenv shims are scripts that pick a version themselves
    dir_stamps = tuple(_stamp(d) for d in dirs)
    listed = _LISTED.get((dirs, dir_stamps))
    if listed is None:
        listed = []
        for d in dirs:
            try:
                names = sorted(os.listdir(d))
            except OSError:
                continue
            listed += [os.path.join(d, n) for n in names if re.fullmatch(r"python3(\.\d+)?", n)]
        _LISTED.clear()
        if _settled(dir_stamps):
            _LISTED[(dirs, dir_stamps)] = listed
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    versions_dir = os.path.join(pyenv_root, "versions")
    try:
        versions = sorted(os.listdir(versions_dir))  # a few names: listed every time
    except OSError:
        versions = []
    candidates = [*extra, *listed, *(os.path.join(versions_dir, v, "bin", "python" + ".".join(v.split(".")[:2]))
                                     for v in versions if re.fullmatch(r"3\.\d+\.\d+", v))]
    stamps = tuple(_stamp(c) for c in candidates)  # of what each resolves to: a retargeted link shows another
    key = (tuple(candidates), stamps)
    hit = _DISCOVERED.get(key)
    if hit is not None:
        return dict(hit)
    found = _versions(candidates)
    _DISCOVERED.clear()
    if _settled(stamps):
        _DISCOVERED[key] = found
    return dict(found)


def _versions(candidates: list[str]) -> dict[str, Interpreter]:
    """major.minor -> the first of ``candidates`` that runs as that version."""
    found: dict[str, Interpreter] = {}
    seen: set[str] = set()
    for c in candidates:
        real = os.path.realpath(c)
        if real in seen or not os.access(real, os.X_OK):
            continue
        seen.add(real)
        full = _full_version(c)
        if full is None:
            continue
        mm = ".".join(full.split(".")[:2])
        found.setdefault(mm, Interpreter(mm, full, c))
    return found


def default_interpreter() -> Interpreter:
    path = getattr(sys, "_base_executable", None) or sys.executable
    if path == sys.executable and sys.prefix != sys.base_prefix:
        # In a venv, Python 3.10's _base_executable is the venv's own python (3.11+ name the base one): envs would
        # be made from the engine's venv and depend on it. Take the installation the venv was made from.
        base = os.path.join(sys.base_prefix, "bin", "python%d.%d" % sys.version_info[:2])
        path = base if os.access(base, os.X_OK) else os.path.realpath(path)
    full = "%d.%d.%d" % sys.version_info[:3]
    return Interpreter(full.rsplit(".", 1)[0], full, path)


def pick(version: str, extra: tuple[str, ...] = ()) -> Interpreter:
    if not version:
        return default_interpreter()
    found = discover(extra)
    if version not in found:
        raise EnvError(f"python_version {version} is not available on this machine "
                       f"(available: {', '.join(sorted(found, key=lambda v: tuple(map(int, v.split('.')))))})",
                       FailureKind.MISSING)
    return found[version]


# --- what shapes an env ------------------------------------------------------------------------------------------


@dataclass
class InstallSpec:
    requirements: list[str] = field(default_factory=list)
    index_url: str = ""
    extra_index_urls: list[str] = field(default_factory=list)
    trusted_hosts: list[str] = field(default_factory=list)
    no_deps: bool = False


def install_spec(env: PythonSpec, default_index: str = "", default_extra: tuple[str, ...] = ()) -> InstallSpec:
    """The pip options plus option lines of the requirements (``--no-deps``, ``--extra-index-url X``, ...), which
    apply to the whole install as they would on pip's command line."""
    spec = InstallSpec(index_url=env.index_url, extra_index_urls=list(env.extra_index_urls),
                       trusted_hosts=list(env.trusted_hosts), no_deps=env.no_deps)
    for line in env.requirements:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith("-"):
            spec.requirements.append(line)
            continue
        tokens = shlex.split(line)
        opt, _, inline = tokens[0].partition("=")
        value = inline or (tokens[1] if len(tokens) > 1 else "")
        if opt == "--no-deps":
            spec.no_deps = True
        elif opt in ("--extra-index-url",) and value:
            spec.extra_index_urls.append(value)
        elif opt in ("--trusted-host",) and value:
            spec.trusted_hosts.append(value)
        elif opt in ("--index-url", "-i") and value:
            spec.index_url = value
        else:
            raise EnvError(f"requirement line {line!r}: option not supported (use --no-deps, --index-url, "
                           "--extra-index-url or --trusted-host)", FailureKind.INVALID_INPUT)
    if not spec.index_url and default_index:
        spec.index_url = default_index
        spec.extra_index_urls = list(default_extra) + spec.extra_index_urls
    return spec


def env_key(interp: Interpreter, spec: InstallSpec, conda_yaml: str = "", image: str = "", project: str = "") -> str:
    shape = {"format": FORMAT, "python": interp.full, "requirements": spec.requirements, "index": spec.index_url,
             "extra": spec.extra_index_urls, "trusted": spec.trusted_hosts, "no_deps": spec.no_deps,
             "conda": conda_yaml, "platform": f"{sys.platform}-{platform.machine()}", "image": image,
             "project": project}
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:32]


# --- building ----------------------------------------------------------------------------------------------------


# Passed from the engine's environment to a build: certificates and proxies it may need to reach an index.
PASS_TO_BUILDS = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "http_proxy", "https_proxy", "no_proxy",
                  "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


def build_env(uv_cache: Path, spec: "InstallSpec", home: str, tmp: str, uv: bool) -> dict[str, str]:
    """A build's environment, made from scratch as on a fresh cloud machine: no engine variables, no tokens, no
    secrets, none of the host's pip or uv configuration; the index settings (which may carry the index's
    credentials) travel here rather than on a command line every local user can read."""
    env = {k: os.environ[k] for k in PASS_TO_BUILDS if k in os.environ}
    env.update(PATH="/usr/local/bin:/usr/bin:/bin", HOME=home, TMPDIR=tmp, LANG="C.UTF-8",
               PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1",
               UV_NO_CONFIG="1", UV_PYTHON_DOWNLOADS="never", UV_CACHE_DIR=str(uv_cache),
               VIRTUALENV_CONFIG_FILE=os.devnull)
    prefix = "UV" if uv else "PIP"
    if spec.index_url:
        env[f"{prefix}_INDEX_URL"] = spec.index_url
    if spec.extra_index_urls:
        env[f"{prefix}_EXTRA_INDEX_URL"] = " ".join(spec.extra_index_urls)
    if spec.trusted_hosts:
        env["UV_INSECURE_HOST" if uv else "PIP_TRUSTED_HOST"] = " ".join(spec.trusted_hosts)
    return env


def find_uv() -> Optional[str]:
    here = Path(sys.executable).parent / "uv"
    return str(here) if here.exists() else shutil.which("uv")


def _bundled_pip(version: str) -> Optional[str]:
    try:
        from virtualenv.seed.wheels.embed import get_embed_wheel
        w = get_embed_wheel("pip", version)
        return str(w.path) if w else None
    except Exception:  # noqa: BLE001 - an older/newer virtualenv layout: the job simply has no pip
        return None


# confine(argv, read-write paths, read-only paths) -> the argv that runs it confined (runners/sandbox.py).
Confine = Callable[[list[str], list[str], list[str]], list[str]]


class EnvCache:
    def __init__(self, root: Path, installer: str = "auto", build_timeout_s: float = 1800.0,
                 size_limit_bytes: int = 0, uv_cache: Optional[Path] = None, confine: Optional[Confine] = None):
        self.root = Path(root)
        self.confine = confine
        self.root.mkdir(parents=True, exist_ok=True)
        # uv's download/wheel cache is content-addressed and safe to share: across engines it saves the downloads.
        self.uv_cache = Path(uv_cache) if uv_cache else self.root / "uv-cache"
        self.uv = find_uv() if installer in ("auto", "uv") else None
        if installer == "uv" and self.uv is None:
            raise EnvError("installer uv was asked for but is not installed", FailureKind.MISSING)
        self.build_timeout_s = build_timeout_s
        self.size_limit_bytes = size_limit_bytes

    @property
    def installer(self) -> str:
        return "uv" if self.uv else "pip"

    def _run(self, argv: list[str], log: Callable[[str], None], deadline: float, tail: list[str],
             env: dict[str, str], rw: list[str], ro: list[str]) -> None:
        log("$ " + " ".join(shlex.quote(a) for a in argv))
        if self.confine is not None:
            argv = self.confine(argv, rw, ro)  # package setup code runs here: as confined as a job
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            for line in proc.stdout:
                line = line.rstrip("\n")
                tail.append(line)
                del tail[:-40]
                log("  " + printable(line))  # indented: package code's output, never a line of the engine's
                if time.monotonic() > deadline:
                    break
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait()
                raise EnvError(f"environment build took longer than its limit of {self.build_timeout_s:g}s",
                               FailureKind.DEADLINE)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait()
        if proc.returncode != 0:
            raise EnvError("environment build failed:\n" + "\n".join(tail[-20:]))

    def _build(self, d: Path, interp: Interpreter, spec: InstallSpec, log: Callable[[str], None],
               project: str = "") -> None:
        deadline = time.monotonic() + self.build_timeout_s
        tail: list[str] = []
        scratch = Path(tempfile.mkdtemp(prefix=f".build-{d.name}-", dir=self.root))
        uv_cache = self.uv_cache / (project or "_")  # one project's build code cannot poison another's downloads
        try:
            home, tmp = scratch / "home", scratch / "tmp"
            home.mkdir()
            tmp.mkdir()
            env = build_env(uv_cache, spec, str(home), str(tmp), uv=bool(self.uv))
            uv_cache.mkdir(parents=True, exist_ok=True)
            rw = [str(d), str(scratch), str(home), str(tmp), str(uv_cache)]
            ro = [python_prefix(interp.path), *engine_paths()]
            d.mkdir(parents=True, exist_ok=True)

            def run(argv: list[str]) -> None:
                self._run(argv, log, deadline, tail, env, rw, ro)
            if self.uv:
                run([self.uv, "venv", "--no-config", "--no-python-downloads", "--python", interp.path, str(d)])
                # No pip in the cached env: the job layer gets pip from virtualenv's bundled wheel (job_layer).
            else:
                run([sys.executable, "-m", "virtualenv", "--no-periodic-update", "--python", interp.path, str(d)])
            if not spec.requirements:
                return
            req = d / ".dsjobs-requirements.txt"
            req.write_text("\n".join(spec.requirements) + "\n")
            opts = ["--no-deps"] if spec.no_deps else []
            if self.uv:
                # pip picks the best version across all indexes; uv needs this to do the same.
                run([self.uv, "pip", "install", "--no-config", "--python", str(d / "bin" / "python"),
                     "--index-strategy", "unsafe-best-match", *opts, "-r", str(req)])
            else:
                run([str(d / "bin" / "python"), "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
                     *opts, "-r", str(req)])
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _marker(self, key: str, what: str) -> Path:
        return self.root / f"{key}.{what}"

    def complete(self, key: str) -> bool:
        return self._marker(key, "json").is_file()

    def _write_marker(self, key: str, what: str, text: str) -> None:
        # In the cache root, which no build can write: never a path a build could have planted a symlink at.
        tmp = self.root / f".{key}.{what}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, self._marker(key, what))

    def _used(self, key: str) -> None:
        """The env's last use is its ``used`` marker's mtime: touched in place at each use (a rewrite and rename
        of the marker cost ~1 ms of every Python-env job's start here)."""
        try:
            os.utime(self._marker(key, "used"), follow_symlinks=False)
        except OSError:
            self._write_marker(key, "used", str(time.time()))

    def touch(self, env: Path) -> None:
        """``env`` (one of this cache's) counts as used now: a sandbox made ahead of a job binds it."""
        if Path(env).parent == self.root and self.complete(Path(env).name):
            self._used(Path(env).name)

    def get(self, interp: Interpreter, spec: InstallSpec, log: Callable[[str], None], *, image: str = "",
            build: Optional[Callable[[Path], None]] = None, project: str = "") -> tuple[Path, bool]:
        """The env for this interpreter and spec, built if needed; returns (path, built_now). With ``image`` the
        env belongs to that image's Python and ``build`` makes it (inside a container). Envs are per project."""
        key = env_key(interp, spec, image=image, project=project)
        d = self.root / key
        if self.complete(key):
            self._used(key)
            return d, False
        with open(self.root / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per key; the others wait and reuse its env
            if self.complete(key):
                self._used(key)
                return d, False
            rmtree(str(d))  # a build that was interrupted
            log(f"building python environment {key[:12]} "
                + (f"in image {image}" if image else f"with {self.installer}") + f" (python {interp.full})")
            try:
                if build is not None:
                    d.mkdir(parents=True)
                    build(d)
                else:
                    self._build(d, interp, spec, log, project)
                if os.geteuid() == 0:
                    chown_tree(str(d), 0, 0)  # built as an unprivileged uid: from now on only the engine changes it
            except BaseException:
                rmtree(str(d))  # nothing half-built stays in the cache
                raise
            self._write_marker(key, "json", json.dumps({
                "python": interp.full, "python_path": interp.path, "requirements": spec.requirements,
                "index_url": spec.index_url, "extra_index_urls": spec.extra_index_urls, "no_deps": spec.no_deps,
                "built_at": time.time(), "installer": self.installer, "project": project, "image": image}))
            self._used(key)
        self.evict()
        return d, True

    # --- listing and pruning ----------------------------------------------------------------------------------

    def entries(self) -> list[dict]:
        out = []
        for marker in sorted(self.root.glob("*.json")):
            key = marker.name[:-len(".json")]
            try:
                meta = json.loads(marker.read_text())
            except (OSError, ValueError):
                meta = {}
            d = self.root / key
            out.append({"key": key, "path": str(d), "last_used": self._last_used(key), "size_bytes": tree_size(str(d)),
                        **meta})
        return out

    def _last_used(self, key: str) -> float:
        try:
            return os.lstat(self._marker(key, "used")).st_mtime
        except OSError:
            return 0.0

    def remove(self, key: str) -> None:
        with open(self.root / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._marker(key, "json").unlink(missing_ok=True)
            self._marker(key, "used").unlink(missing_ok=True)
            rmtree(str(self.root / key))

    def prune(self, older_than_s: Optional[float] = None, in_use_grace_s: float = 600.0) -> list[str]:
        """Remove envs unused for ``older_than_s``; then, over the size limit, the least recently used ones.
        An env used in the last ``in_use_grace_s`` is never removed by the size limit (a job may run in it)."""
        now, removed = time.time(), []
        entries = sorted(self.entries(), key=lambda e: e["last_used"])
        if older_than_s is not None:
            for e in list(entries):
                if now - e["last_used"] > older_than_s:
                    self.remove(e["key"])
                    removed.append(e["key"])
                    entries.remove(e)
        if self.size_limit_bytes:
            total = sum(e["size_bytes"] for e in entries)
            for e in entries:
                if total <= self.size_limit_bytes:
                    break
                if now - e["last_used"] < in_use_grace_s:
                    continue
                self.remove(e["key"])
                removed.append(e["key"])
                total -= e["size_bytes"]
        return removed

    def evict(self) -> list[str]:
        return self.prune(None) if self.size_limit_bytes else []


# --- the per-job layer -------------------------------------------------------------------------------------------


def job_layer(base: Path, dest: Path, interp: Interpreter) -> Path:
    """A tiny venv of the job's own over the cached ``base``: base packages are importable (a .pth), and what the
    job installs at run time (``pip install``, ``python -m pip``) lands here, never in the cached env. Its
    interpreter is ``interp``, the one the engine chose, whatever the cached env's own links say."""
    mm = interp.version
    site = base / "lib" / f"python{mm}" / "site-packages"
    if not site.is_dir() or site.is_symlink():
        raise EnvError(f"the cached environment {base.name} has no site-packages for python{mm}: rebuild it "
                       "(dsjobs env prune)")
    cfg = f"home = {os.path.dirname(interp.path)}\ninclude-system-site-packages = false\nversion = {interp.full}\n"
    if os.path.lexists(dest) and not _layer_of(dest, site, mm):
        rmtree(str(dest))  # made ahead over another env or Python (engine/warm.py): nothing of it may stay
    (dest / "bin").mkdir(parents=True, exist_ok=True)
    own_site = dest / "lib" / f"python{mm}" / "site-packages"
    own_site.mkdir(parents=True, exist_ok=True)
    (dest / "pyvenv.cfg").write_text(cfg)
    real = os.path.realpath(interp.path)
    for name in ("python", "python3", f"python{mm}"):
        (dest / "bin" / name).unlink(missing_ok=True)
        os.symlink(real, dest / "bin" / name)
    paths = [str(site)]
    if not (site / "pip").is_dir():
        # The job has pip, as in the cloud, from the wheel virtualenv bundles (pip runs from a wheel on sys.path).
        wheel = _bundled_pip(mm)
        if wheel:
            paths.append(wheel)
    (own_site / "_dsjobs_base.pth").write_text("\n".join(paths) + "\n")
    for name in ("pip", "pip3", f"pip{mm}"):
        script = dest / "bin" / name
        script.write_text(f"#!{dest / 'bin' / 'python'}\nimport sys\nfrom pip._internal.cli.main import main\n"
                          "sys.exit(main())\n")
        script.chmod(0o755)
    return dest


def _layer_of(dest: Path, site: Path, mm: str) -> bool:
    """Whether ``dest`` is a job layer over ``site`` for python ``mm`` and nothing else, to be made again in place
    (a sandbox made ahead binds it: the same directories keep its argv the job's own)."""
    try:
        if os.listdir(dest / "lib") != [f"python{mm}"]:
            return False
        pth = (dest / "lib" / f"python{mm}" / "site-packages" / "_dsjobs_base.pth").read_text()
    except OSError:
        return False
    return pth.splitlines()[:1] == [str(site)]


def _layer_paths(layer: Path) -> list[str]:
    pth = next((layer / "lib").glob("python*/site-packages/_dsjobs_base.pth"))
    return pth.read_text().splitlines()


def layer_base(layer: Path) -> Path:
    """The cached env a job layer sits on (named in its .pth)."""
    return Path(_layer_paths(layer)[0]).parent.parent.parent  # <base>/lib/pythonX.Y/site-packages


def layer_extras(layer: Path) -> list[str]:
    """What else a job layer's .pth puts on sys.path (pip's bundled wheel): a sandbox must show it."""
    return [p for p in _layer_paths(layer)[1:] if p]
