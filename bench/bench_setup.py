"""What a fresh clone costs before its first job and before its first test: `make run`, and `make test`'s setup
(every venv, the official CLI, the wheels the tests serve, the checks; everything before pytest starts), on a base
commit and on this tree, alternately, each in a fresh clone, on the same machine and the same warm caches.

    python bench/bench_setup.py [--base HEAD] [--rounds 3] [--what run,setup] [--out bench/results/setup.json]

"This tree" is the working tree as it is (a clone of HEAD with the working tree's changed and new files copied
over it), so uncommitted work is measured too. A clone is made in a 0755 temporary directory, as a user's checkout
is, and removed after its round. The first round of each side may fill caches the other uses (pip's, uv's,
~/.cache/dsjobs): it is reported, and p50/p95 are also given without it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
# The base Makefile's setup for `make test`: its `test` target's prerequisites, without the pytest runs.
BASE_SETUP = ["install", "proto-check", "layout-check", "test-deps", "official-cli", ".cache/wheels/envzy-cp310/.complete",
              ".cache/wheels/spark/.complete", ".venv-py3.10/.installed", ".venv-py3.13/.installed", "run-deps"]


def clone(rev: str | None, into: Path) -> Path:
    """A fresh clone at ``rev``, or (None) at HEAD with this working tree's changes over it."""
    os.chmod(into, 0o755)
    dst = into / "p"
    subprocess.run(["git", "clone", "-q", str(HERE), str(dst)], check=True)
    if rev is not None:
        subprocess.run(["git", "-C", str(dst), "checkout", "-q", rev], check=True)
        return dst
    changed = subprocess.run(["git", "-C", str(HERE), "ls-files", "-m", "-o", "--exclude-standard"], check=True,
                             capture_output=True, text=True).stdout.split("\n")
    for rel in filter(None, changed):
        src = HERE / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    for rel in filter(None, subprocess.run(["git", "-C", str(HERE), "ls-files", "-d"], check=True,
                                           capture_output=True, text=True).stdout.split("\n")):
        (dst / rel).unlink(missing_ok=True)
    return dst


def timed(argv: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed in {cwd}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return took


def one(side: str, rev: str | None, what: str) -> float:
    with tempfile.TemporaryDirectory(prefix=f"dsjobs-bench-setup-{side}-") as d:
        tree = clone(rev, Path(d))
        if what == "run":
            return timed(["make", "run"], tree)
        has_setup = "test-setup:" in (tree / "Makefile").read_text()
        return timed(["make", "test-setup"] if has_setup else ["make", *BASE_SETUP], tree)


def stats(xs: list[float]) -> dict:
    s = sorted(xs)
    return {"p50_s": round(statistics.median(s), 2), "p95_s": round(s[min(len(s) - 1, round(0.95 * (len(s) - 1)))], 2),
            "runs_s": [round(x, 2) for x in xs]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="HEAD", help="the commit to compare with (default HEAD: the last commit)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--what", default="run,setup")
    ap.add_argument("--out", default=str(HERE / "bench" / "results" / "setup.json"))
    a = ap.parse_args()
    times: dict = {}
    load = []
    for r in range(a.rounds):
        for what in a.what.split(","):
            for side, rev in (("base", a.base), ("new", None)) if r % 2 == 0 else (("new", None), ("base", a.base)):
                load.append(os.getloadavg()[0])
                took = one(side, rev, what)
                times.setdefault(what, {}).setdefault(side, []).append(took)
                print(f"round {r + 1} {what:5} {side:4} {took:7.1f} s  (load {load[-1]:.1f})", flush=True)
    report = {"base": a.base, "rounds": a.rounds, "cores": os.cpu_count(),
              "load_1min": {"min": round(min(load), 1), "max": round(max(load), 1)}, "results": {}}
    for what, sides in times.items():
        report["results"][what] = {side: {"all": stats(xs), "warm": stats(xs[1:]) if len(xs) > 1 else None}
                                   for side, xs in sides.items()}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report["results"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
