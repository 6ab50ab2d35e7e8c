from __future__ import annotations

from pathlib import Path

import pytest

from dsjobs.client import Client
from engine.api.server import start_grpc
from engine.app import build_engine
from engine.config import EngineConfig
from tests.helpers import work_dir
from tests.dockerenv import registry, registry_service  # noqa: F401  (the private registry service)

pytest_plugins = ["pytester"]


# Tests that bound a latency they measure under a load they make themselves (500 log followers, p99 < 250 ms):
# `make test` runs them after the parallel part, one at a time, so other workers' tests are not in their figures.
ALONE = {"test_500_log_followers_leave_get_list_and_cancel_fast"}


def on_ray(item) -> bool:
    """Whether a test runs on the session's Ray cluster (test_ray.py; test_spine.py's ``ray`` backend, whose
    cluster comes by getfixturevalue)."""
    params = getattr(item, "callspec", None) and item.callspec.params
    return ("ray_cluster" in item.fixturenames or item.get_closest_marker("ray") is not None
            or (params or {}).get("backend") == "ray")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    # `make test` (--dist loadgroup): the tests on the Ray cluster in one xdist group, run on one worker one after
    # another: a cluster per worker would be two more Ray heads and nodes on a two-core machine, and these tests
    # restart and kill its nodes. xdist sends the largest group out first, so this one starts at once.
    for item in items:
        if on_ray(item):
            item.add_marker(pytest.mark.xdist_group("ray"))
        if getattr(item, "originalname", item.name) in ALONE:
            item.add_marker(pytest.mark.serial)
    xdist_groups_into_ids(config, items)


def pytest_runtest_setup(item):
    # A Ray test's engine stops beside the next test (tests/raycluster.py): the last of them is waited for, and
    # checked, before a test that is not on Ray runs in this process.
    if not on_ray(item):
        from tests.raycluster import RayCluster
        for cluster in list(RayCluster.live):
            cluster.settle()


def xdist_groups_into_ids(config, items) -> None:
    """xdist 3.8 groups a test by suffixing its id with its xdist_group (item._nodeid = "...@group"), which pytest
    9.2's nodes no longer read (their id is item._id): without this, xdist_group marks group nothing and every
    worker would start a Ray cluster of its own. The same suffix, where pytest 9.2 reads it."""
    if not getattr(config.option, "loadgroup", False) or not items or not hasattr(items[0], "_id"):
        return  # not an xdist worker under --dist loadgroup, or a pytest whose ids xdist sets itself
    from _pytest.nodeid import NodeId
    for item in items:
        groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                         for m in item.iter_markers("xdist_group")})
        if groups and "@" not in item.nodeid:
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(groups)}")


class Server:
    """A real engine with its real gRPC server on loopback, restartable on the same data dir."""

    def __init__(self, data_dir, **cfg):
        self.data_dir, self.cfg = data_dir, cfg
        self.start()

    def start(self):
        self.engine = build_engine(EngineConfig(data_dir=self.data_dir, **self.cfg)).start()
        self.grpc, self.port = start_grpc(self.engine, "127.0.0.1:0")
        self.client = Client(f"127.0.0.1:{self.port}", token=self.engine.token)
        return self

    def stop(self, stop_jobs: bool = True):
        self.client.close()
        self.grpc.stop(0).wait()
        self.engine.stop(stop_jobs=stop_jobs)

    def restart(self):
        self.stop(stop_jobs=False)
        return self.start()

    def work_dir(self, job_id: str) -> Path:
        """The job's working directory where it runs (the engine's data dir, or a Ray node's dir): the one place
        a confined job and its test both see."""
        if self.cfg.get("backend") == "ray":
            attempt = self.engine.store.attempts(job_id=job_id)[-1]
            return Path(self.cfg["ray_node_dir"]) / "runs" / attempt.id / "work"
        return work_dir(self.data_dir, job_id)


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "data", max_concurrent_jobs=4)
    yield s
    s.stop()


@pytest.fixture
def client(server):
    return server.client


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A real two-node Ray cluster on loopback (tests/raycluster.py), started once for the session."""
    from tests.raycluster import RayCluster
    cluster = RayCluster(tmp_path_factory.mktemp("ray"))
    try:
        cluster.start()
    except BaseException:
        cluster.stop()  # a head whose second node did not come up is not left running
        raise
    try:
        yield cluster
        cluster.settle()
        left = [j["submission_id"] for j in cluster.jobs() if str(j.get("submission_id")).startswith("dsjobs-")]
        assert not left, f"Ray jobs left behind at the session's end: {left}"
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def indexes(tmp_path_factory):
    """Package indexes served by the tests (tests/pyindex.py): a, b (a second index) and a TLS one."""
    from tests.pyindex import Index
    root = tmp_path_factory.mktemp("indexes")
    a, b, tls = Index(root / "a"), Index(root / "b"), Index(root / "tls", tls=True)
    a.add("dsj-beta", "1.0")
    a.add("dsj-alpha", "1.0", deps=["dsj-beta"])
    a.add("dsj-tool", "1.0", code="def main():\n    print('tool says hi')\n", scripts={"dsj-tool": "dsj_tool:main"})
    a.add("dsj-shared", "1.0")
    b.add("dsj-gamma", "1.0")
    b.add("dsj-shared", "2.0")  # on both indexes: the best version across them wins, as with pip
    tls.add("dsj-secure", "1.0")
    yield a, b, tls
    for i in (a, b, tls):
        i.close()
