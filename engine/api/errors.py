"""Map what goes wrong to gRPC statuses in one place; anything unexpected is logged, never sent as a traceback.

A request that is not even a valid protobuf message reaches a handler as ``Malformed`` (see server.py) and is
answered INVALID_ARGUMENT; a full disk is RESOURCE_EXHAUSTED and an I/O error UNAVAILABLE (both: retry later), so
the engine's own troubles are never UNKNOWN, and INTERNAL only for a bug, which the engine's log then shows.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import grpc

from engine.errors import EngineError, disk_full, io_error
from engine.model import OperationError
from runners.spec import FailureKind as K

log = logging.getLogger(__name__)

DISK_FULL = "no space left on the device holding the engine's data dir; retry once space is freed"


@dataclass(frozen=True)
class Malformed:
    """What a request that does not parse is handed to its handler as, instead of grpc's INTERNAL."""

    message_type: str
    error: str


# The one table of what a job's failure shows as: the Execute operation's error status.
JOB_FAILURE_CODES: dict[K, grpc.StatusCode] = {
    K.INVALID_INPUT: grpc.StatusCode.INVALID_ARGUMENT,
    K.MISSING: grpc.StatusCode.FAILED_PRECONDITION,
    K.UNSUPPORTED: grpc.StatusCode.FAILED_PRECONDITION,
    K.MISCONFIGURED: grpc.StatusCode.FAILED_PRECONDITION,
    K.ENV_BUILD_FAILED: grpc.StatusCode.FAILED_PRECONDITION,
    K.IMAGE_UNAVAILABLE: grpc.StatusCode.FAILED_PRECONDITION,
    K.SANDBOX_UNAVAILABLE: grpc.StatusCode.FAILED_PRECONDITION,
    K.SERVICE_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    K.RUNNER_LOST: grpc.StatusCode.UNAVAILABLE,
    K.NO_CAPACITY: grpc.StatusCode.RESOURCE_EXHAUSTED,
    K.DEADLINE: grpc.StatusCode.DEADLINE_EXCEEDED,
    K.NO_SPACE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    K.START_FAILED: grpc.StatusCode.INTERNAL,
    K.ENGINE_STOPPED: grpc.StatusCode.ABORTED,
    K.CANCELLED: grpc.StatusCode.CANCELLED,
    K.INTERNAL: grpc.StatusCode.INTERNAL,
}


def job_error_code(e: OperationError) -> grpc.StatusCode:
    """A job's error as a gRPC status; records of earlier releases name the status itself."""
    if e.kind:
        return JOB_FAILURE_CODES[K(e.kind)]
    return getattr(grpc.StatusCode, e.code, grpc.StatusCode.INTERNAL)


def classify(e: BaseException, method: str) -> tuple[grpc.StatusCode, str]:
    if disk_full(e):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, DISK_FULL
    if isinstance(e, EngineError):
        return getattr(grpc.StatusCode, e.code), e.message
    if io_error(e):
        return grpc.StatusCode.UNAVAILABLE, f"the engine's storage failed ({e}); retry"
    log.exception("unexpected error in %s", method, exc_info=e)
    return grpc.StatusCode.INTERNAL, f"internal error in {method}; see the engine's log"


def _malformed(request) -> tuple[grpc.StatusCode, str]:
    return grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {request.message_type}: {request.error}"


def grpc_errors(fn):
    @functools.wraps(fn)
    def unary(self, request, context):
        if isinstance(request, Malformed):
            code, message = _malformed(request)
        else:
            try:
                return fn(self, request, context)
            except Exception as e:  # noqa: BLE001 - classified here, in one place
                code, message = classify(e, fn.__name__)
        context.abort(code, message)

    return unary


def grpc_stream_errors(fn):
    """For async-generator handlers (log streams)."""
    @functools.wraps(fn)
    async def stream(self, request, context):
        if isinstance(request, Malformed):
            code, message = _malformed(request)
        else:
            try:
                async for item in fn(self, request, context):
                    yield item
                return
            except Exception as e:  # noqa: BLE001
                code, message = classify(e, fn.__name__)
        await context.abort(code, message)

    return stream
