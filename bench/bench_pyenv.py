"""Python env benchmark, in one run: a job whose env has three small requirements from a local index, first build
(uv, and virtualenv+pip) vs a cache hit vs the same job without python_env."""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb  # noqa: E402
from tests.conftest import Server  # noqa: E402
from tests.helpers import run  # noqa: E402
from tests.pyindex import Index  # noqa: E402

REPEAT = 6
PY312 = __import__("runners.pyenv", fromlist=["pick"]).pick("3.12").path


def job(index_url, with_env=True, salt=""):
    cmd = "python -c 'import dsj_a, dsj_b, dsj_c'" if with_env else f"{PY312} -c 'pass'"
    if not with_env:
        return jpb.JobParameters(cmd=cmd)
    pe = jpb.PythonEnv(python_version="3.12", requirements=["dsj-a", "dsj-b", "dsj-c" + salt])
    pe.pip_options.index_url = index_url
    return jpb.JobParameters(cmd=cmd, env=jpb.Environment(python_env=pe))


def timed(client, params):
    t = time.perf_counter()
    _, op = run(client, params, timeout=300)
    assert not op.HasField("error"), op.error.message
    return time.perf_counter() - t


def main():
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        idx = Index(Path(tmp) / "index")
        for n in "abc":
            idx.add(f"dsj-{n}", "1.0")
        try:
            for installer in ("uv", "pip"):
                firsts, hits = [], []
                for i in range(REPEAT):
                    s = Server(Path(tmp) / f"data-{installer}-{i}", env_installer=installer,
                               uv_cache_dir=Path(tmp) / f"uv-cache-{installer}")
                    try:
                        timed(s.client, job(idx.url, False))  # warm the engine up
                        firsts.append(timed(s.client, job(idx.url)))
                        hits.append(timed(s.client, job(idx.url)))
                        if installer == "uv":
                            res.setdefault("no_python_env_s", []).append(timed(s.client, job(idx.url, False)))
                    finally:
                        s.stop()
                res[f"{installer}_cold_build_s"] = firsts[0]  # empty download caches
                res[f"{installer}_first_build_s"] = statistics.median(firsts[1:])  # a new env, warm caches
                res[f"{installer}_cache_hit_s"] = statistics.median(hits)
            res["no_python_env_s"] = statistics.median(res["no_python_env_s"])
        finally:
            idx.close()
    out = Path(__file__).parent / "results" / "pyenv.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    ms = {k: v * 1e3 for k, v in res.items()}
    print("| job (Create, Execute, wait) | uv | virtualenv + pip |\n|---|---|---|\n"
          f"| first build, empty download caches (3 wheels from a local index) | {ms['uv_cold_build_s']:.0f} ms | {ms['pip_cold_build_s']:.0f} ms |\n"
          f"| first build of a new env, warm caches (median of 5) | {ms['uv_first_build_s']:.0f} ms | {ms['pip_first_build_s']:.0f} ms |\n"
          f"| cache hit | {ms['uv_cache_hit_s']:.0f} ms | {ms['pip_cache_hit_s']:.0f} ms |\n"
          f"| same job without python_env | {ms['no_python_env_s']:.0f} ms | |")


if __name__ == "__main__":
    main()
