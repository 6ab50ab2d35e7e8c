"""Everything a job needs before it starts, besides its files: its Python env, the environment variables, the
instance type, the container (image, mounts, user, limits, secrets), mounts and datasets, and how host paths look
from inside the job."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
import re
import shutil
import time
from pathlib import Path
from typing import Optional

from engine.config import InstanceType
from engine.jobs import JobService
from engine.model import Job
from engine.resources import Directories, Images, Secrets
from runners import pyenv
from runners import sandbox as sbx
from runners.base import Executor
from runners.docker import (CONTAINER_PROGRESS, CONTAINER_PROJECT_HOME, JOB_DIR, ContainerSpec, DockerError,
                            job_path_mapper)
from runners.pyenv import EnvCache, EnvError
from runners.fsops import chown_tree
from runners.workspace import Layout, job_env, process_env


@dataclass(frozen=True)
class PythonLayer:
    """A process job's Python: its own layer over a cached env, and the interpreter the engine chose for it."""

    layer: Path
    base: Path
    interpreter: pyenv.Interpreter


class Preparation:
    def __init__(self, jobs: JobService, envs: Optional[EnvCache], docker: Optional[Executor]):
        self.jobs = jobs
        self.envs = envs
        self.docker = docker
        self.secrets = Secrets(jobs.cfg.data_dir)
        self.images = Images(jobs.cfg.data_dir)
        self.mounts = Directories(jobs.cfg.data_dir, "mount")
        self.datasets = Directories(jobs.cfg.data_dir, "dataset")

    def image_python_env(self, job: Job, run_dir: Path, image: str) -> Optional[Path]:
        """A job in a container: its python_version must be the image's, and its env is built with it."""
        from runners import docker as rd
        pe = job.params.env.python_env
        have = rd.image_pythons(self.docker.dc, image)
        version = pe.python_version or (have[-1] if have else "")
        if version not in have:
            raise EnvError(f"python_version {version or '(any)'} is not in image {image} "
                           f"(it has: {', '.join('python' + v for v in have) or 'no python3.X'})")
        spec = pyenv.install_spec(pe, self.jobs.cfg.pip_index_url, tuple(self.jobs.cfg.pip_extra_index_urls))
        interp = pyenv.Interpreter(version, version, f"python{version}")
        self._progress(self.jobs.progress_path(job.id), 0, "building python environment")
        with open(run_dir / "env_build.log", "a") as build_log:
            def log(line: str) -> None:
                build_log.write(line + "\n")
                build_log.flush()
                self.jobs.system_log(job.id, line)
            image_id = self.docker.dc.api.inspect_image(image)["Id"]
            t = time.monotonic()
            network = rd.job_network(self.docker.dc, self.jobs.cfg.docker_build_network).name
            env_dir, built = self.envs.get(interp, spec, log, image=image_id, project=job.project_id,
                                           build=lambda d: rd.build_env_in_image(
                self.docker.dc, image, version, str(d), spec, log, self.jobs.cfg.env_build_timeout_s, network))
            self.jobs.system_log(job.id, f"python environment {'built' if built else 'taken from the cache'} in "
                                         f"{time.monotonic() - t:.2f}s: python{version} of the image")
        return env_dir

    def python_env(self, job: Job, run_dir: Path) -> Optional[PythonLayer]:
        """Build (or take from the cache) the job's Python env and give the job its own thin layer over it."""
        pe = job.params.env.python_env
        if pe is None or self.envs is None:
            return None
        cfg = self.jobs.cfg
        interp = pyenv.pick(pe.python_version, tuple(cfg.python_interpreters))
        spec = pyenv.install_spec(pe, cfg.pip_index_url, tuple(cfg.pip_extra_index_urls))
        self._progress(self.jobs.progress_path(job.id), 0, "building python environment")
        build_log = open(run_dir / "env_build.log", "a")
        with build_log:
            def log(line: str) -> None:
                build_log.write(line + "\n")
                build_log.flush()
                self.jobs.system_log(job.id, line)
            t = time.monotonic()
            base, built = self.envs.get(interp, spec, log, project=job.project_id)
            self.jobs.system_log(job.id, f"python environment {'built' if built else 'taken from the cache'} in "
                                         f"{time.monotonic() - t:.2f}s: python {interp.full}, "
                                         f"{len(spec.requirements)} requirement(s)")
        return PythonLayer(pyenv.job_layer(base, run_dir / "venv", interp), base, interp)

    @staticmethod
    def _progress(path: Path, progress: int, message: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(json.dumps({"progress": progress, "message": message}) + "\n")

    def env(self, job: Job, run_dir: Path, layout: Layout, project_home: Optional[str],
            venv: Optional[PythonLayer] = None, image_env: Optional[Path] = None,
            sandbox: Optional[sbx.Sandbox] = None) -> dict[str, str]:
        """The job's environment without its project secrets (see secret_env)."""
        progress = layout.to_job_path(str(self.jobs.progress_path(job.id)))
        if not uses_docker(job):
            bins = [str(venv.layer / "bin"), str(venv.base / "bin")] if venv is not None else []
            if sandbox is not None:
                bins += sandbox.path
            env = process_env(layout.work, bins, job.params.env.vars, progress, job.id,
                              venv=str(venv.layer) if venv is not None else "", home=sandbox.home if sandbox else "")
        else:
            # The image's own PATH, HOME and locale, except for a python env built for it; secrets come from a file.
            path = f"{image_env}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" if image_env else ""
            env = job_env(job.params.env.vars, progress, job.id, path=path, venv=str(image_env or ""))
        if project_home is not None:
            env["DS_PROJECT_HOME"] = layout.to_job_path(project_home)
        return env

    def secret_env(self, job: Job) -> dict[str, str]:
        """A process job's project secrets, as the cloud exports them; they reach the supervisor in memory only."""
        return self.secrets.all(job.project_id)

    def sandbox(self, job: Job, run_dir: Path, work: Path, venv: Optional[PythonLayer], project_home: Optional[str],
                resources: dict) -> Optional[sbx.Sandbox]:
        """What a process job may see (runners/sandbox.py); None when the engine runs jobs unconfined."""
        cfg = self.jobs.cfg
        if cfg.sandbox == "none":
            return None
        rw = [str(self.jobs.progress_path(job.id).parent)] + ([project_home] if project_home else [])
        ro = [host for host, _ in resources.values()]
        # The interpreter the engine chose (job_sandbox shows its installation), never a link in a built env.
        interp = venv.interpreter if venv is not None else pyenv.default_interpreter()
        trees = []
        if venv is not None:
            trees.append(str(venv.layer))  # the job's own layer: what it pip-installs at run time lands there
            ro += [str(venv.base)] + pyenv.layer_extras(venv.layer)
        return sbx.job_sandbox(str(run_dir), str(work), rw=rw, ro=ro, rw_trees=trees,
                               hide=sbx.hidden_paths(cfg.data_dir), python=interp.path)

    @staticmethod
    def unsupported(job: Job) -> Optional[str]:
        """What the job asks for that this engine cannot give yet: it fails clearly, never silently."""
        p = job.params
        if p.env.python_env is not None and p.env.python_env.conda_yaml:
            return "python_env.conda_yaml: conda environments are not available locally (use pip requirements)"
        if p.spark_connector_id:
            return f"spark_parameters: Spark connector {p.spark_connector_id!r} is not available locally"
        return None

    def resources(self, job: Job) -> dict[str, tuple[str, str]]:
        """${<id>} of s3 mounts and datasets -> (host dir, dir inside a container); unknown ids fail the job."""
        out = {}
        for rid in job.params.s3_mount_ids:
            out[rid] = (self.mounts.resolve(rid), f"/dsjobs/s3/{rid}")
        for rid in job.params.dataset_ids:
            out[rid] = (self.datasets.resolve(rid), f"/dsjobs/datasets/{rid}")
        return out

    def instance(self, job: Job, note) -> InstanceType:
        """The first requested type this machine can serve (GPUs are what it cannot fake)."""
        cfg = self.jobs.cfg
        names = job.params.cloud_instance_types or [cfg.default_instance_type]
        for n in names:
            t = cfg.instance_types[n]
            if t.gpus <= _machine_gpus():
                return t
            note(f"instance type {n} needs {t.gpus} GPU(s); this machine has {_machine_gpus()}")
        raise DockerError(f"none of the instance types {', '.join(names)} can run on this machine: "
                          f"it has no GPU", code="FAILED_PRECONDITION")

    def image(self, job: Job) -> tuple[str, str, str]:
        """(image, registry username, password) of a Docker job; an unknown image id or secret fails it."""
        p = job.params
        if p.env.docker_image_resource_id:
            return self.images.resolve(p.env.docker_image_resource_id), "", ""
        spec = p.env.docker_image_spec
        if spec.password_stored:  # a password_plain_text of the request, kept in the secrets store
            password = self.secrets.job_password(job.id)
        elif spec.password_ds_secret_name:
            password = self.secrets.get(job.project_id, spec.password_ds_secret_name)
        else:
            password = ""
        return spec.image_url, spec.username, password

    def container(self, job: Job, run_dir: Path, work: Path, project_home: Optional[str], instance,
                   resources: dict) -> ContainerSpec:
        jobs, cfg = self.jobs, self.jobs.cfg
        note = lambda m: jobs.system_log(job.id, m)  # noqa: E731
        image, user, password = self.image(job)
        from runners import docker as rd
        rd.ensure_image(self.docker.dc, image, user, password, note=note, timeout_s=cfg.image_pull_timeout_s)
        cpus, memory = rd.capped(instance.cpus, int(instance.memory_gb * (1 << 30)), note, instance.name)
        owner = os.stat(cfg.data_dir)
        binds = {str(work): {"bind": JOB_DIR, "mode": "rw"},
                 str(jobs.progress_path(job.id).parent): {"bind": CONTAINER_PROGRESS, "mode": "rw"}}
        if project_home:
            binds[project_home] = {"bind": CONTAINER_PROJECT_HOME, "mode": "rw"}
        for host, inside in resources.values():
            binds[host] = {"bind": inside, "mode": "ro"}  # mounts and datasets are for reading
        secrets = rd.secrets_script(self.secrets.all(job.project_id), note)
        user_spec = None if cfg.docker_run_as_root or owner.st_uid == 0 else f"{owner.st_uid}:{owner.st_gid}"
        if user_spec:
            # Outputs are not left root-owned: the job runs as the owner of its working directory.
            for d in [work, jobs.progress_path(job.id).parent] + ([Path(project_home)] if project_home else []):
                chown_tree(str(d), owner.st_uid, owner.st_gid)
        network = rd.job_network(self.docker.dc, cfg.docker_network)
        note(f"network: {network.name} ({network.why})")
        return ContainerSpec(image=image, job_id=job.id, project_id=job.project_id, binds=binds, user=user_spec,
                             network=network.name, cpus=cpus, memory_bytes=memory, secrets=secrets)

    def check_storage(self, job: Job, work: Path) -> None:
        ws = job.params.extended_working_storage
        if ws is not None and ws.size_gb:
            work.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(work).free
            if free < ws.size_gb * (1 << 30):
                self.jobs.system_log(job.id, f"warning: working storage of {ws.size_gb} GB was asked for; the disk "
                                             f"holding the working directory has {free / (1 << 30):.1f} GB free")

    def to_job_path(self, job: Job, work: Path, project_home: Optional[str], resources: dict):
        if not uses_docker(job):
            return lambda p: p
        progress = str(self.jobs.progress_path(job.id).parent)
        table = [(str(work), JOB_DIR), (progress, CONTAINER_PROGRESS)] + list(resources.values())
        if project_home:
            table.append((project_home, CONTAINER_PROJECT_HOME))
        return job_path_mapper(table)


def uses_docker(job: Job) -> bool:
    return bool(job.params.env.docker_image_resource_id or job.params.env.docker_image_spec is not None)


def _machine_gpus() -> int:
    return len([d for d in os.listdir("/dev") if re.fullmatch(r"nvidia\d+", d)]) if os.path.isdir("/dev") else 0
