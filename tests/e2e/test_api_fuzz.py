"""Random valid and invalid requests to every method: never UNKNOWN or INTERNAL (hypothesis)."""
from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb

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


# --- every field of every request, from the descriptors -----------------------------------------------------

from google.protobuf import descriptor as _d  # noqa: E402
from google.protobuf import message_factory  # noqa: E402

from dsjobs_pb.yandex.cloud.datasphere.v2 import project_service_pb2  # noqa: E402
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2  # noqa: E402
from dsjobs_pb.yandex.cloud.operation import operation_service_pb2  # noqa: E402

F = _d.FieldDescriptor
_INTS = {F.TYPE_INT32: (-2 ** 31, 2 ** 31 - 1), F.TYPE_SINT32: (-2 ** 31, 2 ** 31 - 1),
         F.TYPE_SFIXED32: (-2 ** 31, 2 ** 31 - 1), F.TYPE_UINT32: (0, 2 ** 32 - 1), F.TYPE_FIXED32: (0, 2 ** 32 - 1),
         F.TYPE_INT64: (-2 ** 63, 2 ** 63 - 1), F.TYPE_SINT64: (-2 ** 63, 2 ** 63 - 1),
         F.TYPE_SFIXED64: (-2 ** 63, 2 ** 63 - 1), F.TYPE_UINT64: (0, 2 ** 64 - 1), F.TYPE_FIXED64: (0, 2 ** 64 - 1)}
hostile_text = st.one_of(st.text(max_size=40), st.sampled_from(
    ["", "..", "../x", "/abs", "a\x00b", "x" * 300, "проект", "${A}", "ds" + "0" * 18, "op" + "0" * 18,
     "status IN (ERROR)", "c1.4", "3.11", "a" * 20, "-1", str(2 ** 63)]))


def _repeated(f: _d.FieldDescriptor) -> bool:
    return f.is_repeated if hasattr(type(f), "is_repeated") else f.label == F.LABEL_REPEATED


def _int_strategy(lo: int, hi: int):
    return st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi, 0, -1 if lo < 0 else 1, 2 ** 31]).filter(
        lambda v: lo <= v <= hi))


def _field(f: _d.FieldDescriptor, depth: int):
    if f.type == F.TYPE_MESSAGE:
        if f.message_type.GetOptions().map_entry:
            kf, vf = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            return st.dictionaries(_scalar(kf, depth), _scalar(vf, depth), max_size=3)
        inner = _message(f.message_type, depth + 1)
    else:
        inner = _scalar(f, depth)
    if _repeated(f):
        return st.lists(inner, max_size=3)
    return inner


def _scalar(f: _d.FieldDescriptor, depth: int):
    if f.type == F.TYPE_MESSAGE:
        return _message(f.message_type, depth + 1)
    if f.type in _INTS:
        return _int_strategy(*_INTS[f.type])
    if f.type == F.TYPE_BOOL:
        return st.booleans()
    if f.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32 if f.type == F.TYPE_FLOAT else 64)
    if f.type == F.TYPE_STRING:
        return hostile_text
    if f.type == F.TYPE_BYTES:
        return st.binary(max_size=40)
    if f.type == F.TYPE_ENUM:
        return st.one_of(st.sampled_from([v.number for v in f.enum_type.values]), st.integers(-5, 1000))
    raise AssertionError(f.type)


def _message(desc: _d.Descriptor, depth: int = 0):
    cls = message_factory.GetMessageClass(desc)
    if depth > 3:
        return st.just(cls())
    if desc.full_name == "google.protobuf.Any":
        return st.just(cls())
    fields = {f.name: _field(f, depth) for f in desc.fields}

    def build(values: dict):
        msg = cls()
        for name, v in values.items():
            f = desc.fields_by_name[name]
            try:
                if _repeated(f) and f.type == F.TYPE_MESSAGE and \
                        f.message_type.GetOptions().map_entry:
                    getattr(msg, name).update(v)
                elif _repeated(f):
                    getattr(msg, name).extend(v)
                elif f.type == F.TYPE_MESSAGE:
                    getattr(msg, name).CopyFrom(v)
                else:
                    setattr(msg, name, v)
            except (ValueError, TypeError):
                pass  # a value the message itself refuses (a float out of float32's range, say)
        return msg
    return st.fixed_dictionaries({}, optional=fields).map(build)


SERVICES = [(project_job_service_pb2, "ProjectJobService"), (operation_service_pb2, "OperationService"),
            (project_service_pb2, "ProjectService")]
METHODS = [(m, svc.full_name) for module, name in SERVICES
           for svc in [module.DESCRIPTOR.services_by_name[name]] for m in svc.methods]
every_request = st.sampled_from(METHODS).flatmap(
    lambda mm: _message(mm[0].input_type).map(lambda msg: (mm[0], mm[1], msg)))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(req=every_request)
def test_every_field_of_every_request_never_unknown_or_internal(client, req):
    method, service, message = req
    path = f"/{service}/{method.name}"
    out = message_factory.GetMessageClass(method.output_type)
    make = client.channel.unary_stream if method.server_streaming else client.channel.unary_unary
    call = make(path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=out.FromString)
    try:
        result = call(message, timeout=10)
        if method.server_streaming:
            for _ in result:
                pass
    except grpc.RpcError as e:
        assert e.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), (method.name, e.details())
        assert e.code() != grpc.StatusCode.DEADLINE_EXCEEDED or method.server_streaming, (method.name, message)
        assert e.details()
