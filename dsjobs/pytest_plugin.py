"""pytest plugin (entry point ``pytest11: dsjobs``): the ``dsjobs`` fixture runs DataSphere jobs in tests.

    def test_train(dsjobs):
        result = dsjobs.run("jobs/train/config.yaml", args={"EPOCHS": "1"})
        assert result.return_code == 0
        assert result.outputs["model.pt"].exists()

One embedded engine per test session (temporary data dir); each test's jobs in a project of their own, outputs in
the test's ``tmp_path``; when a test fails, the logs of its jobs are attached to the report. Choose the runner
with ``@pytest.mark.dsjobs_runner("docker")`` or ``--dsjobs-runner``.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("dsjobs")
    group.addoption("--dsjobs-runner", choices=["auto", "process", "docker"], default="auto",
                    help="run jobs as the config says (auto), always as local processes, or always in Docker")
    group.addoption("--dsjobs-sandbox", choices=["bwrap", "none"], default="bwrap",
                    help="confine process jobs with bubblewrap (default), or run them unconfined where the machine "
                         "cannot (inside an ordinary Docker container, say)")


def pytest_configure(config):
    config.addinivalue_line("markers", "dsjobs_runner(name): run this test's jobs with the 'process' or 'docker' "
                                       "runner")
    config.addinivalue_line("markers", "dsjobs_faults(spec): inject the cloud's failures into this test's jobs "
                                       "(DSJOBS_FAULTS, e.g. 'no-capacity=c1.4,preempt-after=5s')")


class DSJobs:
    """What the ``dsjobs`` fixture gives a test."""

    def __init__(self, engine, tmp_path: Path, runner: str, project: str, faults: str = ""):
        self.engine, self.tmp_path, self.runner, self.project = engine, tmp_path, runner, project
        self.faults = faults
        self.results = []
        self._n = 0

    def run(self, config, **kw):
        from dsjobs.api import run_job
        self._n += 1
        kw.setdefault("output_dir", self.tmp_path if self._n == 1 else self.tmp_path / f"run{self._n}")
        kw.setdefault("project", self.project)
        if self.runner != "auto":
            kw.setdefault("runner", self.runner)
        if self.faults:  # the marker's faults, under the job's own (an env given to run wins)
            kw["env"] = {"DSJOBS_FAULTS": self.faults, **(kw.get("env") or {})}
        result = run_job(config, engine=self.engine, **kw)
        self.results.append(result)
        return result


@pytest.fixture(scope="session")
def dsjobs_engine(tmp_path_factory, pytestconfig):
    from dsjobs.api import EmbeddedEngine
    engine = EmbeddedEngine(tmp_path_factory.mktemp("dsjobs-engine"),
                            sandbox=pytestconfig.getoption("--dsjobs-sandbox"))
    yield engine
    engine.close()


@pytest.fixture
def dsjobs(dsjobs_engine, tmp_path, request):
    marker = request.node.get_closest_marker("dsjobs_runner")
    runner = marker.args[0] if marker else request.config.getoption("--dsjobs-runner")
    project = "pytest-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]
    faults = request.node.get_closest_marker("dsjobs_faults")
    d = DSJobs(dsjobs_engine, tmp_path, runner, project, ",".join(faults.args) if faults else "")
    request.node._dsjobs = d
    return d


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    d = getattr(item, "_dsjobs", None)
    if d is None or not report.failed or call.when != "call":
        return
    for r in d.results:
        head = f"dsjobs job {r.job_id} ({r.status}, return code {r.return_code})"
        for name, text in (("stdout", r.stdout), ("stderr", r.stderr), ("system log", r.system_log)):
            if text:
                report.sections.append((f"{head} {name}", text))
