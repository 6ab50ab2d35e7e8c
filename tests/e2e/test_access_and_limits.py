"""Tokens, listening addresses, and gRPC bounds."""
from __future__ import annotations

import grpc
import pytest

from dsjobs.client import Client
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
from engine.api.server import start_grpc
from tests.helpers import create, run

pytestmark = pytest.mark.e2e


def test_tokens_required_and_name_recorded(server):
    srv, port = start_grpc(server.engine, "127.0.0.1:0", tokens={"s3cret": "alice"})
    try:
        anon = Client(f"127.0.0.1:{port}", token="")
        for call in (lambda: anon.get("x"), lambda: list(anon.jobs.ReadLogs(spb.ReadProjectJobLogsRequest(job_id="x"))),
                     lambda: anon.get_operation("x")):
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        wrong = Client(f"127.0.0.1:{port}", token="guess")
        with pytest.raises(grpc.RpcError) as e:
            wrong.get("x")
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        alice = Client(f"127.0.0.1:{port}", token="s3cret")
        op = alice.jobs.Create(spb.CreateProjectJobRequest(project_id="p", job_parameters=jpb.JobParameters(cmd="true")))
        r = spb.CreateProjectJobResponse()
        op.response.Unpack(r)
        assert alice.get(r.job_id).created_by_id == "alice"
    finally:
        srv.stop(0)


def test_non_loopback_without_token_refused(server):
    with pytest.raises(PermissionError, match="without a token"):
        start_grpc(server.engine, "0.0.0.0:0", no_auth=True)
    # With authentication on (the default) a non-loopback address is served: every call still needs the token.
    srv, port = start_grpc(server.engine, "0.0.0.0:0")
    try:
        with pytest.raises(grpc.RpcError) as e:
            Client(f"127.0.0.1:{port}", token="").get("ds" + "0" * 18)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "token" in e.value.details()
    finally:
        srv.stop(0)


def test_oversized_request_is_resource_exhausted(client):
    with pytest.raises(grpc.RpcError) as e:
        client.jobs.Create(spb.CreateProjectJobRequest(project_id="p", job_parameters=jpb.JobParameters(
            cmd="true"), config="x" * (5 * 1024 * 1024)))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_log_flood_is_capped_and_does_not_block(tmp_path):
    from tests.conftest import Server
    s = Server(tmp_path / "data", log_limit_bytes=1 << 20)
    try:
        # 64 MiB at full speed on stdout; the stream is capped at 1 MiB with a marker, the job is not blocked.
        jid, op = run(s.client, jpb.JobParameters(cmd="head -c 67108864 /dev/zero | tr '\\0' 'x' | fold -w 100; echo tail >&2"),
                      timeout=120)
        assert not op.HasField("error")
        job = s.client.get(jid)
        assert job.status == jpb.SUCCESS
        sizes = {f.desc.path.rsplit("/", 1)[1]: f.size_bytes for f in job.log_files}
        assert sizes["stdout.txt"] <= (1 << 20) + 200
        out = (s.engine.jobs.run_dir(jid) / "stdout.txt").read_bytes()
        assert out.endswith(b"log limit reached: further output of this stream is dropped\n")
        assert (s.engine.jobs.run_dir(jid) / "stderr.txt").read_bytes() == b"tail\n"
    finally:
        s.stop()


def test_more_concurrent_calls_than_configured_get_resource_exhausted(server):
    from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb2
    srv, port = start_grpc(server.engine, "127.0.0.1:0", max_concurrent_rpcs=2)
    c = Client(f"127.0.0.1:{port}", token=server.engine.token)
    try:
        jid = create(c, jpb.JobParameters(cmd="sleep 5"))
        c.execute(jid)
        streams = [c.jobs.ReadLogs(spb2.ReadProjectJobLogsRequest(job_id=jid, offset=-1)) for _ in range(2)]
        import time
        time.sleep(1.0)  # both streams are now being served, and stay open while the job runs
        with pytest.raises(grpc.RpcError) as e:
            c.get(jid)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for st in streams:
            st.cancel()
        time.sleep(0.5)  # the server notices the cancelled streams and frees their slots
        c.get(jid)
    finally:
        c.close()
        srv.stop(0)


@pytest.mark.slow
def test_one_gigabyte_flood_is_not_blocked_and_capped(tmp_path):
    import resource
    import time
    from tests.conftest import Server
    s = Server(tmp_path / "data", log_limit_bytes=1 << 20)
    try:
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.monotonic()
        jid, op = run(s.client, jpb.JobParameters(cmd="head -c 1073741824 /dev/zero | tr '\\0' 'y' | fold -w 1000; echo done >&2"),
                      timeout=300)
        took = time.monotonic() - t
        job = s.client.get(jid)
        assert job.status == jpb.SUCCESS and took < 120
        sizes = {f.desc.path.rsplit("/", 1)[1]: f.size_bytes for f in job.log_files}
        assert sizes["stdout.txt"] <= (1 << 20) + 200 and sizes["stderr.txt"] == 5
        journal = s.engine.jobs.run_dir(jid) / "journal"
        assert journal.stat().st_size < 3 * (1 << 20)  # the disk is not filled either
        # The engine never held the flood in memory (the supervisor drains it; the engine reads files).
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 200 * 1024
    finally:
        s.stop()
