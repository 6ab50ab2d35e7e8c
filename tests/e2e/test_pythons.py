"""The client side on each Python dsjobs supports. `make test-pythons` runs this file, with the client tests, under
the oldest declared Python and the newest tested one (DSJOBS_TEST_PYTHON names the version it asked for); `make
test` runs it under the main one. Where Python versions differ, the engine a client starts behaves as on 3.11."""
from __future__ import annotations

import os
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

import dsjobs
from dsjobs.api import EmbeddedEngine
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
from tests.helpers import ROOT, ok, python_env, run

pytestmark = pytest.mark.e2e


def test_the_interpreter_is_the_one_asked_for():
    running = "%d.%d" % sys.version_info[:2]
    asked = os.environ.get("DSJOBS_TEST_PYTHON")
    if asked:  # set by `make test-pythons`: the venv really runs the Python it was made for
        assert running == asked, f"asked for Python {asked}, running {running} ({sys.executable})"
    floor = re.search(r'^requires-python = ">=(\d+)\.(\d+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert floor and sys.version_info[:2] >= tuple(map(int, floor.groups()))


def test_supervisors_of_an_embedded_engine_run_on_this_interpreter(tmp_path):
    (tmp_path / "config.yaml").write_text("cmd: readlink /proc/$PPID/exe > exe.txt\noutputs:\n  - exe.txt\n")
    eng = EmbeddedEngine(tmp_path / "data", sandbox="none")  # unconfined: the job's parent is its supervisor
    try:
        r = dsjobs.run_job(tmp_path / "config.yaml", engine=eng, output_dir=tmp_path / "out", timeout=60)
    finally:
        eng.close()
    assert r.return_code == 0, r.stderr
    assert r.outputs["exe.txt"].read_text().strip() == os.path.realpath(sys.executable)


def test_an_env_on_the_engines_own_python_is_made_from_its_installation(client):
    """python_version unset: the env is made from the installation this interpreter's venv came from (on 3.10 too,
    whose sys._base_executable is the venv's own python), so it does not depend on the engine's venv."""
    _, out = ok(client, "sed -n 's/^home = //p' $VIRTUAL_ENV/pyvenv.cfg; python -c 'import sys; print(sys.version)'",
                python_env(""))
    home, version = out.splitlines()[:2]
    assert Path(home).resolve() == Path(sys.base_prefix, "bin").resolve()
    assert version == sys.version


def test_progress_times_in_rfc3339_forms_python_310_refuses(client):
    """`Z` and millisecond fractions (JavaScript's toISOString, `date -u +%FT%T.%3NZ`): 3.10's fromisoformat
    refuses them, 3.11's reads them."""
    line = '{"progress": 30, "message": "m", "create_time": "2025-06-01T11:00:12.345Z"}'
    _, op = run(client, jpb.JobParameters(cmd=f"echo '{line}' >> $JOB_PROGRESS_FILENAME"))
    meta = spb.ExecuteProjectJobMetadata()
    op.metadata.Unpack(meta)
    assert meta.progress.progress == 30 and meta.progress.HasField("create_time")
    when = datetime(2025, 6, 1, 11, 0, 12, 345000, tzinfo=timezone.utc).timestamp()
    assert abs(meta.progress.create_time.seconds + meta.progress.create_time.nanos / 1e9 - when) < 1e-6
