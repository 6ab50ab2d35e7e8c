"""Checks on JobParameters before a job is accepted; every error names the field and the value."""
from __future__ import annotations

import re
from pathlib import PurePosixPath

from engine.cas import SHA_RE
from engine.config import EngineConfig
from engine.errors import InvalidArgument
from engine.ids import SECRET_RE, path_safe
from engine.model import NONE, ZIP, JobParameters
from engine import faults
from runners.spec import FAULTS_VAR, parse_duration

VAR_RE = re.compile(r"\$\{(.+?)}")
# The official client's pattern, quirk included (A-z also admits [ \ ] ^ _ `).
VAR_NAME_RE = re.compile(r"[0-9a-z-A-z\-_]{1,50}")
RESOURCE_ID_RE = re.compile(r"[0-9a-z]{20}")
DS_PROJECT_HOME = "DS_PROJECT_HOME"
MAX_DURATION_VAR = "DSJOBS_MAX_DURATION"
MAX_TTL_S = 100 * 365 * 86400.0  # data TTLs and time limits beyond this are refused (timestamps end in 9999)
MAX_GRACE_S = 7 * 86400.0
MAX_SIZE_GB = 1 << 40  # only a sanity bound: the disk decides what fits
ENV_NAME_RE = re.compile(r"[^=\x00]{1,4096}")
PYTHON_VERSION_RE = re.compile(r"3\.\d{1,3}")


def _no_nul(field: str, value: str) -> None:
    if "\x00" in value:
        raise InvalidArgument(f"{field} {value[:60]!r} contains a NUL byte")


def check_ttl(field: str, ttl_s) -> None:
    if ttl_s is None:
        return
    if ttl_s < 0:
        raise InvalidArgument(f"{field} {ttl_s:g}s is negative")
    if ttl_s > MAX_TTL_S:
        raise InvalidArgument(f"{field} {ttl_s:g}s is more than 100 years; leave it unset for no expiry")


def _relative_ok(path: str) -> bool:
    p = PurePosixPath(path)
    return bool(path) and not p.is_absolute() and ".." not in p.parts and path.strip() not in ("", ".")


def _check_path(field: str, path: str, var: str) -> None:
    if not path:
        raise InvalidArgument(f"{field}.path is empty")
    if "\x00" in path:
        raise InvalidArgument(f"{field}.path {path!r} contains a NUL byte")
    if not var and not _relative_ok(path):
        raise InvalidArgument(f"{field}.path {path!r}: a path without a var must be relative and without '..'")
    if var and not VAR_NAME_RE.fullmatch(var):
        raise InvalidArgument(f"{field}.var {var!r} does not fit {VAR_NAME_RE.pattern}")
    if var == DS_PROJECT_HOME:
        raise InvalidArgument(f"{field}.var {var!r} is reserved")


def validate(params: JobParameters, cfg: EngineConfig) -> None:
    if not params.cmd.strip():
        raise InvalidArgument("job_parameters.cmd is empty")
    _no_nul("job_parameters.cmd", params.cmd)
    for name, value in params.env.vars.items():
        if not ENV_NAME_RE.fullmatch(name):
            raise InvalidArgument(f"job_parameters.env.vars: name {name[:60]!r} is not an environment variable "
                                  "name (empty, or with '=' or a NUL byte)")
        _no_nul(f"job_parameters.env.vars[{name}]", value)
    spec = params.env.docker_image_spec
    if spec is not None:
        if not spec.image_url.strip():
            raise InvalidArgument("job_parameters.env.docker_image_spec.image_url is empty")
        for fld in ("image_url", "username", "password_ds_secret_name"):
            _no_nul(f"job_parameters.env.docker_image_spec.{fld}", getattr(spec, fld))
        name = spec.password_ds_secret_name
        if name and not (SECRET_RE.fullmatch(name) or (path_safe(name) and not name.startswith("."))):
            raise InvalidArgument(f"job_parameters.env.docker_image_spec.password_ds_secret_name {name[:60]!r} is "
                                  "not a secret name")
    _no_nul("job_parameters.env.docker_image_resource_id", params.env.docker_image_resource_id)
    pe = params.env.python_env
    if pe is not None:
        if pe.python_version and not PYTHON_VERSION_RE.fullmatch(pe.python_version):
            raise InvalidArgument(f"job_parameters.env.python_env.python_version {pe.python_version[:60]!r} is not "
                                  "a Python version (3.X)")
        for i, line in enumerate(pe.requirements):
            _no_nul(f"job_parameters.env.python_env.requirements[{i}]", line)
        if pe.pip_options is not None:
            for u in [pe.pip_options.index_url, *pe.pip_options.extra_index_urls, *pe.pip_options.trusted_hosts]:
                _no_nul("job_parameters.env.python_env.pip_options", u)
    ws = params.extended_working_storage
    if ws is not None and not 0 <= ws.size_gb <= MAX_SIZE_GB:
        raise InvalidArgument(f"job_parameters.extended_working_storage.size_gb {ws.size_gb} is out of range "
                              f"(0 to {MAX_SIZE_GB})")
    for i, ds in enumerate(params.output_datasets):
        if not 0 <= ds.size_gb <= MAX_SIZE_GB:
            raise InvalidArgument(f"job_parameters.output_datasets[{i}].size_gb {ds.size_gb} is out of range "
                                  f"(0 to {MAX_SIZE_GB})")
    if params.spark_connector_id:
        _no_nul("job_parameters.spark_parameters.connector_id", params.spark_connector_id)
        if params.uses_docker:
            # As the cloud: a Spark connector job runs in DataSphere's own environment, its image is not changed.
            image = params.env.docker_image_resource_id or (params.env.docker_image_spec.image_url
                                                            if params.env.docker_image_spec else "")
            raise InvalidArgument(f"job_parameters.env: a job with a Spark connector "
                                  f"(spark_parameters.connector_id {params.spark_connector_id!r}) cannot have a "
                                  f"Docker image ({image!r}): the image of a Spark job cannot be changed")
    names: list[str] = []
    total = 0
    for field, items in (("input_files", params.input_files),
                         ("python_env.local_modules",
                          params.env.python_env.local_modules if params.env.python_env else [])):
        for i, f in enumerate(items):
            fld = f"job_parameters.{field}[{i}]"
            if field == "input_files":
                _check_path(f"{fld}.desc", f.desc.path, f.desc.var)
            if not SHA_RE.fullmatch(f.sha256):
                raise InvalidArgument(f"{fld}.sha256 {f.sha256!r} is not a lowercase hex sha256")
            if f.size_bytes < 0:
                raise InvalidArgument(f"{fld}.size_bytes {f.size_bytes} is negative")
            if f.size_bytes > cfg.max_file_bytes:
                raise InvalidArgument(f"{fld}.size_bytes {f.size_bytes} is over the limit of {cfg.max_file_bytes}")
            if f.compression_type not in (NONE, ZIP):
                raise InvalidArgument(f"{fld}.compression_type {f.compression_type!r} is not NONE or ZIP")
            total += f.size_bytes
            if f.desc.var and field == "input_files":
                names.append(f.desc.var)
    placed: dict[PurePosixPath, int] = {}  # inputs without a var land at their path: no two may overlap
    for i, f in enumerate(params.input_files):
        if f.desc.var:
            continue
        p = PurePosixPath(f.desc.path.strip("/"))
        for q, j in placed.items():
            if p == q or q in p.parents or p in q.parents:
                inner, outer = (i, j) if q in p.parents or p == q else (j, i)
                raise InvalidArgument(
                    f"job_parameters.input_files[{inner}].path {params.input_files[inner].desc.path!r} is the same "
                    f"as or inside input_files[{outer}].path {params.input_files[outer].desc.path!r}")
        placed[p] = i
    if total > cfg.max_total_bytes:
        raise InvalidArgument(f"job_parameters.input_files: total size {total} is over the limit of {cfg.max_total_bytes}")
    for i, d in enumerate(params.output_files):
        _check_path(f"job_parameters.output_files[{i}]", d.path, d.var)
        if d.var:
            names.append(d.var)
    for field, items in (("input_files", params.input_files), ("output_files", params.output_files),
                         ("s3_mount_ids", params.s3_mount_ids), ("dataset_ids", params.dataset_ids)):
        if len(items) > cfg.max_list_entries:
            raise InvalidArgument(f"job_parameters.{field} has {len(items)} entries, more than {cfg.max_list_entries}")
    for field, ids in (("s3_mount_ids", params.s3_mount_ids), ("dataset_ids", params.dataset_ids)):
        for rid in ids:
            if not RESOURCE_ID_RE.fullmatch(rid):
                raise InvalidArgument(f"job_parameters.{field}: {rid!r} is not a resource id ([0-9a-z]{{20}})")
            names.append(rid)
    for i, a in enumerate(params.arguments):
        if not VAR_NAME_RE.fullmatch(a.name):
            raise InvalidArgument(f"job_parameters.arguments[{i}].name {a.name!r} does not fit {VAR_NAME_RE.pattern}")
        _no_nul(f"job_parameters.arguments[{i}].value", a.value)
        names.append(a.name)
    for i, ds in enumerate(params.output_datasets):
        if not VAR_NAME_RE.fullmatch(ds.var):
            raise InvalidArgument(f"job_parameters.output_datasets[{i}].var {ds.var!r} does not fit {VAR_NAME_RE.pattern}")
        names.append(ds.var)
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise InvalidArgument(f"job_parameters: variable {n!r} is declared more than once")
        seen.add(n)
    for ref in VAR_RE.findall(params.cmd):
        if ref == DS_PROJECT_HOME:
            if not params.attach_project_disk:
                raise InvalidArgument("job_parameters.cmd uses ${DS_PROJECT_HOME} but attach_project_disk is not set")
            continue
        if ref not in seen:
            raise InvalidArgument(f"job_parameters.cmd contains variable not presented in job parameters: {ref!r}")
    for t in params.cloud_instance_types:
        if t not in cfg.instance_types:
            raise InvalidArgument(
                f"job_parameters.cloud_instance_types: unknown instance type {t!r} "
                f"(known: {', '.join(sorted(cfg.instance_types))})")
    if MAX_DURATION_VAR in params.env.vars:
        try:
            limit = parse_duration(params.env.vars[MAX_DURATION_VAR])
            if not 0 < limit <= MAX_TTL_S:
                raise ValueError("it must be positive and at most 100 years")
        except ValueError as e:
            raise InvalidArgument(f"job_parameters.env.vars[{MAX_DURATION_VAR}] "
                                  f"{params.env.vars[MAX_DURATION_VAR]!r}: {e}") from None
    if FAULTS_VAR in params.env.vars:
        faults.check(f"job_parameters.env.vars[{FAULTS_VAR}]", params.env.vars[FAULTS_VAR])
    g = params.graceful_shutdown
    if g is not None:
        if g.signal and not 1 <= g.signal <= 64:
            raise InvalidArgument(f"job_parameters.graceful_shutdown_parameters.signal {g.signal} is not a signal number")
        if g.timeout_s is not None and not 0 <= g.timeout_s <= MAX_GRACE_S:
            raise InvalidArgument(f"job_parameters.graceful_shutdown_parameters.timeout {g.timeout_s:g}s is out of "
                                  f"range (0 to {MAX_GRACE_S:g}s)")
