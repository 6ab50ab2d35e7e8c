"""How a client finds a running dsjobs engine and its token: standard library only, since the official client's
hook (installed into that client's own environment) uses this very file too.

A serving engine leaves one descriptor per endpoint in a per-user runtime directory (0700; files 0600): endpoint,
files URL, UI URL, data dir and the path of the token file, never the token itself. It is removed at a clean stop;
one left by a killed engine is ignored (its process is gone) and cleaned up by the next reader.

Every client looks for the token in one order: ``$DSJOBS_TOKEN``, an explicit ``--token-file``, the descriptor of
the endpoint, the default data dir's token. A token found (the last two) is only ever sent to a loopback endpoint
whose listening socket belongs to the very engine process that token is for (the descriptor's pid, or the pid in
the data dir's lock): a port that someone else holds (another user, a job, a container on the host network, while
the engine restarts) gets no token, nor does a remote host unless the token was given explicitly.
"""
from __future__ import annotations

import json
import os
import stat
from typing import Optional

DEFAULT_ENDPOINT = "127.0.0.1:9098"
TOKEN_FILE = "token"
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]", "0.0.0.0", "::", "[::]", ""}


def default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "dsjobs")


def runtime_dir() -> str:
    """$XDG_RUNTIME_DIR/dsjobs when the session has one, else ~/.local/state/dsjobs/run."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        return os.path.join(base, "dsjobs")
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "dsjobs", "run")


def _private_dir(path: str, create: bool) -> bool:
    """True when ``path`` is a directory of ours that nobody else can write or read."""
    if create:
        os.makedirs(path, mode=0o700, exist_ok=True)
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        return False
    if st.st_mode & 0o077:
        if not create:
            return False
        os.chmod(path, 0o700)
    return True


def split_endpoint(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    try:
        return host, int(port)
    except ValueError:
        return endpoint, 0


def _same(a: str, b: str) -> bool:
    (ha, pa), (hb, pb) = split_endpoint(a), split_endpoint(b)
    return pa == pb and (ha == hb or (ha in _LOOPBACK and hb in _LOOPBACK))


def _start_time(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def write_descriptor(endpoint: str, *, files_url: str, data_dir: str, token_path: str = "",
                     ui_url: str = "", tls: bool = False, ca_file: str = "") -> str:
    """Record that this process serves ``endpoint``; returns the descriptor's path (remove it at a clean stop).
    ``tls``: the endpoint serves TLS (`dsjobs serve --tls-cert`); ``ca_file``: the CA its clients check the
    certificate against ("": the system's roots)."""
    d = runtime_dir()
    _private_dir(d, create=True)
    _, port = split_endpoint(endpoint)
    path = os.path.join(d, f"engine-{port}.json")
    body = json.dumps({"endpoint": endpoint, "files_url": files_url, "ui_url": ui_url, "data_dir": data_dir,
                       "token_path": token_path, "tls": bool(tls), "ca_file": ca_file if tls else "",
                       "pid": os.getpid(), "start_time": _start_time(os.getpid())})
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(body)
    os.replace(tmp, path)
    return path


def remove_descriptor(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def descriptors() -> list[dict]:
    """The descriptors of engines that are still running (stale ones are removed)."""
    d = runtime_dir()
    if not _private_dir(d, create=False):
        return []
    out = []
    for name in sorted(os.listdir(d)):
        if not (name.startswith("engine-") and name.endswith(".json")):
            continue
        path = os.path.join(d, name)
        try:
            with open(path, "rb") as f:
                desc = json.loads(f.read())
        except (OSError, ValueError):
            continue
        pid = desc.get("pid")
        if not isinstance(pid, int) or _start_time(pid) is None or _start_time(pid) != desc.get("start_time"):
            remove_descriptor(path)  # its engine is gone
            continue
        desc["path"] = path
        out.append(desc)
    return out


def transport(endpoint: str) -> tuple[bool, Optional[bytes]]:
    """How a client reaches ``endpoint``, as its engine's descriptor says: (TLS, the CA's PEM or None for the
    system's roots); (False, None) for an engine without a descriptor or without TLS."""
    desc = find_descriptor(endpoint) or {}
    if not desc.get("tls"):
        return False, None
    ca = desc.get("ca_file") or ""
    if not ca:
        return True, None
    with open(ca, "rb") as f:
        return True, f.read()


def find_descriptor(endpoint: str) -> Optional[dict]:
    for desc in descriptors():
        if _same(desc.get("endpoint", ""), endpoint):
            return desc
    return None


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes that listen on ``port`` on this machine (any address), from /proc/net/tcp{,6}."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        out.add(fields[9])
        except (OSError, ValueError, IndexError):
            continue
    return out


def serves(pid: int, endpoint: str) -> bool:
    """Whether process ``pid`` holds the socket that listens on ``endpoint``'s port."""
    host, port = split_endpoint(endpoint)
    if host not in _LOOPBACK or not port:
        return False
    inodes = _listening_inodes(port)
    if not inodes:
        return False
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def _lock_pid(data_dir: str) -> Optional[int]:
    try:
        with open(os.path.join(data_dir, "engine.lock")) as f:
            return int(f.read().strip() or "0") or None
    except (OSError, ValueError):
        return None


def _read_token(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            token = f.read().strip()
    except OSError:
        return None
    return token or None


def find_token(endpoint: str, token_file: Optional[str] = None) -> Optional[str]:
    """The token for ``endpoint``: $DSJOBS_TOKEN, ``token_file``, the endpoint's descriptor, the default data dir
    (these two only when the engine they belong to is the one listening there)."""
    if os.environ.get("DSJOBS_TOKEN"):
        return os.environ["DSJOBS_TOKEN"]
    if token_file:
        token = _read_token(token_file)
        if token is None:
            raise OSError(f"cannot read the token file {token_file}")
        return token
    desc = find_descriptor(endpoint)
    if desc and desc.get("token_path") and serves(desc["pid"], endpoint):
        token = _read_token(desc["token_path"])
        if token:
            return token
    data_dir = default_data_dir()
    pid = _lock_pid(data_dir)
    if pid is not None and serves(pid, endpoint):
        return _read_token(os.path.join(data_dir, TOKEN_FILE))
    return None


def files_url(endpoint: str) -> Optional[str]:
    desc = find_descriptor(endpoint)
    return desc.get("files_url") if desc else None
