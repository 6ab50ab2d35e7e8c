"""End to end through the real gRPC API, real HTTP uploads/downloads and real processes."""
from __future__ import annotations


import grpc
import pytest
import requests

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
from tests.helpers import blob, create, logs, response, run, wait_op, wait_status

pytestmark = pytest.mark.e2e


def test_unknown_var_and_bad_requests(client):
    with pytest.raises(grpc.RpcError) as e:
        create(client, jpb.JobParameters(cmd="echo ${NOPE}"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "NOPE" in e.value.details()
    for params, needle in [
        (jpb.JobParameters(cmd="  "), "cmd"),
        (jpb.JobParameters(cmd="true", output_files=[jpb.FileDesc(path="../x")]), "../x"),
        (jpb.JobParameters(cmd="true", output_files=[jpb.FileDesc(path="/etc/x")]), "/etc/x"),
        (jpb.JobParameters(cmd="true", output_files=[jpb.FileDesc(path="a", var="V"), jpb.FileDesc(path="b", var="V")]), "'V'"),
        (jpb.JobParameters(cmd="true", cloud_instance_types=[jpb.CloudInstanceType(name="z9.9")]), "z9.9"),
    ]:
        with pytest.raises(grpc.RpcError) as e:
            create(client, params)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and needle in e.value.details(), e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        client.jobs.Create(spb.CreateProjectJobRequest(project_id="", job_parameters=jpb.JobParameters(cmd="true")))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _calls_with_ids(client, job_id: str, op_id: str):
    return [
        ("job_id", lambda: client.jobs.Get(spb.GetProjectJobRequest(job_id=job_id))),
        ("job_id", lambda: client.jobs.Execute(spb.ExecuteProjectJobRequest(job_id=job_id))),
        ("job_id", lambda: client.jobs.Cancel(spb.CancelProjectJobRequest(job_id=job_id))),
        ("job_id", lambda: list(client.jobs.ReadLogs(spb.ReadProjectJobLogsRequest(job_id=job_id)))),
        ("job_id", lambda: list(client.jobs.ReadStdLogs(spb.ReadProjectJobStdLogsRequest(job_id=job_id)))),
        ("job_id", lambda: client.jobs.Delete(spb.DeleteProjectJobRequest(job_id=job_id))),
        ("job_id", lambda: client.jobs.DeleteData(spb.DeleteProjectJobDataRequest(job_id=job_id))),
        ("job_id", lambda: client.jobs.SetDataTtl(spb.SetProjectJobDataTtlRequest(job_id=job_id))),
        ("source_job_id", lambda: client.jobs.Clone(spb.CloneProjectJobRequest(source_job_id=job_id))),
        ("job_id", lambda: client.jobs.DownloadJobFiles(spb.DownloadProjectJobFilesRequest(job_id=job_id,
                                                                                           files=[jpb.File()]))),
        ("operation_id", lambda: client.get_operation(op_id)),
    ]


def test_unknown_ids_are_not_found(client):
    unknown_job, unknown_op = "ds" + "0" * 18, "op" + "0" * 18  # well formed, never made
    for _, call in _calls_with_ids(client, unknown_job, unknown_op):
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == grpc.StatusCode.NOT_FOUND, e.value.details()
        assert unknown_job in e.value.details() or unknown_op in e.value.details()


def test_malformed_ids_are_invalid_arguments_naming_field_and_value(client):
    for bad in ("nope", "../x", "ds" + "z" * 18, "ds0000\x00", "ds" + "0" * 300):
        for field, call in _calls_with_ids(client, bad, bad):
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (bad, e.value.details())
            assert field in e.value.details() and repr(bad[:20])[:-1] in e.value.details(), e.value.details()


def test_execute_needs_uploads_and_attach_returns_same_operation(client):
    f, data = blob(b"x" * 10, "in.bin", "IN")
    job_id = create(client, jpb.JobParameters(cmd="cat ${IN}", input_files=[f]), {})  # upload skipped
    with pytest.raises(grpc.RpcError) as e:
        client.execute(job_id)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "in.bin" in e.value.details()
    job_id = create(client, jpb.JobParameters(cmd="sleep 0.3", input_files=[f]), {f.sha256: data})
    op1 = client.execute(job_id)
    op2 = client.execute(job_id)
    assert op1.id == op2.id
    done = wait_op(client, op2)
    assert client.execute(job_id).id == done.id and client.execute(job_id).done
    # Same content again: already stored, so no upload URL.
    op = client.jobs.Create(spb.CreateProjectJobRequest(project_id="p1", job_parameters=jpb.JobParameters(
        cmd="cat ${IN}", input_files=[f])))
    r = spb.CreateProjectJobResponse()
    op.response.Unpack(r)
    assert op.done and list(r.upload_files) == []


def test_operation_metadata_carries_job_and_progress(client):
    p = jpb.JobParameters(cmd='echo \'{"progress": 42, "message": "half"}\' >> $JOB_PROGRESS_FILENAME; sleep 0.5')
    job_id = create(client, p)
    op = client.execute(job_id)
    meta = spb.ExecuteProjectJobMetadata()
    for _ in range(100):
        op = client.get_operation(op.id)
        op.metadata.Unpack(meta)
        if meta.progress.progress == 42:
            break
        import time
        time.sleep(0.02)
    assert meta.progress.progress == 42 and meta.progress.message == "half"
    assert meta.job.id == job_id and meta.job.project_id == "p1" and meta.metadata.id == job_id
    wait_op(client, op)


def test_upload_digest_size_and_signature_checks(client, server):
    f, data = blob(b"real content", "in.txt", "IN")
    op = client.jobs.Create(spb.CreateProjectJobRequest(project_id="p1", job_parameters=jpb.JobParameters(
        cmd="cat ${IN}", input_files=[f])))
    r = spb.CreateProjectJobResponse()
    op.response.Unpack(r)
    url = r.upload_files[0].url
    blobs = server.engine.blobs
    assert requests.put(url, data=b"fake content").status_code == 400  # same size, other digest
    assert requests.put(url, data=b"short").status_code == 400
    assert requests.put(url, data=b"real content and more").status_code == 400
    assert not blobs.has(f.sha256) and list(blobs.tmp.iterdir()) == []
    assert requests.put(url.replace("size=12", "size=13"), data=data).status_code == 403  # altered
    assert requests.put(url[:-4] + "0000", data=data).status_code == 403  # tampered signature
    assert requests.get(url).status_code == 403  # a PUT URL is not a GET URL
    other = url.replace(f.sha256, "0" * 64)
    assert requests.put(other, data=data).status_code == 403  # signed for another object
    signer = server.engine.jobs.signer
    expired = signer.url("PUT", f.sha256, f.size_bytes, ttl_s=-1)
    assert requests.put(expired, data=data).status_code == 403
    assert requests.put(url, data=data).status_code == 201
    assert blobs.has(f.sha256)
    assert requests.put(url, data=data).status_code == 201  # idempotent


def test_list_paging_and_status_filter(client):
    ok = [create(client, jpb.JobParameters(cmd="true"), project="plist") for _ in range(20)]
    for jid in ok[:5]:
        wait_op(client, client.execute(jid))
    seen, token = [], ""
    while True:
        resp = client.jobs.List(spb.ListProjectJobRequest(project_id="plist", page_size=7, page_token=token))
        assert len(resp.jobs) <= 7
        seen += [j.id for j in resp.jobs]
        token = resp.next_page_token
        if not token:
            break
    assert seen == list(reversed(ok))  # newest first, each once
    for extra in range(5):
        create(client, jpb.JobParameters(cmd="true"), project="plist")
    creating = client.list("plist", "status IN (CREATING)")
    assert len(creating) == 20
    done = client.list("plist", "status IN (SUCCESS, ERROR)")
    assert sorted(j.id for j in done) == sorted(ok[:5])
    with pytest.raises(grpc.RpcError) as e:
        client.list("plist", "name = x")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        client.list("plist", "status IN (BOGUS)")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "BOGUS" in e.value.details()


def test_clone_with_overrides(client):
    a = blob(b"one", "a.txt", "A")
    src_params = jpb.JobParameters(cmd="cat ${A} > ${O}; echo ${N} $E1 $E2 >> ${O}",
                                   output_files=[jpb.FileDesc(path="o.txt", var="O")],
                                   arguments=[jpb.Argument(name="N", value="1")],
                                   env=jpb.Environment(vars={"E1": "x", "E2": "y"}))
    src_id, op = run(client, src_params, [a])
    assert requests.get(response(op).output_files[0].url).content == b"one1 x y\n"
    b, bdata = blob(b"two", "b.txt", "A")
    op = client.jobs.Clone(spb.CloneProjectJobRequest(
        source_job_id=src_id, job_parameters_overrides=jpb.JobParameters(
            input_files=[b], arguments=[jpb.Argument(name="N", value="2")],
            env=jpb.Environment(vars={"E2": "z"}))))
    r = spb.CloneProjectJobResponse()
    op.response.Unpack(r)
    assert [f.file.sha256 for f in r.upload_files] == [b.sha256]
    requests.put(r.upload_files[0].url, data=bdata).raise_for_status()
    done = wait_op(client, client.execute(r.job_id))
    assert requests.get(response(done).output_files[0].url).content == b"two2 x z\n"
    clone = client.get(r.job_id)
    assert clone.parent_job_id == src_id and clone.job_parameters.cmd == src_params.cmd


def test_delete_and_delete_data(client, server):
    jid, op = run(client, jpb.JobParameters(cmd="echo hi > o.txt", output_files=[jpb.FileDesc(path="o.txt")]))
    url = response(op).output_files[0].url
    client.jobs.DeleteData(spb.DeleteProjectJobDataRequest(job_id=jid))
    job = client.get(jid)
    assert job.data_cleared
    assert requests.get(url).status_code == 404
    assert not (server.engine.jobs.run_dir(jid)).exists()
    with pytest.raises(grpc.RpcError) as e:
        client.jobs.DownloadJobFiles(spb.DownloadProjectJobFilesRequest(job_id=jid, files=list(job.output_files)))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    dop = client.jobs.Delete(spb.DeleteProjectJobRequest(job_id=jid))
    assert dop.done
    with pytest.raises(grpc.RpcError) as e:
        client.get(jid)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    running = create(client, jpb.JobParameters(cmd="sleep 5"))
    client.execute(running)
    wait_status(client, running, {jpb.EXECUTING})
    with pytest.raises(grpc.RpcError) as e:
        client.jobs.Delete(spb.DeleteProjectJobRequest(job_id=running))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    client.cancel(running)


@pytest.mark.parametrize("params,needle", [
    (jpb.JobParameters(cmd="true", env=jpb.Environment(docker_image_resource_id="b1gimage")), "dsjobs image add b1gimage"),
    (jpb.JobParameters(cmd="ls ${bt1234567890abcdefgh}", dataset_ids=["bt1234567890abcdefgh"]), "bt1234567890abcdefgh"),
    (jpb.JobParameters(cmd="true", spark_parameters=jpb.SparkParameters(connector_id="c1")), "Spark"),
])
def test_what_is_not_available_fails_clearly(client, params, needle):
    job_id, op = run(client, params)
    assert op.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0] and needle in op.error.message
    assert client.get(job_id).status == jpb.ERROR


def test_delete_all_data(client):
    ids = [run(client, jpb.JobParameters(cmd="echo x > o", output_files=[jpb.FileDesc(path="o")]),
               project="pall")[0] for _ in range(2)]
    op = client.jobs.DeleteAllData(spb.DeleteAllProjectJobDataRequest(project_id="pall"))
    assert op.done
    assert all(client.get(i).data_cleared for i in ids)


def test_janitor_clears_expired_data_and_unreferenced_blobs(tmp_path):
    from tests.conftest import Server
    s = Server(tmp_path / "data", janitor_interval_s=0.2)
    try:
        c = s.client
        shared = blob(b"shared input", "in.txt", "IN")
        jid, op = run(c, jpb.JobParameters(cmd="cat ${IN} > o.txt; echo more >> o.txt", output_files=[jpb.FileDesc(path="o.txt")]),
                      [shared])
        keep, _ = run(c, jpb.JobParameters(cmd="cat ${IN}"), [shared])
        out_sha = response(op).output_files[0].file.sha256
        ttl = spb.SetProjectJobDataTtlRequest(job_id=jid)
        ttl.ttl.nanos = 1
        c.jobs.SetDataTtl(ttl)
        wait = __import__("time").monotonic() + 10
        while not c.get(jid).data_cleared:
            assert __import__("time").monotonic() < wait, "janitor did not clear the data"
            __import__("time").sleep(0.05)
        blobs = s.engine.blobs
        assert not blobs.has(out_sha)  # no job references it any more
        assert blobs.has(shared[0].sha256)  # still used by the other job
        assert c.get(jid).status == jpb.SUCCESS and not c.get(keep).data_cleared
    finally:
        s.stop()


def test_process_jobs_stream_resource_stats(server, client):
    server.engine.machine.process.STATS_INTERVAL_S = 0.2
    jid, op = run(client, jpb.JobParameters(cmd="python3 -c 'x = bytearray(50_000_000); import time; time.sleep(1)'"))
    stats = [m.content.decode() for m in logs(client, jid)[0] if m.file_path == ".docker_stats.tsv"]
    assert stats[0].startswith("time\tcpu_percent\tmemory_bytes")
    rows = [line.split("\t") for line in stats[1:]]
    assert rows and max(int(r[2]) for r in rows) > 50_000_000  # the job's memory, seen from outside


def test_concurrent_clients_lose_nothing(client):
    import threading
    created, errors = [], []

    def worker():
        try:
            for _ in range(20):
                jid = create(client, jpb.JobParameters(cmd="true"), project="pconc")
                client.execute(jid)
                created.append(jid)
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=worker) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == [] and len(set(created)) == 160
    assert len(client.list("pconc")) == 160
    for jid in created:
        wait_status(client, jid, {jpb.SUCCESS}, timeout=120)


def test_cloud_limits_are_enforced_with_clear_errors(client):
    too_many = jpb.JobParameters(cmd="true", output_files=[jpb.FileDesc(path=f"o{i}") for i in range(101)])
    big = jpb.JobParameters(cmd="cat ${B}", input_files=[jpb.File(
        desc=jpb.FileDesc(path="b", var="B"), sha256="a" * 64, size_bytes=6 * (1 << 30), compression_type=jpb.NONE)])
    total = jpb.JobParameters(cmd="true", input_files=[jpb.File(
        desc=jpb.FileDesc(path=f"f{i}"), sha256=f"{i:064x}", size_bytes=4 * (1 << 30), compression_type=jpb.NONE)
        for i in range(3)])
    for params, needle in ((too_many, "101 entries"), (big, "over the limit of 5368709120"),
                           (total, "total size 12884901888")):
        with pytest.raises(grpc.RpcError) as e:
            create(client, params)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and needle in e.value.details(), e.value.details()


def test_var_paths_under_a_data_dir_with_a_space_and_a_quote_work_quoted_or_not(tmp_path):
    """In the cloud ${VAR} is a plain /job/... path, which users write bare and between quotes; here it is under the
    data dir, which may hold a space or a quote (a HOME such as "/home/Jane O'Neil"): both ways still name it."""
    from tests.conftest import Server
    s = Server(tmp_path / "Jane O'Neil's data")
    try:
        f, data = blob(b"the input\n", "in.txt", var="IN")
        cmd = "cat ${IN}; cat \"${IN}\"; cat '${IN}'; cat \"$(printf %s \"${IN}\")\"; echo made > \"${OUT}\""
        jid, op = run(s.client, jpb.JobParameters(cmd=cmd, input_files=[f],
                                                  output_files=[jpb.FileDesc(path="out.txt", var="OUT")]),
                      [(f, data)])
        assert not op.HasField("error"), op.error
        assert response(op).result.return_code == 0, logs(s.client, jid)
        out = b"".join(m.content for m in logs(s.client, jid)[0] if m.WhichOneof("source") == "standard_stream"
                       and m.standard_stream == 1)
        assert out == b"the input\n" * 4, out
        assert [o.file.desc.path for o in response(op).output_files] == ["out.txt"]
    finally:
        s.stop()
