"""Following a job's log: many followers for little, whether through gRPC (ReadLogs) or a page (server-sent events).

A follower is a coroutine that waits on an event, not a thread that polls: one watcher thread looks at the journals
of the jobs that have followers (a stat each, every ``poll_s``), and the job service tells the hub when a job's
status changes. 500 followers cost 500 small coroutines and at most one stat per followed job per tick, so the
API's threads stay free for Get, List and Cancel.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import AsyncIterator, Callable, Optional

from runners import journal

log = logging.getLogger(__name__)


class LogHub:
    def __init__(self, journal_of: Callable[[str], str], poll_s: float = 0.05):
        self.journal_of = journal_of
        self.poll_s = poll_s
        self._mu = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._sizes: dict[str, int] = {}
        self._state: dict[str, str] = {}  # job id -> "active" | "finished" | "gone", as last told or looked up
        self._streams = 0  # followers now following, waiting or reading
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="dsjobs-log-hub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        self._wake_all()

    def notify(self, job_id: str, state: Optional[str] = None) -> None:
        """Something about the job changed (its status, told by the job service as ``state``): its followers
        look again."""
        with self._mu:
            if state is not None:
                self._state[job_id] = state
            waiters = list(self._waiters.get(job_id, ()))
        for loop, ev in waiters:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # that loop is closed: its follower is gone
                pass

    def _wake_all(self) -> None:
        with self._mu:
            ids = list(self._waiters)
        for job_id in ids:
            self.notify(job_id)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                with self._mu:
                    ids = list(self._waiters)
                for job_id in ids:
                    try:
                        size = os.stat(self.journal_of(job_id)).st_size
                    except OSError:
                        size = -1
                    if self._sizes.get(job_id) != size:
                        self._sizes[job_id] = size
                        self.notify(job_id)
                for job_id in [j for j in self._sizes if j not in ids]:
                    self._sizes.pop(job_id, None)
                with self._mu:
                    for job_id in [j for j in self._state if j not in self._waiters]:
                        del self._state[job_id]  # looked up again by its next follower
            except Exception:  # noqa: BLE001 - the hub must outlive anything a job's files do
                log.exception("log hub pass failed")

    async def wait(self, job_id: str, timeout: float) -> None:
        """Until the job's journal grows, its status changes, or ``timeout``."""
        ev = asyncio.Event()
        key = (asyncio.get_running_loop(), ev)
        with self._mu:
            self._waiters.setdefault(job_id, set()).add(key)
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            with self._mu:
                w = self._waiters.get(job_id)
                if w is not None:
                    w.discard(key)
                    if not w:
                        del self._waiters[job_id]

    def state(self, job_id: str, lookup: Callable[[], str]) -> str:
        """The job's state for its followers, from what the job service told the hub, else ``lookup()``."""
        with self._mu:
            known = self._state.get(job_id)
        if known is None:
            known = lookup()
            with self._mu:
                self._state.setdefault(job_id, known)
        return known

    def followers(self) -> int:
        with self._mu:
            return self._streams

    def _count(self, n: int) -> None:
        with self._mu:
            self._streams += n


async def follow(hub: LogHub, job_id: str, path: str, offset: int, lookup: Callable[[], str],
                 recheck_s: float = 1.0, idle: bool = False) -> AsyncIterator[tuple[list[journal.Record], int]]:
    """Batches of records from ``offset`` and the offset after each, until the job is finished and everything
    was sent, or it is gone (deleted meanwhile). ``lookup()`` says "active", "finished" or "gone". With ``idle``,
    also an empty batch after each wait (at most ``recheck_s`` apart), for a follower that has more to watch than
    the journal (a page's status and progress)."""
    hub._count(1)
    try:
        while True:
            state = hub.state(job_id, lookup)  # asked before reading: a finished job's journal is complete
            if state == "gone":
                return
            recs, nxt = journal.read(path, offset)
            if nxt != offset:
                offset = nxt
                if recs:
                    yield recs, offset
                continue
            if state == "finished":
                return
            await hub.wait(job_id, recheck_s)
            if idle:
                yield [], offset
    finally:
        hub._count(-1)
