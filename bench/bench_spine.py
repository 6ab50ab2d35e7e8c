"""Spine benchmark: a no-op job (`cmd: true`) through the real API vs a bare subprocess, in one run.

Starts `dsjobs serve` as its own process on a temporary data dir (as a user would), then measures
Create -> Execute -> operation done, p50/p95 over N jobs, and the throughput of M no-op jobs queued at once.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dsjobs.client import Client  # noqa: E402
from engine.api.pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb  # noqa: E402
from engine.api.pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def wait_done(client, op, poll=0.002):
    while not op.done:
        time.sleep(poll)
        op = client.get_operation(op.id)
    return op


def create(client):
    op = client.jobs.Create(spb.CreateProjectJobRequest(project_id="bench", job_parameters=jpb.JobParameters(cmd="true")))
    r = spb.CreateProjectJobResponse()
    op.response.Unpack(r)
    return r.job_id


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--burst", type=int, default=200)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "spine.json"))
    a = ap.parse_args()

    bare = []
    for _ in range(a.jobs):
        t = time.perf_counter()
        subprocess.run(["bash", "-c", "true"], check=True)
        bare.append(time.perf_counter() - t)

    with tempfile.TemporaryDirectory() as data:
        srv = subprocess.Popen([sys.executable, "-m", "dsjobs", "serve", "--listen", "127.0.0.1:0", "--data-dir", data,
                                "--log-level", "warning"], stdout=subprocess.PIPE, text=True)
        line = srv.stdout.readline()
        port = re.search(r"on 127\.0\.0\.1:(\d+)", line).group(1)
        client = Client(f"127.0.0.1:{port}")
        try:
            create(client)  # warm up the channel
            lat, engine_side = [], []
            for _ in range(a.jobs):
                t = time.perf_counter()
                jid = create(client)
                op = wait_done(client, client.execute(jid))
                lat.append(time.perf_counter() - t)
                assert not op.HasField("error"), op.error
                j = client.get(jid)
                engine_side.append((j.finished_at.ToNanoseconds() - j.started_at.ToNanoseconds()) / 1e9)
            t = time.perf_counter()
            ops = [client.execute(create(client)) for _ in range(a.burst)]
            for op in ops:
                wait_done(client, op, poll=0.01)
            burst_s = time.perf_counter() - t
        finally:
            client.close()
            srv.terminate()
            srv.wait(10)

    res = {
        "machine": f"{os.cpu_count()} cores",
        "bare_subprocess_ms": {"p50": pct(bare, 50) * 1e3, "p95": pct(bare, 95) * 1e3},
        "api_noop_job_ms": {"p50": pct(lat, 50) * 1e3, "p95": pct(lat, 95) * 1e3},
        "run_phase_ms_p50": statistics.median(engine_side) * 1e3,
        "burst": {"jobs": a.burst, "seconds": burst_s, "jobs_per_s": a.burst / burst_s},
    }
    res["ratio_p50"] = res["api_noop_job_ms"]["p50"] / res["bare_subprocess_ms"]["p50"]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(f"| what | p50 | p95 |\n|---|---|---|\n"
          f"| bare `subprocess.run(['bash','-c','true'])` | {res['bare_subprocess_ms']['p50']:.1f} ms | {res['bare_subprocess_ms']['p95']:.1f} ms |\n"
          f"| no-op job through the API (Create, Execute, wait) | {res['api_noop_job_ms']['p50']:.1f} ms | {res['api_noop_job_ms']['p95']:.1f} ms |\n"
          f"\n{a.burst} no-op jobs queued at once: {burst_s:.2f} s ({res['burst']['jobs_per_s']:.0f} jobs/s); "
          f"ratio p50 API/bare = {res['ratio_p50']:.1f}x")


if __name__ == "__main__":
    main()
