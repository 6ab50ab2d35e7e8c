"""This machine's GPUs, by device: what NVML reports (nvidia-ml-py, the one module here that talks to it), which
of them each job holds, and the `.gpu_stats.tsv` rows the cloud's client files.

A device is a whole GPU (``GPU-…`` UUID) or a MIG instance (``MIG-…``), as NVML names them; a job is given
devices by UUID (CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES for a process job, a device request for a
container). The pool counts them: a job whose instance type needs N GPUs waits until N are free, and ``g2.mig``
takes a MIG instance (where none exists it is refused, or given a shared whole GPU when the engine was told so).

Every NVML call goes through the ``pynvml`` module object (never ``from pynvml import ...``), so tests replace
its functions with a fake and keep its constants and error classes.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from runners import journal

MIG_INSTANCE = "g2.mig"  # the instance type that is a slice of an A100, not a whole GPU
NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")


@dataclass(frozen=True)
class Device:
    uuid: str  # GPU-… or MIG-…, as NVML reports it
    index: int  # NVML index of the (parent) GPU
    name: str = ""
    minor: int = -1  # /dev/nvidia<minor> of the (parent) GPU; -1 when unknown
    mig: bool = False
    parent: str = ""  # a MIG instance's GPU


class NvmlUnavailable(Exception):
    pass


def _nvml():
    try:
        import pynvml
    except ImportError:
        raise NvmlUnavailable("nvidia-ml-py is not installed") from None
    return pynvml


def discover() -> Optional[list[Device]]:
    """The GPUs and MIG instances NVML reports ([]: NVML says there is none); None where NVML cannot be asked (no
    driver, no nvidia-ml-py): the caller may look elsewhere (/dev). A GPU in MIG mode is not listed itself: only
    its instances can be given to jobs."""
    try:
        nv = _nvml()
        nv.nvmlInit()
    except Exception:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, no package
        return None
    out: list[Device] = []
    try:
        try:
            count = nv.nvmlDeviceGetCount()
        except nv.NVMLError:
            return None
        for i in range(count):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            uuid, name = nv.nvmlDeviceGetUUID(h), nv.nvmlDeviceGetName(h)
            try:
                minor = int(nv.nvmlDeviceGetMinorNumber(h))
            except nv.NVMLError:
                minor = -1
            try:
                mode, _ = nv.nvmlDeviceGetMigMode(h)
            except nv.NVMLError:
                mode = nv.NVML_DEVICE_MIG_DISABLE
            if mode != nv.NVML_DEVICE_MIG_ENABLE:
                out.append(Device(uuid, i, name, minor))
                continue
            for j in range(nv.nvmlDeviceGetMaxMigDeviceCount(h)):
                try:
                    mh = nv.nvmlDeviceGetMigDeviceHandleByIndex(h, j)
                except nv.NVMLError:
                    continue  # an empty slot
                out.append(Device(nv.nvmlDeviceGetUUID(mh), i, name, minor, mig=True, parent=uuid))
    finally:
        try:
            nv.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass
    return out


def fake(n: int, migs: int = 0) -> list[Device]:
    """``n`` whole GPUs and ``migs`` MIG instances, for tests (EngineConfig.fake_gpus)."""
    gpus = [Device(f"GPU-00000000-0000-0000-0000-{i:012d}", i, "Fake GPU") for i in range(n)]
    parent = f"GPU-00000000-0000-0000-0001-{0:012d}"
    return gpus + [Device(f"MIG-00000000-0000-0000-0002-{j:012d}", n, "Fake A100 MIG", mig=True, parent=parent)
                   for j in range(migs)]


def dev_nodes(devices: list[Device]) -> list[str]:
    """The device nodes a sandboxed process needs for these devices (those that exist)."""
    if not devices:
        return []
    nodes = [f"/dev/nvidia{d.minor}" for d in devices if d.minor >= 0] + list(NODES)
    if any(d.mig for d in devices):
        nodes.append("/dev/nvidia-caps")
    return [n for n in dict.fromkeys(nodes) if os.path.exists(n)]


def visible(devices: list[Device], machine_has_gpus: bool) -> dict[str, str]:
    """A process job's view: exactly its devices; none at all on a GPU machine when it has none."""
    if devices:
        ids = ",".join(d.uuid for d in devices)
        return {"CUDA_VISIBLE_DEVICES": ids, "NVIDIA_VISIBLE_DEVICES": ids}
    if machine_has_gpus:
        return {"CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": "void"}
    return {}


def container_visible(devices: list[Device]) -> dict[str, str]:
    """A container's view, for the NVIDIA Container Toolkit (nvidia/cuda images set NVIDIA_VISIBLE_DEVICES=all):
    exactly its devices, or none ("void") for an instance type without a GPU."""
    return {"NVIDIA_VISIBLE_DEVICES": ",".join(d.uuid for d in devices) if devices else "void"}


# --- which job holds which device --------------------------------------------------------------------------------


@dataclass
class Grant:
    devices: list[Device]
    shared: bool = False  # a whole GPU given to a g2.mig job without a MIG instance: not held exclusively


@dataclass
class Pool:
    """The devices of this machine and who holds them; thread-safe. ``mig_fallback``: "refuse" (a g2.mig job
    with no MIG instance here is refused) or "shared" (it gets a whole GPU, shared, said loudly)."""

    devices: list[Device]
    mig_fallback: str = "refuse"
    _held: dict[str, Grant] = field(default_factory=dict)
    _mu: threading.Condition = field(default_factory=threading.Condition)

    def whole(self) -> list[Device]:
        return [d for d in self.devices if not d.mig]

    def migs(self) -> list[Device]:
        return [d for d in self.devices if d.mig]

    def capacity(self, gpus: int, instance: str) -> Optional[str]:
        """None when this machine can ever give what ``instance`` needs, else why not."""
        if gpus <= 0:
            return None
        if instance == MIG_INSTANCE:
            if self.migs() or (self.mig_fallback == "shared" and self.whole()):
                return None
            return (f"instance type {instance} needs a MIG instance of an A100; this machine has "
                    f"{'no MIG instance (its GPUs are not in MIG mode)' if self.whole() else 'no GPU'}"
                    + ("; `dsjobs serve --mig-fallback shared` gives such jobs a shared whole GPU" if self.whole()
                       else ""))
        have = len(self.whole())
        if gpus > have:
            return f"instance type {instance} needs {_n(gpus)}; this machine has {have}"
        return None

    def _free(self, mig: bool) -> list[Device]:
        taken = {d.uuid for g in self._held.values() if not g.shared for d in g.devices}
        return [d for d in (self.migs() if mig else self.whole()) if d.uuid not in taken]

    def _pick(self, gpus: int, instance: str) -> Optional[Grant]:
        if instance == MIG_INSTANCE:
            free = self._free(mig=True)
            if free:
                return Grant(free[:1])
            if self.migs() or self.mig_fallback != "shared":
                return None  # every MIG instance is taken: wait
            users = {d.uuid: 0 for d in self.whole()}
            for g in self._held.values():
                for d in g.devices:
                    if d.uuid in users:
                        users[d.uuid] += 1
            least = min(self.whole(), key=lambda d: users[d.uuid])
            return Grant([least], shared=True)
        free = self._free(mig=False)
        return Grant(free[:gpus]) if len(free) >= gpus else None

    def can_take(self, gpus: int, instance: str) -> bool:
        if gpus <= 0:
            return True
        with self._mu:
            return self._pick(gpus, instance) is not None

    def reserve(self, job_id: str, gpus: int, instance: str) -> Optional[Grant]:
        """The devices for the job (the same ones when it holds what ``instance`` needs already; a grant of
        another kind or count is given back first); None when they are taken."""
        with self._mu:
            held = self._held.get(job_id)
            if held is not None:
                if self._fits(held, gpus, instance):
                    return held
                del self._held[job_id]
                self._mu.notify_all()
            if gpus <= 0:
                return Grant([])
            g = self._pick(gpus, instance)
            if g is not None:
                self._held[job_id] = g
            return g

    @staticmethod
    def _fits(g: Grant, gpus: int, instance: str) -> bool:
        if instance == MIG_INSTANCE:
            return len(g.devices) == 1 and (g.devices[0].mig or g.shared)
        return gpus > 0 and len(g.devices) == gpus and not g.shared and not any(d.mig for d in g.devices)

    def restore(self, job_id: str, uuids: list[str], shared: bool = False) -> None:
        """A run an earlier engine started keeps the devices it was given."""
        by_id = {d.uuid: d for d in self.devices}
        with self._mu:
            self._held[job_id] = Grant([by_id[u] for u in uuids if u in by_id], shared)

    def held(self, job_id: str) -> Optional[Grant]:
        with self._mu:
            return self._held.get(job_id)

    def release(self, job_id: str) -> None:
        with self._mu:
            if self._held.pop(job_id, None) is not None:
                self._mu.notify_all()

    def wait(self, timeout: float) -> None:
        with self._mu:
            self._mu.wait(timeout)


def choose(types: list, pool: Optional[Pool]) -> tuple[Optional[int], list[str]]:
    """The first of the job's instance types (objects with ``instance`` and ``gpus``) this machine can ever
    serve, and why each one before it was skipped."""
    skipped = []
    for i, t in enumerate(types):
        why = pool.capacity(t.gpus, t.instance) if pool is not None else (
            None if t.gpus <= 0 else f"instance type {t.instance} needs {_n(t.gpus)}; this machine has no GPU")
        if why is None:
            return i, skipped
        skipped.append(why)
    return None, skipped


def _n(n: int) -> str:
    return f"{n} GPU{'s' if n != 1 else ''}"


# --- .gpu_stats.tsv ---------------------------------------------------------------------------------------------

# dsjobs's layout (the cloud's is undocumented): nvidia-smi's --query-gpu names and units, one row per device per
# sample, tab-separated.
HEADER = ("timestamp\tindex\tuuid\tname\tutilization.gpu [%]\tutilization.memory [%]\tmemory.total [MiB]\t"
          "memory.used [MiB]\tmemory.free [MiB]\tpower.draw [W]\tpower.limit [W]\ttemperature.gpu\n")


def sample(devices: list[Device], now: Optional[float] = None) -> list[str]:
    """One row per device from NVML; a metric NVML does not give (a MIG instance's utilisation) is an empty
    cell. Raises NvmlUnavailable when NVML cannot be reached."""
    nv = _nvml()
    try:
        nv.nvmlInit()
    except Exception as e:  # noqa: BLE001
        raise NvmlUnavailable(str(e)) from None
    now = time.time() if now is None else now
    stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
    rows = []
    try:
        for d in devices:
            try:
                h = nv.nvmlDeviceGetHandleByUUID(d.uuid)
            except nv.NVMLError:
                continue

            def get(fn, *a):
                try:
                    return fn(h, *a)
                except nv.NVMLError:
                    return None
            util, mem = get(nv.nvmlDeviceGetUtilizationRates), get(nv.nvmlDeviceGetMemoryInfo)
            power, limit = get(nv.nvmlDeviceGetPowerUsage), get(nv.nvmlDeviceGetEnforcedPowerLimit)
            temp = get(nv.nvmlDeviceGetTemperature, nv.NVML_TEMPERATURE_GPU)
            cells = [stamp, str(d.index), d.uuid, d.name,
                     "" if util is None else str(util.gpu), "" if util is None else str(util.memory),
                     *(["", "", ""] if mem is None else [str(mem.total >> 20), str(mem.used >> 20),
                                                         str(mem.free >> 20)]),
                     "" if power is None else f"{power / 1000:.2f}", "" if limit is None else f"{limit / 1000:.2f}",
                     "" if temp is None else str(temp)]
            rows.append("\t".join(cells) + "\n")
    finally:
        try:
            nv.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass
    return rows


def stream_stats(path: str, journal_path: str, devices: list[Device], done: threading.Event, interval_s: float,
                 note: Callable[[str], None], sampler: Callable[[list[Device]], list[str]] = sample
                 ) -> threading.Thread:
    """Until ``done``: the header, then a sample every ``interval_s``, into ``path`` and as `.gpu_stats.tsv` in
    the job's journal. Where NVML cannot be reached the system log says so once and nothing more is written.
    The caller joins the thread it returns after setting ``done``: no row is written once ``done`` is set."""

    def loop():
        try:
            fd = journal.open_for_append(journal_path)
        except OSError:
            return
        try:
            f = open(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600), "a")
        except OSError:
            os.close(fd)
            return

        def put(line: str) -> None:
            if done.is_set():
                return  # the job ended: a sample taken meanwhile is not one of its rows
            try:
                f.write(line)
                f.flush()
                journal.append(fd, journal.Stream.GPU_STATS, line.encode())
            except OSError:
                pass
        try:
            if f.tell() == 0:
                put(HEADER)
            while True:
                try:
                    rows = sampler(devices)
                except NvmlUnavailable as e:
                    note(f"gpu stats: NVML cannot be reached ({e}); no .gpu_stats.tsv rows for this job")
                    return
                except Exception:  # noqa: BLE001 - a sampler's trouble ends no job
                    rows = []
                for r in rows:
                    put(r)
                if done.wait(interval_s):
                    return
        finally:
            os.close(fd)
            f.close()

    t = threading.Thread(target=loop, daemon=True, name="dsjobs-gpu-stats")
    t.start()
    return t
