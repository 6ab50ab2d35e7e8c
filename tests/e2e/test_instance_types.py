"""A process job (no image) asks for GPU instance types as a Docker job does: the first type this machine can
serve runs and is reported, and a job only GPU types would serve fails with FAILED_PRECONDITION. The machine's GPU
count is faked (``fake_gpus``), so that the test says the same on a machine with a GPU."""
from __future__ import annotations

import grpc
import pytest

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from tests.conftest import Server
from tests.helpers import logs, response, run, stdout_of

pytestmark = pytest.mark.e2e


def _types(*names):
    return [jpb.CloudInstanceType(name=n) for n in names]


def _system(client, jid) -> str:
    return b"".join(m.content for m in logs(client, jid)[0] if m.file_path == ".system.log").decode()


def test_without_a_gpu_a_process_job_skips_to_a_type_it_can_have_or_fails(tmp_path):
    s = Server(tmp_path / "data", fake_gpus=0)
    try:
        c = s.client
        jid, op = run(c, jpb.JobParameters(cmd="echo ran", cloud_instance_types=_types("g2.1", "c1.8")))
        assert not op.HasField("error"), op.error.message
        assert response(op).result.return_code == 0 and stdout_of(logs(c, jid)[0]) == b"ran\n"
        job = c.get(jid)
        assert job.status == jpb.SUCCESS and job.actual_cloud_instance_type.name == "c1.8"
        assert "instance type g2.1 needs 1 GPU; this machine has 0: skipped" in _system(c, jid)
        assert "preparing: instance type c1.8" in _system(c, jid)

        jid, op = run(c, jpb.JobParameters(cmd="echo ran > ran.txt", cloud_instance_types=_types("g1.1"),
                                           output_files=[jpb.FileDesc(path="ran.txt")]))
        assert op.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0], op.error
        assert "g1.1" in op.error.message and "no GPU" in op.error.message, op.error.message
        job = c.get(jid)
        assert job.status == jpb.ERROR and not job.HasField("actual_cloud_instance_type")
        assert not (s.work_dir(jid) / "ran.txt").exists()  # nothing ran
    finally:
        s.stop()


def test_with_a_gpu_the_gpu_type_is_the_one_that_runs(tmp_path):
    s = Server(tmp_path / "data", fake_gpus=1)
    try:
        jid, op = run(s.client, jpb.JobParameters(cmd="true", cloud_instance_types=_types("g1.1", "c1.8")))
        assert not op.HasField("error"), op.error.message
        assert s.client.get(jid).actual_cloud_instance_type.name == "g1.1"
        jid, op = run(s.client, jpb.JobParameters(cmd="true", cloud_instance_types=_types("g1.2")))
        assert op.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
        assert "g1.2 needs 2 GPUs" in op.error.message and "it has 1 GPU" in op.error.message, op.error.message
    finally:
        s.stop()
