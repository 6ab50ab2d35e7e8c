"""The owner's token: DATA_DIR/token, made at the engine's first start, readable by its owner only."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

TOKEN_FILE = "token"


def owner_token(data_dir: Path) -> tuple[str, Path]:
    """The data dir's token, created on first use (0600) and kept across restarts; returns (token, path)."""
    path = Path(data_dir) / TOKEN_FILE
    try:
        token = path.read_text().strip()
        if token:
            os.chmod(path, 0o600)
            return token, path
    except FileNotFoundError:
        pass
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
