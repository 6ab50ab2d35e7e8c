"""Who created a job: the local user's name for the owner's token, a token given alone and --no-auth (the
engine's user by its uid, whatever $USER says), a named token's name (--tokens-file); on the job, its metadata and
its operations, for Create and Clone, through `dsjobs serve`."""
from __future__ import annotations

import os
import pwd
import re
import subprocess
import sys

import pytest

from dsjobs.client import Client
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
from engine.api.auth import load_tokens
from tests.helpers import create, wait_op

pytestmark = pytest.mark.e2e
ME = pwd.getpwuid(os.geteuid()).pw_name


class _Serve:
    def __init__(self, data_dir, *args):
        # $USER and $LOGNAME name somebody else: the engine's user is its uid's.
        env = dict(os.environ, USER="somebody-else", LOGNAME="somebody-else")
        env.pop("DSJOBS_TOKEN", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "dsjobs", "serve", "--listen", "127.0.0.1:0",
                                      "--data-dir", str(data_dir), *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=env)
        self.endpoint = "127.0.0.1:" + re.search(r"on 127\.0\.0\.1:(\d+)", self.proc.stdout.readline()).group(1)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def _creators(client: Client, job_id: str) -> set[str]:
    """created_by_id as the job, its Execute metadata and its operations show it."""
    op = wait_op(client, client.execute(job_id))
    meta = spb.ExecuteProjectJobMetadata()
    op.metadata.Unpack(meta)
    return {client.get(job_id).created_by_id, meta.metadata.created_by_id, meta.job.created_by_id, op.created_by}


def test_created_by_is_the_local_user_or_the_tokens_name(tmp_path):
    (tmp_path / "tokens").write_text("# name:token\nalice:alice-token\n")
    (tmp_path / "mine").write_text("my-own-token\n")
    s = _Serve(tmp_path / "data", "--tokens-file", str(tmp_path / "tokens"), "--token-file", str(tmp_path / "mine"))
    try:
        owner = Client(s.endpoint, token=(tmp_path / "data" / "token").read_text().strip())
        given = Client(s.endpoint, token="my-own-token")
        alice = Client(s.endpoint, token="alice-token")
        mine = create(owner, jpb.JobParameters(cmd="true"))
        assert _creators(owner, mine) == {ME}
        assert _creators(given, create(given, jpb.JobParameters(cmd="true"))) == {ME}
        assert _creators(alice, create(alice, jpb.JobParameters(cmd="true"))) == {"alice"}
        op = alice.jobs.Clone(spb.CloneProjectJobRequest(source_job_id=mine))
        assert op.created_by == "alice"
        r = spb.CloneProjectJobResponse()
        op.response.Unpack(r)
        assert _creators(alice, r.job_id) == {"alice"}  # the clone is the cloner's
    finally:
        s.stop()


def test_without_authentication_jobs_are_the_local_users(tmp_path):
    s = _Serve(tmp_path / "data", "--no-auth")
    try:
        anyone = Client(s.endpoint, token="")
        assert _creators(anyone, create(anyone, jpb.JobParameters(cmd="true"))) == {ME}
    finally:
        s.stop()


def test_a_tokens_file_line_without_a_name_is_refused(tmp_path):
    (tmp_path / "tokens").write_text("alice:a\n:nameless\n")
    with pytest.raises(ValueError, match="line 2: a line must be name:token, both non-empty"):
        load_tokens(None, str(tmp_path / "tokens"))
    assert load_tokens("t", None) == {"t": ME}
