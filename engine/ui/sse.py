"""A job's page stream (server-sent events): its log records, status and progress, on one connection.

A browser holds six connections per host, so one page has one stream. Each ``log`` event's id is the journal
offset just past its records (the offsets ReadLogs hands out): the browser resends the last one as Last-Event-ID
when it reconnects, or the page reopens with ``?from=`` after an HTTP error, and the stream goes on from exactly
there, through a restart of the engine too. ``end`` comes once everything was sent and the job is finished, with
its final status, so a page never mistakes a dropped stream for an ended job.
"""
from __future__ import annotations

import asyncio
import json
import threading

from engine.errors import EngineError, NotFound
from engine.ui.views import status_of
from runners.journal import Stream

RETRY_MS = 1000
PING_S = 15.0  # a comment now and then, so that idle proxies and browsers keep the connection
IDLE_S = 0.5  # how often status and progress are looked at while the log is quiet
SHOWN = frozenset({Stream.STDOUT, Stream.STDERR, Stream.SYSTEM, Stream.STATS, Stream.GPU_STATS})
HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def event(name: str, data, ident=None) -> bytes:
    # JSON, so that a \r or \n in a log line stays inside the data field (SSE ends a line at either); not
    # ASCII-escaped, which is a little faster, and the stream is UTF-8 anyway.
    head = f"id: {ident}\n" if ident is not None else ""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return b"".join((f"{head}event: {name}\ndata: ".encode(), body, b"\n\n"))


def _snapshot(jobs, job_id: str):
    try:
        job = jobs.get(job_id)
    except NotFound:
        return None
    return status_of(job, jobs.progress(job_id))


async def stream(jobs, job_id: str, start: int, stopping: threading.Event):
    """The events of job ``job_id`` from journal offset ``start`` (checked by the caller to start a record)."""
    yield f"retry: {RETRY_MS}\n\n".encode()
    # The start has an id too: a stream that drops before its first record resumes here, not at a newer tail.
    yield event("start", {"offset": start}, start)
    offset, last, quiet = start, None, 0.0
    loop = asyncio.get_running_loop()
    checked = 0.0
    try:
        async for records, offset in jobs.follow_logs(job_id, start, idle_s=IDLE_S):
            if stopping.is_set():
                return  # the engine stops: no end event, the page reconnects to the next one
            shown = [[r.stream, round(r.created_at, 3), r.content.decode("utf-8", "replace")]
                     for r in records if r.stream in SHOWN]
            if shown:
                yield event("log", {"r": shown}, offset)
                quiet = 0.0
            elif not records:
                quiet += IDLE_S
            if not records or loop.time() - checked >= IDLE_S:
                checked = loop.time()
                state = await asyncio.to_thread(_snapshot, jobs, job_id)
                if state is not None and state != last:
                    yield event("status", state)
                    last = state
            if quiet >= PING_S:
                yield b": ping\n\n"
                quiet = 0.0
    except EngineError:
        return  # the stream was dropped (an injected fault, an unreadable journal): the page reconnects
    if stopping.is_set():
        return
    final = await asyncio.to_thread(_snapshot, jobs, job_id)
    yield event("end", final if final is not None else {"status": "DELETED", "terminal": True}, offset)
