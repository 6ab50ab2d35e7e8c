"""The small interface every executor implements (Nomad's driver lifecycle): start, adopt, wait, stop, cleanup."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Optional


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
    deadline_stop: dict = field(default_factory=lambda: {"signal": 15, "timeout": 10.0})  # the graceful path
    container: Optional[object] = None  # runners.docker.ContainerSpec for the docker executor
    owner_pid: Optional[int] = None  # the job is killed when this process (a node's agent) is gone
    # Project secrets: given to the executor in memory only (never written into the run dir).
    secret_env: dict[str, str] = field(default_factory=dict, repr=False)
    sandboxed: bool = False  # argv starts with bwrap (runners/sandbox.py)


@dataclass(frozen=True)
class ExitResult:
    return_code: Optional[int]
    signal: Optional[int] = None
    error: Optional[str] = None  # the executor failed (not the program)
    stopped: Optional[dict] = None  # the stop request that ended the run: {"signal", "timeout", "reason"}
    note: Optional[str] = None  # what the executor saw that the user should know (e.g. killed for memory)
    error_code: Optional[str] = None  # the gRPC status of ``error`` when it is not the engine's fault alone

    def successful(self) -> bool:
        return self.error is None and self.return_code == 0


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

    @abc.abstractmethod
    def adopt(self, run_dir: str) -> Optional[Handle]:
        """Re-attach to a run started by an earlier engine; None when nothing of it is alive."""

    @abc.abstractmethod
    def wait(self, handle: Handle, timeout: Optional[float] = None) -> Optional[ExitResult]:
        """The result once the run is over; None if still running after ``timeout``."""

    @abc.abstractmethod
    def stop(self, handle: Handle, signal: int, timeout_s: float, reason: str) -> None:
        """Send ``signal`` to the whole job, then SIGKILL whatever is left after ``timeout_s``."""

    def cleanup(self, handle: Handle) -> None:
        pass

    def close(self) -> None:
        """The engine is stopping: release what the executor holds (not the running jobs)."""
