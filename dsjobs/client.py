"""The client side, as the official CLI does it: build JobParameters from a config, upload, execute, follow the
logs, download the outputs. Used by ``dsjobs run`` (against an engine in the same process) and by
``dsjobs project job ...`` (against a server)."""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import grpc
from google.protobuf import duration_pb2

from dsjobs.discovery import find_descriptor, find_token
from dsjobs.jobconfig import Config, ConfigError, DockerImage, check_limits
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2_grpc as sgrpc
from dsjobs_pb.yandex.cloud.operation import operation_service_pb2 as ops
from dsjobs_pb.yandex.cloud.operation import operation_service_pb2_grpc as ogrpc
from runners.safezip import extract

DEFAULT_ENDPOINT = "127.0.0.1:9098"
DATA_TTL = duration_pb2.Duration(seconds=14 * 24 * 3600)  # what the official client always sends
TERMINAL = {jpb.SUCCESS, jpb.ERROR, jpb.CANCELLED}


class OperationFailed(RuntimeError):
    def __init__(self, code: str, message: str):
        super().__init__(f"Operation returned error:\n\tstatus={code}\n\tdetails={message}")
        self.code, self.details = code, message


UPLOAD_PIECE = 1 << 20  # upload pieces and hash reads; downloads are read in pieces of this size too


def _sha256_size(path: str) -> tuple[str, int]:
    """One pass over the file, into one reused buffer (hashlib hashes each piece without the GIL)."""
    h, n = hashlib.sha256(), 0
    buf = bytearray(UPLOAD_PIECE)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while got := f.readinto(buf):
            h.update(view[:got])
            n += got
    return h.hexdigest(), n


def zip_path(path: Path, dest: str) -> None:
    """Zip a file or directory with entries relative to its parent, as the official client does."""
    root = path.parent
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
        if path.is_dir():
            for d, _, files in os.walk(path):
                for name in sorted(files):
                    p = Path(d) / name
                    z.write(p, p.relative_to(root))
        else:
            z.write(path, path.relative_to(root))


@dataclass
class Prepared:
    params: jpb.JobParameters
    local_paths: dict[str, str]  # sha256 -> local file to upload
    tmp: tempfile.TemporaryDirectory = field(repr=False)


def build_params(c: Config, base: Path, python: Optional[str] = None) -> Prepared:
    """JobParameters as the official client sends them; directories and local modules zipped to a temp dir.
    ``python``: where `python: auto` is analysed (default: this interpreter)."""
    auto = None
    if c.python is not None and not c.python.fully_manual:
        # first, as the official client does: its errors (a root module that is no file, say) come before any
        # input is read
        from dsjobs.autoenv import derive
        auto = derive(c, base, python)
    tmp = tempfile.TemporaryDirectory(prefix="dsjobs-")
    local: dict[str, str] = {}

    def as_file(path: Path, desc: jpb.FileDesc, force_zip: bool = False) -> jpb.File:
        if path.is_dir() or force_zip:
            z = tempfile.NamedTemporaryFile(dir=tmp.name, suffix=".zip", delete=False).name
            zip_path(path, z)
            sha, size = _sha256_size(z)
            local[sha] = z
            return jpb.File(desc=desc, sha256=sha, size_bytes=size, compression_type=jpb.ZIP)
        sha, size = _sha256_size(str(path))
        local[sha] = str(path)
        return jpb.File(desc=desc, sha256=sha, size_bytes=size, compression_type=jpb.NONE)

    p = jpb.JobParameters(cmd=c.cmd, attach_project_disk=c.attach_project_disk)
    for i in c.inputs:
        p.input_files.append(as_file(base / i.path, jpb.FileDesc(path=i.path, var=i.var or "")))
    p.output_files.extend(jpb.FileDesc(path=o.path, var=o.var or "") for o in c.outputs)
    p.s3_mount_ids.extend(m.path for m in c.s3_mounts)
    p.dataset_ids.extend(d.path for d in c.datasets)
    if c.env_vars:
        p.env.vars.update(c.env_vars)
    if isinstance(c.docker, str):
        p.env.docker_image_resource_id = c.docker
    elif isinstance(c.docker, DockerImage):
        p.env.docker_image_spec.image_url = c.docker.url
        if c.docker.username is not None:
            p.env.docker_image_spec.username = c.docker.username
        if c.docker.password_secret is not None:
            p.env.docker_image_spec.password_ds_secret_name = c.docker.password_secret
    if c.python is not None:
        py = c.python
        version, requirements, local_paths = py.version, None, py.local_paths
        if py.requirements_file:
            requirements = list(py.requirements or [])  # read and checked once, as the official client does
        if auto is not None:  # explicit manual values override the derived ones, as in the official client
            version = version or auto["version"]
            requirements = requirements if requirements is not None else auto["requirements"]
            local_paths = local_paths or auto["local_paths"]
        pe = p.env.python_env
        pe.python_version = version
        pe.requirements.extend(requirements or [])
        for idx, lp in enumerate(local_paths or []):
            pe.local_modules.append(as_file(base / lp, jpb.FileDesc(path=lp, var=f"_LOCAL_MODULE_{idx}"),
                                            force_zip=True))
        if py.pip is not None:
            pe.pip_options.CopyFrom(jpb.PipOptions(index_url=py.pip.index_url or "",
                                                   extra_index_urls=py.pip.extra_index_urls,
                                                   trusted_hosts=py.pip.trusted_hosts, no_deps=py.pip.no_deps))
    p.cloud_instance_types.extend(jpb.CloudInstanceType(name=t) for t in c.cloud_instance_types)
    if c.working_storage_gb is not None:
        p.extended_working_storage.CopyFrom(jpb.ExtendedWorkingStorage(type=jpb.ExtendedWorkingStorage.SSD,
                                                                       size_gb=c.working_storage_gb))
    p.arguments.extend(jpb.Argument(name=k, value=v) for k, v in c.args.items())
    p.output_datasets.extend(jpb.OutputDatasetDesc(name=d.name, description=d.description, labels=d.labels,
                                                   size_gb=d.size_gb, var=d.var) for d in c.output_datasets)
    if c.graceful_shutdown is not None:
        sig, timeout = c.graceful_shutdown
        g = jpb.GracefulShutdownParameters(signal=sig)
        if timeout:
            g.timeout.FromNanoseconds(int(timeout * 1e9))
        p.graceful_shutdown_parameters.CopyFrom(g)
    if c.spark_connector:
        p.spark_parameters.connector_id = c.spark_connector
    try:  # the official client's own limits, with its messages, before anything is uploaded
        check_limits([(f.desc.path, f.size_bytes) for f in p.input_files],
                     [(f.desc.path, f.size_bytes) for f in p.env.python_env.local_modules],
                     [(len(p.input_files), "input files"), (len(p.output_files), "output files"),
                      (len(p.s3_mount_ids), "s3 mounts"), (len(p.dataset_ids), "datasets")])
    except ConfigError:
        tmp.cleanup()
        raise
    return Prepared(p, local, tmp)


def _transfer_progress(total: int, label: str):
    """A rich progress bar on a terminal, nothing otherwise."""
    if not sys.stderr.isatty() or total < (1 << 20):
        return None
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
    prog = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), transient=True)
    prog.start()
    return prog, prog.add_task(label, total=total)


class _CountingReader:
    """A file as an upload body: 1 MiB pieces (a file-like body would be sent in urllib3's 16 KiB reads, each a
    pass through Python), its length for Content-Length, ``cb`` told of each piece. No ``read``, on purpose:
    urllib3 then sends what this yields as it is."""

    def __init__(self, f, cb):
        self.f, self.cb = f, cb

    def __iter__(self):
        while chunk := self.f.read(UPLOAD_PIECE):
            self.cb(len(chunk))
            yield chunk

    def __len__(self):
        return os.fstat(self.f.fileno()).st_size


# engine/api/servicers.py's names: GetOperation held for up to HOLD seconds, and the answer saying it was.
HOLD, HELD = "x-dsjobs-hold-s", "x-dsjobs-held"
HOLD_S = 1.0  # a progress bar fed by the answers still moves every second


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """`authorization: Bearer <token>` on every call of the channel (call credentials need TLS in grpc)."""

    def __init__(self, token: str):
        self.header = ("authorization", f"Bearer {token}")

    def _details(self, d):
        # grpc's call details are a namedtuple
        return d._replace(metadata=[m for m in (d.metadata or ()) if m[0] != "authorization"] + [self.header])

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)


class Client:
    """The engine's API over gRPC; ``token`` None means: look it up as every dsjobs client does
    (dsjobs/discovery.py: $DSJOBS_TOKEN, ``token_file``, the endpoint's descriptor, the default data dir)."""

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, *, token: Optional[str] = None,
                 token_file: Optional[str] = None, tls: Optional[bool] = None, ca_file: Optional[str] = None):
        """``tls``/``ca_file``: a TLS endpoint (`dsjobs serve --tls-cert`, the cloud), its CA (default: the system's
        roots); the file endpoint's HTTPS is checked against the same CA. ``tls`` None (and no ``ca_file``): as the
        engine's descriptor says (dsjobs/discovery.py; an engine without one is plain gRPC)."""
        self.endpoint = endpoint
        if token is None:
            token = find_token(endpoint, token_file)
        if tls is None and not ca_file:
            desc = find_descriptor(endpoint) or {}
            tls, ca_file = bool(desc.get("tls")), (desc.get("ca_file") or None)
        self.verify = ca_file or True  # for requests: uploads and downloads
        if tls or ca_file:
            roots = None
            if ca_file:
                with open(ca_file, "rb") as f:
                    roots = f.read()
            self.raw_channel = grpc.secure_channel(endpoint, grpc.ssl_channel_credentials(root_certificates=roots))
        else:
            self.raw_channel = grpc.insecure_channel(endpoint)
        self.channel = grpc.intercept_channel(self.raw_channel, _Bearer(token)) if token else self.raw_channel
        self.jobs = sgrpc.ProjectJobServiceStub(self.channel)
        self.ops = ogrpc.OperationServiceStub(self.channel)

    def close(self) -> None:
        self.raw_channel.close()

    # --- calls -------------------------------------------------------------------------------------------------

    def create(self, project_id: str, prep: Prepared, c: Config) -> tuple[str, list[jpb.StorageFile]]:
        op = self.jobs.Create(spb.CreateProjectJobRequest(
            project_id=project_id, job_parameters=prep.params, config=c.content, name=c.name or "",
            desc=c.desc or "", data_ttl=DATA_TTL))
        op = self.wait_operation(op)
        resp = spb.CreateProjectJobResponse()
        op.response.Unpack(resp)
        return resp.job_id, list(resp.upload_files)

    def upload(self, files: list[jpb.StorageFile], local: dict[str, str]) -> None:
        total = sum(f.file.size_bytes for f in files)
        bar = _transfer_progress(total, "uploading")
        try:
            for f in files:
                if not f.url:
                    continue
                import requests  # ~70 ms of imports: only where a file moves
                with open(local[f.file.sha256], "rb") as fh:
                    body = _CountingReader(fh, (lambda n: bar[0].advance(bar[1], n)) if bar else (lambda n: None))
                    r = requests.put(f.url, data=body, headers={"Content-Length": str(f.file.size_bytes)},
                                     verify=self.verify)
                    r.raise_for_status()
        finally:
            if bar:
                bar[0].stop()

    def fork(self, source_id: str, base: Path, *, args: Optional[dict] = None, vars: Optional[dict] = None,
             env_vars: Optional[dict] = None, name: Optional[str] = None, desc: Optional[str] = None,
             docker: Optional[jpb.Environment] = None, instance_types: tuple = (),
             working_storage: Optional[jpb.ExtendedWorkingStorage] = None) -> str:
        """Clone ``source_id`` with overrides as the official `fork` sends them (new files for input vars are
        uploaded); returns the new job's id (not yet executed)."""
        src = self.get(source_id)
        if src.data_cleared:
            raise ValueError("fork is unavailable – source job data is cleared")
        sp = src.job_parameters
        inputs = {f.desc.var: f for f in sp.input_files if f.desc.var}
        outputs = {f.var: f for f in sp.output_files if f.var}
        o = jpb.JobParameters()
        with tempfile.TemporaryDirectory(prefix="dsjobs-fork-") as tmp:
            local: dict[str, str] = {}
            for var, path in (vars or {}).items():
                if var in inputs:
                    target = base / path
                    if target.is_dir():
                        z = os.path.join(tmp, f"{var}.zip")
                        zip_path(target, z)
                        sha, size = _sha256_size(z)
                        local[sha] = z
                        kind = jpb.ZIP
                    else:
                        sha, size = _sha256_size(str(target))
                        local[sha] = str(target)
                        kind = jpb.NONE
                    o.input_files.append(jpb.File(desc=jpb.FileDesc(path=path, var=var), sha256=sha,
                                                  size_bytes=size, compression_type=kind))
                elif var in outputs:
                    o.output_files.append(jpb.FileDesc(path=path, var=var))
                else:
                    raise ValueError(f"No variable path in source job: {var}")
            known = {a.name for a in sp.arguments}
            for k, v in (args or {}).items():
                if k not in known:
                    raise ValueError(f"Argument with name '{k}' is not present in source job")
                o.arguments.append(jpb.Argument(name=k, value=v))
            o.env.vars.update(env_vars or {})
            if docker is not None:
                o.env.MergeFrom(docker)
            o.cloud_instance_types.extend(jpb.CloudInstanceType(name=t) for t in instance_types)
            if working_storage is not None:
                o.extended_working_storage.CopyFrom(working_storage)
            op = self.wait_operation(self.jobs.Clone(spb.CloneProjectJobRequest(
                source_job_id=source_id, job_parameters_overrides=o, name=name or "", desc=desc or "",
                data_ttl=DATA_TTL)))
            resp = spb.CloneProjectJobResponse()
            op.response.Unpack(resp)
            self.upload(list(resp.upload_files), local)
        return resp.job_id

    def delete(self, job_id: str) -> None:
        self.wait_operation(self.jobs.Delete(spb.DeleteProjectJobRequest(job_id=job_id)))

    def execute(self, job_id: str):
        return self.jobs.Execute(spb.ExecuteProjectJobRequest(job_id=job_id))

    def get_operation(self, op_id: str):
        return self.ops.Get(ops.GetOperationRequest(operation_id=op_id))

    def hold_operation(self, op_id: str, hold_s: float = HOLD_S):
        """(the operation, held): an engine that holds GetOperation answers once the operation is done or changed,
        or after ``hold_s``, and says so (held); any other (the cloud, an older engine) answers at once."""
        op, call = self.ops.Get.with_call(ops.GetOperationRequest(operation_id=op_id),
                                          metadata=((HOLD, f"{hold_s:g}"),))
        return op, any(k == HELD for k, _ in call.trailing_metadata() or ())

    def wait_operation(self, op, poll_s: float = 0.1, on_poll: Callable = lambda op: None):
        """Until ``op`` is done, asked for again as soon as it changes where the engine holds the asks, else every
        ``poll_s``; ``on_poll`` with each answer."""
        held = True
        while not op.done:
            if not held:
                time.sleep(poll_s)
            op, held = self.hold_operation(op.id)
            on_poll(op)
        if op.HasField("error"):
            from google.rpc import code_pb2
            raise OperationFailed(code_pb2.Code.Name(op.error.code), op.error.message)
        return op

    def cancel(self, job_id: str, graceful: bool = False, reason: str = "") -> None:
        self.jobs.Cancel(spb.CancelProjectJobRequest(job_id=job_id, graceful=graceful, reason=reason))

    def get(self, job_id: str) -> jpb.Job:
        return self.jobs.Get(spb.GetProjectJobRequest(job_id=job_id))

    def list(self, project_id: str, filter_: str = "") -> list[jpb.Job]:
        out, token = [], ""
        while True:
            r = self.jobs.List(spb.ListProjectJobRequest(project_id=project_id, page_size=50, page_token=token,
                                                         filter=filter_))
            out += r.jobs
            token = r.next_page_token
            if not token:
                return out

    def follow_logs(self, job_id: str, offset: int, sink: Callable[[spb.LogMessage], None]) -> threading.Thread:
        """Print logs in a background thread; reconnects from the last offset if the stream breaks."""
        def run():
            nonlocal offset
            while True:
                try:
                    for resp in self.jobs.ReadLogs(spb.ReadProjectJobLogsRequest(job_id=job_id, offset=offset)):
                        for m in resp.logs:
                            sink(m)
                        offset = resp.offset
                    return
                except grpc.RpcError as e:
                    if e.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT,
                                    grpc.StatusCode.CANCELLED):
                        return
                    time.sleep(1)
        t = threading.Thread(target=run, name="dsjobs-logs", daemon=True)
        t.start()
        return t

    def download(self, files: list[jpb.StorageFile], base: Path, output_dir: Optional[Path] = None,
                 errors: Optional[list] = None) -> list[Path]:
        """Fetch files to their declared paths (relative to ``base``), or into ``output_dir`` by basename, smallest
        first. A file that cannot be fetched or put in place (a directory where it goes, say) is left out, its
        partial download removed, and the rest are fetched, as the official client does: with ``errors``, each
        (declared path, why) goes there; without, the first failure is raised once the others are in."""
        done, failed = [], []
        bar = _transfer_progress(sum(f.file.size_bytes for f in files), "downloading")
        try:
            for f in sorted(files, key=lambda f: f.file.size_bytes):
                desc = Path(f.file.desc.path)
                target = (output_dir / desc.name) if output_dir else (desc if desc.is_absolute() else base / desc)
                part = target.with_name(target.name + ".download")
                try:
                    self._fetch(f, target, part, bar)
                except (OSError, ValueError) as e:  # requests' errors are OSErrors; a bad archive a ValueError
                    try:
                        part.unlink()
                    except OSError:
                        pass
                    failed.append((f.file.desc.path, e))
                    continue
                done.append(target)
        finally:
            if bar:
                bar[0].stop()
        if failed and errors is None:
            raise failed[0][1]
        if errors is not None:
            errors.extend((path, str(e)) for path, e in failed)
        return done

    def _fetch(self, f: jpb.StorageFile, target: Path, part: Path, bar) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        import requests  # ~70 ms of imports: only where a file moves
        with requests.get(f.url, stream=True, verify=self.verify) as r:
            r.raise_for_status()
            with open(part, "wb") as out:
                for chunk in r.iter_content(UPLOAD_PIECE):  # larger reads are slower in urllib3
                    out.write(chunk)
                    if bar:
                        bar[0].advance(bar[1], len(chunk))
        if f.file.compression_type == jpb.ZIP:
            extract(str(part), str(target.parent))
            part.unlink()
        else:
            os.replace(part, target)

    def download_job_files(self, job: jpb.Job, base: Path, *, with_logs: bool = False,
                           with_diagnostics: bool = False, output_dir: Optional[Path] = None) -> list[Path]:
        files = list(job.output_files) + (list(job.log_files) if with_logs else []) + \
            (list(job.diagnostic_files) if with_diagnostics else [])
        if not files:
            return []
        r = self.jobs.DownloadJobFiles(spb.DownloadProjectJobFilesRequest(job_id=job.id, files=files))
        return self.download(list(r.download_files), base, output_dir)

