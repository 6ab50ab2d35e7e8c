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


# --- the one duration parser and the one size parser (engine, CLI, config.yaml, faults) -------------------------

import pytest  # noqa: E402

from runners.spec import parse_duration, parse_faults, parse_size  # noqa: E402


@pytest.mark.parametrize("text,seconds", [
    ("90", 90.0), ("1.5", 1.5), (" 2 ", 2.0), ("500ms", 0.5), ("2s", 2.0), ("1m30s", 90.0), ("1h30m", 5400.0),
    ("1d", 86400.0), ("1d2h3m4s5ms", 93784.005), ("0", 0.0)])
def test_durations_every_caller_accepts(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "x", "1x", "-5", "inf", "nan", "1.5h", "h", "1s1h"])
def test_what_is_not_a_duration(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("text,size", [
    ("1024", 1024), ("0", 0), ("64MB", 64 << 20), ("100GB", 100 << 30), ("150Gb", 150 << 30), ("20 GB", 20 << 30),
    ("2GiB", 2 << 30), ("512k", 512 << 10), ("1t", 1 << 40), ("1PB", 1 << 50), ("7b", 7)])
def test_sizes_the_engine_accepts(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "GB", "1.5GB", "-1MB", "1XB", "1 G B"])
def test_what_is_not_a_size(text):
    with pytest.raises(ValueError):
        parse_size(text)


# config.yaml's sizes are read exactly as the official client 0.10.0 reads them (utils.parse_human_size), no more:
# what works here must work in the cloud (its oddities included: "-1MB" is -1 MiB there)
@pytest.mark.parametrize("text,size", [
    ("1024", 1024), ("64MB", 64 << 20), ("150Gb", 150 << 30), ("20 GB", 20 << 30), (" 1pb ", 1 << 50),
    ("-1MB", -(1 << 20)), ("2GiB", None), ("512k", None), ("1t", None), ("7b", None), ("", None), ("1 G B", None),
    ("GB", None), ("1.5GB", None)])
def test_config_sizes_as_the_official_client_reads_them(text, size):
    from dsjobs.jobconfig import ConfigError, parse_human_size
    if size is None:
        with pytest.raises(ConfigError):
            parse_human_size(text)
    else:
        assert parse_human_size(text) == size


def test_the_official_clients_size_messages_are_kept():
    from dsjobs.jobconfig import ConfigError, parse_human_size
    with pytest.raises(ConfigError, match="Invalid size: 1XB"):
        parse_human_size("1xb")
    with pytest.raises(ConfigError, match="invalid literal for int"):
        parse_human_size("150.5GB")


def test_faults_take_the_same_durations_and_sizes_and_refuse_a_zero_size():
    f = parse_faults("preempt-after=1d,slow-env-build=1m30s,disk-full-at=2GiB,oom=512MB")
    assert (f.preempt_after_s, f.slow_env_build_s, f.disk_full_at_bytes, f.oom_bytes) == \
        (86400.0, 90.0, 2 << 30, 512 << 20)
    for bad in ("disk-full-at=0", "preempt-after=400d", "oom=1.5GB"):
        with pytest.raises(ValueError):
            parse_faults(bad)


def test_the_engine_uses_the_same_parser():
    from engine import validation
    assert validation.parse_duration is parse_duration
