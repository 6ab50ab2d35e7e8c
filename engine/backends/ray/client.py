"""A Ray cluster as seen by the engine: its Jobs REST API and node list, over plain HTTP (no Ray wheel needed).

Ray is used for placement, launch, hard kill and liveness only (see ray-backend-notes.md): the engine decides
which instance type and which node, and submits only what fits in what is free, because Ray keeps an infeasible
job PENDING for up to 15 minutes and cannot stop it there.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Optional

from engine.config import InstanceType

LABEL = "dsjobs-instance"  # a node labelled with it serves only that instance type
NODE_ID_LABEL = "ray.io/node-id"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class RayError(Exception):
    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Node:
    id: str
    cpus: float
    gpus: float
    memory: float
    labels: dict = field(default_factory=dict, hash=False)

    def serves(self, t: InstanceType) -> bool:
        kind = self.labels.get(LABEL)
        if kind is not None and kind != t.name:
            return False
        return fits(self.cpus, self.gpus, self.memory, t)


def shape(t: InstanceType) -> dict:
    return {"cpus": float(t.cpus), "gpus": float(t.gpus), "memory": float(t.memory_gb * (1 << 30))}


def fits(cpus: float, gpus: float, memory: float, t: InstanceType) -> bool:
    s = shape(t)
    return cpus >= s["cpus"] and gpus >= s["gpus"] and memory >= s["memory"]


class RayClient:
    def __init__(self, address: str, token: str = "", timeout_s: float = 10.0):
        self.base = address.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        # A submit runs on the thread that places Ray jobs: its retries are bounded in count and in time.
        self.submit_tries, self.submit_pause_s, self.submit_budget_s = 4, 1.0, 30.0

    def _call(self, method: str, path: str, body: Optional[dict] = None) -> Optional[dict]:
        """The JSON reply; None for 404; RayError for anything else that is not a success."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            text = e.read()[-400:].decode(errors="replace")
            raise RayError(f"Ray {method} {path}: HTTP {e.code}: {text}", e.code) from None
        except (urllib.error.URLError, OSError) as e:
            raise RayError(f"Ray at {self.base} is unreachable: {getattr(e, 'reason', e)}") from None
        try:
            return json.loads(raw) if raw.strip() else {}
        except ValueError:
            return {"text": raw.decode(errors="replace")}

    def nodes(self) -> list[Node]:
        """ALIVE nodes with their total resources and labels."""
        r = self._call("GET", "/api/v0/nodes?detail=1&limit=10000") or {}
        out = []
        for n in r.get("data", {}).get("result", {}).get("result", []):
            if n.get("state") != "ALIVE":
                continue
            res = n.get("resources_total") or {}
            out.append(Node(n["node_id"], res.get("CPU", 0.0), res.get("GPU", 0.0), res.get("memory", 0.0),
                            dict(n.get("labels") or {})))
        return out

    def submit(self, submission_id: str, entrypoint: str, *, cpus: float, gpus: float, memory: float,
               selector: dict, env_vars: dict, metadata: dict) -> None:
        body = {"entrypoint": entrypoint, "submission_id": submission_id, "metadata": metadata,
                "entrypoint_num_cpus": cpus, "entrypoint_num_gpus": gpus, "entrypoint_memory": int(memory),
                "entrypoint_label_selector": selector, "runtime_env": {"env_vars": env_vars}}
        # A submit whose answer was lost (timed out under a loaded head) may still have reached Ray; a submission id
        # is Ray's once, so asking for it tells which. Unanswered submits, and those a busy head or a proxy in front
        # of it answered "not now" (502, 503, 504), are tried again for submit_tries rounds within submit_budget_s;
        # Ray's own refusals (any other HTTP status) are not.
        deadline = time.monotonic() + self.submit_budget_s
        for round_ in range(self.submit_tries):
            try:
                self._call("POST", "/api/jobs/", body)
                return
            except RayError as e:
                if e.status in (401, 403):
                    raise
                try:
                    if self.job(submission_id) is not None:
                        return  # it got there: a lost answer, or a refused resend of what had
                except RayError:
                    pass
                if (e.status and e.status not in (502, 503, 504)) or round_ == self.submit_tries - 1 \
                        or time.monotonic() + self.submit_pause_s > deadline:
                    raise
                time.sleep(self.submit_pause_s)

    def job(self, submission_id: str) -> Optional[dict]:
        return self._call("GET", f"/api/jobs/{submission_id}")

    def jobs(self) -> list[dict]:
        return self._call("GET", "/api/jobs/") or []

    def logs(self, submission_id: str) -> str:
        r = self._call("GET", f"/api/jobs/{submission_id}/logs") or {}
        return r.get("logs", "")

    def stop(self, submission_id: str) -> None:
        self._call("POST", f"/api/jobs/{submission_id}/stop")

    def delete(self, submission_id: str) -> bool:
        """True once Ray no longer has the job (Ray refuses to delete one that is not finished)."""
        try:
            self._call("DELETE", f"/api/jobs/{submission_id}")
        except RayError as e:
            if e.status in (400, 500):
                return False
            raise
        return True


def place(types: list[InstanceType], nodes: list[Node], used: dict[str, dict]) -> tuple[
        Optional[InstanceType], Optional[Node], Optional[InstanceType]]:
    """The first type, in the job's order, with a node that has room now: (type, node, None). When no node has
    room but one could serve a type once free: (None, None, that type). When no alive node could ever serve any of
    the types: (None, None, None)."""
    could = None
    for t in types:
        for n in nodes:
            if not n.serves(t):
                continue
            u = used.get(n.id, {})
            if fits(n.cpus - u.get("cpus", 0.0), n.gpus - u.get("gpus", 0.0), n.memory - u.get("memory", 0.0), t):
                return t, n, None
            could = could or t
    return None, None, could
