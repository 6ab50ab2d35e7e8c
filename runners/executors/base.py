"""The small interface every executor implements (Nomad's driver lifecycle): start, adopt, wait, stop, cleanup."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from runners.spec import Failure, FailureKind, StopRequest

if TYPE_CHECKING:
    from runners.executors.docker import ContainerSpec


@dataclass
class RunSpec:
    job_id: str
    run_dir: str  # the supervisor's channel: spec, supervisor, stop, status files
    argv: list[str]
    cwd: str
    env: dict[str, str]
    journal: str
    stdout: str
    stderr: str
    log_limit_bytes: int = 0
    max_duration_s: Optional[float] = None
    deadline_stop: StopRequest = field(default_factory=lambda: StopRequest(15, 10.0, kind="deadline"))
    container: Optional["ContainerSpec"] = None  # for the docker executor
    owner_pid: Optional[int] = None  # the job is killed when this process (a node's agent) is gone
    # Project secrets: given to the executor in memory only (never written into the run dir).
    secret_env: dict[str, str] = field(default_factory=dict, repr=False)
    sandboxed: bool = False  # argv starts with bwrap (runners/sandbox.py)
    # A sandbox made ahead of the job can start it when it was made with ``warm_argv`` (argv with the stub for its
    # command): ``command`` then runs in it (ProcessExecutor.warm).
    warm_argv: Optional[list[str]] = None
    command: Optional[list[str]] = None

    def supervisor_spec(self) -> dict:
        """The run dir's ``spec`` file, as the supervisor reads it (and as older engines wrote it)."""
        return {"argv": self.argv, "cwd": self.cwd, "env": self.env, "journal": self.journal,
                "stdout": self.stdout, "stderr": self.stderr, "log_limit_bytes": self.log_limit_bytes,
                "job_id": self.job_id, "max_duration_s": self.max_duration_s,
                "deadline_stop": self.deadline_stop.as_dict(), "owner_pid": self.owner_pid,
                "sandboxed": self.sandboxed,
                **({"warm_argv": self.warm_argv, "command": self.command} if self.warm_argv else {})}


@dataclass(frozen=True)
class ExitResult:
    return_code: Optional[int]
    signal: Optional[int] = None
    failure: Optional[Failure] = None  # the executor failed (not the program)
    stopped: Optional[StopRequest] = None  # the stop request that ended the run
    note: str = ""  # what the executor saw that the user should know (e.g. killed for memory)
    started_at: Optional[float] = None  # when the program started, by this machine's clock, where known

    def successful(self) -> bool:
        return self.failure is None and self.return_code == 0

    @classmethod
    def from_status(cls, st: dict) -> "ExitResult":
        """A supervisor's ``status`` file; older supervisors wrote ``error_code`` where newer ones write a kind."""
        failure = None
        if st.get("error"):
            kind = st.get("error_kind") or ("NO_SPACE" if st.get("error_code") == "RESOURCE_EXHAUSTED" else
                                            "START_FAILED" if str(st["error"]).startswith("cannot start") else
                                            "INTERNAL")
            failure = Failure(FailureKind(kind), str(st["error"]))
        stopped = st.get("stopped")
        at = st.get("started_at")
        return cls(return_code=st.get("return_code"), signal=st.get("signal"), failure=failure,
                   stopped=StopRequest.from_dict(stopped) if isinstance(stopped, dict) else None,
                   started_at=float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else None)


class Handle(abc.ABC):
    """A running job, as its executor knows it."""

    run_dir: str


class Executor(abc.ABC):
    name: str

    @abc.abstractmethod
    def start(self, spec: RunSpec) -> Handle: ...

    def confirm(self, handle: Handle) -> bool:
        """Whether the job really started (the job is marked EXECUTING only then)."""
        return True

    def started_at(self, handle: Handle) -> Optional[float]:
        """When the job's program started, by this machine's clock: the moment its deadline counts from, so the
        job's recorded start is that moment and not when the engine heard of it. None: not known."""
        return None

    @abc.abstractmethod
    def adopt(self, run_dir: str, job_id: str) -> Optional[Handle]:
        """Re-attach to a run started by an earlier engine; None when nothing of it is alive."""

    @abc.abstractmethod
    def wait(self, handle: Handle, timeout: Optional[float] = None) -> Optional[ExitResult]:
        """The result once the run is over; None if still running after ``timeout``."""

    @abc.abstractmethod
    def stop(self, handle: Handle, request: StopRequest) -> None:
        """Send the request's signal to the whole job, then SIGKILL whatever is left after its grace."""

    def cleanup(self, handle: Handle) -> None:
        pass

    def warm(self, run_dir: str, argv: list, cwd: str) -> bool:
        """Make a job's sandbox before the job (``argv``: its cold argv with the stub for its command); False when
        this executor cannot."""
        return False

    def discard(self, run_dir: str) -> None:
        """Drop the sandbox made ahead for ``run_dir``, if any."""

    def close(self) -> None:
        """The engine is stopping: release what the executor holds (not the running jobs)."""
