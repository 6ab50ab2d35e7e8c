"""Every benchmark, on this tree and on an earlier commit, in the same run: is anything slower than it was?

    python bench/compare.py BASE_REV [--rounds 3] [--only spine,cancel] [--out bench/results/compare.json]

BASE_REV is checked out in a temporary git worktree; each round runs each benchmark once on the base and once on
this tree, alternately (so both see the same machine, warm or not), each tree's own script against its own code.
Each figure is reported as the median of the rounds, with its run-to-run spread (max - min over the rounds, the
larger of the two trees'); a figure is "worse" only when it moved the wrong way by more than that spread.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
BENCHES = {  # name -> extra arguments (kept small: each runs 2 x rounds times)
    "startup": [],
    "spine": ["--jobs", "30", "--burst", "100"],
    "cancel": ["--cancels", "40"],
    "pyenv": [],
    "docker": [],
    "ray": ["--jobs", "6", "--burst", "10"],
    "memory": ["--jobs", "20", "--rounds", "1"],
}
HIGHER_IS_BETTER = ("per_s", "jobs_per_s")


def flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def startup(tree: Path, n: int = 30) -> dict:
    """What is on every job's path before any of its own code: the supervisor's start (``python -I -S``, it
    exits at once on a bad argument, after its imports) and the Ray agent's imports, in ms (medians of ``n``)."""
    sup = next(p for p in (tree / "runners" / "executors" / "supervisor.py", tree / "runners" / "supervisor.py")
               if p.exists())
    env = dict(os.environ, PYTHONPATH=str(tree))

    def median_ms(argv, **kw):
        xs = []
        for _ in range(n):
            t = time.perf_counter()
            subprocess.run(argv, capture_output=True, **kw)
            xs.append((time.perf_counter() - t) * 1e3)
        return statistics.median(xs)
    return {"supervisor_start_ms": median_ms([sys.executable, "-I", "-S", str(sup), "--bogus"]),
            "agent_import_ms": median_ms([sys.executable, "-c", "import runners.agent"], cwd=tree, env=env),
            "python_bare_ms": median_ms([sys.executable, "-I", "-S", "-c", "pass"])}


def run_one(tree: Path, name: str, extra: list[str]) -> dict:
    if name == "startup":
        return startup(tree)
    script = tree / "bench" / f"bench_{name}.py"
    result = tree / "bench" / "results" / f"{name}.json"
    result.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=str(tree))  # this tree's code, ahead of the editable install
    t = time.monotonic()
    p = subprocess.run([sys.executable, str(script), *extra], cwd=tree, env=env, capture_output=True, text=True,
                       timeout=3600)
    if p.returncode != 0 or not result.exists():
        raise RuntimeError(f"bench_{name} on {tree} failed ({p.returncode}):\n{p.stdout[-2000:]}{p.stderr[-3000:]}")
    print(f"  {name:<7} {tree.name:<10} {time.monotonic() - t:6.1f}s", flush=True)
    return flatten(json.loads(result.read_text()))


# Fixes to the benchmarks themselves, applied to the base tree when it predates them (a benchmark that cannot run
# on the base measures nothing): (file, text before, text after).
BASE_FIXES = [
    ("bench/bench_cancel.py",
     "                mark = Path(tmp) / f\"sig{i}\"\n"
     "                cmd = f\"trap 'date +%s.%N > {mark}; exit 0' USR1; echo ready; while true; do sleep 0.01; done\"\n"
     "                jid = create(c, jpb.JobParameters(cmd=cmd, graceful_shutdown_parameters=graceful(10, 5)))\n",
     "                cmd = \"trap 'date +%s.%N > sig; exit 0' USR1; echo ready; while true; do sleep 0.01; done\"\n"
     "                jid = create(c, jpb.JobParameters(cmd=cmd, graceful_shutdown_parameters=graceful(10, 5)))\n"
     "                mark = s.work_dir(jid) / \"sig\"\n"),
    ("bench/bench_spine.py", "    with tempfile.TemporaryDirectory() as d:\n        box = ",
     "    with tempfile.TemporaryDirectory() as d:\n        __import__('os').chmod(d, 0o755)\n        box = "),
]


def fix_base(base: Path) -> None:
    for rel, before, after in BASE_FIXES:
        p = base / rel
        text = p.read_text() if p.exists() else ""
        if before in text and after not in text:
            p.write_text(text.replace(before, after, 1))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="")
    ap.add_argument("--out", default=str(HERE / "bench" / "results" / "compare.json"))
    a = ap.parse_args()
    names = [n for n in BENCHES if not a.only or n in a.only.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(HERE), "worktree", "add", "--detach", str(base), a.base], check=True,
                       capture_output=True)
        fix_base(base)
        absent = [n for n in names if n != "startup" and not (base / "bench" / f"bench_{n}.py").exists()]
        for n in absent:  # newer than the base: its own --base-rev runs the base beside this tree instead
            print(f"  {n}: no bench/bench_{n}.py in {a.base}; run `bench/bench_{n}.py --base-rev {a.base}`")
        names = [n for n in names if n not in absent]
        try:
            runs: dict = {n: {"base": [], "this": []} for n in names}
            failed: dict = {}
            for r in range(a.rounds):
                print(f"round {r + 1}/{a.rounds}", flush=True)
                for n in names:
                    if n in failed:
                        continue
                    for side, tree in (("base", base), ("this", HERE)) if r % 2 == 0 else \
                            (("this", HERE), ("base", base)):
                        try:
                            runs[n][side].append(run_one(tree, n, BENCHES[n]))
                        except RuntimeError as e:  # reported, and the others still run
                            failed[n] = f"{side}: {str(e).strip().splitlines()[-1]}"
                            print(f"  {n}: FAILED on {side}\n{e}", flush=True)
                            break
        finally:
            subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force", str(base)], capture_output=True)
    rows, report = [], {"base": a.base, "rounds": a.rounds, "figures": {}, "failed": failed}
    for n in names:
        if n in failed:
            rows.append(f"| {n} | failed | | | **{failed[n][:80]}** |")
            continue
        keys = sorted(set.intersection(*(set(x) for x in runs[n]["base"] + runs[n]["this"])))
        for k in keys:
            b = [x[k] for x in runs[n]["base"]]
            t = [x[k] for x in runs[n]["this"]]
            mb, mt = statistics.median(b), statistics.median(t)
            spread = max(max(b) - min(b), max(t) - min(t))
            higher = any(k.endswith(h) or f"{h}." in k for h in HIGHER_IS_BETTER)  # burst_jobs_per_s.<concurrency>
            worse = (mb - mt if higher else mt - mb) > spread
            report["figures"][f"{n}.{k}"] = {"base": mb, "this": mt, "spread": spread, "worse": worse}
            rows.append(f"| {n}.{k} | {mb:.2f} | {mt:.2f} | {spread:.2f} | {'**worse**' if worse else 'ok'} |")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2))
    print(f"\nmedians of {a.rounds} rounds; spread = max - min over the rounds\n")
    print(f"| figure | {a.base[:10]} | this tree | spread | |\n|---|---|---|---|---|")
    print("\n".join(rows))
    worse = [k for k, v in report["figures"].items() if v["worse"]]
    print(f"\n{len(worse)} figure(s) worse beyond the spread" + (f": {', '.join(worse)}" if worse else ""))
    if failed:
        print(f"{len(failed)} benchmark(s) failed: {', '.join(failed)}")
    return 1 if worse or failed else 0


if __name__ == "__main__":
    sys.exit(main())
