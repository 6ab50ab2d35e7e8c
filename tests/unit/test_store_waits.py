"""engine/store.py wait_change: what a held GetOperation waits on (engine/api/servicers.py PolledOperations.held)."""
from __future__ import annotations

import threading
import time

from engine.store import Store


def test_a_wait_ends_at_its_jobs_write_only(tmp_path):
    store = Store(tmp_path / "db")
    gen = store.generation("a")
    got = {}

    def wait():
        t = time.monotonic()
        got["changed"] = store.wait_change("a", gen, 10)
        got["took"] = time.monotonic() - t
    th = threading.Thread(target=wait)
    th.start()
    time.sleep(0.1)
    store._wrote("b")  # every write of job b's record or operations calls this
    time.sleep(0.2)
    assert th.is_alive(), "another job's write ended the wait"
    store._wrote("a")
    th.join(5)
    assert got["changed"] and got["took"] < 5
    assert store._waits == {}, "nothing kept for a job nobody waits on"
    assert store.wait_change("a", gen, 10), "a write before the wait began counts: it is past that generation"
    t = time.monotonic()
    assert not store.wait_change("a", store.generation("a"), 0.2) and 0.2 <= time.monotonic() - t < 5


def test_a_wait_ends_when_its_server_stops_or_the_store_closes(tmp_path):
    store = Store(tmp_path / "db")
    ended = threading.Event()
    out = []
    th = threading.Thread(target=lambda: out.append(store.wait_change("a", 0, 30, ended.is_set)))
    th.start()
    time.sleep(0.1)
    store.wake_waits()
    time.sleep(0.1)
    assert th.is_alive(), "a wake with nothing ended is looked at, then waited on"
    ended.set()
    store.wake_waits()
    th.join(5)
    assert out == [False]
    th = threading.Thread(target=lambda: out.append(store.wait_change("a", 0, 30)))
    th.start()
    time.sleep(0.1)
    store.close()
    th.join(5)
    assert out == [False, False] and not th.is_alive()
