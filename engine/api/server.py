"""The gRPC server: ProjectJobService and OperationService on one port."""
from __future__ import annotations

from concurrent import futures
from typing import Optional

import grpc

from engine.api.auth import Auth, AuthInterceptor, local_user
from engine.api.pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2_grpc as sgrpc
from engine.api.pb.yandex.cloud.operation import operation_service_pb2_grpc as ogrpc
from engine.api.pb.yandex.cloud.datasphere.v2 import project_service_pb2_grpc as pgrpc
from engine.api.servicers import OperationServicer, ProjectJobServicer, ProjectServicer
from engine.app import Engine

MAX_MESSAGE = 4 * 1024 * 1024


LOOPBACK = ("127.", "localhost:", "[::1]:")


def start_grpc(engine: Engine, listen: str, *, max_workers: int = 64, max_concurrent_rpcs: int = 256,
               tokens: Optional[dict[str, str]] = None, no_auth: bool = False,
               allow_insecure_remote: bool = False) -> tuple[grpc.Server, int]:
    """Start serving on ``listen`` (host:port, port 0 for any); returns the server and the bound port.

    Every call needs a bearer token: the engine's own (DATA_DIR/token) or one of ``tokens`` (token -> name).
    ``no_auth`` turns that off, on loopback only unless ``allow_insecure_remote``."""
    if no_auth:
        if not listen.startswith(LOOPBACK) and not allow_insecure_remote:
            raise PermissionError(f"refusing to listen on {listen} without a token: anyone who reaches it could run "
                                  "commands as you. Drop --no-auth, or add --insecure-listen to force it.")
        auth = Auth(required=False)
    else:
        auth = Auth({engine.token: local_user(), **(tokens or {})}, token_file=str(engine.token_path))
    server = grpc.server(
        interceptors=[AuthInterceptor(auth)] if auth.required else [],
        thread_pool=futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="dsjobs-grpc"),
        maximum_concurrent_rpcs=max_concurrent_rpcs,
        options=[("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.so_reuseport", 0)],
    )
    sgrpc.add_ProjectJobServiceServicer_to_server(ProjectJobServicer(engine.jobs, auth), server)
    ogrpc.add_OperationServiceServicer_to_server(OperationServicer(engine.jobs), server)
    pgrpc.add_ProjectServiceServicer_to_server(ProjectServicer(engine.jobs), server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    server.start()
    return server, port
