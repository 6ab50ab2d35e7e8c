"""GPUs by device (runners/gpus.py) with a fake NVML (pynvml's functions replaced, its constants and error classes
kept) and fake device lists: what is found, who holds what, what a job is given, and the `.gpu_stats.tsv` rows."""
from __future__ import annotations

import os
import threading
import time
from types import SimpleNamespace

import pynvml
import pytest

from runners import gpus, journal
from runners.executors.docker import ContainerSpec, gpu_failure, gpu_request
from runners import node
from runners.node import Attempt, Interrupted, Machine
from runners.rundir import RunDir
from runners.spec import FailureKind, Limits, StopRequest
from tests.unit.test_node import DictIO, attempt, fake, system_log

G1, G2MIG, C4 = Limits("g1.1", 8, 48 << 30, 1), Limits("g2.mig", 4, 16 << 30, 1), Limits("c1.4", 4, 32 << 30)
G12 = Limits("g1.2", 16, 96 << 30, 2)


class FakeNVML:
    """Two GPUs: 0 a V100, 1 an A100 in MIG mode with instances in slots 0 and 2 (slot 1 empty)."""

    def __init__(self, monkeypatch, *, driver=True, count=2):
        self.inits = 0
        gpu = {0: "GPU-aaaaaaaa-0000-0000-0000-000000000000", 1: "GPU-bbbbbbbb-0000-0000-0000-000000000000"}
        mig = {(1, 0): "MIG-cccccccc-0000-0000-0000-000000000000", (1, 2): "MIG-dddddddd-0000-0000-0000-000000000000"}
        by_uuid = {v: ("gpu", k) for k, v in gpu.items()} | {v: ("mig",) + k for k, v in mig.items()}

        def err(code):
            raise pynvml.NVMLError(code)

        def init():
            if not driver:
                err(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
            self.inits += 1

        def mig_mode(h):
            if h == ("gpu", 0):
                err(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return [pynvml.NVML_DEVICE_MIG_ENABLE, pynvml.NVML_DEVICE_MIG_ENABLE]

        def mig_handle(h, j):
            if (h[1], j) not in mig:
                err(pynvml.NVML_ERROR_NOT_FOUND)
            return ("mig", h[1], j)

        def util(h):
            if h[0] == "mig":
                err(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return SimpleNamespace(gpu=37, memory=18)

        fns = dict(
            nvmlInit=init, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: count,
            nvmlDeviceGetHandleByIndex=lambda i: ("gpu", i),
            nvmlDeviceGetHandleByUUID=lambda u: by_uuid[u] if u in by_uuid else err(pynvml.NVML_ERROR_NOT_FOUND),
            nvmlDeviceGetUUID=lambda h: gpu[h[1]] if h[0] == "gpu" else mig[(h[1], h[2])],
            nvmlDeviceGetName=lambda h: {0: "Tesla V100-SXM2-32GB", 1: "NVIDIA A100-SXM4-80GB"}[h[1]],
            nvmlDeviceGetMinorNumber=lambda h: h[1], nvmlDeviceGetMigMode=mig_mode,
            nvmlDeviceGetMaxMigDeviceCount=lambda h: 3, nvmlDeviceGetMigDeviceHandleByIndex=mig_handle,
            nvmlDeviceGetUtilizationRates=util,
            nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(total=32 << 30, used=1 << 30, free=31 << 30),
            nvmlDeviceGetPowerUsage=lambda h: 123456, nvmlDeviceGetEnforcedPowerLimit=lambda h: 300000,
            nvmlDeviceGetTemperature=lambda h, kind: 40)
        for name, fn in fns.items():
            monkeypatch.setattr(pynvml, name, fn)
        self.gpu, self.mig = gpu, mig


def test_nvml_devices_by_uuid_a_mig_gpu_only_by_its_instances(monkeypatch):
    nv = FakeNVML(monkeypatch)
    found = gpus.discover()
    assert [(d.uuid, d.mig, d.minor) for d in found] == [
        (nv.gpu[0], False, 0), (nv.mig[(1, 0)], True, 1), (nv.mig[(1, 2)], True, 1)]
    assert found[1].parent == nv.gpu[1] and found[0].name == "Tesla V100-SXM2-32GB"


def until(cond, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"not within {timeout:g}s: {what}"
        time.sleep(0.02)


def test_no_driver_is_nvml_unreachable_and_no_gpu_is_an_empty_list(monkeypatch):
    FakeNVML(monkeypatch, driver=False)
    assert gpus.discover() is None
    with pytest.raises(gpus.NvmlUnavailable):
        gpus.sample(gpus.fake(1))
    FakeNVML(monkeypatch, count=0)
    assert gpus.discover() == []


@pytest.mark.parametrize("driver,count,dev_looked_at", [(False, 2, True), (True, 0, False), (True, 2, False)])
def test_the_dev_nodes_are_looked_at_only_where_nvml_cannot_be_asked(monkeypatch, tmp_path, driver, count,
                                                                       dev_looked_at):
    FakeNVML(monkeypatch, driver=driver, count=count)
    looked = []
    monkeypatch.setattr(node, "_dev_gpus", lambda: looked.append(1) or [gpus.Device("7", 7, "", 7)])
    devices = Machine(root=tmp_path, process=None).pool().devices
    assert bool(looked) == dev_looked_at
    if dev_looked_at:
        assert [d.uuid for d in devices] == ["7"]
    else:  # what NVML says, even "none": a /dev node of a GPU NVML does not report is not handed out
        assert len(devices) == (3 if count else 0)


def test_the_pool_gives_each_job_its_own_gpus_and_the_next_waits():
    pool = gpus.Pool(gpus.fake(2))
    a, b = pool.reserve("a", 1, "g1.1"), pool.reserve("b", 1, "g1.1")
    assert a.devices != b.devices and len(a.devices) == len(b.devices) == 1
    assert pool.reserve("a", 1, "g1.1") is a  # the same job keeps its own
    assert not pool.can_take(1, "g1.1") and pool.reserve("c", 1, "g1.1") is None
    pool.release("a")
    assert pool.reserve("c", 1, "g1.1").devices == a.devices
    assert pool.capacity(2, "g1.2") is None and pool.capacity(4, "g1.4") == \
        "instance type g1.4 needs 4 GPUs; this machine has 2"


def test_g2_mig_takes_a_mig_instance_never_a_whole_gpu():
    pool = gpus.Pool(gpus.fake(1, migs=2))
    m1, m2 = pool.reserve("m1", 1, "g2.mig"), pool.reserve("m2", 1, "g2.mig")
    assert m1.devices[0].mig and m2.devices[0].mig and m1.devices != m2.devices
    assert pool.reserve("m3", 1, "g2.mig") is None  # waits for an instance, is not given the whole GPU
    assert not pool.reserve("g", 1, "g1.1").devices[0].mig


def test_g2_mig_without_mig_is_refused_or_given_a_shared_gpu_when_asked_for(tmp_path):
    assert "needs a MIG instance" in gpus.Pool(gpus.fake(1)).capacity(1, "g2.mig")
    a, io_, ex = attempt(tmp_path / "refuse", fake())
    a.spec.instance_types, a.machine.gpu_devices = [G2MIG], gpus.fake(1)
    r = a.run()
    assert r.failure.kind == FailureKind.UNSUPPORTED and not ex.started
    assert "g2.mig needs a MIG instance" in r.failure.message and "no GPU" not in r.failure.message

    b, io_, ex = attempt(tmp_path / "shared", fake())
    b.spec.instance_types, b.machine.gpu_devices, b.machine.mig_fallback = [G2MIG], gpus.fake(1), "shared"
    b.machine.pool().reserve("other", 1, "g1.1")  # a whole-GPU job holds the only GPU: shared anyway
    r = b.run()
    assert r.failure is None and r.instance == "g2.mig"
    assert ex.started[0].spec.env["CUDA_VISIBLE_DEVICES"] == gpus.fake(1)[0].uuid
    assert "WARNING" in system_log(tmp_path / "shared") and "SHARED" in system_log(tmp_path / "shared")


def test_a_process_job_sees_exactly_its_gpus_and_a_cpu_job_none(tmp_path):
    devs = gpus.fake(2)
    machine = Machine(root=tmp_path, process=None, gpu_devices=devs, gpu_stats_interval_s=3600)
    seen = []
    for name, limits in (("two", G12), ("cpu", C4)):
        a, _, ex = attempt(tmp_path / name, fake())
        a.machine = Machine(root=tmp_path, process=ex, gpu_devices=devs, gpu_stats_interval_s=3600)
        a.machine._pool = machine.pool()
        a.spec.instance_types = [limits]
        assert a.run().instance == limits.instance
        seen.append(ex.started[0].spec.env)
    ids = ",".join(d.uuid for d in devs)
    assert seen[0]["CUDA_VISIBLE_DEVICES"] == ids and seen[0]["NVIDIA_VISIBLE_DEVICES"] == ids
    assert seen[1]["CUDA_VISIBLE_DEVICES"] == "" and seen[1]["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert machine.pool().can_take(2, "g1.2")  # both released once their jobs ended


def test_a_job_waits_for_a_held_gpu_then_gets_it(tmp_path):
    a, io_, ex = attempt(tmp_path, fake())
    a.spec.instance_types, a.machine.gpu_devices = [G1], gpus.fake(1)
    a.machine.gpu_stats_interval_s = 3600
    pool = a.machine.pool()
    pool.reserve("other", 1, "g1.1")
    result = []
    t = threading.Thread(target=lambda: result.append(a.run()))
    t.start()
    until(lambda: "waiting for 1 GPU of instance type g1.1" in system_log(tmp_path) or not t.is_alive(),
          "the job waits for the GPU")
    assert t.is_alive() and not ex.started
    pool.release("other")
    t.join(30)
    assert result[0].failure is None and ex.started[0].spec.env["CUDA_VISIBLE_DEVICES"] == gpus.fake(1)[0].uuid


def test_gpu_stats_rows_stream_from_nvml_into_the_journal(monkeypatch, tmp_path):
    nv = FakeNVML(monkeypatch)
    devs = [d for d in gpus.discover() if d.uuid in (nv.gpu[0], nv.mig[(1, 0)])]
    run = RunDir(tmp_path / "run").make()
    done = threading.Event()
    t = gpus.stream_stats(str(run.path / "gpu_stats.tsv"), str(run.journal), devs, done, 3600, print)
    stats = run.path / "gpu_stats.tsv"
    until(lambda: (stats.exists() and stats.read_text().count("\n") >= 3) or not t.is_alive(), "three rows")
    done.set()
    t.join(10)
    lines = [r.content.decode() for r in journal.records(str(run.journal)) if r.stream == journal.Stream.GPU_STATS]
    assert lines[0] == gpus.HEADER
    gpu_row, mig_row = (x.rstrip("\n").split("\t") for x in lines[1:3])
    assert gpu_row[1:] == ["0", nv.gpu[0], "Tesla V100-SXM2-32GB", "37", "18", "32768", "1024", "31744",
                           "123.46", "300.00", "40"]
    assert mig_row[2] == nv.mig[(1, 0)] and mig_row[4:6] == ["", ""]  # no utilisation for a MIG instance
    assert journal.Stream.FILE_PATHS[journal.Stream.GPU_STATS] == ".gpu_stats.tsv"
    assert (run.path / "gpu_stats.tsv").read_text() == "".join(lines)


def test_a_container_asks_docker_for_exactly_its_devices():
    req = dict(gpu_request(["GPU-1", "MIG-2"]))
    assert req["DeviceIDs"] == ["GPU-1", "MIG-2"] and req["Count"] == 0 and req["Capabilities"] == [["gpu"]]
    cs = ContainerSpec(image="x", job_id="ds1", project_id="p", gpus=["GPU-1"], instance="g1.1")
    err = Exception('500 Server Error: could not select device driver "" with capabilities: [[gpu]]')
    f = gpu_failure(err, cs)
    assert f.kind == FailureKind.UNSUPPORTED and "NVIDIA Container Toolkit" in f.message and "g1.1" in f.message
    assert gpu_failure(Exception("no such image"), cs) is None


def test_a_restarted_engine_gives_a_running_job_back_its_gpus(tmp_path):
    a, _, ex = attempt(tmp_path, fake(run_for=30))
    a.spec.instance_types, a.machine.gpu_devices, a.machine.gpu_stats_interval_s = [G1], gpus.fake(2), 3600
    t = threading.Thread(target=a.run)
    t.start()
    until(lambda: ex.started or not t.is_alive(), "the job starts")
    uuid = ex.started[0].spec.env["CUDA_VISIBLE_DEVICES"]
    fresh = Machine(root=tmp_path, process=ex, gpu_devices=gpus.fake(2), gpu_stats_interval_s=3600)
    b = Attempt("ds1", RunDir(tmp_path / "run"), fresh, DictIO({}, tmp_path))
    assert b._held_devices()[0].uuid == uuid  # what a restarted engine reads back from the run dir
    assert fresh.pool().reserve("next", 1, "g1.1").devices[0].uuid != uuid
    a.stop(__import__("runners.spec", fromlist=["StopRequest"]).StopRequest(9))
    t.join(30)


def test_the_engine_stopping_while_a_job_waits_for_a_gpu_leaves_it_for_the_next_engine(tmp_path):
    """Not an attempt that "ended before the job started" (an ERROR): Interrupted, as for a running job; a stop
    asked for the job itself still ends it as stopped."""
    for how in ("engine stops", "job stopped"):
        a, io_, ex = attempt(tmp_path / how, fake())
        a.spec.instance_types, a.machine.gpu_devices = [G1], gpus.fake(1)
        a.machine.pool().reserve("other", 1, "g1.1")
        got = []

        def run():
            try:
                got.append(a.run())
            except Interrupted as e:
                got.append(e)
        t = threading.Thread(target=run)
        t.start()
        until(lambda: "waiting for 1 GPU" in system_log(tmp_path / how) or not t.is_alive(), "waiting")
        if how == "engine stops":
            a.machine.stopping.set()
        else:
            a.stop(StopRequest(15, 5.0, "cancelled by user"))
        t.join(30)
        assert not t.is_alive() and not ex.started and not io_.events
        if how == "engine stops":
            assert isinstance(got[0], Interrupted)
        else:
            assert got[0].stopped.reason == "cancelled by user" and not got[0].started


def test_a_grant_of_another_kind_is_given_back_not_reused():
    pool = gpus.Pool(gpus.fake(2, migs=1))
    whole = pool.reserve("j", 1, "g1.1")
    mig = pool.reserve("j", 1, "g2.mig")  # the job is run as another type: its own kind of device
    assert mig.devices[0].mig and not whole.devices[0].mig
    assert pool.can_take(2, "g1.2")  # the whole GPU went back
    two = pool.reserve("j", 2, "g1.2")
    assert len(two.devices) == 2 and pool.can_take(1, "g2.mig")
    assert pool.reserve("j", 0, "c1.4").devices == [] and pool.held("j") is None


def test_a_run_as_a_cpu_type_holds_no_gpu_the_backend_reserved(tmp_path):
    """The node's choice is the one that counts: a GPU reserved for the hand-over is not held through a run on a
    CPU type (no-capacity took the GPU type away)."""
    from runners.spec import parse_faults
    a, _, ex = attempt(tmp_path, fake(run_for=30), faults=parse_faults("no-capacity=g1.1"))
    a.spec.instance_types, a.machine.gpu_devices, a.machine.gpu_stats_interval_s = [G1, C4], gpus.fake(1), 3600
    pool = a.machine.pool()
    pool.reserve("ds1", 1, "g1.1")  # as a backend that ignored the fault would have
    t = threading.Thread(target=a.run)
    t.start()
    until(lambda: ex.started or not t.is_alive(), "the job starts")
    try:
        assert a.spec.instance_types and ex.started[0].spec.env["NVIDIA_VISIBLE_DEVICES"] == "void"
        assert pool.held("ds1") is None and pool.can_take(1, "g1.1")
    finally:
        a.stop(StopRequest(9))
        t.join(30)


def test_the_stats_writer_closes_the_journal_when_its_file_cannot_be_opened(tmp_path):
    run = RunDir(tmp_path / "run").make()
    (run.path / "gpu_stats.tsv").mkdir()  # cannot be opened for writing
    before = set(os.listdir("/proc/self/fd"))
    t = gpus.stream_stats(str(run.path / "gpu_stats.tsv"), str(run.journal), gpus.fake(1), threading.Event(), 3600,
                          print, sampler=lambda devs: [])
    t.join(30)
    assert not t.is_alive() and set(os.listdir("/proc/self/fd")) <= before


def test_no_stats_row_is_written_once_the_job_ended(tmp_path):
    """A sample NVML gives after the end (a slow call) is not one of the job's rows."""
    run = RunDir(tmp_path / "run").make()
    done, late = threading.Event(), threading.Event()
    calls = []

    def sampler(devs):
        calls.append(1)
        if len(calls) == 1:
            return ["first\n"]
        late.wait(30)  # still in NVML when the job ends
        return ["late\n"]
    t = gpus.stream_stats(str(run.path / "gpu_stats.tsv"), str(run.journal), gpus.fake(1), done, 0.0, print,
                          sampler=sampler)
    until(lambda: len(calls) >= 2 or not t.is_alive(), "the second sample")
    done.set()
    late.set()
    t.join(30)
    assert not t.is_alive()
    rows = [r.content.decode() for r in journal.records(str(run.journal)) if r.stream == journal.Stream.GPU_STATS]
    assert rows == [gpus.HEADER, "first\n"]
