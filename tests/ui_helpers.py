"""What the job page's tests share: a `dsjobs serve` with its web UI, logging in, and a reader of the page's event
stream (server-sent events) that handles events of a megabyte as well as small ones."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Optional

import requests

from dsjobs.client import Client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UiServe:
    """A real `dsjobs serve` (its own process) with the web UI on a port of ours, restartable on the same ports and
    data dir (a browser reconnects to the same address)."""

    def __init__(self, data_dir: Path, *extra: str, env: Optional[dict] = None):
        self.data_dir, self.extra, self.env = Path(data_dir), list(extra), env
        self.ui_port = free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.lines: list[str] = []

    def start(self) -> "UiServe":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dsjobs", "serve", "--listen", "127.0.0.1:0", "--data-dir", str(self.data_dir),
             "--ui-listen", f"127.0.0.1:{self.ui_port}", "--log-level", "warning", *self.extra],
            stdout=subprocess.PIPE, text=True, env=self.env)
        self.lines = []
        while True:
            line = self.proc.stdout.readline()
            assert line, f"dsjobs serve exited: {self.lines}"
            self.lines.append(line)
            if "job pages on" in line or "web UI" in line:
                break
        self.endpoint = "127.0.0.1:" + re.search(r"on 127\.0\.0\.1:(\d+)", self.lines[0]).group(1)
        self.url = re.search(r"job pages on (http://\S+?)/? ", self.lines[-1]).group(1)
        self.token = (self.data_dir / "token").read_text().strip()
        return self

    def client(self) -> Client:
        return Client(self.endpoint, token=self.token)

    def session(self) -> requests.Session:
        """Logged in, as a browser is after opening a page with ?token=."""
        s = requests.Session()
        r = s.get(f"{self.url}/?token={self.token}", allow_redirects=False, timeout=10)
        assert r.status_code == 200 and s.cookies.get(f"dsjobs-ui-{self.ui_port}"), r.text
        return s

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def peak_rss_kib(self) -> int:
        """The server process's peak resident memory (VmHWM) so far."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            return int(next(line for line in f if line.startswith("VmHWM:")).split()[1])

    def reset_peak_rss(self) -> None:
        """Start VmHWM afresh from the current RSS (Linux: writing 5 to clear_refs)."""
        with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
            f.write("5")


class Event:
    __slots__ = ("name", "id", "data")

    def __init__(self, name: str, ident: Optional[str], data: str):
        self.name, self.id, self.data = name, ident, data

    def json(self):
        return json.loads(self.data)

    def __repr__(self) -> str:
        return f"Event({self.name}, id={self.id}, {self.data[:80]!r})"


def events(session: requests.Session, url: str, *, last_id: Optional[str] = None, timeout: float = 60,
           headers: Optional[dict] = None) -> Iterator[Event]:
    """The events of one connection to ``url``, until the server closes it. Raises for a non-200 answer."""
    h = {"Accept": "text/event-stream", **(headers or {})}
    if last_id is not None:
        h["Last-Event-ID"] = last_id
    with session.get(url, headers=h, stream=True, timeout=timeout) as r:
        if r.status_code != 200:
            raise requests.HTTPError(f"{r.status_code}: {r.text[:300]}", response=r)
        assert r.headers["Content-Type"].startswith("text/event-stream")
        buf = b""
        for chunk in r.iter_content(1 << 20):
            buf += chunk
            while True:
                end = buf.find(b"\n\n")
                if end < 0:
                    break
                block, buf = buf[:end], buf[end + 2:]
                name, ident, data = "message", None, []
                for line in block.split(b"\n"):
                    field, _, value = line.partition(b":")
                    value = value[1:] if value.startswith(b" ") else value
                    if field == b"event":
                        name = value.decode()
                    elif field == b"id":
                        ident = value.decode()
                    elif field == b"data":
                        data.append(value.decode())
                if data or ident is not None:
                    yield Event(name, ident, "\n".join(data))


def stdout_lines(evs: list[Event]) -> list[str]:
    out = "".join(text for e in evs if e.name == "log" for s, _, text in e.json()["r"] if s == 1)
    return out.splitlines()


def env_without_dsjobs() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith(("DSJOBS_", "SERVER_ENV", "YC_"))}
