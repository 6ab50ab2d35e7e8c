"""Docker images and a private registry for the tests, all made on this machine (no public registry is reachable).

- dsjobs-test/shell:2: busybox-static and bash-static from Debian in an empty root (2 MB, instant);
- dsjobs-test/python:1: a debootstrap'ed Debian with python3 (built once, ~80 s, reused while it exists);
- a registry from Debian's docker-registry package with htpasswd auth on 127.0.0.1.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

SHELL_IMAGE = "dsjobs-test/shell:2"
PYTHON_IMAGE = "dsjobs-test/python:1"
APPLETS = ("sh cat echo ls mkdir rm cp mv sleep true false env id wc tr head tail sort grep sed printf test touch "
           "kill date seq dd yes chmod ln pwd uname basename dirname xargs find stat nc wget timeout").split()


def docker(*args, check=True, **kw):
    return subprocess.run(["docker", *args], check=check, capture_output=True, text=True, **kw)


def image_exists(name: str) -> bool:
    return docker("image", "inspect", name, check=False).returncode == 0


def _import(root: Path, name: str) -> None:
    with tempfile.NamedTemporaryFile(suffix=".tar") as t:
        with tarfile.open(t.name, "w") as tar:
            tar.add(root, arcname=".")
        docker("import", t.name, name)


def shell_image() -> str:
    if not image_exists(SHELL_IMAGE):
        with tempfile.TemporaryDirectory() as d:
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
    if not image_exists(PYTHON_IMAGE):
        with tempfile.TemporaryDirectory() as d:
            root = Path(d) / "root"
            mirror = "http://deb.debian.org/debian"
            subprocess.run(["debootstrap", "--variant=minbase", "--include=python3-minimal,python3-venv", "bookworm",
                            str(root), mirror], check=True, capture_output=True, timeout=900)
            _import(root, PYTHON_IMAGE)
    return PYTHON_IMAGE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """docker-registry with htpasswd auth on 127.0.0.1; ``push`` logs in, pushes, logs out and drops the tag."""

    def __init__(self, root: Path, user: str, password: str):
        self.root, self.user, self.password = root, user, password
        self.port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        htpasswd = subprocess.run(["htpasswd", "-Bbn", user, password], check=True, capture_output=True, text=True)
        (root / "htpasswd").write_text(htpasswd.stdout)
        (root / "config.yml").write_text(f"""version: 0.1
storage:
  filesystem:
    rootdirectory: {root / 'data'}
http:
  addr: 127.0.0.1:{self.port}
auth:
  htpasswd:
    realm: dsjobs-test
    path: {root / 'htpasswd'}
""")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("registry did not start")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def push(self, local: str, name: str) -> str:
        ref = f"{self.host}/{name}"
        docker("tag", local, ref)
        subprocess.run(["docker", "login", "-u", self.user, "--password-stdin", self.host], input=self.password,
                       check=True, capture_output=True, text=True)
        try:
            docker("push", ref)
        finally:
            docker("logout", self.host, check=False)
            docker("rmi", ref, check=False)
        return ref

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
