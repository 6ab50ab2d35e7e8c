"""Cancel figures: signal delivery latency, SIGKILL at the timeout, and leftovers over many cancels of jobs that
fork, setsid and double-fork. Runs an engine in this process (real gRPC on loopback, real processes)."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb  # noqa: E402
from tests.conftest import Server  # noqa: E402
from tests.helpers import survivors  # noqa: E402
from tests.helpers import create, wait_op, wait_status  # noqa: E402


def graceful(sig, timeout_s):
    g = jpb.GracefulShutdownParameters(signal=sig)
    g.timeout.FromMilliseconds(int(timeout_s * 1000))
    return g


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cancels", type=int, default=100)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "cancel.json"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        s = Server(Path(tmp) / "data", max_concurrent_jobs=4)
        c = s.client
        try:
            # 1. time from the Cancel call to the job's signal handler running
            sig_lat = []
            for i in range(10):
                # in the job's own working dir: a confined job writes nowhere else
                cmd = "trap 'date +%s.%N > sig; exit 0' USR1; echo ready; while true; do sleep 0.01; done"
                jid = create(c, jpb.JobParameters(cmd=cmd, graceful_shutdown_parameters=graceful(10, 5)))
                mark = s.work_dir(jid) / "sig"
                op = c.execute(jid)
                wait_status(c, jid, {jpb.EXECUTING})
                time.sleep(0.1)
                t = time.time()
                c.cancel(jid, graceful=True)
                wait_op(c, op, 10)
                sig_lat.append(float(mark.read_text()) - t)
            # 2. SIGKILL at the timeout: a job that ignores the signal, timeout 0.5 s
            kill_lat = []
            for _ in range(10):
                jid = create(c, jpb.JobParameters(cmd="trap '' TERM; echo $$ > /dev/null; sleep 600",
                                                  graceful_shutdown_parameters=graceful(15, 0.5)))
                op = c.execute(jid)
                wait_status(c, jid, {jpb.EXECUTING})
                time.sleep(0.1)
                t = time.monotonic()
                c.cancel(jid, graceful=True)
                while survivors(jid):
                    time.sleep(0.002)
                kill_lat.append(time.monotonic() - t - 0.5)
                wait_op(c, op, 10)
            # 3. many cancels of jobs that fork, setsid and double-fork
            cmd = ("sleep 300 & (sleep 301 | cat) & setsid sleep 302 & "
                   "python3 -c 'import os,time\nif os.fork()==0:\n  os.setsid()\n  if os.fork()==0:\n    time.sleep(300)';"
                   " wait")
            left, t0 = 0, time.monotonic()
            for i in range(a.cancels):
                jid = create(c, jpb.JobParameters(cmd=cmd))
                op = c.execute(jid)
                wait_status(c, jid, {jpb.EXECUTING})
                time.sleep(0.05)
                c.cancel(jid)
                wait_op(c, op, 20)
                left += len(survivors(jid))
            cancels_s = time.monotonic() - t0
        finally:
            s.stop()
    res = {"signal_latency_ms": {"p50": statistics.median(sig_lat) * 1e3, "max": max(sig_lat) * 1e3},
           "sigkill_after_timeout_ms": {"p50": statistics.median(kill_lat) * 1e3, "max": max(kill_lat) * 1e3},
           "cancels": a.cancels, "processes_left": left, "cancels_seconds": cancels_s}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
