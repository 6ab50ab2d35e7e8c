"""DownloadJobFiles gives each file back under the path it was asked for, even when contents coincide: two
equal outputs, an empty output, an empty stdout and an empty stderr (which all share one digest). Through the
API, and through the official CLI's `download-files --with-logs`."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import grpc
import pytest
import requests

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
from tests.helpers import official_python, run

pytestmark = pytest.mark.e2e
EMPTY = hashlib.sha256(b"").hexdigest()


def _job_with_coinciding_files(client) -> jpb.Job:
    jid, op = run(client, jpb.JobParameters(
        cmd="printf same > a.txt; printf same > b.txt; : > empty.txt",  # nothing on stdout or stderr
        output_files=[jpb.FileDesc(path="a.txt"), jpb.FileDesc(path="b.txt"), jpb.FileDesc(path="empty.txt")]))
    assert not op.HasField("error"), op.error.message
    return client.get(jid)


def test_each_file_comes_back_at_its_own_path(client):
    job = _job_with_coinciding_files(client)
    logs = {os.path.basename(f.desc.path): f for f in job.log_files}
    assert set(logs) == {"stdout.txt", "stderr.txt", "system.log"}
    assert logs["stdout.txt"].sha256 == logs["stderr.txt"].sha256 == EMPTY  # the case that lost stdout.txt
    asked = list(job.output_files) + list(job.log_files)
    r = client.jobs.DownloadJobFiles(spb.DownloadProjectJobFilesRequest(job_id=job.id, files=asked))
    assert [f.file.desc.path for f in r.download_files] == [f.desc.path for f in asked]
    got = {f.file.desc.path: requests.get(f.url).content for f in r.download_files}
    assert got["a.txt"] == got["b.txt"] == b"same" and got["empty.txt"] == b""
    assert got[logs["stdout.txt"].desc.path] == got[logs["stderr.txt"].desc.path] == b""
    assert b"job completed successfully" in got[logs["system.log"].desc.path]

    # Asked for by path alone, a file is found too; by a digest alone, one file with that digest, at its path.
    alone = client.jobs.DownloadJobFiles(spb.DownloadProjectJobFilesRequest(job_id=job.id, files=[
        jpb.File(desc=jpb.FileDesc(path="b.txt")), jpb.File(sha256=EMPTY)]))
    assert alone.download_files[0].file.desc.path == "b.txt"
    assert alone.download_files[1].file.sha256 == EMPTY and alone.download_files[1].file.desc.path in \
        {"empty.txt"} | {f.desc.path for f in job.log_files}

    # A path the job has with a digest it does not have there is no file of the job.
    wrong = jpb.File(desc=jpb.FileDesc(path="empty.txt"), sha256=job.output_files[0].sha256)
    with pytest.raises(grpc.RpcError) as e:
        client.jobs.DownloadJobFiles(spb.DownloadProjectJobFilesRequest(job_id=job.id, files=[wrong]))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and "'empty.txt'" in e.value.details(), e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        client.jobs.DownloadJobFiles(spb.DownloadProjectJobFilesRequest(job_id=job.id, files=[
            jpb.File(desc=jpb.FileDesc(path="nope.txt"))]))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and "'nope.txt'" in e.value.details()


@pytest.mark.slow
def test_the_official_cli_downloads_every_file_with_logs(server, client, tmp_path):
    job = _job_with_coinciding_files(client)
    out = tmp_path / "dl"
    env = dict(os.environ, DSJOBS_DATASPHERE_PYTHON=official_python(), DSJOBS_ENDPOINT=client.endpoint,
               DSJOBS_TOKEN=server.engine.token)
    res = subprocess.run([sys.executable, "-m", "dsjobs", "datasphere", "project", "job", "download-files", "--id",
                          job.id, "--with-logs", "--output-dir", str(out)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    got = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(got) == {"a.txt", "b.txt", "empty.txt", "stdout.txt", "stderr.txt", "system.log"}, sorted(got)
    assert got["a.txt"] == got["b.txt"] == b"same"
    assert got["empty.txt"] == got["stdout.txt"] == got["stderr.txt"] == b""
    assert b"job completed successfully" in got["system.log"]
