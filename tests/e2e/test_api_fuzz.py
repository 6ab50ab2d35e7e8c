"""Random valid and invalid requests to every method: never UNKNOWN or INTERNAL (hypothesis)."""
from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.api.pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from engine.api.pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb

pytestmark = pytest.mark.e2e

text = st.text(max_size=30)
names = st.one_of(text, st.from_regex(r"[A-Z_]{1,8}", fullmatch=True))
sha = st.one_of(text, st.from_regex(r"[0-9a-f]{64}", fullmatch=True))
file_desc = st.builds(jpb.FileDesc, path=st.one_of(text, st.sampled_from(["a.txt", "../x", "/abs", "d/e"])),
                      var=names)
file = st.builds(jpb.File, desc=file_desc, sha256=sha, size_bytes=st.integers(-5, 1 << 40),
                 compression_type=st.integers(0, 2))
params = st.builds(
    jpb.JobParameters,
    input_files=st.lists(file, max_size=3), output_files=st.lists(file_desc, max_size=3),
    s3_mount_ids=st.lists(text, max_size=2), dataset_ids=st.lists(text, max_size=2),
    cmd=st.one_of(text, st.just("echo ${A}"), st.just("true")),
    arguments=st.lists(st.builds(jpb.Argument, name=names, value=text), max_size=3),
    cloud_instance_types=st.lists(st.builds(jpb.CloudInstanceType, name=st.sampled_from(["c1.4", "x", ""])), max_size=2),
    env=st.builds(jpb.Environment, vars=st.dictionaries(names, text, max_size=3)),
)
ids = st.one_of(text, st.just(""))
requests_ = st.one_of(
    st.tuples(st.just("Create"), st.builds(spb.CreateProjectJobRequest, project_id=ids, job_parameters=params,
                                           config=text)),
    st.tuples(st.just("Clone"), st.builds(spb.CloneProjectJobRequest, source_job_id=ids,
                                          job_parameters_overrides=params)),
    st.tuples(st.just("Execute"), st.builds(spb.ExecuteProjectJobRequest, job_id=ids)),
    st.tuples(st.just("Cancel"), st.builds(spb.CancelProjectJobRequest, job_id=ids, reason=text, graceful=st.booleans())),
    st.tuples(st.just("DownloadJobFiles"), st.builds(spb.DownloadProjectJobFilesRequest, job_id=ids,
                                                     files=st.lists(file, max_size=2))),
    st.tuples(st.just("List"), st.builds(spb.ListProjectJobRequest, project_id=ids, page_size=st.integers(-3, 500),
                                         page_token=text, filter=st.one_of(text, st.just("status IN (ERROR)")))),
    st.tuples(st.just("Get"), st.builds(spb.GetProjectJobRequest, job_id=ids)),
    st.tuples(st.just("Delete"), st.builds(spb.DeleteProjectJobRequest, job_id=ids)),
    st.tuples(st.just("DeleteData"), st.builds(spb.DeleteProjectJobDataRequest, job_id=ids)),
    st.tuples(st.just("DeleteAllData"), st.builds(spb.DeleteAllProjectJobDataRequest, project_id=ids)),
    st.tuples(st.just("SetDataTtl"), st.builds(spb.SetProjectJobDataTtlRequest, job_id=ids)),
    st.tuples(st.just("ReadLogs"), st.builds(spb.ReadProjectJobLogsRequest, job_id=ids, offset=st.integers(-5, 10))),
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(req=requests_)
def test_random_requests_never_unknown_or_internal(client, req):
    method, message = req
    try:
        result = getattr(client.jobs, method)(message, timeout=10)
        if method == "ReadLogs":
            list(result)
    except grpc.RpcError as e:
        assert e.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), (method, e.details())
        assert e.details()
