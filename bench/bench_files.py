"""Files at disk speed: a 512 MiB input -> output round trip through the API beside `sha256sum` + two `cp` of the
same bytes, in the same run.

The round trip, as a user's client does it: hash the input (the Create request carries its sha256), Create, PUT the
bytes to the upload URL, Execute a job that `cp`s the input to its output, wait for the operation, DownloadJobFiles
and GET the output. Each phase is timed apart: hash, upload (Create + PUT), run (Execute -> done: inputs placed,
the job, outputs stored), download, total. The baseline is what the same bytes cost without the engine:
`sha256sum input; cp input a; cp a b`, on the same filesystem.

Each tree (this one, and with --base-tree an earlier one, e.g. `git archive HEAD | tar -x -C /tmp/base`) runs its
own `dsjobs serve` and its own client code in a worker process of its own; rounds alternate baseline, this tree
and the base tree, so all see the same machine. Every round writes 16 new bytes at the start of the input, so
no upload is skipped as already stored. Two jobs: `cp` (the output has the input's digest: the store holds it
already) and `cp+append` (`cp` then one more byte: a new output the store must take).

    python bench/bench_files.py [--size-mib 512] [--rounds 5] [--base-tree /tmp/base] [--dir /tmp]
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

HERE = Path(__file__).resolve().parent.parent
JOBS = {"cp": "cp in.bin out.bin", "cp+append": "cp in.bin out.bin && printf x >> out.bin"}
PHASES = ("hash", "upload", "run", "download", "total")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


# --- the worker: one tree's engine and client -----------------------------------------------------------------

def worker(tree: str, data: str, src: str) -> None:
    sys.path.insert(0, tree)
    from dsjobs import client as dc
    from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
    from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
    srv = subprocess.Popen([sys.executable, "-m", "dsjobs", "serve", "--listen", "127.0.0.1:0", "--data-dir", data,
                            "--log-level", "warning"], stdout=subprocess.PIPE, text=True, cwd=tree,
                           env={**os.environ, "PYTHONPATH": tree})
    try:
        port = re.search(r"on 127\.0\.0\.1:(\d+)", srv.stdout.readline()).group(1)
        client = dc.Client(f"127.0.0.1:{port}")  # the token is found through the engine's descriptor
        out_dir = Path(data).parent / (Path(data).name + "-out")
        out_dir.mkdir(exist_ok=True)
        print("ready", flush=True)
        for line in sys.stdin:
            cmd = JOBS[line.strip()]
            t0 = time.perf_counter()
            sha, size = dc._sha256_size(src)
            t1 = time.perf_counter()
            params = jpb.JobParameters(cmd=cmd, input_files=[jpb.File(desc=jpb.FileDesc(path="in.bin"), sha256=sha,
                                                                        size_bytes=size)],
                                       output_files=[jpb.FileDesc(path="out.bin")])
            op = client.wait_operation(client.jobs.Create(spb.CreateProjectJobRequest(
                project_id="bench", job_parameters=params)))
            resp = spb.CreateProjectJobResponse()
            op.response.Unpack(resp)
            assert [f for f in resp.upload_files if f.url], "the input was not asked for: not a fresh one"
            client.upload(list(resp.upload_files), {sha: src})
            t2 = time.perf_counter()
            op = client.wait_operation(client.execute(resp.job_id), poll_s=0.005)
            assert not op.HasField("error"), op.error
            t3 = time.perf_counter()
            job = client.get(resp.job_id)
            got = client.download_job_files(job, out_dir, output_dir=out_dir)
            t4 = time.perf_counter()
            assert len(got) == 1 and got[0].stat().st_size == size + (cmd != JOBS["cp"]), got
            got[0].unlink()
            client.delete(resp.job_id)
            print(json.dumps({"hash": t1 - t0, "upload": t2 - t1, "run": t3 - t2, "download": t4 - t3,
                              "total": t4 - t0}), flush=True)
    finally:
        srv.terminate()
        srv.wait(30)


# --- the driver -----------------------------------------------------------------------------------------------

def baseline(src: str, d: Path) -> dict:
    t0 = time.perf_counter()
    subprocess.run(["sha256sum", src], check=True, capture_output=True)
    t1 = time.perf_counter()
    subprocess.run(["cp", src, str(d / "a")], check=True)
    subprocess.run(["cp", str(d / "a"), str(d / "b")], check=True)
    t2 = time.perf_counter()
    (d / "a").unlink()
    (d / "b").unlink()
    return {"hash": t1 - t0, "cp": t2 - t1, "total": t2 - t0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--base-tree", help="an earlier tree to run beside this one")
    ap.add_argument("--dir", default=None, help="where the data dirs and the input are (default: the temp dir)")
    ap.add_argument("--out", default=str(HERE / "bench" / "results" / "files.json"))
    ap.add_argument("--worker", nargs=3, metavar=("TREE", "DATA", "SRC"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(*a.worker)
    trees = {"this tree": str(HERE)} | ({"base tree": a.base_tree} if a.base_tree else {})
    with tempfile.TemporaryDirectory(dir=a.dir, prefix="bench-files-") as tmp:
        d = Path(tmp)
        src = d / "input.bin"
        with open(src, "wb") as f:
            for _ in range(a.size_mib):
                f.write(os.urandom(1 << 20))
        workers = {}
        for name, tree in trees.items():
            data = d / f"data-{len(workers)}"
            p = subprocess.Popen([sys.executable, __file__, "--worker", tree, str(data), str(src)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert p.stdout.readline().strip() == "ready", f"{name}: the worker did not start"
            workers[name] = p
        res = {f"baseline / {j}": [] for j in JOBS} | {f"{n} / {j}": [] for n in trees for j in JOBS}
        try:
            for r in range(a.rounds + 1):  # round 0 warms up (engine caches, the sandbox), not counted
                for job in JOBS:
                    for name, p in workers.items():
                        with open(src, "r+b") as f:
                            f.write(os.urandom(16))
                        p.stdin.write(job + "\n")
                        p.stdin.flush()
                        line = p.stdout.readline()
                        assert line, f"{name}: the worker died"
                        if r:
                            res[f"{name} / {job}"].append(json.loads(line))
                    b = baseline(str(src), d)
                    if r:
                        res[f"baseline / {job}"].append(b)
                print(f"round {r} done", file=sys.stderr, flush=True)
        finally:
            for p in workers.values():
                p.stdin.close()
                p.wait(60)
    mib = a.size_mib

    def summary(runs, keys):
        return {k: {"p50_s": round(statistics.median(x[k] for x in runs), 3),
                    "p95_s": round(pct([x[k] for x in runs], 95), 3),
                    "min_s": round(min(x[k] for x in runs), 3), "max_s": round(max(x[k] for x in runs), 3)}
                for k in keys}
    fs = subprocess.run(["stat", "-f", "-c", "%T", a.dir or tempfile.gettempdir()], capture_output=True, text=True)
    out = {"size_mib": mib, "rounds": a.rounds, "fs": fs.stdout.strip(), "load_avg_1m": os.getloadavg()[0],
           "baseline": summary([b for j in JOBS for b in res[f"baseline / {j}"]], ("hash", "cp", "total"))}
    base_p50 = out["baseline"]["total"]["p50_s"]
    for key in res:
        if key.startswith("baseline"):
            continue
        s = summary(res[key], PHASES)
        s["upload_mib_per_s"] = round(mib / s["upload"]["p50_s"], 1)
        s["download_mib_per_s"] = round(mib / s["download"]["p50_s"], 1)
        s["ratio_p50"] = round(s["total"]["p50_s"] / base_p50, 2)
        # each round's against the baseline measured right after it
        s["ratio_per_round"] = [round(x["total"] / b["total"], 2)
                                for x, b in zip(res[key], res[f"baseline / {key.split(' / ')[1]}"])]
        out[key] = s
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"{mib} MiB, {a.rounds} rounds, p50 s (p95): baseline sha256sum {out['baseline']['hash']['p50_s']}, "
          f"2x cp {out['baseline']['cp']['p50_s']}, total {base_p50}")
    print("| variant | " + " | ".join(PHASES) + " | ratio |")
    print("|---" * (len(PHASES) + 2) + "|")
    for key in out:
        if " / " in key:
            s = out[key]
            print(f"| {key} | " + " | ".join(f"{s[k]['p50_s']} ({s[k]['p95_s']})" for k in PHASES) +
                  f" | {s['ratio_p50']} |")


if __name__ == "__main__":
    main()
