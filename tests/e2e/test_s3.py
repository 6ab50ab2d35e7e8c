"""S3 connectors as the cloud gives them: `/job/s3/<id>/` in a container (and `${<id>}` resolving to it), read-only
for every job, and, with `dsjobs mount add ID --s3 ENDPOINT/BUCKET`, backed by a real S3 server (moto's server mode
on loopback): the bucket's objects copied in before the job (cached by ETag), the endpoint and keys given to the
job, which writes back through the S3 API."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import botocore.config
import pytest

from dsjobs.cli import main as dsjobs_main
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from engine.resources import Secrets
from tests.conftest import Server
from tests.dockerenv import shell_image
from tests.helpers import ROOT, blob, logs, response, run, stdout_of

pytestmark = pytest.mark.e2e

RID = "s3conn0000000000000a"
BUCKET = "ds-bucket"
PUT = b'''import os
import s3sync

if __name__ == "__main__":
    b = s3sync.Bucket(os.environ["AWS_ENDPOINT_URL"], "ds-bucket", os.environ["AWS_DEFAULT_REGION"],
                      os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
    print("put", b.put("results/out.txt", b"written back by the job"))
'''


@pytest.fixture(scope="module")
def moto():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1).read()
            break
        except OSError:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.05)
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing", config=botocore.config.Config(s3={"addressing_style": "path"}))
    s3.create_bucket(Bucket=BUCKET)
    yield url, s3
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(10)


def _system(c, jid) -> str:
    return b"".join(m.content for m in logs(c, jid)[0] if m.file_path == ".system.log").decode()


def test_a_bucket_backed_mount_is_copied_in_cached_by_etag_read_only_and_written_back_through_s3(tmp_path, moto):
    url, s3 = moto
    s3.put_object(Bucket=BUCKET, Key="data/a.txt", Body=b"alpha\n")
    s3.put_object(Bucket=BUCKET, Key="data/sub/b.txt", Body=b"beta\n")
    s3.put_object(Bucket=BUCKET, Key="other/not-mine.txt", Body=b"x")
    data = tmp_path / "data"
    assert dsjobs_main(["mount", "add", RID, "--s3", f"{url}/{BUCKET}/data", "--data-dir", str(data)]) == 0
    secrets = Secrets(data)
    secrets.set("p1", "AWS_ACCESS_KEY_ID", "testing")
    secrets.set("p1", "AWS_SECRET_ACCESS_KEY", "testing")
    s = Server(data)
    try:
        c = s.client
        cmd = (f"cat ${{{RID}}}/a.txt ${{{RID}}}/sub/b.txt; ls ${{{RID}}}; "
               f"(touch ${{{RID}}}/new.txt 2>/dev/null && echo writable) || echo read-only; python3 put.py")
        files = [blob(PUT, "put.py"), blob((ROOT / "runners" / "s3sync.py").read_bytes(), "s3sync.py")]
        jid, op = run(c, jpb.JobParameters(cmd=cmd, s3_mount_ids=[RID]), files, timeout=120)
        assert not op.HasField("error"), op.error.message
        out = stdout_of(logs(c, jid)[0]).decode()
        assert response(op).result.return_code == 0, out + _system(c, jid)
        assert out.startswith("alpha\nbeta\na.txt\nsub\nread-only\nput "), out
        assert s3.get_object(Bucket=BUCKET, Key="results/out.txt")["Body"].read() == b"written back by the job"
        assert f"s3 mount {RID}: s3://{BUCKET}/data/ at {url}: 2 object(s) copied, 0 unchanged" in _system(c, jid)
        assert "testing" not in _system(c, jid)  # the keys are in no log

        s3.put_object(Bucket=BUCKET, Key="data/sub/b.txt", Body=b"beta, changed\n")
        s3.put_object(Bucket=BUCKET, Key="data/c.txt", Body=b"gamma\n")
        jid, op = run(c, jpb.JobParameters(cmd=f"cat ${{{RID}}}/sub/b.txt ${{{RID}}}/c.txt", s3_mount_ids=[RID]))
        assert not op.HasField("error"), op.error.message
        assert stdout_of(logs(c, jid)[0]) == b"beta, changed\ngamma\n"
        assert "2 object(s) copied, 1 unchanged (ETag)" in _system(c, jid)

        # A mount whose keys the project does not have: FAILED_PRECONDITION naming the secret.
        jid, op = run(c, jpb.JobParameters(cmd="true", s3_mount_ids=[RID]), project="p2")
        assert op.error.code == 9 and "AWS_ACCESS_KEY_ID" in op.error.message, op.error
        assert f"s3 mount {RID}" in op.error.message, op.error  # which mount needs it
    finally:
        s.stop()


@pytest.mark.docker
def test_in_a_container_the_mount_is_at_job_s3_id_and_read_only(tmp_path, moto):
    url, s3 = moto
    s3.put_object(Bucket=BUCKET, Key="box/hello.txt", Body=b"hello from s3\n")
    data = tmp_path / "data"
    assert dsjobs_main(["mount", "add", RID, "--s3", f"{url}/{BUCKET}/box", "--data-dir", str(data)]) == 0
    Secrets(data).set("p1", "AWS_ACCESS_KEY_ID", "testing")
    Secrets(data).set("p1", "AWS_SECRET_ACCESS_KEY", "testing")
    s = Server(data)
    try:
        cmd = (f"echo ${{{RID}}}; cat /job/s3/{RID}/hello.txt; "
               f"(touch /job/s3/{RID}/x 2>/dev/null && echo writable) || echo read-only")
        env = jpb.Environment(docker_image_spec=jpb.DockerImageSpec(image_url=shell_image()))
        jid, op = run(s.client, jpb.JobParameters(cmd=cmd, s3_mount_ids=[RID], env=env), timeout=120)
        assert not op.HasField("error"), op.error.message
        assert stdout_of(logs(s.client, jid)[0]) == f"/job/s3/{RID}\nhello from s3\nread-only\n".encode()
    finally:
        s.stop()


def test_a_running_job_keeps_reading_the_bucket_as_it_was_when_it_started(tmp_path, moto):
    """A second job syncs the changed bucket while the first still runs: each reads its own snapshot, and the
    first one's goes once nothing reads it."""
    from tests.helpers import create, wait_for, wait_op, wait_output
    url, s3 = moto
    s3.put_object(Bucket=BUCKET, Key="snap/v.txt", Body=b"one\n")
    data = tmp_path / "data"
    assert dsjobs_main(["mount", "add", RID, "--s3", f"{url}/{BUCKET}/snap", "--data-dir", str(data)]) == 0
    Secrets(data).set("p1", "AWS_ACCESS_KEY_ID", "testing")
    Secrets(data).set("p1", "AWS_SECRET_ACCESS_KEY", "testing")
    s = Server(data)
    try:
        c = s.client
        hold = (f'cat ${{{RID}}}/v.txt; while [ ! -e "$DS_PROJECT_HOME/go" ]; do sleep 0.05; done; '
                f'cat ${{{RID}}}/v.txt')
        first = create(c, jpb.JobParameters(cmd=hold, s3_mount_ids=[RID], attach_project_disk=True))
        op1 = c.execute(first)
        wait_output(c, first, b"one\n", 60)
        s3.put_object(Bucket=BUCKET, Key="snap/v.txt", Body=b"two\n")
        jid, op = run(c, jpb.JobParameters(cmd=f"cat ${{{RID}}}/v.txt", s3_mount_ids=[RID]), timeout=60)
        assert not op.HasField("error"), op.error.message
        assert stdout_of(logs(c, jid)[0]) == b"two\n"
        snaps = data / "s3" / f".{RID}.snapshots" / "snap"
        assert len(os.listdir(snaps)) == 2  # the first job's is still read
        (data / "projects" / "p1" / "home" / "go").touch()
        assert not wait_op(c, op1, 60).HasField("error")
        assert stdout_of(logs(c, first)[0]) == b"one\none\n"  # the file did not change under it
        wait_for(lambda: len(os.listdir(snaps)) == 1, 30, "the first job's snapshot removed")
    finally:
        s.stop()
