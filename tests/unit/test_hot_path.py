"""The structural facts a short job's speed rests on (bench/bench_spine.py measures the speed itself; nothing here
times anything): how many durable commits a job costs, that a job with room is claimed in its Execute's own
commit, that the dispatcher lists the queue without parsing it, and that the process executor is woken by the
supervisor (a pipe, a pidfd) rather than polling for it."""
from __future__ import annotations

import json
import marshal
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


@pytest.mark.parametrize("forkserver", [True, False])
def test_the_executor_is_woken_by_the_supervisor_not_by_polling(tmp_path, monkeypatch, forkserver):
    ex = proc.ProcessExecutor(forkserver=forkserver)
    release = tmp_path / "release"
    try:
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
        release.touch()  # never a job left waiting, whatever failed above
        ex.close()


def test_a_graceful_stop_asked_for_while_the_sandbox_is_made_reaches_the_job(tmp_path):
    # Found by an attack: a graceful cancel sent while bwrap was still making the job's sandbox reached no process
    # of the job (bwrap's own two are spared a graceful signal) and was never sent again: the job ran on until its
    # SIGKILL, the whole grace period later. A stop already there when the supervisor starts is that race, certain.
    import signal
    from runners import sandbox as sbx
    spec = _spec(tmp_path, "trap 'echo got TERM; exit 0' TERM; echo READY; while true; do sleep 0.05; done")
    work = tmp_path / "work"
    work.mkdir()
    box = sbx.job_sandbox(spec.run_dir, str(work), hide=sbx.hidden_paths(tmp_path / "data"))
    spec.argv, spec.cwd, spec.sandboxed = sbx.argv(sbx.check(), box, spec.argv), str(work), True
    sv.write_atomic(os.path.join(spec.run_dir, "stop"), {"signal": int(signal.SIGTERM), "timeout": 30.0,
                                                          "reason": "cancelled"}, durable=False)
    ex = proc.ProcessExecutor(forkserver=False)
    try:
        t = time.monotonic()
        result = ex.wait(ex.start(spec), timeout=60)
        took = time.monotonic() - t
    finally:
        ex.close()
    # The signal came before the job's trap (143) or after it (0): either way at once, never the SIGKILL (137).
    assert result is not None and result.return_code in (0, 143) and took < 10, (result, took)


def test_the_start_reported_is_the_one_the_deadline_counts_from(tmp_path):
    # A job's recorded start is the executor's (the supervisor's, by this machine's clock), so a job stopped at its
    # deadline ran its whole allowance by its record, however late the report of its start reached the engine.
    ex = proc.ProcessExecutor(forkserver=False)
    try:
        spec = _spec(tmp_path, "trap 'exit 0' TERM; while true; do sleep 0.02; done")
        spec.max_duration_s = 0.3
        before = time.time()
        h = ex.start(spec)
        assert ex.confirm(h, timeout=30)
        at = ex.started_at(h)
        assert before <= at <= time.time()
        result = ex.wait(h)
        ended = time.time()
        assert result.stopped is not None and result.stopped.kind == "deadline"
        assert 0.3 <= ended - at < 10
        assert sv.read_file(os.path.join(spec.run_dir, "status"))["started_at"] == at
    finally:
        ex.close()
    assert ex.started_at(proc.ProcessHandle(str(tmp_path / "nowhere"), 1, 0)) is None


def test_the_job_is_found_on_its_own_path_as_execvpe_finds_it(tmp_path):
    # The supervisor's own PATH search (no `import warnings` between fork and exec): the job's PATH, in order, past
    # entries that are missing or not directories; a name found nowhere is a start that failed, not a hang.
    (tmp_path / "afile").write_text("")
    denied = tmp_path / "denied"
    denied.mkdir()
    (denied / "hello").write_text("#!/bin/sh\necho wrong\n")  # not executable: EACCES, and the search goes on
    good = tmp_path / "good"
    good.mkdir()
    (good / "hello").write_text("#!/bin/sh\necho found\n")
    (good / "hello").chmod(0o755)
    ex = proc.ProcessExecutor(forkserver=True)
    try:
        spec = _spec(tmp_path, "")
        spec.argv = ["hello"]
        spec.env = {"PATH": f"{tmp_path / 'missing'}:{tmp_path / 'afile'}:{denied}:{good}"}
        h = ex.start(spec)
        assert ex.confirm(h, timeout=30) and ex.wait(h).return_code == 0
        assert (tmp_path / "run" / "stdout.txt").read_text() == "found\n"
        (tmp_path / "run").rename(tmp_path / "run1")
        spec = _spec(tmp_path, "")
        spec.argv = ["no-such-program-here"]
        h = ex.start(spec)
        assert not ex.confirm(h, timeout=30)
        result = ex.wait(h)
        assert result.return_code == 127 and result.failure.kind.name == "START_FAILED"
        assert "No such file" in result.failure.message
    finally:
        ex.close()


def _session(pid: int) -> tuple[int, int]:
    """(parent, session) of a process, from /proc."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return int(fields[1]), int(fields[3])


def test_supervisors_are_forked_by_the_fork_server_in_sessions_of_their_own_and_outlive_it(tmp_path):
    """A fork instead of an interpreter start per job, and the supervisor is what one started alone is: not the
    engine's child, a session leader, its secrets only in memory, alive and waited for (its pidfd) after the fork
    server is gone; a fork server found dead is started again."""
    ex = proc.ProcessExecutor(forkserver=True)
    release = tmp_path / "release"
    try:
        spec = _spec(tmp_path, f'echo "$THE_SECRET" > secret.txt; while [ ! -e {release} ]; do sleep 0.01; done')
        spec.secret_env = {"THE_SECRET": "s3cr3t-value"}
        h = ex.start(spec)
        assert ex.confirm(h, timeout=30)
        server = ex._server._popen
        assert h.popen is None and h.pidfd >= 0 and h.notify >= 0
        parent, sid = _session(h.pid)
        assert parent == server.pid and parent != os.getpid()
        assert sid == h.pid and sid != os.getsid(0) and sid != os.getsid(server.pid)
        assert b"s3cr3t" not in open(os.path.join(spec.run_dir, "spec"), "rb").read()
        server.kill()  # the fork server's end ends no job
        server.wait(10)
        assert ex.wait(h, timeout=0.2) is None and h.alive()
        release.touch()
        result = ex.wait(h, timeout=30)
        assert result is not None and result.return_code == 0, result
        assert (tmp_path / "secret.txt").read_text() == "s3cr3t-value\n"
        again = tmp_path / "again"
        again.mkdir()
        h2 = ex.start(_spec(again, "true"))  # a new fork server
        assert ex.wait(h2, timeout=30).return_code == 0 and h2.popen is None
        assert ex._server._popen.pid != server.pid
    finally:
        release.touch()
        ex.close()


def test_a_forked_supervisor_that_never_gets_its_go_ends_without_touching_the_run(tmp_path):
    """The engine's go (the secrets, then EOF) comes only after it has the supervisor's pid and pidfd: a start whose
    answer it lost (the fork server died, the engine was killed) is never made behind its back."""
    ex = proc.ProcessExecutor(forkserver=True)
    try:
        spec = _spec(tmp_path, "touch ran")
        sv.write_atomic(os.path.join(spec.run_dir, "spec"), spec.supervisor_spec(), durable=False)
        notify_r, notify_w = os.pipe()
        go_r, go_w = os.pipe()
        err = os.open(os.path.join(spec.run_dir, "supervisor.err"), os.O_WRONLY | os.O_CREAT, 0o600)
        pid, _, pidfd = ex._server.spawn(spec.run_dir, notify_w, err, go_r)
        for fd in (notify_w, go_r, err):
            os.close(fd)
        os.close(go_w)  # no go
        assert proc._readable(pidfd, 30)  # it ended
        os.close(pidfd)
        assert os.read(notify_r, 10) == b""  # never said it started
        os.close(notify_r)
        assert proc.run_state(spec.run_dir) == "never" and not (tmp_path / "ran").exists()
    finally:
        ex.close()


def test_a_start_whose_answer_was_lost_is_asked_again_on_new_pipes(tmp_path, monkeypatch):
    """The fork server forked a supervisor but its answer never arrived (here: read, then dropped): that child
    holds the first request's go pipe, so the request is made again on new pipes and the first go pipe is closed
    unwritten. The job runs once, in the supervisor the engine knows, with its secrets; the first child ends
    untouched (with the same pipes reused it could take the secrets and run the job behind the engine's back)."""
    ex = proc.ProcessExecutor(forkserver=True)
    real = proc.socket.recv_fds
    lost = []

    def recv_fds(*a, **k):
        got = real(*a, **k)
        if not lost:
            lost.append(got)
            for fd in got[1]:
                os.close(fd)
            raise OSError("answer lost")
        return got
    monkeypatch.setattr(proc.socket, "recv_fds", recv_fds)
    try:
        spec = _spec(tmp_path, 'echo "$TOKEN" >> runs.txt')
        spec.secret_env = {"TOKEN": "s3cr3t"}
        h = ex.start(spec)
        assert lost and h.popen is None  # the second request's supervisor, forked
        assert ex.wait(h, timeout=30).return_code == 0
        first = marshal.loads(lost[0][0])["pid"]
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{first}") and not proc.is_zombie(first) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not os.path.exists(f"/proc/{first}") or proc.is_zombie(first), "the first child did not end"
        assert (tmp_path / "runs.txt").read_text() == "s3cr3t\n"
        assert sv.read_file(os.path.join(spec.run_dir, "supervisor"))["pid"] == h.pid != first
    finally:
        monkeypatch.undo()
        ex.close()


def test_a_process_whose_main_thread_exited_is_killed_with_the_job(tmp_path):
    # Its first thread called pthread_exit(): /proc/PID/stat says Z while another thread runs on. That process is
    # not "already ending", and nothing of the job outlives the job's end.
    beat = tmp_path / "beat"
    code = ("import ctypes, threading, time\n"
            "def beat():\n"
            "    while True:\n"
            f"        open({str(beat)!r}, 'a').write('.')\n"
            "        time.sleep(0.02)\n"
            "threading.Thread(target=beat, daemon=True).start()\n"
            "time.sleep(0.1)\n"
            "ctypes.CDLL(None).pthread_exit(None)\n")
    (tmp_path / "zombie_leader.py").write_text(code)
    ex = proc.ProcessExecutor(forkserver=True)
    try:
        h = ex.start(_spec(tmp_path, f"{sys.executable} {tmp_path / 'zombie_leader.py'} & sleep 0.5"))
        assert ex.wait(h, timeout=30).return_code == 0
        size = beat.stat().st_size
        assert size > 0
        time.sleep(0.3)
        assert beat.stat().st_size == size, "a thread of the job's process still runs after the job's end"
    finally:
        ex.close()


FLEE = """import os, sys, time
beat, stop = sys.argv[1], sys.argv[2]
end = time.time() + 20  # a test that failed leaves nothing running for long
while time.time() < end and not os.path.exists(stop):
    if os.fork():
        os._exit(0)
    os.setsid()
    open(beat, "a").write(".")
"""


def test_a_process_forking_and_exiting_in_a_loop_does_not_outlive_its_unconfined_job(tmp_path):
    # Most looks at the process table see only its exiting parents: the end waits for the supervisor (the job's
    # subreaper) to have no child at all, killing every descendant on the way.
    beat, stop = tmp_path / "beat", tmp_path / "stop"
    (tmp_path / "flee.py").write_text(FLEE)
    ex = proc.ProcessExecutor(forkserver=True)
    try:
        for cmd in (f"exec {sys.executable} flee.py {beat} {stop}", f"{sys.executable} flee.py {beat} {stop} & sleep 0.3"):
            beat.unlink(missing_ok=True)
            spec = _spec(tmp_path, cmd)
            h = ex.start(spec)
            assert ex.wait(h, timeout=30) is not None
            time.sleep(0.3)
            size = beat.stat().st_size if beat.exists() else 0
            time.sleep(0.5)
            assert (beat.stat().st_size if beat.exists() else 0) == size, f"the chain outlived its job: {cmd}"
            os.rename(spec.run_dir, str(tmp_path / f"run-{time.monotonic_ns()}"))
    finally:
        stop.touch()
        ex.close()


def test_the_marker_sweep_finds_a_process_whose_main_thread_exited(tmp_path):
    marker = f"dsunit{os.getpid()}zl"
    code = ("import ctypes, threading, time\n"
            "threading.Thread(target=lambda: time.sleep(30), daemon=True).start()\n"
            "ctypes.CDLL(None).pthread_exit(None)\n")
    p = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "DSJOBS_JOB_ID": marker})
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until its first thread is gone: its environ file then fails
            try:
                open(f"/proc/{p.pid}/environ", "rb").read()
            except OSError:
                break
            time.sleep(0.02)
        assert sv.marked(marker) == [p.pid]
        assert sv.kill_marked(marker) >= 1
        assert p.wait(10) == -9
    finally:
        p.kill()
        p.wait(10)


def test_secrets_of_any_size_reach_a_forked_supervisor_on_its_pipe(tmp_path):
    ex = proc.ProcessExecutor(forkserver=True)
    try:
        spec = _spec(tmp_path, 'printf %s "$BIG0$BIG1$BIG2$BIG3" | wc -c > size.txt')
        # more than a socket message or a pipe's buffer holds (each var under exec's 128 KiB a string)
        spec.secret_env = {f"BIG{i}": "x" * 75_000 for i in range(4)}
        h = ex.start(spec)
        assert h.popen is None and ex.wait(h, timeout=30).return_code == 0
        assert (tmp_path / "size.txt").read_text().strip() == "300000"
        assert b"xxxx" not in open(os.path.join(spec.run_dir, "spec"), "rb").read()
    finally:
        ex.close()


def test_a_fork_server_that_cannot_run_leaves_each_supervisor_started_on_its_own(tmp_path, monkeypatch):
    ex = proc.ProcessExecutor(forkserver=True)
    try:
        ex._server.close()
        ex._server = proc.ForkServer()

        def cannot(*_):
            raise OSError("no pidfds here")
        monkeypatch.setattr(ex._server, "_start", cannot)
        h = ex.start(_spec(tmp_path, "true"))
        assert h.popen is not None and ex.wait(h, timeout=30).return_code == 0
        assert ex._server._closed  # given up: not tried again per job
    finally:
        ex.close()


def test_a_forked_supervisor_without_room_for_the_exit_status_says_so_on_its_pipe(tmp_path):
    """Its exit code reaches no parent of the engine's: the engine learns of the full disk from the notify pipe."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(disk)], check=True)
    ex = proc.ProcessExecutor(forkserver=True)
    release = tmp_path / "release"
    try:
        h = ex.start(_spec(disk, f"while [ ! -e {release} ]; do sleep 0.01; done"))
        assert ex.confirm(h, timeout=30)
        fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        release.touch()
        result = ex.wait(h, timeout=30)
        assert result.failure is not None and result.failure.kind.name == "NO_SPACE", result
        assert "exit status could not be written" in result.failure.message
    finally:
        release.touch()  # never a job left waiting, whatever failed above
        ex.close()
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_start_that_fails_wakes_confirm_with_the_supervisors_end(tmp_path, monkeypatch):
    ex = proc.ProcessExecutor(forkserver=False)
    spec = _spec(tmp_path, "true")
    spec.argv = [str(tmp_path / "no-such-program")]
    h = ex.start(spec)
    monkeypatch.setattr(proc.time, "sleep", lambda *_: (_ for _ in ()).throw(AssertionError("polled")))
    assert ex.confirm(h, timeout=30) is False  # its end (EOF) without a start: never started
    result = ex.wait(h)
    assert result.failure is not None and "cannot start the job" in result.failure.message


def test_a_re_adopted_supervisor_is_waited_for_by_its_pidfd(tmp_path, monkeypatch):
    ex = proc.ProcessExecutor(forkserver=False)
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


def test_the_end_is_taken_when_told_without_waiting_for_the_supervisor_to_exit(tmp_path):
    """The supervisor says b"E" once its status file is in place, then makes it durable and ends: the engine reads
    the status at once. Here the "supervisor" lives on for good (a sleep): a wait for its exit would time out."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    sleeper = subprocess.Popen(["sleep", "60"])
    r, w = os.pipe()
    os.set_blocking(r, False)
    synced = []
    try:
        sv.write_atomic(str(run_dir / "status"), {"return_code": 3, "signal": None, "started_at": 1.0,
                                                 "finished_at": 2.0, "stopped": None},
                        before_sync=lambda: (synced.append((run_dir / "status").exists()), os.write(w, b"SE")))
        assert synced == [True]  # told with the file in place
        h = proc.ProcessHandle(str(run_dir), sleeper.pid, sv.proc_start_time(sleeper.pid), job_id="j", notify=r,
                               pidfd=os.pidfd_open(sleeper.pid))
        ex = proc.ProcessExecutor(forkserver=False)
        try:
            t = time.monotonic()
            result = ex.wait(h, timeout=10)
            assert result is not None and result.return_code == 3 and time.monotonic() - t < 5
            assert sleeper.poll() is None and h.done.is_set() and h.notify == -1 and h.pidfd == -1
        finally:
            ex.close()
    finally:
        os.close(w)
        sleeper.kill()
        sleeper.wait()


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
    assert sv._read_all(r) == b"SE"  # the start, its end (its status in place), then EOF: this process's own end
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


def test_a_polled_operation_is_answered_again_only_while_nothing_it_says_changed(engine, monkeypatch):
    """GetOperation, polled every few ms, is answered from the last answer while the job's record and operations
    (the store's generation) and its progress file are as they were, and for at most a second (fresh URLs)."""
    from engine.api import servicers as sv
    from engine.errors import NotFound
    polled = sv.PolledOperations(engine.jobs)
    op, _ = engine.jobs.create("p1", JobParameters(cmd="fake " + json.dumps({"run_for": 30}),
                                                   output_files=[FileDesc(path="o.txt")]))
    xop = engine.jobs.execute(op.job_id)
    jid = op.job_id
    wait(engine, jid, {S.EXECUTING})
    built = []
    real = sv.cv.operation_pb
    monkeypatch.setattr(sv.cv, "operation_pb", lambda *a, **k: (built.append(1), real(*a, **k))[1])
    first = polled.get(xop.id)
    n = len(built)
    for _ in range(20):
        assert polled.get(xop.id) == first
    assert len(built) == n  # answered again, not made again
    progress = engine.jobs.progress_path(jid)
    progress.write_text('{"progress": 40, "message": "a third"}\n')
    assert polled.get(xop.id).metadata != first.metadata  # the progress file changed
    engine.lifecycle.records.update(jid, lambda j: setattr(j, "status_details", "told"))
    assert b"told" in polled.get(xop.id).metadata.value  # the record changed
    engine.jobs.cancel(jid, "enough")
    wait(engine, jid, {S.CANCELLED, S.ERROR, S.SUCCESS})
    done = polled.get(xop.id)
    assert done.done and done == sv._operation(engine.jobs, xop.id)  # the same as made afresh
    n = len(built)
    monkeypatch.setattr(sv.time, "monotonic", lambda real=time.monotonic: real() + sv.PolledOperations.MAX_AGE_S)
    polled.get(xop.id)
    assert len(built) == n + 1  # too old to be answered again: made again
    monkeypatch.undo()
    engine.jobs.delete(jid)
    with pytest.raises(NotFound):
        polled.get(xop.id)

