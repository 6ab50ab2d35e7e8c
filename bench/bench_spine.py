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
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb  # noqa: E402
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb  # noqa: E402


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


def serve(data: str, *extra: str):
    srv = subprocess.Popen([sys.executable, "-m", "dsjobs", "serve", "--listen", "127.0.0.1:0", "--data-dir", data,
                            "--log-level", "warning", *extra], stdout=subprocess.PIPE, text=True)
    port = re.search(r"on 127\.0\.0\.1:(\d+)", srv.stdout.readline()).group(1)
    return srv, Client(f"127.0.0.1:{port}")  # the token is found through the engine's descriptor


def one(client) -> tuple[float, float]:
    t = time.perf_counter()
    jid = create(client)
    op = wait_done(client, client.execute(jid))
    took = time.perf_counter() - t
    assert not op.HasField("error"), op.error
    j = client.get(jid)
    return took, (j.finished_at.ToNanoseconds() - j.started_at.ToNanoseconds()) / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--burst", type=int, default=200)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "spine.json"))
    a = ap.parse_args()

    bare, bare_box = [], []
    from runners import sandbox as sbx
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)  # a root engine runs confined code as nobody, who must be able to enter the job dir
        box = sbx.argv(sbx.check(), sbx.job_sandbox(d, d), ["bash", "-c", "true"])
        for _ in range(a.jobs):  # alternated, so both see the same machine
            t = time.perf_counter()
            subprocess.run(["bash", "-c", "true"], check=True)
            bare.append(time.perf_counter() - t)
            t = time.perf_counter()
            subprocess.run(box, check=True)
            bare_box.append(time.perf_counter() - t)

    with tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2:
        confined, c_client = serve(d1)
        unconfined, u_client = serve(d2, "--sandbox", "none")
        try:
            for c in (c_client, u_client):
                create(c)  # warm up the channel
            lat = {"bwrap": [], "none": []}
            run_phase = {"bwrap": [], "none": []}
            for _ in range(a.jobs):
                for name, c in (("bwrap", c_client), ("none", u_client)):
                    took, phase = one(c)
                    lat[name].append(took)
                    run_phase[name].append(phase)
            t = time.perf_counter()
            ops = [c_client.execute(create(c_client)) for _ in range(a.burst)]
            for op in ops:
                wait_done(c_client, op, poll=0.01)
            burst_s = time.perf_counter() - t
        finally:
            for c, srv in ((c_client, confined), (u_client, unconfined)):
                c.close()
                srv.terminate()
                srv.wait(10)

    ms = lambda xs: {"p50": pct(xs, 50) * 1e3, "p95": pct(xs, 95) * 1e3}  # noqa: E731
    res = {
        "machine": f"{os.cpu_count()} cores",
        "bare_subprocess_ms": ms(bare),
        "bare_bwrap_ms": ms(bare_box),
        "api_noop_job_ms": ms(lat["bwrap"]),
        "api_noop_job_unconfined_ms": ms(lat["none"]),
        "run_phase_ms_p50": statistics.median(run_phase["bwrap"]) * 1e3,
        "run_phase_unconfined_ms_p50": statistics.median(run_phase["none"]) * 1e3,
        "burst": {"jobs": a.burst, "seconds": burst_s, "jobs_per_s": a.burst / burst_s},
    }
    res["ratio_p50"] = res["api_noop_job_ms"]["p50"] / res["bare_subprocess_ms"]["p50"]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    row = lambda what, k: f"| {what} | {res[k]['p50']:.1f} ms | {res[k]['p95']:.1f} ms |"  # noqa: E731
    print("\n".join(["| what | p50 | p95 |", "|---|---|---|",
                     row("bare `subprocess.run(['bash','-c','true'])`", "bare_subprocess_ms"),
                     row("the same in the job sandbox (bwrap)", "bare_bwrap_ms"),
                     row("no-op job through the API, sandbox on (the default)", "api_noop_job_ms"),
                     row("no-op job through the API, `--sandbox none`", "api_noop_job_unconfined_ms")]))
    print(f"\n{a.burst} no-op jobs queued at once (sandbox on): {burst_s:.2f} s ({res['burst']['jobs_per_s']:.0f} "
          f"jobs/s); ratio p50 API/bare = {res['ratio_p50']:.1f}x")


if __name__ == "__main__":
    main()
