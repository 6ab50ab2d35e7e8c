"""ProjectService.List and Get: the projects the engine has (jobs, secrets, a project disk), in community `local`,
paged as the proto says; through the API and the official CLI (`datasphere project list -c local`, `project get`)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import grpc
import pytest

from dsjobs_pb.yandex.cloud.datasphere.v2 import project_service_pb2 as pspb
from dsjobs_pb.yandex.cloud.datasphere.v2 import project_service_pb2_grpc as pgrpc
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from engine.resources import Secrets
from tests.helpers import create, official_python

pytestmark = pytest.mark.e2e


def _projects(client):
    return pgrpc.ProjectServiceStub(client.channel)


def _all(stub, page_size: int, **kw) -> list[list[str]]:
    pages, token = [], ""
    while True:
        r = stub.List(pspb.ListProjectsRequest(community_id="local", page_size=page_size, page_token=token, **kw))
        pages.append([p.id for p in r.projects])
        assert all(p.community_id == "local" and p.name == p.id and p.created_at.seconds for p in r.projects)
        token = r.next_page_token
        if not token:
            return pages


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code(), e.value.details()


def test_list_and_get_show_the_projects_the_engine_has(server, client):
    stub = _projects(client)
    assert _all(stub, 0) == [[]]
    assert _code(lambda: stub.Get(pspb.GetProjectRequest(project_id="zeta"))) == (
        grpc.StatusCode.NOT_FOUND, "project 'zeta' is not known to this engine: it has no jobs, secrets or project "
                                   "disk (a local project exists once a job names it)")
    create(client, jpb.JobParameters(cmd="true"), project="beta")
    create(client, jpb.JobParameters(cmd="true"), project="alpha")
    Secrets(server.data_dir).set("gamma", "TOKEN", "x")  # `dsjobs secret set --project gamma TOKEN`
    (server.data_dir / "projects" / "epsilon" / "home").mkdir(parents=True)  # a project disk, kept by itself
    (server.data_dir / "secrets" / "empty").mkdir()  # a project whose secrets were all removed: none
    assert _all(stub, 0) == [["alpha", "beta", "epsilon", "gamma"]]  # zeta was only asked about
    assert _all(stub, 3) == [["alpha", "beta", "epsilon"], ["gamma"]]
    assert _all(stub, 0, project_name_pattern="TA") == [["beta"]]
    got = stub.Get(pspb.GetProjectRequest(project_id="gamma"))
    assert (got.id, got.name, got.community_id) == ("gamma", "gamma", "local")
    assert stub.Get(pspb.GetProjectRequest(project_id="gamma")).created_at == got.created_at  # kept

    # A token is the last id of its page: projects that appear meanwhile neither shift nor repeat a page.
    first = stub.List(pspb.ListProjectsRequest(community_id="local", page_size=2))
    create(client, jpb.JobParameters(cmd="true"), project="aardvark")
    rest = stub.List(pspb.ListProjectsRequest(community_id="local", page_token=first.next_page_token))
    assert [p.id for p in first.projects] + [p.id for p in rest.projects] == ["alpha", "beta", "epsilon", "gamma"]

    for request, code, needle in [
        (pspb.ListProjectsRequest(community_id="other"), grpc.StatusCode.NOT_FOUND, "community_id 'other'"),
        (pspb.ListProjectsRequest(), grpc.StatusCode.INVALID_ARGUMENT, "community_id is empty"),
        (pspb.ListProjectsRequest(community_id="local", page_size=1001), grpc.StatusCode.INVALID_ARGUMENT,
         "page_size 1001"),
        (pspb.ListProjectsRequest(community_id="local", page_size=-1), grpc.StatusCode.INVALID_ARGUMENT,
         "page_size -1"),
        (pspb.ListProjectsRequest(community_id="local", page_token="../x"), grpc.StatusCode.INVALID_ARGUMENT,
         "page_token '../x'"),
        (pspb.ListProjectsRequest(community_id="local", page_token="a" * 101), grpc.StatusCode.INVALID_ARGUMENT,
         "page_token"),
        (pspb.ListProjectsRequest(community_id="local", owned_by_id="bob"), grpc.StatusCode.FAILED_PRECONDITION,
         "owned_by_id 'bob'"),
    ]:
        got_code, details = _code(lambda: stub.List(request))
        assert got_code == code and needle in details, (request, got_code, details)


@pytest.mark.slow
def test_the_official_cli_lists_and_gets_projects(server, client, tmp_path):
    # More than the 50 a page of the official client holds: it follows next_page_token.
    names = sorted(f"proj-{i:02d}" for i in range(57))
    for name in names:
        create(client, jpb.JobParameters(cmd="true"), project=name)
    env = dict(os.environ, DSJOBS_DATASPHERE_PYTHON=official_python(), DSJOBS_ENDPOINT=client.endpoint,
               DSJOBS_TOKEN=server.engine.token)

    def ds(*args):
        res = subprocess.run([sys.executable, "-m", "dsjobs", "datasphere", *args], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=180)
        return res.returncode, res.stdout, res.stderr

    rc, out, err = ds("project", "list", "-c", "local", "--format", "json", "-o", "list.json")
    assert rc == 0, out + err
    listed = json.loads((tmp_path / "list.json").read_text())
    assert listed == [{"id": n, "name": n, "community_id": "local"} for n in names]
    rc, out, err = ds("project", "list", "-c", "local", "-o", "table.txt")
    table = (tmp_path / "table.txt").read_text().splitlines()
    assert rc == 0 and table[0].split() == ["ID", "Name", "Community", "ID"] and len(table) == 2 + len(names)
    rc, out, err = ds("project", "get", "--id", "proj-07", "--format", "json", "-o", "get.json")
    assert rc == 0, out + err
    assert json.loads((tmp_path / "get.json").read_text()) == {"id": "proj-07", "name": "proj-07",
                                                                 "community_id": "local"}
    rc, out, err = ds("project", "get", "--id", "unknown")
    assert rc == 1 and "NOT_FOUND" in out + err and "'unknown'" in out + err, out + err
