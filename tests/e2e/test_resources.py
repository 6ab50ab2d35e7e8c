"""S3 mounts, datasets, output datasets, working storage: local stand-ins for the cloud's project resources."""
from __future__ import annotations

import grpc
import pytest

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from engine.resources import Directories
from tests.helpers import logs, response, run, stdout_of

pytestmark = pytest.mark.e2e
MOUNT = "bt1234567890abcdefgh"


def test_mounts_datasets_and_output_datasets(server, client, tmp_path):
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    (bucket / "f.txt").write_text("from s3\n")
    _, op = run(client, jpb.JobParameters(cmd=f"cat ${{{MOUNT}}}/f.txt", s3_mount_ids=[MOUNT]))
    assert op.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0] and MOUNT in op.error.message
    Directories(server.engine.cfg.data_dir, "mount").add(MOUNT, bucket)
    jid, op = run(client, jpb.JobParameters(cmd=f"cat ${{{MOUNT}}}/f.txt; echo made > ${{ODS}}/data.txt",
                                            s3_mount_ids=[MOUNT],
                                            output_datasets=[jpb.OutputDatasetDesc(name="results", var="ODS",
                                                                                   size_gb=1)]))
    r = response(op)
    assert stdout_of(logs(client, jid)[0]) == b"from s3\n"
    assert [d.desc.name for d in r.output_datasets] == ["results"]
    ds_id = r.output_datasets[0].id
    assert client.get(jid).output_datasets[0].id == ds_id
    jid2, op = run(client, jpb.JobParameters(cmd=f"cat ${{{ds_id}}}/data.txt", dataset_ids=[ds_id]))
    assert not op.HasField("error") and stdout_of(logs(client, jid2)[0]) == b"made\n"


def test_failed_job_creates_no_dataset(server, client):
    _, op = run(client, jpb.JobParameters(cmd="echo x > ${ODS}/a; exit 1", output_datasets=[
        jpb.OutputDatasetDesc(name="never", var="ODS", size_gb=1)]))
    assert list(response(op).output_datasets) == []
    assert Directories(server.engine.cfg.data_dir, "dataset").all() == {}


def test_working_storage_larger_than_the_disk_is_a_warning(client):
    p = jpb.JobParameters(cmd="true", extended_working_storage=jpb.ExtendedWorkingStorage(
        type=jpb.ExtendedWorkingStorage.SSD, size_gb=10_000_000))
    jid, op = run(client, p)
    assert not op.HasField("error") and response(op).result.return_code == 0
    system = b"".join(m.content for m in logs(client, jid)[0] if m.file_path == ".system.log")
    assert b"warning: working storage of 10000000 GB" in system
