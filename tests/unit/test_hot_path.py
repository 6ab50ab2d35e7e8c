"""The structural facts a short job's speed rests on (bench/bench_spine.py measures the speed itself; nothing here
times anything): how many durable commits a job costs, that a job with room is claimed in its Execute's own
commit, that the dispatcher lists the queue without parsing it, and that the process executor is woken by the
supervisor (a pipe, a pidfd) rather than polling for it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from engine.model import FileDesc, JobParameters
from engine.state import JobStatus as S
from tests.unit.conftest import fake_engine
from runners.executors import process as proc
from runners.executors import supervisor as sv
from runners.executors.base import RunSpec


@pytest.fixture
def engine(tmp_path):
    e = fake_engine(tmp_path, max_concurrent_jobs=1)
    yield e
    e.stop(stop_jobs=True)


class Commits:
    """Every COMMIT the store's connection runs (SQLite's own statement trace)."""

    def __init__(self, store):
        self.n = 0
        self._store = store
        store._db.set_trace_callback(self._seen)

    def _seen(self, sql: str) -> None:
        if sql.strip().upper() == "COMMIT":
            self.n += 1

    def close(self):
        self._store._db.set_trace_callback(None)


def wait(engine, job_id, statuses, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        job = engine.store.get_job(job_id)
        if job.status in statuses:
            return job
        assert time.monotonic() < deadline, f"job stayed {job.status.name}"
        time.sleep(0.01)


def run_job(engine, script: dict, outputs=()):
    op, _ = engine.jobs.create("p1", JobParameters(cmd="fake " + json.dumps(script),
                                                   output_files=[FileDesc(path=p) for p in outputs]))
    engine.jobs.execute(op.job_id)
    return op.job_id


def test_a_job_without_outputs_costs_four_commits_and_its_history_has_every_status(engine):
    commits = Commits(engine.store)
    try:
        jid = run_job(engine, {"stdout": "hi\n"})
        job = wait(engine, jid, {S.SUCCESS, S.ERROR})
    finally:
        commits.close()
    assert job.status == S.SUCCESS
    # Create; Execute (queued and claimed at once); EXECUTING; the end (through UPLOADING_OUTPUT, in the same commit)
    assert commits.n == 4
    assert [s for s, _ in job.status_history][-3:] == ["EXECUTING", "UPLOADING_OUTPUT", "SUCCESS"]


def test_a_job_with_outputs_is_shown_uploading_before_it_ends(engine):
    seen = []
    hub = engine.lifecycle.records.hub
    notify = hub.notify

    def watched(job_id, what):
        seen.append(engine.store.get_job(job_id).status)
        notify(job_id, what)
    hub.notify = watched
    jid = run_job(engine, {"outputs": {"o.txt": "x"}}, outputs=["o.txt"])
    job = wait(engine, jid, {S.SUCCESS, S.ERROR})
    assert job.status == S.SUCCESS and [f.desc.path for f in job.output_files] == ["o.txt"]
    assert S.UPLOADING_OUTPUT in seen  # stored (and so observable) on its own while the outputs are collected


def test_execute_claims_a_job_with_room_in_its_own_commit_and_queues_one_behind_others(engine):
    first = run_job(engine, {"run_for": 30})
    assert engine.store.get_job(first).attempt == 1  # handed over by Execute itself: no dispatcher hop
    second = run_job(engine, {"run_for": 0})
    third = run_job(engine, {"run_for": 0})
    assert [j for j, _ in engine.store.queued()] == [second, third]  # no room: queued, in order
    assert engine.store.has_queued()
    engine.jobs.cancel(first, "done with it")
    for j in (second, third):
        assert wait(engine, j, {S.SUCCESS, S.ERROR}).status == S.SUCCESS
    assert engine.store.queued() == [] and not engine.store.has_queued()


def test_the_dispatcher_does_not_read_the_records_of_jobs_it_cannot_hand_over(engine, monkeypatch):
    blocker = run_job(engine, {"run_for": 30})
    queued = [run_job(engine, {"run_for": 0}) for _ in range(5)]
    read = []
    real = engine.store.get_job
    monkeypatch.setattr(engine.store, "get_job", lambda job_id: (read.append(job_id), real(job_id))[1])
    engine.lifecycle._dispatch_once()
    assert not set(read) & set(queued)  # the only slot is taken: no queued record is parsed
    monkeypatch.undo()
    engine.jobs.cancel(blocker, "done with it")
    for j in queued:
        assert wait(engine, j, {S.SUCCESS, S.ERROR}).status == S.SUCCESS


def _spec(tmp_path, cmd: str) -> RunSpec:
    run = tmp_path / "run"
    run.mkdir()
    return RunSpec(job_id="dsunit", run_dir=str(run), argv=["bash", "-c", cmd], cwd=str(tmp_path),
                   env={"PATH": os.environ["PATH"]}, secret_env={}, sandboxed=False, journal=str(run / "journal"),
                   stdout=str(run / "stdout.txt"), stderr=str(run / "stderr.txt"))


@pytest.mark.parametrize("standby", [True, False])
def test_the_executor_is_woken_by_the_supervisor_not_by_polling(tmp_path, monkeypatch, standby):
    ex = proc.ProcessExecutor(standby=standby)
    try:
        if standby:  # the standby is being started in the background: take it once it is there
            while ex._standby is None:
                threading.Event().wait(0.01)
        release = tmp_path / "release"
        h = ex.start(_spec(tmp_path, f"while [ ! -e {release} ]; do sleep 0.01; done"))
        assert h.notify >= 0

        def no_polling(*_):
            raise AssertionError("the executor slept in a poll loop")
        monkeypatch.setattr(proc.time, "sleep", no_polling)
        assert ex.confirm(h, timeout=30)
        release.touch()
        result = ex.wait(h)
        assert result.return_code == 0 and h.notify == -1
    finally:
        monkeypatch.undo()
        ex.close()


def test_a_start_that_fails_wakes_confirm_with_the_supervisors_end(tmp_path, monkeypatch):
    ex = proc.ProcessExecutor(standby=False)
    spec = _spec(tmp_path, "true")
    spec.argv = [str(tmp_path / "no-such-program")]
    h = ex.start(spec)
    monkeypatch.setattr(proc.time, "sleep", lambda *_: (_ for _ in ()).throw(AssertionError("polled")))
    assert ex.confirm(h, timeout=30) is False  # its end (EOF) without a start: never started
    result = ex.wait(h)
    assert result.failure is not None and "cannot start the job" in result.failure.message


def test_a_re_adopted_supervisor_is_waited_for_by_its_pidfd(tmp_path, monkeypatch):
    ex = proc.ProcessExecutor(standby=False)
    release = tmp_path / "release"
    spec = _spec(tmp_path, f"while [ ! -e {release} ]; do sleep 0.01; done")
    first = ex.start(spec)
    assert ex.confirm(first, timeout=30)
    adopted = ex.adopt(spec.run_dir, "dsunit")  # as a restarted engine sees it: not its child, no pipe
    assert adopted is not None and adopted.popen is None and adopted.notify == -1
    monkeypatch.setattr(proc.time, "sleep", lambda *_: (_ for _ in ()).throw(AssertionError("polled")))
    assert ex.wait(adopted, timeout=0.05) is None  # still running: the pidfd is not readable yet
    waiter = threading.Thread(target=lambda: first.popen.wait())  # reaps it, as its parent must
    waiter.start()
    release.touch()
    result = ex.wait(adopted)
    waiter.join(30)
    assert result.return_code == 0
    ex.cleanup(first)


def test_the_supervisor_keeps_the_notify_pipe_from_the_job(tmp_path):
    """The job never holds the pipe: the engine's EOF means the supervisor's end, not the job's children's."""
    r, w = os.pipe()
    pipe = f"pipe:[{os.fstat(w).st_ino}]"
    spec = _spec(tmp_path, "for f in /proc/$$/fd/*; do readlink $f; done > fds.txt")
    sv.write_atomic(os.path.join(spec.run_dir, "spec"), spec.supervisor_spec(), durable=False)
    p = subprocess.Popen([sys.executable, "-I", "-S", sv.__file__, spec.run_dir, f"--notify={w}"],
                         stdin=subprocess.PIPE, pass_fds=(w,))
    os.close(w)
    p.communicate(b"")
    assert os.read(r, 10) == b"S" and os.read(r, 10) == b""  # the start, then its end
    os.close(r)
    fds = (tmp_path / "fds.txt").read_text()
    assert "pipe:[" in fds and pipe not in fds  # the job's stdout and stderr are pipes; the notify pipe is not its


def test_a_job_is_looked_after_before_it_is_stored_claimed(engine, monkeypatch):
    """Else the reconciler, between the claim's commit and the hand-over, would take it for one nobody runs."""
    unowned = []
    real = engine.store.update_job

    def update_job(job, **kw):
        if job.status == S.PREPARING and job.attempt == 1 and not engine.lifecycle._looked_after(job.id):
            unowned.append(job.id)
        return real(job, **kw)
    monkeypatch.setattr(engine.store, "update_job", update_job)
    first = run_job(engine, {"run_for": 30})  # claimed by its Execute
    second = run_job(engine, {"run_for": 0})  # queued, claimed by the dispatcher
    engine.jobs.cancel(first, "done with it")
    assert wait(engine, second, {S.SUCCESS, S.ERROR}).status == S.SUCCESS
    assert engine.store.get_job(first).attempt == 1 and engine.store.get_job(second).attempt == 1
    assert unowned == []
