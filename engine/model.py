"""The domain model: plain dataclasses mirroring the API's messages (engine/api/convert.py maps them)."""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Optional

from engine.state import JobStatus

NONE, ZIP = "NONE", "ZIP"  # FileCompressionType


@dataclass
class FileDesc:
    path: str = ""
    var: str = ""


@dataclass
class File:
    desc: FileDesc = field(default_factory=FileDesc)
    sha256: str = ""
    size_bytes: int = 0
    compression_type: str = NONE


@dataclass
class Argument:
    name: str = ""
    value: str = ""


@dataclass
class DockerImageSpec:
    image_url: str = ""
    username: str = ""
    password_plain_text: str = ""  # only on the way in: Create moves it into the secrets store
    password_ds_secret_name: str = ""
    password_stored: bool = False  # a plain-text password of the request is in the secrets store, by job id


@dataclass
class PipOptions:
    index_url: str = ""
    extra_index_urls: list[str] = field(default_factory=list)
    trusted_hosts: list[str] = field(default_factory=list)
    no_deps: bool = False


@dataclass
class PythonEnv:
    conda_yaml: str = ""
    local_modules: list[File] = field(default_factory=list)
    python_version: str = ""
    requirements: list[str] = field(default_factory=list)
    pip_options: Optional[PipOptions] = None


@dataclass
class Environment:
    vars: dict[str, str] = field(default_factory=dict)
    docker_image_resource_id: str = ""
    docker_image_spec: Optional[DockerImageSpec] = None
    python_env: Optional[PythonEnv] = None


@dataclass
class OutputDatasetDesc:
    name: str = ""
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    size_gb: int = 0
    var: str = ""


@dataclass
class OutputDataset:
    desc: OutputDatasetDesc = field(default_factory=OutputDatasetDesc)
    id: str = ""


@dataclass
class GracefulShutdown:
    timeout_s: Optional[float] = None  # None: unset (the engine's default applies)
    signal: int = 15


@dataclass
class ExtendedWorkingStorage:
    type: str = "SSD"
    size_gb: int = 0


@dataclass
class JobParameters:
    input_files: list[File] = field(default_factory=list)
    output_files: list[FileDesc] = field(default_factory=list)
    s3_mount_ids: list[str] = field(default_factory=list)
    dataset_ids: list[str] = field(default_factory=list)
    cmd: str = ""
    env: Environment = field(default_factory=Environment)
    attach_project_disk: bool = False
    cloud_instance_types: list[str] = field(default_factory=list)
    extended_working_storage: Optional[ExtendedWorkingStorage] = None
    arguments: list[Argument] = field(default_factory=list)
    output_datasets: list[OutputDatasetDesc] = field(default_factory=list)
    graceful_shutdown: Optional[GracefulShutdown] = None
    spark_connector_id: str = ""

    @property
    def uses_docker(self) -> bool:
        return bool(self.env.docker_image_resource_id or self.env.docker_image_spec is not None)

    def all_uploads(self) -> list[File]:
        """Files the client uploads: inputs and local modules."""
        mods = self.env.python_env.local_modules if self.env.python_env else []
        return list(self.input_files) + list(mods)


@dataclass
class FileError:
    description: str = ""
    type: str = "NOT_FOUND"  # or UPLOAD_FAILED
    output_file_desc: Optional[FileDesc] = None
    log_file_name: str = ""


@dataclass
class Progress:
    progress: int = 0
    message: str = ""
    create_time: Optional[float] = None


@dataclass
class OperationError:
    """Why a job's Execute operation failed: a failure kind (runners/spec.py FailureKind, which the API edge maps
    to a gRPC status in one table), or, in records of earlier releases, the gRPC status code's name itself."""

    code: str = ""
    message: str = ""
    kind: str = ""

    @classmethod
    def of(cls, kind, message: str) -> "OperationError":
        return cls(message=message, kind=getattr(kind, "value", kind))


@dataclass
class Job:
    id: str
    project_id: str
    params: JobParameters
    status: JobStatus = JobStatus.CREATING
    name: str = ""
    desc: str = ""
    config: str = ""
    created_by_id: str = ""
    created_at: float = 0.0
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    data_expires_at: Optional[float] = None
    data_cleared: bool = False
    status_details: str = ""
    actual_cloud_instance_type: str = ""
    parent_job_id: str = ""
    output_files: list[File] = field(default_factory=list)
    log_files: list[File] = field(default_factory=list)
    diagnostic_files: list[File] = field(default_factory=list)
    file_errors: list[FileError] = field(default_factory=list)
    output_datasets: list[OutputDataset] = field(default_factory=list)
    data_size_bytes: int = 0
    return_code: Optional[int] = None
    error: Optional[OperationError] = None  # the Execute operation's error, when it ended in one
    execute_operation_id: str = ""
    queued_at: Optional[float] = None
    attempt: int = 0
    backend: str = ""  # where its attempts run (engine/backends/), chosen once when it is first claimed
    # [status name, time] of every change through the transition table (the job page's timeline); older records
    # have none, and their page falls back on the times above
    status_history: list = field(default_factory=list)


@dataclass
class Operation:
    id: str
    kind: str  # create | clone | execute | delete | delete_data | delete_all_data
    created_at: float
    job_id: str = ""
    project_id: str = ""
    created_by: str = ""
    done: bool = False
    modified_at: float = 0.0
    error: Optional[OperationError] = None
    result: dict = field(default_factory=dict)  # kind-specific response payload (create: upload files)


# --- dict round-trip for storage -------------------------------------------------------------------------------


# Records are converted several times in a job's life (each read and each write of it): the converters are made
# once per class from its type hints, and to_dict takes plain values as they are.
_PLAIN = frozenset({str, int, float, bool, type(None)})
_LIST, _DICT, _STATUS, _OTHER = "list", "dict", "status", "other"
_KINDS: dict[type, object] = {}  # a type -> its field names (a dataclass), or one of the kinds above


def _kind(t: type):
    kind = _KINDS.get(t)
    if kind is None:
        if dataclasses.is_dataclass(t):
            kind = tuple(f.name for f in dataclasses.fields(t))
        elif issubclass(t, JobStatus):
            kind = _STATUS
        elif issubclass(t, list):
            kind = _LIST
        elif issubclass(t, dict):
            kind = _DICT
        else:
            kind = _OTHER
        _KINDS[t] = kind
    return kind


def to_dict(obj) -> dict:
    def conv(v):
        t = type(v)
        if t in _PLAIN:
            return v
        kind = _kind(t)
        if kind.__class__ is tuple:
            return {n: conv(getattr(v, n)) for n in kind}
        if kind is _LIST:
            return [conv(x) for x in v]
        if kind is _DICT:
            return {k: conv(x) for k, x in v.items()}
        if kind is _STATUS:
            return v.name
        return v

    return conv(obj)


def _converter(tp):
    """The function that makes a value of type ``tp`` from its stored form (never given None), or None when the
    stored form is the value."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        return _converter([a for a in typing.get_args(tp) if a is not type(None)][0])
    if origin is list:
        (inner,) = typing.get_args(tp)
        c = _converter(inner)
        return list if c is None else (lambda v: [None if x is None else c(x) for x in v])
    if origin is dict:
        return dict
    if tp is JobStatus:
        return JobStatus.__getitem__
    if dataclasses.is_dataclass(tp):
        return lambda v: from_dict(tp, v)
    return None


_PLANS: dict[type, tuple] = {}


def _plan(cls) -> tuple:
    plan = _PLANS.get(cls)
    if plan is None:
        hints = typing.get_type_hints(cls)
        plan = _PLANS[cls] = tuple((f.name, _converter(hints[f.name])) for f in dataclasses.fields(cls))
    return plan


def from_dict(cls, data: dict):
    kwargs = {}
    for name, conv in _plan(cls):
        if name in data:
            v = data[name]
            kwargs[name] = v if conv is None or v is None else conv(v)
    return cls(**kwargs)


@dataclass
class Attempt:
    """One run of a job on a remote backend (a Ray job): the unit that is fenced when the engine declares it lost.

    state: SUBMITTED (handed to the backend) -> RUNNING (its agent fetched the spec) -> DONE (result stored) or
    LOST (the engine gave up on it; every later write from its agent is refused)."""

    id: str
    job_id: str
    backend: str
    state: str = "SUBMITTED"
    spec_token_sha: str = ""  # one-time token the entrypoint carries
    token_sha: str = ""  # the agent's token for every later call
    instance: str = ""
    node_id: str = ""
    shape: dict = field(default_factory=dict)  # {"cpus", "gpus", "memory"} reserved on node_id
    submitted_at: float = 0.0
    result: Optional[dict] = None
    reason: str = ""
    ray_deleted: bool = False
