"""Bearer tokens: with any configured, every call needs `authorization: Bearer <token>` (UNAUTHENTICATED otherwise)."""
from __future__ import annotations

import hmac
from pathlib import Path
from typing import Optional

import grpc


def load_tokens(token: Optional[str], tokens_file: Optional[str]) -> dict[str, str]:
    """token -> name. A tokens file has one `name:token` per line (# comments allowed)."""
    out = {}
    if token:
        out[token] = "default"
    if tokens_file:
        for line in Path(tokens_file).read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, tok = line.partition(":")
                if not tok:
                    raise ValueError(f"{tokens_file}: a line must be name:token")
                out[tok.strip()] = name.strip()
    return out


class Auth:
    def __init__(self, tokens: dict[str, str]):
        self.tokens = tokens

    def user(self, metadata) -> Optional[str]:
        """The caller's name, or None when the call is not allowed."""
        if not self.tokens:
            return ""
        header = dict(metadata or ()).get("authorization", "")
        if not header.startswith("Bearer "):
            return None
        given = header[len("Bearer "):].encode()
        for tok, name in self.tokens.items():
            if hmac.compare_digest(tok.encode(), given):
                return name
        return None


class AuthInterceptor(grpc.ServerInterceptor):
    def __init__(self, auth: Auth):
        self.auth = auth

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
        self._deny_unary = grpc.unary_unary_rpc_method_handler(deny)
        self._deny_stream = grpc.unary_stream_rpc_method_handler(deny)

    def intercept_service(self, continuation, details):
        if self.auth.user(details.invocation_metadata) is not None:
            return continuation(details)
        handler = continuation(details)
        if handler is not None and handler.response_streaming:
            return self._deny_stream
        return self._deny_unary
