"""The engine's own settings (not the job's config.yaml)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class InstanceType:
    name: str
    cpus: float
    memory_gb: float
    gpus: int = 0


# DataSphere's configurations (datasphere-behaviour.md section 8); engine configuration, so tests can add types.
DEFAULT_INSTANCE_TYPES = {t.name: t for t in [
    InstanceType("c1.4", 4, 32), InstanceType("c1.8", 8, 64), InstanceType("c1.32", 32, 256),
    InstanceType("c1.80", 80, 640), InstanceType("g1.1", 8, 48, 1), InstanceType("g1.2", 16, 96, 2),
    InstanceType("g1.4", 32, 192, 4), InstanceType("g2.1", 28, 119, 1), InstanceType("g2.2", 56, 238, 2),
    InstanceType("g2.4", 112, 476, 4), InstanceType("g2.8", 224, 952, 8), InstanceType("gt4.1", 4, 16, 1),
    InstanceType("gt4i.1", 8, 32, 1), InstanceType("g2.mig", 4, 16, 1),
]}


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "dsjobs"


@dataclass
class EngineConfig:
    data_dir: Path = field(default_factory=default_data_dir)
    files_host: str = "127.0.0.1"
    files_port: int = 0  # 0: any free port
    files_url: Optional[str] = None  # advertised base URL of the file endpoint; default http://host:port
    tls: Optional[tuple] = None  # (cert file, key file): the API and the file endpoint serve TLS (beyond loopback)
    max_concurrent_jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    url_ttl_s: float = 3600.0
    files_idle_timeout_s: float = 60.0  # a connection of the file endpoint that sends nothing this long is closed
    default_data_ttl_s: float = 14 * 24 * 3600.0
    default_graceful_timeout_s: float = 10.0
    janitor_interval_s: float = 60.0  # how often expired job data is cleared
    reconcile_interval_s: float = 2.0  # how often active jobs that no thread looks after are picked up again
    start_pause_s: float = 0.0  # fault injection for tests: a pause before a job's start and before its confirmation
    fake_gpus: Optional[int] = None  # tests: the GPUs this machine is said to have (None: those NVML reports)
    fake_gpu_devices: Optional[list] = None  # tests: the devices themselves (runners.gpus.fake(n, migs))
    # Run every job without env.docker inside this image, as the cloud runs them in its default image
    # (nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04 + Python 3.10, alias system-python-3-10); "" : as processes.
    cloud_like_default: str = ""
    sa_token_file: str = ""  # a service-account token for every project without one of its own (SA_TOKEN_FILENAME)
    mig_fallback: str = "refuse"  # g2.mig where no MIG instance exists: "refuse", or "shared" (a shared whole GPU)
    gpu_stats_interval_s: float = 5.0  # .gpu_stats.tsv: a row per GPU this often (the client polls every 5 s)
    max_job_duration_s: Optional[float] = None  # engine-wide limit on a job's running time; none by default
    log_limit_bytes: int = 100 * (1 << 20)  # the cloud's limit per log file
    max_file_bytes: int = 5 * (1 << 30)
    max_total_bytes: int = 10 * (1 << 30)
    max_list_entries: int = 100
    instance_types: dict = field(default_factory=lambda: dict(DEFAULT_INSTANCE_TYPES))
    default_instance_type: str = "c1.4"
    # Python environments: interpreters beyond PATH and pyenv, the installer, and a mirror used by every job that
    # does not name its own index (a job's build never sees the host's pip configuration).
    python_interpreters: tuple = ()
    env_installer: str = "auto"  # auto (uv when installed, else pip) | uv | pip
    pip_index_url: str = ""
    pip_extra_index_urls: tuple = ()
    env_build_timeout_s: float = 1800.0
    env_cache_limit_bytes: int = 20 * (1 << 30)
    uv_cache_dir: Optional[Path] = field(default_factory=lambda: Path(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")) / "dsjobs" / "uv")
    community_id: str = "local"
    docker: bool = True  # run jobs that name an image in containers (the engine starts without Docker too)
    # auto: a bridge network of dsjobs's own (no route to the host's loopback), or none where Docker cannot make
    # one; "host" only when asked for; "none"; or an existing network's name. Builds of python envs inside an
    # image need the package index and may have a setting of their own.
    docker_network: str = "auto"
    docker_build_network: str = "auto"
    # Process jobs and environment builds run confined by bubblewrap (runners/sandbox.py); "none" opts out.
    sandbox: str = "bwrap"
    # An engine embedded in a command (dsjobs run, run_job, the pytest plugin): its jobs die with its process, however
    # it ends (a kill -9 too), as its own stop would end them; a served engine's jobs outlive it, to be re-adopted.
    jobs_die_with_engine: bool = False
    # A confined process job's sandbox is made before the job, once a job of its project has run (engine/warm.py);
    # never for an engine that runs one job (dsjobs run), which would only make one for nothing.
    warm_sandboxes: bool = True
    bwrap: str = ""  # path of bwrap; default: the one on PATH
    docker_run_as_root: bool = False
    image_pull_timeout_s: float = 1800.0
    # Backends: "local" runs jobs on this machine; "ray" sends them to a Ray cluster (engine/remote.py).
    backend: str = "local"
    project_backends: dict = field(default_factory=dict)  # project id -> backend, over `backend`
    ray_address: str = ""  # the head's dashboard, e.g. http://HEAD:8265
    ray_token: str = ""  # RAY_AUTH_MODE=token
    ray_agent_python: str = "python3"  # a Python on the nodes with dsjobs installed
    ray_engine_url: str = ""  # how agents on the nodes reach this engine's file endpoint; default its own URL
    ray_node_dir: str = "/var/tmp/dsjobs-node"  # the agent's working dirs and caches on each node
    ray_poll_s: float = 0.5
    ray_result_grace_s: float = 3.0  # Ray says the attempt ended: how long its result may still be on its way
    ray_pending_timeout_s: float = 120.0
    ray_lost_after_s: float = 120.0  # Ray unreachable and the agent silent this long: the attempt is lost
    ray_backstop_margin_s: float = 30.0  # after the graceful timeout, before Ray's own stop
    # Ray's job monitor notices a supervisor actor's exit within this after the job ends; a Ray job deleted
    # earlier comes back as FAILED, so finished attempts are deleted from Ray only after it.
    ray_settle_s: float = 3.0
