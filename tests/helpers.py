"""Shared test helpers: build job parameters, upload, run through the real API, wait."""
from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import requests

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "jobs"


def blob(data: bytes, path: str, var: str = "", zipped: bool = False) -> tuple[jpb.File, bytes]:
    return jpb.File(desc=jpb.FileDesc(path=path, var=var), sha256=hashlib.sha256(data).hexdigest(),
                    size_bytes=len(data), compression_type=jpb.ZIP if zipped else jpb.NONE), data


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


def create(client, params: jpb.JobParameters, uploads: dict[str, bytes] | None = None, project: str = "p1",
           **kw) -> str:
    """Create a job and upload what the server asks for; ``uploads`` maps sha256 -> bytes."""
    op = client.jobs.Create(spb.CreateProjectJobRequest(project_id=project, job_parameters=params, **kw))
    resp = spb.CreateProjectJobResponse()
    op.response.Unpack(resp)
    for f in resp.upload_files:
        if uploads is not None and f.file.sha256 not in uploads:
            continue  # the test withholds this upload on purpose
        r = requests.put(f.url, data=(uploads or {}).get(f.file.sha256, b""))
        r.raise_for_status()
    return resp.job_id


def run(client, params: jpb.JobParameters, files: list[tuple[jpb.File, bytes]] = (), timeout: float = 60,
        **kw):
    """Create, upload, execute and wait; returns (job_id, done operation)."""
    del params.input_files[:]
    params.input_files.extend(f for f, _ in files)
    job_id = create(client, params, {f.sha256: d for f, d in files}, **kw)
    op = client.execute(job_id)
    return job_id, wait_op(client, op, timeout)


def wait_op(client, op, timeout: float = 60):
    """As dsjobs' client waits: each GetOperation held by the engine until the job changes (a second at most), so
    a test sees its job's end at once and costs the machine one call a second, not fifty."""
    deadline = time.monotonic() + timeout
    while not op.done:
        left = deadline - time.monotonic()
        assert left > 0, "operation did not finish in time"
        op, held = client.hold_operation(op.id, min(1.0, left))
        if not held and not op.done:
            time.sleep(0.02)
    return op


def response(op) -> spb.ExecuteProjectJobResponse:
    r = spb.ExecuteProjectJobResponse()
    assert op.response.Unpack(r), op
    return r


def wait_status(client, job_id: str, statuses: set, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while True:
        j = client.get(job_id)
        if j.status in statuses:
            return j
        assert time.monotonic() < deadline, f"job stayed {jpb.JobStatus.Name(j.status)}"
        time.sleep(0.02)


def logs(client, job_id: str, offset: int = 0):
    out = []
    last = offset
    for resp in client.jobs.ReadLogs(spb.ReadProjectJobLogsRequest(job_id=job_id, offset=offset)):
        out += list(resp.logs)
        last = resp.offset
    return out, last


def stdout_of(msgs) -> bytes:
    return b"".join(m.content for m in msgs if m.WhichOneof("source") == "standard_stream" and m.standard_stream == 1)


def described(pids: list[int]) -> list[str]:
    """pid, parent, state and argv of each process, for a failure's message."""
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().replace(b"\0", b" ").decode(errors="replace")[:200]
            out.append(f"{pid} (parent {fields[1]}, {fields[0]}): {argv}")
        except OSError:
            out.append(f"{pid} (gone)")
    return out


def survivors(job_id: str) -> list[int]:
    """Processes that carry the job's marker in their environment."""
    out = []
    marker = f"DSJOBS_JOB_ID={job_id}".encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    out.append(int(pid))
        except OSError:
            pass
    return out


def work_dir(data_dir, job_id: str) -> Path:
    """A local job's working directory on the host: the one place a confined job and its test both see."""
    return Path(data_dir) / "jobs" / job_id / "work"


def wait_for(predicate, timeout: float = 10, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what} not reached in {timeout}s"
        time.sleep(0.02)


def wait_output(client, job_id: str, needle: bytes, timeout: float = 30) -> None:
    """Until the job's stdout has ``needle`` (a sentinel the job prints once it is ready, e.g. after its trap)."""
    deadline = time.monotonic() + timeout
    seen = b""
    stream = client.jobs.ReadLogs(spb.ReadProjectJobLogsRequest(job_id=job_id, offset=0), timeout=timeout)
    try:
        for resp in stream:
            seen += stdout_of(resp.logs)
            if needle in seen:
                return
            assert time.monotonic() < deadline, f"{needle!r} not in the job's output: {seen[-300:]!r}"
    finally:
        stream.cancel()
    raise AssertionError(f"the job ended without printing {needle!r}: {seen[-300:]!r}")


def graceful(sig: int, timeout_s: int) -> jpb.GracefulShutdownParameters:
    g = jpb.GracefulShutdownParameters(signal=sig)
    g.timeout.seconds = timeout_s
    return g


def python_env(version="", requirements=(), index="", extra=(), trusted=(), no_deps=False, modules=()):
    pe = jpb.PythonEnv(python_version=version, requirements=list(requirements), local_modules=list(modules))
    if index or extra or trusted or no_deps:
        pe.pip_options.CopyFrom(jpb.PipOptions(index_url=index, extra_index_urls=list(extra),
                                               trusted_hosts=list(trusted), no_deps=no_deps))
    return jpb.Environment(python_env=pe)


def ok(client, cmd, e, files=()):
    """Run and expect success; (job id, its stdout)."""
    job_id, op = run(client, jpb.JobParameters(cmd=cmd, env=e), list(files), timeout=180)
    assert not op.HasField("error"), op.error.message
    r = response(op)
    out = stdout_of(logs(client, job_id)[0]).decode()
    assert r.result.return_code == 0, out
    return job_id, out


class Serve:
    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.proc = None
        self.extra: list[str] = []

    def start(self):
        from dsjobs.client import Client
        self.proc = subprocess.Popen([sys.executable, "-m", "dsjobs", "serve", "--listen", "127.0.0.1:0",
                                      "--data-dir", str(self.data_dir), "--log-level", os.environ.get("DSJOBS_TEST_LOG_LEVEL", "warning"), *self.extra],
                                     stdout=subprocess.PIPE, text=True)
        port = re.search(r"on 127\.0\.0\.1:(\d+)", self.proc.stdout.readline()).group(1)
        return Client(f"127.0.0.1:{port}")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def official_python() -> str:
    py = os.environ.get("DSJOBS_DATASPHERE_PYTHON") or str(ROOT / ".venv-datasphere" / "bin" / "python")
    assert os.path.exists(py), "the official CLI is not installed: `make test` installs it into .venv-datasphere"
    return py


def copy_example(name, tmp_path) -> Path:
    dst = tmp_path / name
    shutil.copytree(EXAMPLES / name, dst, ignore=shutil.ignore_patterns("out", "tests", "*.txt.size"))
    return dst


def client_venv(path: Path, *, hooked: bool) -> str:
    """A fresh venv that sees the official client (a .pth to its site-packages: no reinstall), with dsjobs's hook
    installed by `dsjobs hook install` when ``hooked``; returns its python."""
    official = official_python()
    subprocess.run([official, "-m", "venv", "--without-pip", str(path)], check=True)
    py = str(path / "bin" / "python")
    site = lambda p: subprocess.run([p, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                    check=True, capture_output=True, text=True).stdout.strip()
    Path(site(py), "zz_official_client.pth").write_text(site(official) + "\n")
    script = path / "bin" / "datasphere"  # the console script, as `pip install datasphere` makes it
    script.write_text(f"#!{py}\nimport sys\nfrom datasphere.main import main\nsys.exit(main())\n")
    script.chmod(0o755)
    if hooked:
        subprocess.run([sys.executable, "-m", "dsjobs", "hook", "install", "--python", py], check=True,
                       capture_output=True)
    return py
