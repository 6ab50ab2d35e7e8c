"""Thin servicers: convert the request, make one call on JobService, convert the answer."""
from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict

import grpc
from google.protobuf import empty_pb2

from engine.api import convert as cv
from engine.api.auth import Auth
from engine.api.errors import grpc_errors, grpc_stream_errors
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2_grpc as sgrpc
from dsjobs_pb.yandex.cloud.datasphere.v2 import project_service_pb2 as pspb
from dsjobs_pb.yandex.cloud.datasphere.v2 import project_service_pb2_grpc as pgrpc
from dsjobs_pb.yandex.cloud.operation import operation_service_pb2_grpc as ogrpc
from engine.errors import FailedPrecondition, InvalidArgument
from engine.jobs import JobService


LIST_PAGE_BYTES = 3 << 20  # under the 4 MiB a default gRPC client accepts, with room for the rest of the answer


def _ttl(request, field: str):
    return cv.duration_s(getattr(request, field)) if request.HasField(field) else None


def _caller(auth: Auth, context: grpc.ServicerContext) -> str:
    return auth.user(context.invocation_metadata()) or ""


def _operation(jobs: JobService, op_id: str):
    op, view = jobs.operation(op_id)
    uploads = jobs.upload_urls_of(op) if op.kind in ("create", "clone") else None
    return cv.operation_pb(op, view=view, uploads=uploads)


# GetOperation held until the operation changes: asked for by a call's metadata HOLD (seconds, at most MAX_HOLD_S
# and the call's deadline), told by the answer's trailing metadata HELD. Official clients never ask, and poll as
# they do in the cloud; dsjobs' own client (dsjobs/client.py, the same names) asks, and so sees a job's end at once
# rather than at its next poll, with one call a second instead of one per poll.
HOLD = "x-dsjobs-hold-s"
HELD = "x-dsjobs-held"
MAX_HOLD_S = 30.0


def _hold_of(context) -> float:
    value = next((v for k, v in context.invocation_metadata() or () if k == HOLD), None)
    if value is None:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise InvalidArgument(f"metadata {HOLD}: {value!r} is not a number of seconds (0 or more)")
    remaining = context.time_remaining()
    if remaining is not None:
        seconds = min(seconds, remaining - max(0.05, remaining / 10))  # answered before the caller's deadline
    return min(seconds, MAX_HOLD_S)


class PolledOperations:
    """GetOperation of a running job, polled every few milliseconds by clients (the official one's wait, the SDK's),
    answered from the last answer while nothing it was made of changed: the job's record and operations (the
    store's generation of the job, taken before they are read) and its progress file (stat). An answer is kept at
    most ``MAX_AGE_S``, so the output URLs it signs are always fresh ones."""

    MAX_AGE_S = 1.0
    SIZE = 1024

    def __init__(self, jobs: JobService, max_holds: int = 16):
        """``max_holds``: GetOperations held at once (a quarter of the threads that serve calls); past that, a
        hold is answered at once, and its client polls."""
        self.jobs = jobs
        self.max_holds = max_holds
        self.holding = 0  # held now
        self._ended = False
        self._mu = threading.Lock()
        self._answers: "OrderedDict[str, tuple]" = OrderedDict()  # op id -> (job id, key, made at, answer)
        self._jobs_of: "OrderedDict[str, str]" = OrderedDict()  # op id -> its job's id (an execute's never changes)

    def _key(self, job_id: str) -> tuple:
        try:
            st = os.stat(self.jobs.progress_file(job_id))
            progress = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            progress = None
        return self.jobs.store.generation(job_id), progress

    def get(self, op_id: str):
        with self._mu:
            job_id = self._jobs_of.get(op_id)
            hit = self._answers.get(op_id)
        key = self._key(job_id) if job_id else None
        now = time.monotonic()
        if hit is not None and hit[1] == key and now - hit[2] < self.MAX_AGE_S:
            out = type(hit[3])()
            out.CopyFrom(hit[3])  # a copy: gRPC serializes each answer on a thread of its own
            return out
        op, view = self.jobs.operation(op_id)
        if op.kind != "execute":
            return cv.operation_pb(op, view=view, uploads=self.jobs.upload_urls_of(op) if op.kind in (
                "create", "clone") else None)
        if key is None:  # the first look: the key is taken now, before the answer is made of what it guards
            key = self._key(op.job_id)
            op, view = self.jobs.operation(op_id)
        answer = cv.operation_pb(op, view=view)
        with self._mu:
            self._jobs_of[op_id] = op.job_id
            self._answers[op_id] = (op.job_id, key, now, answer)
            self._answers.move_to_end(op_id)
            self._jobs_of.move_to_end(op_id)
            for d in (self._answers, self._jobs_of):
                while len(d) > self.SIZE:
                    d.popitem(last=False)
        out = type(answer)()
        out.CopyFrom(answer)
        return out

    def held(self, op_id: str, seconds: float, context) -> object:
        """The operation once it is done or its job's record changed, or after ``seconds``; an execute's only
        (the others are done when their call returns, or soon after), and only ``MAX_HOLDS`` at a time."""
        answer = self.get(op_id)
        with self._mu:
            job_id = self._jobs_of.get(op_id)
        if job_id is None or answer.done or seconds <= 0 or self._ended:
            return answer
        with self._mu:
            if self.holding >= self.max_holds:
                return answer
            self.holding += 1
        try:
            context.set_trailing_metadata(((HELD, "1"),))
            generation = self.jobs.store.generation(job_id)  # taken before the answer it is to be checked against
            answer = self.get(op_id)
            if not answer.done:
                self.jobs.store.wait_change(job_id, generation, seconds, lambda: self._ended)
                answer = self.get(op_id)
            return answer
        finally:
            with self._mu:
                self.holding -= 1

    def end(self) -> None:
        """The server is stopping: its holds answer now, and those asked for later at once, unheld. Only this
        server's: another serving the same engine (a second port, the in-process API) holds on."""
        self._ended = True
        self.jobs.store.wake_waits()


class ProjectJobServicer(sgrpc.ProjectJobServiceServicer):
    def __init__(self, jobs: JobService, auth: Auth):
        self.jobs = jobs
        self.auth = auth

    @grpc_errors
    def Create(self, request, context):
        op, uploads = self.jobs.create(request.project_id, cv.params(request.job_parameters), config=request.config,
                                       name=request.name, desc=request.desc, data_ttl_s=_ttl(request, "data_ttl"),
                                       created_by=_caller(self.auth, context))
        return cv.operation_pb(op, uploads=uploads)

    @grpc_errors
    def Clone(self, request, context):
        if not request.source_job_id:
            raise InvalidArgument("source_job_id is empty")
        op, uploads = self.jobs.clone(request.source_job_id, cv.params(request.job_parameters_overrides),
                                      name=request.name, desc=request.desc, data_ttl_s=_ttl(request, "data_ttl"),
                                      created_by=_caller(self.auth, context))
        return cv.operation_pb(op, uploads=uploads)

    @grpc_errors
    def Execute(self, request, context):
        if not request.job_id:
            raise InvalidArgument("job_id is empty")
        op = self.jobs.execute(request.job_id)
        return _operation(self.jobs, op.id)

    @grpc_errors
    def Cancel(self, request, context):
        if not request.job_id:
            raise InvalidArgument("job_id is empty")
        self.jobs.cancel(request.job_id, request.reason, request.graceful)
        return empty_pb2.Empty()

    # Log streams are coroutines (engine/follow.py): a follower holds no thread of the API.
    @grpc_stream_errors
    async def ReadLogs(self, request, context):
        async for records, offset in self.jobs.follow_logs(request.job_id, request.offset):
            yield spb.ReadProjectJobLogsResponse(logs=[cv.log_message_pb(r) for r in records], offset=offset)

    @grpc_stream_errors
    async def ReadStdLogs(self, request, context):
        async for records, offset in self.jobs.follow_logs(request.job_id, request.offset):
            std = [m for m in (cv.std_log_pb(r) for r in records) if m is not None]
            yield spb.ReadProjectJobStdLogsResponse(logs=std, offset=offset)

    @grpc_errors
    def DownloadJobFiles(self, request, context):
        if not request.job_id:
            raise InvalidArgument("job_id is empty")
        urls = self.jobs.download_urls(request.job_id, [cv.file(f) for f in request.files])
        return spb.DownloadProjectJobFilesResponse(download_files=cv.storage_files_pb(urls))

    @grpc_errors
    def List(self, request, context):
        converted = {}

        def size(j):
            converted[j.id] = cv.job_pb(j)
            return converted[j.id].ByteSize()
        jobs, token = self.jobs.list(request.project_id, request.page_size, request.page_token, request.filter,
                                     size_of=size, max_bytes=LIST_PAGE_BYTES)
        return spb.ListProjectJobResponse(jobs=[converted[j.id] for j in jobs], next_page_token=token)

    @grpc_errors
    def Get(self, request, context):
        return cv.job_pb(self.jobs.get(request.job_id))

    @grpc_errors
    def Delete(self, request, context):
        return cv.operation_pb(self.jobs.delete(request.job_id))

    @grpc_errors
    def DeleteData(self, request, context):
        return cv.operation_pb(self.jobs.delete_data(request.job_id))

    @grpc_errors
    def DeleteAllData(self, request, context):
        return cv.operation_pb(self.jobs.delete_all_data(request.project_id))

    @grpc_errors
    def SetDataTtl(self, request, context):
        if not request.job_id:
            raise InvalidArgument("job_id is empty")
        self.jobs.set_data_ttl(request.job_id, _ttl(request, "ttl"))
        return spb.SetProjectJobDataTtlResponse()


class OperationServicer(ogrpc.OperationServiceServicer):
    def __init__(self, jobs: JobService, max_holds: int):
        self.jobs = jobs
        self.polled = PolledOperations(jobs, max_holds)

    @grpc_errors
    def Get(self, request, context):
        hold = _hold_of(context)
        return self.polled.held(request.operation_id, hold, context) if hold else self.polled.get(
            request.operation_id)

    @grpc_errors
    def Cancel(self, request, context):
        op, _ = self.jobs.operation(request.operation_id)
        if op.kind != "execute":
            raise FailedPrecondition(f"operation {request.operation_id!r} ({op.kind}) cannot be cancelled")
        self.jobs.cancel(op.job_id, "operation cancelled", graceful=False)
        return _operation(self.jobs, request.operation_id)


class ProjectServicer(pgrpc.ProjectServiceServicer):
    """The projects this engine has (engine/projects.py): Get for the official client's job link, List for
    `datasphere project list -c local`."""

    def __init__(self, jobs: JobService):
        self.jobs = jobs

    @grpc_errors
    def Get(self, request, context):
        return cv.project_pb(self.jobs.projects.get(request.project_id), self.jobs.cfg.community_id)

    @grpc_errors
    def List(self, request, context):
        page, token = self.jobs.projects.list(request.community_id, request.page_size, request.page_token,
                                              request.project_name_pattern, request.owned_by_id)
        return pspb.ListProjectsResponse(projects=[cv.project_pb(p, self.jobs.cfg.community_id) for p in page],
                                         next_page_token=token)
