"""The gRPC server: ProjectJobService, OperationService and ProjectService on one port.

It is an asyncio server (grpc.aio) in a thread of its own: unary calls run on a pool of threads (the servicers are
plain functions over the job service), while log streams are coroutines, so that hundreds of clients following
logs (execute, attach, the job page) hold no thread and Get, List and Cancel keep answering.
"""
from __future__ import annotations

import asyncio
import threading
from concurrent import futures
from typing import Optional

import grpc
from google.protobuf import message_factory

from engine.api.auth import Auth, local_user
from engine.api.errors import Malformed
from dsjobs_pb.yandex.cloud.datasphere.v2 import project_service_pb2
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2
from dsjobs_pb.yandex.cloud.operation import operation_service_pb2
from engine.api.servicers import OperationServicer, ProjectJobServicer, ProjectServicer
from engine.app import Engine

MAX_MESSAGE = 4 * 1024 * 1024
LOOPBACK = ("127.", "localhost:", "[::1]:")


def _safe_parser(cls):
    """A request deserializer that hands a handler ``Malformed`` instead of failing (grpc would answer INTERNAL)."""
    def parse(data: bytes):
        try:
            return cls.FromString(data)
        except Exception as e:  # noqa: BLE001 - DecodeError, and anything a hostile byte string provokes
            return Malformed(cls.DESCRIPTOR.full_name, str(e) or type(e).__name__)
    return parse


def method_handlers(servicer, service) -> dict[str, grpc.RpcMethodHandler]:
    """The method handlers of ``service`` (a ServiceDescriptor) over ``servicer``, built from the descriptor, by
    method name: what the server serves, and what engine/api/local.py calls in-process."""
    out = {}
    for m in service.methods:
        req = message_factory.GetMessageClass(m.input_type)
        resp = message_factory.GetMessageClass(m.output_type)
        make = grpc.unary_stream_rpc_method_handler if m.server_streaming else grpc.unary_unary_rpc_method_handler
        out[m.name] = make(getattr(servicer, m.name), request_deserializer=_safe_parser(req),
                           response_serializer=resp.SerializeToString)
    return out


def services(engine: Engine, auth: Auth, threads: int) -> list[tuple[object, object]]:
    """(servicer, ServiceDescriptor) of every service the API has, served by ``threads`` threads (a quarter of
    them at most hold GetOperations)."""
    return [(ProjectJobServicer(engine.jobs, auth), project_job_service_pb2.DESCRIPTOR.services_by_name[
                "ProjectJobService"]),
            (OperationServicer(engine.jobs, threads // 4), operation_service_pb2.DESCRIPTOR.services_by_name[
                "OperationService"]),
            (ProjectServicer(engine.jobs), project_service_pb2.DESCRIPTOR.services_by_name["ProjectService"])]


def end_holds(served: list) -> None:
    """The held GetOperations of these services (services()) answer now, and later ones at once: whoever serves
    them is stopping, and does not wait for them."""
    for servicer, _ in served:
        if isinstance(servicer, OperationServicer):
            servicer.polled.end()


def owner_auth(engine: Engine, tokens: Optional[dict[str, str]] = None) -> Auth:
    """The engine's own token (DATA_DIR/token, named as the local user) and ``tokens`` (token -> name)."""
    return Auth({engine.token: local_user(), **(tokens or {})}, token_file=str(engine.token_path))


class _AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, auth: Auth):
        self.auth = auth
        message = auth.denied()

        async def deny(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        async def deny_stream(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
            yield  # an async generator, as a streaming handler must be

        self._deny = grpc.unary_unary_rpc_method_handler(deny)
        self._deny_stream = grpc.unary_stream_rpc_method_handler(deny_stream)

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if self.auth.user(details.invocation_metadata) is not None:
            return handler
        return self._deny_stream if handler is not None and handler.response_streaming else self._deny


class GrpcServer:
    """The running server; ``stop(grace)`` waits until it has stopped (``.wait()`` on the result, for callers
    written against grpc.Server)."""

    def __init__(self, engine: Engine, listen: str, auth: Auth, *, max_workers: int, max_concurrent_rpcs: int,
                 tls: Optional[tuple[bytes, bytes]] = None):
        self._loop = asyncio.new_event_loop()
        self.services = services(engine, auth, max_workers)
        self._pool = futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="dsjobs-grpc")
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None
        self.port = 0
        self.auth = auth  # who may call: the job pages take the same tokens (engine/ui/auth.py)

        async def serve():
            self._server = grpc.aio.server(
                migration_thread_pool=self._pool,
                interceptors=[_AuthInterceptor(auth)] if auth.required else [],
                maximum_concurrent_rpcs=max_concurrent_rpcs,
                options=[("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.so_reuseport", 0)])
            for servicer, service in self.services:
                self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
                    service.full_name, method_handlers(servicer, service)),))
            if tls is not None:  # (cert PEM, key PEM)
                creds = grpc.ssl_server_credentials([(tls[1], tls[0])])
                self.port = self._server.add_secure_port(listen, creds)
            else:
                self.port = self._server.add_insecure_port(listen)
            if self.port == 0:
                raise OSError(f"cannot listen on {listen}")
            await self._server.start()

        def run():
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(serve())
            except BaseException as e:  # noqa: BLE001 - handed to the starting thread
                self._error = e
                self._ready.set()
                return
            self._ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="dsjobs-grpc-loop", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def stop(self, grace: Optional[float] = None) -> "GrpcServer":
        end_holds(self.services)
        if self._thread.is_alive():
            fut = asyncio.run_coroutine_threadsafe(self._server.stop(grace), self._loop)
            try:
                fut.result((grace or 0) + 10)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(10)
                self._pool.shutdown(wait=False)
        return self

    def wait(self, timeout: Optional[float] = None) -> bool:
        return True


def start_grpc(engine: Engine, listen: str, *, max_workers: int = 64, max_concurrent_rpcs: int = 4096,
               tokens: Optional[dict[str, str]] = None, no_auth: bool = False,
               allow_insecure_remote: bool = False, tls: Optional[tuple[str, str]] = None) -> tuple[GrpcServer, int]:
    """Start serving on ``listen`` (host:port, port 0 for any); returns the server and the bound port.

    Every call needs a bearer token: the engine's own (DATA_DIR/token) or one of ``tokens`` (token -> name).
    ``no_auth`` turns that off, on loopback only unless ``allow_insecure_remote``. ``tls``: (cert file, key
    file) to serve TLS."""
    if no_auth:
        if not listen.startswith(LOOPBACK) and not allow_insecure_remote:
            raise PermissionError(f"refusing to listen on {listen} without a token: anyone who reaches it could run "
                                  "commands as you. Drop --no-auth, or add --insecure-listen to force it.")
        auth = Auth(required=False)
    else:
        auth = owner_auth(engine, tokens)
    pem = None
    if tls is not None:  # (cert file, key file)
        with open(tls[0], "rb") as c, open(tls[1], "rb") as k:
            pem = (c.read(), k.read())
    server = GrpcServer(engine, listen, auth, max_workers=max_workers, max_concurrent_rpcs=max_concurrent_rpcs,
                        tls=pem)
    return server, server.port
