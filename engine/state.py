"""Job statuses, named as the API's JobStatus, and the explicit table of allowed transitions."""
from __future__ import annotations

import enum

from engine.errors import InvalidTransition


class JobStatus(enum.Enum):
    # Values are the API's enum numbers, so conversion at the edge is by name and number alike.
    CREATING = 1
    EXECUTING = 2
    UPLOADING_OUTPUT = 3
    SUCCESS = 4
    ERROR = 5
    CANCELLED = 6
    CANCELLING = 7
    PREPARING = 8

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def active(self) -> bool:
        """Running on the machine (a worker or a supervisor owns it)."""
        return self in (JobStatus.PREPARING, JobStatus.EXECUTING, JobStatus.UPLOADING_OUTPUT, JobStatus.CANCELLING)


S = JobStatus
TERMINAL = frozenset({S.SUCCESS, S.ERROR, S.CANCELLED})

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    S.CREATING: frozenset({S.PREPARING, S.CANCELLED, S.ERROR}),
    S.PREPARING: frozenset({S.EXECUTING, S.CANCELLING, S.CANCELLED, S.ERROR}),
    S.EXECUTING: frozenset({S.UPLOADING_OUTPUT, S.CANCELLING, S.ERROR}),
    # A cancel or a deadline during collection lets collection finish: the outputs are the point.
    S.UPLOADING_OUTPUT: frozenset({S.SUCCESS, S.ERROR, S.CANCELLING, S.CANCELLED}),
    # Outputs are collected while still CANCELLING, then the job ends.
    S.CANCELLING: frozenset({S.CANCELLED, S.ERROR}),
    S.SUCCESS: frozenset(),
    S.ERROR: frozenset(),
    S.CANCELLED: frozenset(),
}


def check_transition(frm: JobStatus, to: JobStatus) -> None:
    if to not in TRANSITIONS[frm]:
        raise InvalidTransition(f"job status cannot change from {frm.name} to {to.name}")
