"""Spine benchmark: a no-op job (`cmd: true`) through the real API vs a bare subprocess, in one run.

Starts `dsjobs serve` as its own process on a temporary data dir (as a user would), then measures
Create -> Execute -> operation done, p50/p95 over N jobs (sandbox on and off), beside a bare
`subprocess.run(["bash", "-c", "true"])` and the same bash in the job's sandbox; then the throughput of M no-op
jobs queued at once, with `--max-concurrent-jobs` 1, 2, 4, 8 and the default.

    python bench/bench_spine.py [--jobs 50] [--burst 200] [--base-rev 43f9a31]   (--burst 0: the latencies only)

With ``--base-rev``, the same figures are taken of an earlier commit's engine (a git worktree, served the same way,
with its own code), alternated with this tree's in the same run, so both see the same machine.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from dsjobs.client import Client  # noqa: E402
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb  # noqa: E402
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb  # noqa: E402

CONCURRENCY = (1, 2, 4, 8, 0)  # 0: the engine's default (the machine's cores)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def wait_done(client, op, poll=0.002):
    while not op.done:
        time.sleep(poll)
        op = client.get_operation(op.id)
    return op


def create(client, cmd="true", python=False):
    """A job of project "bench"; ``python``: a Python-env job (the engine's Python, no requirements: its env is
    built by the project's first such job, then taken from the cache), running ``python -c pass``."""
    params = jpb.JobParameters(cmd="python -c pass", env=jpb.Environment(python_env=jpb.PythonEnv())) if python \
        else jpb.JobParameters(cmd=cmd)
    op = client.jobs.Create(spb.CreateProjectJobRequest(project_id="bench", job_parameters=params))
    r = spb.CreateProjectJobResponse()
    op.response.Unpack(r)
    return r.job_id


def serve(data: str, *extra: str, tree: Path = HERE):
    """`dsjobs serve` of ``tree`` (its own code: the package is imported from there, ahead of any install)."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    srv = subprocess.Popen([sys.executable, "-m", "dsjobs", "serve", "--listen", "127.0.0.1:0", "--data-dir", data,
                            "--log-level", "warning", *extra], stdout=subprocess.PIPE, text=True, cwd=tree, env=env)
    port = re.search(r"on 127\.0\.0\.1:(\d+)", srv.stdout.readline()).group(1)
    return srv, Client(f"127.0.0.1:{port}")  # the token is found through the engine's descriptor


# Where the servers' data dirs go, all removed at the end of the run (main): removing one server's thousands of
# job files before the next server runs would measure the filesystem's cleanup in the next server's figures (an
# ext4 without a journal, as here, skips each inode freed in the last minute on every file it creates).
SCRATCH: dict = {"dir": None}


@contextlib.contextmanager
def served(*extra: str, tree: Path = HERE):
    with contextlib.ExitStack() as stack:
        d = tempfile.mkdtemp(dir=SCRATCH["dir"]) if SCRATCH["dir"] else \
            stack.enter_context(tempfile.TemporaryDirectory())
        srv, client = serve(d, *extra, tree=tree)
        client.server_pid = srv.pid
        try:
            yield client
        finally:
            client.close()
            srv.terminate()
            srv.wait(10)


@contextlib.contextmanager
def worktree(rev: str):
    """An earlier commit checked out beside this tree (removed afterwards)."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(HERE), "worktree", "add", "--detach", str(base), rev], check=True,
                       capture_output=True)
        try:
            yield base
        finally:
            subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force", str(base)], capture_output=True)


def held_done(client, op):
    """dsjobs' own client's wait (Client.wait_operation): the engine holds each GetOperation until the job's record
    changes; an engine that does not (an earlier tree) is polled every 2 ms, as wait_done does."""
    return client.wait_operation(op, poll_s=0.002)


def one(client, wait=wait_done, python=False) -> tuple[float, float]:
    t = time.perf_counter()
    jid = create(client, python=python)
    op = wait(client, client.execute(jid))
    took = time.perf_counter() - t
    assert not op.HasField("error"), op.error
    j = client.get(jid)
    return took, (j.finished_at.ToNanoseconds() - j.started_at.ToNanoseconds()) / 1e9


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_s(pid: int) -> tuple[float, float]:
    """(the process's own CPU seconds, those of everything it started: the supervisors and all they ran). Those
    are its reaped children's, plus, for a child still alive (the supervisors' fork server, a standby), its own
    and its reaped children's: supervisors forked by a fork server are reaped by it, not by the engine."""
    tick = os.sysconf("SC_CLK_TCK")
    fields = _stat(pid)
    kids = int(fields[13]) + int(fields[14])
    for child in psutil.Process(pid).children():
        try:
            f = _stat(child.pid)
        except OSError:
            continue
        kids += sum(int(x) for x in f[11:15])
    return (int(fields[11]) + int(fields[12])) / tick, kids / tick


def burst(client, n: int, pid: int) -> tuple[float, float, float]:
    """n no-op jobs queued at once, from the first Execute to the last one done: (jobs/s, engine CPU ms per job,
    its children's CPU ms per job). The jobs are created first (a Create queues nothing); their operations are
    then polled in order, each asked at once and then every 10 ms until done (jobs end in about the order they
    were queued, so most are found done by their first poll). CPU per job, Creates included, is the figure a
    loaded machine disturbs least."""
    own0, kids0 = cpu_s(pid)
    ids = [create(client) for _ in range(n)]
    t = time.perf_counter()
    ops = [client.execute(j) for j in ids]
    for op in ops:
        op = wait_done(client, client.get_operation(op.id), poll=0.01)
        assert not op.HasField("error"), op.error
    rate = n / (time.perf_counter() - t)
    own1, kids1 = cpu_s(pid)
    return rate, (own1 - own0) / n * 1e3, (kids1 - kids0) / n * 1e3


def bare(n: int) -> dict:
    from runners import sandbox as sbx
    out = {"bare": [], "bwrap": []}
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)  # a root engine runs confined code as nobody, who must be able to enter the job dir
        box = sbx.argv(sbx.check(), sbx.job_sandbox(d, d), ["bash", "-c", "true"])
        for _ in range(n):  # alternated, so both see the same machine
            t = time.perf_counter()
            subprocess.run(["bash", "-c", "true"], check=True)
            out["bare"].append(time.perf_counter() - t)
            t = time.perf_counter()
            subprocess.run(box, check=True)
            out["bwrap"].append(time.perf_counter() - t)
    return out


def boxes(tree: Path) -> dict:
    """How each latency column's engine of ``tree`` is served: the sandbox made at each job's start, none, and
    sandboxes made ahead of their jobs (engine/warm.py, the default since it came with --no-warm-sandboxes; an
    earlier tree has only the first two)."""
    if "--no-warm-sandboxes" not in (tree / "dsjobs" / "cli.py").read_text():
        return {"bwrap": (), "none": ("--sandbox", "none")}
    return {"bwrap": ("--no-warm-sandboxes",), "none": ("--sandbox", "none"), "warm": ()}


def ms(xs):
    return {"p50": pct(xs, 50) * 1e3, "p95": pct(xs, 95) * 1e3}


def measure(trees: dict[str, Path], jobs: int, burst_n: int) -> dict:
    """Every figure for each tree, alternated job by job (latency) and round by round (bursts)."""
    raw = bare(jobs)
    res: dict = {"machine": f"{os.cpu_count()} cores", "load_avg_at_start": os.getloadavg()[0],
                 "bare_subprocess_ms": ms(raw["bare"]), "bare_bwrap_ms": ms(raw["bwrap"])}
    with contextlib.ExitStack() as stack:
        clients = {(name, box): stack.enter_context(served(*extra, tree=tree))
                   for name, tree in trees.items() for box, extra in boxes(tree).items()}
        for c in clients.values():
            create(c)  # warm up the channel
        defaults = {name: "warm" if "warm" in boxes(tree) else "bwrap" for name, tree in trees.items()}
        for name, box in defaults.items():
            one(clients[(name, box)], held_done, python=True)  # the project's env built before the figures
        # each column polled every 2 ms (wait_done), and the default one (sandboxes made ahead, in trees that have
        # them) also waited for as dsjobs' client waits (held_done)
        ways = [(name, box, "poll") for name, box in clients]
        ways += [(name, box, "held") for name, box in defaults.items()]
        ways += [(name, box, "pyenv") for name, box in defaults.items()]  # a Python-env job, waited for the same
        lat = {k: [] for k in ways}
        phase = {k: [] for k in ways}
        for i in range(jobs):
            for k in (ways if i % 2 == 0 else list(reversed(ways))):
                took, ran = one(clients[k[:2]], wait_done if k[2] == "poll" else held_done, python=k[2] == "pyenv")
                lat[k].append(took)
                phase[k].append(ran)
    for (name, box, way), xs in lat.items():
        sfx = {"bwrap": "", "none": "_unconfined", "warm": "_warm"}[box] + ("_held" if way == "held" else "")
        r = res.setdefault(name, {})
        if way == "pyenv":
            r["api_pyenv_job_ms"] = ms(xs)
            continue
        r[f"api_noop_job{sfx}_ms"] = ms(xs)
        r[f"run_phase{sfx}_ms_p50"] = statistics.median(phase[(name, box, way)]) * 1e3
    for i, k in enumerate(CONCURRENCY if burst_n else ()):
        names = list(trees) if i % 2 == 0 else list(reversed(trees))
        for name in names:
            extra = ("--max-concurrent-jobs", str(k)) if k else ()
            with served(*extra, tree=trees[name]) as c:
                create(c)
                rate, own, kids = burst(c, burst_n, c.server_pid)
            key = str(k or "default")
            res[name].setdefault("burst_jobs_per_s", {})[key] = rate
            res[name].setdefault("burst_engine_cpu_ms_per_job", {})[key] = own
            res[name].setdefault("burst_supervisors_cpu_ms_per_job", {})[key] = kids
            print(f"  {name}: {burst_n} queued, --max-concurrent-jobs {key}: {rate:.1f} jobs/s; CPU per job: engine "
                  f"{own:.1f} ms, supervisors and jobs {kids:.1f} ms", flush=True)
    res["burst_jobs"] = burst_n
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--burst", type=int, default=200)
    ap.add_argument("--base-rev", default="", help="also measure this commit's engine, alternated with this tree's")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "spine.json"))
    a = ap.parse_args()

    with contextlib.ExitStack() as stack:
        SCRATCH["dir"] = stack.enter_context(tempfile.TemporaryDirectory(prefix="dsjobs-bench-"))
        trees = {"this": HERE}
        if a.base_rev:
            trees = {"base": stack.enter_context(worktree(a.base_rev)), "this": HERE}
        res = measure(trees, a.jobs, a.burst)
    res["base_rev"] = a.base_rev
    this = res["this"]
    # the figures of this tree also at the top level, under the names older runs (and bench/compare.py) used
    res.update(api_noop_job_ms=this["api_noop_job_ms"], api_noop_job_unconfined_ms=this["api_noop_job_unconfined_ms"],
               run_phase_ms_p50=this["run_phase_ms_p50"], run_phase_unconfined_ms_p50=this["run_phase_unconfined_ms_p50"],
               burst={"jobs": a.burst, "jobs_per_s": this.get("burst_jobs_per_s", {}).get("default")})
    res["ratio_p50"] = this["api_noop_job_ms"]["p50"] / res["bare_subprocess_ms"]["p50"]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))

    cols = [n for n in trees]
    head = " | ".join(f"{n} p50 | {n} p95" for n in cols)
    rows = [f"| what | {head} |", "|---|" + "---|" * (2 * len(cols))]
    f = lambda d: f"{d['p50']:.1f} ms | {d['p95']:.1f} ms"  # noqa: E731
    rows.append("| bare `subprocess.run(['bash','-c','true'])` | " + " | ".join(f(res["bare_subprocess_ms"])
                                                                         for _ in cols) + " |")
    rows.append("| the same in the job sandbox (bwrap) | " + " | ".join(f(res["bare_bwrap_ms"]) for _ in cols) + " |")
    rows.append("| no-op job through the API, sandbox made at its start (`--no-warm-sandboxes`) | " +
                " | ".join(f(res[n]["api_noop_job_ms"]) for n in cols) + " |")
    rows.append("| no-op job through the API, `--sandbox none` | " +
                " | ".join(f(res[n]["api_noop_job_unconfined_ms"]) for n in cols) + " |")
    rows.append("| no-op job through the API, sandbox on, made ahead (the default since engine/warm.py) | " +
                " | ".join(f(res[n]["api_noop_job_warm_ms"]) if "api_noop_job_warm_ms" in res[n] else "- | -"
                           for n in cols) + " |")
    rows.append("| the same (the default), waited for by dsjobs' client: GetOperation held until the job changes "
                "(an engine without holds is polled every 2 ms) | " + " | ".join(
                    f(res[n].get("api_noop_job_warm_held_ms") or res[n]["api_noop_job_held_ms"]) for n in cols) + " |")
    rows.append("| a Python-env job (`python -c pass`, its env cached), the default, waited for the same | " +
                " | ".join(f(res[n]["api_pyenv_job_ms"]) for n in cols) + " |")
    print("\n".join(rows))
    if not a.burst:
        return
    print(f"\n{a.burst} no-op jobs queued at once (sandbox on), jobs/s:\n")
    print("| --max-concurrent-jobs | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
    for k in CONCURRENCY:
        key = str(k or "default")
        print(f"| {key} | " + " | ".join(f"{res[n]['burst_jobs_per_s'][key]:.1f}" for n in cols) + " |")
    print("\nCPU per job in those bursts, engine / supervisors and jobs (ms):\n")
    print("| --max-concurrent-jobs | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
    for k in CONCURRENCY:
        key = str(k or "default")
        print(f"| {key} | " + " | ".join(f"{res[n]['burst_engine_cpu_ms_per_job'][key]:.1f} / "
                                         f"{res[n]['burst_supervisors_cpu_ms_per_job'][key]:.1f}" for n in cols) + " |")
    print(f"\nload average at the start: {res['load_avg_at_start']:.2f} ({os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
