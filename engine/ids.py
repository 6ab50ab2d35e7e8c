"""Identifiers: how the engine makes them, and the checks every id from outside passes before it is used.

An id that reaches a path (a project's disk, its secrets, a job's run dir) has been checked here first, so no id
can form a path outside its directory. Project ids that an older engine accepted stay readable: a project already
in the store is looked up by its stored id, never by a path built from a new one.
"""
from __future__ import annotations

import re
import secrets
from typing import Callable

from engine.errors import InvalidArgument

ALPHABET = "0123456789abcdefghijklmnopqrstuv"
PROJECT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# Environment variable names plus '-' (the cloud's own example reads `printenv MY-SECRET`).
SECRET_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,127}")
_MADE = {prefix: re.compile(prefix + "[0-9a-v]{18}") for prefix in ("ds", "op", "bt")}
WHAT = {"ds": "job", "op": "operation", "bt": "resource"}


def new_id(prefix: str) -> str:
    """20 characters of [0-9a-v], like the cloud's resource ids: 5 random bits a character, from one read of the
    system's random source (a choice per character was ~50 of them, 3 % of a no-op job's engine CPU)."""
    n = 20 - len(prefix)
    bits = int.from_bytes(secrets.token_bytes((5 * n + 7) // 8), "big")
    return prefix + "".join(ALPHABET[(bits >> (5 * i)) & 31] for i in range(n))


def _shown(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:80] + "...")


def check_made(field: str, value: str, prefix: str) -> str:
    """A job (ds...), operation (op...) or resource (bt...) id as this engine makes them."""
    if not value:
        raise InvalidArgument(f"{field} is empty")
    if not _MADE[prefix].fullmatch(value):
        raise InvalidArgument(f"{field} {_shown(value)} is not a {WHAT[prefix]} id "
                              f"({prefix} and 18 characters of [0-9a-v])")
    return value


def check_project(field: str, value: str, known: Callable[[str], bool] = lambda _: False) -> str:
    """A project id: [A-Za-z0-9][A-Za-z0-9_-]{0,63}, or one an older engine stored (``known``), for reading."""
    if not value:
        raise InvalidArgument(f"{field} is empty")
    if PROJECT_RE.fullmatch(value) or known(value):
        return value
    raise InvalidArgument(f"{field} {_shown(value)} is not a project id ([A-Za-z0-9][A-Za-z0-9_-], up to 64 characters)")


def path_safe(value: str) -> bool:
    """True when ``value`` can be one path component: what a legacy id must be before a path is made of it."""
    return bool(value) and value not in (".", "..") and "/" not in value and "\x00" not in value


def check_secret_name(value: str) -> str:
    if not SECRET_RE.fullmatch(value or ""):
        raise InvalidArgument(f"secret name {_shown(value)} is not valid (an environment variable name, '-' allowed: "
                              "[A-Za-z_][A-Za-z0-9_-], up to 128 characters)")
    return value
