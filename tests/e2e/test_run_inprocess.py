"""`dsjobs run` calls its embedded engine in-process (engine/api/local.py), and loads only what its job needs: no
gRPC server without --ui, no HTTP client library without a file to move, no rich without a terminal, no docker
for a process job, and no server thread that wakes on a poll interval (the file endpoint's waited 0.5 s at exit).
And the in-process API answers as the gRPC server does: the same codes and messages, the same token check."""
from __future__ import annotations

import json
import subprocess
import sys

import grpc
import pytest

from dsjobs.client import Client
from dsjobs.inprocess import LocalClient
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
from engine.api.local import LocalChannel
from engine.api.server import owner_auth, start_grpc
from engine.app import build_engine
from engine.config import EngineConfig
from tests.helpers import create, logs, stdout_of, wait_op

pytestmark = pytest.mark.e2e

# Runs `dsjobs run` in this interpreter, watching: every timeout a socketserver's serve_forever waits in select() with,
# whether a gRPC server was made, and, once it returned, the modules loaded and the threads left.
WATCHED_RUN = r"""
import json, socketserver, sys, threading
waits = []
select = socketserver._ServerSelector.select
def watched(self, timeout=None):
    if sys._getframe(1).f_code.co_name == "serve_forever":  # the class is selectors' own, used elsewhere too
        waits.append(timeout)
    return select(self, timeout)
socketserver._ServerSelector.select = watched
import engine.api.server as srv
servers = []
init = srv.GrpcServer.__init__
def counted(self, *a, **k):
    servers.append(1)
    init(self, *a, **k)
srv.GrpcServer.__init__ = counted
from dsjobs.cli import main
rc = main(sys.argv[1:])
left = []
for t in threading.enumerate():  # those that end as they were told to have a moment for it
    if t is not threading.main_thread():
        t.join(5)
        if t.is_alive():
            left.append(t.name)
print(json.dumps({"rc": rc, "waits": waits, "grpc_servers": len(servers), "threads": left,
                  "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def watched_run(tmp_path, config: str, *args):
    (tmp_path / "config.yaml").write_text(config)
    p = subprocess.run([sys.executable, "-c", WATCHED_RUN, "run", "-c", "config.yaml", "--data-dir",
                        str(tmp_path / "data"), *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1]), p.stderr


def test_a_noop_run_starts_no_server_and_loads_no_transfer_terminal_or_docker_code(tmp_path):
    seen, err = watched_run(tmp_path, 'cmd: "true"\n')
    assert seen["rc"] == 0 and "success" in err and "[SYS] job completed successfully" in err
    assert seen["grpc_servers"] == 0
    assert not {"requests", "urllib3", "rich", "docker", "starlette", "uvicorn"} & set(seen["modules"]), \
        seen["modules"]
    assert seen["waits"] and all(w is None for w in seen["waits"]), seen["waits"]  # the file endpoint served
    assert seen["threads"] == []


def test_a_run_that_moves_files_loads_the_http_client_then(tmp_path):
    (tmp_path / "in.txt").write_text("hello\n")
    seen, err = watched_run(tmp_path, 'cmd: "tr a-z A-Z < ${IN} > ${OUT}"\ninputs:\n  - in.txt: IN\n'
                                      'outputs:\n  - out.txt: OUT\n')
    assert seen["rc"] == 0, err
    assert (tmp_path / "out.txt").read_text() == "HELLO\n"
    assert "requests" in seen["modules"] and "rich" not in seen["modules"]


def test_text_rich_would_change_is_printed_by_rich(tmp_path):
    """Without a terminal dsjobs writes plain text where rich would; a tab, an emoji code or a control character
    in a job's stderr comes out as rich prints it."""
    from io import StringIO
    from rich.console import Console
    line = "tab\there :smile: bell\x07 cr\r [b]x[/b] 12:30:45"
    seen, err = watched_run(tmp_path, "cmd: |\n  printf 'tab\\there :smile: bell\\a cr\\r [b]x[/b] 12:30:45\\n' >&2\n")
    want = StringIO()
    Console(file=want, highlight=False, soft_wrap=True).print(line, style="red", markup=False)
    assert want.getvalue() in err
    assert "rich" in seen["modules"]


@pytest.fixture
def both(tmp_path):
    """One engine, its gRPC server and its in-process API: (over gRPC, in-process, engine)."""
    engine = build_engine(EngineConfig(data_dir=tmp_path / "data", sandbox="none")).start()
    server, port = start_grpc(engine, "127.0.0.1:0")
    remote, local = Client(f"127.0.0.1:{port}", token=engine.token), LocalClient(engine)
    yield remote, local, engine
    local.close()
    remote.close()
    server.stop(0)
    engine.stop(stop_jobs=True)


def status(call) -> tuple[str, str]:
    with pytest.raises(grpc.RpcError) as e:
        r = call()
        if hasattr(r, "__next__"):
            list(r)
    return e.value.code().name, e.value.details()


def test_the_in_process_api_answers_bad_calls_as_the_server_does(both):
    remote, local, engine = both
    calls = {
        "execute without an id": lambda c: c.jobs.Execute(spb.ExecuteProjectJobRequest()),
        "get of no such job": lambda c: c.jobs.Get(spb.GetProjectJobRequest(job_id="ds00000000000000000000")),
        "logs of no such job": lambda c: c.jobs.ReadLogs(spb.ReadProjectJobLogsRequest(job_id="dsnothing")),
        "a bad project id": lambda c: c.jobs.Create(spb.CreateProjectJobRequest(
            project_id="no such/project", job_parameters=jpb.JobParameters(cmd="true"))),
        "no cmd": lambda c: c.jobs.Create(spb.CreateProjectJobRequest(project_id="p", job_parameters=jpb.JobParameters())),
        "an operation of nothing": lambda c: c.get_operation("nothing"),
    }
    for what, call in calls.items():
        over_grpc, in_process = status(lambda: call(remote)), status(lambda: call(local))
        assert over_grpc == in_process, what
        assert over_grpc[0] in ("INVALID_ARGUMENT", "NOT_FOUND"), (what, over_grpc)
    # a token the engine does not know is refused, with the server's own message
    stranger = LocalChannel(engine, owner_auth(engine), token="not-the-token")
    try:
        from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2_grpc as sgrpc
        code, details = status(lambda: sgrpc.ProjectJobServiceStub(stranger).Get(
            spb.GetProjectJobRequest(job_id="x")))
    finally:
        stranger.close()
    assert code == "UNAUTHENTICATED" and details == owner_auth(engine).denied()


def test_a_job_through_the_in_process_api_is_the_servers_job(both):
    remote, local, _ = both
    job_id = create(local, jpb.JobParameters(cmd="echo in-process"), project="p1")
    op = wait_op(local, local.execute(job_id))
    assert not op.HasField("error")
    seen = remote.get(job_id)  # the same record, read over gRPC
    assert seen.status == jpb.SUCCESS and seen.created_by_id == local.get(job_id).created_by_id != ""
    assert stdout_of(logs(local, job_id)[0]) == stdout_of(logs(remote, job_id)[0]) == b"in-process\n"


def test_closing_the_channel_ends_a_log_stream_with_cancelled(both):
    """As closing a grpc channel does: `dsjobs run`'s log thread then stops reading."""
    import threading
    from tests.helpers import wait_for
    remote, local, _ = both
    job_id = create(local, jpb.JobParameters(cmd="echo started; sleep 30"), project="p1")
    local.execute(job_id)
    stream = local.jobs.ReadLogs(spb.ReadProjectJobLogsRequest(job_id=job_id))
    read, ended = [], []

    def reader():
        try:
            for r in stream:
                read.extend(r.logs)
        except grpc.RpcError as e:
            ended.append(e.code())
    t = threading.Thread(target=reader)
    t.start()
    wait_for(lambda: b"started\n" in stdout_of(read), 30, "the job's first line")
    local.close()  # while the job still runs: the stream is waiting for more
    t.join(10)
    remote.cancel(job_id)
    assert not t.is_alive() and ended == [grpc.StatusCode.CANCELLED]
