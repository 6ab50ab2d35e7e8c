"""A job's log journal: every stream of a job (stdout, stderr, the system log, progress, resource stats) as framed
records in one append-only file, read back from any byte offset. The one definition of the format.

A record is: stream id (1 byte), unix time (8-byte float), payload length (4 bytes), payload. Writers append whole
records with one write() each on an O_APPEND descriptor, so writers in several processes never interleave; a
reader takes whole records only, so a reader racing a writer never sees half of one. Offsets are what ReadLogs and
the job page hand clients to resume from.

The per-job supervisor imports this file as it is (``python -I -S``, no package on its path), so it depends on the
standard library's cheapest modules only: no enum, no dataclasses.
"""
import os
import struct
import time

HEADER = struct.Struct(">BdI")
MAX_RECORD = 64 * 1024  # longer payloads are split into several records
MAX_READ = 1 << 20


class Stream:
    """The streams of a journal (the record's first byte)."""

    STDOUT = 1
    STDERR = 2
    SYSTEM = 3
    PROGRESS = 4
    STATS = 5
    GPU_STATS = 7
    MARK = 6  # engine-internal: how much of a remote node's journal is stored; never shown to clients
    # As the official client files them (its system_loggers_map): ReadLogs' file_path for each system stream.
    FILE_PATHS = {SYSTEM: ".system.log", PROGRESS: "job_progress.jsonl", STATS: ".docker_stats.tsv",
                  GPU_STATS: ".gpu_stats.tsv"}
    OF_JOB = frozenset({STDOUT, STDERR, SYSTEM, PROGRESS, STATS, GPU_STATS})  # what a node may ship


class Record:
    __slots__ = ("stream", "created_at", "content")

    def __init__(self, stream: int, created_at: float, content: bytes):
        self.stream, self.created_at, self.content = stream, created_at, content

    def __repr__(self) -> str:
        return f"Record({self.stream}, {self.created_at}, {self.content[:40]!r})"


def char_boundary(data: bytes, end: int) -> int:
    """``end``, or up to 3 bytes before it, so that no UTF-8 character is cut there: records are decoded one by one
    (the job page, the official client), and a character cut in two showed as U+FFFD on both sides. Bytes that are
    not UTF-8 are cut where asked."""
    for back in range(1, 4):
        k = end - back
        if k < 0:
            break
        b = data[k]
        if b & 0xC0 == 0x80:
            continue  # a continuation byte: its character starts further back
        if 0xC2 <= b <= 0xF4:  # a lead byte: whether its character is whole before the cut
            return k if back < (2 if b < 0xE0 else 3 if b < 0xF0 else 4) else end
        break
    return end


def pieces(payload: bytes):
    """``payload`` in pieces of at most MAX_RECORD, each cut after its last newline where it has one: a record is
    whole lines unless a line alone is longer (then cut between characters), so a page of the journal
    (engine/ui/logindex.py) starts a line."""
    i, n = 0, len(payload)
    if n <= MAX_RECORD:
        yield payload
        return
    while i < n:
        end = min(i + MAX_RECORD, n)
        if end < n:
            cut = payload.rfind(b"\n", i, end) + 1
            end = cut if cut > i else (char_boundary(payload, end) if char_boundary(payload, end) > i else end)
        yield payload[i:end]
        i = end


def frame(stream: int, payload: bytes, now: float = None) -> bytes:
    """The bytes of ``payload`` as records of ``stream`` (split as ``pieces``)."""
    now = time.time() if now is None else now
    return b"".join(HEADER.pack(stream, now, len(p)) + p for p in pieces(payload))


def append(fd: int, stream: int, payload: bytes, now: float = None) -> None:
    """Append whole records with single write() calls on an O_APPEND fd, so two writers never interleave."""
    now = time.time() if now is None else now
    for p in pieces(payload):
        os.write(fd, HEADER.pack(stream, now, len(p)) + p)


def open_for_append(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


def append_line(path: str, stream: int, message: str) -> None:
    """One line (a newline is added) into the journal at ``path``."""
    fd = open_for_append(path)
    try:
        append(fd, stream, (message.rstrip("\n") + "\n").encode())
    finally:
        os.close(fd)


def whole(buf: bytes, limit: int = None, streams=None) -> int:
    """The length of the longest prefix of ``buf`` made of whole records (at most ``limit`` bytes of them when
    given, but always at least one whole record). With ``streams``, a record of another stream, or one whose
    length runs past the buffer's end in a way no writer makes, raises ValueError naming its offset."""
    pos = 0
    while pos + HEADER.size <= len(buf) and (limit is None or pos < limit):
        stream, _, n = HEADER.unpack_from(buf, pos)
        if streams is not None and stream not in streams:
            raise ValueError(f"a record of unknown stream {stream} at offset {pos}")
        if pos + HEADER.size + n > len(buf):
            break
        pos += HEADER.size + n
    return pos


def parse(buf: bytes, keep_marks: bool = False) -> list:
    """The records of a buffer of whole records."""
    out, pos = [], 0
    while pos + HEADER.size <= len(buf):
        stream, ts, n = HEADER.unpack_from(buf, pos)
        end = pos + HEADER.size + n
        if end > len(buf):
            break
        if keep_marks or stream != Stream.MARK:
            out.append(Record(stream, ts, buf[pos + HEADER.size:end]))
        pos = end
    return out


def size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def read(path: str, offset: int, max_bytes: int = MAX_READ) -> tuple:
    """Whole records from ``offset``: (records, the offset just past the last one). Marks are skipped."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(max_bytes + HEADER.size + MAX_RECORD)
    except FileNotFoundError:
        return [], offset
    end = whole(data, max_bytes)
    return parse(data[:end]), offset + end


def boundaries(path: str, offset: int, every: int):
    """Offsets where records start, from ``offset`` (which must be one) on: each at least ``every`` bytes past
    the previous one yielded, and last the end of the last whole record. Only headers are read (payloads are
    seeked over), so a reader can page through a journal of any size without holding it: the job page tails and
    pages a 1 GiB log this way."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        yield offset
        return
    with f:
        end = os.fstat(f.fileno()).st_size
        pos = last = offset
        while pos + HEADER.size <= end:
            f.seek(pos)  # within the read buffer for small records: no system call
            head = f.read(HEADER.size)
            if len(head) < HEADER.size:
                break
            n = HEADER.unpack(head)[2]
            if pos + HEADER.size + n > end:
                break  # a record still being written
            pos += HEADER.size + n
            if pos - last >= every:
                yield pos
                last = pos
        if pos != last or pos == offset:
            yield pos


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
    """One stream as a plain file with a time stamp per line (the downloadable system.log)."""
    with open(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
        for r in records(path):
            if r.stream == stream:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.created_at)).encode()
                for line in r.content.splitlines():
                    out.write(stamp + b"  " + line + b"\n")


def extract_raw(path: str, stream: int, dest: str) -> None:
    """One stream's bytes as the job wrote them (stdout.txt / stderr.txt of a job that ran on a remote node)."""
    with open(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
        for r in records(path):
            if r.stream == stream:
                out.write(r.content)


def last_output_time(path: str):
    """When the job last wrote to stdout or stderr (to resume copying a container's logs after a restart)."""
    last = None
    for r in records(path):
        if r.stream in (Stream.STDOUT, Stream.STDERR):
            last = r.created_at
    return last


def printable(text: str) -> str:
    """Untrusted text for a log line: control characters (a newline that would start a forged line) escaped, so
    that nothing a job controls can start a line that looks like the engine's ("job completed successfully")."""
    return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in text)
