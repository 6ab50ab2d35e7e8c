"""GPU instance types through the real API, on a machine whose GPUs are faked by device (runners.gpus.fake: NVML
is the one fake; the jobs, the scheduler, the sandbox and Docker are real). The same checks on a real GPU machine:
bench/check_gpus.py."""
from __future__ import annotations

import os

import grpc
import pytest

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from runners import gpus, journal
from tests.conftest import Server
from tests.dockerenv import docker, shell_image
from tests.helpers import create, logs, stdout_of, wait_for, wait_op, wait_status, work_dir

pytestmark = pytest.mark.e2e

# Each job says which GPU it sees, then waits until the test lets it go (a file in the shared project disk).
HOLD = ('echo "gpu=$CUDA_VISIBLE_DEVICES nvidia=$NVIDIA_VISIBLE_DEVICES"; touch "$DS_PROJECT_HOME/up.$DSJOBS_JOB_ID"; '
        'while [ ! -e "$DS_PROJECT_HOME/go" ]; do sleep 0.05; done')


def _g11(cmd: str, **kw) -> jpb.JobParameters:
    return jpb.JobParameters(cmd=cmd, cloud_instance_types=[jpb.CloudInstanceType(name="g1.1")],
                             attach_project_disk=True, **kw)


def test_two_g1_1_jobs_on_two_gpus_run_side_by_side_each_on_its_own_and_a_third_waits(tmp_path):
    devs = gpus.fake(2)
    s = Server(tmp_path / "data", max_concurrent_jobs=4, fake_gpu_devices=devs)
    try:
        c = s.client
        home = tmp_path / "data" / "projects" / "p1" / "home"
        first = [create(c, _g11(HOLD)) for _ in range(2)]
        ops = {j: c.execute(j) for j in first}
        for j in first:
            wait_status(c, j, {jpb.EXECUTING}, timeout=60)
        wait_for(lambda: all((home / f"up.{j}").exists() for j in first), 60, "both jobs up")
        third = create(c, _g11(HOLD))
        ops[third] = c.execute(third)
        # Both GPUs are held: the third is queued (not even preparing on a GPU), the engine still has job slots.
        # The dispatcher has looked at it (its system log says why it stays queued) and held it back.
        def system_now(j):  # the job's journal as it is now (ReadLogs would follow the queued job until it ends)
            path = str(work_dir(s.data_dir, j).parent / "journal")
            return "".join(r.content.decode() for r in journal.records(path)
                           if r.stream == journal.Stream.SYSTEM) if os.path.exists(path) else ""
        wait_for(lambda: "queued: waiting for 1 GPU of instance type g1.1" in system_now(third), 30,
                 "the dispatcher holds the third job back")
        assert c.get(third).status == jpb.PREPARING and not (home / f"up.{third}").exists()
        assert not s.engine.backends["local"].owns(third)  # queued in the store, not holding a job slot
        assert s.engine.machine.pool().held(third) is None  # nor a GPU
        assert all(c.get(j).status == jpb.EXECUTING for j in first)
        cpu = create(c, jpb.JobParameters(cmd='echo "gpu=[$CUDA_VISIBLE_DEVICES] nvidia=$NVIDIA_VISIBLE_DEVICES"'))
        assert not wait_op(c, c.execute(cpu), 60).HasField("error")  # a CPU job is not held up by the GPUs
        assert stdout_of(logs(c, cpu)[0]) == b"gpu=[] nvidia=void\n"
        (home / "go").touch()
        for j, op in ops.items():
            assert not wait_op(c, op, 60).HasField("error")
        seen = {j: stdout_of(logs(c, j)[0]).decode().strip() for j in ops}
        uuids = {d.uuid for d in devs}
        got = [seen[j].split()[0].removeprefix("gpu=") for j in first]
        assert set(got) == uuids, seen  # each of the two saw one GPU, a different one
        assert all(seen[j] == f"gpu={u} nvidia={u}" for j, u in zip(first, got))
        assert seen[third].split()[0].removeprefix("gpu=") in uuids
        for j in ops:
            assert c.get(j).actual_cloud_instance_type.name == "g1.1"
            system = b"".join(m.content for m in logs(c, j)[0] if m.file_path == ".system.log").decode()
            assert "gpus: GPU-" in system
    finally:
        s.stop()


@pytest.mark.docker
def test_a_gpu_container_without_the_nvidia_toolkit_is_failed_precondition_naming_it(tmp_path):
    s = Server(tmp_path / "data", fake_gpu_devices=gpus.fake(1))
    try:
        c = s.client
        p = jpb.JobParameters(cmd="echo ran", cloud_instance_types=[jpb.CloudInstanceType(name="g1.1")],
                              env=jpb.Environment(docker_image_spec=jpb.DockerImageSpec(image_url=shell_image())))
        j = create(c, p)
        op = wait_op(c, c.execute(j), 120)
        assert op.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0], op.error
        assert "NVIDIA Container Toolkit" in op.error.message and gpus.fake(1)[0].uuid in op.error.message
        assert stdout_of(logs(c, j)[0]) == b""  # nothing ran
        assert docker("ps", "-aq", "--filter", f"label=dsjobs.job-id={j}").stdout.split() == []
        # The device is free again: the next GPU job is handed over, not queued forever.
        assert s.engine.machine.pool().can_take(1, "g1.1")
    finally:
        s.stop()
