"""A job's log journal: framed records (runners/supervisor.py writes them) read back from a byte offset."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

from runners.supervisor import HEADER, MARK, PROGRESS, STATS, STDERR, STDOUT, SYSTEM, append_record

STREAM_NAMES = {STDOUT: "stdout", STDERR: "stderr", SYSTEM: ".system.log", PROGRESS: "job_progress.jsonl",
                STATS: ".docker_stats.tsv"}
MAX_READ = 1 << 20


@dataclass(frozen=True)
class LogRecord:
    stream: int
    created_at: float
    content: bytes


def journal_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def read(path: str, offset: int, max_bytes: int = MAX_READ) -> tuple[list[LogRecord], int]:
    """Whole records from ``offset``; returns them and the offset just past the last one returned."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(max_bytes + HEADER.size + 65536)
    except FileNotFoundError:
        return [], offset
    out, pos = [], 0
    while pos + HEADER.size <= len(data) and pos < max_bytes:
        stream, ts, n = HEADER.unpack_from(data, pos)
        end = pos + HEADER.size + n
        if end > len(data):
            break
        if stream != MARK:  # the engine's own bookkeeping (engine/channel.py), not the job's output
            out.append(LogRecord(stream, ts, data[pos + HEADER.size:end]))
        pos = end
    return out, offset + pos


def append_system(path: str, message: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        append_record(fd, SYSTEM, (message.rstrip("\n") + "\n").encode(), time.time())
    finally:
        os.close(fd)


def records(path: str):
    """Every record of the journal, from the start."""
    offset = 0
    while True:
        recs, nxt = read(path, offset)
        if nxt == offset:
            return
        yield from recs
        offset = nxt


def extract_stream(path: str, stream: int, dest: str) -> None:
    """Write one stream of the journal to a plain file (the downloadable .system.log)."""
    with open(dest, "wb") as out:
        for r in records(path):
            if r.stream == stream:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.created_at)).encode()
                for line in r.content.splitlines():
                    out.write(stamp + b"  " + line + b"\n")


def extract_raw(path: str, stream: int, dest: str) -> None:
    """One stream's bytes as the job wrote them (stdout.txt / stderr.txt of a job that ran on a remote node)."""
    with open(dest, "wb") as out:
        for r in records(path):
            if r.stream == stream:
                out.write(r.content)
