"""runners/workers.py: attempts' threads reused, never a task queued behind another, idle ones ending."""
from __future__ import annotations

import threading
import time

from runners.workers import Workers


def test_a_task_never_waits_for_another_and_ended_tasks_threads_are_reused():
    w = Workers("t", idle_max=2, idle_s=5)
    release = threading.Event()
    started = []
    names = []

    def task(i):
        def fn():
            started.append(i)
            names.append(threading.current_thread().name)
            release.wait(10)
        return fn
    for i in range(5):  # five at once, each blocked: five threads, none waits for another
        w.run(task(i), f"job-{i}")
    deadline = time.monotonic() + 5
    while len(started) < 5:
        assert time.monotonic() < deadline, f"only {started} started"
        time.sleep(0.01)
    assert sorted(names) == [f"job-{i}" for i in range(5)], names
    release.set()
    deadline = time.monotonic() + 5
    while w._idle < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.1)
    assert w._idle == 2 and w._made == 5, "two kept idle, three ended"
    done = threading.Event()
    w.run(done.set, "again")
    assert done.wait(5) and w._made == 5, "an idle thread took it"
    deadline = time.monotonic() + 5
    while len([t for t in threading.enumerate() if t.name.startswith("t-")]) != 2 or w._idle != 2:
        assert time.monotonic() < deadline, [t.name for t in threading.enumerate()]
        time.sleep(0.01)


def test_idle_threads_end_after_their_time_and_a_failing_task_leaves_its_thread():
    w = Workers("u", idle_max=4, idle_s=0.2)
    ran = threading.Event()

    def boom():
        ran.set()
        raise RuntimeError("a task's bug")
    w.run(boom, "boom")
    assert ran.wait(5)
    deadline = time.monotonic() + 5
    while w._idle != 1:
        assert time.monotonic() < deadline, "the thread lived on"
        time.sleep(0.01)
    assert w._made == 1
    ok = threading.Event()
    w.run(ok.set, "next")
    assert ok.wait(5)
    deadline = time.monotonic() + 5
    while any(t.name.startswith("u-") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "an idle thread outlived its time"
        time.sleep(0.05)
    assert w._idle == 0


def test_closed_workers_leave_no_thread():
    w = Workers("v", idle_max=4, idle_s=60)
    busy = threading.Event()
    for _ in range(3):
        done = threading.Event()
        w.run(done.set, "quick")
        assert done.wait(5)
    w.run(lambda: busy.wait(10), "busy")
    w.close()
    busy.set()
    deadline = time.monotonic() + 5
    while any(t.name.startswith("v-") for t in threading.enumerate()):
        assert time.monotonic() < deadline, [t.name for t in threading.enumerate()]
        time.sleep(0.02)
    after = threading.Event()
    w.run(after.set, "after close")  # still runs, in a thread that ends with it
    assert after.wait(5)
