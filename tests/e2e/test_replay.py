"""`dsjobs replay`: a second `dsjobs serve`, with TLS (a CA made here) and its token, stands in for the cloud. A job
run there is replayed here with identical outputs; a changed input is named by its digest; a missing secret is
named; a cleared job is refused. The cloud's credential path (OAuth exchange, yc profiles, IAM tokens) is run
against a fake IAM service up to the network call (the real one cannot be reached from here)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from argparse import Namespace
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from dsjobs.client import Client, build_params
from dsjobs import jobconfig, replay
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
from tests.helpers import Serve

pytestmark = pytest.mark.e2e


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    """The stand-in for the cloud: `dsjobs serve --tls-cert --tls-key`, its certificate from a CA of the test's."""
    d = tmp_path_factory.mktemp("cloud")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=dsjobs test CA",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "srv.key", "-out",
             "srv.csr", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
             "-extfile", "ext.cnf", "-out", "srv.pem", cwd=d)
    srv = Serve(d / "data")
    srv.extra = ["--tls-cert", str(d / "srv.pem"), "--tls-key", str(d / "srv.key"), "--tls-ca", str(d / "ca.pem")]
    plain = srv.start()  # (only its endpoint is used: the tests' clients are given the CA themselves)
    endpoint = plain.endpoint
    plain.close()
    client = Client(endpoint, token=(d / "data" / "token").read_text().strip(), ca_file=str(d / "ca.pem"))
    yield Namespace(dir=d, endpoint=endpoint, client=client, data=d / "data", ca=str(d / "ca.pem"),
                    token_file=str(d / "data" / "token"))
    client.close()
    srv.proc.terminate()
    srv.proc.wait(10)


def _run_there(cloud, work: Path, project: str = "cloudp") -> str:
    cfg = jobconfig.load(work / "config.yaml", work)
    prep = build_params(cfg, work)
    c = cloud.client
    with prep.tmp:
        job_id, uploads = c.create(project, prep, cfg)
        c.upload(uploads, prep.local_paths)  # over HTTPS, checked against the test's CA
    try:
        c.wait_operation(c.execute(job_id), poll_s=0.05)
    except Exception:  # noqa: BLE001 - a failing job is replayed too
        pass
    return job_id


def _replay(cloud, job_id, work: Path, local: Path, *extra):
    r = subprocess.run([sys.executable, "-m", "dsjobs", "replay", job_id, "--from", cloud.endpoint, "--ca-file",
                        cloud.ca, "--token-file", cloud.token_file, "--data-dir", str(local), "--format", "json",
                        *extra], cwd=work, capture_output=True, text=True, timeout=120)
    return r.returncode, (json.loads(r.stdout) if r.stdout.strip() else None), r.stderr


CONFIG = """\
    name: replayed
    cmd: sort ${DATA} > out.txt; mkdir -p outdir; cp lib/* outdir/; echo "seed $SEED ${N}" >&2
    args:
      N: "3"
    env:
      vars:
        - SEED: "42"
    inputs:
      - data.txt: DATA
      - lib
    outputs:
      - out.txt
      - outdir
    cloud-instance-types: [c1.8]
    """


@pytest.fixture
def work(tmp_path):
    w = tmp_path / "job"
    (w / "lib").mkdir(parents=True)
    (w / "lib" / "a.txt").write_text("alpha\n")
    (w / "data.txt").write_text("pear\napple\nfig\n")
    (w / "config.yaml").write_text(textwrap.dedent(CONFIG))
    return w


def test_a_job_replayed_here_has_identical_outputs(cloud, work, tmp_path):
    job_id = _run_there(cloud, work)
    assert cloud.client.get(job_id).status == 4
    rc, report, err = _replay(cloud, job_id, work, tmp_path / "local")
    assert rc == 0, err
    assert report["same"] and report["ran"] and report["credentials"].startswith("token file")
    assert {r["path"]: r["verdict"] for r in report["outputs"]} == {"out.txt": "same", "outdir": "same"}
    t, h = report["there"], report["here"]
    assert (t["status"], t["return_code"], h["status"], h["return_code"]) == ("SUCCESS", 0, "SUCCESS", 0)
    assert t["instance_type"] == h["instance_type"] == "c1.8"
    assert t["stderr_tail"] == h["stderr_tail"] == ["seed 42 3"]
    assert any("running:" in line for line in h["system_log_tail"])
    # the text report: side by side
    r = subprocess.run([sys.executable, "-m", "dsjobs", "replay", job_id, "--from", cloud.endpoint, "--ca-file",
                        cloud.ca, "--token-file", cloud.token_file, "--data-dir", str(tmp_path / "local")],
                       cwd=work, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "same outcome and outputs" in r.stdout and "out.txt" in r.stdout, r.stderr


def test_a_changed_input_is_named_by_its_digest(cloud, work, tmp_path):
    job_id = _run_there(cloud, work)
    import hashlib
    old = hashlib.sha256((work / "data.txt").read_bytes()).hexdigest()
    (work / "data.txt").write_text("changed since\n")
    new = hashlib.sha256((work / "data.txt").read_bytes()).hexdigest()
    rc, report, err = _replay(cloud, job_id, work, tmp_path / "local")
    assert rc == 2 and not report["ran"]
    assert [c["path"] for c in report["changed_inputs"]] == ["data.txt"]
    assert old in report["problems"][0] and new in report["problems"][0] and "var DATA" in report["problems"][0]
    # the original content, given elsewhere, is found by its digest
    (tmp_path / "orig").mkdir()
    (tmp_path / "orig" / "whatever.txt").write_text("pear\napple\nfig\n")
    rc, report, err = _replay(cloud, job_id, work, tmp_path / "local", "--inputs", str(tmp_path / "orig"))
    assert rc == 0 and report["same"], (report, err)


def test_a_missing_input_is_named(cloud, work, tmp_path):
    job_id = _run_there(cloud, work)
    (work / "data.txt").unlink()
    rc, report, err = _replay(cloud, job_id, work, tmp_path / "local")
    assert rc == 2 and report["missing_inputs"][0]["var"] == "DATA" and report["missing_inputs"][0]["size"] == 15


def test_a_missing_secret_is_named(cloud, work, tmp_path):
    subprocess.run([sys.executable, "-m", "dsjobs", "secret", "set", "--project", "secretp", "API_KEY", "--data-dir",
                    str(cloud.data)], input="s3cr3t\n", text=True, check=True, capture_output=True)
    (work / "config.yaml").write_text('cmd: test "$API_KEY" = s3cr3t && echo ok > out.txt\noutputs:\n  - out.txt\n')
    job_id = _run_there(cloud, work, project="secretp")
    assert cloud.client.get(job_id).status == 4
    rc, report, err = _replay(cloud, job_id, work, tmp_path / "local")
    assert rc == 2 and report["missing_secrets"] == ["API_KEY"]
    assert "dsjobs secret set --project secretp API_KEY" in report["problems"][0]
    subprocess.run([sys.executable, "-m", "dsjobs", "secret", "set", "--project", "secretp", "API_KEY", "--data-dir",
                    str(tmp_path / "local")], input="s3cr3t\n", text=True, check=True, capture_output=True)
    rc, report, err = _replay(cloud, job_id, work, tmp_path / "local")
    assert rc == 0 and report["same"], (report, err)


def test_a_cleared_job_is_refused(cloud, work, tmp_path):
    job_id = _run_there(cloud, work)
    cloud.client.wait_operation(cloud.client.jobs.DeleteData(spb.DeleteProjectJobDataRequest(job_id=job_id)))
    rc, report, err = _replay(cloud, job_id, work, tmp_path / "local")
    assert rc == 2 and report is None
    assert "its data was cleared" in err and "cannot be replayed" in err


def test_without_the_ca_the_stand_in_is_not_trusted(cloud, work, tmp_path):
    job_id = _run_there(cloud, work)
    r = subprocess.run([sys.executable, "-m", "dsjobs", "replay", job_id, "--from", cloud.endpoint, "--token-file",
                        cloud.token_file, "--data-dir", str(tmp_path / "local")], cwd=work, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "UNAVAILABLE" in r.stderr


def test_the_engines_own_clients_follow_its_descriptor_to_tls(cloud, monkeypatch):
    """`dsjobs serve --tls-cert ... --tls-ca CA` records TLS and the CA in its descriptor: dsjobs's Client and the
    official client's hooked channel connect over TLS, checked against that CA, with nothing more said."""
    from types import SimpleNamespace

    from dsjobs import discovery, hook
    from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2_grpc as sgrpc
    desc = discovery.find_descriptor(cloud.endpoint)
    assert desc["tls"] is True and desc["ca_file"] == cloud.ca
    token = (cloud.data / "token").read_text().strip()
    c = Client(cloud.endpoint, token=token)  # neither tls nor ca_file: the descriptor says
    try:
        with pytest.raises(grpc.RpcError) as e:
            c.get("ds00000000000000000x")
        assert e.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), e.value
    finally:
        c.close()
    monkeypatch.setenv("DSJOBS_ENDPOINT", cloud.endpoint)
    monkeypatch.setattr(hook, "_state", {})
    m = SimpleNamespace(grpc=grpc, CHANNEL_OPTIONS=[])  # datasphere.channel, as far as the hook uses it
    hook._patch_channel(m)
    ch = m._get_channel("datasphere.api.cloud.yandex.net:443", "datasphere/0.10.0")
    try:
        with pytest.raises(grpc.RpcError) as e:
            sgrpc.ProjectJobServiceStub(ch).Get(spb.GetProjectJobRequest(job_id="ds00000000000000000x"),
                                                metadata=[("authorization", f"Bearer {token}")], timeout=30)
        assert e.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), e.value
    finally:
        ch.close()


def test_tls_with_the_ray_backend_is_refused(cloud, tmp_path):
    r = subprocess.run([sys.executable, "-m", "dsjobs", "serve", "--listen", "127.0.0.1:0", "--data-dir",
                        str(tmp_path / "data"), "--tls-cert", str(cloud.dir / "srv.pem"), "--tls-key",
                        str(cloud.dir / "srv.key"), "--backend", "ray", "--ray-address", "http://127.0.0.1:1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "failed precondition" in r.stderr and "Ray agents" in r.stderr, r.stderr


# --- the cloud's credentials, up to the network call --------------------------------------------------------------

@pytest.fixture
def fake_iam():
    from yandex.cloud.iam.v1 import iam_token_service_pb2 as pb, iam_token_service_pb2_grpc as pbg
    seen = []

    class Iam(pbg.IamTokenServiceServicer):
        def Create(self, request, context):
            seen.append(request)
            return pb.CreateIamTokenResponse(iam_token=f"t1.for-{request.WhichOneof('identity')}")
    server = grpc.server(futures.ThreadPoolExecutor(2))
    pbg.add_IamTokenServiceServicer_to_server(Iam(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield (lambda: grpc.insecure_channel(f"127.0.0.1:{port}")), seen
    server.stop(0)


def _args(**kw):
    return Namespace(**{"iam_token_file": None, "oauth_token_file": None, "profile": None, **kw})


def test_cloud_credentials_come_from_the_environment_or_a_file_never_the_command_line(fake_iam, tmp_path):
    channel, seen = fake_iam
    (tmp_path / "iam").write_text("t1.from-file\n")
    (tmp_path / "oauth").write_text("y0_from_file\n")
    assert replay.iam_token(_args(iam_token_file=str(tmp_path / "iam")), env={}) == ("t1.from-file", "IAM token")
    assert replay.iam_token(_args(iam_token_file=str(tmp_path / "iam")), env={"YC_IAM_TOKEN": "t1.env"})[0] == \
        "t1.env"  # the official client's variable first
    token, how = replay.iam_token(_args(oauth_token_file=str(tmp_path / "oauth")), env={}, channel_factory=channel)
    assert how == "OAuth token exchange" and seen[-1].yandex_passport_oauth_token == "y0_from_file"
    with pytest.raises(replay.ReplayError, match="--iam-token-file .*empty"):
        (tmp_path / "empty").write_text("\n")
        replay.iam_token(_args(iam_token_file=str(tmp_path / "empty")), env={})
    for flag in ("--iam-token", "--token", "--operations"):
        r = subprocess.run([sys.executable, "-m", "dsjobs", "replay", "ds1", flag, "t1.secret"], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 2 and "unrecognized arguments" in r.stderr, (flag, r.stderr)


def test_the_clouds_credentials_in_the_official_clients_order(fake_iam, tmp_path, monkeypatch):
    channel, seen = fake_iam
    assert replay.iam_token(_args(), env={"YC_IAM_TOKEN": "t1.given"}) == ("t1.given", "IAM token")
    token, how = replay.iam_token(_args(), env={"YC_TOKEN": "y0_oauth"}, channel_factory=channel)
    assert (token, how) == ("t1.for-yandex_passport_oauth_token", "OAuth token exchange")
    assert seen[-1].yandex_passport_oauth_token == "y0_oauth"  # the real protos read what was sent
    # a yc profile: its OAuth token, its service account key (a PS256 JWT), a federated one through yc
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    cfg = tmp_path / "yc.yaml"
    cfg.write_text(json.dumps({"current": "me", "profiles": {
        "me": {"token": "y0_profile"},
        "sa": {"service-account-key": {"id": "ajekey", "service_account_id": "ajesa", "private_key": pem}},
        "fed": {"federation-id": "bpf123"}}}))
    monkeypatch.setenv("YC_CONFIG_PATH", str(cfg))
    assert replay.iam_token(_args(), env={}, channel_factory=channel)[1] == "yc profile me (OAuth token exchange)"
    assert seen[-1].yandex_passport_oauth_token == "y0_profile"
    assert replay.iam_token(_args(profile="sa"), env={}, channel_factory=channel)[0] == "t1.for-jwt"
    import jwt
    claims = jwt.decode(seen[-1].jwt, key.public_key(), algorithms=["PS256"], audience=replay.JWT_AUDIENCE)
    assert claims["iss"] == "ajesa" and jwt.get_unverified_header(seen[-1].jwt)["kid"] == "ajekey"
    calls = []

    def yc(argv, **kw):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, "warning\nt1.from-yc\n", "")
    assert replay.iam_token(_args(profile="fed"), env={}, run=yc) == ("t1.from-yc", "yc profile fed (yc iam "
                                                                                    "create-token)")
    assert calls == [["yc", "iam", "create-token", "--no-user-output", "--profile", "fed"]]
    with pytest.raises(replay.ReplayError, match="'nope' is not in"):
        replay.iam_token(_args(profile="nope"), env={})
    monkeypatch.setenv("YC_CONFIG_PATH", str(tmp_path / "absent.yaml"))
    with pytest.raises(replay.ReplayError, match="no credentials"):
        replay.iam_token(_args(), env={})
