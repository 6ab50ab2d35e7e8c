"""A real two-node Ray cluster on loopback for the ray backend's tests: a head shaped and labelled as c1.4 and a
second node shaped and labelled as g1.1 (its GPU is declared; Ray's resources are logical), with token auth on."""
from __future__ import annotations

import json
import os
import secrets
import signal
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

GIB = 1 << 30
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    """A free port below the kernel's ephemeral range: an engine restarted on it gets it back, since no other
    test's connection or port-0 socket is given it meanwhile (one was, between a kill -9 and the restart)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below the ephemeral range")


def pids_where(match) -> list[int]:
    """Processes whose argv (a list of bytes) ``match`` accepts."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0] and match(argv):
            out.append(int(pid))
    return out


class RayCluster:
    live: "set[RayCluster]" = set()  # clusters of this session (tests/conftest.py settles them before other tests)

    def __init__(self, root: Path):
        self.root = root
        self.token = secrets.token_hex(16)
        self.gcs_port, self.dash_port = free_port(), free_port()
        self.address = f"http://127.0.0.1:{self.dash_port}"
        self.env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, RAY_USAGE_STATS_ENABLED="0",
                        # A killed node is found dead in ~3 s rather than Ray's 15 (5 failed checks 3 s apart); a
                        # check still waits 10 s for an answer, so a node slow under load is not taken for dead.
                        RAY_health_check_period_ms="1000", RAY_health_check_failure_threshold="3")
        self.head_id = self.worker_id = ""
        RayCluster.live.add(self)
        self._closing: list = []  # engines stopping beside the next test: (thread, test, attempt ids, errors)

    def _ray(self, *args, timeout=180) -> None:
        res = subprocess.run([RAY, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                             cwd=self.root)
        if res.returncode != 0:
            raise RuntimeError(f"ray {' '.join(args)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")

    def start_head(self) -> None:
        self._ray("start", "--head", "--port", str(self.gcs_port), "--node-ip-address", "127.0.0.1",
                  "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dash_port),
                  "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
                  "--num-cpus", "4", "--memory", str(32 * GIB), "--labels", "dsjobs-instance=c1.4",
                  "--disable-usage-stats")

    def start_worker(self) -> None:
        self._ray("start", "--address", f"127.0.0.1:{self.gcs_port}", "--node-ip-address", "127.0.0.1",
                  "--dashboard-agent-listen-port", str(free_port()), "--num-cpus", "8", "--num-gpus", "1",
                  "--memory", str(48 * GIB), "--labels", "dsjobs-instance=g1.1", "--disable-usage-stats")

    def api(self, path: str, method: str = "GET"):
        req = urllib.request.Request(self.address + path, method=method,
                                     headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def nodes(self) -> list[dict]:
        try:
            res = self.api("/api/v0/nodes?detail=1")["data"]["result"]["result"]
        except OSError:
            return []
        return [n for n in res if n["state"] == "ALIVE"]

    def wait_nodes(self, n: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive = self.nodes()
            if len(alive) == n:
                for node in alive:
                    kind = node["labels"].get("dsjobs-instance")
                    if kind == "c1.4":
                        self.head_id = node["node_id"]
                    elif kind == "g1.1":
                        self.worker_id = node["node_id"]
                return
            time.sleep(0.3)
        raise RuntimeError(f"the Ray cluster did not get {n} alive nodes in {timeout}s: {self.nodes()}")

    def start(self, tries: int = 3) -> "RayCluster":
        """Head, then the second node. Under the suite's first minute (every worker busy at once) a node's start
        can time out in Ray itself ("The current node timed out during startup"): the cluster is then killed and
        started again, whole, so no half-started node joins later."""
        for attempt in range(1, tries + 1):
            try:
                self.start_head()
                self.start_worker()
                self.wait_nodes(2)
                return self
            except (RuntimeError, subprocess.TimeoutExpired):
                self.stop()
                if attempt == tries:
                    raise
        return self

    def processes(self) -> list[int]:
        """This cluster's processes and only its: those working in its root (`ray start` runs there, and Ray's
        daemons and agents stay there) and all they started (workers, job drivers), wherever they work."""
        root, parents, mine = str(self.root), {}, set()
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    parents[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except (OSError, ValueError, IndexError):
                continue  # gone, or a zombie (no cwd): nothing to stop
            if cwd == root or cwd.startswith(root + "/"):
                mine.add(int(pid))
        while more := {p for p, parent in parents.items() if parent in mine and p not in mine}:
            mine |= more
        mine.discard(os.getpid())
        return sorted(mine)

    def stop(self, timeout: float = 30) -> None:
        """kill -9 of this cluster's processes, as `ray stop --force` does to every Ray process on the machine:
        another test run's cluster (an xdist worker's, another checkout's) is left alone."""
        deadline = time.monotonic() + timeout
        while pids := self.processes():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Ray cluster's processes {pids} did not stop in {timeout}s")
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)

    def jobs(self) -> list[dict]:
        return self.api("/api/jobs/")

    def stop_engine_later(self, server, test: str) -> None:
        """Stop a test's engine beside the next test: its shutdown finishes deleting its attempts from Ray, which
        Ray allows only once they have been finished a while (engine/config.py ray_settle_s, ~3 s a test).
        ``settle`` checks that it did, for the attempts of each engine."""
        ids = {a.id for a in server.engine.store.attempts()}
        errors: list = []

        def stop():
            try:
                server.stop()
            except BaseException as e:  # noqa: BLE001 - reported by settle()
                errors.append(e)
        t = threading.Thread(target=stop, name=f"stop-engine-of-{test}", daemon=True)
        t.start()
        self._closing.append((t, test, ids, errors))

    def settle(self) -> None:
        """Wait for the engines stopping beside the tests; fail naming the test whose engine left Ray jobs."""
        pending, self._closing = self._closing, []
        problems = []
        for t, test, _, errors in pending:
            t.join(60)
            if t.is_alive():
                problems.append(f"{test}: its engine did not stop in 60 s")
            problems += [f"{test}: its engine's stop failed: {e!r}" for e in errors]
        if pending:
            jobs = self.jobs()
            for _, test, ids, _ in pending:
                left = [(j["submission_id"], j["status"], j["message"]) for j in jobs if j.get("submission_id") in ids]
                if left:
                    # Harvested and deleted from Ray (the engine's shutdown finishes pending deletions): Ray's job
                    # table does not grow with dsjobs's history.
                    problems.append(f"{test}: Ray jobs left behind: {left}")
        assert not problems, "\n".join(problems)

    def kill_worker(self) -> None:
        """kill -9 of the second node's raylet: the node is lost, as when a machine dies."""
        node = f"--node_id={self.worker_id}".encode()
        pids = pids_where(lambda argv: argv[0].endswith(b"/raylet") and node in argv)
        if not pids:
            raise RuntimeError("the second node's raylet is not running")
        for pid in pids:
            os.kill(pid, signal.SIGKILL)

    def restart_worker(self) -> None:
        self.start_worker()
        self.wait_nodes(2)

    def restart(self) -> None:
        self.settle()
        self.stop()
        self.start()


def ray_cfg(cluster: RayCluster, tmp_path) -> dict:
    """An engine whose jobs all go to ``cluster``, with its node dir under ``tmp_path``."""
    import sys
    return dict(backend="ray", ray_address=cluster.address, ray_token=cluster.token, ray_agent_python=sys.executable,
                ray_node_dir=str(tmp_path / "node"), ray_poll_s=0.2, max_concurrent_jobs=4)
