"""`dsjobs run` of a no-op job against `mlflow run` of a no-op MLproject, whole processes, alternated, in one run.

    python bench/bench_run.py [--rounds 15] [--base REV] [--out bench/results/run.json]

dsjobs: `dsjobs run -c config.yaml` with `cmd: "true"` (the sandbox on, as by default; a data dir kept across
rounds, as a user's is). mlflow: `mlflow run . --env-manager local` of an MLproject whose entry point is `true`, from
mlflow-skinny (pinned below) in a venv of its own under .cache/bench/, made on first use (with uv when it is on PATH,
else venv + pip), its file tracking store in a temporary dir and its telemetry off (no network wait in the baseline).

Each round runs both (and dsjobs at ``--base``, a commit, when given) in both bytecode conditions, the order of the
tools swapped every round:

- ``cached``: bytecode caches, as users have them: PYTHONDONTWRITEBYTECODE unset, the caches kept under
  .cache/bench/pycache (PYTHONPYCACHEPREFIX: the tree's own __pycache__ is left alone) and filled by warm-up runs;
- ``no_write``: PYTHONDONTWRITEBYTECODE=1, as set on the project's machines: the caches installers wrote
  (site-packages) are read, nothing is written, so the tree's own modules compile at every start.

The figures per tool and condition: wall time until the process exits (p50, p95), CPU time (user + system, with
the children it waited for: what a busy machine changes least), and dsjobs / mlflow as the ratio of the p50s and
as the median of each round's own ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
MLFLOW = "mlflow-skinny==3.17.2"
CACHE = HERE / ".cache" / "bench"


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def mlflow_venv() -> Path:
    """The baseline's own venv (made once): its `mlflow` executable."""
    venv = CACHE / MLFLOW.replace("==", "-")
    exe, stamp = venv / "bin" / "mlflow", venv / ".installed"
    if stamp.exists() and exe.exists():
        return exe
    shutil.rmtree(venv, ignore_errors=True)
    print(f"bench_run: installing {MLFLOW} into {venv} (once)", file=sys.stderr, flush=True)
    uv = shutil.which("uv")
    if uv:
        subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
        # compiled at install, as pip does (and as the .venv's packages are)
        subprocess.run([uv, "pip", "install", "-q", "--compile-bytecode", "--python", str(venv / "bin" / "python"),
                        MLFLOW], check=True)
    else:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        MLFLOW], check=True)
    stamp.touch()
    return exe


def tree_at(rev: str, dest: Path) -> Path:
    """The tree of ``rev``, exported (git archive: the repository's index and HEAD are left as they are)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(HERE), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def envs(base_env: dict) -> dict[str, dict]:
    cached = {k: v for k, v in base_env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cached["PYTHONPYCACHEPREFIX"] = str(CACHE / "pycache")
    no_write = {k: v for k, v in base_env.items() if k != "PYTHONPYCACHEPREFIX"}
    no_write["PYTHONDONTWRITEBYTECODE"] = "1"
    return {"cached": cached, "no_write": no_write}


def timed(argv, cwd, env) -> tuple[float, float]:
    """(wall seconds until the process exits, as a shell waits for it; its CPU seconds, user + system, with the
    children it waited for). stderr goes to a file: a pipe would be waited for until every process that inherited
    it has closed it."""
    with tempfile.TemporaryFile("w+") as err:
        t = time.perf_counter()
        p = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(p.pid, 0)
        took = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{argv} failed ({p.returncode}):\n{err.read()[-3000:]}")
    return took, usage.ru_utime + usage.ru_stime


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--base", help="also dsjobs at this commit (its tree exported to a temporary dir)")
    ap.add_argument("--out", default=str(HERE / "bench" / "results" / "run.json"))
    a = ap.parse_args()

    mlflow = mlflow_venv()
    mlflow_version = subprocess.run([str(mlflow.parent / "python"), "-c", "import mlflow; print(mlflow.__version__)"],
                                    capture_output=True, text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        tmp = Path(tmp)
        job, proj = tmp / "job", tmp / "mlproject"
        job.mkdir()
        proj.mkdir()
        (job / "config.yaml").write_text('name: noop\ncmd: "true"\n')
        (proj / "MLproject").write_text('name: noop\nentry_points:\n  main:\n    command: "true"\n')
        base_env = dict(os.environ, MLFLOW_TRACKING_URI=(tmp / "mlruns").as_uri(), MLFLOW_ALLOW_FILE_STORE="true",
                        MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
        trees = {"dsjobs": HERE}
        if a.base:
            trees[f"dsjobs@{a.base}"] = tree_at(a.base, tmp / "base")
        tools = {name: ([sys.executable, "-m", "dsjobs", "run", "-c", "config.yaml", "--data-dir",
                         str(tmp / f"data-{i}")], job, {"PYTHONPATH": str(tree)})
                 for i, (name, tree) in enumerate(trees.items())}
        tools["mlflow"] = ([str(mlflow), "run", ".", "--env-manager", "local"], proj, {})
        conds = envs(base_env)
        for _ in range(a.warmup):  # fills the cached condition's caches; first-run costs (data dirs) paid here
            for argv, cwd, extra in tools.values():
                timed(argv, cwd, {**conds["cached"], **extra})
        times = {c: {t: [] for t in tools} for c in conds}
        cpu = {c: {t: [] for t in tools} for c in conds}
        load = [os.getloadavg()[0]]
        order = list(tools)
        for r in range(a.rounds):
            for c, env in conds.items():
                for t in (order if r % 2 == 0 else order[::-1]):
                    argv, cwd, extra = tools[t]
                    wall, used = timed(argv, cwd, {**env, **extra})
                    times[c][t].append(wall)
                    cpu[c][t].append(used)
            load.append(os.getloadavg()[0])
            print(f"  round {r + 1}/{a.rounds}: " + ", ".join(
                f"{c} {t} {times[c][t][-1] * 1e3:.0f} ms" for c in conds for t in tools), file=sys.stderr, flush=True)

    ms = lambda xs: {"p50": pct(xs, 50) * 1e3, "p95": pct(xs, 95) * 1e3}  # noqa: E731
    res = {"machine": f"{os.cpu_count()} cores, load average {min(load):.1f}-{max(load):.1f} during the run",
           "python": platform.python_version(), "mlflow": f"mlflow-skinny {mlflow_version}", "rounds": a.rounds}
    for c in conds:
        res[c] = {t: ms(xs) for t, xs in times[c].items()}
        res[c]["cpu_ms_p50"] = {t: pct(xs, 50) * 1e3 for t, xs in cpu[c].items()}
        for t in trees:
            res[c][f"ratio_p50_{t}_vs_mlflow"] = res[c][t]["p50"] / res[c]["mlflow"]["p50"]
            # each round's two runs saw the same machine: the median of their ratios moves least with the load
            res[c][f"ratio_paired_median_{t}_vs_mlflow"] = statistics.median(
                x / y for x, y in zip(times[c][t], times[c]["mlflow"]))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    lines = ["| bytecode | what | wall p50 | wall p95 | CPU p50 | vs mlflow: p50s | vs mlflow: paired |",
             "|---|---|---|---|---|---|---|"]
    for c, label in (("cached", "cached (as users have it)"), ("no_write", "PYTHONDONTWRITEBYTECODE=1")):
        for t in tools:
            ratio = (f"{res[c][f'ratio_p50_{t}_vs_mlflow']:.2f}x | {res[c][f'ratio_paired_median_{t}_vs_mlflow']:.2f}x"
                     if t in trees else "1x | 1x")
            cmd = "`mlflow run` no-op" if t == "mlflow" else f"`{t} run` no-op"
            lines.append(f"| {label} | {cmd} | {res[c][t]['p50']:.0f} ms | {res[c][t]['p95']:.0f} ms | "
                         f"{res[c]['cpu_ms_p50'][t]:.0f} ms | {ratio} |")
    print("\n".join(lines))
    print(f"\n{res['mlflow']}, {a.rounds} rounds alternated; {res['machine']}")


if __name__ == "__main__":
    main()
