"""Sandboxes made before their jobs (engine/warm.py): the job that starts in one gets what a cold start gives it,
to the byte; a job unlike the one before starts cold and right; ids chosen ahead leave nothing behind."""
from __future__ import annotations

import marshal
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import grpc
import psutil
import pytest

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from engine.model import DockerImageSpec, Environment, JobParameters, PythonEnv
from engine.resources import Secrets
from engine.warm import MARK
from runners.executors.supervisor import WARM_STUB, handoff
from tests.conftest import Server
from tests.helpers import create, logs, run, stdout_of, wait_for, wait_op


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "data", max_concurrent_jobs=4, warm_sandboxes=True)
    yield s
    s.stop()

WEIRD = "it's \"quoted\" $HOME `id` \\ ${X}\nsecond line\t*"
# What a job shows of itself: everything of its environment, its identity, its view of the files.
PROBE = ("env -0 | sort -z | tr '\\0' '\\n'; echo ---; id; pwd; ls -A /tmp; ls -A $HOME; echo $$;"
         " grep -E '^(CapEff|NoNewPrivs|Seccomp)' /proc/self/status; readlink /proc/self/fd/0; ulimit -a;"
         " ls {jobs}; echo \"[$WEIRD]\"; echo \"[$TOKEN]\"; trap")


def _warmed(server) -> list[str]:
    return server.engine.machine.process.warmed()


def _probe(server, project: str):
    jid, op = run(server.client, jpb.JobParameters(cmd=PROBE.format(jobs=server.data_dir / "jobs"),
                                                   env=jpb.Environment(vars={"WEIRD": WEIRD})), project=project)
    assert not op.HasField("error"), op.error.message
    return jid, stdout_of(logs(server.client, jid)[0]).decode()


def test_a_projects_next_job_starts_in_a_sandbox_made_ahead_and_sees_what_a_cold_one_sees(server):
    for project in ("warm", "cold"):
        Secrets(server.data_dir).set(project, "TOKEN", "s3cr'et $x\nline")
    run(server.client, jpb.JobParameters(cmd="true"), project="warm")
    ahead = wait_for(lambda: _warmed(server), what="a sandbox made ahead of the project's next job")
    assert len(ahead) == 1
    slot = server.engine.machine.process._warm[ahead[0]]

    def stubs():  # the sandbox is being made beside the test (bwrap, then setpriv, then the stub)
        try:
            return [p.cmdline()[-len(WARM_STUB):] for p in psutil.Process(slot.pid).children(recursive=True)
                    if p.username() == "nobody"]
        except psutil.NoSuchProcess:  # one of them exec'd or ended between the listing and the look
            return []
    wait_for(lambda: stubs() == [WARM_STUB], what="the stub waiting in the sandbox, as nobody, before any job exists")

    jid, warm = _probe(server, "warm")
    assert jid == Path(ahead[0]).name, "the project's next Create took the id chosen ahead"
    run_dir = server.data_dir / "jobs" / jid
    assert marshal.loads((run_dir / "supervisor").read_bytes())["pid"] == slot.pid, "it ran in that sandbox"
    assert marshal.loads((run_dir / "spec").read_bytes())["warm_argv"] == slot.argv

    cid, cold = _probe(server, "cold")  # the first job of its project: made when it starts
    assert marshal.loads((server.data_dir / "jobs" / cid / "supervisor").read_bytes())["pid"] != slot.pid
    assert f"[{WEIRD}]" in warm and "[s3cr'et $x\nline]" in warm, warm
    assert "uid=65534" in warm and "CapEff:\t0000000000000000" in warm and "NoNewPrivs:\t1" in warm, warm
    assert warm.replace(jid, "JOB") == cold.replace(cid, "JOB"), "a job sees the same, warm or cold"


PY_PROBE = ("python -c 'import os, sys; print(sys.executable, sys.prefix, sys.path, os.access(sys.prefix, os.W_OK))';"
            " python -m pip --version; env -0 | sort -z | tr '\\0' '\\n'; id; ls -A $VIRTUAL_ENV $VIRTUAL_ENV/bin;"
            " touch $VIRTUAL_ENV/mine && echo layer writable")


def test_a_python_env_projects_next_job_starts_in_a_sandbox_made_ahead_and_sees_what_a_cold_one_sees(server):
    """Its sandbox made ahead binds a job layer made then over the project's cached env; the job's own layer is
    made in place over it, and the job sees what its project's first (cold) job saw."""
    def probe():
        jid, op = run(server.client, jpb.JobParameters(cmd=PY_PROBE, env=jpb.Environment(
            python_env=jpb.PythonEnv())), project="py")
        assert not op.HasField("error"), op.error.message
        return jid, stdout_of(logs(server.client, jid)[0]).decode()

    cid, cold = probe()  # the project's first: made at its start
    ahead = wait_for(lambda: _warmed(server), what="a sandbox made ahead of the project's next job")
    slot = server.engine.machine.process._warm[ahead[0]]
    assert server.engine.jobs._id_ahead("py", JobParameters(cmd="true")) is None  # not a plain job's to take
    jid, warm = probe()
    assert jid == Path(ahead[0]).name, "the project's next Python-env job took the id chosen ahead"
    assert marshal.loads((server.data_dir / "jobs" / jid / "supervisor").read_bytes())["pid"] == slot.pid
    assert "layer writable" in warm and "uid=65534" in warm and "pip " in warm, warm
    assert warm.replace(jid, "JOB") == cold.replace(cid, "JOB"), "a job sees the same, warm or cold"


def test_a_job_unlike_the_one_before_starts_cold_and_right(server):
    Secrets(server.data_dir).set("p", "MY-SECRET", "dashed")  # no shell exports such a name: a cold start
    run(server.client, jpb.JobParameters(cmd="true"), project="p")
    wait_for(lambda: _warmed(server), what="a sandbox made ahead")
    jid, op = run(server.client, jpb.JobParameters(cmd="printenv MY-SECRET; id -u"), project="p")
    assert not op.HasField("error") and stdout_of(logs(server.client, jid)[0]) == b"dashed\n65534\n"
    # The next one asks for the project's disk: another sandbox than the one made ahead, which goes unused.
    wait_for(lambda: _warmed(server), what="a sandbox made ahead")
    jid, op = run(server.client, jpb.JobParameters(cmd="echo kept > $DS_PROJECT_HOME/f; cat $DS_PROJECT_HOME/f",
                                                   attach_project_disk=True), project="p")
    assert not op.HasField("error") and stdout_of(logs(server.client, jid)[0]) == b"kept\n"
    assert str(server.data_dir / "jobs" / jid) not in _warmed(server)


def test_ids_chosen_ahead_leave_nothing_behind(tmp_path):
    s = Server(tmp_path / "data", warm_sandboxes=True)
    try:
        run(s.client, jpb.JobParameters(cmd="true"), project="p")
        ahead = Path(wait_for(lambda: _warmed(s), what="a sandbox made ahead")[0])
        assert (ahead / MARK).exists()
        supervisor = psutil.Process(s.engine.machine.process._warm[str(ahead)].pid)
        sandbox = supervisor.children(recursive=True)
    finally:
        s.stop()
    assert not ahead.exists(), "an engine's stop removes the run dirs it made for no job"
    gone, alive = psutil.wait_procs([supervisor, *sandbox], timeout=10)
    assert not alive, alive
    # An engine that died holding one (kill -9) leaves a marked run dir no job has: the next start removes it.
    left = tmp_path / "data" / "jobs" / "ds0123456789abcdefgh"
    (left / "work").mkdir(parents=True)
    (left / MARK).touch()
    s.start()
    try:
        wait_for(lambda: not left.exists(), what="the leftover run dir removed")
    finally:
        s.stop()


def test_the_handoff_gives_the_stub_an_environment_and_a_command_exactly():
    env = {"A": WEIRD, "B": "", "C_1": "ünï\x7f", "PATH": "/usr/bin:/bin"}
    script = handoff(env, ["bash", "-c", "printf '%s|' \"$A\" \"$B\" \"$C_1\" \"$0\"; env | grep -c ^_=", "z 'y'"])
    out = subprocess.run(WARM_STUB, input=script, capture_output=True, env={}, timeout=10)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode() == f"{WEIRD}||ünï\x7f|z 'y'|1\n"
    for name in ("MY-SECRET", "IFS", "PWD", "1A", "É", ""):
        assert handoff({name: "x"}, ["true"]) is None, name
    assert handoff({"A": "x" * 70000}, ["true"]) is None
    # A NUL fails a cold start; the shell would drop it and run the job with another value: cold, to fail alike.
    assert handoff({"A": "a\0b"}, ["true"]) is None and handoff({}, ["echo", "a\0b"]) is None


def _supervised_by(server, jid: str) -> int:
    return marshal.loads((server.data_dir / "jobs" / jid / "supervisor").read_bytes())["pid"]


def test_a_sandbox_made_ahead_whose_files_were_replaced_since_is_not_used(server):
    """A sandbox holds the files bound into it when it was made: a project disk restored by a rename meanwhile
    would be the old one inside. The job starts cold and sees the project disk as it is now."""
    disk = lambda cmd: jpb.JobParameters(cmd=cmd, attach_project_disk=True)  # noqa: E731
    jid, op = run(server.client, disk("echo old > $DS_PROJECT_HOME/f; echo $DS_PROJECT_HOME"), project="p")
    assert not op.HasField("error"), op.error.message
    home = Path(stdout_of(logs(server.client, jid)[0]).decode().strip())
    assert (home / "f").read_text() == "old\n", "the job's project disk is that host dir"
    ahead = wait_for(lambda: _warmed(server), what="a sandbox made ahead")
    slot = server.engine.machine.process._warm[ahead[0]]
    st = home.stat()
    home.rename(home.with_name(home.name + ".before"))
    home.mkdir()
    os.chown(home, st.st_uid, st.st_gid)
    os.chmod(home, st.st_mode)
    jid, op = run(server.client, disk("ls -A $DS_PROJECT_HOME; echo new > $DS_PROJECT_HOME/g"), project="p")
    assert not op.HasField("error"), op.error.message
    assert jid == Path(ahead[0]).name and _supervised_by(server, jid) != slot.pid, "it started cold"
    assert stdout_of(logs(server.client, jid)[0]) == b"" and (home / "g").read_text() == "new\n"
    wait_for(lambda: not psutil.pid_exists(slot.pid), what="the unused sandbox's end")


def test_a_create_that_fails_after_taking_the_id_chosen_ahead_leaves_nothing_of_it(server):
    run(server.client, jpb.JobParameters(cmd="true"), project="p")
    ahead = Path(wait_for(lambda: _warmed(server), what="a sandbox made ahead")[0])
    slot = server.engine.machine.process._warm[str(ahead)]
    store, original = server.engine.store, server.engine.store.insert_job

    def full(*a, **kw):
        raise sqlite3.OperationalError("database or disk is full")
    store.insert_job = full
    try:
        with pytest.raises(grpc.RpcError) as e:
            create(server.client, jpb.JobParameters(cmd="true"), {}, project="p")
    finally:
        store.insert_job = original
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value.details()
    assert not ahead.exists() and str(ahead) not in _warmed(server), "its run dir and sandbox went with it"
    wait_for(lambda: not psutil.pid_exists(slot.pid), what="its supervisor's end")
    jid, op = run(server.client, jpb.JobParameters(cmd="echo fine"), project="p")
    assert jid != ahead.name and stdout_of(logs(server.client, jid)[0]) == b"fine\n"


def test_only_a_job_that_could_start_in_it_takes_the_id_chosen_ahead(server):
    run(server.client, jpb.JobParameters(cmd="true"), project="p")
    ahead = Path(wait_for(lambda: _warmed(server), what="a sandbox made ahead")[0])
    others = (JobParameters(cmd="true", env=Environment(docker_image_resource_id="bt0123456789abcdefgh")),
              JobParameters(cmd="true", env=Environment(docker_image_spec=DockerImageSpec(image_url="debian:12"))),
              JobParameters(cmd="true", env=Environment(python_env=PythonEnv())),
              JobParameters(cmd="true", spark_connector_id="sc0123456789abcdefgh"))
    for params in others:  # their sandbox (or container) is another: the id stays for a job that can use it
        assert server.engine.jobs._id_ahead("p", params) is None, params
    assert server.engine.jobs._id_ahead("p", JobParameters(cmd="true")) == ahead.name


def _holders(ns: str) -> list:
    """Processes in the mount namespace ``ns`` (mnt:[inode]) or holding a descriptor of it."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = [os.readlink(f"/proc/{pid}/ns/mnt")] + [
                os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:  # gone meanwhile
            continue
        if ns in links:
            out.append(int(pid))
    return out


def test_a_warm_jobs_mount_namespace_is_let_go_after_its_end(server):
    """Its supervisor holds the sandbox's mounts past the job, so that their unmounting is not on the job's path,
    then lets them go: nothing holds them once the job is done."""
    run(server.client, jpb.JobParameters(cmd="true"), project="p")
    ahead = wait_for(lambda: _warmed(server), what="a sandbox made ahead")
    slot = server.engine.machine.process._warm[ahead[0]]
    jid = create(server.client, jpb.JobParameters(
        cmd="readlink /proc/self/ns/mnt > ns.txt; while [ ! -e go ]; do sleep 0.01; done"), project="p")
    op = server.client.execute(jid)
    ns_file = server.work_dir(jid) / "ns.txt"
    wait_for(lambda: ns_file.exists() and ns_file.read_text().strip(), what="the job's mount namespace")
    ns = ns_file.read_text().strip()
    assert ns.startswith("mnt:[") and ns != os.readlink("/proc/self/ns/mnt"), ns
    assert _supervised_by(server, jid) == slot.pid, "it runs in the sandbox made ahead"
    assert slot.pid in _holders(ns), "its supervisor holds the namespace while the job runs"
    (server.work_dir(jid) / "go").touch()
    assert not wait_op(server.client, op).HasField("error")
    wait_for(lambda: not psutil.pid_exists(slot.pid), what="its supervisor's end")
    wait_for(lambda: not _holders(ns), what=f"nothing holding {ns}")
