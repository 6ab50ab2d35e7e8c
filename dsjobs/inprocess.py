"""`dsjobs run`'s client of the engine it embeds: the API called in this process (engine/api/local.py: the gRPC
server's own handlers and checks, no socket, no server threads). Uploads and downloads go over the engine's file
endpoint, as against a server."""
from __future__ import annotations

from dsjobs.client import Client
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2_grpc as sgrpc
from dsjobs_pb.yandex.cloud.operation import operation_service_pb2_grpc as ogrpc


class LocalClient(Client):
    """A Client whose calls go to ``engine``'s API in this process, with the engine's owner token."""

    def __init__(self, engine):
        from engine.api.local import LocalChannel
        from engine.api.server import owner_auth
        self.endpoint = "in-process"
        self.verify = True  # the file endpoint of an embedded engine is plain HTTP on loopback
        self.raw_channel = self.channel = LocalChannel(engine, owner_auth(engine), engine.token)
        self.jobs = sgrpc.ProjectJobServiceStub(self.channel)
        self.ops = ogrpc.OperationServiceStub(self.channel)
