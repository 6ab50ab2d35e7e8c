"""The dsjobs agent: runs one attempt of a job on a node of a remote backend (a Ray cluster) and reports to the
engine over HTTP (engine/channel.py). Usage, as the backend's entrypoint::

    python -m runners.agent ENGINE_URL ATTEMPT_ID ONE_TIME_TOKEN

It is the local runner moved onto the node: the same workspace, Python env builder and cache, per-job supervisor
(signals, timeouts, subreaper, log journal) and output collection. It adds a node-local input cache checked by
sha256, a log shipper that resends from the last offset the engine acknowledged (the node's journal is the spool),
the engine's stop channel, and fencing: when the engine answers 410 Gone, the attempt was declared lost, so the
agent kills the job's whole tree and exits without reporting.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from engine.model import JobParameters, from_dict, to_dict
from runners.base import ExitResult, RunSpec
from runners.outputs import collect
from runners.process import ProcessExecutor
from runners import sandbox as sbx
from runners.fsops import read_regular, rmtree
from runners.supervisor import HEADER, SYSTEM, append_record, kill_marked
from runners.workspace import job_env, materialise, process_env, substitute

WATCHDOG = str(Path(__file__).with_name("container_watchdog.py"))
SHIP_INTERVAL_S = 0.2
SHIP_MAX = 4 << 20
ENGINE_OUTAGE_S = 600.0  # how long the agent keeps retrying while the engine is unreachable


class PrepareError(Exception):
    """The job cannot start on this node; ``code`` is the gRPC status it ends with."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


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


class Agent:
    def __init__(self, ch: Channel, spec: dict):
        self.ch = ch
        self.spec = spec
        self.job_id = spec["job_id"]
        self.params: JobParameters = from_dict(JobParameters, spec["params"])
        self.node_dir = Path(os.environ.get("DSJOBS_NODE_DIR") or spec["node_dir"])
        self.run_dir = self.node_dir / "runs" / spec["attempt"]
        self.work = self.run_dir / "work"
        self.journal = str(self.run_dir / "journal")
        self.progress = self.run_dir / "progress" / "job_progress.jsonl"
        self.executor = ProcessExecutor(standby=False)
        self.sandbox_mode = spec.get("sandbox", "none")  # what the engine runs local jobs with
        self.handle = None
        self.stop_req: Optional[dict] = None
        self.fenced: Optional[str] = None
        self.acked = 0
        self._done = threading.Event()
        self._mu = threading.Lock()

    # --- logs and progress go to the engine ------------------------------------------------------------------

    def system(self, msg: str) -> None:
        fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            append_record(fd, SYSTEM, (msg.rstrip("\n") + "\n").encode())
        finally:
            os.close(fd)

    def _ship_once(self) -> bool:
        """Send the journal's new whole records; True when everything written so far is acknowledged."""
        with open(self.journal, "rb") as f:
            f.seek(self.acked)
            data = f.read(SHIP_MAX + (1 << 17))
        end = 0
        while end + HEADER.size <= len(data) and end < SHIP_MAX:
            _, _, n = HEADER.unpack_from(data, end)
            if end + HEADER.size + n > len(data):
                break
            end += HEADER.size + n
        if end == 0:
            return True
        _, r = self.ch.call("PUT", "journal", data[:end], query=f"offset={self.acked}")
        self.acked = int(r["received"])  # 200: moved on; 409: the engine has a different offset, resend from it
        return False

    def _ship_files(self, sent: dict) -> None:
        for path, verb, query in ((self.progress, "progress", ""),
                                  (self.run_dir / "docker_stats.tsv", "file", "name=docker_stats.tsv"),
                                  (self.run_dir / "env_build.log", "file", "name=env_build.log")):
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
            req = r.get("stop")
            if req and req != self.stop_req:
                with self._mu:
                    self.stop_req = req
                    if self.handle is not None:
                        self.executor.stop(self.handle, req["signal"], req["timeout"], req.get("reason", ""))
                if req["signal"] == signal.SIGKILL:
                    return
                time.sleep(0.2)

    def fence(self, why: str) -> None:
        """The engine gave up on this attempt: nothing of it may run on, and nothing more is reported."""
        with self._mu:
            if self.fenced is not None:
                return
            self.fenced = why
            if self.handle is not None:
                self.executor.stop(self.handle, signal.SIGKILL, 0.0, f"attempt fenced: {why}")
        kill_marked(self.job_id)
        self._done.set()

    # --- the run ----------------------------------------------------------------------------------------------

    def fetch(self, sha: str) -> str:
        """An input from the node's cache, downloaded by signed URL and checked against its sha256 first."""
        dest = self.node_dir / "blobs" / sha[:2] / sha
        if dest.exists():
            return str(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(self.spec["inputs"][sha], timeout=60) as r:
                while chunk := r.read(1 << 20):
                    h.update(chunk)
                    out.write(chunk)
            if h.hexdigest() != sha:
                raise ValueError(f"downloaded input has sha256 {h.hexdigest()}, expected {sha}")
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return str(dest)

    def put_blob(self, stream) -> tuple[str, int]:
        h, size = hashlib.sha256(), 0
        with tempfile.TemporaryFile(dir=self.run_dir) as tmp:
            while chunk := stream.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
                tmp.write(chunk)
            sha = h.hexdigest()
            self.ch.call("PUT", "blob", query=f"sha={sha}&size={size}", content_length=size, body_file=tmp,
                         timeout=300)
        return sha, size

    def python_env(self) -> Optional[Path]:
        pe = self.params.env.python_env
        if pe is None:
            return None
        from runners import pyenv  # imported only when needed: the agent's start-up is on every job's path
        s = self.spec
        try:
            interp = pyenv.pick(pe.python_version, tuple(s["python_interpreters"]))
            ispec = pyenv.install_spec(pe, s["pip_index_url"], tuple(s["pip_extra_index_urls"]))
        except pyenv.EnvError as e:
            raise PrepareError(str(e), e.code) from None
        cache = pyenv.EnvCache(self.node_dir / "envs", installer=s["env_installer"],
                               build_timeout_s=s["env_build_timeout_s"], size_limit_bytes=s["env_cache_limit_bytes"],
                               uv_cache=self.node_dir / "uv-cache",
                               confine=None if self.sandbox_mode == "none" else
                               sbx.confiner(s.get("bwrap", ""), sbx.hidden_paths(self.node_dir)))
        with open(self.progress, "a") as f:
            f.write(json.dumps({"progress": 0, "message": "building python environment"}) + "\n")
        with open(self.run_dir / "env_build.log", "a") as build_log:
            def log(line: str) -> None:
                build_log.write(line + "\n")
                build_log.flush()
                self.system(line)
            t = time.monotonic()
            try:
                base, built = cache.get(interp, ispec, log, project=self.spec.get("project_id", ""))
            except pyenv.EnvError as e:
                raise PrepareError(str(e), e.code) from None
            self.system(f"python environment {'built' if built else 'taken from the cache'} in "
                        f"{time.monotonic() - t:.2f}s on node {socket.gethostname()}: python {interp.full}, "
                        f"{len(ispec.requirements)} requirement(s)")
        self.layer_base, self.interp = base, interp
        return pyenv.job_layer(base, self.run_dir / "venv", interp)

    def prepare_container(self):
        """A Docker job on the node's Docker Engine: as the local Docker runner does it."""
        from runners import docker as rd  # imported only for Docker jobs (start-up time)
        d = self.spec["docker"]
        self.executor = rd.DockerExecutor()
        note = self.system
        try:
            rd.ensure_image(self.executor.dc, d["image"], d["username"], d["password"], note=note,
                            timeout_s=d["pull_timeout_s"])
        except rd.DockerError as e:
            raise PrepareError(str(e), e.code) from None
        progress = str(self.progress.parent)
        to_job = rd.job_path_mapper([(str(self.work), rd.JOB_DIR), (progress, rd.CONTAINER_PROGRESS)])
        layout = materialise(self.params, self.work, self.fetch, to_job_path=to_job)
        cpus, memory = rd.capped(d["cpus"], d["memory_bytes"], note, d["instance"])
        binds = {str(self.work): {"bind": rd.JOB_DIR, "mode": "rw"}, progress: {"bind": rd.CONTAINER_PROGRESS,
                                                                              "mode": "rw"}}
        owner = os.stat(self.node_dir)
        user = None if d["run_as_root"] or owner.st_uid == 0 else f"{owner.st_uid}:{owner.st_gid}"
        container = rd.ContainerSpec(image=d["image"], job_id=self.job_id, project_id="", binds=binds, user=user,
                                     network=rd.job_network(self.executor.dc, d["network"]).name, cpus=cpus,
                                     memory_bytes=memory, secrets=rd.secrets_script(self.spec["secrets"], note))
        env = job_env(self.params.env.vars, to_job(str(self.progress)), self.job_id)
        return layout, env, container

    def _watch_container(self) -> subprocess.Popen:
        """A process that kills the container if this agent dies (Docker, not the agent, owns the container)."""
        return subprocess.Popen([sys.executable, "-I", "-S", WATCHDOG, self.handle.container_id],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True)

    def prepare(self):
        if self.spec.get("docker"):
            return self.prepare_container()
        layout = materialise(self.params, self.work, self.fetch)
        venv = self.python_env()
        bins = []
        if venv is not None:
            bins = [str(venv / "bin"), str(self.layer_base / "bin")]
        self.box = None
        if self.sandbox_mode != "none":
            from runners import pyenv
            ro = [] if venv is None else [str(self.layer_base), *pyenv.layer_extras(venv)]
            interp = self.interp if venv is not None else pyenv.default_interpreter()
            self.box = sbx.job_sandbox(str(self.run_dir), str(self.work), rw=[str(self.progress.parent)], ro=ro,
                                       rw_trees=[str(venv)] if venv is not None else [],
                                       hide=sbx.hidden_paths(self.node_dir), python=interp.path)
            bins += self.box.path
        env = process_env(self.work, bins, self.params.env.vars, str(self.progress), self.job_id,
                          venv=str(venv) if venv is not None else "", home=self.box.home if self.box else "")
        return layout, env, None

    def run(self) -> dict:
        self.system(f"attempt {self.spec['attempt']} on node {socket.gethostname()}: "
                    f"working directory {self.work}")
        try:
            layout, env, container = self.prepare()
        except PrepareError as e:
            return {"prepare_error": str(e), "code": e.code}
        except ValueError as e:
            return {"prepare_error": str(e), "code": "INVALID_ARGUMENT"}
        except OSError as e:
            return {"prepare_error": f"cannot prepare the job on the node: {e}", "code": "INTERNAL"}
        cmd = substitute(self.params.cmd, layout.vars)
        s = self.spec
        argv = ["bash", "-c", cmd]
        box = getattr(self, "box", None) if container is None else None
        if box is not None:
            try:
                argv = sbx.argv(sbx.check(s.get("bwrap", "")), box, argv)
            except sbx.SandboxUnavailable as e:
                return {"prepare_error": f"on node {socket.gethostname()}: {e}", "code": "FAILED_PRECONDITION"}
        spec = RunSpec(job_id=self.job_id, run_dir=str(self.run_dir), argv=argv, cwd=str(self.work),
                       secret_env={} if container is not None else dict(s["secrets"]), sandboxed=box is not None,
                       env=env, journal=self.journal, stdout=str(self.run_dir / "stdout.txt"),
                       stderr=str(self.run_dir / "stderr.txt"), log_limit_bytes=s["log_limit_bytes"],
                       max_duration_s=s["max_duration_s"], deadline_stop=s["deadline_stop"], owner_pid=os.getpid(),
                       container=container)
        with self._mu:
            if self.fenced is not None:
                raise Fenced(self.fenced)
            stop = self.stop_req
        if stop is not None:
            result = ExitResult(None, stopped=dict(stop, kind="cancel"))
        else:
            self.ch.call("POST", "state", json.dumps({"status": "EXECUTING"}).encode())
            self.system(f"running: {cmd}")
            with self._mu:
                self.handle = self.executor.start(spec)
                watchdog = self._watch_container() if container is not None else None
                if self.stop_req is not None:  # arrived between the check and the start
                    self.executor.stop(self.handle, self.stop_req["signal"], self.stop_req["timeout"],
                                       self.stop_req.get("reason", ""))
            result = self.executor.wait(self.handle)
            self.handle.done.set()
            if watchdog is not None:
                watchdog.communicate(b"done")
            self.executor.cleanup(self.handle)
        if self.fenced is not None:
            raise Fenced(self.fenced)
        self.ch.call("POST", "state", json.dumps({"status": "UPLOADING_OUTPUT"}).encode())
        got = collect(self.work, layout.outputs, self.put_blob, str(self.run_dir), note=self.system)
        return {"return_code": result.return_code, "signal": result.signal, "error": result.error,
                "stopped": result.stopped, "note": result.note,
                "files": [to_dict(f) for f in got.files], "errors": [to_dict(e) for e in got.errors]}


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
    agent = Agent(ch, r["spec"])
    agent.run_dir.mkdir(parents=True, exist_ok=True)
    agent.progress.parent.mkdir(exist_ok=True)
    open(agent.journal, "ab").close()
    # Ray's stop (the backstop) or the node going down: the job's tree goes with the agent.
    signal.signal(signal.SIGTERM, lambda *_: (agent.fence("the agent was stopped by the backend"), sys.exit(143)))
    threads = [threading.Thread(target=agent.shipper, daemon=True), threading.Thread(target=agent.stop_watcher,
                                                                                       daemon=True)]
    for t in threads:
        t.start()
    try:
        result = agent.run()
        agent._done.set()
        threads[0].join()
        agent.flush()
        agent.ch.call("PUT", "result", json.dumps(result).encode(), ok=(200,))
    except Fenced as e:
        agent.fence(str(e))
        print(f"dsjobs agent: attempt {attempt} fenced: {e}", file=sys.stderr)
        return 4
    finally:
        agent._done.set()
        rmtree(str(agent.run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
