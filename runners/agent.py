"""The dsjobs agent: runs one attempt of a job on a node of a remote backend (a Ray cluster) and reports to the
engine over HTTP (engine/channel.py). Usage, as the backend's entrypoint::

    python -m runners.agent ENGINE_URL ATTEMPT_ID ONE_TIME_TOKEN

It runs the node runner (runners/node.py), the same code as local jobs, behind an HTTP NodeIO: inputs come from a
node-local cache checked by sha256 (downloaded by signed URL), outputs go to the engine's blob store digest-checked,
and the start is reported over the channel. Around it: a log shipper that resends from the last offset the engine
acknowledged (the node's journal is the spool), the engine's stop channel, and fencing: when the engine answers
410 Gone, the attempt was declared lost, so the agent kills the job's whole tree and exits without reporting.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from runners import journal
from runners.fsops import read_regular, rmtree
from runners.node import Attempt, Machine, NodeIO
from runners.executors.process import ProcessExecutor
from runners.rundir import RunDir
from runners.spec import AttemptResult, AttemptSpec, StopRequest, from_plain, plain
from runners.executors.supervisor import kill_marked

SHIP_INTERVAL_S = 0.2
SHIP_MAX = 4 << 20
ENGINE_OUTAGE_S = 600.0  # how long the agent keeps retrying while the engine is unreachable


class Fenced(Exception):
    """The engine declared this attempt lost (410) or does not know it."""


class Channel:
    def __init__(self, base: str, attempt: str):
        self.base = base.rstrip("/") + f"/runner/{attempt}/"
        self.token = ""

    def call(self, method: str, verb: str, body: bytes | None = None, query: str = "", timeout: float = 30.0,
             ok=(200, 201, 204, 409), content_length: int | None = None, body_file=None) -> tuple[int, dict]:
        """Retries while the engine is unreachable or failing (5xx); raises Fenced on 410/404."""
        deadline = time.monotonic() + ENGINE_OUTAGE_S
        delay = 0.1
        while True:
            if body_file is not None:
                body_file.seek(0)
            req = urllib.request.Request(self.base + verb + (f"?{query}" if query else ""), method=method,
                                         data=body_file if body_file is not None else body)
            req.add_header("Authorization", f"Bearer {self.token}")
            if content_length is not None:
                req.add_header("Content-Length", str(content_length))
            try:
                with urllib.request.urlopen(req, timeout=timeout) as r:
                    raw = r.read()
                    return r.status, (json.loads(raw) if raw.strip() else {})
            except urllib.error.HTTPError as e:
                raw = e.read()
                if e.code in (404, 410):
                    raise Fenced(raw.decode(errors="replace")) from None
                if e.code in ok:
                    return e.code, json.loads(raw or b"{}")
                if e.code < 500:
                    raise RuntimeError(f"engine refused {method} {verb}: HTTP {e.code} {raw[:300]!r}") from None
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise Fenced(f"the engine was unreachable for {ENGINE_OUTAGE_S:g}s")
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


class HttpIO(NodeIO):
    """The node runner's side of the runner channel."""

    def __init__(self, agent: "Agent"):
        self.agent = agent

    def input_path(self, sha256: str) -> str:
        return self.agent.fetch(sha256)

    def store_output(self, stream) -> tuple[str, int]:
        return self.agent.put_blob(stream)

    def may_start(self) -> bool:
        return self.agent.fenced is None

    def started(self, instance: str, at: Optional[float] = None) -> None:
        # When it started here: the engine hears of it later (under load, seconds later), and the job's deadline
        # counts from the executor's start.
        at = time.time() if at is None else at
        self.agent.ch.call("POST", "state", json.dumps({"status": "EXECUTING", "at": at}).encode())

    def uploading(self) -> None:
        self.agent.ch.call("POST", "state", json.dumps({"status": "UPLOADING_OUTPUT"}).encode())


class Agent:
    def __init__(self, ch: Channel, spec: AttemptSpec, node_dir: str):
        self.ch = ch
        self.spec = spec
        self.job_id = spec.job_id
        self.node_dir = Path(os.environ.get("DSJOBS_NODE_DIR") or node_dir)
        self.run = RunDir(self.node_dir / "runs" / spec.attempt)
        self.attempt: Optional[Attempt] = None
        self.stop_req: Optional[StopRequest] = None
        self.fenced: Optional[str] = None
        self.acked = 0
        self._done = threading.Event()
        self._mu = threading.Lock()

    # --- logs and progress go to the engine ------------------------------------------------------------------

    def system(self, msg: str) -> None:
        journal.append_line(str(self.run.journal), journal.Stream.SYSTEM, msg)

    def _ship_once(self) -> bool:
        """Send the journal's new whole records; True when everything written so far is acknowledged."""
        with open(self.run.journal, "rb") as f:
            f.seek(self.acked)
            data = f.read(SHIP_MAX + (1 << 17))
        end = journal.whole(data, SHIP_MAX)
        if end == 0:
            return True
        _, r = self.ch.call("PUT", "journal", data[:end], query=f"offset={self.acked}")
        self.acked = int(r["received"])  # 200: moved on; 409: the engine has a different offset, resend from it
        return False

    def _ship_files(self, sent: dict) -> None:
        for path, verb, query in ((self.run.progress, "progress", ""),
                                  (self.run.docker_stats, "file", "name=docker_stats.tsv"),
                                  (self.run.env_build_log, "file", "name=env_build.log")):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            key = (st.st_size, st.st_mtime_ns)
            if sent.get(path) != key:
                # The progress file is the job's own: never followed as a symlink nor blocked on as a FIFO.
                body = read_regular(str(path), 1 << 20, tail=True)
                if body is not None:
                    self.ch.call("PUT", verb, body, query=query)
                sent[path] = key

    def shipper(self) -> None:
        sent: dict = {}
        while not self._done.is_set():
            try:
                while not self._ship_once():
                    pass
                self._ship_files(sent)
            except Fenced as e:
                self.fence(str(e))
                return
            except Exception as e:  # noqa: BLE001 - shipping is retried; the run goes on
                print(f"dsjobs agent: shipping logs: {e}", file=sys.stderr)
            self._done.wait(SHIP_INTERVAL_S)

    def flush(self) -> None:
        sent: dict = {}
        while not self._ship_once():
            pass
        self._ship_files(sent)

    # --- the engine's stop channel ----------------------------------------------------------------------------

    def stop_watcher(self) -> None:
        while not self._done.is_set():
            try:
                _, r = self.ch.call("GET", "stop", query="wait=10", timeout=40)
            except Fenced as e:
                self.fence(str(e))
                return
            req = StopRequest.from_dict(r["stop"]) if r.get("stop") else None
            if req is not None and req != self.stop_req:
                with self._mu:
                    self.stop_req = req
                    if self.attempt is not None:
                        self.attempt.stop(req)
                if req.forced:
                    return
                time.sleep(0.2)

    def fence(self, why: str) -> None:
        """The engine gave up on this attempt: nothing of it may run on, and nothing more is reported."""
        with self._mu:
            if self.fenced is not None:
                return
            self.fenced = why
            if self.attempt is not None:
                self.attempt.stop(StopRequest(9, 0.0, f"attempt fenced: {why}", kind="fenced"))
        kill_marked(self.job_id)
        self._done.set()

    # --- inputs and outputs -----------------------------------------------------------------------------------

    def fetch(self, sha: str) -> str:
        """An input from the node's cache, downloaded by signed URL and checked against its sha256 first."""
        dest = self.node_dir / "blobs" / sha[:2] / sha
        if dest.exists():
            return str(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        import tempfile
        h = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(self.spec.input_urls[sha], timeout=60) as r:
                while chunk := r.read(1 << 20):
                    h.update(chunk)
                    out.write(chunk)
            if h.hexdigest() != sha:
                raise OSError(f"downloaded input has sha256 {h.hexdigest()}, expected {sha}")
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return str(dest)

    def put_blob(self, stream) -> tuple[str, int]:
        import tempfile
        h, size = hashlib.sha256(), 0
        with tempfile.TemporaryFile(dir=self.run.path) as tmp:
            while chunk := stream.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
                tmp.write(chunk)
            sha = h.hexdigest()
            self.ch.call("PUT", "blob", query=f"sha={sha}&size={size}", content_length=size, body_file=tmp,
                         timeout=300)
        return sha, size

    # --- the run ----------------------------------------------------------------------------------------------

    def machine(self) -> Machine:
        """This node as the node runner sees it; Docker and the env builder only for the jobs that need them
        (the agent's start-up is on every Ray job's path)."""
        spec, envs, docker = self.spec, None, None
        if spec.python is not None:
            from runners import pyenv, sandbox as sbx
            es = spec.env
            envs = pyenv.EnvCache(self.node_dir / "envs", installer=es.installer, build_timeout_s=es.build_timeout_s,
                                  size_limit_bytes=es.cache_limit_bytes, uv_cache=self.node_dir / "uv-cache",
                                  confine=None if spec.sandbox == "none" else
                                  sbx.confiner(spec.bwrap, sbx.hidden_paths(self.node_dir)))
        if spec.image is not None:
            from runners.executors.docker import DockerExecutor
            docker = DockerExecutor()
        return Machine(root=self.node_dir, process=ProcessExecutor(forkserver=False), envs=envs, docker=docker,
                       run_as_root=bool(spec.image and spec.image.run_as_root), owner_pid=os.getpid(),
                       where=f" on node {socket.gethostname()}", checks_gpus=False)

    def execute(self) -> AttemptResult:
        self.system(f"attempt {self.spec.attempt} on node {socket.gethostname()}")
        attempt = Attempt(self.job_id, self.run, self.machine(), HttpIO(self), self.spec)
        with self._mu:
            if self.fenced is not None:
                raise Fenced(self.fenced)
            self.attempt = attempt
            if self.stop_req is not None:
                attempt.stop(self.stop_req)
        result = attempt.run()
        if self.fenced is not None:
            raise Fenced(self.fenced)
        return result


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    _, engine_url, attempt, token = argv
    ch = Channel(engine_url, attempt)
    ch.token = token
    try:
        _, r = ch.call("GET", "spec")
    except Fenced as e:
        print(f"dsjobs agent: the engine refused attempt {attempt}: {e}", file=sys.stderr)
        return 3
    ch.token = r["token"]
    agent = Agent(ch, from_plain(AttemptSpec, r["spec"]), r["node_dir"])
    agent.run.make()
    open(agent.run.journal, "ab").close()
    # Ray's stop (the backstop) or the node going down: the job's tree goes with the agent.
    signal.signal(signal.SIGTERM, lambda *_: (agent.fence("the agent was stopped by the backend"), sys.exit(143)))
    threads = [threading.Thread(target=agent.shipper, daemon=True), threading.Thread(target=agent.stop_watcher,
                                                                                       daemon=True)]
    for t in threads:
        t.start()
    try:
        result = agent.execute()
        agent._done.set()
        threads[0].join()
        agent.flush()
        agent.ch.call("PUT", "result", json.dumps(plain(result)).encode(), ok=(200,))
    except Fenced as e:
        agent.fence(str(e))
        print(f"dsjobs agent: attempt {attempt} fenced: {e}", file=sys.stderr)
        return 4
    finally:
        agent._done.set()
        rmtree(str(agent.run.path))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
