"""The job's service container for its tests: pytest-docker starts the database of ../docker-compose.yml once per
test process (``docker_services``), and ``database`` tells a test where it answers.

The fixtures below are pytest-docker's own, pointed at this example: its compose file, Debian's docker-compose
(v1: Debian 12 has no compose v2, pytest-docker's default), a project name per test process, and `up -d` (v1 has
no `--wait`; ``database`` waits for the server itself).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

EXAMPLE = Path(__file__).resolve().parent.parent
COMPOSE_FILE = EXAMPLE / "docker-compose.yml"
DB_IMAGE = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["db"]["image"]
# How the image is made. Its hash is the image's label: the image is built again only when this changes.
DB_RECIPE = {"suite": "bookworm", "variant": "minbase", "include": "postgresql-15",
             "mirror": "http://deb.debian.org/debian", "drop": ["var/cache/apt/archives", "var/lib/apt/lists",
                                                              "var/lib/postgresql/15", "etc/postgresql/15"]}


@pytest.fixture(scope="session")
def docker_compose_file():
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_compose_command():
    return shutil.which("docker-compose") or "/usr/bin/docker-compose"


@pytest.fixture(scope="session")
def docker_compose_project_name():
    return f"pgreport-{os.getpid()}"  # pytest-xdist: each worker its own containers, network and port


@pytest.fixture(scope="session")
def docker_setup(db_image):
    return ["up -d"]


@pytest.fixture(scope="session")
def dsjobs_engine(tmp_path_factory, pytestconfig, docker_services, docker_compose_project_name):
    """The `dsjobs` fixture's engine (the plugin's own, but for one setting): its job containers join the compose
    project's network, where a job in a container finds the service by its name. Process jobs do not need this."""
    from dsjobs.api import EmbeddedEngine
    engine = EmbeddedEngine(tmp_path_factory.mktemp("dsjobs-engine"),
                            sandbox=pytestconfig.getoption("--dsjobs-sandbox"),
                            docker_network=f"{docker_compose_project_name}_default")
    yield engine
    engine.close()


@dataclass
class Database:
    host: str
    port: int
    password: str

    @property
    def args(self) -> dict:
        """The job's arguments that point a process job at this database: the port Docker published on 127.0.0.1."""
        return {"DB_HOST": self.host, "DB_PORT": str(self.port)}

    # ... and a job in a container, on the project's network: the service's name and its own port.
    in_network = {"DB_HOST": "db", "DB_PORT": "5432"}


@pytest.fixture(scope="session")
def database(docker_services):
    db = Database("127.0.0.1", docker_services.port_for("db", 5432),
                  yaml.safe_load(COMPOSE_FILE.read_text())["services"]["db"]["environment"]["REPORTER_PASSWORD"])
    # docker-proxy takes connections before the server listens: a query that reads the table is the sign.
    docker_services.wait_until_responsive(lambda: _reads_orders(db), timeout=60, pause=0.2)
    return db


def _reads_orders(db: Database) -> bool:
    r = subprocess.run(["psql", "--no-psqlrc", "--no-password", "-h", db.host, "-p", str(db.port), "-U", "reporter",
                        "-d", "shop", "-tAc", "SELECT count(*) FROM orders"],
                       env={**os.environ, "PGPASSWORD": db.password}, capture_output=True, text=True, timeout=10)
    return r.returncode == 0


@pytest.fixture(scope="session")
def db_image():
    """PostgreSQL 15 from Debian's packages, built with debootstrap (this machine reaches Debian's mirror, not a
    Docker registry): about two minutes once, then reused while its recipe stays the same."""
    recipe = hashlib.sha256(json.dumps(DB_RECIPE, sort_keys=True).encode()).hexdigest()[:16]
    if _label(DB_IMAGE) == recipe:
        return DB_IMAGE
    lock = Path(tempfile.gettempdir()) / "dsjobs-examples-pgreport-db.lock"
    with open(lock, "a") as f, tempfile.TemporaryDirectory() as d:
        fcntl.flock(f, fcntl.LOCK_EX)  # one build at a time: other test processes wait for its image
        if _label(DB_IMAGE) == recipe:
            return DB_IMAGE
        root = Path(d) / "root"
        r = subprocess.run(["debootstrap", f"--variant={DB_RECIPE['variant']}", f"--include={DB_RECIPE['include']}",
                            DB_RECIPE["suite"], str(root), DB_RECIPE["mirror"]], capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, f"debootstrap failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}"
        for sub in DB_RECIPE["drop"]:  # downloaded .debs, apt lists, the cluster the package made: not needed
            shutil.rmtree(root / sub)
        tar = Path(d) / "root.tar"
        with tarfile.open(tar, "w") as t:
            t.add(root, arcname=".")
        subprocess.run(["docker", "import", "--change", f"LABEL dsjobs.recipe={recipe}", str(tar), DB_IMAGE],
                       check=True, capture_output=True)
    return DB_IMAGE


def _label(image: str) -> str | None:
    r = subprocess.run(["docker", "image", "inspect", "-f", '{{index .Config.Labels "dsjobs.recipe"}}', image],
                       capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None
