"""The cloud's failures, injected (DSJOBS_FAULTS, `dsjobs fault set`, the pytest marker): each fault through the
real API (a real engine and gRPC on loopback, real processes), then each through the real official CLI against
`dsjobs serve`."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import grpc
import pytest
import requests

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
from tests.conftest import Server
from tests.helpers import Serve, logs, official_python, response, run, stdout_of

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("faults") / "data", max_concurrent_jobs=2, env_build_timeout_s=1.0)
    yield s
    s.stop()


def _params(cmd: str, faults: str, types=("c1.4",), outputs=()) -> jpb.JobParameters:
    return jpb.JobParameters(cmd=cmd, env=jpb.Environment(vars={"DSJOBS_FAULTS": faults}),
                             cloud_instance_types=[jpb.CloudInstanceType(name=t) for t in types],
                             output_files=[jpb.FileDesc(path=p) for p in outputs])


def _system(client, jid) -> str:
    return b"".join(m.content for m in logs(client, jid)[0] if m.file_path == ".system.log").decode()


def _system_so_far(client, jid) -> str:
    """The system log of a job that may never end (never uploaded, say): what it has within 2 s."""
    seen = b""
    try:
        for resp in client.jobs.ReadLogs(spb.ReadProjectJobLogsRequest(job_id=jid, offset=0), timeout=2):
            seen += b"".join(m.content for m in resp.logs if m.file_path == ".system.log")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e
    return seen.decode()


def _stderr(client, jid) -> str:
    return b"".join(m.content for m in logs(client, jid)[0]
                    if m.WhichOneof("source") == "standard_stream" and m.standard_stream == 2).decode()


def test_an_unknown_fault_is_invalid_argument_naming_it(srv):
    with pytest.raises(grpc.RpcError) as e:
        srv.client.jobs.Create(spb.CreateProjectJobRequest(project_id="p1", job_parameters=_params("true",
                                                                                                   "oom,explode=1")))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "DSJOBS_FAULTS" in e.value.details() and "unknown fault 'explode'" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        srv.client.jobs.Create(spb.CreateProjectJobRequest(project_id="p1", job_parameters=_params(
            "true", "preempt-after=soon")))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'soon'" in e.value.details()


def test_no_capacity_falls_back_to_the_next_type_then_fails_at_once(srv):
    c = srv.client
    jid, op = run(c, _params("echo ran", "no-capacity=c1.4", types=("c1.4", "c1.8")))
    assert not op.HasField("error") and response(op).result.return_code == 0
    assert c.get(jid).actual_cloud_instance_type.name == "c1.8"
    assert "injected fault: no-capacity: no machine available for instance type c1.4; trying the next type" \
        in _system(c, jid)
    jid, op = run(c, _params("echo ran", "no-capacity", types=("c1.4", "c1.8")))
    assert op.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], op.error
    assert "no machine available for instance type(s) c1.4, c1.8" in op.error.message
    job = c.get(jid)
    assert job.status == jpb.ERROR and stdout_of(logs(c, jid)[0]) == b""  # nothing ran


def test_preemption_kills_the_job_without_a_signal_and_loses_its_outputs(srv):
    c = srv.client
    jid, op = run(c, _params("trap 'echo got TERM > term.txt' TERM; echo started > out.txt; sleep 30 & wait",
                             "preempt-after=1s", outputs=("out.txt",)))
    assert op.error.code == grpc.StatusCode.UNAVAILABLE.value[0], op.error
    assert "machine was lost" in op.error.message and "preempt" in op.error.message
    job = c.get(jid)
    assert job.status == jpb.ERROR and not job.output_files
    assert not (srv.work_dir(jid) / "term.txt").exists()  # SIGKILL only: the trap never ran
    assert "injected fault: preempt-after=1s: the job's machine is lost now" in _system(c, jid)


def test_dropped_log_streams_end_unavailable_and_resume_from_their_offset(srv):
    c = srv.client
    op = c.jobs.Create(spb.CreateProjectJobRequest(project_id="p1", job_parameters=_params(
        "echo one; sleep 1.5; echo two", "drop-logs-after=500ms")))
    r = spb.CreateProjectJobResponse()
    op.response.Unpack(r)
    jid = r.job_id
    c.execute(jid)
    got, offset, drops = b"", 0, 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            for resp in c.jobs.ReadLogs(spb.ReadProjectJobLogsRequest(job_id=jid, offset=offset)):
                got += stdout_of(resp.logs)
                offset = resp.offset
            break  # the job finished and everything was sent
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, e
            assert "injected fault: drop-logs-after=0.5s" in e.details()
            drops += 1
    assert drops >= 1 and got == b"one\ntwo\n"  # nothing lost, nothing twice


def test_upload_urls_are_handed_out_expired(srv):
    c = srv.client
    data = b"payload"
    import hashlib
    p = _params("cat in.txt", "upload-url-expired")
    p.input_files.append(jpb.File(desc=jpb.FileDesc(path="in.txt"), sha256=hashlib.sha256(data).hexdigest(),
                                  size_bytes=len(data)))
    op = c.jobs.Create(spb.CreateProjectJobRequest(project_id="p1", job_parameters=p))
    r = spb.CreateProjectJobResponse()
    op.response.Unpack(r)
    assert len(r.upload_files) == 1
    assert requests.put(r.upload_files[0].url, data=data).status_code == 403
    with pytest.raises(grpc.RpcError) as e:
        c.execute(r.job_id)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # the input never arrived
    assert "injected fault: upload-url-expired" in _system_so_far(c, r.job_id)  # the job never runs


def test_a_full_disk_refuses_writes_with_enospc(srv):
    c = srv.client
    jid, op = run(c, _params("head -c 3000000 /dev/zero > big.bin; echo rc=$? > rc.txt", "disk-full-at=1MB",
                             outputs=("big.bin", "rc.txt")))
    assert not op.HasField("error"), op.error.message
    assert "No space left on device" in _stderr(c, jid)
    sizes = {f.desc.path: f.size_bytes for f in c.get(jid).output_files}
    assert 0 < sizes["big.bin"] <= 1 << 20 and "disk-full-at" in _system(c, jid)
    assert not any(line.split()[4].endswith(f"/{jid}/work") for line in open("/proc/self/mountinfo"))  # released


def test_oom_kills_the_job_at_its_memory_limit(srv):
    c = srv.client
    jid, op = run(c, _params("python3 -c 'x = bytearray(400 << 20); print(len(x))'", "oom=64MB"))
    assert not op.HasField("error"), op.error.message
    assert response(op).result.return_code == 137 and stdout_of(logs(c, jid)[0]) == b""
    assert "the job was killed: out of memory" in _system(c, jid)
    jid, op = run(c, _params("python3 -c 'x = bytearray(8 << 20); print(len(x))'", "oom=64MB"))
    assert response(op).result.return_code == 0  # under the limit: as without the fault


def test_a_slow_env_build_shows_progress_and_meets_the_build_limit(srv):
    c = srv.client
    jid, op = run(c, _params("echo built", "slow-env-build=600ms"))
    assert response(op).result.return_code == 0 and "slow-env-build" in _system(c, jid)
    progress = (srv.engine.jobs.progress_path(jid)).read_text()
    assert "injected slow-env-build" in progress
    jid, op = run(c, _params("echo built", "slow-env-build=3s"))  # the engine's build limit is 1s here
    assert op.error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0], op.error
    assert "environment build took longer than its limit of 1s" in op.error.message


def test_a_projects_faults_from_the_command_line(srv, tmp_path):
    c = srv.client
    env = dict(os.environ)
    cli = [sys.executable, "-m", "dsjobs", "fault"]
    bad = subprocess.run(cli + ["set", "pf", "oom,nope", "--data-dir", str(srv.data_dir)], capture_output=True,
                         text=True, env=env)
    assert bad.returncode == 2 and "unknown fault 'nope'" in bad.stderr
    subprocess.run(cli + ["set", "pf", "no-capacity=c1.4", "--data-dir", str(srv.data_dir)], check=True, env=env)
    jid, op = run(c, jpb.JobParameters(cmd="true", cloud_instance_types=[jpb.CloudInstanceType(name="c1.4"),
                                                                         jpb.CloudInstanceType(name="c1.8")]),
                  project="pf")
    assert c.get(jid).actual_cloud_instance_type.name == "c1.8"
    subprocess.run(cli + ["clear", "pf", "--data-dir", str(srv.data_dir)], check=True, env=env)
    jid, op = run(c, jpb.JobParameters(cmd="true"), project="pf")
    assert c.get(jid).actual_cloud_instance_type.name == "c1.4"


def test_the_watches_where_no_real_limit_can_be_made(tmp_path):
    """Where no tmpfs or memory cgroup can be made (an unprivileged engine), the job is watched instead."""
    from runners import faults as rf
    from runners.spec import FaultSpec
    stops = []
    (tmp_path / "w").mkdir()
    w = rf.Watch(FaultSpec(text="disk-full-at=1MB"), stops.append, lambda line: None, work=str(tmp_path / "w"),
                 disk_bytes=1 << 20).start()
    (tmp_path / "w" / "f").write_bytes(b"x" * (2 << 20))
    deadline = time.monotonic() + 10
    while not stops and time.monotonic() < deadline:
        time.sleep(0.02)
    w.close()
    assert stops and stops[0].kind == "storage" and stops[0].signal == 9
    hog = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(80 << 20); x[::4096] = b'y' * "
                            "len(x[::4096]); time.sleep(30)"])
    try:
        stops.clear()
        w = rf.Watch(FaultSpec(text="oom=32MB"), stops.append, lambda line: None, memory_bytes=32 << 20,
                     pids=lambda: [hog.pid]).start()
        deadline = time.monotonic() + 10
        while not stops and time.monotonic() < deadline:
            time.sleep(0.02)
        w.close()
        assert stops and stops[0].kind == "oom"
    finally:
        hog.kill()
        hog.wait()


# --- through the official CLI --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    srv = Serve(tmp_path_factory.mktemp("faults-cli") / "data")
    client = srv.start()
    yield srv, client
    client.close()
    srv.proc.terminate()
    srv.proc.wait(10)


CLI_CASES = {
    # fault: (cmd, outputs, expected exit status, what the CLI's output or log.txt says)
    "no-capacity": ("echo ran", [], 1, "RESOURCE_EXHAUSTED"),
    "preempt-after=1s": ("echo started; sleep 20", [], 1, "machine was lost"),
    "drop-logs-after=1s": ("echo one; sleep 2; echo two; sleep 2", [], 0, "[StatusCode.UNAVAILABLE] injected fault"),
    "upload-url-expired": ("cat in.txt", [], 1, "403"),
    "disk-full-at=1MB": ("head -c 3000000 /dev/zero > big.bin || echo refused", ["big.bin"], 0, "No space left"),
    "oom=64MB": ("python3 -c 'x = bytearray(400 << 20)'", [], 1, "Program returned code 137"),
    "slow-env-build=1s": ("echo built", [], 0, "built"),
}


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(CLI_CASES))
def test_each_fault_through_the_official_cli(served, tmp_path, fault):
    _, client = served
    cmd, outputs, code, says = CLI_CASES[fault]
    (tmp_path / "in.txt").write_text(f"input for {fault}\n")
    out_lines = "".join(f"  - {o}\n" for o in outputs)
    (tmp_path / "config.yaml").write_text(textwrap.dedent(f"""\
        name: fault
        cmd: {cmd}
        env:
          vars:
            - DSJOBS_FAULTS: {fault}
        inputs:
          - in.txt
        """) + (f"outputs:\n{out_lines}" if outputs else "") + "cloud-instance-types: [c1.4, c1.8]\n")
    env = dict(os.environ, DSJOBS_DATASPHERE_PYTHON=official_python(), DSJOBS_ENDPOINT=client.endpoint)
    res = subprocess.run([sys.executable, "-m", "dsjobs", "datasphere", "--log-dir", str(tmp_path / "logs"),
                          "project", "job", "execute", "-p", "faults", "-c", "config.yaml"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    text = res.stdout + res.stderr + "".join(p.read_text() for p in (tmp_path / "logs").glob("*.txt"))
    assert res.returncode == code, text
    assert says in text, text
    if fault.startswith("disk-full"):
        assert 0 < (tmp_path / "big.bin").stat().st_size <= 1 << 20
    if fault.startswith("drop-logs"):
        assert "one" in text and "two" in text
    job = client.list("faults")[0]
    system = _system_so_far(client, job.id)
    assert "injected fault" in system, system


# --- from a user's test suite: the pytest marker -------------------------------------------------------------------

def test_the_pytest_marker_injects_faults_into_a_tests_jobs(pytester):
    (pytester.path / "job").mkdir()
    (pytester.path / "job" / "config.yaml").write_text(
        "cmd: echo ran > out.txt\noutputs:\n  - out.txt\ncloud-instance-types: [c1.4, c1.8]\n")
    pytester.makepyfile(test_user_jobs="""
        import pytest
        from pathlib import Path
        HERE = Path(__file__).parent

        @pytest.mark.dsjobs_faults("no-capacity=c1.4")
        def test_falls_back(dsjobs):
            r = dsjobs.run(HERE / "job/config.yaml")
            assert r.status == "SUCCESS" and r.outputs["out.txt"].read_text() == "ran\\n"
            assert "no machine available for instance type c1.4" in r.system_log
            assert "preparing: instance type c1.8" in r.system_log

        @pytest.mark.dsjobs_faults("no-capacity")
        def test_no_machine_at_all(dsjobs):
            r = dsjobs.run(HERE / "job/config.yaml")
            assert r.status == "ERROR" and r.error[0] == "RESOURCE_EXHAUSTED", r.error

        def test_without_the_marker(dsjobs):
            r = dsjobs.run(HERE / "job/config.yaml")
            assert r.status == "SUCCESS" and "injected" not in r.system_log
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
