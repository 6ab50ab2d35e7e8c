"""The ray backend on a real two-node Ray cluster on loopback (tests/raycluster.py): placement by instance type,
cancel, node loss, an engine kill -9, a head restart, the official CLI, and what needs the engine's disk refused in
one place. The scenarios every backend passes run on Ray too, from tests/e2e/test_spine.py."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import grpc
import pytest
import requests

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
from engine.resources import Secrets
from tests.conftest import Server
from tests.helpers import described, graceful, survivors
from tests.helpers import Serve
from tests.helpers import copy_example, official_python
from tests.dockerenv import docker, shell_image
from tests.helpers import create, logs, response, run, stdout_of, wait_op, wait_status
from tests.raycluster import free_port, pids_where, ray_cfg

pytestmark = [pytest.mark.e2e, pytest.mark.ray, pytest.mark.slow]


@pytest.fixture
def server(ray_cluster, tmp_path, request):
    s = Server(tmp_path / "data", **ray_cfg(ray_cluster, tmp_path))
    yield s
    ray_cluster.stop_engine_later(s, request.node.name)  # and checks that it leaves no Ray job behind


@pytest.fixture
def client(server):
    return server.client


def types(*names):
    return [jpb.CloudInstanceType(name=n) for n in names]


def attempts(server, job_id):
    return server.engine.store.attempts(job_id=job_id)


def test_instance_types_choose_the_node(client, server, ray_cluster):
    jid, op = run(client, jpb.JobParameters(cmd="echo on g1", cloud_instance_types=types("g1.1")))
    assert response(op).result.return_code == 0
    assert client.get(jid).actual_cloud_instance_type.name == "g1.1"
    assert [a.node_id for a in attempts(server, jid)] == [ray_cluster.worker_id]  # the only node that has it
    # In order: no node can ever serve g2.1 (28 CPUs), so the next type is taken.
    jid, op = run(client, jpb.JobParameters(cmd="true", cloud_instance_types=types("g2.1", "c1.4")))
    assert client.get(jid).actual_cloud_instance_type.name == "c1.4"
    assert [a.node_id for a in attempts(server, jid)] == [ray_cluster.head_id]


def test_a_type_no_node_has_fails_at_once_and_never_reaches_ray(client, server, ray_cluster):
    t = time.monotonic()
    jid, op = run(client, jpb.JobParameters(cmd="true", cloud_instance_types=types("c1.32", "g2.1")))
    assert time.monotonic() - t < 3
    assert op.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "c1.32 or g2.1" in op.error.message
    assert attempts(server, jid) == []
    assert not any(jid in json.dumps(j) for j in ray_cluster.jobs())


def test_cancel_while_waiting_for_room_never_reaches_ray(client, server, ray_cluster):
    busy = create(client, jpb.JobParameters(cmd="sleep 300", cloud_instance_types=types("g1.1")))
    busy_op = client.execute(busy)
    wait_status(client, busy, {jpb.EXECUTING}, timeout=60)
    queued = create(client, jpb.JobParameters(cmd="echo never", cloud_instance_types=types("g1.1")))
    op = client.execute(queued)
    deadline = time.monotonic() + 10
    while "waiting for a free node of type g1.1" not in client.get(queued).status_details:
        assert time.monotonic() < deadline, client.get(queued).status_details
        time.sleep(0.1)
    client.cancel(queued)
    op = wait_op(client, op, 10)
    assert client.get(queued).status == jpb.CANCELLED
    assert attempts(server, queued) == []
    assert not any(queued in json.dumps(j) for j in ray_cluster.jobs())
    client.cancel(busy)
    wait_op(client, busy_op, 20)
    assert client.get(busy).status == jpb.CANCELLED and survivors(busy) == []


def test_secrets_reach_the_job_but_never_ray(client, server, ray_cluster, tmp_path):
    Secrets(tmp_path / "data").set("p1", "DB_PASSWORD", "s3cr3t-value")
    jid = create(client, jpb.JobParameters(cmd='printf %s "$DB_PASSWORD" | sha256sum; sleep 2'))
    op = client.execute(jid)
    wait_status(client, jid, {jpb.EXECUTING}, timeout=60)
    (a,) = attempts(server, jid)
    info = ray_cluster.api(f"/api/jobs/{a.id}")
    assert "s3cr3t-value" not in json.dumps(info)
    token = info["entrypoint"].split()[-1]  # the one-time token is spent: it is worth nothing in the dashboard
    r = requests.get(f"{server.engine.files_url}/runner/{a.id}/spec", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 410
    wait_op(client, op, 60)
    assert stdout_of(logs(client, jid)[0]).split()[0].decode() == hashlib.sha256(b"s3cr3t-value").hexdigest()


def test_node_lost_during_a_job_is_a_truthful_error_and_never_a_second_run(client, server, ray_cluster, tmp_path):
    jid = create(client, jpb.JobParameters(cmd="echo run; while true; do echo beat; sleep 0.2; done",
                                           cloud_instance_types=types("g1.1")))
    op = client.execute(jid)
    wait_status(client, jid, {jpb.EXECUTING}, timeout=60)
    time.sleep(0.5)
    assert survivors(jid)
    try:
        ray_cluster.kill_worker()
        op = wait_op(client, op, 90)
        job = client.get(jid)
        assert job.status == jpb.ERROR and "lost" in job.status_details, job.status_details
        assert op.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
        # Fenced: the agent's next call is refused and it kills the job's tree.
        deadline = time.monotonic() + 30
        while left := survivors(jid):
            assert time.monotonic() < deadline, f"the job's processes outlived the lost attempt: {described(left)}"
            time.sleep(0.2)
        runs = [x for x in stdout_of(logs(client, jid)[0]).split() if x == b"run"]
        assert runs == [b"run"] and len(attempts(server, jid)) == 1
        assert attempts(server, jid)[0].state == "LOST"
    finally:
        ray_cluster.restart_worker()


def test_engine_kill9_mid_job_then_the_job_finishes_once(ray_cluster, tmp_path):
    srv = Serve(tmp_path / "data")
    files_port = free_port()
    srv.extra = ["--backend", "ray", "--ray-address", ray_cluster.address, "--ray-agent-python", sys.executable,
                 "--ray-node-dir", str(tmp_path / "node"), "--files-port", str(files_port),
                 "--ray-token-file", str(_token_file(ray_cluster, tmp_path))]
    client = srv.start()
    try:
        cmd = "for i in $(seq 1 40); do echo line$i; sleep 0.1; done; echo done > out.txt"
        jid = create(client, jpb.JobParameters(cmd=cmd, output_files=[jpb.FileDesc(path="out.txt")]))
        client.execute(jid)
        wait_status(client, jid, {jpb.EXECUTING}, timeout=60)
        time.sleep(1)
        client.close()
        srv.kill9()
        time.sleep(2)  # the agent keeps running and retries its calls meanwhile
        client = srv.start()
        job = wait_status(client, jid, {jpb.SUCCESS, jpb.ERROR}, timeout=60)
        assert job.status == jpb.SUCCESS, job.status_details
        out = stdout_of(logs(client, jid)[0]).decode()
        assert out == "".join(f"line{i}\n" for i in range(1, 41))  # contiguous: nothing lost, nothing twice
        assert [f.desc.path for f in job.output_files] == ["out.txt"]
    finally:
        client.close()
        srv.proc.terminate()
        srv.proc.wait(10)


def _token_file(cluster, tmp_path):
    p = tmp_path / "ray.token"
    p.write_text(cluster.token)
    p.chmod(0o600)
    return p


def test_official_cli_runs_a_job_on_ray(ray_cluster, tmp_path):
    srv = Serve(tmp_path / "data")
    srv.extra = ["--backend", "ray", "--ray-address", ray_cluster.address, "--ray-agent-python", sys.executable,
                 "--ray-node-dir", str(tmp_path / "node"), "--ray-token-file", str(_token_file(ray_cluster, tmp_path))]
    client = srv.start()
    try:
        work = copy_example("hello", tmp_path)
        env = dict(os.environ, DSJOBS_DATASPHERE_PYTHON=official_python(), DSJOBS_ENDPOINT=client.endpoint)
        res = subprocess.run([sys.executable, "-m", "dsjobs", "datasphere", "project", "job", "execute", "-p", "off",
                              "-c", "config.yaml"], cwd=work, env=env, capture_output=True, text=True, timeout=180)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "hello from job" in res.stdout + res.stderr
        assert (work / "out" / "result.txt").read_text().startswith("Hello, DataSphere")
        (job,) = client.list("off")
        assert job.status == jpb.SUCCESS
        events = stdout_of(logs(client, job.id)[0])
        assert b"hello from job" in events
        sys_log = b"".join(m.content for m in logs(client, job.id)[0] if m.file_path == ".system.log")
        assert b"submitting attempt" in sys_log and b"on node" in sys_log
    finally:
        client.close()
        srv.proc.terminate()
        srv.proc.wait(10)


def test_head_restart_keeps_dsjobs_history(client, server, ray_cluster, tmp_path):
    done_id, op = run(client, jpb.JobParameters(cmd="echo kept > k.txt; echo history",
                                                output_files=[jpb.FileDesc(path="k.txt")]))
    assert response(op).result.return_code == 0
    running = create(client, jpb.JobParameters(cmd="while true; do sleep 0.2; done"))
    run_op = client.execute(running)
    wait_status(client, running, {jpb.EXECUTING}, timeout=60)
    ray_cluster.restart()
    run_op = wait_op(client, run_op, 90)
    job = client.get(running)
    assert job.status == jpb.ERROR and "lost" in job.status_details, job.status_details
    deadline = time.monotonic() + 30
    while left := survivors(running):
        assert time.monotonic() < deadline, f"the job's processes outlived the cluster: {described(left)}"
        time.sleep(0.2)
    # dsjobs's record of the finished job is whole: status, logs and files.
    assert client.get(done_id).status == jpb.SUCCESS
    assert stdout_of(logs(client, done_id)[0]) == b"history\n"
    files = client.jobs.DownloadJobFiles(spb.DownloadProjectJobFilesRequest(
        job_id=done_id, files=list(client.get(done_id).output_files))).download_files
    assert requests.get(files[0].url).content == b"kept\n"
    assert not any(str(j.get("submission_id")).startswith("dsjobs-") for j in ray_cluster.jobs())
    # And the restarted cluster takes new jobs.
    _, op = run(client, jpb.JobParameters(cmd="echo again"), timeout=90)
    assert response(op).result.return_code == 0


def test_signal_of_a_graceful_cancel_comes_through_the_agent(client, tmp_path):
    jid = create(client, jpb.JobParameters(
        cmd="trap 'echo got $(date +%s.%N); exit 0' HUP; echo up; while true; do sleep 0.05; done",
        graceful_shutdown_parameters=graceful(int(signal.SIGHUP), 5)))
    op = client.execute(jid)
    wait_status(client, jid, {jpb.EXECUTING}, timeout=60)
    time.sleep(0.5)
    t = time.time()
    client.cancel(jid, graceful=True)
    wait_op(client, op, 20)
    got = [line for line in stdout_of(logs(client, jid)[0]).decode().splitlines() if line.startswith("got ")]
    assert got and float(got[0].split()[1]) - t < 1.0  # SIGHUP, not Ray's TERM, and promptly
    assert client.get(jid).status == jpb.CANCELLED


@pytest.mark.docker
def test_docker_job_on_a_node_with_a_registry_password_that_never_reaches_ray(client, server, ray_cluster,
                                                                              tmp_path, registry):
    reg = registry("puller", "pa55-w0rd-RAY")
    try:
        ref = reg.push(shell_image(), "dsjobs/shell:ray")
        Secrets(tmp_path / "data").set("p1", "REGISTRY_PASSWORD", "pa55-w0rd-RAY")
        env = jpb.Environment(docker_image_spec=jpb.DockerImageSpec(
            image_url=ref, username="puller", password_ds_secret_name="REGISTRY_PASSWORD"))
        jid = create(client, jpb.JobParameters(
            cmd="echo in-container $(id -u); test -f /.dockerenv && echo docker; sleep 2; echo made > ${OUT}",
            env=env, output_files=[jpb.FileDesc(path="o.txt", var="OUT")], cloud_instance_types=types("g1.1")))
        op = client.execute(jid)
        wait_status(client, jid, {jpb.EXECUTING}, timeout=120)
        (a,) = attempts(server, jid)
        assert a.node_id == ray_cluster.worker_id
        info = ray_cluster.api(f"/api/jobs/{a.id}")
        op = wait_op(client, op, 120)
        assert not op.HasField("error"), op.error.message
        out = stdout_of(logs(client, jid)[0])
        assert b"in-container" in out and b"docker" in out
        files = response(op).output_files
        assert requests.get(files[0].url).content == b"made\n"
        assert "pa55-w0rd-RAY" not in json.dumps(info) + str(client.get(jid))
        assert not any(c for c in docker("ps", "-aq", "--filter", f"label=dsjobs.job-id={jid}").stdout.split())
    finally:
        docker("rmi", f"{reg.host}/dsjobs/shell:ray", check=False)


def test_projects_pinned_to_a_backend_and_a_wrong_token(ray_cluster, tmp_path):
    cfg = dict(ray_cfg(ray_cluster, tmp_path), backend="local", project_backends={"big": "ray"})
    s = Server(tmp_path / "data", **cfg)
    try:
        local, op = run(s.client, jpb.JobParameters(cmd="echo here"))
        assert response(op).result.return_code == 0 and attempts(s, local) == []
        remote, op = run(s.client, jpb.JobParameters(cmd="echo there"), project="big")
        assert response(op).result.return_code == 0 and attempts(s, remote)[0].backend == "ray"
    finally:
        s.stop()
    s = Server(tmp_path / "data2", **dict(ray_cfg(ray_cluster, tmp_path), ray_token="not-the-token"))
    try:
        jid, op = run(s.client, jpb.JobParameters(cmd="true"))
        assert op.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
        assert "refused the engine's credentials" in op.error.message
        assert "not-the-token" not in op.error.message
    finally:
        s.stop()


def test_progress_and_resource_stats_come_from_the_node(client, server):
    jid = create(client, jpb.JobParameters(
        cmd='echo \'{"progress": 42, "message": "half"}\' >> $JOB_PROGRESS_FILENAME; sleep 4'))
    op = client.execute(jid)
    meta = spb.ExecuteProjectJobMetadata()
    deadline = time.monotonic() + 60
    while meta.progress.progress != 42:
        assert time.monotonic() < deadline, "the job's progress never reached the operation"
        time.sleep(0.1)
        client.get_operation(op.id).metadata.Unpack(meta)
    assert meta.progress.message == "half"
    wait_op(client, op, 60)
    stats = [m for m in logs(client, jid)[0] if m.file_path == ".docker_stats.tsv"]
    assert stats and stats[0].content.startswith(b"time\tcpu_percent")


def agent_pids(attempt_id: str) -> list[int]:
    return pids_where(lambda argv: b"runners.agent" in argv and attempt_id.encode() in argv)


@pytest.mark.docker
def test_an_agent_killed_takes_its_container_with_it(client, server, ray_cluster):
    jid = create(client, jpb.JobParameters(cmd="echo up; sleep 300", env=jpb.Environment(
        docker_image_spec=jpb.DockerImageSpec(image_url=shell_image()))))
    op = client.execute(jid)
    label = f"label=dsjobs.job-id={jid}"
    try:
        # Killed as soon as the job is reported EXECUTING: its container's watchdog must exist by then.
        wait_status(client, jid, {jpb.EXECUTING}, timeout=120)
        (a,) = attempts(server, jid)
        assert docker("ps", "-q", "--filter", label).stdout.split(), "EXECUTING before its container runs"
        for pid in agent_pids(a.id):
            os.kill(pid, signal.SIGKILL)  # as `ray stop --force` or an OOM kill would
        deadline = time.monotonic() + 60  # (it would run 300 s; a Docker daemon busy with builds took 15 s once)
        while docker("ps", "-q", "--filter", label).stdout.split():
            assert time.monotonic() < deadline, "the container outlived its agent"
            time.sleep(0.1)
        op = wait_op(client, op, 60)
        job = client.get(jid)
        assert job.status == jpb.ERROR and "lost" in job.status_details, job.status_details
    finally:
        for c in docker("ps", "-aq", "--filter", label).stdout.split():
            docker("rm", "-f", c)  # the agent that would have removed it is gone; and whatever this test failed on


def test_what_needs_the_engines_disk_is_refused_in_one_place(client, server, tmp_path):
    """Mounts, datasets, output datasets and the project disk live on the engine's disk, which a node has no way
    to: one capability check refuses them before anything reaches Ray, saying what to do."""
    from engine.resources import Directories
    for kind, rid in (("mount", "s3mount0000000000001"), ("dataset", "dataset0000000000001")):
        d = tmp_path / kind
        d.mkdir()
        Directories(tmp_path / "data", kind).add(rid, d)
    for params, needle in [
        (jpb.JobParameters(cmd="ls ${s3mount0000000000001}", s3_mount_ids=["s3mount0000000000001"]), "s3 mounts"),
        (jpb.JobParameters(cmd="ls ${dataset0000000000001}", dataset_ids=["dataset0000000000001"]), "datasets"),
        (jpb.JobParameters(cmd="touch ${DS}/x", output_datasets=[jpb.OutputDatasetDesc(name="d", var="DS")]),
         "output datasets"),
        (jpb.JobParameters(cmd="ls $DS_PROJECT_HOME", attach_project_disk=True), "the project disk"),
    ]:
        jid, op = run(client, params, timeout=30)
        assert op.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0], op.error
        assert needle in op.error.message and "pin the project to the local backend" in op.error.message
        assert not attempts(server, jid)  # Ray never saw it
