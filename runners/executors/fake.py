"""A fake executor, scripted by the job's own command, for the fast tests of everything above the executor (the node
runner, the backends, the lifecycle): no process, no container, the same interface.

The command (after ``${VAR}`` substitution) is ``fake`` and a JSON object:

    fake {"run_for": 0.2, "exit_code": 3, "stdout": "hello\\n", "stderr": "", "outputs": {"out/a.txt": "x"},
          "start_error": "", "ignore_stop": false}

``run_for`` seconds of "running" (a stop request ends it sooner, unless ``ignore_stop``: then only SIGKILL does,
after the request's grace), ``outputs`` written into the working directory at the end, ``start_error`` a start
that the executor cannot confirm. What it "prints" goes to the job's journal and log files as a real run's would.
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from runners import journal
from runners.executors.base import ExitResult, Executor, Handle, RunSpec
from runners.spec import Failure, FailureKind, StopRequest


@dataclass
class FakeHandle(Handle):
    run_dir: str
    script: dict
    spec: RunSpec
    stop: Optional[StopRequest] = None
    woken: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    result: Optional[ExitResult] = None
    started_at: float = field(default_factory=time.time)


def script_of(argv: list[str]) -> dict:
    cmd = argv[-1].strip()
    if not cmd.startswith("fake"):
        raise ValueError(f"not a fake job's command: {cmd[:60]!r}")
    text = cmd[4:].strip()
    return json.loads(text) if text else {}


class FakeExecutor(Executor):
    name = "fake"

    def __init__(self):
        self.started: list[FakeHandle] = []
        self._live: dict[str, FakeHandle] = {}

    def start(self, spec: RunSpec) -> FakeHandle:
        h = FakeHandle(spec.run_dir, script_of(spec.argv), spec)
        self.started.append(h)
        self._live[spec.run_dir] = h
        threading.Thread(target=self._run, args=(h,), daemon=True, name="dsjobs-fake").start()
        return h

    def confirm(self, handle: FakeHandle) -> bool:
        return not handle.script.get("start_error")

    def started_at(self, handle: FakeHandle) -> Optional[float]:
        return handle.started_at

    def adopt(self, run_dir: str, job_id: str = "") -> Optional[FakeHandle]:
        h = self._live.get(run_dir)
        return h if h is not None and not h.done.is_set() else None

    def _run(self, h: FakeHandle) -> None:
        try:
            self._play(h)
        except Exception as e:  # noqa: BLE001 - a broken script ends the run, it never hangs a test
            h.result = ExitResult(None, failure=Failure(FailureKind.INTERNAL, f"fake executor: {e!r}"))
            h.done.set()

    def _play(self, h: FakeHandle) -> None:
        s, spec = h.script, h.spec
        if s.get("start_error"):
            h.result = ExitResult(127, failure=Failure(FailureKind.START_FAILED, f"cannot start the job: "
                                                                                  f"{s['start_error']}"))
            h.done.set()
            return
        for stream, path, text in ((journal.Stream.STDOUT, spec.stdout, s.get("stdout", "")),
                                   (journal.Stream.STDERR, spec.stderr, s.get("stderr", ""))):
            if text:
                fd = journal.open_for_append(spec.journal)
                try:
                    journal.append(fd, stream, text.encode())
                finally:
                    os.close(fd)
                with open(path, "a") as f:
                    f.write(text)
        run_for = float(s.get("run_for", 0.0))
        limit = spec.max_duration_s
        deadline = time.monotonic() + min(run_for, limit) if limit else time.monotonic() + run_for
        code, sig = int(s.get("exit_code", 0)), None
        h.woken.wait(max(0.0, deadline - time.monotonic()))
        if limit and run_for > limit and h.stop is None:
            h.stop = spec.deadline_stop
        if h.stop is not None:
            stop = h.stop
            if s.get("ignore_stop") and not stop.forced:
                time.sleep(stop.grace_s)  # only the SIGKILL after the grace ends it
                code, sig = 137, 9
            else:
                sig = 9 if stop.forced else stop.signal
                code = 128 + sig
        for rel, text in (s.get("outputs") or {}).items():
            path = os.path.join(spec.cwd, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
        h.result = ExitResult(code, signal=sig, stopped=h.stop)
        h.done.set()

    def wait(self, handle: FakeHandle, timeout: Optional[float] = None) -> Optional[ExitResult]:
        if not handle.done.wait(timeout):
            return None
        self._live.pop(handle.run_dir, None)
        return handle.result

    def stop(self, handle: FakeHandle, request: StopRequest) -> None:
        if handle.stop is not None and not request.forced:
            return
        handle.stop = request
        handle.woken.set()
