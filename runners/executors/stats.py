"""Resource stats of a running job, in the layout of the cloud's `.docker_stats.tsv`: one writer loop for every
executor, which only says how to take a sample."""
from __future__ import annotations

import os
import threading
import time
from typing import Callable, Optional

from runners import journal
from runners.workers import Workers

# The network columns came last, later: readers go by the header's names (a re-adopted job's file may have the
# older header above newer rows).
HEADER = ("time\tcpu_percent\tmemory_bytes\tmemory_limit_bytes\tblock_read_bytes\tblock_write_bytes\tpids\t"
          "net_rx_bytes\tnet_tx_bytes\n")
# (cpu percent, memory bytes, memory limit bytes, block read bytes, block write bytes, pids[, network received
# bytes, network sent bytes]): a process job shares the host's network, so it has no network figures of its own
# and its samples stop at pids (empty cells).
Sample = tuple


def start(run_dir: str, journal_path: str, done: threading.Event, interval_s: float,
          sample: Callable[[], Optional[Sample]], workers: Optional[Workers] = None) -> threading.Event:
    """Every ``interval_s`` until ``done``, in a thread (one of ``workers``'): append a row to
    run_dir/docker_stats.tsv and stream it as `.docker_stats.tsv` in the job's journal. The event returned is set
    once the loop has ended."""

    def loop():
        try:
            fd = journal.open_for_append(journal_path)
            f = open(os.open(os.path.join(run_dir, "docker_stats.tsv"), os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                             0o600), "a")
        except OSError:
            return  # no room for stats (a full disk): the job runs on without them

        def put(line: str) -> None:
            try:
                f.write(line)
                f.flush()
                journal.append(fd, journal.Stream.STATS, line.encode())
            except OSError:
                pass  # a row lost to a full disk; the next one tries again
        try:
            if f.tell() == 0:
                put(HEADER)
            while not done.wait(interval_s):
                try:
                    row = sample()
                except Exception:  # noqa: BLE001 - a sampler's trouble ends no job
                    row = None
                if row is None:
                    continue
                cpu, mem, limit, rd, wr, pids = row[:6]
                net = "\t".join("" if v is None else str(int(v)) for v in (tuple(row[6:8]) + (None, None))[:2])
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
                put(f"{stamp}\t{cpu:.1f}\t{int(mem)}\t{int(limit)}\t{int(rd)}\t{int(wr)}\t{int(pids)}\t{net}\n")
        finally:
            os.close(fd)
            try:
                f.close()
            except OSError:
                pass

    ended = threading.Event()  # set once the loop has closed its files

    def run():
        try:
            loop()
        finally:
            ended.set()
    if workers is not None:  # a thread left by an ended job's sampler: the start does not wait for a new one
        workers.run(run, "dsjobs-stats")
    else:
        threading.Thread(target=run, daemon=True, name="dsjobs-stats").start()
    return ended
