"""The cloud's environment, locally: `dsjobs serve --cloud-like-default IMAGE` runs every job without env.docker in
that image (working dir /job, the python env built inside it, cached per image), the `system-python-3-10` alias,
and the service account's token (`SA_TOKEN_FILENAME`). The image is the locally built Debian one with Python
(tests/dockerenv.py): no Ubuntu image can be had here."""
from __future__ import annotations

import grpc
import pytest

from dsjobs.cli import main as dsjobs_main
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from engine.resources import Secrets
from tests.conftest import Server
from tests.dockerenv import python_image, shell_image
from tests.helpers import logs, response, run, stdout_of

pytestmark = pytest.mark.e2e


def _system(c, jid) -> str:
    return b"".join(m.content for m in logs(c, jid)[0] if m.file_path == ".system.log").decode()


@pytest.mark.docker
def test_jobs_without_an_image_run_in_the_cloud_like_default_and_the_alias_maps(tmp_path):
    from tests.pyindex import Index
    image = python_image()  # Debian bookworm, python3.11
    data = tmp_path / "data"
    assert dsjobs_main(["image", "add", "system-python-3-10", shell_image(), "--data-dir", str(data)]) == 0
    idx = Index(tmp_path / "index")
    idx.add("dsj-beta", "1.0")
    s = Server(data, cloud_like_default=image, docker_build_network="host")
    try:
        c = s.client
        pe = jpb.PythonEnv(python_version="3.11", requirements=["dsj-beta"])
        pe.pip_options.index_url = idx.url
        cmd = ("pwd; python -c 'import sys, dsj_beta; print(sys.version_info[:2], dsj_beta.VERSION)'; "
               "grep ^ID= /etc/os-release; echo done > ${OUT}")
        params = jpb.JobParameters(cmd=cmd, env=jpb.Environment(python_env=pe),
                                   output_files=[jpb.FileDesc(path="out.txt", var="OUT")])
        first, op = run(c, params, timeout=300)
        assert not op.HasField("error"), op.error.message
        assert stdout_of(logs(c, first)[0]) == b"/job\n(3, 11) 1.0\nID=debian\n"  # in the image, not on the host
        assert [f.file.desc.path for f in response(op).output_files] == ["out.txt"]
        assert f"image {image}: the engine's cloud-like default" in _system(c, first)
        second, op = run(c, params, timeout=120)
        assert not op.HasField("error") and "taken from the cache" in _system(c, second)

        # A python version the image does not have: said, as for any image.
        pe.python_version = "3.10"
        _, op = run(c, jpb.JobParameters(cmd="true", env=jpb.Environment(python_env=pe)))
        assert op.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0] and "python3.11" in op.error.message

        # The cloud's system image alias, mapped to a local image (here the shell image: bash, no python).
        jid, op = run(c, jpb.JobParameters(cmd="echo $BASH_VERSION | head -c 2; echo; test -x /usr/bin/python3 || echo np",
                                           env=jpb.Environment(docker_image_resource_id="system-python-3-10")))
        assert not op.HasField("error") and stdout_of(logs(c, jid)[0]) == b"5.\nnp\n"
    finally:
        s.stop()
        idx.close()


def test_the_service_account_token_is_a_0600_file_out_of_the_logs(tmp_path):
    data = tmp_path / "data"
    Secrets(data).set_sa_token("p1", "t1.project-token")
    (tmp_path / "sa").write_text("t1.engine-token\n")
    s = Server(data, sa_token_file=str(tmp_path / "sa"))
    try:
        c = s.client
        cmd = 'cat "$SA_TOKEN_FILENAME"; echo; stat -c %a "$SA_TOKEN_FILENAME"; echo "$SA_TOKEN_FILENAME" > where'
        jid, op = run(c, jpb.JobParameters(cmd=cmd))
        assert not op.HasField("error"), op.error.message
        assert stdout_of(logs(c, jid)[0]) == b"t1.project-token\n600\n"
        assert "t1.project-token" not in _system(c, jid)
        where = (s.work_dir(jid) / "where").read_text().strip()
        assert not (s.work_dir(jid).parent / "sa" / "token").exists()  # gone with the run
        assert where.endswith("/sa/token")
        # A project without a token of its own: the engine's file (--sa-token-file).
        jid, op = run(c, jpb.JobParameters(cmd='cat "$SA_TOKEN_FILENAME"; echo'), project="p2")
        assert stdout_of(logs(c, jid)[0]) == b"t1.engine-token\n"  # stripped of its newline
    finally:
        s.stop()
    # `dsjobs secret set --sa-token` reads it from stdin; it is not listed, nor a job's environment variable.
    import io, sys
    old = sys.stdin
    sys.stdin = io.StringIO("t1.from-the-cli\n")
    try:
        assert dsjobs_main(["secret", "set", "--project", "p3", "--sa-token", "--data-dir", str(data)]) == 0
    finally:
        sys.stdin = old
    assert Secrets(data).sa_token("p3") == "t1.from-the-cli" and Secrets(data).all("p3") == {}
    assert oct((data / "secrets" / "p3" / ".sa_token").stat().st_mode & 0o777) == "0o600"


@pytest.mark.docker
def test_a_container_reads_the_token_at_the_path_it_is_given(tmp_path):
    data = tmp_path / "data"
    Secrets(data).set_sa_token("p1", "t1.container-token")
    s = Server(data)
    try:
        env = jpb.Environment(docker_image_spec=jpb.DockerImageSpec(image_url=shell_image()))
        jid, op = run(s.client, jpb.JobParameters(cmd='echo $SA_TOKEN_FILENAME; cat "$SA_TOKEN_FILENAME"; echo', env=env),
                      timeout=120)
        assert not op.HasField("error"), op.error.message
        assert stdout_of(logs(s.client, jid)[0]) == b"/dsjobs/sa/token\nt1.container-token\n"
    finally:
        s.stop()


def test_serve_warns_when_the_service_account_token_file_is_readable_by_others(tmp_path):
    import subprocess
    import sys
    token = tmp_path / "sa"
    token.write_text("t1.engine-token\n")
    warnings = {}
    for mode in (0o644, 0o600):
        token.chmod(mode)
        p = subprocess.Popen([sys.executable, "-m", "dsjobs", "serve", "--listen", "127.0.0.1:0", "--no-ui",
                              "--data-dir", str(tmp_path / f"data{mode:o}"), "--sa-token-file", str(token)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert "serving" in p.stdout.readline()
        finally:
            p.terminate()
            _, err = p.communicate(timeout=60)
        warnings[mode] = err
    assert f"--sa-token-file {token} can be read by other users" in warnings[0o644]
    assert "can be read by other users" not in warnings[0o600]
