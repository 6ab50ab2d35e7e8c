"""S3 mounts and datasets are read-only for every job: a process job reads them and cannot change them (in its
sandbox they are read-only binds, even one that lies inside a path the job may write, such as its project disk);
an engine that runs process jobs unconfined (`--sandbox none`) cannot make anything read-only and refuses them."""
from __future__ import annotations

import os

import grpc
import pytest

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from engine.resources import Directories
from tests.conftest import Server
from tests.helpers import logs, run, stdout_of

pytestmark = pytest.mark.e2e
DATASET, MOUNT, NESTED = "dataset0000000000001", "s3mount0000000000001", "nested00000000000001"


def _open_to_all(d):
    """Writable by every uid (a root engine runs jobs as nobody): only the read-only bind can refuse a write."""
    d.mkdir(parents=True)
    (d / "f.txt").write_text("data\n")
    os.chmod(d, 0o777)
    os.chmod(d / "f.txt", 0o666)
    return d


def _writes(var: str) -> str:
    return (f"cat ${{{var}}}/f.txt; for w in 'touch ${{{var}}}/new' 'echo x >> ${{{var}}}/f.txt' "
            f"'rm ${{{var}}}/f.txt' 'mkdir ${{{var}}}/d'; do bash -c \"$w\" 2>/dev/null && echo \"{var} changed\" "
            f"|| echo \"{var} unchanged\"; done; ")


def test_a_process_job_reads_mounts_and_datasets_and_cannot_write_them(server, tmp_path):
    data = server.data_dir
    dataset, bucket = _open_to_all(tmp_path / "dataset"), _open_to_all(tmp_path / "bucket")
    nested = _open_to_all(data / "projects" / "p1" / "home" / "nested")  # inside the project disk
    Directories(data, "dataset").add(DATASET, dataset)
    Directories(data, "dataset").add(NESTED, nested)
    Directories(data, "mount").add(MOUNT, bucket)
    cmd = _writes(DATASET) + _writes(MOUNT) + _writes(NESTED) + "echo home > $DS_PROJECT_HOME/mine && echo home ok"
    jid, op = run(server.client, jpb.JobParameters(cmd=cmd, dataset_ids=[DATASET, NESTED], s3_mount_ids=[MOUNT],
                                                   attach_project_disk=True))
    assert not op.HasField("error"), op.error.message
    out = stdout_of(logs(server.client, jid)[0]).decode().splitlines()
    for var in (DATASET, MOUNT, NESTED):
        assert out.count(f"{var} unchanged") == 4 and f"{var} changed" not in out, out
    assert out.count("data") == 3 and "home ok" in out, out  # it saw the data, and its project disk is its own
    for d in (dataset, bucket, nested):
        assert sorted(os.listdir(d)) == ["f.txt"] and (d / "f.txt").read_text() == "data\n"
    assert (data / "projects" / "p1" / "home" / "mine").read_text() == "home\n"


def test_an_unconfined_engine_refuses_them_and_runs_nothing(tmp_path):
    s = Server(tmp_path / "data", sandbox="none")
    try:
        dataset = _open_to_all(tmp_path / "dataset")
        Directories(s.data_dir, "dataset").add(DATASET, dataset)
        Directories(s.data_dir, "mount").add(MOUNT, dataset)
        for params in (jpb.JobParameters(cmd=f"touch ${{{DATASET}}}/new", dataset_ids=[DATASET]),
                       jpb.JobParameters(cmd=f"touch ${{{MOUNT}}}/new", s3_mount_ids=[MOUNT])):
            jid, op = run(s.client, params)
            assert op.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0], op.error
            rid = (list(params.dataset_ids) + list(params.s3_mount_ids))[0]
            assert rid in op.error.message and "read-only" in op.error.message and "unconfined" in \
                op.error.message, op.error.message
            assert s.client.get(jid).status == jpb.ERROR
        assert sorted(os.listdir(dataset)) == ["f.txt"]
        jid, op = run(s.client, jpb.JobParameters(cmd="echo fine"))  # without them, its jobs run as before
        assert not op.HasField("error") and stdout_of(logs(s.client, jid)[0]) == b"fine\n"
    finally:
        s.stop()
