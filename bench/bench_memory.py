"""Memory benchmark: the engine idle, and with 50 sleeping jobs, beside an earlier commit's engine in the same run.

    python bench/bench_memory.py [--jobs 50] [--rounds 2] [--base-rev 43f9a31]

Each engine is `dsjobs serve` (sandbox on, the default) on a temporary data dir with `--max-concurrent-jobs` as
large as the job count, so all of them run at once. Idle: after one no-op job (the engine has served a job and
keeps a standby supervisor, or its supervisors' fork server). Then N jobs `sleep` until each is EXECUTING. Figures per process, from psutil: RSS,
USS (pages only it holds) and PSS (shared pages split among their holders); the engine process alone, then
separately its per-job supervisors and the jobs' own processes (bwrap, setpriv, bash, sleep). With ``--base-rev``
the trees alternate round by round (bench/bench_spine.py's worktree).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_spine import HERE, create, served, wait_done, worktree  # noqa: E402

MIB = 1 << 20


def mem(procs) -> dict:
    out = {"rss": 0, "uss": 0, "pss": 0, "count": 0}
    for p in procs:
        try:
            m = p.memory_full_info()
        except psutil.Error:
            continue
        out["rss"] += m.rss
        out["uss"] += m.uss
        out["pss"] += m.pss
        out["count"] += 1
    return {k: (v / MIB if k != "count" else v) for k, v in out.items()}


def engine_process(client_pid: int) -> psutil.Process:
    return next(p for p in psutil.Process(client_pid).children() if "serve" in " ".join(p.cmdline()))


def split(engine: psutil.Process):
    """(supervisors, the jobs' processes) under the engine. The supervisors include what starts them: an idle
    standby (older trees) or the fork server, whose children the supervisors are (this tree)."""
    sups, jobs = [], []
    for p in engine.children():
        try:
            argv = p.cmdline()
            if not any(a.endswith("supervisor.py") for a in argv):
                continue
            sups.append(p)
            if any(a.startswith("--forkserver") for a in argv):
                for s in p.children():
                    sups.append(s)
                    jobs.extend(s.children(recursive=True))
            else:
                jobs.extend(p.children(recursive=True))
        except psutil.Error:
            pass
    return sups, jobs


def one_round(tree: Path, n: int) -> dict:
    with served("--max-concurrent-jobs", str(n), tree=tree) as c:
        wait_done(c, c.execute(create(c)))
        eng = engine_process(os.getpid())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not split(eng)[0]:  # the standby (or the fork server) is there
            time.sleep(0.05)
        idle = mem([eng])
        idle_threads = eng.num_threads()
        jids = [create(c, "sleep 120") for _ in range(n)]
        ops = [c.execute(j) for j in jids]
        deadline = time.monotonic() + 120
        while True:
            states = [c.get(j).status for j in jids]
            if all(s == 2 for s in states):  # EXECUTING
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"not all {n} jobs started: {states}")
            time.sleep(0.1)
        busy = mem([eng])
        busy_threads = eng.num_threads()
        sups, jobs = split(eng)
        r = {"idle": idle, "busy": busy, "threads_idle": idle_threads, "threads_busy": busy_threads,
             "supervisors": mem(sups), "job_processes": mem(jobs)}
        for j in jids:
            c.cancel(j, reason="benchmark done")
        for op in ops:
            wait_done(c, op, poll=0.05)
    r["engine_per_job"] = {k: (r["busy"][k] - r["idle"][k]) / n for k in ("rss", "uss", "pss")}
    r["supervisor_each"] = {k: r["supervisors"][k] / max(1, r["supervisors"]["count"]) for k in ("rss", "uss", "pss")}
    return r


def median_of(rounds: list[dict]) -> dict:
    def walk(xs):
        if isinstance(xs[0], dict):
            return {k: walk([x[k] for x in xs]) for k in xs[0]}
        return statistics.median(xs)
    return walk(rounds)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--base-rev", default="")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "memory.json"))
    a = ap.parse_args()
    import contextlib
    with contextlib.ExitStack() as stack:
        trees = {"this": HERE}
        if a.base_rev:
            trees = {"base": stack.enter_context(worktree(a.base_rev)), "this": HERE}
        runs: dict = {n: [] for n in trees}
        for r in range(a.rounds):
            for name in (list(trees) if r % 2 == 0 else list(reversed(trees))):
                runs[name].append(one_round(trees[name], a.jobs))
                print(f"  round {r + 1}: {name} done", flush=True)
    res = {"jobs": a.jobs, "rounds": a.rounds, "base_rev": a.base_rev, "machine": f"{os.cpu_count()} cores",
           **{n: median_of(v) for n, v in runs.items()}}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    cols = list(trees)
    print("| MiB | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
    rows = [("engine idle, RSS", lambda x: x["idle"]["rss"]), ("engine idle, USS", lambda x: x["idle"]["uss"]),
            ("engine idle, PSS", lambda x: x["idle"]["pss"]),
            (f"engine with {a.jobs} sleeping jobs, RSS", lambda x: x["busy"]["rss"]),
            ("engine, per running job (RSS)", lambda x: x["engine_per_job"]["rss"]),
            ("engine, per running job (USS)", lambda x: x["engine_per_job"]["uss"]),
            ("supervisor, each (RSS)", lambda x: x["supervisor_each"]["rss"]),
            ("supervisor, each (USS)", lambda x: x["supervisor_each"]["uss"]),
            ("supervisor, each (PSS)", lambda x: x["supervisor_each"]["pss"]),
            (f"the jobs' own processes, all {a.jobs} (PSS)", lambda x: x["job_processes"]["pss"]),
            ("engine threads idle / busy", None)]
    for what, f in rows:
        if f is None:
            print(f"| {what} | " + " | ".join(f"{res[n]['threads_idle']:.0f} / {res[n]['threads_busy']:.0f}"
                                              for n in cols) + " |")
        else:
            print(f"| {what} | " + " | ".join(f"{f(res[n]):.2f}" for n in cols) + " |")


if __name__ == "__main__":
    main()
