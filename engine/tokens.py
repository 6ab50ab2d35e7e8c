"""The owner's token: DATA_DIR/token, made at the engine's first start, readable by its owner only."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from engine.errors import FailedPrecondition

TOKEN_FILE = "token"


def owner_token(data_dir: Path) -> tuple[str, Path]:
    """The data dir's token, created on first use (0600) and kept across restarts; returns (token, path)."""
    path = Path(data_dir) / TOKEN_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        fd = None
    if fd is not None:
        with os.fdopen(fd) as f:
            st = os.fstat(f.fileno())
            if st.st_uid != os.geteuid():
                raise FailedPrecondition(f"{path} belongs to uid {st.st_uid}, not to this user: refusing it")
            os.fchmod(f.fileno(), 0o600)
            token = f.read().strip()
        if token:
            return token, path
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{TOKEN_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # first writer wins: two engines racing on one data dir end up with one token
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return path.read_text().strip(), path
