"""One error hierarchy, named after gRPC status codes; engine/api/errors.py maps it to gRPC in one place."""
import errno
import sqlite3


class EngineError(Exception):
    code = "INTERNAL"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidArgument(EngineError):
    code = "INVALID_ARGUMENT"


class NotFound(EngineError):
    code = "NOT_FOUND"


class AlreadyExists(EngineError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(EngineError):
    code = "FAILED_PRECONDITION"


class ResourceExhausted(EngineError):
    code = "RESOURCE_EXHAUSTED"


class Unauthenticated(EngineError):
    code = "UNAUTHENTICATED"


class Unavailable(EngineError):
    code = "UNAVAILABLE"


class Cancelled(EngineError):
    code = "CANCELLED"


class DeadlineExceeded(EngineError):
    code = "DEADLINE_EXCEEDED"


class Internal(EngineError):
    code = "INTERNAL"


class InvalidTransition(FailedPrecondition):
    """A status change the transition table does not allow."""


def disk_full(e: BaseException) -> bool:
    """No space left (a file's write, or SQLite's): the operation can be retried once space is freed."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(e, ResourceExhausted) and "space" in e.message:
        return True
    return isinstance(e, sqlite3.OperationalError) and "full" in str(e).lower()


def io_error(e: BaseException) -> bool:
    if isinstance(e, OSError) and e.errno == errno.EIO:
        return True
    return isinstance(e, sqlite3.DatabaseError) and ("i/o" in str(e).lower() or "locked" in str(e).lower())
