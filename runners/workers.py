"""Threads that outlive their task: the engine's attempts, and each job's resource sampler.

A job's attempt runs in a thread of its own for as long as the job runs, and so does its sampler.
``threading.Thread.start`` waits until the new thread has been scheduled and said so: ~1 ms each here, on the job's
path. A thread left idle by an
attempt that ended takes the next one instead, and the caller does not wait for it. Not concurrent.futures'
pool: its workers are joined at the interpreter's exit, so a process with a job still running (the job outlives the
engine) could not exit; these are daemon threads, as the attempts' own threads were.
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Callable

log = logging.getLogger(__name__)


class Workers:
    def __init__(self, prefix: str, idle_max: int = 8, idle_s: float = 60.0):
        self.prefix = prefix
        self.idle_max = idle_max  # idle threads kept at most; past that an ended task's thread ends too
        self.idle_s = idle_s  # and an idle thread ends after this long without a task
        self._tasks: "queue.SimpleQueue[tuple[Callable[[], None], str]]" = queue.SimpleQueue()
        self._mu = threading.Lock()
        self._idle = 0
        self._made = 0
        self._closed = False

    def close(self) -> None:
        """Idle threads end now, busy ones after their task (the engine is stopping: an embedding process such as
        `dsjobs run` sees no thread of it left)."""
        with self._mu:
            self._closed = True
            for _ in range(self._idle):
                self._tasks.put((None, ""))
            self._idle = 0

    def run(self, fn: Callable[[], None], name: str) -> None:
        """``fn`` in a thread named ``name`` while it runs: an idle one if there is, else a new one. Never
        queued behind another task: a task taken by no idle thread gets a thread of its own."""
        with self._mu:
            if self._idle > 0:
                self._idle -= 1  # that thread is this task's: the next run() does not count on it
                self._tasks.put((fn, name))
                return
            self._made += 1
            n = self._made
        threading.Thread(target=self._work, args=(fn, name), name=f"{self.prefix}-{n}", daemon=True).start()

    def _work(self, fn: Callable[[], None], name: str) -> None:
        me = threading.current_thread()
        idle_name = me.name
        while True:
            me.name = name
            try:
                fn()
            except BaseException:  # noqa: BLE001 - a task's own handler reports; the thread must live on
                log.exception("task %s failed", name)
            finally:
                me.name = idle_name
                fn = None  # an idle thread keeps nothing of its last task (an attempt and all it holds)
            with self._mu:
                if self._idle >= self.idle_max or self._closed:
                    return
                self._idle += 1
            while True:
                try:
                    fn, name = self._tasks.get(timeout=self.idle_s)
                    if fn is None:
                        return  # closed
                    break
                except queue.Empty:
                    with self._mu:
                        # a run() may have counted on this thread as its wait ended: its task is queued, and
                        # taken at the next look; otherwise this thread is one idle thread fewer
                        if self._tasks.empty():
                            self._idle -= 1
                            return
