"""JobService: what each API method means, on domain objects. The gRPC layer only converts to and from it."""
from __future__ import annotations

import copy
from datetime import datetime
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol

from engine.cas import BlobStore
from engine.config import EngineConfig
from engine.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from engine.files import Signer
from engine.faults import ProjectFaults
from engine.follow import follow
from engine.ids import check_made, check_project, new_id
from engine.model import File, Job, JobParameters, Operation, Progress
from engine.projects import Projects
from engine.records import Records
from engine.resources import Secrets
from engine.state import JobStatus
from engine.validation import check_ttl, validate
from engine.warm import WarmSandboxes
from runners import journal
from runners.fsops import read_regular, rmtree

log = logging.getLogger(__name__)
S = JobStatus
FILTER_RE = re.compile(r"^\s*status\s+IN\s*\(\s*([A-Za-z_]+(?:\s*,\s*[A-Za-z_]+)*)\s*\)\s*$", re.I)
MAX_PAGE = 100
RFC3339_RE = re.compile(r"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d)(?:[.,](\d+))?([Zz]|[+-]\d\d:?\d\d)?")


def iso_time(text: str) -> float:
    """An ISO 8601 time as Python 3.11+ reads it. 3.10's fromisoformat reads only what isoformat() writes (no `Z`,
    fractions of 3 or 6 digits, offsets with a colon), so an RFC 3339 time it refuses is put in that form first."""
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        m = RFC3339_RE.fullmatch(text)
        if m is None:
            raise
        day, frac, tz = m.groups()
        tz = "+00:00" if tz in ("Z", "z") else f"{tz[:3]}:{tz[-2:]}" if tz else ""
        return datetime.fromisoformat(day + (f".{frac[:6]:0<6}" if frac else "") + tz).timestamp()


async def _dropped(stream, after_s: float, job_id: str):
    """The fault drop-logs-after: the stream ends with UNAVAILABLE ``after_s`` after it began (a client resumes
    from the last offset it was given, as from a dropped connection to the cloud)."""
    import asyncio
    loop = asyncio.get_running_loop()
    deadline = loop.time() + after_s
    it = stream.__aiter__()
    dropped = Unavailable(f"injected fault: drop-logs-after={after_s:g}s: the log stream of job {job_id} was "
                          "dropped; resume from the last offset")
    try:
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise dropped
            try:
                item = await asyncio.wait_for(it.__anext__(), left)
            except StopAsyncIteration:
                return
            except asyncio.TimeoutError:
                raise dropped from None
            yield item
    finally:
        close = getattr(it, "aclose", None)
        if close is not None:
            await close()


@dataclass
class UploadUrl:
    file: File
    url: str


@dataclass
class ExecuteView:
    """Everything the Execute operation shows, derived from the job record."""

    job: Job
    progress: Optional[Progress]
    output_urls: list[UploadUrl]


class WorkQueue(Protocol):
    """What Execute and Cancel hand over to (engine/lifecycle.py, given by engine/app.py's build_engine)."""

    def enqueue(self, job: Job, op: Operation) -> None: ...

    def cancel(self, job_id: str, reason: str, graceful: bool) -> None: ...


class JobService:
    def __init__(self, cfg: EngineConfig, records: Records, blobs: BlobStore, signer: Signer, work: WorkQueue,
                 warm: Optional[WarmSandboxes] = None):
        self.cfg = cfg
        self.warm = warm  # a project's next job id, chosen ahead with its sandbox made (engine/warm.py)
        self.records = records
        self.store = records.store
        self.clock = records.clock
        self.hub = records.hub
        self.blobs = blobs
        self.signer = signer
        self.work = work
        self.secrets = Secrets(cfg.data_dir)
        self.faults = ProjectFaults(cfg.data_dir)
        self.projects = Projects(cfg, self.store, self.secrets)
        self.lock = records.lock

    # --- paths (engine/records.py) ---------------------------------------------------------------------------

    def run_dir(self, job_id: str) -> Path:
        return self.records.run_dir(job_id)

    def progress_path(self, job_id: str) -> Path:
        return self.records.progress_path(job_id)

    def progress_file(self, job_id: str) -> str:
        return self.records.progress_file(job_id)

    def journal(self, job_id: str) -> str:
        return self.records.journal(job_id)

    def system_log(self, job_id: str, message: str) -> None:
        self.records.system_log(job_id, message)

    def update(self, job_id: str, fn: Callable[[Job], None]) -> Job:
        """A change of the job's fields other than its status (that is engine/lifecycle.py's)."""
        return self.records.update(job_id, fn)

    def _upload_urls(self, files: list[File], expired: bool = False) -> list[UploadUrl]:
        out, seen = [], set()
        for f in files:
            if f.sha256 in seen or self.blobs.has(f.sha256):
                continue  # content already stored (or already listed) gets no entry
            seen.add(f.sha256)
            out.append(UploadUrl(f, self._put_url(f, expired)))
        return out

    def _put_url(self, f: File, expired: bool) -> str:
        """A signed upload URL; the fault upload-url-expired hands it out expired an hour ago (answered 403)."""
        return self.signer.url("PUT", f.sha256, f.size_bytes, ttl_s=-3600.0 if expired else None)

    def lease(self, job_id: str) -> Callable[[str], None]:
        return self.records.lease(job_id)

    # --- API ---------------------------------------------------------------------------------------------------

    def create(self, project_id: str, params: JobParameters, *, config: str = "", name: str = "", desc: str = "",
               data_ttl_s: Optional[float] = None, created_by: str = "", parent_job_id: str = "",
               kind: str = "create") -> tuple[Operation, list[UploadUrl]]:
        check_project("project_id", project_id, self.store.has_project)
        validate(params, self.cfg)
        now = self.clock()
        ttl = self.cfg.default_data_ttl_s if data_ttl_s is None else data_ttl_s
        check_ttl("data_ttl", ttl)
        ahead = self._id_ahead(project_id, params)
        job = Job(id=ahead or new_id("ds"), project_id=project_id, params=params, name=name, desc=desc,
                  config=config, created_by_id=created_by, created_at=now,
                  data_expires_at=now + ttl if ttl else None, parent_job_id=parent_job_id)
        try:
            return self._create(job, kind)
        except BaseException:
            if ahead:  # not stored (a full disk, say): the sandbox made for it goes now, not when it would expire
                self.warm.give_back(ahead)
            raise

    def _id_ahead(self, project_id: str, params: JobParameters) -> Optional[str]:
        """The id chosen ahead for the project's next job, for a job that could start in the sandbox made for it: one
        made for its kind of job (a Python-env job's, or a plain one's); never a Docker or Spark job's, whose
        container or sandbox is another."""
        if self.warm is None or params.uses_docker or params.spark_connector_id:
            return None
        return self.warm.take(project_id, "python" if params.env.python_env is not None else "")

    def _create(self, job: Job, kind: str) -> tuple[Operation, list[UploadUrl]]:
        params, now = job.params, job.created_at
        spec = params.env.docker_image_spec
        if spec is not None and spec.password_plain_text:
            # Never in the database: the secrets store keeps it (0600) under the job's id.
            self.secrets.set_job_password(job.id, spec.password_plain_text)
            spec.password_plain_text, spec.password_stored = "", True
        files = params.all_uploads()
        # Which contents exist is asked under their locks, and the job's references are stored before the locks
        # are let go: a concurrent delete of another job's data then sees them (engine/cas.py).
        expired = self.faults.of(job.project_id, params.env.vars).upload_url_expired
        if expired:
            self.records.system_log(job.id, "injected fault: upload-url-expired: the upload URLs handed out are "
                                            "already expired")
        with self.blobs.locked(f.sha256 for f in files):
            uploads = self._upload_urls(files, expired)
            op = Operation(id=new_id("op"), kind=kind, created_at=now, modified_at=now, job_id=job.id,
                           project_id=job.project_id, created_by=job.created_by_id, done=True,
                           result={"upload_files": [u.file.sha256 for u in uploads]})
            self.store.insert_job(job, op)
        return op, uploads

    def upload_urls_of(self, op: Operation) -> list[UploadUrl]:
        """The upload URLs of a Create/Clone operation, signed afresh (the record keeps no URL)."""
        job = self.store.get_job(op.job_id)
        by_sha = {f.sha256: f for f in job.params.all_uploads()}
        expired = self.faults.of(job.project_id, job.params.env.vars).upload_url_expired
        return [UploadUrl(by_sha[s], self._put_url(by_sha[s], expired))
                for s in op.result.get("upload_files", []) if s in by_sha]

    def clone(self, source_id: str, overrides: JobParameters, *, name: str = "", desc: str = "",
              data_ttl_s: Optional[float] = None, created_by: str = "") -> tuple[Operation, list[UploadUrl]]:
        src = self.store.get_job(check_made("source_job_id", source_id, "ds"))
        if src.data_cleared:
            raise FailedPrecondition(f"job {source_id!r}: its data was cleared, it cannot be cloned")
        p = copy.deepcopy(src.params)
        o = overrides
        by_var = {f.desc.var: f for f in o.input_files if f.desc.var}
        for f in o.input_files:
            if f.desc.var and not any(x.desc.var == f.desc.var for x in p.input_files):
                raise InvalidArgument(f"job_parameters_overrides.input_files: no input with var {f.desc.var!r} in the source job")
        p.input_files = [by_var.get(f.desc.var, f) if f.desc.var else f for f in p.input_files]
        out_by_var = {d.var: d for d in o.output_files if d.var}
        for d in o.output_files:
            if d.var not in {x.var for x in p.output_files}:
                raise InvalidArgument(f"job_parameters_overrides.output_files: no output with var {d.var!r} in the source job")
        p.output_files = [out_by_var.get(d.var, d) if d.var else d for d in p.output_files]
        args = {a.name: a for a in o.arguments}
        for a in o.arguments:
            if a.name not in {x.name for x in p.arguments}:
                raise InvalidArgument(f"job_parameters_overrides.arguments: no argument {a.name!r} in the source job")
        p.arguments = [args.get(a.name, a) for a in p.arguments]
        p.env.vars.update(o.env.vars)
        if o.env.docker_image_resource_id:
            p.env.docker_image_resource_id, p.env.docker_image_spec = o.env.docker_image_resource_id, None
        elif o.env.docker_image_spec is not None:
            p.env.docker_image_resource_id, p.env.docker_image_spec = "", o.env.docker_image_spec
        elif p.env.docker_image_spec is not None and p.env.docker_image_spec.password_stored:
            # The source's password stays in the store: the clone gets its own copy, by its own id.
            p.env.docker_image_spec.password_plain_text = self.secrets.job_password(src.id)
            p.env.docker_image_spec.password_stored = False
        if o.cmd:
            p.cmd = o.cmd
        if o.attach_project_disk:
            p.attach_project_disk = True
        if o.cloud_instance_types:
            p.cloud_instance_types = list(o.cloud_instance_types)
        if o.extended_working_storage is not None:
            p.extended_working_storage = o.extended_working_storage
        if o.graceful_shutdown is not None:
            p.graceful_shutdown = o.graceful_shutdown
        for attr in ("s3_mount_ids", "dataset_ids", "output_datasets"):
            if getattr(o, attr):
                setattr(p, attr, list(getattr(o, attr)))
        return self.create(src.project_id, p, config=src.config, name=name or src.name, desc=desc or src.desc,
                           data_ttl_s=data_ttl_s, created_by=created_by, parent_job_id=src.id, kind="clone")

    def execute(self, job_id: str) -> Operation:
        check_made("job_id", job_id, "ds")
        with self.lock:
            job = self.store.get_job(job_id)
            if job.execute_operation_id:
                return self.store.get_op(job.execute_operation_id)  # attach: the running (or done) operation
            if job.status != S.CREATING:
                raise FailedPrecondition(f"job {job_id!r} is {job.status.name} and cannot be executed")
            missing = [f for f in job.params.all_uploads() if not self.blobs.has(f.sha256)]
            if missing:
                names = ", ".join(f.desc.path or f.desc.var for f in missing)
                raise FailedPrecondition(f"job {job_id!r}: input files not uploaded: {names}")
            now = self.clock()
            op = Operation(id=new_id("op"), kind="execute", created_at=now, modified_at=now, job_id=job_id,
                           project_id=job.project_id, created_by=job.created_by_id)
            self.work.enqueue(job, op)
        return op

    def cancel(self, job_id: str, reason: str = "", graceful: bool = False) -> None:
        self.work.cancel(check_made("job_id", job_id, "ds"), reason, graceful)

    def get(self, job_id: str) -> Job:
        return self.store.get_job(check_made("job_id", job_id, "ds"))

    def list(self, project_id: str, page_size: int, page_token: str, filter_: str,
             size_of: Callable[[Job], int] = lambda j: 0, max_bytes: int = 0) -> tuple[list, str]:
        """A page of the project's jobs, newest first, and the next page's token. With ``size_of`` (a job's size
        in the answer) a page also stops before ``max_bytes``: a client's 4 MiB limit holds even for big records
        (at least one job a page). Returns (jobs or whatever ``size_of`` made of them, token)."""
        check_project("project_id", project_id, self.store.has_project)
        if page_size < 0:
            raise InvalidArgument(f"page_size {page_size} is negative")
        size = min(page_size or 50, MAX_PAGE)
        try:
            offset = int(page_token) if page_token else 0
            if not 0 <= offset < 1 << 31:
                raise ValueError
        except ValueError:
            raise InvalidArgument(f"page_token {page_token[:60]!r} is not a token this server issued") from None
        statuses = None
        if filter_:
            if len(filter_) > 1000:
                raise InvalidArgument("filter is longer than 1000 characters")
            m = FILTER_RE.match(filter_)
            if not m:
                raise InvalidArgument(f"filter {filter_!r}: only `status IN (STATUS, ...)` is supported")
            statuses = set()
            for name in (x.strip().upper() for x in m.group(1).split(",")):
                if name not in S.__members__:
                    raise InvalidArgument(f"filter {filter_!r}: unknown status {name!r}")
                statuses.add(name)
        jobs = self.store.list_jobs(project_id, statuses, offset, size + 1)
        more = len(jobs) > size
        page, total = [], 0
        for j in jobs[:size]:
            n = size_of(j)
            if max_bytes and page and total + n > max_bytes:
                more = True
                break
            page.append(j)
            total += n
        return page, str(offset + len(page)) if more else ""

    def _finished(self, job_id: str, what: str) -> Job:
        job = self.get(job_id)
        if not (job.status.terminal or job.status == S.CREATING):
            raise FailedPrecondition(f"job {job_id!r} is {job.status.name}: {what} needs a finished job")
        return job

    def _drop_data(self, job: Job) -> None:
        rmtree(str(self.run_dir(job.id)))  # however deep the job made its tree
        self.secrets.remove_job_password(job.id)
        for sha in self.store.drop_blob_refs(job.id):
            self.blobs.delete(sha, self.store.blob_referenced)

    def _done_op(self, kind: str, job_id: str = "", project_id: str = "") -> Operation:
        now = self.clock()
        op = Operation(id=new_id("op"), kind=kind, created_at=now, modified_at=now, job_id=job_id or project_id,
                       project_id=project_id, done=True)
        self.store.put_op(op)
        return op

    def delete(self, job_id: str) -> Operation:
        job = self._finished(job_id, "delete")
        self._drop_data(job)
        self.store.delete_job(job_id)
        self.hub.notify(job_id, "gone")
        return self._done_op("delete", job_id=job_id, project_id=job.project_id)

    def delete_data(self, job_id: str) -> Operation:
        job = self._finished(job_id, "deleting data")
        self._clear(job)
        return self._done_op("delete_data", job_id=job_id, project_id=job.project_id)

    def _clear(self, job: Job) -> None:
        self._drop_data(job)

        def cleared(j: Job):
            j.data_cleared = True
            j.data_size_bytes = 0
        self.update(job.id, cleared)

    def expire_data(self) -> list[str]:
        """The janitor's pass: clear the data of finished jobs whose data_expires_at has passed."""
        now, cleared = self.clock(), []
        for job in self.store.jobs_with_status(S.SUCCESS, S.ERROR, S.CANCELLED):
            if not job.data_cleared and job.data_expires_at is not None and job.data_expires_at <= now:
                self._clear(job)
                cleared.append(job.id)
        return cleared

    def delete_all_data(self, project_id: str) -> Operation:
        check_project("project_id", project_id, self.store.has_project)
        for job_id in self.store.project_job_ids(project_id):
            job = self.store.get_job(job_id)
            if job.status.terminal and not job.data_cleared:
                self._clear(job)
        return self._done_op("delete_all_data", project_id=project_id)

    def set_data_ttl(self, job_id: str, ttl_s: Optional[float]) -> None:
        check_ttl("ttl", ttl_s)

        def ttl(j: Job):
            j.data_expires_at = None if ttl_s is None else self.clock() + ttl_s
        self.get(job_id)
        self.update(job_id, ttl)

    def download_urls(self, job_id: str, files: list[File]) -> list[UploadUrl]:
        job = self.get(job_id)
        if not files:
            raise InvalidArgument("files is empty: name at least one output, log or diagnostic file")
        if job.data_cleared:
            raise FailedPrecondition(f"job {job_id!r}: its data was cleared")
        known = job.output_files + job.log_files + job.diagnostic_files
        out = []
        for f in files:
            have = _requested(known, f)
            if have is None:
                raise NotFound(f"job {job_id!r} has no file {_named(f)}")
            if any(have is k for k in job.log_files + job.diagnostic_files) and not self.blobs.has(have.sha256):
                # Logs stay plain files in the run dir until someone asks for them.
                self.blobs.put_file(self.run_dir(job_id) / Path(have.desc.path).name, expect_sha=have.sha256,
                                    lease=self.lease(job_id))
            out.append(UploadUrl(have, self.signer.url("GET", have.sha256, have.size_bytes)))
        return out

    def follow_logs(self, job_id: str, offset: int, idle_s: Optional[float] = None):
        """An async iterator of (records, offset after them), from ``offset`` (-1: from now) until the job is
        finished and everything was sent (engine/follow.py: a coroutine per follower, no thread). With ``idle_s``,
        also ([], offset) at least that often while nothing new comes (the job page watches status and progress)."""
        self.get(job_id)
        path = self.journal(job_id)
        if offset == -1:
            offset = journal.size(path)
        elif offset < -1:
            raise InvalidArgument(f"offset {offset} is invalid (use 0, a returned offset, or -1 for now)")
        elif offset > journal.size(path):
            raise InvalidArgument(f"offset {offset} is past the end of the job's log ({journal.size(path)} "
                                  "bytes): use 0, a returned offset, or -1 for now")

        def lookup() -> str:
            try:
                return "finished" if self.store.get_job(job_id).status.terminal else "active"
            except NotFound:
                return "gone"
        stream = follow(self.hub, job_id, path, offset, lookup, **(
            {} if idle_s is None else {"recheck_s": idle_s, "idle": True}))
        job = self.store.get_job(job_id)
        drop = self.faults.of(job.project_id, job.params.env.vars).drop_logs_after_s
        return stream if drop is None or job.status.terminal else _dropped(stream, drop, job_id)

    # --- Execute operation view --------------------------------------------------------------------------------

    def progress(self, job_id: str) -> Optional[Progress]:
        """The latest valid line of the job's progress file (append-JSONL or overwrite both work). The file is the
        job's own: read without following a symlink, never blocking on a FIFO, at most its last 8 KiB."""
        data = read_regular(str(self.progress_path(job_id)), 8192, tail=True)
        for line in reversed((data or b"").splitlines()):
            try:
                d = json.loads(line)
                p = int(d.get("progress", 0))
            except (ValueError, TypeError, AttributeError, OverflowError):
                continue
            ts = None
            if d.get("create_time"):
                try:
                    ts = iso_time(str(d["create_time"]))
                except (ValueError, OverflowError, OSError):
                    ts = None
            return Progress(progress=max(0, min(100, p)), message=str(d.get("message", ""))[:1000], create_time=ts)
        return None

    def operation(self, op_id: str) -> tuple[Operation, Optional[ExecuteView]]:
        op = self.store.get_op(check_made("operation_id", op_id, "op"))
        if op.kind != "execute":
            return op, None
        job = self.store.get_job(op.job_id)
        op.done = job.status.terminal
        op.error = job.error if op.done else None
        op.modified_at = job.finished_at or job.started_at or op.created_at
        urls = []
        if op.done and op.error is None and not job.data_cleared:
            urls = [UploadUrl(f, self.signer.url("GET", f.sha256, f.size_bytes)) for f in job.output_files]
        return op, ExecuteView(job, self.progress(job.id), urls)


def _requested(known: list[File], f: File) -> Optional[File]:
    """The job's file a DownloadJobFiles entry names: by its path (and var), the digest, when given, agreeing;
    only an entry without either is looked up by digest. Contents coincide (two equal outputs, an empty stdout
    and an empty stderr), names never do, and each file must come back under the name it was asked for."""
    if f.desc.path or f.desc.var:
        return next((k for k in known if (k.desc.path, k.desc.var) == (f.desc.path, f.desc.var)
                     and f.sha256 in ("", k.sha256)), None)
    return next((k for k in known if f.sha256 and k.sha256 == f.sha256), None)


def _named(f: File) -> str:
    if not (f.desc.path or f.desc.var):
        return f"with sha256 {f.sha256[:64]!r}" if f.sha256 else "(the entry names no path, var or sha256)"
    return repr(f.desc.path or f.desc.var) + (f" with sha256 {f.sha256[:64]!r}" if f.sha256 else "")
