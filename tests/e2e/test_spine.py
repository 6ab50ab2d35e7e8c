"""The spine: the scenarios every backend must pass, run on each backend from this one place (the ``backend``
fixture: local, then ray). A scenario asks for ``client`` or ``server`` (or ``make_server`` for an engine with its
own settings) and gets them on the backend under test; nothing in it knows which backend that is.

What only one backend has is tested beside it: tests/e2e/test_ray.py (placement, node loss, fencing), and the
local backend's own files (test_jobs_api.py, test_cancel.py, test_python_env.py, test_docker.py, ...)."""
from __future__ import annotations

import io
import os
import time
import zipfile

import grpc
import pytest
import requests

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
from tests.conftest import Server
from tests.helpers import (blob, create, graceful, logs, ok, python_env, response, run, stdout_of, survivors,
                           wait_op, wait_output, wait_status, zip_bytes)
from tests.raycluster import ray_cfg

pytestmark = pytest.mark.e2e
BACKENDS = ["local", "ray"]


@pytest.fixture(params=BACKENDS, scope="module")
def backend(request):
    return request.param


@pytest.fixture
def make_server(backend, tmp_path, request):
    made = []

    def make(**cfg):
        if backend == "ray":
            cfg = {**ray_cfg(request.getfixturevalue("ray_cluster"), tmp_path), **cfg}
        s = Server(tmp_path / f"data{len(made) or ''}", **{"max_concurrent_jobs": 4, **cfg})
        made.append(s)
        return s
    yield make
    for s in made:
        if backend == "ray":
            try:
                for job in s.client.list("p1"):  # the scenario may have restarted the engine
                    if job.status == jpb.SUCCESS:
                        assert s.engine.store.attempts(job_id=job.id)[0].backend == "ray"  # it did run on Ray
            finally:
                # Stopped beside the next test; the cluster checks that it leaves no Ray job behind.
                request.getfixturevalue("ray_cluster").stop_engine_later(s, request.node.name)
        else:
            s.stop()


@pytest.fixture
def server(make_server):
    return make_server()


@pytest.fixture
def client(server):
    return server.client


# --- jobs: files, vars, logs, restarts ----------------------------------------------------------------------------


def test_vars_args_env_dirs_and_outputs(client):
    greeting = blob(b"Hello", "greeting.txt", "GREETING")
    plain = blob(b"plain\n", "conf/plain.txt")
    data = blob(zip_bytes({"data/a.txt": b"alpha", "data/sub/b.txt": b"beta"}), "data", zipped=True)
    vdir = blob(zip_bytes({"src/x.py": b"print(1)"}), "src", "SRC", zipped=True)
    p = jpb.JobParameters(
        cmd='echo "$(cat ${GREETING}), ${WHO}" > ${OUT}; cat conf/plain.txt; ls data data/sub; ls ${SRC};'
            ' test -x conf/plain.txt && echo exec; echo "mood=$MOOD"; mkdir -p report/inner;'
            ' echo r > report/inner/r.txt',
        output_files=[jpb.FileDesc(path="result/out.txt", var="OUT"), jpb.FileDesc(path="report")],
        arguments=[jpb.Argument(name="WHO", value="world")],
        env=jpb.Environment(vars={"MOOD": "sunny"}))
    job_id, op = run(client, p, [greeting, plain, data, vdir])
    assert not op.HasField("error"), op.error
    r = response(op)
    assert r.result.return_code == 0
    out = {f.file.desc.path: f for f in r.output_files}
    assert requests.get(out["result/out.txt"].url).content == b"Hello, world\n"
    rep = out["report"]
    assert rep.file.compression_type == jpb.ZIP
    z = zipfile.ZipFile(io.BytesIO(requests.get(rep.url).content))
    assert z.read("report/inner/r.txt") == b"r\n"  # entries prefixed with the directory's name
    text = stdout_of(logs(client, job_id)[0]).decode()
    assert "plain" in text and "a.txt\nsub" in text and "b.txt" in text and "x.py" in text
    assert "exec" in text and "mood=sunny" in text
    job = client.get(job_id)
    assert job.status == jpb.SUCCESS and job.actual_cloud_instance_type.name == "c1.4"
    assert job.started_at.seconds and job.finished_at.seconds and job.data_size_bytes > 0
    assert {os.path.basename(f.desc.path) for f in job.log_files} == {"stdout.txt", "stderr.txt", "system.log"}
    assert job.data_expires_at.seconds - job.created_at.seconds == 14 * 86400


def test_missing_output_and_nonzero_exit(client):
    p = jpb.JobParameters(cmd="echo partial > made.txt; echo bad >&2; exit 3",
                          output_files=[jpb.FileDesc(path="made.txt"), jpb.FileDesc(path="never.txt")])
    job_id, op = run(client, p)
    assert not op.HasField("error")  # a program failure is a response, not an operation error
    r = response(op)
    assert r.result.return_code == 3
    assert [f.file.desc.path for f in r.output_files] == ["made.txt"]  # collected whatever the exit code
    assert [(e.output_file_desc.path, e.type) for e in r.output_files_errors] == [("never.txt", jpb.FileUploadError.NOT_FOUND)]
    job = client.get(job_id)
    assert job.status == jpb.ERROR and "3" in job.status_details
    assert [e.output_file_desc.path for e in job.file_errors] == ["never.txt"]


def test_zip_slip_input_is_refused(client, tmp_path):
    evil = blob(zip_bytes({"ok.txt": b"fine", "../../escaped.txt": b"pwned"}), "d", zipped=True)
    job_id, op = run(client, jpb.JobParameters(cmd="true"), [evil])
    assert op.HasField("error") and op.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "../../escaped.txt" in op.error.message
    assert client.get(job_id).status == jpb.ERROR
    data_dir = tmp_path / "data"
    assert not any(p.name == "escaped.txt" for p in tmp_path.rglob("*"))
    assert data_dir.exists()


def test_output_symlinks_are_not_followed(client, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    p = jpb.JobParameters(
        cmd=f"ln -s {secret} leak.txt; mkdir -p d; echo ok > d/real.txt; ln -s {secret} d/link.txt;"
            " ln -s /proc/self hop; echo fine > good.txt",
        output_files=[jpb.FileDesc(path="leak.txt"), jpb.FileDesc(path="d"), jpb.FileDesc(path="hop/environ"),
                      jpb.FileDesc(path="good.txt")])
    job_id, op = run(client, p)
    r = response(op)
    errors = {e.output_file_desc.path: e for e in r.output_files_errors}
    assert set(errors) == {"leak.txt", "hop/environ"}
    assert "symlink" in errors["leak.txt"].description
    got = {f.file.desc.path: requests.get(f.url).content for f in r.output_files}
    assert got["good.txt"] == b"fine\n"
    z = zipfile.ZipFile(io.BytesIO(got["d"]))
    assert z.namelist() == ["d/real.txt"]
    assert all(b"TOP-SECRET" not in v for v in got.values())


def test_set_data_ttl_and_download_job_files(client):
    jid, op = run(client, jpb.JobParameters(cmd="echo hi > o.txt; echo err >&2",
                                            output_files=[jpb.FileDesc(path="o.txt")]))
    client.jobs.SetDataTtl(spb.SetProjectJobDataTtlRequest(job_id=jid))
    assert not client.get(jid).HasField("data_expires_at")  # unset TTL: never
    ttl = spb.SetProjectJobDataTtlRequest(job_id=jid)
    ttl.ttl.seconds = 3 * 86400
    client.jobs.SetDataTtl(ttl)
    assert client.get(jid).HasField("data_expires_at")
    job = client.get(jid)
    r = client.jobs.DownloadJobFiles(spb.DownloadProjectJobFilesRequest(
        job_id=jid, files=list(job.output_files) + list(job.log_files)))
    got = {os.path.basename(f.file.desc.path): requests.get(f.url).content for f in r.download_files}
    assert got["o.txt"] == b"hi\n" and got["stderr.txt"] == b"err\n" and b"job completed" in got["system.log"]
    with pytest.raises(grpc.RpcError) as e:
        client.jobs.DownloadJobFiles(spb.DownloadProjectJobFilesRequest(job_id=jid))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_logs_from_zero_resumed_and_now(client):
    jid = create(client, jpb.JobParameters(cmd="for i in 1 2 3; do echo line$i; sleep 0.2; done; echo e >&2"))
    op = client.execute(jid)
    stream = client.jobs.ReadLogs(spb.ReadProjectJobLogsRequest(job_id=jid, offset=0))
    first = next(iter(stream))
    stream.cancel()
    resumed, _ = logs(client, jid, first.offset)
    wait_op(client, op)
    full, end = logs(client, jid, 0)
    assert list(first.logs) + resumed == full  # nothing lost, nothing repeated
    assert stdout_of(full) == b"line1\nline2\nline3\n"
    assert any(m.standard_stream == 2 and m.content == b"e\n" for m in full)
    assert any(m.file_path == ".system.log" for m in full)
    now, _ = logs(client, jid, -1)  # from now, on a finished job: nothing more
    assert now == []
    std = list(client.jobs.ReadStdLogs(spb.ReadProjectJobStdLogsRequest(job_id=jid, offset=0)))
    assert b"".join(l.content for r in std for l in r.logs if l.type == spb.StdLog.OUT) == b"line1\nline2\nline3\n"


def test_restart_keeps_jobs_and_logs(server):
    c = server.client
    jid, op = run(c, jpb.JobParameters(cmd="echo persisted > o.txt", output_files=[jpb.FileDesc(path="o.txt")]))
    server.restart()
    c = server.client
    job = c.get(jid)
    assert job.status == jpb.SUCCESS
    assert b"persisted" not in stdout_of(logs(c, jid)[0])
    assert any(b"completed" in m.content for m in logs(c, jid)[0])
    r = c.jobs.DownloadJobFiles(spb.DownloadProjectJobFilesRequest(job_id=jid, files=list(job.output_files)))
    assert requests.get(r.download_files[0].url).content == b"persisted\n"
    assert c.get_operation(op.id).done


# --- cancel and deadlines ---------------------------------------------------------------------------------------


def test_graceful_cancel_keeps_checkpoint(client):
    cmd = ("trap 'echo saving; echo checkpoint > ckpt.txt; exit 0' USR1; echo started;"
           " while true; do sleep 0.05; done")
    p = jpb.JobParameters(cmd=cmd, output_files=[jpb.FileDesc(path="ckpt.txt")],
                          graceful_shutdown_parameters=graceful(10, 5))
    jid = create(client, p)
    op = client.execute(jid)
    wait_output(client, jid, b"started")  # printed after its trap is set
    t = time.monotonic()
    client.cancel(jid, graceful=True, reason="user asked")
    op = wait_op(client, op, 10)
    assert time.monotonic() - t < 3
    assert op.error.code == grpc.StatusCode.CANCELLED.value[0] and "user asked" in op.error.message
    job = client.get(jid)
    assert job.status == jpb.CANCELLED
    assert [f.desc.path for f in job.output_files] == ["ckpt.txt"]  # collected, downloadable
    r = client.jobs.DownloadJobFiles(__import__("dsjobs_pb.yandex.cloud.datasphere.v2.jobs.project_job_service_pb2",
                                                fromlist=["x"]).DownloadProjectJobFilesRequest(
        job_id=jid, files=list(job.output_files)))
    assert requests.get(r.download_files[0].url).content == b"checkpoint\n"
    assert b"saving" in stdout_of(logs(client, jid)[0])
    with pytest.raises(grpc.RpcError) as e:
        client.cancel(jid)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_forced_cancel_kills_setsid_and_double_forked(server):
    client = server.client
    cmd = ("sleep 300 & (sleep 301 | cat) & setsid bash -c 'while true; do date +%s%N > beat; sleep 0.05; done' &"
           " python3 -c 'import os,time\nif os.fork()==0:\n  os.setsid()\n  if os.fork()==0:\n    time.sleep(300)' ;"
           " echo up; wait")
    jid = create(client, jpb.JobParameters(cmd=cmd, graceful_shutdown_parameters=graceful(15, 30)))
    op = client.execute(jid)
    wait_status(client, jid, {jpb.EXECUTING})
    beat = server.work_dir(jid) / "beat"
    for _ in range(100):
        if beat.exists() and len(survivors(jid)) >= 5:
            break
        time.sleep(0.05)
    assert len(survivors(jid)) >= 5
    client.cancel(jid, graceful=False)  # not graceful: SIGKILL at once, whatever the config says
    op = wait_op(client, op, 10)
    assert client.get(jid).status == jpb.CANCELLED
    assert survivors(jid) == []
    def read_beat():
        try:
            return beat.read_text()
        except FileNotFoundError:  # a Ray node's agent removes the attempt's dir at its end, maybe just now
            return None
    last = read_beat()
    time.sleep(0.3)
    assert read_beat() in (last, None), "a process of the cancelled job still writes"


def test_escalation_after_timeout_and_cancel_before_start(client):
    jid = create(client, jpb.JobParameters(cmd="trap '' TERM; echo ignoring; sleep 300",
                                           graceful_shutdown_parameters=graceful(15, 1)))
    op = client.execute(jid)
    wait_output(client, jid, b"ignoring")
    t = time.monotonic()
    client.cancel(jid, graceful=True)
    assert client.get(jid).status == jpb.CANCELLING
    client.cancel(jid, graceful=True)  # twice: harmless
    wait_op(client, op, 10)
    took = time.monotonic() - t
    assert 0.9 < took < 4, took
    assert survivors(jid) == []
    never = create(client, jpb.JobParameters(cmd="true"))
    client.cancel(never)
    assert client.get(never).status == jpb.CANCELLED


def test_job_deadline_uses_the_graceful_path(client):
    cmd = "trap 'echo flushing; echo saved > ckpt.txt; exit 0' TERM; while true; do sleep 0.05; done"
    p = jpb.JobParameters(cmd=cmd, output_files=[jpb.FileDesc(path="ckpt.txt")],
                          env=jpb.Environment(vars={"DSJOBS_MAX_DURATION": "1s"}))
    jid = create(client, p)
    t = time.monotonic()
    op = wait_op(client, client.execute(jid), 60)  # (Ray's start of an attempt took 15 s under a loaded machine)
    assert time.monotonic() - t > 0.9, op.error
    assert op.error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0] and "maximum running time" in op.error.message
    job = client.get(jid)
    # The deadline counts from the job's start (a backend's own start-up, Ray's under a loaded machine, comes
    # before it): stopped about a second after it started, through the graceful path.
    ran = (job.finished_at.ToNanoseconds() - job.started_at.ToNanoseconds()) / 1e9
    assert 0.9 < ran < 4, ran
    assert job.status == jpb.ERROR and "maximum running time" in job.status_details
    assert [f.desc.path for f in job.output_files] == ["ckpt.txt"]
    assert survivors(jid) == []
    with pytest.raises(grpc.RpcError) as e:
        create(client, jpb.JobParameters(cmd="true", env=jpb.Environment(vars={"DSJOBS_MAX_DURATION": "soon"})))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "DSJOBS_MAX_DURATION" in e.value.details()


def test_forced_cancel_during_a_graceful_wait_kills_at_once(client):
    # TERM is caught, said, and outlived: only the SIGKILL at the end of the grace would end it.
    jid = create(client, jpb.JobParameters(cmd="trap 'echo got-term' TERM; echo up; while true; do sleep 0.1; done",
                                           graceful_shutdown_parameters=graceful(15, 60)))
    op = client.execute(jid)
    wait_output(client, jid, b"up")
    client.cancel(jid, graceful=True)  # would wait 60 s
    wait_output(client, jid, b"got-term")
    assert client.get(jid).status == jpb.CANCELLING and survivors(jid)
    t = time.monotonic()
    client.cancel(jid, graceful=False)
    wait_op(client, op, 10)
    assert time.monotonic() - t < 3 and survivors(jid) == []
    assert client.get(jid).status == jpb.CANCELLED


# --- python envs ---------------------------------------------------------------------------------------------------


def test_python_without_an_env_is_the_engines(client):
    """No python_env: `python` and `python3` are the interpreter the engine runs (its installation shown
    read-only), also when a root engine runs the job as nobody."""
    import platform
    _, out = ok(client, "python -c 'import sys; print(sys.version.split()[0])'; "
                        "python3 -c 'import sys; print(sys.version.split()[0])'", jpb.Environment())
    assert out.split() == [platform.python_version()] * 2, out


def test_requirements_installed_and_python_version_used(client, indexes):
    a, _, _ = indexes
    jid, out = ok(client, "python -c 'import sys, dsj_alpha, dsj_beta; print(sys.version)'; dsj-tool; "
                          "which python pip; echo $VIRTUAL_ENV",
                  python_env("3.12", ["dsj-alpha", "dsj-tool"], index=a.url))
    assert out.startswith("3.12.") and "tool says hi" in out
    lines = out.split("\n")
    assert lines[2].endswith("/venv/bin/python") and lines[3].endswith("/venv/bin/pip")
    _, out = ok(client, "python -c 'import sys; print(sys.version)'", python_env("3.10"))
    assert out.startswith("3.10.")
    job = client.get(jid)
    assert [f.desc.path.rsplit("/", 1)[1] for f in job.diagnostic_files] == ["env_build.log"]


def test_no_deps_option_and_line(client, indexes):
    a, _, _ = indexes
    probe = "python -c 'import dsj_alpha\ntry:\n import dsj_beta; print(\"deps\")\nexcept ImportError: print(\"nodeps\")'"
    assert ok(client, probe, python_env("3.12", ["dsj-alpha"], index=a.url))[1].strip() == "deps"
    assert ok(client, probe, python_env("3.12", ["dsj-alpha"], index=a.url, no_deps=True))[1].strip() == "nodeps"
    assert ok(client, probe, python_env("3.12", ["dsj-alpha", "--no-deps"], index=a.url))[1].strip() == "nodeps"


def test_local_modules_importable(client):
    mod = blob(zip_bytes({"mylib/__init__.py": b"NAME = 'mylib'\n", "helper.py": b"X = 7\n"}), "/tmp/x.zip",
               "_LOCAL_MODULE_0", zipped=True)
    main = blob(b"import mylib, helper\nif __name__ == '__main__':\n    print(mylib.NAME, helper.X)\n", "main.py")
    pe = python_env("3.12")
    pe.python_env.local_modules.append(mod[0])
    job_id = create(client, jpb.JobParameters(cmd="python main.py", env=pe, input_files=[main[0]]),
                    {mod[0].sha256: mod[1], main[0].sha256: main[1]})
    op = wait_op(client, client.execute(job_id), 120)
    assert not op.HasField("error"), op.error.message
    assert stdout_of(logs(client, job_id)[0]) == b"mylib 7\n"


# --- python envs in an image -----------------------------------------------------------------------------------


@pytest.mark.docker
def test_python_version_and_env_with_the_images_python(make_server, tmp_path):
    from tests.dockerenv import python_image
    from tests.pyindex import Index
    # The build reaches the test's index on the host's loopback: builds get a network setting of their own.
    s = make_server(docker_build_network="host")
    client = s.client
    py = python_image()  # Debian bookworm: python3.11
    _, op = run(client, jpb.JobParameters(cmd="true", env=jpb.Environment(
        docker_image_spec=jpb.DockerImageSpec(image_url=py), python_env=jpb.PythonEnv(python_version="3.12"))))
    assert op.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "3.12" in op.error.message and "python3.11" in op.error.message
    idx = Index(tmp_path / "index")
    idx.add("dsj-beta", "1.0")
    try:
        pe = jpb.PythonEnv(python_version="3.11", requirements=["dsj-beta"])
        pe.pip_options.index_url = idx.url
        params = jpb.JobParameters(
            cmd="python -c 'import sys, dsj_beta; print(sys.version_info[:2], dsj_beta.VERSION)'; echo $VIRTUAL_ENV",
            env=jpb.Environment(docker_image_spec=jpb.DockerImageSpec(image_url=py), python_env=pe))
        first, op = run(client, params, timeout=300)
        assert not op.HasField("error"), op.error.message
        out = stdout_of(logs(client, first)[0]).decode()
        assert out.startswith("(3, 11) 1.0")
        second, op = run(client, params, timeout=120)
        system = b"".join(m.content for m in logs(client, second)[0] if m.file_path == ".system.log").decode()
        assert "taken from the cache" in system
    finally:
        idx.close()
