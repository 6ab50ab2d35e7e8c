"""The API called in this process, for `dsjobs run`: a channel with the gRPC server's own handlers, without a socket.

The generated stubs take it as a grpc.Channel. Each call goes the server's way: the request is serialized and parsed
by the server's deserializer (a malformed one is the handler's ``Malformed``), the bearer token is checked by the
same Auth, and the same servicer method answers (engine/api/servicers.py over the job service: validation, the
lifecycle, the store, the node runner), its errors the same statuses. Unary calls run on a thread of the channel's
pool, as the server runs them on its own: the caller's thread (a Ctrl-C handler in it) never interrupts engine code
half way. Log streams are the servicer's coroutines, each driven by an event loop of its own in the reading thread.
"""
from __future__ import annotations

import asyncio
import threading
import time
from concurrent import futures
from typing import Callable, Optional

import grpc

from engine.api.auth import Auth
from engine.api.server import MAX_MESSAGE, end_holds, method_handlers, services
from engine.app import Engine


class _Call(grpc.Call):
    """A call that ended, as a grpc channel's ``with_call`` gives it: its code, details and trailing metadata."""

    def __init__(self, code: grpc.StatusCode = grpc.StatusCode.OK, details: str = "", trailing: tuple = ()):
        self._code, self._details, self._trailing = code, details, tuple(trailing)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self):
        return ()

    def trailing_metadata(self):
        return self._trailing

    def is_active(self) -> bool:
        return False

    def time_remaining(self):
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback) -> bool:
        return False


class LocalRpcError(grpc.RpcError, _Call):
    """What a call that failed raises, as a grpc channel's does: ``code()``, ``details()``."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        _Call.__init__(self, code, details)


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(code, details)
        self.code, self.details = code, details


class _Context:
    """The part of a servicer context the servicers use: the call's metadata, and abort."""

    def __init__(self, metadata, timeout: Optional[float] = None):
        self._metadata = tuple(metadata or ())
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self.trailing: tuple = ()

    def invocation_metadata(self):
        return self._metadata

    def time_remaining(self) -> Optional[float]:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def set_trailing_metadata(self, metadata) -> None:
        self.trailing = tuple(metadata)

    def abort(self, code, details):
        raise _Abort(code, details)


class _AsyncContext(_Context):
    async def abort(self, code, details):  # grpc.aio's is a coroutine
        raise _Abort(code, details)


class _Stream:
    """A server-streaming call's responses, read in the caller's thread; ``cancel()`` from any thread ends it
    (as closing a channel cancels its streams: the reader gets CANCELLED)."""

    def __init__(self, agen, to_response: Callable, forget: Callable):
        self._agen, self._to_response, self._forget = agen, to_response, forget
        self._loop = asyncio.new_event_loop()
        self._mu = threading.Lock()
        self._task: Optional[asyncio.Task] = None
        self._cancelled = self._done = False

    def __iter__(self):
        return self

    def __next__(self):
        with self._mu:
            if self._cancelled or self._done:
                self._finish()
                if self._cancelled:
                    raise LocalRpcError(grpc.StatusCode.CANCELLED, "Locally cancelled by application!")
                raise StopIteration
            self._task = self._loop.create_task(self._agen.__anext__())
        try:
            item = self._loop.run_until_complete(self._task)
        except StopAsyncIteration:
            self._done = True
            self._finish()
            raise StopIteration from None
        except asyncio.CancelledError:
            self._finish()
            raise LocalRpcError(grpc.StatusCode.CANCELLED, "Locally cancelled by application!") from None
        except _Abort as e:
            self._done = True
            self._finish()
            raise LocalRpcError(e.code, e.details) from None
        finally:
            with self._mu:
                self._task = None
        return self._to_response(item)

    def cancel(self) -> None:
        with self._mu:
            self._cancelled = True
            if self._task is not None:
                try:
                    self._loop.call_soon_threadsafe(self._task.cancel)
                except RuntimeError:  # its loop closed meanwhile: the stream is over
                    pass

    def _finish(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._loop.run_until_complete(self._agen.aclose())  # the servicer's finally blocks run
        except (Exception, asyncio.CancelledError):  # noqa: BLE001 - the stream is over either way
            pass
        self._loop.close()
        self._forget(self)


def _sized(data: bytes) -> bytes:
    """gRPC's default limit on a received message, on both sides (the server's MAX_MESSAGE, a client's 4 MiB)."""
    if len(data) > MAX_MESSAGE:
        raise LocalRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"Received message larger than max ({len(data)} vs. {MAX_MESSAGE})")
    return data


class LocalChannel:
    """A grpc.Channel (the parts the generated stubs use) over ``engine``'s servicers in this process; every call
    carries ``token`` as its bearer token, as dsjobs/client.py's channels do."""

    def __init__(self, engine: Engine, auth: Auth, token: str, max_workers: int = 8):
        self.auth = auth
        self._bearer = ("authorization", f"Bearer {token}")
        self._methods: dict[str, grpc.RpcMethodHandler] = {}
        self._services = services(engine, auth, max_workers)
        for servicer, service in self._services:
            for name, handler in method_handlers(servicer, service).items():
                self._methods[f"/{service.full_name}/{name}"] = handler
        self._pool = futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="dsjobs-api")
        self._streams: set[_Stream] = set()
        self._mu = threading.Lock()
        self._closed = False

    def _metadata(self, metadata) -> tuple:
        return tuple(m for m in (metadata or ()) if m[0] != "authorization") + (self._bearer,)

    def _handler(self, method: str, metadata) -> grpc.RpcMethodHandler:
        if self._closed:
            raise LocalRpcError(grpc.StatusCode.CANCELLED, "the channel is closed")
        handler = self._methods.get(method)
        if handler is None:
            raise LocalRpcError(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        if self.auth.required and self.auth.user(metadata) is None:
            raise LocalRpcError(grpc.StatusCode.UNAUTHENTICATED, self.auth.denied())
        return handler

    def _prepare(self, method: str, metadata, request, serializer):
        """The call's metadata with the token, its handler (after the server's checks), and the request as the
        server's deserializer parses it from the bytes a socket would carry."""
        metadata = self._metadata(metadata)
        handler = self._handler(method, metadata)
        return metadata, handler, handler.request_deserializer(_sized(serializer(request)))

    def unary_unary(self, method: str, request_serializer=None, response_deserializer=None, **_):
        channel = self

        class Unary:
            def with_call(self, request, timeout=None, metadata=None, **__):
                metadata, handler, parsed = channel._prepare(method, metadata, request, request_serializer)
                context = _Context(metadata, timeout)

                def run():
                    try:
                        return handler.response_serializer(handler.unary_unary(parsed, context))
                    except _Abort as e:
                        raise LocalRpcError(e.code, e.details) from None
                try:
                    answer = channel._pool.submit(run).result(timeout)
                except futures.TimeoutError:
                    raise LocalRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
                return response_deserializer(_sized(answer)), _Call(trailing=context.trailing)

            def __call__(self, request, timeout=None, metadata=None, **kw):
                return self.with_call(request, timeout, metadata, **kw)[0]
        return Unary()

    def unary_stream(self, method: str, request_serializer=None, response_deserializer=None, **_):
        def call(request, timeout=None, metadata=None, **__):
            metadata, handler, parsed = self._prepare(method, metadata, request, request_serializer)
            agen = handler.unary_stream(parsed, _AsyncContext(metadata))
            stream = _Stream(agen, lambda item: response_deserializer(_sized(handler.response_serializer(item))),
                             self._forget)
            with self._mu:
                self._streams.add(stream)
            return stream
        return call

    def _forget(self, stream: _Stream) -> None:
        with self._mu:
            self._streams.discard(stream)

    def close(self) -> None:
        """Cancels the streams still open (their readers get CANCELLED); the pool's threads end with the calls they
        run (not waited for, as the server's stop does not wait for its pool)."""
        with self._mu:
            self._closed = True
            streams = list(self._streams)
        for s in streams:
            s.cancel()
        end_holds(self._services)
        self._pool.shutdown(wait=False)

    def subscribe(self, callback, try_to_connect=False):
        callback(grpc.ChannelConnectivity.READY)

    def unsubscribe(self, callback):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
