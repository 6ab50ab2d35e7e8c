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
import re
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
    RUNNER_LOST = "RUNNER_LOST"  # a remote attempt's node or agent was lost (or, injected, its machine)
    NO_CAPACITY = "NO_CAPACITY"  # no machine for any of the job's instance types (an injected fault)
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
    default: bool = False  # the engine's cloud-like default image, for a job without env.docker


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
class SparkSpec:
    """A local Spark for the job's connector (``dsjobs spark add``): the session params the official SDK's
    ``connect_to_spark()`` applies, over the engine's defaults."""

    connector_id: str
    conf: dict[str, str] = field(default_factory=dict)


@dataclass
class S3Source:
    """An S3 mount backed by a real bucket: copied into the mount before the job starts (cached by ETag)."""

    rid: str
    endpoint: str  # http(s)://host:port
    bucket: str
    prefix: str = ""
    region: str = "us-east-1"
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)


@dataclass
class EnvSettings:
    interpreters: list[str] = field(default_factory=list)
    installer: str = "auto"
    pip_index_url: str = ""
    pip_extra_index_urls: list[str] = field(default_factory=list)
    build_timeout_s: float = 1800.0
    cache_limit_bytes: int = 0


FAULTS_VAR = "DSJOBS_FAULTS"  # a job's env var: the cloud's failures, injected (see parse_faults)
FAULT_NAMES = ("no-capacity", "preempt-after", "drop-logs-after", "upload-url-expired", "disk-full-at", "oom",
               "slow-env-build")


@dataclass
class FaultSpec:
    """The cloud's failures injected into a job (DSJOBS_FAULTS, the project's setting): what each does is in
    runners/faults.py (the node's), engine/jobs.py (upload URLs, log streams)."""

    text: str = ""  # as given, for the system log
    no_capacity: Optional[list[str]] = None  # instance types with no machine ([]: every type); None: off
    preempt_after_s: Optional[float] = None
    drop_logs_after_s: Optional[float] = None
    upload_url_expired: bool = False
    disk_full_at_bytes: Optional[int] = None
    oom: bool = False
    oom_bytes: int = 0  # 0: the instance type's RAM
    slow_env_build_s: Optional[float] = None

    @property
    def any(self) -> bool:
        return bool(self.text)


def parse_duration(text: str) -> float:
    """Seconds (``90``, ``1.5``) or a duration as configs write it (``1d2h``, ``1h30m``, ``90s``, ``500ms``): the
    one parser of the engine, its CLI and the faults. ValueError for anything else, and for a negative or endless
    one; callers bound it further."""
    t = text.strip()
    try:
        v = float(t)
    except ValueError:
        m = re.fullmatch(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?", t)
        if not t or not m:
            raise ValueError(f"invalid duration {text!r} (use seconds or e.g. 1h30m, 90s, 500ms)") from None
        d, h, mi, sec, ms = (int(x) if x else 0 for x in m.groups())
        v = d * 86400 + h * 3600 + mi * 60 + sec + ms / 1000
    if not 0 <= v < float("inf"):
        raise ValueError(f"duration {text!r} is out of range")
    return v


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40,
          "p": 1 << 50, "pb": 1 << 50, "pib": 1 << 50}


def parse_size(text: str, positive: bool = False) -> int:
    """Bytes, or a whole number with a binary unit (``64MB``, ``20 GB``, ``150Gb``, ``2GiB``, ``512k``; any
    case): the one parser of the engine's settings, config.yaml (dsjobs/jobconfig.py) and the faults.
    ``positive``: 0 is refused too. ValueError otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS or (positive and int(m.group(1)) <= 0):
        raise ValueError(f"invalid size {text!r} (use bytes or e.g. 64MB, 20GB)")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


MAX_FAULT_DURATION_S = 366 * 86400


def _fault_duration(text: str) -> float:
    v = parse_duration(text)
    if v > MAX_FAULT_DURATION_S:
        raise ValueError(f"duration {text!r} is out of range")
    return v


def parse_faults(text: str) -> FaultSpec:
    """A comma-separated list of faults (``no-capacity[=TYPE]``, ``preempt-after=DURATION``, ...); ValueError
    naming the first entry that is not one."""
    f = FaultSpec(text=",".join(x.strip() for x in text.split(",") if x.strip()))
    for entry in f.text.split(",") if f.text else []:
        name, sep, value = (x.strip() for x in entry.partition("="))
        if name not in FAULT_NAMES:
            raise ValueError(f"unknown fault {name!r} (known: {', '.join(FAULT_NAMES)})")
        needs = {"preempt-after": "DURATION", "drop-logs-after": "DURATION", "disk-full-at": "SIZE",
                 "slow-env-build": "DURATION"}
        if name in needs and not value:
            raise ValueError(f"fault {name!r} needs a value: {name}={needs[name]}")
        if name == "upload-url-expired" and sep:
            raise ValueError(f"fault {name!r} takes no value (got {value!r})")
        try:
            if name == "no-capacity":
                f.no_capacity = [] if not value or f.no_capacity == [] else (f.no_capacity or []) + [value]
            elif name == "preempt-after":
                f.preempt_after_s = _fault_duration(value)
            elif name == "drop-logs-after":
                f.drop_logs_after_s = _fault_duration(value)
            elif name == "upload-url-expired":
                f.upload_url_expired = True
            elif name == "disk-full-at":
                f.disk_full_at_bytes = parse_size(value, positive=True)
            elif name == "oom":
                f.oom, f.oom_bytes = True, parse_size(value, positive=True) if value else 0
            else:
                f.slow_env_build_s = _fault_duration(value)
        except ValueError as e:
            raise ValueError(f"fault {name!r}: {e}") from None
    return f


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
    spark: Optional[SparkSpec] = None
    s3_sources: list[S3Source] = field(default_factory=list)
    sa_token: str = field(default="", repr=False)  # the service account's IAM token: SA_TOKEN_FILENAME
    faults: FaultSpec = field(default_factory=FaultSpec)  # the cloud's failures, injected (tests, reproductions)

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
