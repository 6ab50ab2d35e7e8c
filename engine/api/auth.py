"""Bearer tokens on every call: the owner's token (DATA_DIR/token, made at first start) and named tokens.

Authentication is on unless explicitly turned off (``no_auth``, loopback only): another local user, a container
on the host network or a job that reaches the port cannot act without a token, and the token is only in a file
its owner can read.
"""
from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Optional


def load_tokens(token: Optional[str], tokens_file: Optional[str]) -> dict[str, str]:
    """token -> name (what jobs created with it carry in created_by_id). A token given alone (--token,
    --token-file, $DSJOBS_TOKEN) is the owner's, named as the local user; a tokens file has one `name:token` per
    line (# comments allowed)."""
    out = {}
    if token:
        out[token] = local_user()
    if tokens_file:
        for n, line in enumerate(Path(tokens_file).read_text().splitlines(), 1):
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, tok = line.partition(":")
                if not tok.strip() or not name.strip():
                    raise ValueError(f"{tokens_file}, line {n}: a line must be name:token, both non-empty")
                out[tok.strip()] = name.strip()
    return out


def local_user() -> str:
    """The name of the user the engine runs as: its effective uid's, never $USER or $LOGNAME (which say who
    started the shell, and anyone can set)."""
    try:
        import pwd
        return pwd.getpwuid(os.geteuid()).pw_name
    except (KeyError, ImportError):
        return str(os.geteuid())


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
