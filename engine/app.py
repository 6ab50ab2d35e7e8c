"""The composition root: one function (build_engine) wires store, blob store, file endpoint, job service,
lifecycle and backends; nothing is patched in afterwards."""
from __future__ import annotations

import fcntl
import gc
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from engine.backends.base import Backend
from engine.backends.local import LocalBackend
from engine.cas import BlobStore
from engine.config import EngineConfig
from engine.errors import EngineError, FailedPrecondition
from engine.faults import ProjectFaults
from engine import jobpage
from engine.files import FileServer, Signer, load_key
from engine.jobs import JobService
from engine.lifecycle import Lifecycle
from engine.migrate import upgrade
from engine.records import Records
from engine.spec import Resolver
from engine.store import Store
from engine.tokens import owner_token
from engine.warm import WarmSandboxes
from runners import sandbox as sbx
from runners.executors.base import Executor
from runners.executors.docker import DockerExecutor
from runners.node import Machine, prewarm
from runners.executors.process import ProcessExecutor, is_zombie
from runners.pyenv import EnvCache
from runners.spec import FaultSpec, Limits

log = logging.getLogger(__name__)


class Janitor:
    """One thread for the periodic passes: the reconciler (often) and the expiry of job data (now and then)."""

    def __init__(self, cfg: EngineConfig, reconcile: Callable[[], None], expire: Callable[[], object]):
        self.cfg, self.reconcile, self.expire = cfg, reconcile, expire
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dsjobs-janitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _loop(self) -> None:
        last_expiry = 0.0
        while not self._stop.is_set():
            try:
                self.reconcile()
                if time.monotonic() - last_expiry >= self.cfg.janitor_interval_s:
                    self.expire()
                    last_expiry = time.monotonic()
            except Exception:  # noqa: BLE001 - the next pass tries again (a full disk comes back)
                log.exception("janitor pass failed")
            self._stop.wait(self.cfg.reconcile_interval_s)


@dataclass
class Engine:
    cfg: EngineConfig
    store: Store
    blobs: BlobStore
    files: FileServer
    jobs: JobService
    lifecycle: Lifecycle
    backends: dict[str, Backend]
    machine: Machine  # this machine, as the local backend's node runner sees it
    janitor: Janitor
    token: str = field(default="", repr=False)  # the owner's token (DATA_DIR/token)
    token_path: Optional[Path] = None
    _lock_fd: Optional[int] = field(default=None, repr=False)
    job_link: Optional[jobpage.JobPage] = None  # the job link's route on the file endpoint
    ui: Optional[object] = field(default=None, repr=False)  # engine/ui/server.py UiServer, once started
    warm: Optional[WarmSandboxes] = field(default=None, repr=False)  # sandboxes made ahead of jobs

    @property
    def files_url(self) -> str:
        return self.jobs.signer.base_url

    @property
    def envs(self) -> EnvCache:
        return self.machine.envs

    def start(self) -> "Engine":
        self.files.start()
        self.jobs.hub.start()
        self.lifecycle.start()
        self.janitor.start()
        # What exists by now (modules, gRPC, protobuf descriptors: ~40k objects) lives as long as the engine: out
        # of the collector's sight, a full collection scans only what jobs made, and pauses every thread (the API,
        # every job's) for a fraction of the time.
        gc.collect()  # garbage left so far is freed, not frozen with the rest
        gc.freeze()
        return self

    def start_ui(self, auth, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve the job pages on ``host``:``port`` (loopback) with the API's ``auth``; returns their base URL.
        The job link on the file endpoint then sends browsers there. Raises engine.ui.Unavailable (why, in one
        line) when the `ui` extra is not installed, OSError when the port cannot be had."""
        from engine import ui as ui_pkg  # standard library only: says what is missing before the stack loads
        why = ui_pkg.missing()
        if why:
            raise ui_pkg.Unavailable(why)
        from engine.ui.app import build  # ~200 ms of imports (Starlette, uvicorn, Jinja2): only here
        from engine.ui.server import UiServer
        stopping = threading.Event()
        # The app checks Host against the port it serves, known once the socket is bound (port 0: any free one).
        server = UiServer(lambda bound: build(self.jobs, auth, self.jobs.signer.key, host, bound,
                                              self.cfg.community_id, stopping), host, port, stopping)
        self.ui = server.start()
        if self.job_link is not None:
            self.job_link.ui_url = server.url
        return server.url

    def stop_ui(self) -> None:
        if self.ui is not None:
            if self.job_link is not None:
                self.job_link.ui_url = ""
            self.ui.stop()
            self.ui = None

    def stop(self, stop_jobs: bool = False) -> None:
        self.stop_ui()
        self.janitor.stop()
        if self.warm is not None:
            self.warm.close()  # before the executor: the run dirs made ahead for no job go with their sandboxes
        self.lifecycle.shutdown(stop_jobs=stop_jobs)
        self.files.stop()
        self.jobs.hub.stop()
        self.store.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def own_data_dir(path: Path) -> None:
    """The data dir is made 0700, or, when it exists, must be a directory of this user's that nobody else can
    write: one that another user made (in /tmp, say) could hold a token or a link of theirs. (A root engine may be
    given a data dir of a user's on purpose, whose uid then runs its containers; its engine files must still be
    root's own.)"""
    try:
        os.makedirs(path.parent, exist_ok=True)
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise FailedPrecondition(f"data dir {path} is not a directory")
    if st.st_uid != os.geteuid() and os.geteuid() != 0:
        raise FailedPrecondition(f"data dir {path} belongs to uid {st.st_uid}, not to this user ({os.geteuid()}): "
                                 "refusing it (another user may have made it); choose another --data-dir")
    if st.st_mode & 0o022:
        raise FailedPrecondition(f"data dir {path} is writable by others (mode {stat.S_IMODE(st.st_mode):o}): "
                                 "refusing it; choose another --data-dir, or chmod 700 it if it is yours alone")
    for name in ("token", "signing.key", "dsjobs.db", "engine.lock", "secrets"):
        try:
            fst = os.lstat(path / name)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(fst.st_mode) or fst.st_uid != os.geteuid():
            raise FailedPrecondition(f"{path / name} is a link or belongs to uid {fst.st_uid}, not to this engine's "
                                     "user: refusing the data dir (someone else may have planted it)")


LOCK_GRACE = 5.0  # seconds an engine waits for the lock of a data dir whose engine is gone


def _lock_holder(fd: int):
    """The pid of the live engine that wrote the lock file, or None when there is none (or it is gone)."""
    try:
        pid = int(os.pread(fd, 32, 0) or b"0")
    except (OSError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    try:
        if is_zombie(pid):
            return None  # killed, not yet reaped: gone
    except (OSError, ValueError):
        pass
    return pid


def lock_data_dir(cfg: EngineConfig) -> int:
    """One engine per data dir: two schedulers on one queue would run jobs twice."""
    own_data_dir(cfg.data_dir)
    fd = os.open(cfg.data_dir / "engine.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    deadline = time.monotonic() + LOCK_GRACE
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = _lock_holder(fd)
            # The engine that wrote its pid is gone, yet the lock is held: by a child it was forking when it was
            # killed, which holds the lock's fd until its exec (a few ms; long under load). Not another engine.
            if holder is None and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            os.close(fd)
            who = f" (pid {holder})" if holder else ""
            raise FailedPrecondition(f"data dir {cfg.data_dir} is in use by another dsjobs engine{who}") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def job_instance_types(cfg: EngineConfig, job) -> tuple[list[Limits], FaultSpec]:
    """The job's instance types as a machine counts them (GPUs), in order (unknown names left out), and its
    injected faults (no-capacity takes types away): what the node chooses from, as the local backend does."""
    names = job.params.cloud_instance_types or [cfg.default_instance_type]
    types = [Limits(n, float(cfg.instance_types[n].cpus), 0, int(cfg.instance_types[n].gpus))
             for n in names if n in cfg.instance_types]
    try:
        faults = ProjectFaults(cfg.data_dir).of(job.project_id, job.params.env.vars)
    except EngineError:
        faults = FaultSpec()  # the node says what is wrong with them
    return types, faults


def build_engine(cfg: EngineConfig, *, executor: Optional[Executor] = None, store: Optional[Store] = None,
                 backends: Optional[dict[str, Backend]] = None, clock: Callable[[], float] = time.time) -> Engine:
    """``executor``: the process executor of this machine (a fake in tests); ``backends``: instead of the ones the
    configuration names."""
    lock_fd = lock_data_dir(cfg)
    os.chmod(cfg.data_dir, 0o700)  # job data, the token and the signing key are the user's alone
    token, token_path = owner_token(cfg.data_dir)
    store = store or Store(cfg.data_dir / "dsjobs.db")
    upgrade(cfg.data_dir, store)
    blobs = BlobStore(cfg.data_dir / "blobs")
    key = load_key(cfg.data_dir / "signing.key")
    files = FileServer((cfg.files_host, cfg.files_port), blobs,
                       lambda base: Signer(key, cfg.files_url or base, cfg.url_ttl_s), cfg.files_idle_timeout_s,
                       tls=cfg.tls)
    job_link = jobpage.JobPage(store, cfg.community_id)
    files.mount(jobpage.PREFIX, job_link.handle)  # the job link answers (or sends to the UI, once it runs)
    records = Records(cfg, store, clock)
    lease = records.lease

    envs = EnvCache(cfg.data_dir / "envs", installer=cfg.env_installer, build_timeout_s=cfg.env_build_timeout_s,
                    size_limit_bytes=cfg.env_cache_limit_bytes, uv_cache=cfg.uv_cache_dir,
                    confine=None if cfg.sandbox == "none" else sbx.confiner(cfg.bwrap, sbx.hidden_paths(cfg.data_dir)))
    machine = Machine(root=cfg.data_dir, process=executor or ProcessExecutor(), envs=envs,
                      docker=DockerExecutor() if cfg.docker else None, run_as_root=cfg.docker_run_as_root,
                      start_pause_s=cfg.start_pause_s, fake_gpus=cfg.fake_gpus, gpu_devices=cfg.fake_gpu_devices,
                      mig_fallback=cfg.mig_fallback, gpu_stats_interval_s=cfg.gpu_stats_interval_s,
                      owner_pid=os.getpid() if cfg.jobs_die_with_engine else None)
    # The GPUs are looked for once (NVML's import alone is ~20 ms): beside the engine's start, not in the first
    # job's way (the lock of Machine.pool makes a job that comes sooner wait for this, never look twice).
    threading.Thread(target=machine.pool, name="dsjobs-gpus", daemon=True).start()
    warm = None
    if backends is None:
        if cfg.warm_sandboxes and cfg.sandbox != "none" and cfg.backend == "local" and executor is None:
            warm = WarmSandboxes(lambda run, template: prewarm(machine, run, template), machine.process.discard,
                                 records.run, cfg.data_dir / "jobs", store.has_job)
        backends = {"local": LocalBackend(machine, records.run_dir, blobs, lease, cfg.max_concurrent_jobs,
                                          instance_types=lambda job: job_instance_types(cfg, job), warm=warm)}
        if cfg.backend == "ray" or "ray" in cfg.project_backends.values():
            if not cfg.ray_address:
                raise FailedPrecondition("the ray backend needs the address of the cluster's dashboard (ray_address)")
            from engine.backends.ray import RayBackend
            backends["ray"] = RayBackend(cfg, records, blobs, lease, files.signer)
            files.mount("/runner/", backends["ray"].channel.handle)
    lifecycle = Lifecycle(cfg, records, blobs, Resolver(cfg), backends, lease)
    jobs = JobService(cfg, records, blobs, files.signer, lifecycle, warm=warm)
    janitor = Janitor(cfg, lifecycle.reconcile, jobs.expire_data)
    return Engine(cfg, store, blobs, files, jobs, lifecycle, backends, machine, janitor, token=token,
                  token_path=token_path, _lock_fd=lock_fd, job_link=job_link, warm=warm)
