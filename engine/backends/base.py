"""The Backend interface, and the Sink a backend reports through.

The lifecycle (engine/lifecycle.py) picks a backend once per job and hands it the job; the backend runs the job's
attempts (the node runner, runners/node.py, on this machine or on a cluster's node) and says what happened through
the sink, which is the lifecycle itself. A backend never writes a job's status and never calls the lifecycle
otherwise: this file is all they share.
"""
from __future__ import annotations

import abc
from typing import Optional, Protocol

from engine.model import Job
from runners.spec import AttemptResult, AttemptSpec, StopRequest


class Sink(Protocol):
    def resolve(self, job_id: str, instance: str = "") -> AttemptSpec:
        """The spec of the job's attempt (``instance``: the type the backend chose). Raises JobFailure."""

    def may_start(self, job_id: str) -> bool:
        """Whether the job may still start (it was not cancelled meanwhile)."""

    def executing(self, job_id: str, instance: str, at: Optional[float] = None) -> None:
        """The attempt's start is confirmed; ``at``: when it started, as its node saw it (a remote node's report
        arrives later)."""

    def uploading(self, job_id: str) -> None:
        """The program ended; its outputs are being collected."""

    def waiting(self, job_id: str, why: str) -> None:
        """The job waits for room on the backend (shown as its status details)."""

    def log(self, job_id: str, line: str) -> None:
        """A line of the job's system log."""

    def result(self, job_id: str, result: AttemptResult) -> None:
        """The attempt ended (or could not begin): the lifecycle ends the job. Called once per attempt."""

    def requeue(self, job_id: str, why: str) -> None:
        """The attempt never started: the job is prepared again from the start."""

    def room(self) -> None:
        """The backend has room again: queued jobs may be handed to it."""


class Backend(abc.ABC):
    name: str

    def open(self, sink: Sink) -> None:
        """At engine start, before jobs are handed over or adopted."""
        self.sink = sink

    def has_room(self, job: Optional[Job] = None) -> bool:
        """Whether ``job`` handed over now starts preparing at once (else it stays queued, in the store)."""
        return True

    def unsupported(self, spec: AttemptSpec) -> Optional[str]:
        """What of the spec this backend cannot give (one capability check); None when it can run it."""
        return None

    @abc.abstractmethod
    def start(self, job: Job) -> None:
        """Take the job (just claimed, PREPARING): run its attempt and report through the sink. Returns at once."""

    @abc.abstractmethod
    def stop(self, job: Job, request: StopRequest) -> None:
        """Stop the job's attempt, wherever it is (waiting for room, preparing, running)."""

    @abc.abstractmethod
    def adopt(self, job: Job) -> None:
        """After an engine restart: follow the job's attempt again, or report what became of it."""

    @abc.abstractmethod
    def owns(self, job_id: str) -> bool:
        """Whether a thread of this backend looks after the job (the reconciler picks up the others)."""

    def close(self) -> None:
        """The engine is stopping: let go of what the backend holds (running attempts stay, for re-adoption)."""
