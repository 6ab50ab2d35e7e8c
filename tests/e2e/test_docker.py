"""Jobs in containers on the real Docker Engine: same semantics as process jobs, plus images, registries,
users, limits and cleanup. `make test` starts dockerd; these tests never skip."""
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
from engine.config import InstanceType
from engine.resources import Images, Secrets
from tests.conftest import Server
from tests.dockerenv import docker, shell_image
from tests.helpers import (blob, create, logs, response, run, stdout_of, wait_for, wait_op, wait_output, wait_status,
                           zip_bytes)

pytestmark = [pytest.mark.e2e, pytest.mark.docker]


def job_containers(job_id: str = "") -> list[str]:
    """Job containers on the Docker Engine: one job's, or every job's (other tests, in other xdist workers, run
    Docker jobs at the same time: a test looks at its own job's)."""
    return docker("ps", "-aq", "--filter", f"label=dsjobs.job-id={job_id}" if job_id else "label=dsjobs.job-id"
                  ).stdout.split()


@pytest.fixture(scope="module", autouse=True)
def no_container_left_behind(tmp_path_factory):
    yield
    # Of this test process's engines: their jobs' directories, bound into the containers, are under its basetemp.
    mine = f"{tmp_path_factory.getbasetemp()}/"
    mounts = {c: docker("inspect", "--format", "{{range .Mounts}}{{.Source}} {{end}}", c, check=False).stdout
              for c in job_containers()}
    assert [c for c, m in mounts.items() if mine in m] == [], "a job container was left on the Docker engine"


@pytest.fixture(scope="module")
def image():
    return shell_image()


def in_image(image, **kw):
    return jpb.Environment(docker_image_spec=jpb.DockerImageSpec(image_url=image), **kw)


def test_spine_in_a_container(client, image):
    greeting = blob(b"Hello", "greeting.txt", "GREETING")
    data = blob(zip_bytes({"data/a.txt": b"alpha", "data/sub/b.txt": b"beta"}), "data", zipped=True)
    cmd = ('echo "$(cat ${GREETING}), ${WHO} from $BASH_VERSION in $(pwd)" > ${OUT}; ls data data/sub; echo mood=$MOOD;'
           ' mkdir -p report; echo r > report/r.txt; echo \'{"progress": 70, "message": "m"}\' >> $JOB_PROGRESS_FILENAME;'
           ' echo oops >&2; exit 4')
    p = jpb.JobParameters(cmd=cmd, output_files=[jpb.FileDesc(path="o.txt", var="OUT"), jpb.FileDesc(path="report"),
                                                 jpb.FileDesc(path="missing.txt")],
                          arguments=[jpb.Argument(name="WHO", value="world")], env=in_image(image, vars={"MOOD": "ok"}))
    job_id, op = run(client, p, [greeting, data], timeout=120)
    assert not op.HasField("error"), op.error.message
    r = response(op)
    assert r.result.return_code == 4
    out = {f.file.desc.path: f for f in r.output_files}
    assert requests.get(out["o.txt"].url).content.startswith(b"Hello, world from 5.")
    assert b"in /job" in requests.get(out["o.txt"].url).content
    assert zipfile.ZipFile(io.BytesIO(requests.get(out["report"].url).content)).read("report/r.txt") == b"r\n"
    assert [e.output_file_desc.path for e in r.output_files_errors] == ["missing.txt"]
    msgs = logs(client, job_id)[0]
    text = stdout_of(msgs).decode()
    assert "a.txt\nsub" in text and "mood=ok" in text
    assert any(m.standard_stream == 2 and b"oops" in m.content for m in msgs)
    job = client.get(job_id)
    assert job.status == jpb.ERROR and job.actual_cloud_instance_type.name == "c1.4"
    meta = spb.ExecuteProjectJobMetadata()
    op.metadata.Unpack(meta)
    assert meta.progress.progress == 70
    system = b"".join(m.content for m in msgs if m.file_path == ".system.log").decode()
    assert "capped at what this machine has" in system


def test_image_ids_and_clear_errors(server, client, image):
    _, op = run(client, jpb.JobParameters(cmd="true", env=jpb.Environment(docker_image_resource_id="b1gnope")))
    assert op.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0] and "b1gnope" in op.error.message
    Images(server.engine.cfg.data_dir).add("b1gshell", image)
    _, op = run(client, jpb.JobParameters(cmd="echo via id", env=jpb.Environment(docker_image_resource_id="b1gshell")))
    assert not op.HasField("error") and response(op).result.return_code == 0
    _, op = run(client, jpb.JobParameters(cmd="true", env=in_image("127.0.0.1:1/none/such:1")), timeout=60)
    assert op.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0] and "cannot pull image" in op.error.message


@pytest.mark.parametrize("as_root", [False, True])
def test_runs_as_the_owner_of_the_working_directory(tmp_path, image, as_root):
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 1000, 1000)
    s = Server(data, docker_run_as_root=as_root)
    try:
        jid, op = run(s.client, jpb.JobParameters(cmd="id -u > uid.txt; echo x > made.txt; ln -s /etc/passwd leak",
                                                  output_files=[jpb.FileDesc(path="uid.txt"), jpb.FileDesc(path="leak")],
                                                  env=in_image(image)))
        r = response(op)
        assert requests.get(r.output_files[0].url).content == (b"0\n" if as_root else b"1000\n")
        assert [e.output_file_desc.path for e in r.output_files_errors] == ["leak"]  # a symlink: not followed
        made = s.engine.jobs.run_dir(jid) / "work" / "made.txt"
        assert made.stat().st_uid == 1000 and made.stat().st_gid == 1000  # chowned back after a root container
    finally:
        s.stop()


def test_memory_limit_enforced(tmp_path, image):
    types = {"tiny.1": InstanceType("tiny.1", 1, 0.0625)}  # 64 MiB
    s = Server(tmp_path / "data", instance_types=types, default_instance_type="tiny.1")
    try:
        jid, op = run(s.client, jpb.JobParameters(
            cmd="x=$(head -c 300000000 /dev/zero | tr '\\0' 'x'); echo survived",
            cloud_instance_types=[jpb.CloudInstanceType(name="tiny.1")], env=in_image(image)), timeout=120)
        r = response(op)
        assert r.result.return_code == 137
        system = b"".join(m.content for m in logs(s.client, jid)[0] if m.file_path == ".system.log")
        assert b"out of memory" in system
    finally:
        s.stop()


def test_graceful_cancel_and_no_container_left(client, image):
    cmd = "trap 'echo saving; echo ckpt > ckpt.txt; exit 0' TERM; echo up; while true; do sleep 0.1; done"
    g = jpb.GracefulShutdownParameters(signal=15)
    g.timeout.seconds = 10
    jid = create(client, jpb.JobParameters(cmd=cmd, output_files=[jpb.FileDesc(path="ckpt.txt")],
                                           graceful_shutdown_parameters=g, env=in_image(image)))
    op = client.execute(jid)
    wait_status(client, jid, {jpb.EXECUTING})
    for _ in range(100):
        if b"up" in stdout_of(logs_now(client, jid)):
            break
        time.sleep(0.05)
    client.cancel(jid, graceful=True)
    op = wait_op(client, op, 30)
    assert op.error.code == grpc.StatusCode.CANCELLED.value[0]
    job = client.get(jid)
    assert job.status == jpb.CANCELLED and [f.desc.path for f in job.output_files] == ["ckpt.txt"]
    assert not job_containers(jid)
    # Forced: an image job that ignores TERM is killed at once.
    jid = create(client, jpb.JobParameters(cmd="trap '' TERM; sleep 600", env=in_image(image)))
    op = client.execute(jid)
    wait_status(client, jid, {jpb.EXECUTING})
    t = time.monotonic()
    client.cancel(jid)
    wait_op(client, op, 30)
    assert time.monotonic() - t < 5


def logs_now(client, jid):
    stream = client.jobs.ReadLogs(spb.ReadProjectJobLogsRequest(job_id=jid, offset=0))
    try:
        return list(next(iter(stream)).logs)
    finally:
        stream.cancel()


def test_private_registry_with_a_project_secret(server, client, image, registry):
    reg = registry("puller", "pa55-w0rd-XYZ")
    try:
        ref = reg.push(image, "dsjobs/shell:7")
        _, op = run(client, jpb.JobParameters(cmd="true", env=in_image(ref)), timeout=120)
        assert op.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
        assert "credentials" in op.error.message
        Secrets(server.engine.cfg.data_dir).set("p1", "REGISTRY_PASSWORD", "pa55-w0rd-XYZ")
        env = jpb.Environment(docker_image_spec=jpb.DockerImageSpec(
            image_url=ref, username="puller", password_ds_secret_name="REGISTRY_PASSWORD"))
        jid = create(client, jpb.JobParameters(cmd="echo secret-is-$REGISTRY_PASSWORD; sleep 1", env=env))
        op = client.execute(jid)
        wait_status(client, jid, {jpb.EXECUTING})
        # The job's container, running: what the Docker Engine was given is looked at while it is there.
        inspected = "".join(docker("inspect", c).stdout for c in wait_for(lambda: job_containers(jid), 60,
                                                                           "the job's container"))
        op = wait_op(client, op, 120)
        assert not op.HasField("error"), op.error.message
        assert b"secret-is-pa55-w0rd-XYZ" in stdout_of(logs(client, jid)[0])  # exported, as the cloud does
        assert "pa55-w0rd-XYZ" not in inspected
        job_text = str(client.get(jid)) + str(client.list("p1"))
        assert "pa55-w0rd-XYZ" not in job_text
        secret_file = server.engine.cfg.data_dir / "secrets" / "p1" / "REGISTRY_PASSWORD"
        assert secret_file.stat().st_mode & 0o777 == 0o600
        system = "".join(open(p, errors="replace").read() for p in server.engine.cfg.data_dir.rglob("*.log"))
        assert "pa55-w0rd-XYZ" not in system
    finally:
        docker("rmi", f"{reg.host}/dsjobs/shell:7", check=False)


def test_docker_job_survives_kill9_of_the_engine(tmp_path, image):
    from tests.helpers import Serve
    release = tmp_path / "release"
    release.mkdir()
    srv = Serve(tmp_path / "data")
    client = srv.start()
    try:
        # The job waits for a file the test creates through the project disk (a bind mount).
        jid = create(client, jpb.JobParameters(
            cmd="echo before; while [ ! -f ${DS_PROJECT_HOME}/go ]; do sleep 0.1; done; echo after; echo done > out.txt",
            output_files=[jpb.FileDesc(path="out.txt")], attach_project_disk=True, env=in_image(image)))
        op = client.execute(jid)
        wait_output(client, jid, b"before")  # the job runs in its container
        for _ in range(3):
            client.close()
            srv.kill9()
            assert len(job_containers(jid)) == 1  # the Docker Engine keeps it running
            client = srv.start()
            assert client.get(jid).status == jpb.EXECUTING
        (tmp_path / "data" / "projects" / "p1" / "home" / "go").touch()
        done = wait_op(client, client.get_operation(op.id), 60)
        assert not done.HasField("error"), done.error.message
        assert [f.file.desc.path for f in response(done).output_files] == ["out.txt"]
        out = stdout_of(logs(client, jid)[0])
        assert out.count(b"before") == 1 and b"after" in out  # never run twice, logs kept
        for _ in range(50):
            if not job_containers(jid):
                break
            time.sleep(0.1)
        assert job_containers(jid) == []
    finally:
        client.close()
        srv.proc.terminate()
        srv.proc.wait(10)


def test_a_containers_deadline_holds_across_a_restart_of_the_engine(tmp_path, image):
    """A job's maximum running time counts from its container's start, whoever watches it: an engine killed and
    started again re-arms it for what is left (before, an adopted container ran on past its deadline)."""
    from tests.helpers import Serve
    srv = Serve(tmp_path / "data")
    client = srv.start()
    jid = None
    try:
        jid = create(client, jpb.JobParameters(
            cmd="trap 'echo stopping; exit 0' TERM; echo up; while true; do sleep 0.1; done",
            env=in_image(image, vars={"DSJOBS_MAX_DURATION": "5s"})))
        op = client.execute(jid)
        wait_output(client, jid, b"up")
        client.close()
        srv.kill9()
        client = srv.start()
        done = wait_op(client, client.get_operation(op.id), 60)
        assert done.error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0], done.error
        assert "maximum running time" in done.error.message
        job = client.get(jid)
        ran = (job.finished_at.ToNanoseconds() - job.started_at.ToNanoseconds()) / 1e9
        assert 4.9 < ran < 30, ran
        assert b"stopping" in stdout_of(logs(client, jid)[0])  # through the graceful path
        wait_for(lambda: not job_containers(jid), 30, what="the container's removal")
    finally:
        client.close()
        srv.proc.terminate()
        srv.proc.wait(10)
        if jid is not None:
            for c in job_containers(jid):
                docker("rm", "-f", c)


def test_datasets_are_read_only_in_a_container(server, client, image, tmp_path):
    from engine.resources import Directories
    d = tmp_path / "ds"
    d.mkdir()
    (d / "x.txt").write_text("data\n")
    os.chmod(d, 0o777)
    rid = "bt0000000000datasetx"
    Directories(server.engine.cfg.data_dir, "dataset").add(rid, d)
    jid, op = run(client, jpb.JobParameters(
        cmd=f"cat ${{{rid}}}/x.txt; echo no > ${{{rid}}}/y.txt && echo wrote || echo refused",
        dataset_ids=[rid], env=in_image(image)))
    out = stdout_of(logs(client, jid)[0])
    assert out == b"data\nrefused\n" and not (d / "y.txt").exists()


def test_image_pull_has_its_own_time_limit(tmp_path):
    import socket
    import threading
    # A "registry" that accepts connections and never answers.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    conns = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                pass
    threading.Thread(target=accept, daemon=True).start()
    s = Server(tmp_path / "data", image_pull_timeout_s=2)
    try:
        t = time.monotonic()
        _, op = run(s.client, jpb.JobParameters(cmd="true", env=in_image(f"127.0.0.1:{srv.getsockname()[1]}/x/y:1")),
                    timeout=60)
        assert time.monotonic() - t < 15
        assert op.error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0] and "limit of 2s" in op.error.message
    finally:
        s.stop()
        stop.set()
        for c in conns:
            c.close()
        srv.close()
