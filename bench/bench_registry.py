"""The suite's private registry, in one run, alternated: the process on loopback of an earlier tree's
tests/dockerenv.py (BASE, default HEAD) vs the compose service (pytest-docker, Debian's docker-compose v1) of this
tree. Each round: start until /v2/ answers, one account, a push of the shell image, stop. The suite's cost for the
three tests that use a registry: before, three registries; now one per session (per xdist worker) plus an account
per test."""
from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import dockerenv  # noqa: E402

N = 7
TESTS = 3  # test_docker, test_ray, test_trust_boundary


def base_module(commit: str):
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:tests/dockerenv.py"], check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "dockerenv_base.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("dockerenv_base", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def timed(f):
    t = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t


def round_base(mod, image, tmp):
    reg, start = timed(lambda: mod.Registry(Path(tmp) / "base", "puller", "pw-base"))
    ref, push = timed(lambda: reg.push(image, "bench/shell:1"))
    _, stop = timed(reg.close)
    return {"start": start, "account": 0.0, "push": push, "stop": stop}


def round_new(image, tmp):
    reg, start = timed(lambda: dockerenv.Registry(Path(tmp) / "new").start())
    acc, account = timed(lambda: reg.account("puller", "pw-new"))
    _, push = timed(lambda: acc.push(image, "bench/shell:1"))
    _, stop = timed(reg.close)
    return {"start": start, "account": account, "push": push, "stop": stop}


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def main():
    commit = sys.argv[1] if len(sys.argv) > 1 else "HEAD"
    mod = base_module(commit)
    image = dockerenv.shell_image()
    dockerenv.registry_image()
    runs = {"base": [], "new": []}
    load = []
    for i in range(N):
        with tempfile.TemporaryDirectory() as tmp:
            order = ("base", "new") if i % 2 == 0 else ("new", "base")
            for which in order:
                runs[which].append(round_base(mod, image, tmp) if which == "base" else round_new(image, tmp))
        load.append(float(Path("/proc/loadavg").read_text().split()[0]))
    res = {"base_commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", commit], capture_output=True,
                                         text=True).stdout.strip(), "rounds": N, "load_avg_1m": load}
    for which, rs in runs.items():
        for k in ("start", "account", "push", "stop"):
            xs = [r[k] * 1e3 for r in rs]
            res[f"{which}_{k}_ms"] = {"p50": statistics.median(xs), "p95": pct(xs, 0.95)}
    b = res["base_start_ms"]["p50"] + res["base_stop_ms"]["p50"]
    n = res["new_start_ms"]["p50"] + res["new_stop_ms"]["p50"]
    res["suite_cost_ms"] = {"base": TESTS * b, "new": n + TESTS * res["new_account_ms"]["p50"]}
    out = ROOT / "bench" / "results" / "registry.json"
    out.write_text(json.dumps(res, indent=2))
    print(f"| {N} rounds, alternated (base {res['base_commit']}) | base p50 / p95 | new p50 / p95 |\n|---|---|---|")
    for k in ("start", "account", "push", "stop"):
        bb, nn = res[f"base_{k}_ms"], res[f"new_{k}_ms"]
        print(f"| {k} | {bb['p50']:.0f} / {bb['p95']:.0f} ms | {nn['p50']:.0f} / {nn['p95']:.0f} ms |")
    print(f"| the {TESTS} registry tests' share | {res['suite_cost_ms']['base']:.0f} ms | "
          f"{res['suite_cost_ms']['new']:.0f} ms |\nload average (1 min) per round: {load}")


if __name__ == "__main__":
    main()
