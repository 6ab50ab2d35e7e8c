"""What the pages show of a job, as plain values for the templates and the event stream: no web framework here."""
from __future__ import annotations

import time
from typing import Optional

import yaml

from engine.model import Job
from engine.state import JobStatus

S = JobStatus
HIDDEN = "•••"
# Keys whose scalar values are secrets wherever they are in a config (a registry password written in plain text,
# say); a `secret-id` is only a secret's name.
SECRET_KEYS = {"password", "token"}


def when(t: Optional[float]) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) if t else ""


def duration(job: Job, now: Optional[float] = None) -> str:
    if not job.started_at:
        return ""
    s = max(0.0, (job.finished_at or now or time.time()) - job.started_at)
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(s), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def instance_type(job: Job) -> str:
    return job.actual_cloud_instance_type or (job.params.cloud_instance_types or [""])[0]


def status_of(job: Job, progress) -> dict:
    """The live part of a job page (the first status event and every change after it)."""
    return {"status": job.status.name, "terminal": job.status.terminal, "details": job.status_details,
            "progress": None if progress is None else progress.progress,
            "message": "" if progress is None else progress.message,
            "return_code": job.return_code, "error": job.error.message if job.error else "",
            # the duration once it is fixed: a running one would make every look at the job a change to send
            "started": when(job.started_at), "finished": when(job.finished_at),
            "duration": duration(job) if job.status.terminal else "",
            "instance": instance_type(job), "graceful": job.params.graceful_shutdown is not None,
            "timeline": timeline(job)}


def timeline(job: Job) -> list[tuple[str, str]]:
    """(status, when) from the job's creation on. Records of engines before the history was kept have only the
    times of the first and last steps."""
    steps = [("CREATING", job.created_at)]
    if job.queued_at:
        steps.append(("PREPARING", job.queued_at))
    if job.status_history:
        steps += [(name, t) for name, t in job.status_history]
    else:
        if job.started_at:
            steps.append(("EXECUTING", job.started_at))
        if job.status.terminal:
            steps.append((job.status.name, job.finished_at))
    return [(name, when(t)) for name, t in steps]


def parameters(job: Job) -> dict:
    """The job's parameters as the page lists them: env var names, never their values."""
    p = job.params
    docker = ""
    if p.env.docker_image_resource_id:
        docker = f"image resource {p.env.docker_image_resource_id}"
    elif p.env.docker_image_spec is not None:
        spec = p.env.docker_image_spec
        docker = spec.image_url + (f" (user {spec.username})" if spec.username else "")
        if spec.password_ds_secret_name:
            docker += f", password from secret {spec.password_ds_secret_name}"
    py = p.env.python_env
    graceful = ""
    if p.graceful_shutdown is not None:
        g = p.graceful_shutdown
        graceful = f"signal {g.signal}, then SIGKILL after {g.timeout_s:g} s" if g.timeout_s is not None else \
            f"signal {g.signal}, then SIGKILL after the engine's default timeout"
    return {
        "cmd": p.cmd,
        "arguments": [(a.name, a.value) for a in p.arguments],
        "inputs": [{"path": f.desc.path, "var": f.desc.var, "sha256": f.sha256, "size": size(f.size_bytes),
                    "zip": f.compression_type == "ZIP"} for f in p.input_files],
        "outputs": [{"path": d.path, "var": d.var} for d in p.output_files],
        "env_names": sorted(p.env.vars),
        "docker": docker,
        "python": None if py is None else {
            "version": py.python_version, "requirements": list(py.requirements),
            "local_modules": [{"path": f.desc.path, "sha256": f.sha256, "size": size(f.size_bytes)}
                              for f in py.local_modules],
            "conda": bool(py.conda_yaml)},
        "instance_types": list(p.cloud_instance_types),
        "graceful": graceful,
        "project_disk": p.attach_project_disk,
        "datasets": list(p.dataset_ids), "s3_mounts": list(p.s3_mount_ids),
        "output_datasets": [d.name or d.var for d in p.output_datasets],
        "working_storage": f"{p.extended_working_storage.size_gb} GB {p.extended_working_storage.type}"
        if p.extended_working_storage is not None else "",
    }


def files(job: Job) -> dict:
    """The job's files that can be downloaded, by kind, with their download paths on the page."""
    def entry(f, kind):
        name = f.desc.path or f.desc.var
        return {"name": name, "var": f.desc.var, "size": size(f.size_bytes), "sha256": f.sha256,
                "zip": f.compression_type == "ZIP", "kind": kind, "base": name.rsplit("/", 1)[-1]}
    return {"outputs": [entry(f, "output") for f in job.output_files],
            "logs": [entry(f, "log") for f in job.log_files],
            "diagnostics": [entry(f, "diagnostic") for f in job.diagnostic_files],
            "errors": [{"name": (e.output_file_desc.path if e.output_file_desc else "") or e.log_file_name,
                        "error": e.description} for e in job.file_errors],
            "cleared": job.data_cleared}


def shown_config(text: str) -> Optional[str]:
    """The job's config.yaml as sent, with env var values and passwords hidden; None when it cannot be parsed
    (then nothing of it is shown: it may hold values that must not be)."""
    if not text.strip():
        return ""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return yaml.safe_dump(_hidden(data), sort_keys=False, allow_unicode=True, default_flow_style=False)


def _hidden(node, key: str = "", under_env: bool = False):
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            k_s = str(k)
            if under_env and k_s == "vars":
                out[k] = _names_only(v)
            elif k_s.lower() in SECRET_KEYS and not isinstance(v, (dict, list)):
                out[k] = HIDDEN
            else:
                out[k] = _hidden(v, k_s, under_env or k_s == "env")
        return out
    if isinstance(node, list):
        return [_hidden(v, key, under_env) for v in node]
    return node


def _names_only(vars_):
    """env.vars: a list of `NAME: value` / `NAME` items, or a mapping; names kept, values hidden."""
    if isinstance(vars_, dict):
        return {k: HIDDEN for k in vars_}
    if isinstance(vars_, list):
        return [{k: HIDDEN for k in v} if isinstance(v, dict) else v if isinstance(v, str) else HIDDEN
                for v in vars_]
    return vars_ if isinstance(vars_, str) else HIDDEN  # a file of vars is named, not read
