"""Ray backend benchmark, in one run on one two-node Ray cluster on loopback (tests/raycluster.py):

- a no-op job (`cmd: true`) through dsjobs on the ray backend (Create -> Execute -> operation done), vs the same
  command submitted straight to Ray's job API with the same resources (POST /api/jobs/ -> SUCCEEDED), alternated;
- 20 no-op jobs queued at once, both ways.

Ray's own latency (worker start, job supervisor actor) dominates; the aim is that dsjobs adds under 20 % to it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb  # noqa: E402
from engine.backends.ray.client import RayClient  # noqa: E402
from tests.conftest import Server  # noqa: E402
from tests.helpers import create  # noqa: E402
from tests.raycluster import RayCluster  # noqa: E402

POLL_S = 0.02
C14 = dict(cpus=4.0, gpus=0.0, memory=32.0 * (1 << 30))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def bare_submit(ray: RayClient, head_id: str) -> str:
    sid = f"bare-{uuid.uuid4().hex[:12]}"
    ray.submit(sid, "true", selector={"ray.io/node-id": head_id}, env_vars={}, metadata={}, **C14)
    return sid


def bare_wait(ray: RayClient, sid: str) -> None:
    while True:
        st = ray.job(sid)["status"]
        if st in ("SUCCEEDED", "FAILED", "STOPPED"):
            assert st == "SUCCEEDED", st
            return
        time.sleep(POLL_S)


def ds_wait(client, op):
    while not op.done:
        time.sleep(POLL_S)
        op = client.get_operation(op.id)
    assert not op.HasField("error"), op.error
    return op


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=10)
    ap.add_argument("--burst", type=int, default=20)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "ray.json"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        cluster = RayCluster(tmp).start()
        up_s = time.perf_counter() - t
        srv = None
        try:
            ray = RayClient(cluster.address, cluster.token)
            srv = Server(tmp / "data", backend="ray", ray_address=cluster.address, ray_token=cluster.token,
                         ray_agent_python=sys.executable, ray_node_dir=str(tmp / "node"), ray_poll_s=0.2,
                         max_concurrent_jobs=a.burst)
            client = srv.client
            noop = jpb.JobParameters(cmd="true")
            bare_wait(ray, bare_submit(ray, cluster.head_id))  # warm both paths: Ray's first job is cold
            ds_wait(client, client.execute(create(client, noop, project="bench")))
            bare, ds = [], []
            for _ in range(a.jobs):
                t = time.perf_counter()
                bare_wait(ray, bare_submit(ray, cluster.head_id))
                bare.append(time.perf_counter() - t)
                t = time.perf_counter()
                ds_wait(client, client.execute(create(client, noop, project="bench")))
                ds.append(time.perf_counter() - t)
            # Bursts: the head fits one c1.4 job at a time, so both queue: Ray in PENDING, dsjobs in its queue.
            t = time.perf_counter()
            sids = [bare_submit(ray, cluster.head_id) for _ in range(a.burst)]
            for sid in sids:
                bare_wait(ray, sid)
            bare_burst = time.perf_counter() - t
            t = time.perf_counter()
            ops = [client.execute(create(client, noop, project="bench")) for _ in range(a.burst)]
            for op in ops:
                ds_wait(client, op)
            ds_burst = time.perf_counter() - t
            for j in ray.jobs():
                if j["submission_id"].startswith("bare-"):
                    ray.delete(j["submission_id"])
        finally:
            if srv is not None:
                srv.stop()
            cluster.stop()
    res = {
        "cluster_up_s": round(up_s, 1),
        "noop_bare_ray_p50_s": round(statistics.median(bare), 3), "noop_bare_ray_p95_s": round(pct(bare, 95), 3),
        "noop_dsjobs_ray_p50_s": round(statistics.median(ds), 3), "noop_dsjobs_ray_p95_s": round(pct(ds, 95), 3),
        "overhead_p50_percent": round(100 * (statistics.median(ds) / statistics.median(bare) - 1), 1),
        f"burst{a.burst}_bare_ray_s": round(bare_burst, 2), f"burst{a.burst}_dsjobs_ray_s": round(ds_burst, 2),
    }
    print(json.dumps(res, indent=2))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
