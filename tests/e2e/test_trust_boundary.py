"""The trust boundary, tried as an attacker would on this machine: another local user, a container, a process job.

Only the engine's owner runs jobs (a token on every call, found by the owner's clients, readable by nobody else);
a container has no route to the engine on the host's loopback, and on the host network it still has no token; a
process job sees its own working directory, inputs, env and project disk, and nothing of the data dir, the real
HOME, other projects or the engine's processes; ids cannot form paths; secrets are only in the secrets store.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import grpc
import pytest
import requests

from dsjobs.client import Client
from dsjobs_pb.yandex.cloud.datasphere.v2 import project_service_pb2 as pspb
from dsjobs_pb.yandex.cloud.datasphere.v2 import project_service_pb2_grpc as pgrpc
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
from engine.resources import Secrets
from tests.conftest import Server
from tests.helpers import Serve
from tests.helpers import official_python
from tests.helpers import blob, create, logs, response, run, stdout_of, wait_for, wait_op, wait_status, work_dir

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
OTHER = "dsjobs-other"
# The last release before the trust boundary: its data dirs must open (git history is part of a clone).
PREVIOUS_RELEASE = "0b5bb17"


@pytest.fixture(scope="module")
def other_user():
    if subprocess.run(["id", OTHER], capture_output=True).returncode != 0:
        # check=False: another xdist worker may be adding it at the same moment; either way it must exist now.
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell",
                        "/usr/sbin/nologin", OTHER], check=False)
        subprocess.run(["id", OTHER], capture_output=True, check=True)
    return OTHER


@pytest.fixture
def open_tmp():
    """A directory every user may traverse (pytest's own tmp dirs are 0700, which would hide everything anyway):
    what protects the data dir below it must be the data dir's own modes."""
    d = Path(tempfile.mkdtemp(prefix="dsjobs-trust-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _open_to_all(path: Path) -> bool:
    """Whether every user can reach ``path`` (each directory on the way lets others through)."""
    p = path.resolve()
    return all(os.stat(d).st_mode & stat.S_IXOTH for d in [p, *p.parents])


_CLIENT_CODE: dict = {}


def client_code() -> str:
    """A PYTHONPATH with this checkout's client and its venv's packages that every user may read: the checkout and
    venv themselves when they are open to all, else a copy (a fresh clone in a 0700 `mktemp -d` is not)."""
    site = Path(grpc.__file__).resolve().parents[1]
    if _open_to_all(ROOT) and _open_to_all(site):
        return f"{ROOT}:{site}"
    if "path" not in _CLIENT_CODE:
        dst = Path(tempfile.mkdtemp(prefix="dsjobs-client-code-", dir="/tmp"))
        os.chmod(dst, 0o755)
        for name in ("dsjobs", "dsjobs_pb", "runners", "engine"):
            shutil.copytree(ROOT / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("grpc", "google", "requests", "urllib3", "idna", "charset_normalizer", "certifi", "yaml",
                     "_yaml", "typing_extensions"):
            for src in [site / name, site / f"{name}.py", *site.glob(f"{name}.*.so")]:
                if src.is_dir():
                    shutil.copytree(src, dst / src.name, ignore=shutil.ignore_patterns("__pycache__"))
                elif src.exists():
                    shutil.copy(src, dst / src.name)
        for root, dirs, files in os.walk(dst):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
            for f in files:
                os.chmod(os.path.join(root, f), 0o644)
        _CLIENT_CODE["path"] = str(dst)
        import atexit
        atexit.register(shutil.rmtree, dst, True)
    return _CLIENT_CODE["path"]


def as_user(user: str, code: str, *args: str, timeout: float = 60, stdin: str = "") -> subprocess.CompletedProcess:
    """Python as ``user``: the system's interpreter (the owner's is under a HOME others cannot enter) with this
    checkout's client and its venv's packages (client_code())."""
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "PYTHONPATH": client_code(),
           "PYTHONDONTWRITEBYTECODE": "1"}
    python = shutil.which("python3", path="/usr/bin:/bin")
    return subprocess.run([python, "-c", textwrap.dedent(code), *args], user=user, env=env, cwd="/", input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def test_another_local_user_can_do_nothing(open_tmp, other_user):
    srv = Serve(open_tmp / "data")
    client = srv.start()
    try:
        jid = create(client, jpb.JobParameters(cmd="sleep 30"), project="mine")
        op = client.execute(jid)
        wait_status(client, jid, {jpb.EXECUTING})
        port = client.endpoint.rsplit(":", 1)[1]
        data = open_tmp / "data"
        r = as_user(other_user, """
            import sys, grpc
            from dsjobs.client import Client
            from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
            from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
            c = Client("127.0.0.1:" + sys.argv[1])  # finds no token: it is not theirs to find
            calls = {
                "list": lambda: c.list("mine"),
                "create": lambda: c.jobs.Create(spb.CreateProjectJobRequest(project_id="mine",
                    job_parameters=jpb.JobParameters(cmd="id"))),
                "execute": lambda: c.execute(sys.argv[2]),
                "cancel": lambda: c.cancel(sys.argv[2]),
                "get": lambda: c.get(sys.argv[2]),
                "logs": lambda: list(c.jobs.ReadLogs(spb.ReadProjectJobLogsRequest(job_id=sys.argv[2]))),
            }
            for name, call in calls.items():
                try:
                    call()
                    print(name, "ALLOWED")
                except grpc.RpcError as e:
                    print(name, e.code().name)
            import os
            for p in sys.argv[3:]:
                try:
                    if os.path.isdir(p):
                        os.listdir(p)
                    else:
                        open(p, "rb").read(1)
                    print(p, "READ")
                except OSError as e:
                    print(p, type(e).__name__)
            """, port, jid, str(data), str(data / "token"), str(data / "dsjobs.db"), str(data / "signing.key"),
            str(data / "jobs" / jid), str(data / "jobs" / jid / "stdout.txt"), str(data / "blobs"))
        assert r.returncode == 0, r.stderr
        lines = dict(line.rsplit(" ", 1) for line in r.stdout.splitlines())
        for name in ("list", "create", "execute", "cancel", "get", "logs"):
            assert lines[name] == "UNAUTHENTICATED", r.stdout
        for p, outcome in lines.items():
            if p.startswith("/"):
                assert outcome == "PermissionError", r.stdout
        assert client.get(jid).status == jpb.EXECUTING  # the other user's cancel did nothing
        # The owner's own CLI finds the engine's token by itself (the runtime descriptor): no token given.
        env = {k: v for k, v in os.environ.items() if k != "DSJOBS_TOKEN"}
        r = subprocess.run([sys.executable, "-m", "dsjobs", "--endpoint", client.endpoint, "project", "job", "list",
                            "-p", "mine", "--format", "json"], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert [j["id"] for j in json.loads(r.stdout)] == [jid]
        client.cancel(jid)
        wait_op(client, op, 20)
        # The data dir, the database, the token and every run dir are the owner's alone.
        assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
        for name in ("token", "dsjobs.db", "signing.key"):
            assert stat.S_IMODE(os.stat(data / name).st_mode) == 0o600, name
        assert stat.S_IMODE(os.stat(data / "jobs" / jid).st_mode) == 0o700
    finally:
        client.close()
        srv.proc.terminate()
        srv.proc.wait(10)


YANDEXCLOUD_STUB = """
import sys, grpc
from yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb, project_job_service_pb2_grpc as sgrpc
stub = sgrpc.ProjectJobServiceStub(grpc.insecure_channel(sys.argv[1]))
md = [("authorization", "Bearer " + open(sys.argv[2]).read().strip())] if sys.argv[2] != "-" else []
try:
    r = stub.List(spb.ListProjectJobRequest(project_id="mine"), metadata=md)
    print("OK", len(r.jobs))
except grpc.RpcError as e:
    print(e.code().name, e.details())
"""


def test_plain_yandexcloud_stubs_need_the_token_from_the_data_dir(server):
    endpoint = f"127.0.0.1:{server.port}"
    token = str(server.data_dir / "token")
    # In a subprocess: yandexcloud registers the same proto packages as our generated code.
    with_token = subprocess.run([sys.executable, "-c", YANDEXCLOUD_STUB, endpoint, token], capture_output=True,
                                text=True, timeout=60)
    assert with_token.stdout.startswith("OK 0"), with_token.stdout + with_token.stderr
    without = subprocess.run([sys.executable, "-c", YANDEXCLOUD_STUB, endpoint, "-"], capture_output=True, text=True,
                             timeout=60)
    assert without.stdout.startswith("UNAUTHENTICATED") and token in without.stdout, without.stdout


def test_the_token_is_on_no_command_line_and_in_no_environ_another_user_reads(open_tmp, other_user, tmp_path):
    srv = Serve(open_tmp / "data")
    client = srv.start()
    cli = None
    try:
        token = (open_tmp / "data" / "token").read_text().strip()
        # A job running, and the official CLI (through `dsjobs datasphere`) following it.
        (tmp_path / "config.yaml").write_text("cmd: sleep 3; echo done\n")
        env = {k: v for k, v in os.environ.items() if k != "DSJOBS_TOKEN"}
        env["DSJOBS_DATASPHERE_PYTHON"] = official_python()
        cli = subprocess.Popen([sys.executable, "-m", "dsjobs", "--endpoint", client.endpoint, "datasphere",
                                "project", "job", "execute", "-p", "mine", "-c", "config.yaml"], cwd=tmp_path,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_for(lambda: cli.poll() is not None or client.list("mine"), 60, "the official CLI's job")
        assert cli.poll() is None, cli.stdout.read()
        seen = as_user(other_user, """
            import os, sys
            token = sys.stdin.read().strip().encode()  # not an argument: that would put it on our own cmdline
            hits = []
            for pid in filter(str.isdigit, os.listdir("/proc")):
                for what in ("cmdline", "environ"):
                    try:
                        with open(f"/proc/{pid}/{what}", "rb") as f:
                            if token in f.read():
                                hits.append(f"{pid}/{what}")
                    except OSError:
                        pass
            print(" ".join(hits) or "none")
            """, stdin=token)
        assert seen.stdout.strip() == "none", seen.stdout + seen.stderr
        for pid in filter(str.isdigit, os.listdir("/proc")):  # and, looked at as root, on no command line at all
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    assert token.encode() not in f.read(), f"the token is on the command line of {pid}"
            except OSError:
                pass
        out, _ = cli.communicate(timeout=60)
        assert cli.returncode == 0, out
    finally:
        if cli is not None and cli.poll() is None:
            cli.kill()
            cli.wait()
        client.close()
        srv.proc.terminate()
        srv.proc.wait(10)


@pytest.mark.docker
@pytest.mark.parametrize("network", ["auto", "host"])
def test_a_container_cannot_act_as_the_engine(tmp_path, network):
    from tests.dockerenv import python_image
    s = Server(tmp_path / "data", docker_network=network)
    try:
        grpc_port, files_port = s.port, s.engine.files.server_address[1]
        # The engine's own client library, read-only in the container, for a real gRPC call without a token.
        site = Path(grpc.__file__).resolve().parents[1]
        libs, repo = "a" * 20, "b" * 20
        from engine.resources import Directories
        Directories(s.data_dir, "dataset").add(libs, site)
        Directories(s.data_dir, "dataset").add(repo, ROOT)
        cmd = textwrap.dedent(f"""\
            python3 - <<'EOF'
            import socket, sys
            sys.path[:0] = ["${{{repo}}}", "${{{libs}}}"]
            for port in ({grpc_port}, {files_port}):
                try:
                    socket.create_connection(("127.0.0.1", port), 2).close()
                    print("connect", port, "open")
                except OSError as e:
                    print("connect", port, "refused")
            try:
                import grpc
                from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
                from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
                from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2_grpc as sgrpc
                stub = sgrpc.ProjectJobServiceStub(grpc.insecure_channel("127.0.0.1:{grpc_port}"))
                stub.Create(spb.CreateProjectJobRequest(project_id="p1",
                            job_parameters=jpb.JobParameters(cmd="id")), timeout=5)
                print("create OK")
            except grpc.RpcError as e:
                print("create", e.code().name)
            EOF""")
        params = jpb.JobParameters(cmd=cmd, dataset_ids=[libs, repo],
                                   env=jpb.Environment(docker_image_spec=jpb.DockerImageSpec(image_url=python_image())))
        jid, op = run(s.client, params, timeout=120)
        assert not op.HasField("error"), op.error.message
        out = stdout_of(logs(s.client, jid)[0]).decode()
        system = b"".join(m.content for m in logs(s.client, jid)[0] if m.file_path == ".system.log").decode()
        if network == "auto":
            assert f"connect {grpc_port} refused" in out and f"connect {files_port} refused" in out, out
            assert "create UNAVAILABLE" in out, out
            assert "network: dsjobs" in system or "network: none" in system
        else:
            assert f"connect {grpc_port} open" in out, out  # on the host's network, asked for...
            assert "create UNAUTHENTICATED" in out, out  # ... and still without a token
        assert [j.id for j in s.client.list("p1")] == [jid]  # nothing was created
    finally:
        s.stop()


def test_a_process_job_sees_only_what_it_was_given(server, tmp_path):
    client, data = server.client, server.data_dir
    # Another project's output and secret, and this project's own secret.
    other_out = b"other-project-output-" + os.urandom(8).hex().encode()
    oid, op = run(client, jpb.JobParameters(cmd=f"printf {other_out.decode()} > o.txt",
                                            output_files=[jpb.FileDesc(path="o.txt")]), project="other")
    blob_path = data / "blobs" / "objects" / hashlib.sha256(other_out).hexdigest()[:2] / \
        hashlib.sha256(other_out).hexdigest()[2:]
    assert blob_path.read_bytes() == other_out
    Secrets(data).set("other", "OTHER_SECRET", "zz-other-secret")
    Secrets(data).set("mine", "MY-SECRET", "my-own-secret")
    home = os.path.realpath(os.path.expanduser("~"))
    canary = Path(home) / f".dsjobs-canary-{os.urandom(4).hex()}"  # the real HOME: default data dir, caches
    canary.write_text("in the owner's home")
    probes = {"key": data / "signing.key", "db": data / "dsjobs.db", "token": data / "token",
              "blob": blob_path, "secret": data / "secrets" / "other" / "OTHER_SECRET", "home": canary}
    script = "; ".join(f"(cat {p} >/dev/null 2>&1 && echo {k}=READ || echo {k}=hidden)" for k, p in probes.items())
    script += (f"; (kill -0 {os.getpid()} 2>/dev/null && echo engine=SIGNALLED || echo engine=out-of-reach)"
               f"; echo jobs=$(ls {data}/jobs | tr '\\n' ,); echo homedir=$(ls -A {home} | tr '\\n' ,)"
               "; echo mine=$(printenv MY-SECRET); echo other=$(printenv OTHER_SECRET)"
               "; echo pids=$(ls /proc | grep -c '^[0-9]')"
               "; cat ${IN} > ${OUT}; echo $FOO >> ${OUT}"
               "; echo '{\"progress\": 42, \"message\": \"half\"}' >> $JOB_PROGRESS_FILENAME"
               "; echo disk > ${DS_PROJECT_HOME}/kept.txt; sleep 0.3")
    inp = blob(b"input-bytes\n", "in.txt", "IN")
    try:
        jid, op = run(client, jpb.JobParameters(cmd=script, attach_project_disk=True,
                                                output_files=[jpb.FileDesc(path="out.txt", var="OUT")],
                                                env=jpb.Environment(vars={"FOO": "foo-var"})), [inp], project="mine")
    finally:
        canary.unlink()
    assert not op.HasField("error"), op.error.message
    out = dict(line.split("=", 1) for line in stdout_of(logs(client, jid)[0]).decode().split() if "=" in line)
    for k in probes:
        assert out[k] == "hidden", (k, out)
    assert out["engine"] == "out-of-reach" and out["jobs"] == f"{jid},", out
    # Of the real HOME only what the job needs shows: the interpreter's installation (pyenv's, here), read-only.
    assert set(out["homedir"].strip(",").split(",")) <= {"", ".pyenv"}, out
    assert out["mine"] == "my-own-secret" and out["other"] == "", out
    assert int(out["pids"]) < 10, out  # a PID namespace of its own: the job's few processes only
    r = response(op)
    assert requests.get(r.output_files[0].url).content == b"input-bytes\nfoo-var\n"
    meta = spb.ExecuteProjectJobMetadata()
    op.metadata.Unpack(meta)
    assert meta.progress.progress == 42
    # The project disk persists for the project's next job; nothing of it reached another project.
    jid2, _ = run(client, jpb.JobParameters(cmd="cat ${DS_PROJECT_HOME}/kept.txt", attach_project_disk=True),
                  project="mine")
    assert stdout_of(logs(client, jid2)[0]) == b"disk\n"
    # A Python env job runs confined too (its env built confined, its interpreter visible, read-only).
    jid3, op = run(client, jpb.JobParameters(
        cmd="python -c 'import sys; print(sys.prefix)'; touch $(python -c 'import sys; print(sys.base_prefix)')/x "
            "2>/dev/null && echo base=WRITABLE || echo base=read-only",
        env=jpb.Environment(python_env=jpb.PythonEnv())), project="mine", timeout=120)
    assert not op.HasField("error"), op.error.message
    text = stdout_of(logs(client, jid3)[0]).decode()
    assert text.startswith(str(data / "jobs" / jid3 / "venv")) and "base=read-only" in text, text


@pytest.mark.parametrize("bad", ["../x", "/abs", "a" * 300, "a\x00b", "проект", ".", "..", "a/b", "-lead", ""])
def test_hostile_project_ids_are_invalid_and_create_nothing(server, bad):
    client = server.client
    before = sorted(os.listdir(server.data_dir.parent))
    calls = {
        "create": lambda: client.jobs.Create(spb.CreateProjectJobRequest(
            project_id=bad, job_parameters=jpb.JobParameters(cmd="true", attach_project_disk=True))),
        "list": lambda: client.jobs.List(spb.ListProjectJobRequest(project_id=bad)),
        "delete-all": lambda: client.jobs.DeleteAllData(spb.DeleteAllProjectJobDataRequest(project_id=bad)),
        "project": lambda: pgrpc.ProjectServiceStub(client.channel).Get(pspb.GetProjectRequest(project_id=bad)),
    }
    for name, call in calls.items():
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, e.value.details())
        assert "project_id" in e.value.details(), e.value.details()
        if bad and "\x00" not in bad:
            assert repr(bad[:60])[1:-1] in e.value.details(), e.value.details()
    assert sorted(os.listdir(server.data_dir.parent)) == before
    assert not (server.data_dir / "projects").exists()


def test_sandbox_that_cannot_start_fails_naming_the_opt_out(tmp_path):
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    s = Server(tmp_path / "data", bwrap=str(fake))
    try:
        for env in (jpb.Environment(), jpb.Environment(python_env=jpb.PythonEnv())):
            _, op = run(s.client, jpb.JobParameters(cmd="true", env=env))
            assert op.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0], op.error
            for opt_out in ("--sandbox none", 'sandbox="none"', "--dsjobs-sandbox none"):
                assert opt_out in op.error.message, op.error.message
            assert "No permissions" in op.error.message, op.error.message
    finally:
        s.stop()
    s = Server(tmp_path / "data2", bwrap=str(fake), sandbox="none")  # the opt-out runs them unconfined
    try:
        jid, op = run(s.client, jpb.JobParameters(cmd=f"test -r {s.data_dir / 'signing.key'} && echo unconfined"))
        assert stdout_of(logs(s.client, jid)[0]) == b"unconfined\n"
    finally:
        s.stop()


@pytest.mark.docker
def test_secrets_live_only_in_the_secrets_store(tmp_path, registry):
    from tests.dockerenv import shell_image
    reg = registry("puller", "registry-pa55-" + os.urandom(6).hex())
    s = Server(tmp_path / "data")
    try:
        ref = reg.push(shell_image(), "dsjobs/shell:secrets")
        project_secret = "project-s3cret-" + os.urandom(6).hex()
        Secrets(s.data_dir).set("p1", "API_KEY", project_secret)
        # The registry password sent in the clear (as the proto allows), and the project's secret, in a container...
        docker_params = jpb.JobParameters(
            cmd="echo started; sleep 2; echo \"$API_KEY\" | wc -c",
            env=jpb.Environment(docker_image_spec=jpb.DockerImageSpec(image_url=ref, username="puller",
                                                                      password_plain_text=reg.password)))
        # ... and in a process job.
        process_params = jpb.JobParameters(cmd="echo started; sleep 2; echo \"$API_KEY\" | wc -c")
        jobs = [create(s.client, p) for p in (docker_params, process_params)]
        ops = [s.client.execute(j) for j in jobs]
        for j in jobs:
            wait_for(lambda: b"started" in stdout_of(logs_now(s.client, j)), 60, "the job's start")

        def holders(*needles: str) -> list[str]:
            found = []
            for d, _, files in os.walk(s.data_dir):
                for name in files:
                    p = Path(d) / name
                    if (s.data_dir / "secrets") in p.parents:
                        continue
                    try:
                        content = p.read_bytes()
                    except OSError:
                        continue
                    found += [f"{p}: {n}" for n in needles if n.encode() in content]
            return found
        assert holders(reg.password, project_secret) == []  # started, running: in no file but the store
        for op in ops:
            done = wait_op(s.client, op, 60)
            assert not done.HasField("error"), done.error.message
        for j in jobs:
            assert stdout_of(logs(s.client, j)[0]).split()[-1] == str(len(project_secret) + 1).encode()
        assert holders(reg.password, project_secret) == []
        assert s.client.get(jobs[0]).job_parameters.env.docker_image_spec.password_plain_text in ("", "***")
        r = subprocess.run([sys.executable, "-m", "dsjobs", "secret", "rm", "--project", "p1", "--data-dir",
                            str(s.data_dir), "API_KEY"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        for d, _, files in os.walk(s.data_dir):  # the store included: no copy left anywhere
            for name in files:
                assert project_secret.encode() not in (Path(d) / name).read_bytes(), name
        for sub in ("secrets", "jobs"):
            assert stat.S_IMODE(os.stat(s.data_dir / sub).st_mode) & 0o077 == 0
    finally:
        s.stop()


def logs_now(client, job_id: str):
    """The log records so far, without waiting for the job to finish."""
    out = []
    for resp in client.jobs.ReadLogs(spb.ReadProjectJobLogsRequest(job_id=job_id, offset=0), timeout=1):
        out += list(resp.logs)
        break
    return out


def test_a_data_dir_of_the_previous_release_opens(tmp_path):
    """Written by the release before the trust boundary (git history), then opened by this one: its ids stay
    readable, its running job is re-adopted, its clear-text secrets are scrubbed and it gets a token."""
    old = tmp_path / "old"
    old.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", PREVIOUS_RELEASE], capture_output=True)
    assert archive.returncode == 0, f"git history with {PREVIOUS_RELEASE} is needed: {archive.stderr.decode()}"
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    data = tmp_path / "data"
    env = dict(os.environ, PYTHONPATH=str(old))
    env.pop("DSJOBS_TOKEN", None)
    r = subprocess.run([sys.executable, "-m", "dsjobs", "secret", "set", "--project", "p1", "--data-dir", str(data),
                        "API_KEY"], input="old-project-secret", env=env, cwd=old, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    proc = subprocess.Popen([sys.executable, "-m", "dsjobs", "serve", "--listen", "127.0.0.1:0", "--data-dir",
                             str(data), "--log-level", "warning"], env=env, cwd=old, stdout=subprocess.PIPE, text=True)
    try:
        import re
        port = re.search(r"on 127\.0\.0\.1:(\d+)", proc.stdout.readline()).group(1)
        c = Client(f"127.0.0.1:{port}", token="")  # the old release has no tokens
        done, _ = run(c, jpb.JobParameters(cmd="echo finished-before", output_files=[jpb.FileDesc(path="o.txt")]))
        with_password = create(c, jpb.JobParameters(cmd="true", env=jpb.Environment(
            docker_image_spec=jpb.DockerImageSpec(image_url="x/y:1", username="u",
                                                  password_plain_text="old-registry-password"))))
        running = create(c, jpb.JobParameters(
            cmd="echo $API_KEY | wc -c; while [ ! -f release ]; do sleep 0.05; done; echo ok > out.txt",
            output_files=[jpb.FileDesc(path="out.txt")]))
        op = c.execute(running)
        wait_status(c, running, {jpb.EXECUTING})
        wait_for((data / "jobs" / running / "supervisor").exists, 10, "the old supervisor's start")
        c.close()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert b"old-project-secret" in (data / "jobs" / running / "spec").read_bytes()  # what the old release left

    s = Server(data)
    try:
        assert s.client.get(done).status == jpb.SUCCESS
        assert s.client.get(with_password).status == jpb.CREATING
        assert stat.S_IMODE(os.stat(data / "token").st_mode) == 0o600 and s.engine.token
        (work_dir(data, running) / "release").touch()
        finished = wait_op(s.client, s.client.get_operation(op.id), 30)
        assert not finished.HasField("error"), finished.error.message
        assert [f.file.desc.path for f in response(finished).output_files] == ["out.txt"]
        assert stdout_of(logs(s.client, running)[0]).split()[0] == str(len("old-project-secret") + 1).encode()
        for d, dirs, files in os.walk(data):
            for name in files:
                p = Path(d) / name
                if (data / "secrets") in p.parents:
                    continue
                content = p.read_bytes()
                assert b"old-project-secret" not in content and b"old-registry-password" not in content, p
            for name in dirs + files:
                p = Path(d) / name
                if not p.is_symlink() and (data / "jobs") not in p.parents:
                    assert stat.S_IMODE(os.lstat(p).st_mode) & 0o077 == 0, p
    finally:
        s.stop()


# --- what an attack on the first version of this boundary found (each fixed, each tested) ---------------------


def test_a_job_of_a_root_engine_runs_as_nobody_and_cannot_touch_the_host(server, tmp_path):
    assert os.geteuid() == 0, "this machine runs the tests as root: the case where it matters"
    secret = Path("/opt") / f"dsjobs-root-only-{os.urandom(4).hex()}"  # a root-only file in a directory jobs see
    secret.write_text("root only")
    secret.chmod(0o600)
    try:
        jid, op = run(server.client, jpb.JobParameters(
            cmd=f"id -u; (echo x > /proc/sys/kernel/domainname) 2>/dev/null && echo sysctl=WRITTEN || echo sysctl=refused;"
                f" cat {secret} 2>/dev/null || echo root-file=refused; grep CapEff /proc/self/status"))
        out = stdout_of(logs(server.client, jid)[0]).decode()
        assert out.splitlines()[0] == "65534", out
        assert "sysctl=refused" in out and "root-file=refused" in out and "CapEff:\t0000000000000000" in out, out
        assert Path("/proc/sys/kernel/domainname").read_text().strip() != "x"
    finally:
        secret.unlink()


def test_an_output_dataset_made_a_symlink_is_not_published(server):
    client = server.client
    jid, op = run(client, jpb.JobParameters(cmd="rmdir ${OUT} && ln -s / ${OUT}", output_datasets=[
        jpb.OutputDatasetDesc(name="innocent", var="OUT", size_gb=1)]))
    assert not response(op).output_datasets
    assert "no longer a directory" in system_log_of(client, jid)
    from engine.resources import Directories
    assert Directories(server.data_dir, "dataset").all() == {}


def system_log_of(client, job_id: str) -> str:
    return b"".join(m.content for m in logs(client, job_id)[0] if m.file_path == ".system.log").decode()


def test_a_tampered_cached_env_shows_the_job_nothing_more(server):
    client = server.client
    pe = jpb.PythonEnv()
    first, op = run(client, jpb.JobParameters(cmd="true", env=jpb.Environment(python_env=pe)), timeout=120)
    assert not op.HasField("error"), op.error.message
    envs = server.engine.envs
    (base,) = [p for p in envs.root.iterdir() if p.is_dir() and envs.complete(p.name)]
    # What a package's build code could have left: the env's interpreter link pointing at "/x" (prefix "/").
    (base / "bin" / "python").unlink()
    os.symlink("/x", base / "bin" / "python")
    assert not list(base.glob(".complete")) and not (base / ".meta.json").exists()  # the engine's notes are outside
    jid, op = run(client, jpb.JobParameters(cmd=f"python -c 'print(1)'; ls {server.data_dir} | wc -l; "
                                                f"test -e {server.data_dir / 'token'} && echo TOKEN || echo no-token",
                                            env=jpb.Environment(python_env=pe)), timeout=60)
    assert not op.HasField("error"), op.error.message
    out = stdout_of(logs(client, jid)[0]).decode().split()
    assert out[0] == "1" and out[-1] == "no-token", out  # the engine's own interpreter; nothing of the data dir


def test_environments_and_download_caches_are_per_project(server):
    client = server.client
    pe = jpb.PythonEnv()
    for project in ("pa", "pb"):
        _, op = run(client, jpb.JobParameters(cmd="true", env=jpb.Environment(python_env=pe)), project=project,
                    timeout=120)
        assert not op.HasField("error"), op.error.message
    envs = server.engine.envs
    built = [e for e in envs.entries()]
    assert sorted(e["project"] for e in built) == ["pa", "pb"] and len({e["key"] for e in built}) == 2


def test_a_data_dir_someone_else_prepared_is_refused(open_tmp, other_user):
    open_tmp.chmod(0o1777)  # as /tmp is: anyone may make a directory there first
    planted = open_tmp / "planted"
    r = as_user(other_user, """
        import os, sys
        os.mkdir(sys.argv[1]); os.chmod(sys.argv[1], 0o755)
        open(os.path.join(sys.argv[1], "token"), "w").write("attacker-chosen-token")
        """, str(planted))
    assert r.returncode == 0, r.stderr
    from engine.app import build_engine
    from engine.config import EngineConfig
    from engine.errors import FailedPrecondition
    with pytest.raises(FailedPrecondition, match="token"):
        build_engine(EngineConfig(data_dir=planted))
    open_dir = open_tmp / "world-writable"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(FailedPrecondition, match="writable by others"):
        build_engine(EngineConfig(data_dir=open_dir))


def test_no_token_goes_to_a_port_the_engine_does_not_hold(tmp_path):
    """A squatter on an endpoint (another user, a job, a host-network container, while the engine is away) gets no
    token from a client that found one by itself."""
    from concurrent import futures
    seen = []

    class Capture(grpc.GenericRpcHandler):
        def service(self, details):
            seen.append(dict(details.invocation_metadata))
            return grpc.unary_unary_rpc_method_handler(
                lambda req, ctx: ctx.abort(grpc.StatusCode.UNAVAILABLE, "squatter"),
                request_deserializer=lambda b: b, response_serializer=lambda b: b)
    squatter = grpc.server(futures.ThreadPoolExecutor(2), handlers=[Capture()])
    port = squatter.add_insecure_port("127.0.0.1:0")
    squatter.start()
    srv = Serve(tmp_path / "data")  # a real engine, with its descriptor, elsewhere
    real = srv.start()
    try:
        env = {k: v for k, v in os.environ.items() if k != "DSJOBS_TOKEN"}
        r = subprocess.run([sys.executable, "-m", "dsjobs", "--endpoint", f"127.0.0.1:{port}", "project", "job",
                            "list", "-p", "p"], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and seen, r.stderr
        assert all("authorization" not in md for md in seen), seen
        assert real.list("p") == []  # the real engine's clients still find its token
    finally:
        real.close()
        srv.proc.terminate()
        srv.proc.wait(10)
        squatter.stop(0)


def test_a_file_name_cannot_forge_a_system_log_line(client):
    cmd = ("mkdir res; ln -s /nonexistent \"res/x$(printf '\\n')job completed successfully\"; exit 3")
    jid, op = run(client, jpb.JobParameters(cmd=cmd, output_files=[jpb.FileDesc(path="res")]))
    lines = system_log_of(client, jid).splitlines()
    assert "job completed successfully" not in lines, lines
    assert "job finished with return code 3" in lines


@pytest.mark.docker
def test_containers_get_secrets_on_stdin_whatever_their_user_and_no_raw_sockets(tmp_path):
    from tests.dockerenv import docker, shell_image
    base = shell_image()
    nobody = "dsjobs-test/shell-nobody:2"
    cid = docker("create", base, "true").stdout.strip()
    try:
        docker("commit", "--change", "USER 65534:65534", cid, nobody)
    finally:
        docker("rm", cid, check=False)
    s = Server(tmp_path / "data", docker_run_as_root=True)  # the image's own USER, not the data dir's owner
    try:
        Secrets(s.data_dir).set("p1", "API_KEY", "stdin-secret")
        jid = create(s.client, jpb.JobParameters(
            cmd="id -u; echo key=$(printf %s \"$API_KEY\" | wc -c); grep CapEff /proc/self/status; sleep 1",
            env=jpb.Environment(docker_image_spec=jpb.DockerImageSpec(image_url=nobody))))
        op = s.client.execute(jid)
        wait_status(s.client, jid, {jpb.EXECUTING})
        for d, _, files in os.walk(s.data_dir):  # while it runs: the secret is in no file but the store
            for name in files:
                p = Path(d) / name
                if (s.data_dir / "secrets") not in p.parents:
                    assert b"stdin-secret" not in p.read_bytes(), p
        done = wait_op(s.client, op, 60)
        assert not done.HasField("error"), done.error.message
        out = stdout_of(logs(s.client, jid)[0]).decode().split("\n")
        assert out[0] == "65534" and f"key={len('stdin-secret')}" in out, out
        cap_eff = int(next(x for x in out if x.startswith("CapEff")).split()[1], 16)
        assert cap_eff & (1 << 13) == 0  # CAP_NET_RAW
    finally:
        s.stop()
        docker("rmi", nobody, check=False)
