"""One error hierarchy, named after gRPC status codes; engine/api/errors.py maps it to gRPC in one place."""


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
