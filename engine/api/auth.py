"""Bearer tokens on every call: the owner's token (DATA_DIR/token, made at first start) and named tokens.

Authentication is on unless explicitly turned off (``no_auth``, loopback only): another local user, a container
on the host network or a job that reaches the port cannot act without a token, and the token is only in a file
its owner can read.
"""
from __future__ import annotations

import getpass
import hmac
import os
from pathlib import Path
from typing import Optional


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


def local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


class Auth:
    """Who may call: holders of a token (the owner's, recorded as the local user's name, or a named one), or
    everyone when authentication is off (then every job is created by the local user)."""

    def __init__(self, tokens: Optional[dict[str, str]] = None, *, required: bool = True, token_file: str = ""):
        self.tokens = dict(tokens or {})
        self.required = required
        self.token_file = token_file
        self.owner = local_user()

    def user(self, metadata) -> Optional[str]:
        """The caller's name, or None when the call is not allowed."""
        if not self.required:
            return self.owner
        header = dict(metadata or ()).get("authorization", "")
        if not header.startswith("Bearer "):
            return None
        given = header[len("Bearer "):].strip().encode()
        found = None
        for tok, name in self.tokens.items():
            if hmac.compare_digest(tok.encode(), given):  # every token compared: no early exit to time
                found = name
        return found

    def denied(self) -> str:
        where = f" with the token from {self.token_file}" if self.token_file else ""
        return f"missing or invalid bearer token: send `authorization: Bearer <token>`{where}"
