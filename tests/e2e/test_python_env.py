"""python_env built for real: interpreters of this machine, real uv/pip against indexes served by the tests."""
from __future__ import annotations

import os

import grpc
import pytest

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from tests.helpers import create, logs, ok, python_env, run, wait_op

pytestmark = pytest.mark.e2e


def system(client, job_id) -> str:
    return b"".join(m.content for m in logs(client, job_id)[0] if m.file_path == ".system.log").decode()


def test_missing_version_fails_naming_what_exists(client):
    job_id, op = run(client, jpb.JobParameters(cmd="true", env=python_env("3.4")))
    assert op.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "3.4" in op.error.message and "3.12" in op.error.message


def test_extra_index_and_best_match(client, indexes):
    a, b, _ = indexes
    _, out = ok(client, "python -c 'import dsj_gamma, dsj_shared; print(dsj_shared.VERSION)'",
                python_env("3.12", ["dsj-gamma", "dsj-shared"], index=a.url, extra=[b.url]))
    assert out.strip() == "2.0"
    # Without the extra index, gamma cannot be found: the option really mattered.
    _, op = run(client, jpb.JobParameters(cmd="true", env=python_env("3.12", ["dsj-gamma"], index=a.url)), timeout=120)
    assert op.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0] and "dsj-gamma" in op.error.message
    # The same through requirement lines, as the official client sends them.
    _, out = ok(client, "python -c 'import dsj_gamma; print(1)'",
                python_env("3.12", [f"--extra-index-url {b.url}", "dsj-gamma"], index=a.url))
    assert out.strip() == "1"


def test_trusted_hosts(client, indexes):
    _, _, tls = indexes
    _, op = run(client, jpb.JobParameters(cmd="true", env=python_env("3.12", ["dsj-secure"], index=tls.url)), timeout=120)
    assert op.HasField("error")  # a self-signed certificate is refused...
    _, out = ok(client, "python -c 'import dsj_secure; print(1)'",
                python_env("3.12", ["dsj-secure"], index=tls.url, trusted=[tls.host]))  # ...unless the host is trusted
    assert out.strip() == "1"


def test_failing_build_leaves_nothing_in_the_cache(client, server, indexes):
    a, _, _ = indexes
    _, op = run(client, jpb.JobParameters(cmd="true", env=python_env("3.12", ["dsj-nope==9"], index=a.url)), timeout=120)
    assert op.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "dsj-nope" in op.error.message  # the tail of the installer's output
    envs = server.engine.envs
    assert [p for p in envs.root.iterdir() if p.is_dir() and p.name != "uv-cache" and not envs.complete(p.name)] == []


def test_cache_hit_runs_no_installer(client, indexes):
    a, _, _ = indexes
    e = python_env("3.12", ["dsj-beta"], index=a.url)
    first, _ = ok(client, "true", e)
    assert "built in" in system(client, first)
    second, _ = ok(client, "python -c 'import dsj_beta'", e)
    log = system(client, second)
    assert "taken from the cache" in log and "$ " not in log  # no installer command ran


def test_concurrent_jobs_build_one_env_once(client, indexes):
    a, _, _ = indexes
    e = python_env("3.12", ["dsj-alpha", "dsj-shared"], index=a.url)
    ids = [create(client, jpb.JobParameters(cmd="python -c 'import dsj_alpha'", env=e)) for _ in range(3)]
    ops = [client.execute(i) for i in ids]
    for op in ops:
        assert not wait_op(client, op, 120).HasField("error")
    built = [i for i in ids if "python environment built" in system(client, i)]
    assert len(built) == 1


def test_runtime_pip_install_does_not_change_the_cached_env(client, server, indexes):
    a, b, _ = indexes
    e = python_env("3.12", ["dsj-beta"], index=a.url)
    ok(client, "true", e)
    envs = server.engine.envs
    base = next(p for p in envs.root.iterdir() if p.is_dir() and envs.complete(p.name))
    site = next((base / "lib").glob("python*/site-packages"))
    before = sorted(os.listdir(site))
    _, out = ok(client, f"pip install -q --index-url {b.url} dsj-gamma && python -m pip install -q --index-url "
                        f"{b.url} dsj-shared && python -c 'import dsj_gamma, dsj_shared; print(\"in job\")'", e)
    assert "in job" in out
    assert sorted(os.listdir(site)) == before
    _, out = ok(client, "python -c 'import dsj_gamma' 2>/dev/null && echo leaked || echo clean", e)
    assert out.strip() == "clean"


def test_host_pip_configuration_does_not_leak(client, indexes, monkeypatch):
    a, b, _ = indexes
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", b.url)
    monkeypatch.setenv("UV_EXTRA_INDEX_URL", b.url)
    _, op = run(client, jpb.JobParameters(cmd="true", env=python_env("3.12", ["dsj-gamma"], index=a.url)), timeout=120)
    assert op.HasField("error")  # gamma is only on b, which only the host's settings name


def test_conda_yaml_fails_clearly(client):
    e = jpb.Environment(python_env=jpb.PythonEnv(conda_yaml="name: x"))
    _, op = run(client, jpb.JobParameters(cmd="true", env=e))
    assert op.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0] and "conda" in op.error.message
