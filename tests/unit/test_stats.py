"""Resource stats rows (runners/executors/stats.py): the columns the job page charts, network included where a job
has figures of its own (a container's), empty cells where it has none (a process job shares the host's)."""
from __future__ import annotations

import threading
import time

from runners import journal
from runners.executors import stats
from runners.executors.docker import DockerExecutor

# A sample as Docker Engine's /containers/ID/stats?stream=false gives it (the fields read, trimmed).
DOCKER_SAMPLE = {
    "cpu_stats": {"cpu_usage": {"total_usage": 3_000_000_000}, "system_cpu_usage": 20_000_000_000, "online_cpus": 2},
    "precpu_stats": {"cpu_usage": {"total_usage": 2_000_000_000}, "system_cpu_usage": 18_000_000_000},
    "memory_stats": {"usage": 50 << 20, "limit": 1 << 30},
    "blkio_stats": {"io_service_bytes_recursive": [{"op": "read", "value": 4096}, {"op": "write", "value": 8192},
                                                    {"op": "Read", "value": 4096}]},
    "pids_stats": {"current": 3},
    "networks": {"eth0": {"rx_bytes": 1000, "tx_bytes": 200}, "eth1": {"rx_bytes": 24, "tx_bytes": 6}},
}


class _Api:
    def __init__(self, sample):
        self.sample = sample

    def stats(self, cid, stream):
        return self.sample


def _executor(sample) -> DockerExecutor:
    ex = DockerExecutor()
    ex._client = type("Client", (), {"api": _Api(sample)})()
    return ex


def test_a_containers_sample_has_its_network_and_a_process_jobs_has_empty_cells(tmp_path):
    assert _executor(DOCKER_SAMPLE)._stats("c") == (100.0, 50 << 20, 1 << 30, 8192, 8192, 3, 1024, 206)
    no_net = {k: v for k, v in DOCKER_SAMPLE.items() if k != "networks"}  # a container on network "none"
    assert _executor(no_net)._stats("c")[6:] == (None, None)
    rows = iter([(12.5, 1, 2, 3, 4, 5), (1.0, 1, 2, 3, 4, 5, 1024, 206), (1.0, 1, 2, 3, 4, 5, None, None)])
    done = threading.Event()
    ended = stats.start(str(tmp_path), str(tmp_path / "journal"), done, 0.001, lambda: next(rows, None))
    tsv = tmp_path / "docker_stats.tsv"
    deadline = time.monotonic() + 10
    while not (tsv.exists() and tsv.read_text().count("\n") >= 4) and time.monotonic() < deadline:
        time.sleep(0.01)
    done.set()
    assert ended.wait(10), "the sampler's loop ended with its job"
    lines = (tmp_path / "docker_stats.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    assert header == ["time", "cpu_percent", "memory_bytes", "memory_limit_bytes", "block_read_bytes",
                      "block_write_bytes", "pids", "net_rx_bytes", "net_tx_bytes"]
    assert [row.split("\t")[1:] for row in lines[1:4]] == [
        ["12.5", "1", "2", "3", "4", "5", "", ""], ["1.0", "1", "2", "3", "4", "5", "1024", "206"],
        ["1.0", "1", "2", "3", "4", "5", "", ""]]
    streamed = "".join(r.content.decode() for r in journal.records(str(tmp_path / "journal")))
    assert streamed.splitlines()[:4] == lines[:4]  # the same rows, as `.docker_stats.tsv` in the journal


def test_docker_engine_times_are_read_to_the_nanosecond_digit_python_keeps():
    # What an adopted container's start (its recorded start, what its deadline counts from) is read from.
    from runners.executors.docker import docker_time
    assert docker_time("2026-12-02T02:33:45.123456789Z") == 1796178825.123456789
    assert docker_time("2026-12-02T05:33:45+03:00") == docker_time("2026-12-02T02:33:45Z") == 1796178825.0
    assert docker_time("0001-01-01T00:00:00Z") is None  # Docker's zero time: never started
    assert docker_time("") is None and docker_time(None) is None and docker_time("yesterday") is None
