"""Our descriptors against the official ones compiled into `yandexcloud` (PyPI), field by field.

Two definitions of one .proto file cannot share a descriptor pool, so each side is dumped in its own process.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

FILES = [
    "yandex/cloud/datasphere/v2/jobs/jobs.proto",
    "yandex/cloud/datasphere/v2/jobs/project_job_service.proto",
    "yandex/cloud/operation/operation.proto",
    "yandex/cloud/operation/operation_service.proto",
    "yandex/cloud/datasphere/v2/project.proto",
]

DUMP = r'''
import importlib, json, sys
from google.protobuf import descriptor_pool
prefix, files = sys.argv[1], sys.argv[2:]
def field(f):
    return {"number": f.number, "type": f.type, "repeated": f.is_repeated if hasattr(f, "is_repeated") else f.label == 3,
            "type_name": (f.message_type.full_name if f.message_type else f.enum_type.full_name if f.enum_type else ""),
            "oneof": f.containing_oneof.name if f.containing_oneof else "",
            "json_name": f.json_name, "deprecated": f.GetOptions().deprecated}
def message(m, out):
    out[m.full_name] = {"fields": {f.name: field(f) for f in m.fields},
                        "oneofs": sorted(o.name for o in m.oneofs), "map_entry": m.GetOptions().map_entry}
    for n in m.nested_types: message(n, out)
    for e in m.enum_types: out[e.full_name] = {"values": {v.name: v.number for v in e.values}}
out = {}
for name in files:
    mod = importlib.import_module(prefix + name[:-len(".proto")].replace("/", ".") + "_pb2")
    fd = mod.DESCRIPTOR
    out[name] = {"package": fd.package, "syntax": getattr(fd, "syntax", "proto3")}
    for m in fd.message_types_by_name.values(): message(m, out)
    for e in fd.enum_types_by_name.values(): out[e.full_name] = {"values": {v.name: v.number for v in e.values}}
    for s in fd.services_by_name.values():
        out[s.full_name] = {"methods": {m.name: [m.input_type.full_name, m.output_type.full_name,
                                                 m.client_streaming, m.server_streaming] for m in s.methods}}
print(json.dumps(out, sort_keys=True))
'''


def _dump(prefix: str) -> dict:
    res = subprocess.run([sys.executable, "-c", DUMP, prefix, *FILES], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.e2e
def test_descriptors_match_official_yandexcloud():
    ours = _dump("dsjobs_pb.")
    official = _dump("")  # the `yandex` package installed by yandexcloud
    assert set(ours) == set(official), set(ours) ^ set(official)
    diffs = [k for k in official if ours[k] != official[k]]
    assert not diffs, {k: (ours[k], official[k]) for k in diffs[:3]}
    # What the reference page omits is there too (and the comparison above really looked at it).
    assert official["yandex.cloud.datasphere.v2.jobs.JobStatus"]["values"]["PREPARING"] == 8
    resp = ours["yandex.cloud.datasphere.v2.jobs.ExecuteProjectJobResponse"]["fields"]
    assert resp["output_files_errors"]["number"] == 4
    assert ours["yandex.cloud.datasphere.v2.jobs.LogMessage"]["oneofs"] == ["source"]


@pytest.mark.e2e
def test_project_service_get_and_list_match_official():
    """We serve ProjectService.Get and List; their methods, requests and List's answer must be the official ones."""
    code = r'''
import importlib, json, sys
mod = importlib.import_module(sys.argv[1] + "yandex.cloud.datasphere.v2.project_service_pb2")
out = []
for name in ("Get", "List"):
    s = mod.DESCRIPTOR.services_by_name["ProjectService"].methods_by_name[name]
    out.append([s.full_name, s.input_type.full_name, s.output_type.full_name,
                {f.name: [f.number, f.type] for f in s.input_type.fields}])
resp = mod.DESCRIPTOR.message_types_by_name["ListProjectsResponse"]
out.append({f.name: [f.number, f.type, f.message_type.full_name if f.message_type else ""] for f in resp.fields})
print(json.dumps(out))
'''
    out = [subprocess.run([sys.executable, "-c", code, prefix], capture_output=True, text=True, check=True).stdout
           for prefix in ("dsjobs_pb.", "")]
    assert out[0] == out[1], out
    assert "yandex.cloud.datasphere.v2.ProjectService.List" in out[0] and "page_token" in out[0]
