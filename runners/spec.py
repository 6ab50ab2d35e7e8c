"""The contract between the control plane and the data plane: what one attempt of a job needs on a machine
(AttemptSpec), and what became of it (AttemptResult). The engine makes a spec from a job and its configuration
(engine/spec.py); a node (this machine, or a Ray node's agent) turns it into a result (runners/node.py). Nothing
of the API's model crosses this line, so the data plane depends on nothing of the control plane.

Plain dataclasses with a JSON form (``to_json``/``from_json``), because a spec travels over the runner channel to
remote nodes. Secrets are part of a spec in memory and on that channel only: no node writes them to a file.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import typing
from dataclasses import dataclass, field
from typing import Optional


class FailureKind(str, enum.Enum):
    """Why an attempt could not run or complete (not why a program failed: that is its return code). The API
    shows each with one gRPC status code (engine/api/errors.py, the one table)."""

    INVALID_INPUT = "INVALID_INPUT"  # an input that cannot be laid out: an unsafe or corrupt archive, a conflict
    MISSING = "MISSING"  # something the job names is not there: an interpreter, an image, a secret, a resource
    UNSUPPORTED = "UNSUPPORTED"  # what this engine or this backend cannot give (conda, a GPU, a mount on Ray)
    ENV_BUILD_FAILED = "ENV_BUILD_FAILED"
    IMAGE_UNAVAILABLE = "IMAGE_UNAVAILABLE"  # the image cannot be pulled
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"  # Docker or the Ray cluster cannot be reached: try again later
    MISCONFIGURED = "MISCONFIGURED"  # the engine's own settings are wrong (a Ray token the cluster refuses)
    DEADLINE = "DEADLINE"  # a time limit: the job's running time, an env build, an image pull
    NO_SPACE = "NO_SPACE"  # a full disk (the job's logs, its exit status, its outputs)
    SANDBOX_UNAVAILABLE = "SANDBOX_UNAVAILABLE"
    START_FAILED = "START_FAILED"
    RUNNER_LOST = "RUNNER_LOST"  # a remote attempt's node or agent was lost
    ENGINE_STOPPED = "ENGINE_STOPPED"  # the engine stopped during the run and nothing of it could be recovered
    CANCELLED = "CANCELLED"
    INTERNAL = "INTERNAL"


class JobFailure(Exception):
    """Raised in the data plane: the attempt ends with this failure (never a traceback to the user)."""

    def __init__(self, kind: FailureKind, message: str):
        super().__init__(message)
        self.kind, self.message = FailureKind(kind), message


@dataclass
class Failure:
    kind: FailureKind
    message: str


@dataclass
class InputFile:
    path: str  # as declared (relative, or absolute with a var)
    var: str
    sha256: str
    size: int
    zipped: bool = False


@dataclass
class OutputDecl:
    path: str
    var: str = ""


@dataclass
class PythonSpec:
    version: str = ""  # major.minor; empty: the engine's own
    requirements: list[str] = field(default_factory=list)
    index_url: str = ""
    extra_index_urls: list[str] = field(default_factory=list)
    trusted_hosts: list[str] = field(default_factory=list)
    no_deps: bool = False
    local_modules: list[InputFile] = field(default_factory=list)


@dataclass
class ImageSpec:
    image: str
    username: str = ""
    password: str = field(default="", repr=False)
    network: str = "auto"
    build_network: str = "auto"
    run_as_root: bool = False
    pull_timeout_s: float = 1800.0


@dataclass
class Limits:
    instance: str
    cpus: float = 0.0
    memory_bytes: int = 0
    gpus: int = 0


@dataclass
class StopRequest:
    """A stop: ``signal`` to the whole job, SIGKILL after ``grace_s`` (0: at once)."""

    signal: int
    grace_s: float = 0.0
    reason: str = ""
    kind: str = "cancel"  # cancel | deadline | storage | fenced | owner

    @property
    def forced(self) -> bool:
        return self.signal == 9 or self.grace_s <= 0

    def as_dict(self) -> dict:
        """The form of the run dir's ``stop`` file and of the supervisor's status (stdlib only on that side)."""
        return {"signal": int(self.signal), "timeout": float(self.grace_s), "reason": self.reason, "kind": self.kind}

    @classmethod
    def from_dict(cls, d: dict) -> "StopRequest":
        return cls(int(d.get("signal") or 9), float(d.get("timeout") or 0.0), str(d.get("reason") or ""),
                   str(d.get("kind") or "cancel"))


@dataclass
class Mount:
    """A directory the job reads as ``${rid}``: an S3 mount or a dataset (local backend only)."""

    rid: str
    host_dir: str
    container_dir: str


@dataclass
class EnvSettings:
    interpreters: list[str] = field(default_factory=list)
    installer: str = "auto"
    pip_index_url: str = ""
    pip_extra_index_urls: list[str] = field(default_factory=list)
    build_timeout_s: float = 1800.0
    cache_limit_bytes: int = 0


@dataclass
class AttemptSpec:
    job_id: str
    project_id: str
    attempt: str
    cmd: str
    instance_types: list[Limits]  # the job's list, in order: a node takes the first it can serve
    arguments: dict[str, str] = field(default_factory=dict)
    env_vars: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    inputs: list[InputFile] = field(default_factory=list)
    outputs: list[OutputDecl] = field(default_factory=list)
    output_datasets: list[str] = field(default_factory=list)  # vars: each gets a fresh directory
    python: Optional[PythonSpec] = None
    image: Optional[ImageSpec] = None
    mounts: list[Mount] = field(default_factory=list)
    project_home: str = ""  # the project disk's directory (local backend only)
    max_duration_s: Optional[float] = None
    deadline_stop: StopRequest = field(default_factory=lambda: StopRequest(15, 10.0, "", "deadline"))
    log_limit_bytes: int = 0
    working_storage_gb: int = 0
    env: EnvSettings = field(default_factory=EnvSettings)
    sandbox: str = "bwrap"  # bwrap | none
    bwrap: str = ""
    input_urls: dict[str, str] = field(default_factory=dict)  # sha256 -> signed URL (remote nodes)

    def to_json(self) -> str:
        return to_json(self)

    @classmethod
    def from_json(cls, text: str) -> "AttemptSpec":
        return from_json(cls, text)


@dataclass
class OutputFile:
    path: str
    var: str
    sha256: str
    size: int
    zipped: bool = False


@dataclass
class OutputError:
    path: str
    var: str
    kind: str  # NOT_FOUND | UPLOAD_FAILED
    description: str


@dataclass
class AttemptResult:
    started: bool = False  # the command was started (EXECUTING was confirmed)
    return_code: Optional[int] = None
    signal: Optional[int] = None
    stopped: Optional[StopRequest] = None  # the stop that ended the run
    failure: Optional[Failure] = None  # the attempt could not run or complete
    note: str = ""  # what the executor saw that a user should know (killed for memory)
    outputs: list[OutputFile] = field(default_factory=list)
    output_errors: list[OutputError] = field(default_factory=list)
    datasets: dict[str, str] = field(default_factory=dict)  # output dataset var -> its directory on the node
    instance: str = ""

    def to_json(self) -> str:
        return to_json(self)

    @classmethod
    def from_json(cls, text: str) -> "AttemptResult":
        return from_json(cls, text)


# --- the JSON form -----------------------------------------------------------------------------------------------


def plain(v):
    """A dataclass as JSON-ready dicts and lists."""
    if dataclasses.is_dataclass(v):
        return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, list):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    return v


def to_json(obj) -> str:
    return json.dumps(plain(obj))


_HINTS: dict = {}


def _build(tp, v):
    if v is None:
        return None
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        return _build([a for a in typing.get_args(tp) if a is not type(None)][0], v)
    if origin is list:
        (inner,) = typing.get_args(tp)
        return [_build(inner, x) for x in v]
    if origin is dict:
        return dict(v)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(v)
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, v)
    return v


def _from_dict(cls, data: dict):
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    hints = _HINTS[cls]
    return cls(**{f.name: _build(hints[f.name], data[f.name]) for f in dataclasses.fields(cls) if f.name in data})


def from_json(cls, text: str):
    return _from_dict(cls, json.loads(text))


def from_plain(cls, data: dict):
    return _from_dict(cls, data)
