"""`dsjobs check -c config.yaml`: what would fail or cost in the cloud and cannot be seen by running the job here,
found without running anything. Each finding says what to do; exit status 1 when there is one.

Checks (datasphere-behaviour.md for the cloud's side): the config as the official client reads it; requirements
resolved with uv for the cloud's platform and Python (Linux x86_64, the job's python version; a second pass for
packages that have no wheel there, which the cloud would build from source); this machine's platform and Python
against the cloud's (Linux x86_64, Python 3.10 by default); inputs against the client's 5 GB per file, 10 GB per job
and 100 entries; outputs (as a local run left them) against the client's 1 GB download cap; instance types that
need a quota or a request, or that the cloud does not know; resource ids this engine does not know (the cloud
must have them); images on Docker Hub (anonymous pull limits); `python: auto` pitfalls.
"""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

# The official client's limits, one definition (jobconfig.check_limits applies them before a job is sent).
from dsjobs.jobconfig import FILES_LIST_MAX_SIZE as ENTRIES
from dsjobs.jobconfig import UPLOAD_FILE_MAX_SIZE_BYTES as FILE_LIMIT
from dsjobs.jobconfig import UPLOAD_FILES_MAX_TOTAL_SIZE_BYTES as JOB_LIMIT

CLOUD_PLATFORM = "x86_64-manylinux_2_28"  # a conservative stand-in for the cloud VMs' glibc (Ubuntu 22.04: 2.35)
CLOUD_PYTHON = "3.10"  # the default image's Python (datasphere-behaviour.md section 7)
DOWNLOAD_CAP = 1 << 30
# Section 8: types available after topping up the billing account or on a support request (1), or for
# businesses on request only (2); g2.mig is gone from the newest table.
NEEDS_QUOTA = {"c1.32", "g1.4", "g2.1", "g2.2", "g2.4", "gt4.1", "gt4i.1"}
ON_REQUEST = {"c1.80", "g2.8"}
RETIRED = {"g2.mig"}
DOCKER_HUB = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
SYSTEM_IMAGE_RE = re.compile(r"system-python-\d+-\d+")


@dataclass
class Finding:
    code: str
    severity: str  # error: it fails in the cloud; warning: it costs, or may fail
    message: str
    fix: str


def _h(n: int) -> str:
    return f"{n / (1 << 30):.2f} GB" if n >= (1 << 30) else f"{n / (1 << 20):.1f} MB"


def _size(p: Path) -> int:
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())
    return p.stat().st_size


def check(config: str, *, python: Optional[str] = None, offline: bool = False,
          data_dir: Optional[Path] = None) -> list[Finding]:
    from dsjobs import jobconfig
    base = Path.cwd()
    out: list[Finding] = []
    try:
        c = jobconfig.load(config, base)
    except (jobconfig.ConfigError, OSError) as e:
        return [Finding("config", "error", f"the official client refuses the config: {e}",
                        "fix the config (dsjobs run -c and `datasphere project job execute` say the same)")]
    _platform(out)
    version, requirements, pip = _python(c, base, python, out)
    if requirements:
        _resolve(requirements, version or CLOUD_PYTHON, pip, offline, out)
    _inputs(c, base, out)
    _outputs(c, base, out)
    _instance_types(c, out)
    _resources(c, data_dir, out)
    _image(c, out)
    return out


def _platform(out: list[Finding]) -> None:
    system, machine = platform.system(), platform.machine()
    if (system, machine) != ("Linux", "x86_64"):
        out.append(Finding("platform", "warning", f"this machine is {system} {machine}; the cloud runs Linux x86_64",
                           "binaries, wheels and compiled extensions made here may not run there: build them for "
                           "Linux x86_64 (or in the job, or in a Docker image)"))


def _local_version(py: str) -> str:
    try:
        return subprocess.run([py, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True,
                              text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _python(c, base: Path, python: Optional[str], out: list[Finding]):
    """(the job's python version, its requirement lines, its pip options) as the cloud would get them."""
    from dsjobs.autoenv import user_python
    pe = c.python
    py = user_python(python)
    local = _local_version(py)
    if pe is None:
        if re.match(r"\s*python3?(\.\d+)?\s", c.cmd + " ") and local and local != CLOUD_PYTHON and c.docker is None:
            out.append(Finding("local-python", "warning", f"the job runs python; here that is Python {local} ({py}), "
                               f"in the cloud's default image Python {CLOUD_PYTHON}",
                               f"test with Python {CLOUD_PYTHON} locally (`python: {{type: manual, version: "
                               f"'{CLOUD_PYTHON}'}}` makes dsjobs use it), or name the version in `env.python`"))
        return None, [], None
    args = c.cmd.split()
    if args and re.fullmatch(r"python([23](\.\d{1,2})?)?", args[0]) and len(args) > 1 and args[1].startswith("-") \
            and args[1] != "-m" and not pe.fully_manual:
        out.append(Finding("python-auto", "error", f"`cmd: {c.cmd}`: the official client takes the first argument "
                           f"after `{args[0]}` ({args[1]!r}) as the main script (it skips no interpreter flag)",
                           f"put the flags elsewhere (PYTHONUNBUFFERED=1 in env.vars for -u), or list the script in "
                           f"`root-paths`"))
    if pe.fully_manual:
        main = args[1] if len(args) > 1 and args[0].startswith("python") else (args[0] if args else "")
        if main.endswith(".py") and main not in {i.path for i in c.inputs}:
            out.append(Finding("python-manual", "error", f"env.python is fully manual (version, requirements-file, "
                               f"local-paths): the official client then does not upload the main script {main!r}",
                               f"add {main} to `inputs` or to `local-paths`"))
    version = pe.version
    if version is None:  # auto, or manual without a version: the local interpreter's, as the client sends it
        version = local
        if version and version != CLOUD_PYTHON:
            out.append(Finding("python-version", "warning", f"`python: auto` sends this machine's Python version "
                               f"({version}, {py}); the cloud's image has Python {CLOUD_PYTHON}: another version "
                               "means a slower environment migration, and packages pinned here for it",
                               f"work in a Python {CLOUD_PYTHON} venv (or `--python PY`), or set `version` in "
                               "env.python"))
    else:
        version = ".".join(version.split(".")[:2])
        if version != CLOUD_PYTHON:
            out.append(Finding("python-version", "warning", f"env.python.version {version}: the cloud's image has "
                               f"Python {CLOUD_PYTHON}; another version means a slower environment migration",
                               f"use {CLOUD_PYTHON} unless the job needs {version}"))
    requirements = list(pe.requirements or [])
    if not pe.fully_manual and not pe.requirements_file:
        try:
            from dsjobs.autoenv import derive
            requirements = derive(c, base, py)["requirements"]
        except Exception as e:  # noqa: BLE001 - the analysis's own message is the finding
            out.append(Finding("python-auto", "error", f"`python: auto` analysis fails here: {e}",
                               "install the job's dependencies in the environment you work in, or list them in a "
                               "requirements-file"))
            requirements = []
    return version, requirements, pe.pip


def _uv() -> Optional[str]:
    here = Path(sys.executable).parent / "uv"
    if here.exists():
        return str(here)
    import shutil
    return shutil.which("uv")


def _resolve(requirements: list[str], version: str, pip, offline: bool, out: list[Finding]) -> None:
    uv = _uv()
    if uv is None:
        out.append(Finding("requirements", "warning", "uv is not installed: the requirements were not resolved for "
                           "the cloud's platform", "pip install uv"))
        return
    lines, flags = [], []
    for line in requirements:
        if line.strip() == "--no-deps":
            flags.append("--no-deps")  # uv refuses it as a line
        elif line.startswith("--trusted-host"):
            flags += ["--allow-insecure-host", line.split(None, 1)[1]]
        else:
            lines.append(line)
    if pip is not None:
        if pip.index_url:
            flags += ["--index-url", pip.index_url]
        for u in pip.extra_index_urls:
            flags += ["--extra-index-url", u]
        for h in pip.trusted_hosts:
            flags += ["--allow-insecure-host", h]
        if pip.no_deps:
            flags.append("--no-deps")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_"))}
    env["UV_PYTHON_DOWNLOADS"] = "never"  # else uv spends seconds fetching an interpreter it does not need
    with tempfile.TemporaryDirectory(prefix="dsjobs-check-") as tmp:
        req = Path(tmp) / "requirements.in"
        req.write_text("\n".join(lines) + "\n")
        base = [uv, "pip", "compile", "--no-header", "--no-config", "--quiet", "--python-platform", CLOUD_PLATFORM,
                "--python-version", version, "--index-strategy", "unsafe-best-match", *flags,
                *(["--offline"] if offline else []), str(req), "-o", str(Path(tmp) / "lock.txt")]
        r = subprocess.run(base, capture_output=True, text=True, env=env, timeout=600)
        if r.returncode != 0:
            out.append(Finding("requirements", "error", f"the requirements do not resolve for Linux x86_64, Python "
                               f"{version} (the cloud's platform): {_why(r.stderr)}",
                               "pin versions that have wheels for that platform and Python (uv pip compile "
                               f"--python-platform {CLOUD_PLATFORM} --python-version {version} shows the same)"))
            return
        r = subprocess.run(base[:3] + ["--only-binary", ":all:"] + base[3:], capture_output=True, text=True,
                           env=env, timeout=600)
        if r.returncode != 0:
            out.append(Finding("requirements-sdist", "warning", f"some requirements have no wheel for Linux x86_64, "
                               f"Python {version}: the cloud would build them from source (slow, and it needs a "
                               f"compiler and headers): {_why(r.stderr)}",
                               "pin versions that ship wheels for that platform and Python"))


def _why(stderr: str) -> str:
    lines = [x.strip() for x in stderr.strip().splitlines() if x.strip()]
    keep = [x for x in lines if x.startswith(("╰─▶", "Because", "cause:", "hint:", "error:")) or "because" in x]
    return " ".join(keep or lines[-3:])[:1500]


def _inputs(c, base: Path, out: list[Finding]) -> None:
    total = 0
    for i in c.inputs:
        p = base / i.path
        try:
            n = _size(p)
        except OSError:
            continue
        total += n
        if n > FILE_LIMIT:
            out.append(Finding("input-size", "error", f"input {i.path}: {_h(n)}, over the cloud's limit of 5 GB per "
                               "file (the official client refuses it)",
                               "split it, or put it in Object Storage (an S3 connector, `s3-mounts`) or a dataset"))
    if total > JOB_LIMIT:
        out.append(Finding("inputs-total", "error", f"the inputs hold {_h(total)}, over the cloud's limit of 10 GB "
                           "per job", "move the large inputs to an S3 connector or a dataset"))
    if len(c.inputs) > ENTRIES:
        out.append(Finding("inputs-count", "error", f"{len(c.inputs)} inputs, over the limit of {ENTRIES}",
                           "zip them into a directory input"))


def _outputs(c, base: Path, out: list[Finding]) -> None:
    sizes = []
    for o in c.outputs:
        p = Path(o.path) if os.path.isabs(o.path) else base / o.path
        try:
            sizes.append((_size(p), o.path))
        except OSError:
            continue
    sizes.sort()
    total, skipped = 0, []
    for n, path in sizes:
        total += n
        if total > DOWNLOAD_CAP:
            skipped.append(f"{path} ({_h(n)})")
    if skipped:
        out.append(Finding("download-cap", "warning", f"the outputs a local run left here hold {_h(total)}; the "
                           "official client downloads at most 1 GB in all (smallest first) and would skip: "
                           + ", ".join(skipped),
                           "make the outputs smaller, write the large ones to an S3 connector or an output "
                           "dataset, or fetch them from the job page"))


def _instance_types(c, out: list[Finding]) -> None:
    from engine.config import DEFAULT_INSTANCE_TYPES
    for t in c.cloud_instance_types:
        if t in RETIRED:
            out.append(Finding("instance-type", "warning", f"instance type {t} is no longer in the cloud's table",
                               "choose another type (gt4.1, g1.1, g2.1)"))
        elif t not in DEFAULT_INSTANCE_TYPES:
            out.append(Finding("instance-type", "error", f"unknown instance type {t!r} (the cloud knows: "
                               f"{', '.join(sorted(DEFAULT_INSTANCE_TYPES.keys() - RETIRED))})",
                               "use one of those names"))
        elif t in ON_REQUEST:
            out.append(Finding("instance-quota", "warning", f"instance type {t} is for businesses only, on request",
                               "ask support for it before you run, or list a smaller type after it"))
        elif t in NEEDS_QUOTA:
            out.append(Finding("instance-quota", "warning", f"instance type {t} needs a quota: it is available "
                               "after topping up the billing account (at least $10 / 500 RUB) or on a support "
                               "request; an individual's quota may be 0", "check the quota, or list a type that "
                               "needs none after it (c1.4, c1.8, g1.1, g1.2)"))


def _resources(c, data_dir: Optional[Path], out: list[Finding]) -> None:
    from engine.config import default_data_dir
    from engine.resources import Directories, Images
    d = Path(data_dir) if data_dir else default_data_dir()
    known = {"mount": Directories(d, "mount"), "dataset": Directories(d, "dataset")}
    for kind, items, add in (("mount", c.s3_mounts, "dsjobs mount add"), ("dataset", c.datasets, "dsjobs dataset add")):
        for m in items:
            try:
                known[kind].resolve(m.path)
            except Exception:  # noqa: BLE001 - not registered here
                out.append(Finding("resource-id", "warning", f"{'S3 connector' if kind == 'mount' else 'dataset'} "
                                   f"{m.path} is not known here, so nothing local shows whether it exists in the "
                                   "cloud project (and, for a dataset, is activated there)",
                                   f"check it in the project's resources; `{add} {m.path} DIR` gives local runs a "
                                   "stand-in"))
    if isinstance(c.docker, str) and not SYSTEM_IMAGE_RE.fullmatch(c.docker):
        try:
            Images(d).resolve(c.docker)
        except Exception:  # noqa: BLE001
            out.append(Finding("resource-id", "warning", f"docker image resource {c.docker} is not known here",
                               "check it in the project's Docker images; `dsjobs image add ID IMAGE` maps it to a "
                               "local image"))
    if c.spark_connector:
        out.append(Finding("resource-id", "warning", f"Spark connector {c.spark_connector}: it must exist in the "
                           "project, and a local run cannot use it", "check it in the project's resources"))


def _image(c, out: list[Finding]) -> None:
    from dsjobs.jobconfig import DockerImage
    if not isinstance(c.docker, DockerImage):
        return
    url = c.docker.url
    first = url.split("/", 1)[0]
    hub = "/" not in url or first in DOCKER_HUB or ("." not in first and ":" not in first and first != "localhost")
    if hub:
        out.append(Finding("image-pull-limit", "warning", f"image {url} is on Docker Hub, whose anonymous pulls are "
                           "rate-limited: the cloud's pulls may be refused",
                           "push it to Yandex Container Registry (cr.yandex/...), give registry credentials "
                           "(username and password secret), or set a NAT gateway / subnet in the project settings"))


def main(a) -> int:
    findings = check(a.config, python=a.python, offline=a.offline, data_dir=Path(a.data_dir) if a.data_dir else None)
    if a.format == "json":
        print(json.dumps([asdict(f) for f in findings], indent=2))
    else:
        for f in findings:
            print(f"{f.severity.upper():7} [{f.code}] {f.message}\n        what to do: {f.fix}")
        print(f"{len(findings)} finding(s) in {a.config}" if findings else
              f"{a.config}: nothing found that would fail or cost in the cloud and not here")
    return 1 if findings else 0
