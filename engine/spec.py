"""A job and the engine's configuration become an AttemptSpec (runners/spec.py): everything of an attempt that
needs the engine (project secrets, a registry password, what resource ids stand for, the project disk, the
instance types' sizes, the stop policy and time limits). The node runner does the rest, on whatever machine."""
from __future__ import annotations

import os
import signal

from engine.config import EngineConfig
from engine.errors import EngineError
from engine.faults import ProjectFaults
from engine.ids import path_safe
from engine.model import Job
from engine.resources import Directories, Images, Secrets, SparkConnectors
from engine.validation import MAX_DURATION_VAR
from runners.spec import (AttemptSpec, EnvSettings, FailureKind, ImageSpec, InputFile, JobFailure, Limits, Mount,
                          OutputDecl, PythonSpec, S3Source, SparkSpec, StopRequest, parse_duration)

# S3 connectors where the cloud documents them (/job/s3/<connector id>/...); datasets beside them.
CONTAINER_S3, CONTAINER_DATASETS = "/job/s3", "/dsjobs/datasets"


class Resolver:
    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg
        self.secrets = Secrets(cfg.data_dir)
        self.images = Images(cfg.data_dir)
        self.mounts = Directories(cfg.data_dir, "mount")
        self.datasets = Directories(cfg.data_dir, "dataset")
        self.spark = SparkConnectors(cfg.data_dir)
        self.faults = ProjectFaults(cfg.data_dir)

    def resolve(self, job: Job, instance: str = "") -> AttemptSpec:
        """The spec of the job's next attempt; ``instance``: the type a backend chose (else the job's list).
        Raises JobFailure saying what is missing or cannot be given."""
        try:
            return self._resolve(job, instance)
        except EngineError as e:  # an unknown image id, secret, mount or dataset: the job names what is not there
            raise JobFailure(FailureKind.MISSING, e.message) from None

    def _resolve(self, job: Job, instance: str) -> AttemptSpec:
        cfg, p = self.cfg, job.params
        why = unsupported(job)
        if why:
            raise JobFailure(FailureKind.UNSUPPORTED, why)
        names = [instance] if instance else (p.cloud_instance_types or [cfg.default_instance_type])
        types = [cfg.instance_types[n] for n in names]
        limit = self.max_duration(job)
        sig, grace = self.stop_policy(job, graceful=True)
        spec = AttemptSpec(
            job_id=job.id, project_id=job.project_id, attempt=str(job.attempt), cmd=p.cmd,
            instance_types=[Limits(t.name, float(t.cpus), int(t.memory_gb * (1 << 30)), int(t.gpus)) for t in types],
            arguments={a.name: a.value for a in p.arguments}, env_vars=dict(p.env.vars),
            secrets=self.secrets.all(job.project_id),
            inputs=[InputFile(f.desc.path, f.desc.var, f.sha256, f.size_bytes, f.compression_type == "ZIP")
                    for f in p.input_files],
            outputs=[OutputDecl(d.path, d.var) for d in p.output_files],
            output_datasets=[d.var for d in p.output_datasets],
            python=self._python(job), image=self._image(job) if p.uses_docker else self._default_image(job),
            mounts=[Mount(rid, self.mounts.resolve(rid), f"{CONTAINER_S3}/{rid}") for rid in p.s3_mount_ids]
            + [Mount(rid, self.datasets.resolve(rid), f"{CONTAINER_DATASETS}/{rid}") for rid in p.dataset_ids],
            project_home=self._project_home(job), max_duration_s=limit,
            deadline_stop=StopRequest(int(sig if sig != signal.SIGKILL else signal.SIGTERM),
                                      float(grace or cfg.default_graceful_timeout_s),
                                      f"the job's maximum running time ({limit:g}s) was reached" if limit else "",
                                      kind="deadline"),
            log_limit_bytes=cfg.log_limit_bytes,
            working_storage_gb=p.extended_working_storage.size_gb if p.extended_working_storage else 0,
            env=EnvSettings(interpreters=list(cfg.python_interpreters), installer=cfg.env_installer,
                            pip_index_url=cfg.pip_index_url, pip_extra_index_urls=list(cfg.pip_extra_index_urls),
                            build_timeout_s=cfg.env_build_timeout_s, cache_limit_bytes=cfg.env_cache_limit_bytes),
            sandbox=cfg.sandbox, bwrap=cfg.bwrap, faults=self.faults.of(job.project_id, p.env.vars),
            spark=SparkSpec(p.spark_connector_id, self.spark.resolve(p.spark_connector_id))
            if p.spark_connector_id else None)
        self._s3_sources(job, spec)
        spec.sa_token = self.sa_token(job.project_id)
        return spec

    def sa_token(self, project: str) -> str:
        """The project's service-account token (dsjobs secret set --sa-token), else the engine's file's."""
        token = self.secrets.sa_token(project)
        if not token and self.cfg.sa_token_file:
            try:
                with open(self.cfg.sa_token_file) as f:
                    token = f.read().strip()
            except OSError as e:
                raise JobFailure(FailureKind.MISCONFIGURED, f"the service account token file "
                                                            f"{self.cfg.sa_token_file} cannot be read: {e}") from None
        return token

    def _s3_sources(self, job: Job, spec: AttemptSpec) -> None:
        """S3 mounts backed by a bucket: what the node copies before the job starts, and what the job is given to
        write back through the S3 API (the endpoint and the keys, as AWS_* variables)."""
        for rid in job.params.s3_mount_ids:
            meta = self.mounts.s3(rid)
            if not meta:
                continue
            try:
                access = self.secrets.get(job.project_id, meta["access_key_secret"])
                secret = self.secrets.get(job.project_id, meta["secret_key_secret"])
            except EngineError as e:  # the mount's keys are secrets of the job's project: which mount needs them
                raise type(e)(f"s3 mount {rid}: {e.message}") from None
            spec.s3_sources.append(S3Source(rid, meta["endpoint"], meta["bucket"], meta.get("prefix", ""),
                                            meta.get("region") or "us-east-1", access, secret))
            if len(spec.s3_sources) == 1:  # the first bucket-backed mount's endpoint is the job's
                for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
                    spec.env_vars.setdefault(k, meta["endpoint"])
                for k in ("AWS_DEFAULT_REGION", "AWS_REGION"):
                    spec.env_vars.setdefault(k, meta.get("region") or "us-east-1")
                spec.secrets.setdefault("AWS_ACCESS_KEY_ID", access)
                spec.secrets.setdefault("AWS_SECRET_ACCESS_KEY", secret)
            spec.env_vars.setdefault(f"DSJOBS_S3_{rid}", f"s3://{meta['bucket']}/{meta.get('prefix', '')}")

    @staticmethod
    def _python(job: Job):
        pe = job.params.env.python_env
        if pe is None:
            return None
        po = pe.pip_options
        return PythonSpec(version=pe.python_version, requirements=list(pe.requirements),
                          index_url=po.index_url if po else "", extra_index_urls=list(po.extra_index_urls) if po else [],
                          trusted_hosts=list(po.trusted_hosts) if po else [], no_deps=bool(po and po.no_deps),
                          local_modules=[InputFile(f.desc.path, f.desc.var, f.sha256, f.size_bytes, True)
                                         for f in pe.local_modules])

    def _image(self, job: Job) -> ImageSpec:
        """A Docker job's image and registry credentials; an unknown image id or secret fails it."""
        cfg, env = self.cfg, job.params.env
        if env.docker_image_resource_id:
            image, user, password = self.images.resolve(env.docker_image_resource_id), "", ""
        else:
            s = env.docker_image_spec
            image, user = s.image_url, s.username
            if s.password_stored:  # a password_plain_text of the request, kept in the secrets store
                password = self.secrets.job_password(job.id)
            elif s.password_ds_secret_name:
                password = self.secrets.get(job.project_id, s.password_ds_secret_name)
            else:
                password = ""
        return ImageSpec(image=image, username=user, password=password, network=cfg.docker_network,
                         build_network=cfg.docker_build_network, run_as_root=cfg.docker_run_as_root,
                         pull_timeout_s=cfg.image_pull_timeout_s)

    def _default_image(self, job: Job):
        """``--cloud-like-default IMAGE``: a job without env.docker runs in that image, as in the cloud's default
        one (a Spark job stays a process: its local Spark uses this machine's Java)."""
        cfg = self.cfg
        if not cfg.cloud_like_default or job.params.spark_connector_id:
            return None
        return ImageSpec(image=cfg.cloud_like_default, network=cfg.docker_network,
                         build_network=cfg.docker_build_network, run_as_root=cfg.docker_run_as_root,
                         pull_timeout_s=cfg.image_pull_timeout_s, default=True)

    def _project_home(self, job: Job) -> str:
        if not job.params.attach_project_disk:
            return ""
        if not path_safe(job.project_id):
            raise JobFailure(FailureKind.UNSUPPORTED, f"project {job.project_id!r} cannot have a project disk "
                                                      "(not a valid project id)")
        home = self.cfg.data_dir / "projects" / job.project_id / "home"
        os.makedirs(home, mode=0o700, exist_ok=True)
        return str(home)

    def stop_policy(self, job: Job, graceful: bool) -> tuple[int, float]:
        """(signal, seconds before SIGKILL): the job's graceful shutdown when asked for, else SIGKILL at once."""
        g = job.params.graceful_shutdown
        if graceful and g is not None:
            return g.signal or signal.SIGTERM, g.timeout_s if g.timeout_s else self.cfg.default_graceful_timeout_s
        return signal.SIGKILL, 0.0

    def stop_request(self, job: Job, graceful: bool, reason: str) -> StopRequest:
        sig, grace = self.stop_policy(job, graceful)
        return StopRequest(int(sig), float(grace), reason, kind="cancel")

    def max_duration(self, job: Job):
        """The engine's limit and the job's own (env var DSJOBS_MAX_DURATION, e.g. "90s" or "2h"), the smaller."""
        limits = [self.cfg.max_job_duration_s]
        own = job.params.env.vars.get(MAX_DURATION_VAR)
        if own:
            limits.append(parse_duration(own))
        limits = [x for x in limits if x]
        return min(limits) if limits else None


def unsupported(job: Job):
    """What the job asks for that this engine cannot give yet: it fails clearly, never silently."""
    p = job.params
    if p.env.python_env is not None and p.env.python_env.conda_yaml:
        return "python_env.conda_yaml: conda environments are not available locally (use pip requirements)"
    return None
