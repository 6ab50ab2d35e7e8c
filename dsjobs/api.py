"""Run a DataSphere job from Python, e.g. in a test: ``dsjobs.run_job("jobs/train/config.yaml", args={...})``.

The job runs on an engine embedded in this process (started on first use, on a temporary data dir), through the
same API and client code as ``dsjobs run``. Overrides work like the official ``fork``: ``args`` by name, ``vars``
by name (input or output var -> a new path), ``env`` merged into the env vars.
"""
from __future__ import annotations

import atexit
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from dsjobs import jobconfig
from dsjobs.jobconfig import ConfigError

_ENGINES: dict = {}  # sandbox mode -> the engine of this process
_ENGINE_MU = threading.Lock()


@dataclass
class JobResult:
    job_id: str
    status: str  # SUCCESS | ERROR | CANCELLED
    return_code: Optional[int]
    outputs: dict[str, Path]  # declared path -> local path (directories unpacked)
    stdout: str
    stderr: str
    system_log: str
    progress: Optional[dict] = None  # the latest {"progress": 0..100, "message": ...} the job reported
    duration: float = 0.0
    error: Optional[tuple[str, str]] = None  # (gRPC code name, message) when the operation ended in an error
    output_errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "SUCCESS" and self.return_code == 0

    def __str__(self) -> str:
        parts = [f"job {self.job_id}: {self.status}, return code {self.return_code}"]
        if self.error:
            parts.append(f"error {self.error[0]}: {self.error[1]}")
        if self.stderr.strip():
            parts.append("stderr:\n" + self.stderr.rstrip())
        return "\n".join(parts)


class EmbeddedEngine:
    """An engine and its gRPC server on loopback, for this process."""

    def __init__(self, data_dir: Optional[Path] = None, **cfg):
        from engine.api.server import start_grpc
        from engine.app import build_engine
        from engine.config import EngineConfig
        from dsjobs.client import Client

        self._tmp = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="dsjobs-")
            data_dir = Path(self._tmp.name)
        # Its jobs die with this process, as they end with close(): nothing of a test's job outlives the test run.
        self.engine = build_engine(EngineConfig(data_dir=Path(data_dir), **{"jobs_die_with_engine": True, **cfg})).start()
        self.server, port = start_grpc(self.engine, "127.0.0.1:0")
        self.client = Client(f"127.0.0.1:{port}", token=self.engine.token)

    def close(self) -> None:
        self.client.close()
        self.server.stop(1).wait()
        self.engine.stop(stop_jobs=True)
        if self._tmp is not None:
            self._tmp.cleanup()


def default_engine(sandbox: str = "bwrap") -> EmbeddedEngine:
    with _ENGINE_MU:
        if sandbox not in _ENGINES:
            _ENGINES[sandbox] = EmbeddedEngine(sandbox=sandbox)
            atexit.register(_ENGINES[sandbox].close)
        return _ENGINES[sandbox]


def _override(cfg: jobconfig.Config, args: dict, vars_: dict, env: dict, runner: Optional[str], base: Path) -> None:
    for name, value in args.items():
        if name not in cfg.args:
            raise ConfigError(f"Argument with name '{name}' is not present in source job")
        cfg.args[name] = str(value)
    known = {p.var: p for p in cfg.inputs + cfg.outputs if p.var}
    for name, path in vars_.items():
        if name not in known:
            raise ConfigError(f"No variable path in source job: {name}")
        if known[name] in cfg.inputs and not (base / path).exists():  # as the config's own inputs are checked
            raise ConfigError(f"invalid `vars` entry: `{name}`: value is incorrect: no such path: {path}")
        known[name].path = str(path)
    if env:
        cfg.env_vars = {**(cfg.env_vars or {}), **{k: str(v) for k, v in env.items()}}
    if runner == "process":
        cfg.docker = None
    elif runner == "docker" and cfg.docker is None:
        raise ConfigError("runner='docker' needs a config with `env.docker`")


def run_job(config: str | Path, *, args: Optional[dict] = None, vars: Optional[dict] = None,
            env: Optional[dict] = None, timeout: Optional[float] = None, cwd: str | Path | None = None,
            output_dir: str | Path | None = None, project: str = "local", runner: Optional[str] = None,
            engine: Optional[EmbeddedEngine] = None, sandbox: Optional[str] = None) -> JobResult:
    """Run the job of a config.yaml and wait for it.

    Paths in the config resolve against ``cwd`` (default: the config's folder), as the official CLI resolves them
    against its working directory. Outputs are downloaded into ``output_dir`` (default: a new temporary
    directory), at their declared relative paths. ``timeout`` (seconds) stops the job through its graceful path;
    the result then has status ERROR and error DEADLINE_EXCEEDED. Config errors raise ConfigError with the
    official client's message. Process jobs run confined (bubblewrap); ``sandbox="none"`` runs them unconfined
    where the machine cannot confine them.
    """
    from dsjobs.client import OperationFailed, build_params
    from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb

    config = Path(config)
    base = Path(cwd) if cwd is not None else config.resolve().parent
    cfg = jobconfig.load(config if config.is_absolute() else Path.cwd() / config, base)
    _override(cfg, dict(args or {}), dict(vars or {}), dict(env or {}), runner, base)
    if timeout:
        cfg.env_vars = {**(cfg.env_vars or {}), "DSJOBS_MAX_DURATION": f"{timeout:g}"}
    out_dir = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="dsjobs-out-"))
    eng = engine or default_engine(sandbox or "bwrap")
    c = eng.client
    started = time.monotonic()
    prep = build_params(cfg, base)
    with prep.tmp:
        job_id, uploads = c.create(project, prep, cfg)
        c.upload(uploads, prep.local_paths)
    op = c.execute(job_id)
    error = None
    try:
        op = c.wait_operation(op, poll_s=0.02)
    except OperationFailed as e:
        error = (e.code, e.details)
    job = c.get(job_id)
    outputs: dict[str, Path] = {}
    errors: dict[str, str] = {}
    if error is None:
        resp = spb.ExecuteProjectJobResponse()
        op.response.Unpack(resp)
        c.download(list(resp.output_files), out_dir)
        for f in resp.output_files:
            outputs[f.file.desc.path] = out_dir / f.file.desc.path if not Path(f.file.desc.path).is_absolute() \
                else Path(f.file.desc.path)
        errors = {e.output_file_desc.path: e.description for e in resp.output_files_errors}
    logs = _read_logs(c, job_id)
    status = {4: "SUCCESS", 5: "ERROR", 6: "CANCELLED"}.get(job.status, str(job.status))
    if error is not None:
        op = c.get_operation(op.id)
    return JobResult(job_id=job_id, status=status, return_code=_return_code(op, error), outputs=outputs,
                     stdout=logs["out"], stderr=logs["err"], system_log=logs["sys"], progress=_progress(op),
                     duration=time.monotonic() - started, error=error, output_errors=errors)


def _return_code(op, error) -> Optional[int]:
    if error is not None:
        return None
    from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
    resp = spb.ExecuteProjectJobResponse()
    op.response.Unpack(resp)
    return int(resp.result.return_code)


def _read_logs(c, job_id: str) -> dict:
    from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
    out = {"out": [], "err": [], "sys": []}
    for resp in c.jobs.ReadLogs(spb.ReadProjectJobLogsRequest(job_id=job_id, offset=0)):
        for m in resp.logs:
            text = m.content.decode("utf-8", errors="replace")
            if m.WhichOneof("source") == "standard_stream":
                out["out" if m.standard_stream == 1 else "err"].append(text)
            elif m.file_path == ".system.log":
                out["sys"].append(text)
    return {k: "".join(v) for k, v in out.items()}


def _progress(op) -> Optional[dict]:
    from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
    meta = spb.ExecuteProjectJobMetadata()
    if not op.metadata.Unpack(meta) or not meta.HasField("progress"):
        return None
    return {"progress": meta.progress.progress, "message": meta.progress.message}


__all__ = ["run_job", "JobResult", "ConfigError", "EmbeddedEngine"]
