"""kill -9 of `dsjobs serve` during a job, ten times, then once more while the job finishes: the job keeps running,
is never started twice, is re-adopted each time, and ends with its outputs (Nomad's TestClientState_Kill)."""
from __future__ import annotations

import os
import signal
import time

import pytest

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from tests.helpers import Serve, create, response, survivors, wait_for, wait_op, wait_status, work_dir

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def test_kill_engine_ten_times_during_a_job(tmp_path):
    srv = Serve(tmp_path / "data")
    client = srv.start()
    release = None
    try:
        cmd = ("echo $$ >> starts; while [ ! -f release ]; do sleep 0.05; done;"
               " echo finished > out.txt; echo bye")
        jid = create(client, jpb.JobParameters(cmd=cmd, output_files=[jpb.FileDesc(path="out.txt")]))
        op = client.execute(jid)
        wait_status(client, jid, {jpb.EXECUTING})
        starts, release = work_dir(srv.data_dir, jid) / "starts", work_dir(srv.data_dir, jid) / "release"
        wait_for(starts.exists, what="the job's start")
        # The job's shell, by its host pid (inside its sandbox $$ is a pid of its own namespace).
        pid = wait_for(lambda: [p for p in survivors(jid) if _comm(p) == "bash"], what="the job's shell")[0]
        for i in range(10):
            client.close()
            srv.kill9()
            assert os.path.exists(f"/proc/{pid}"), f"the job died with the engine (kill {i + 1})"
            client = srv.start()
            job = client.get(jid)
            assert job.status == jpb.EXECUTING, job.status_details
            assert client.execute(jid).id == op.id
        client.close()
        srv.kill9()
        release.touch()  # the job finishes while no engine runs
        for _ in range(100):
            if not os.path.exists(f"/proc/{pid}"):
                break
            time.sleep(0.05)
        client = srv.start()
        done = wait_op(client, client.get_operation(op.id), 30)
        assert not done.HasField("error"), done.error
        r = response(done)
        assert r.result.return_code == 0 and [f.file.desc.path for f in r.output_files] == ["out.txt"]
        assert client.get(jid).status == jpb.SUCCESS
        assert len(starts.read_text().split()) == 1  # never started twice
    finally:
        if release is not None:
            release.touch()
        client.close()
        srv.proc.terminate()
        srv.proc.wait(10)


def test_sigterm_leaves_jobs_running_and_stop_jobs_on_exit_stops_them(tmp_path):
    srv = Serve(tmp_path / "data")
    release = tmp_path / "unused"
    try:
        client = srv.start()
        cmd = "while [ ! -f release ]; do sleep 0.05; done; echo ok > out.txt"
        jid = create(client, jpb.JobParameters(cmd=cmd, output_files=[jpb.FileDesc(path="out.txt")]))
        op = client.execute(jid)
        wait_status(client, jid, {jpb.EXECUTING})
        release = work_dir(srv.data_dir, jid) / "release"
        client.close()
        t = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(15) == 0 and time.monotonic() - t < 10
        release.touch()
        client = srv.start()
        done = wait_op(client, client.get_operation(op.id), 30)
        assert not done.HasField("error") and [f.file.desc.path for f in response(done).output_files] == ["out.txt"]
        # With --stop-jobs-on-exit, SIGTERM stops running jobs (gracefully) and no record is left unfinished.
        client.close()
        srv.proc.send_signal(signal.SIGTERM)
        srv.proc.wait(15)
        srv.extra = ["--stop-jobs-on-exit"]
        client = srv.start()
        jid2 = create(client, jpb.JobParameters(cmd="sleep 600"))
        client.execute(jid2)
        wait_status(client, jid2, {jpb.EXECUTING})
        client.close()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(30) == 0
        srv.extra = []
        client = srv.start()
        try:
            job = client.get(jid2)
            assert job.status == jpb.CANCELLED and "shutting down" in job.status_details
        finally:
            client.close()
            srv.proc.terminate()
            srv.proc.wait(10)

    finally:
        release.touch()
        if srv.proc is not None and srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait(10)


def test_queued_jobs_run_after_kill9(tmp_path):
    srv = Serve(tmp_path / "data")
    srv.extra = ["--max-concurrent-jobs", "1"]
    client = srv.start()
    release = tmp_path / "unused"
    try:
        first = create(client, jpb.JobParameters(cmd="while [ ! -f release ]; do sleep 0.05; done"))
        ops = [client.execute(first)]
        wait_status(client, first, {jpb.EXECUTING})
        release = work_dir(srv.data_dir, first) / "release"
        queued = [create(client, jpb.JobParameters(cmd=f"echo queued-{i} > q.txt", output_files=[
            jpb.FileDesc(path="q.txt")])) for i in range(2)]
        ops += [client.execute(j) for j in queued]
        assert all(client.get(j).status == jpb.PREPARING for j in queued)
        client.close()
        srv.kill9()
        release.touch()
        client = srv.start()
        for op in ops:
            done = wait_op(client, client.get_operation(op.id), 60)
            assert not done.HasField("error"), done.error.message
        assert [client.get(j).status for j in [first] + queued] == [jpb.SUCCESS] * 3
    finally:
        release.touch()
        client.close()
        if srv.proc.poll() is None:
            srv.proc.terminate()
            srv.proc.wait(10)


def test_kill9_during_an_upload_leaves_nothing_under_the_digest(tmp_path):
    import hashlib
    import socket
    from urllib.parse import urlsplit
    from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
    srv = Serve(tmp_path / "data")
    client = srv.start()
    try:
        data = b"z" * (4 << 20)
        sha = hashlib.sha256(data).hexdigest()
        f = jpb.File(desc=jpb.FileDesc(path="big.bin", var="BIG"), sha256=sha, size_bytes=len(data),
                     compression_type=jpb.NONE)
        op = client.jobs.Create(spb.CreateProjectJobRequest(project_id="p", job_parameters=jpb.JobParameters(
            cmd="wc -c < ${BIG}", input_files=[f])))
        r = spb.CreateProjectJobResponse()
        op.response.Unpack(r)
        url = urlsplit(r.upload_files[0].url)
        sock = socket.create_connection((url.hostname, url.port))
        sock.sendall(f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                     + data[: len(data) // 2])
        time.sleep(0.5)  # half the body is in the engine's temp file
        tmp_dir = tmp_path / "data" / "blobs" / "tmp"
        assert any(tmp_dir.iterdir())
        client.close()
        srv.kill9()
        sock.close()
        assert not (tmp_path / "data" / "blobs" / "objects" / sha[:2] / sha[2:]).exists()
        client = srv.start()
        assert not any(tmp_dir.iterdir())  # swept at start
        import grpc
        with pytest.raises(grpc.RpcError) as e:
            client.execute(r.job_id)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "big.bin" in e.value.details()
    finally:
        client.close()
        if srv.proc.poll() is None:
            srv.proc.terminate()
            srv.proc.wait(10)


@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_supervisor_killed_with_the_engine_leaves_no_orphans(tmp_path, sandbox):
    from runners.executors.supervisor import read_file
    srv = Serve(tmp_path / "data")
    srv.extra = ["--sandbox", sandbox]
    client = srv.start()
    try:
        jid = create(client, jpb.JobParameters(cmd="sleep 300 & setsid sleep 301 & wait"))
        client.execute(jid)
        wait_status(client, jid, {jpb.EXECUTING})
        for _ in range(50):
            if len(survivors(jid)) >= 3:
                break
            time.sleep(0.05)
        info = read_file(str(tmp_path / "data" / "jobs" / jid / "supervisor"))
        client.close()
        srv.kill9()
        os.kill(info["pid"], signal.SIGKILL)  # no supervisor, no exit status: the job's processes are orphans
        time.sleep(0.2)
        if sandbox == "none":
            assert survivors(jid)  # left for the sweep at the next start
        else:
            wait_for(lambda: not survivors(jid), 5, "the sandbox dying with its supervisor")
        client = srv.start()
        job = client.get(jid)
        assert job.status == jpb.ERROR and "supervisor is gone" in job.status_details
        assert survivors(jid) == []
    finally:
        client.close()
        if srv.proc.poll() is None:
            srv.proc.terminate()
            srv.proc.wait(10)
