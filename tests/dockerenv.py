"""Docker images and a private registry for the tests, all made on this machine (no public registry is reachable).

- dsjobs-test/shell:2: busybox-static and bash-static from Debian in an empty root (2 MB, instant);
- dsjobs-test/python:1: a debootstrap'ed Debian with python3 (built once, ~80 s, reused while it exists);
- dsjobs-test/registry:2: Debian's docker-registry binary and the libraries it links, as a compose service
  (tests/compose/registry.yml) started through pytest-docker, one per test session (per xdist worker); each test
  that asks for the ``registry`` fixture gets accounts of its own on it.

Images are built once per machine: a build takes a lock, so parallel workers (pytest-xdist) or runs build it once.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest
import requests

SHELL_IMAGE = "dsjobs-test/shell:2"
PYTHON_IMAGE = "dsjobs-test/python:1"
REGISTRY_IMAGE = "dsjobs-test/registry:2"  # named in tests/compose/registry.yml
REGISTRY_COMPOSE = Path(__file__).resolve().parent / "compose" / "registry.yml"
# Debian 12 has compose v1 only (the docker-compose package); pytest-docker's default, `docker compose`, is v2.
COMPOSE = shutil.which("docker-compose") or "/usr/bin/docker-compose"
APPLETS = ("sh cat echo ls mkdir rm cp mv sleep true false env id wc tr head tail sort grep sed printf test touch "
           "kill date seq dd yes chmod ln pwd uname basename dirname xargs find stat nc wget timeout").split()


def docker(*args, check=True, **kw):
    return subprocess.run(["docker", *args], check=check, capture_output=True, text=True, **kw)


def image_exists(name: str) -> bool:
    return docker("image", "inspect", name, check=False).returncode == 0


@contextlib.contextmanager
def build_lock(name: str):
    """One build of ``name`` at a time on this machine: xdist workers wait for the first one's image."""
    path = Path(tempfile.gettempdir()) / ("dsjobs-image-" + re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".lock")
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _import(root: Path, name: str, *changes: str) -> None:
    with tempfile.NamedTemporaryFile(suffix=".tar") as t:
        with tarfile.open(t.name, "w") as tar:
            tar.add(root, arcname=".")
        docker("import", *[a for c in changes for a in ("--change", c)], t.name, name)


def image_label(name: str, label: str) -> str | None:
    """The image's label, or None when there is no such image."""
    r = docker("image", "inspect", "-f", f'{{{{index .Config.Labels "{label}"}}}}', name, check=False)
    return r.stdout.strip() if r.returncode == 0 else None


def shell_image() -> str:
    if image_exists(SHELL_IMAGE):
        return SHELL_IMAGE
    with build_lock(SHELL_IMAGE), tempfile.TemporaryDirectory() as d:
        if not image_exists(SHELL_IMAGE):
            root = Path(d)
            for sub in ("bin", "tmp", "etc"):
                (root / sub).mkdir()
            os.chmod(root / "tmp", 0o1777)
            shutil.copy("/bin/busybox", root / "bin" / "busybox")
            shutil.copy("/bin/bash-static", root / "bin" / "bash")
            for a in APPLETS:
                os.symlink("busybox", root / "bin" / a)
            (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\njupyter:x:1000:1000::/tmp:/bin/sh\n")
            (root / "etc" / "group").write_text("root:x:0:\njupyter:x:1000:\n")
            _import(root, SHELL_IMAGE)
    return SHELL_IMAGE


def python_image() -> str:
    if image_exists(PYTHON_IMAGE):
        return PYTHON_IMAGE
    with build_lock(PYTHON_IMAGE), tempfile.TemporaryDirectory() as d:
        if not image_exists(PYTHON_IMAGE):
            root = Path(d) / "root"
            mirror = "http://deb.debian.org/debian"
            subprocess.run(["debootstrap", "--variant=minbase", "--include=python3-minimal,python3-venv", "bookworm",
                            str(root), mirror], check=True, capture_output=True, timeout=900)
            _import(root, PYTHON_IMAGE)
    return PYTHON_IMAGE


def _linked(binary: Path) -> list[Path]:
    """The shared libraries and loader ``binary`` links, as ldd names them (none for a static binary)."""
    r = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    return [Path(m) for m in re.findall(r"(/\S+) \(0x", r.stdout)] if r.returncode == 0 else []


def registry_image() -> str:
    """REGISTRY_IMAGE: /usr/bin/docker-registry and what it links, nothing else. Built again when any of those files
    changes (an apt upgrade): their hash is the image's dsjobs.recipe label."""
    binary = Path(shutil.which("docker-registry") or "/usr/bin/docker-registry")
    files = [binary, *_linked(binary)]
    recipe = hashlib.sha256(b"".join(str(f).encode() + hashlib.sha256(f.read_bytes()).digest()
                                     for f in files)).hexdigest()[:16]
    if image_label(REGISTRY_IMAGE, "dsjobs.recipe") == recipe:
        return REGISTRY_IMAGE
    with build_lock(REGISTRY_IMAGE), tempfile.TemporaryDirectory() as d:
        if image_label(REGISTRY_IMAGE, "dsjobs.recipe") != recipe:
            root = Path(d)
            for f in files:  # at the paths the binary names (the loader's /lib64 path included), contents followed
                dest = root / str(f).lstrip("/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, dest)
            (root / "tmp").mkdir(mode=0o1777)
            _import(root, REGISTRY_IMAGE, f"LABEL dsjobs.recipe={recipe}")
    return REGISTRY_IMAGE


def reap_compose_projects(prefix: str) -> None:
    """Containers and networks of compose projects named ``prefix<pid>`` whose pid is gone: a run killed before its
    teardown leaves them, and each leaked network holds one of the Engine's few address pools."""
    label = "com.docker.compose.project"
    found = {}
    for kind in ("container", "network"):
        listing = docker(kind, "ls", *(["-a"] if kind == "container" else []), "--filter", f"label={label}",
                         "--format", f'{{{{.ID}}}} {{{{.Label "{label}"}}}}').stdout
        for line in listing.splitlines():
            ident, _, project = line.partition(" ")
            found.setdefault(project, {}).setdefault(kind, []).append(ident)
    for project, parts in found.items():
        pid = project[len(prefix):]
        if not project.startswith(prefix) or not pid.isdigit() or _alive(int(pid)):
            continue
        if parts.get("container"):
            docker("rm", "-f", "-v", *parts["container"], check=False)
        if parts.get("network"):
            docker("network", "rm", *parts["network"], check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


REGISTRY_CONFIG = """version: 0.1
storage:
  filesystem:
    rootdirectory: /var/lib/docker-registry
http:
  addr: 0.0.0.0:5000
auth:
  htpasswd:
    realm: dsjobs-test
    path: /etc/docker-registry/auth/htpasswd
"""


class Registry:
    """The session's private registry: REGISTRY_IMAGE as the compose service of tests/compose/registry.yml, started
    and stopped with pytest-docker (``up -d`` / ``down -v``) under Debian's docker-compose v1, as the project
    ``dsjobs-registry-<pid>`` (one per xdist worker). Its port is the one docker-proxy publishes on 127.0.0.1."""

    PROJECT_PREFIX = "dsjobs-registry-"

    def __init__(self, root: Path):
        from pytest_docker.plugin import DockerComposeExecutor
        self.root = root
        (root / "auth").mkdir(parents=True, exist_ok=True)
        (root / "config.yml").write_text(REGISTRY_CONFIG)
        self._htpasswd: dict[str, str] = {}
        self._mtime_ns = 0
        self._write_htpasswd()
        (root / "compose.env").write_text(f"REGISTRY_DIR={root}\n")
        self.project = f"{self.PROJECT_PREFIX}{os.getpid()}"
        self.command = f"{shlex.quote(COMPOSE)} --env-file {shlex.quote(str(root / 'compose.env'))}"
        self.compose = DockerComposeExecutor(self.command, str(REGISTRY_COMPOSE), self.project)
        self._http = requests.Session()
        self._http.trust_env = False  # never through a proxy from the environment
        self._stack = contextlib.ExitStack()

    def start(self) -> "Registry":
        from pytest_docker.plugin import get_docker_services
        registry_image()
        reap_compose_projects(self.PROJECT_PREFIX)
        try:
            self.services = self._stack.enter_context(get_docker_services(
                self.command, str(REGISTRY_COMPOSE), self.project, ["up -d"], ["down -v"]))
        except Exception:
            self.compose.execute("down -v", success_codes=range(256))  # what a failed `up` made
            raise
        try:
            self.port = self.services.port_for("registry", 5000)
            # docker-proxy accepts TCP before the registry listens: the answer to /v2/ is the sign it is up.
            self.services.wait_until_responsive(self._answers, timeout=30, pause=0.05)
        except Exception as e:
            logs = self.compose.execute("logs --no-color", success_codes=range(256)).decode(errors="replace")
            self.close()
            raise RuntimeError(f"the registry service did not answer: {e}\n{logs}") from e
        return self

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _answers(self, auth: tuple[str, str] | None = None, status: int = 401) -> bool:
        try:
            r = self._http.get(f"http://{self.host}/v2/", auth=auth, timeout=2)
        except requests.RequestException:
            return False
        return r.status_code == status and "Docker-Distribution-Api-Version" in r.headers

    def _write_htpasswd(self) -> None:
        # Replaced whole by a rename, with an mtime always past the last one: the registry reloads the file when
        # its mtime differs from what it read, and two writes in one clock tick would otherwise look the same.
        path = self.root / "auth" / "htpasswd"
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in self._htpasswd.values()))
        self._mtime_ns = max(os.stat(tmp).st_mtime_ns, self._mtime_ns + 1_000_000)
        os.utime(tmp, ns=(self._mtime_ns, self._mtime_ns))
        os.replace(tmp, path)

    def account(self, user: str, password: str) -> "RegistryAccount":
        """An account on the registry (replacing any of that name), usable once the registry has reloaded."""
        line = subprocess.run(["htpasswd", "-Bin", user], input=password, check=True, capture_output=True,
                              text=True).stdout.strip()
        self._htpasswd[user] = line
        self._write_htpasswd()
        self.services.wait_until_responsive(lambda: self._answers((user, password), 200), timeout=10, pause=0.05)
        return RegistryAccount(self, user, password)

    def drop(self, user: str) -> None:
        if self._htpasswd.pop(user, None) is not None:
            self._write_htpasswd()

    def forget_pulled_images(self) -> None:
        """Untag what the Engine holds from this registry (pulls by jobs and by tests), so no ``127.0.0.1:PORT/...``
        tag outlives the registry that served it."""
        refs = docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
        mine = [r for r in refs if r.startswith(self.host + "/")]
        if mine:
            docker("rmi", *mine, check=False)

    def close(self) -> None:
        self.forget_pulled_images()
        self._stack.close()


class RegistryAccount:
    """One user on the session's registry; ``push`` logs in, pushes, logs out and drops the tag."""

    def __init__(self, registry: Registry, user: str, password: str):
        self.registry, self.user, self.password = registry, user, password

    @property
    def host(self) -> str:
        return self.registry.host

    def push(self, local: str, name: str) -> str:
        ref = f"{self.host}/{name}"
        # A client config of the registry's own: the login is never in ~/.docker/config.json, where logins of
        # parallel workers would overwrite each other.
        config = ("--config", str(self.registry.root / "docker-config"))
        docker("tag", local, ref)
        subprocess.run(["docker", *config, "login", "-u", self.user, "--password-stdin", self.host],
                       input=self.password, check=True, capture_output=True, text=True)
        try:
            docker(*config, "push", ref)
        finally:
            docker(*config, "logout", self.host, check=False)
            docker("rmi", ref, check=False)
        return ref


@pytest.fixture(scope="session")
def registry_service(tmp_path_factory):
    """The private registry of this session (of this xdist worker), started on first use."""
    reg = Registry(tmp_path_factory.mktemp("registry")).start()
    yield reg
    reg.close()


@pytest.fixture
def registry(registry_service):
    """``registry(user, password)``: an account of this test's own on the session's registry. At the end of the test
    its accounts are gone and so are the images the Engine pulled from the registry."""
    made = []

    def account(user: str, password: str) -> RegistryAccount:
        made.append(registry_service.account(user, password))
        return made[-1]
    yield account
    for a in made:
        registry_service.drop(a.user)
    registry_service.forget_pulled_images()
