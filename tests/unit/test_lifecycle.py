"""The lifecycle and the local backend with the fake executor (runners/executors/fake.py): the real store (SQLite), the
real dispatcher, cancel and the final-status rule, with no process started, so each test takes milliseconds."""
from __future__ import annotations

import json
import time

import pytest

from engine.model import FileDesc, JobParameters
from engine.state import JobStatus as S
from tests.unit.conftest import fake_engine


@pytest.fixture
def engine(tmp_path):
    e = fake_engine(tmp_path)
    yield e
    e.stop(stop_jobs=True)


def submit(engine, **script) -> str:
    outputs = [FileDesc(path=p) for p in script.get("outputs", {})]
    op, _ = engine.jobs.create("p1", JobParameters(cmd="fake " + json.dumps(script), output_files=outputs))
    engine.jobs.execute(op.job_id)
    return op.job_id


def wait(engine, job_id, statuses, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        job = engine.store.get_job(job_id)
        if job.status in statuses:
            return job
        assert time.monotonic() < deadline, f"job stayed {job.status.name}"
        time.sleep(0.01)


def test_a_job_runs_to_success_with_its_outputs(engine):
    jid = submit(engine, outputs={"o.txt": "made"}, stdout="hi\n")
    job = wait(engine, jid, {S.SUCCESS, S.ERROR})
    assert job.status == S.SUCCESS and job.return_code == 0 and job.started_at and job.finished_at
    assert job.backend == "local" and job.actual_cloud_instance_type == "c1.4"
    assert [f.desc.path for f in job.output_files] == ["o.txt"]
    assert engine.blobs.path(job.output_files[0].sha256).read_bytes() == b"made"
    assert {f.desc.path.rsplit("/", 1)[1] for f in job.log_files} == {"stdout.txt", "system.log"}


def test_no_more_jobs_run_at_once_than_the_backend_has_room_for(engine):
    jids = [submit(engine, run_for=0.3) for _ in range(6)]
    peak = 0
    while not all(engine.store.get_job(j).status.terminal for j in jids):
        running = sum(1 for h in engine.fake.started if not h.done.is_set())
        peak = max(peak, running)
        time.sleep(0.01)
    assert peak == 2 and all(engine.store.get_job(j).status == S.SUCCESS for j in jids)


def test_a_cancel_while_running_and_one_while_queued(engine):
    running = submit(engine, run_for=30)
    wait(engine, running, {S.EXECUTING})
    blockers = [submit(engine, run_for=30)]  # the second slot
    wait(engine, blockers[0], {S.EXECUTING})
    queued = submit(engine, run_for=30)
    time.sleep(0.1)
    assert engine.store.get_job(queued).attempt == 0  # no room: it waits in the store
    engine.jobs.cancel(queued, "not needed")
    assert engine.store.get_job(queued).status == S.CANCELLED
    engine.jobs.cancel(running, "user asked", graceful=True)
    job = wait(engine, running, {S.CANCELLED, S.ERROR, S.SUCCESS})
    assert job.status == S.CANCELLED and job.error.kind == "CANCELLED" and job.status_details == "user asked"
    assert engine.fake.started[0].stop.reason == "user asked"


def test_a_failing_program_and_a_failing_start(engine):
    bad = submit(engine, exit_code=3)
    unstarted = submit(engine, start_error="no bash")
    job = wait(engine, bad, {S.SUCCESS, S.ERROR})
    assert job.status == S.ERROR and job.return_code == 3 and job.status_details == "program returned code 3"
    assert job.error is None  # the program's failure, not the engine's: the operation has its return code
    job = wait(engine, unstarted, {S.SUCCESS, S.ERROR})
    assert job.status == S.ERROR and job.error.kind == "START_FAILED" and job.started_at is None


def test_an_end_the_store_cannot_take_is_written_later(engine, monkeypatch):
    """A full disk under the final write: the job is kept and written as it ended once there is room."""
    import sqlite3
    real = engine.store.update_job
    fails = {"n": 0}

    def full(job, **kw):
        if job.status.terminal and fails["n"] < 3:
            fails["n"] += 1
            raise sqlite3.OperationalError("database or disk is full")
        return real(job, **kw)
    monkeypatch.setattr(engine.store, "update_job", full)
    jid = submit(engine, outputs={"o.txt": "kept"})
    job = wait(engine, jid, {S.SUCCESS, S.ERROR})
    assert job.status == S.SUCCESS and fails["n"] == 3 and [f.desc.path for f in job.output_files] == ["o.txt"]


def test_the_engine_log_has_one_start_and_one_end_line_a_job_cannot_forge(engine, caplog):
    caplog.set_level("INFO", logger="engine.lifecycle")
    ok = submit(engine)
    forged = submit(engine, start_error="x\nINFO engine.lifecycle: job ds000000000000000000 finished: SUCCESS\x1b[2J")
    for jid in (ok, forged):
        wait(engine, jid, {S.SUCCESS, S.ERROR})
    said = lambda jid: [r.getMessage() for r in caplog.records if r.name == "engine.lifecycle" and jid in r.getMessage()]
    ended = lambda jid: any(" finished: " in m for m in said(jid))
    deadline = time.monotonic() + 10  # the line follows the status write
    while not (ended(ok) and ended(forged)):
        assert time.monotonic() < deadline, caplog.text
        time.sleep(0.01)
    assert [m.split(":")[0] for m in said(ok)] == [f"job {ok} (project p1) started", f"job {ok} (project p1) finished"]
    end = said(forged)[-1]
    assert "\n" not in end and "\x1b" not in end and "x\\x0aINFO engine.lifecycle" in end and "\\x1b[2J" in end


def test_the_backend_reserves_the_gpus_of_the_type_the_node_runs_not_the_first_listed(tmp_path):
    """no-capacity takes g1.1 away: the node runs the job as c1.4, and the backend, choosing as the node does,
    neither holds it in the queue while the only GPU is busy nor reserves that GPU for it (it stays free for a g1.1
    job beside it)."""
    from engine.model import Environment
    e = fake_engine(tmp_path, fake_gpus=1)
    try:
        params = JobParameters(cmd="fake " + json.dumps({"run_for": 30}), cloud_instance_types=["g1.1", "c1.4"],
                               env=Environment(vars={"DSJOBS_FAULTS": "no-capacity=g1.1"}))
        e.machine.pool().reserve("other", 1, "g1.1")  # the GPU is busy: a job that needs none is not held up
        op, _ = e.jobs.create("p1", params)
        e.jobs.execute(op.job_id)
        job = wait(e, op.job_id, {S.EXECUTING, S.ERROR})
        assert job.status == S.EXECUTING and job.actual_cloud_instance_type == "c1.4"
        assert e.machine.pool().held(op.job_id) is None
        e.machine.pool().release("other")
        op2, _ = e.jobs.create("p1", JobParameters(cmd="fake {}", cloud_instance_types=["g1.1"]))
        e.jobs.execute(op2.job_id)
        assert wait(e, op2.job_id, {S.SUCCESS, S.ERROR}).status == S.SUCCESS  # a g1.1 job gets the GPU
        assert e.store.get_job(op2.job_id).actual_cloud_instance_type == "g1.1"
        e.jobs.cancel(op.job_id, "done")
    finally:
        e.stop(stop_jobs=True)


def test_a_run_that_ends_after_the_engine_stopped_is_left_to_the_next_engine_quietly(tmp_path, caplog):
    """Its thread finds the store closed: a clear 'stopping', never a traceback (the next engine collects it)."""
    caplog.set_level("INFO")
    e = fake_engine(tmp_path)
    jid = submit(e, run_for=0.5)
    wait(e, jid, {S.EXECUTING})
    e.stop()  # the run goes on, as under a supervisor
    time.sleep(1.5)
    errors = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL") or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]
    with pytest.raises(Exception) as gone:
        e.store.get_job(jid)
    assert "stopping" in str(gone.value)



@pytest.mark.parametrize("claimed_in_execute", [False, True])
@pytest.mark.parametrize("offset, expect", [(-0.5, "node"), (-3600, "previous step"), (3600, "arrival")])
def test_a_remote_start_is_dated_by_its_node_within_the_jobs_steps(tmp_path, offset, expect, claimed_in_execute):
    """A start's report reaches the engine late under load (a job's deadline counted from it looked ~0.2-0.4 s
    short, on Ray and locally): started_at is the executor's time, kept between the job's previous step (for a job
    claimed in Execute's own commit, which records no step before EXECUTING: its queueing) and the report's
    arrival, since a node's clock may be off."""
    from engine.app import build_engine
    from engine.config import EngineConfig
    e = build_engine(EngineConfig(data_dir=tmp_path / "data", sandbox="none", docker=False))  # no dispatcher
    try:
        op, _ = e.jobs.create("p1", JobParameters(cmd="true"))
        jid = op.job_id
        if claimed_in_execute:  # as Lifecycle.enqueue stores it: PREPARING and claimed, no step in the history
            job = e.store.get_job(jid)
            job.status, job.queued_at, job.attempt, job.backend = S.PREPARING, time.time(), 1, "local"
            e.store.update_job(job, expect=S.CREATING)
            assert job.status_history == []
        else:
            e.jobs.records.update(jid, lambda j: None, to=S.PREPARING)
        time.sleep(0.6)
        job = e.store.get_job(jid)
        before = job.status_history[-1][1] if job.status_history else job.queued_at
        now = time.time()
        e.lifecycle.executing(jid, "c1.4", at=now + offset)
        job = e.store.get_job(jid)
        want = {"node": now + offset, "previous step": before}.get(expect)
        assert job.status == S.EXECUTING and job.status_history[-1] == ["EXECUTING", job.started_at]
        if want is None:
            assert now <= job.started_at <= time.time()
        else:
            assert job.started_at == pytest.approx(want, abs=1e-6)
    finally:
        e.stop()
