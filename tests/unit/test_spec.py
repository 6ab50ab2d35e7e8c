"""The engine <-> node contract (runners/spec.py) and the executor's typed values: what travels over the runner
channel comes back equal, and files written by supervisors of earlier releases still read."""
from runners.executors.base import ExitResult, RunSpec
from runners.spec import (AttemptResult, AttemptSpec, Failure, FailureKind, ImageSpec, InputFile, Limits, Mount,
                          OutputDecl, OutputFile, PythonSpec, StopRequest, from_plain, plain)


def spec() -> AttemptSpec:
    return AttemptSpec(
        job_id="ds1", project_id="p1", attempt="dsjobs-ds1-1", cmd="python run.py ${IN}",
        instance_types=[Limits("g1.1", 8, 48 << 30, 1), Limits("c1.4", 4, 32 << 30)],
        arguments={"A": "1"}, env_vars={"X": "y"}, secrets={"TOKEN": "s3cr3t"},
        inputs=[InputFile("a.zip", "IN", "ab" * 32, 10, zipped=True)], outputs=[OutputDecl("out.txt")],
        output_datasets=["DS"], python=PythonSpec("3.11", ["six"], no_deps=True,
                                                  local_modules=[InputFile("m.zip", "", "cd" * 32, 5, True)]),
        image=ImageSpec("registry:5000/x:1", "u", "pw"), mounts=[Mount("r1", "/srv/r1", "/dsjobs/s3/r1")],
        max_duration_s=90.0, deadline_stop=StopRequest(2, 5.0, "deadline", "deadline"),
        input_urls={"ab" * 32: "http://127.0.0.1:1/blobs/x"})


def test_a_spec_travels_as_json_and_comes_back_equal():
    s = spec()
    assert AttemptSpec.from_json(s.to_json()) == s
    assert from_plain(AttemptSpec, plain(s)) == s
    assert "s3cr3t" not in repr(s) and "pw" not in repr(s.image)  # never in a log line that prints a spec


def test_a_result_travels_and_comes_back_equal():
    r = AttemptResult(started=True, return_code=3, signal=None, stopped=StopRequest(15, 1.0, "x"),
                      failure=Failure(FailureKind.NO_SPACE, "full"), outputs=[OutputFile("o", "", "ef" * 32, 2)],
                      datasets={"DS": "/w/ds"}, instance="c1.4")
    assert AttemptResult.from_json(r.to_json()) == r
    assert isinstance(AttemptResult.from_json(r.to_json()).failure.kind, FailureKind)


def test_stop_requests_and_the_supervisor_files():
    assert StopRequest(9).forced and StopRequest(15, 0).forced and not StopRequest(15, 3).forced
    d = StopRequest(10, 2.5, "why", "deadline").as_dict()
    assert d == {"signal": 10, "timeout": 2.5, "reason": "why", "kind": "deadline"}
    assert StopRequest.from_dict({"signal": 10, "timeout": 2.5, "reason": "why"}).kind == "cancel"  # older files
    rs = RunSpec(job_id="ds1", run_dir="/r", argv=["bash", "-c", "true"], cwd="/w", env={}, journal="/r/j",
                 stdout="/r/o", stderr="/r/e", deadline_stop=StopRequest(15, 10.0, "t", "deadline"))
    assert rs.supervisor_spec()["deadline_stop"] == {"signal": 15, "timeout": 10.0, "reason": "t", "kind": "deadline"}


def test_exit_statuses_of_this_and_earlier_supervisors():
    assert ExitResult.from_status({"return_code": 0, "signal": None, "stopped": None}).successful()
    new = ExitResult.from_status({"return_code": 137, "error": "logs could not be written", "error_kind": "NO_SPACE",
                                  "stopped": {"signal": 9, "timeout": 0.0, "reason": "full", "kind": "storage"}})
    old = ExitResult.from_status({"return_code": 137, "error": "logs could not be written",
                                  "error_code": "RESOURCE_EXHAUSTED",
                                  "stopped": {"signal": 9, "timeout": 0.0, "reason": "full", "kind": "storage"}})
    assert new == old and new.failure.kind == FailureKind.NO_SPACE and new.stopped.kind == "storage"
    start = ExitResult.from_status({"return_code": 127, "error": "cannot start the job: no bash"})
    assert start.failure.kind == FailureKind.START_FAILED
