"""Map the engine's errors to gRPC statuses in one place; anything unexpected is logged, never sent as a traceback."""
from __future__ import annotations

import functools
import logging

import grpc

from engine.errors import EngineError

log = logging.getLogger(__name__)


def _abort(context: grpc.ServicerContext, e: BaseException, method: str):
    if isinstance(e, EngineError):
        context.abort(getattr(grpc.StatusCode, e.code), e.message)
    log.exception("unexpected error in %s", method)
    context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}; see the engine's log")


def grpc_errors(fn):
    @functools.wraps(fn)
    def unary(self, request, context):
        try:
            return fn(self, request, context)
        except Exception as e:  # noqa: BLE001 - classified in _abort
            if isinstance(e, grpc.RpcError) or type(e).__name__ == "_AbortionException":
                raise
            _abort(context, e, fn.__name__)

    return unary


def grpc_stream_errors(fn):
    @functools.wraps(fn)
    def stream(self, request, context):
        try:
            yield from fn(self, request, context)
        except Exception as e:  # noqa: BLE001
            if isinstance(e, grpc.RpcError) or type(e).__name__ == "_AbortionException":
                raise
            _abort(context, e, fn.__name__)

    return stream
