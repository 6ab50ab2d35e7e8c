"""The node runner (runners/node.py) with the fake executor: what an attempt does with its spec, in milliseconds,
without a process. Inputs from a dict, outputs into one, as a NodeIO."""
from __future__ import annotations

import hashlib
import io
import json
import os
import time
import threading
import zipfile

import pytest

from runners import journal
from runners.executors.fake import FakeExecutor
from runners.node import Attempt, Machine, NodeIO, RetryLater
from runners.rundir import RunDir
from runners.spec import AttemptSpec, FailureKind, InputFile, Limits, OutputDecl, StopRequest


class DictIO(NodeIO):
    def __init__(self, inputs: dict[str, bytes], tmp, full_for: int = 0):
        self.paths, self.stored, self.events, self.full_for = {}, {}, [], full_for
        for sha, data in inputs.items():
            p = tmp / sha
            p.write_bytes(data)
            self.paths[sha] = str(p)

    def input_path(self, sha256):
        return self.paths[sha256]

    def store_output(self, stream):
        if self.full_for:
            self.full_for -= 1
            raise RetryLater("no space left on device")
        data = stream.read()
        sha = hashlib.sha256(data).hexdigest()
        self.stored[sha] = data
        return sha, len(data)

    def started(self, instance, at=None):
        self.events.append(("started", instance))
        self.started_at = at

    def uploading(self):
        self.events.append("uploading")


def fake(**script) -> str:
    return "fake " + json.dumps(script)


def attempt(tmp_path, cmd, *, inputs=(), blobs=None, outputs=(), io_=None, **kw):
    spec = AttemptSpec(job_id="ds1", project_id="p1", attempt="1", cmd=cmd, sandbox="none",
                       instance_types=[Limits("c1.4", 4, 32 << 30)], inputs=list(inputs), outputs=list(outputs), **kw)
    io_ = io_ or DictIO(blobs or {}, tmp_path)
    ex = FakeExecutor()
    a = Attempt("ds1", RunDir(tmp_path / "run"), Machine(root=tmp_path, process=ex), io_, spec)
    return a, io_, ex


def system_log(tmp_path) -> str:
    return "\n".join(r.content.decode() for r in journal.records(str(tmp_path / "run" / "journal"))
                     if r.stream == journal.Stream.SYSTEM)


def test_vars_are_substituted_outputs_collected_and_the_start_reported(tmp_path):
    a, io_, ex = attempt(tmp_path, fake(outputs={"${OUT}": "result", "plain.txt": "p"}, stdout="hello\n"),
                        outputs=[OutputDecl("", "OUT"), OutputDecl("plain.txt"), OutputDecl("missing.txt")])
    r = a.run()
    assert r.started and r.return_code == 0 and r.failure is None and r.instance == "c1.4"
    assert io_.events == [("started", "c1.4"), "uploading"]
    # The start reported is the executor's own (the deadline counts from it), not when the report was made.
    assert io_.started_at == ex.started[0].started_at
    got = {(o.path, o.var): io_.stored[o.sha256] for o in r.outputs}
    assert got == {("", "OUT"): b"result", ("plain.txt", ""): b"p"}
    assert [(e.path, e.kind) for e in r.output_errors] == [("missing.txt", "NOT_FOUND")]
    assert (tmp_path / "run" / "stdout.txt").read_text() == "hello\n"
    assert "program exited with return code 0" in system_log(tmp_path)


def test_an_unsafe_input_is_the_users_problem_named(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("../escape.txt", "x")
    data = buf.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    a, io_, ex = attempt(tmp_path, fake(), inputs=[InputFile("in.zip", "", sha, len(data), zipped=True)],
                         blobs={sha: data})
    r = a.run()
    assert not r.started and r.failure.kind == FailureKind.INVALID_INPUT and "in.zip" in r.failure.message
    assert not ex.started and not io_.events


def test_the_deadline_stops_the_job_by_its_graceful_path(tmp_path):
    a, _, _ = attempt(tmp_path, fake(run_for=30), max_duration_s=0.1,
                      deadline_stop=StopRequest(15, 1.0, "the job's maximum running time (0.1s) was reached",
                                                kind="deadline"))
    r = a.run()
    assert r.started and r.stopped.kind == "deadline" and r.signal == 15


def test_a_stop_before_the_start_means_it_never_starts(tmp_path):
    a, io_, ex = attempt(tmp_path, fake(run_for=30))
    a.stop(StopRequest(15, 5.0, "cancelled by user"))
    r = a.run()
    assert not r.started and r.stopped.reason == "cancelled by user" and not ex.started and not io_.events


def test_a_stop_while_it_runs_and_a_forced_one_after(tmp_path):
    a, io_, ex = attempt(tmp_path, fake(run_for=30, ignore_stop=True))
    t = threading.Thread(target=lambda: setattr(a, "result", a.run()))
    t.start()
    while not io_.events:
        t.join(0.01)
    a.stop(StopRequest(15, 30.0, "graceful"))
    a.stop(StopRequest(15, 1.0, "graceful again"))  # asked once: the first graceful stop stands
    assert a.stop_request.reason == "graceful"
    a.stop(StopRequest(9, 0.0, "forced"))  # a forced stop is never refused
    t.join(5)
    assert a.result.stopped.reason == "forced" and a.result.signal == 9


def test_a_start_that_is_not_confirmed_is_never_executing(tmp_path):
    a, io_, _ = attempt(tmp_path, fake(start_error="no bash here"))
    r = a.run()
    assert r.failure.kind == FailureKind.START_FAILED and ("started", "c1.4") not in io_.events


def test_outputs_are_stored_again_when_the_storage_is_full_for_a_while(tmp_path):
    io_ = DictIO({}, tmp_path, full_for=2)
    a, _, _ = attempt(tmp_path, fake(outputs={"o.txt": "kept"}), outputs=[OutputDecl("o.txt")], io_=io_)
    r = a.run()
    assert [io_.stored[o.sha256] for o in r.outputs] == [b"kept"] and not r.output_errors
    assert "cannot be stored now" in system_log(tmp_path)


@pytest.mark.parametrize("instance_types,gpus_needed", [([Limits("g1.1", 8, 48 << 30, 1)], True)])
def test_an_image_job_that_needs_a_gpu_this_machine_lacks(tmp_path, instance_types, gpus_needed):
    from runners.spec import ImageSpec
    a, _, _ = attempt(tmp_path, fake(), image=ImageSpec("img"))
    a.spec.instance_types = instance_types
    a.machine.docker = FakeExecutor()
    r = a.run()
    assert r.failure.kind == FailureKind.UNSUPPORTED and "no GPU" in r.failure.message


G1, G2, C8 = Limits("g1.1", 8, 48 << 30, 1), Limits("g2.1", 28, 119 << 30, 1), Limits("c1.8", 8, 64 << 30)


def test_a_process_job_skips_the_gpu_types_a_machine_without_gpu_cannot_serve(tmp_path):
    a, io_, ex = attempt(tmp_path, fake(stdout="ran\n"))
    a.spec.instance_types, a.machine.fake_gpus = [G2, C8], 0
    r = a.run()
    assert r.started and r.failure is None and r.instance == "c1.8" and io_.events[0] == ("started", "c1.8")
    assert "instance type g2.1 needs 1 GPU; this machine has 0: skipped" in system_log(tmp_path)


def test_a_process_job_that_needs_a_gpu_fails_before_anything_runs(tmp_path):
    a, io_, ex = attempt(tmp_path, fake())
    a.spec.instance_types, a.machine.fake_gpus = [G1], 0
    r = a.run()
    assert not r.started and r.failure.kind == FailureKind.UNSUPPORTED and not ex.started and not io_.events
    assert "g1.1" in r.failure.message and "no GPU" in r.failure.message


def test_a_gpu_type_runs_where_there_is_a_gpu_and_a_cluster_node_trusts_its_placement(tmp_path):
    a, io_, _ = attempt(tmp_path, fake())
    a.spec.instance_types, a.machine.fake_gpus = [G1, C8], 1
    assert a.run().instance == "g1.1"
    b, _, _ = attempt(tmp_path / "node", fake())
    b.spec.instance_types, b.machine.fake_gpus, b.machine.checks_gpus = [G1], 0, False
    assert b.run().instance == "g1.1"  # a Ray node: placement chose it by the node's declared GPUs


# --- what a run holds, taken back however it ends -------------------------------------------------------------------

def test_a_run_whose_wait_raises_releases_what_its_faults_made_and_its_token(tmp_path, monkeypatch):
    from runners import faults as rf
    from runners.spec import parse_faults
    a, _, ex = attempt(tmp_path, fake(run_for=30), faults=parse_faults("disk-full-at=1MB"), sa_token="t1.secret")
    work = str(tmp_path / "run" / "work")

    def broken(handle, timeout=None):
        assert rf.is_mount(work) and (tmp_path / "run" / "sa" / "token").exists()  # both were made
        raise RuntimeError("the executor lost its way")
    monkeypatch.setattr(ex, "wait", broken)
    try:
        with pytest.raises(RuntimeError):
            a.run()
        assert not rf.is_mount(work)
        assert not (tmp_path / "run" / "sa" / "token").exists()
    finally:
        rf.release(work)


def test_an_interrupted_run_keeps_what_it_holds_for_the_next_engine(tmp_path, monkeypatch):
    from runners import faults as rf
    from runners.node import Interrupted
    from runners.spec import parse_faults
    a, _, ex = attempt(tmp_path, fake(run_for=30), faults=parse_faults("disk-full-at=1MB"), sa_token="t1.secret")
    work = str(tmp_path / "run" / "work")

    def stopping(handle, timeout=None):
        raise Interrupted()
    monkeypatch.setattr(ex, "wait", stopping)
    try:
        with pytest.raises(Interrupted):
            a.run()
        assert rf.is_mount(work) and (tmp_path / "run" / "sa" / "token").exists()  # the job goes on
    finally:
        ex.stop(ex.started[0], StopRequest(9))
        rf.release(work)


class NoStart(DictIO):
    def may_start(self):
        return False


@pytest.mark.parametrize("how", ["start fails", "may not start", "stopped before the start"])
def test_the_token_file_is_gone_when_the_run_never_starts(tmp_path, how):
    io_ = NoStart({}, tmp_path) if how == "may not start" else None
    a, _, ex = attempt(tmp_path, fake(start_error="no bash") if how == "start fails" else fake(), io_=io_,
                       sa_token="t1.secret")
    if how == "stopped before the start":
        real = a._sa_token

        def then_stopped(box, container):  # a cancel that lands once the token is written
            path = real(box, container)
            a.stop(StopRequest(15, 5.0, "cancelled by user"))
            return path
        a._sa_token = then_stopped
    r = a.run()
    assert not r.started and not ex.started or how == "start fails"
    assert (tmp_path / "run" / "sa").is_dir() and not (tmp_path / "run" / "sa" / "token").exists()


def test_the_token_file_is_gone_when_the_preparation_fails_after_it(tmp_path, monkeypatch):
    a, _, ex = attempt(tmp_path, fake(), sa_token="t1.secret")
    monkeypatch.setattr(Attempt, "_save_faults", lambda self: (_ for _ in ()).throw(OSError(5, "I/O error")))
    r = a.run()
    assert r.failure.kind == FailureKind.INTERNAL and not ex.started
    assert (tmp_path / "run" / "sa").is_dir() and not (tmp_path / "run" / "sa" / "token").exists()


def test_a_re_adopted_run_keeps_its_faults(tmp_path):
    """An engine prepared and started the run, then was killed: the next one re-adopts it and still applies the
    run's faults (here: the machine lost after 0.2s, counted from the start)."""
    from runners.spec import parse_faults
    a, io_, ex = attempt(tmp_path, fake(run_for=10), faults=parse_faults("preempt-after=200ms"))
    prepared = a._prepare()
    handle = ex.start(prepared.run)  # the first engine dies here: nothing of it watches the run
    b = Attempt("ds1", RunDir(tmp_path / "run"), Machine(root=tmp_path, process=ex), io_)
    r = b.resume(handle, ex, confirm=True)
    assert r.failure is not None and r.failure.kind == FailureKind.RUNNER_LOST, r
    assert "injected fault: preempt-after=0.2s" in system_log(tmp_path)


def test_a_run_that_ended_while_no_engine_watched_is_started_when_its_supervisor_said(tmp_path):
    """An engine started the run and died before it confirmed the start; the run ended meanwhile. The next engine
    records the start the supervisor wrote (its ``status`` file), not the moment it found the run over."""
    from runners.executors.base import ExitResult
    a, io_, ex = attempt(tmp_path, fake())
    a._prepare()
    at = time.time() - 30
    finished = ExitResult.from_status({"return_code": 0, "signal": None, "started_at": at,
                                       "finished_at": at + 1, "stopped": None})
    assert finished.started_at == at
    b = Attempt("ds1", RunDir(tmp_path / "run"), Machine(root=tmp_path, process=ex), io_)
    r = b.resume(None, ex, confirm=True, finished=finished)
    assert r.started and r.return_code == 0 and ("started", "c1.4") in io_.events and io_.started_at == at
    assert ExitResult.from_status({"return_code": 0, "started_at": "soon"}).started_at is None


def test_a_program_that_failed_on_a_full_disk_says_so_beside_its_code(tmp_path):
    # Its own writes failed where the engine cannot see them: its last output is what tells.
    a, _, _ = attempt(tmp_path, fake(exit_code=1, stderr="cp: error writing 'out.bin': No space left on device\n"))
    r = a.run()
    assert r.return_code == 1 and r.failure is None and "a disk was full (No space left on device)" in r.note
    assert "a disk was full" in system_log(tmp_path)
    b, _, _ = attempt(tmp_path / "b", fake(exit_code=1, stderr="plain failure\n"))
    assert b.run().note == ""
    # A log file replaced by a FIFO (an unconfined job may) is not waited on.
    c, _, _ = attempt(tmp_path / "c", fake(exit_code=1))
    c._prepare()
    stderr = tmp_path / "c" / "run" / "stderr.txt"
    stderr.unlink(missing_ok=True)
    os.mkfifo(stderr)
    assert c._disk_full_hint() == ""


def test_a_container_sees_exactly_its_gpus_and_a_cpu_type_none(tmp_path):
    from runners import gpus
    from runners.spec import ImageSpec
    from runners.workspace import Layout
    devs = gpus.fake(2)
    for devices, want in ((devs[:1], devs[0].uuid), ([], "void")):
        a, _, _ = attempt(tmp_path, fake(), image=ImageSpec("img"))
        a.machine.gpu_devices, a.devices = devs, devices
        RunDir(tmp_path / "run").make()
        env = a._env(Layout(work=tmp_path / "run" / "work"), None, None, None)
        assert env["NVIDIA_VISIBLE_DEVICES"] == want  # nvidia/cuda images would say "all"
        assert "CUDA_VISIBLE_DEVICES" not in env
