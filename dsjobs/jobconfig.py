"""config.yaml, read exactly as the official `datasphere` client 0.10.0 reads it: same checks, same messages.

The rules and error texts follow the client's ``config.py`` and ``validation.py`` (Apache-2.0, Yandex LLC), as
described point by point in datasphere-behaviour.md section 2, and the requirements file of a manual Python
environment is read and checked as its ``pyenv.py`` does (dsjobs/requirements.py). Every scalar is a string (yaml
BaseLoader). Errors raise ConfigError with the official message.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml


class ConfigError(ValueError):
    """A config the official client would reject; the message is the official one."""


@dataclass
class VarPath:
    path: str
    var: Optional[str] = None


@dataclass
class DockerImage:
    url: str
    username: Optional[str] = None
    password_secret: Optional[str] = None


@dataclass
class PipOptions:
    index_url: Optional[str] = None
    extra_index_urls: list[str] = field(default_factory=list)
    trusted_hosts: list[str] = field(default_factory=list)
    no_deps: bool = False


@dataclass
class PythonEnv:
    type: str = "auto"
    version: Optional[str] = None
    requirements_file: Optional[str] = None
    root_paths: Optional[list[str]] = None
    local_paths: Optional[list[str]] = None
    pip: Optional[PipOptions] = None
    # the lines of requirements_file as the official client sends them (stripped, non-empty, checked)
    requirements: Optional[list[str]] = None

    @property
    def fully_manual(self) -> bool:
        return all(x is not None for x in (self.version, self.requirements_file, self.local_paths))


@dataclass
class OutputDataset:
    name: str
    var: str
    size_gb: int
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Config:
    cmd: str
    args: dict[str, str]
    inputs: list[VarPath]
    outputs: list[VarPath]
    s3_mounts: list[VarPath]
    datasets: list[VarPath]
    env_vars: Optional[dict[str, str]]
    docker: Optional[Any]  # str (resource id) or DockerImage
    python: Optional[PythonEnv]
    cloud_instance_types: list[str]
    attach_project_disk: bool
    content: str
    name: Optional[str] = None
    desc: Optional[str] = None
    working_storage_gb: Optional[int] = None
    output_datasets: list[OutputDataset] = field(default_factory=list)
    graceful_shutdown: Optional[tuple[int, Optional[float]]] = None  # (signal, timeout seconds or None)
    spark_connector: Optional[str] = None
    python_root_modules: list[tuple[str, bool]] = field(default_factory=list)  # (path or name, is_name)

    @property
    def vars(self) -> list[str]:
        out = [v.var for v in self.inputs + self.outputs if v.var is not None]
        for p in self.s3_mounts + self.datasets:
            out += ([p.var] if p.var is not None else []) + [p.path]
        return out + list(self.args) + [d.var for d in self.output_datasets]


VAR_RE = re.compile(r"[0-9a-z-A-z\-_]{1,50}")
RESOURCE_ID_RE = re.compile(r"[0-9a-z]{20}")
PY_VERSION_RE = re.compile(r"3\.\d+(\.\d+)?")
VAR_TPL_RE = re.compile(r"\$\{(.+?)}")
DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
DS_PROJECT_HOME = "DS_PROJECT_HOME"
SIGNALS = {"SIGHUP": 1, "SIGINT": 2, "SIGUSR1": 10, "SIGUSR2": 12, "SIGTERM": 15}


def _list_of_str(o) -> bool:
    return isinstance(o, list) and all(isinstance(e, str) for e in o)


def _dict_str_str(o) -> bool:
    return isinstance(o, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in o.items())


def humanize_bytes_size(size: float) -> str:
    """As the official client writes a size (utils.humanize_bytes_size): 5.0GB, 11.0B."""
    for unit in ("", "K", "M", "G", "T", "P", "E", "Z"):
        if abs(size) < 1024.0:
            return f"{size:3.1f}{unit}B"
        size /= 1024.0
    return f"{size:.1f}YB"


# The official client's limits, checked before anything is uploaded (config.check_limits).
UPLOAD_FILE_MAX_SIZE_BYTES = 5 << 30
UPLOAD_FILES_MAX_TOTAL_SIZE_BYTES = 10 << 30
FILES_LIST_MAX_SIZE = 100


def check_limits(inputs: list, local_modules: list, counts: list) -> None:
    """``inputs``, ``local_modules``: (path, size) of each file as sent (a directory zipped); ``counts``: (how many,
    what) of the lists the cloud bounds. Raises ConfigError with the official client's messages."""
    total = 0
    for path, size in list(inputs) + list(local_modules):
        if size > UPLOAD_FILE_MAX_SIZE_BYTES:
            raise ConfigError(f"size of file {path} = {humanize_bytes_size(size)}, "
                              f"while limit = {humanize_bytes_size(UPLOAD_FILE_MAX_SIZE_BYTES)}")
        total += size
    if total > UPLOAD_FILES_MAX_TOTAL_SIZE_BYTES:
        modules = " and Python local modules" if local_modules else ""
        raise ConfigError(f"total size of input files{modules} = {humanize_bytes_size(total)}, "
                          f"while limit = {humanize_bytes_size(UPLOAD_FILES_MAX_TOTAL_SIZE_BYTES)} bytes.")
    for n, name in counts:
        if n > FILES_LIST_MAX_SIZE:
            raise ConfigError(f"number of {name} must be not greater than {FILES_LIST_MAX_SIZE}")


def parse_human_size(size: str) -> int:
    """A size exactly as the official client reads one (its utils.parse_human_size: bytes, or KB..PB in binary
    units), never more: a config that works here must work there. The engine's own sizes (faults) are parsed by
    runners.spec.parse_size, which takes more forms."""
    size = size.strip().upper()
    if size.isdigit():
        return int(size)
    for unit, mult in (("KB", 1 << 10), ("MB", 1 << 20), ("GB", 1 << 30), ("TB", 1 << 40), ("PB", 1 << 50)):
        if size.endswith(unit):
            try:
                return int(size[: -len(unit)].strip()) * mult
            except ValueError as e:
                raise ConfigError(str(e)) from None
    raise ConfigError(f"Invalid size: {size}")


def parse_human_duration(s: str) -> Optional[float]:
    if not s:
        return None
    m = DURATION_RE.match(s)
    if not m or not any(m.groups()):
        return None
    d, h, mi, sec, ms = (int(x) if x else 0 for x in m.groups())
    return d * 86400 + h * 3600 + mi * 60 + sec + ms / 1000


def _var_path(value, validator) -> VarPath:
    if isinstance(value, str):
        vp = VarPath(value)
    elif isinstance(value, dict):
        if len(value) != 1:
            raise ConfigError("multiple items in dict")
        k = next(iter(value))
        v = value[k]
        if isinstance(v, str):
            vp = VarPath(k, v)
        elif isinstance(v, dict):
            if list(v.keys()) != ["var"]:
                raise ConfigError("only `var` param is supported")
            vp = VarPath(k, v["var"])
        else:
            raise ConfigError("invalid dict value")
    else:
        raise ConfigError("not a string or dict")
    if vp.var and not VAR_RE.fullmatch(vp.var):
        raise ConfigError(f"var `{vp.var}` does not fit regexp {VAR_RE.pattern}")
    if vp.var == DS_PROJECT_HOME:
        raise ConfigError(f"name `{vp.var}` is reserved and cannot be used for variable")
    err = validator(vp)
    if err:
        raise ConfigError(f"value is incorrect: {err}")
    return vp


def _var_paths(d: dict, key: str, validator) -> list[VarPath]:
    values = d.get(key, [])
    if not isinstance(values, list):
        raise ConfigError(f"`{key}` should be a list")
    out = []
    for v in values:
        try:
            out.append(_var_path(v, validator))
        except ConfigError as e:
            raise ConfigError(f"invalid `{key}` entry: `{v}`: {e}") from None
    return out


def _is_relative(p: str) -> bool:
    return not Path(p).is_absolute() and ".." not in Path(p).as_posix()


def _validate_path(base: Path, is_input: bool):
    def check(v: VarPath) -> str:
        p = Path(v.path)
        if is_input and not (base / p).exists():
            return f"no such path: {p}"
        if not v.var and not _is_relative(v.path):
            return f"path without variable should be relative: {p}"
        return ""
    return check


def _validate_resource_id(v: VarPath) -> str:
    return "" if RESOURCE_ID_RE.fullmatch(v.path) else f"invalid resource ID: {v.path}"


def _env_vars(env: dict) -> Optional[dict[str, str]]:
    if "vars" not in env or env["vars"] is None:
        return None
    ev = env["vars"]
    if isinstance(ev, list):
        out = {}
        for v in ev:
            if isinstance(v, str):
                if v not in os.environ:
                    raise ConfigError(f"environment var `{v}` is missing")
                out[v] = os.environ[v]
            elif isinstance(v, dict):
                name = list(v.keys())[0]
                value = v[name]
                if not isinstance(name, str) or not isinstance(value, str):
                    raise ConfigError("environment var name and value should be str")
                out[name] = value
            else:
                raise ConfigError("environment var should be specified as `- NAME` or `- NAME: VALUE`")
        return out
    if not _dict_str_str(ev):
        raise ConfigError("environment vars should be a list")
    return dict(ev)


def _docker(env: dict):
    if "docker" not in env:
        return None
    d = env["docker"]
    if isinstance(d, str):
        return d
    if isinstance(d, dict):
        if "image" not in d:
            raise ConfigError("'image'")  # the official client fails with KeyError('image')
        pw = d.get("password")
        secret = None
        if pw:
            if isinstance(pw, dict) and "secret-id" in pw:
                secret = pw["secret-id"]
            elif isinstance(pw, str):
                raise ConfigError(
                    "Plain text password is prohibited. Use DataSphere secrets instead of plain passwords. "
                    "See https://yandex.cloud/docs/datasphere/concepts/jobs/#config")
            else:
                raise ConfigError(f"unexpected value for docker password: {pw}")
        return DockerImage(d["image"], d.get("username"), secret)
    raise ConfigError(f"invalid docker image format: {d}")


def _python(env: dict, base: Path) -> Optional[PythonEnv]:
    if "python" not in env:
        return None
    py = env["python"]
    if isinstance(py, str):
        if py.lower() != "auto":
            raise ConfigError(f"invalid python env format: {py.lower()}")
        return PythonEnv()
    if not isinstance(py, dict):
        raise ConfigError(f"invalid python env format: {py}")
    if "type" not in py:
        raise ConfigError("you have to specify `type` of python env")
    typ = py["type"]
    if typ not in ("auto", "manual"):
        raise ConfigError("possible python env types are: ['auto', 'manual']")
    out = PythonEnv(type=typ)
    if typ == "auto":
        out.root_paths = py.get("root-paths")
    else:
        version = py.get("version")
        if version:
            if not isinstance(version, str) or not PY_VERSION_RE.fullmatch(version):
                raise ConfigError(f"unsupported python version: {version}")
            version = ".".join(version.split(".")[:2])
        out.version = version  # an empty `version:` stays "": set, for fully_manual, as in the official client
        req = py.get("requirements-file")
        if req:
            try:
                shown = Path(req)  # the official message shows the path as Path prints it (`./r.txt` -> `r.txt`)
            except TypeError as e:
                raise ConfigError(str(e)) from None  # the official client fails in Path() too
            if not (base / req).exists():
                raise ConfigError(f"requirements file `{shown}` was not found")
        out.requirements_file = req  # "" (an empty `requirements-file:`) counts as set, as in the official client
        out.root_paths = py.get("root-paths")
        out.local_paths = py.get("local-paths")
        if out.root_paths:
            if not _list_of_str(out.root_paths):
                raise ConfigError("`root-paths` should be a list of strings")
            if out.local_paths:
                raise ConfigError("only one of options `root-modules`, `local-paths` can be set at a time")
        if out.local_paths and not _list_of_str(out.local_paths):
            raise ConfigError("`local-paths` should be a list of strings")
    if "pip" in py:
        pip, p = PipOptions(), py["pip"]
        if "index-url" in p:
            if not isinstance(p["index-url"], str):
                raise ConfigError("`index-url` should be a string")
            pip.index_url = p["index-url"]
        if "extra-index-urls" in p:
            if not _list_of_str(p["extra-index-urls"]):
                raise ConfigError("`extra-index-urls` should be a list of strings")
            pip.extra_index_urls = p["extra-index-urls"]
        if "trusted-hosts" in p:
            if not _list_of_str(p["trusted-hosts"]):
                raise ConfigError("`trusted-hosts` should be a list of strings")
            pip.trusted_hosts = p["trusted-hosts"]
        if "no-deps" in p:
            pip.no_deps = p["no-deps"] == "true"
        out.pip = pip
    return out


def _get_field(d, key: str, typ, default=None, not_found: Optional[str] = None):
    f = d.get(key) if isinstance(d, dict) else None
    if f is None:
        if default is not None:
            return default
        raise ConfigError(not_found if not_found is not None else f"Field {key} not must be set")
    if not isinstance(f, typ):
        raise ConfigError(f"Field {key} must be of type {typ}, not {type(f)}")
    return f


def _working_storage(d: dict) -> Optional[int]:
    if "working-storage" not in d:
        return None
    ws = d["working-storage"]
    if ws.get("type", "SSD") != "SSD":
        raise ConfigError("possible working storage types are: [SSD]")
    if "size" not in ws:
        raise ConfigError("working storage size is not set")
    size = parse_human_size(ws["size"])
    gb = size >> 30
    if size % (1 << 30):
        gb += 1
    if gb < 100:
        raise ConfigError("working storage size should not be less then 100 Gb")
    return gb


def _instance_types(d: dict) -> list[str]:
    o = d.get("cloud-instance-types") or d.get("cloud-instance-type")
    if not o:
        return ["c1.4"]
    if isinstance(o, str):
        return [o]
    if _list_of_str(o):
        return o
    raise ConfigError(f"invalid instance types: {o}")


def _shutdown(d: dict) -> Optional[tuple[int, Optional[float]]]:
    if "graceful-shutdown" not in d:
        return None
    gs = _get_field(d, "graceful-shutdown", dict)
    timeout_str = _get_field(gs, "timeout", str, default="")
    timeout = parse_human_duration(timeout_str)
    if timeout is None and timeout_str != "":
        raise ConfigError("Cannot parse field 'timeout' in 'graceful-shutdown'")
    sig = _get_field(gs, "signal", str, default="SIGTERM")
    if sig not in SIGNALS:
        raise ConfigError(f"Value of 'signal' must be one of ({', '.join(SIGNALS)}), not {sig}")
    return SIGNALS[sig], (timeout or None)


def _spark(d: dict) -> Optional[str]:
    if "spark" not in d:
        return None
    sp = _get_field(d, "spark", dict)
    if "connector" not in sp:
        raise ConfigError("Spark connector is not provided")
    c = sp["connector"]
    if isinstance(c, str):
        return c
    if isinstance(c, dict) and "id" in c:
        return c["id"]
    raise ConfigError("Spark connector id is not provided")


def _output_datasets(d: dict) -> list[OutputDataset]:
    data = d.get("output-datasets", [])
    if not isinstance(data, list):
        raise ConfigError("'output-datasets' section must be list")
    out, names = [], set()
    for ds in data:
        name = _get_field(ds, "name", str, not_found="Output dataset dict must contain name")
        description = _get_field(ds, "description", str, "")
        labels = _get_field(ds, "labels", dict, {})
        var = _get_field(ds, "var", str, not_found="Output dataset dict must contain 'var' field")
        size = _get_field(ds, "size", str, not_found="Output dataset dict must contain 'size' field")
        if name in names:
            raise ConfigError("Output dataset name must be unique")
        names.add(name)
        out.append(OutputDataset(name, var, parse_human_size(size) >> 30, description, labels))
    return out


def _process_cmd(c: Config) -> str:
    raw = c.cmd
    if len(raw) == 0:
        raise ConfigError("empty `cmd`")
    to_id = {x.var: x.path for x in c.s3_mounts + c.datasets}
    cmd, names = raw, c.vars
    for var in VAR_TPL_RE.findall(cmd):
        if var == DS_PROJECT_HOME:
            continue
        if var not in names:
            raise ConfigError(f"`cmd` contains variable not presented in config: {var}")
        if var in to_id:
            cmd = cmd.replace("${%s}" % var, "${%s}" % to_id[var])
    if not c.attach_project_disk and "${%s}" % DS_PROJECT_HOME in raw:
        raise ConfigError(f"{DS_PROJECT_HOME} is unavailable since you did not add `attach-project-disk` option")
    return cmd


def _check_nesting(paths: list[Path]) -> None:
    if len(paths) < 2:
        return
    unique = set(paths)
    if len(paths) != len(unique):
        raise ConfigError("Paths must be unique")
    for p in unique:
        for parent in p.parents:
            if parent in unique:
                raise ConfigError(f"Path '{p}' is included in path '{parent}'")


_PYTHON_NAME = re.compile(r"python([23](\.\d{1,2})?([dmu])?)?(\.exe)?")


def _is_python_interpreter(path: str, base: Path, must_exist: bool = True) -> bool:
    """As the official client tells one (utils.is_python_interpreter): ``PATH --version`` says Python within 1 s.
    It runs what cmd names, on the user's machine, before anything is sent (so does the official client)."""
    import subprocess
    try:
        out = subprocess.check_output([path, "--version"], timeout=1, stderr=subprocess.DEVNULL, cwd=base)
    except FileNotFoundError:
        if must_exist:
            raise ConfigError(f"file `{path}` was not found") from None
        return False
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return False
    except OSError as e:
        if e.errno == 8:  # ENOEXEC: executable mode, not an executable format
            return False
        raise ConfigError(f"`{path}` cannot be run to tell whether it is Python: {e.strerror or e}") from None
    return b"Python" in out


def _python_main_module(cmd: str, base: Path) -> Optional[tuple[str, bool]]:
    """(path, False) or (module name, True), as the official client finds the root module in cmd
    (utils.parse_python_main_module): after an interpreter (a common name, or any program whose --version says
    Python, an absolute path included), or as the program itself when its first line is a Python shebang."""
    args = cmd.split()
    if not args:
        raise ConfigError("`cmd` is empty")
    first = args[0]
    if _PYTHON_NAME.fullmatch(first.lower()) or _is_python_interpreter(first, base):
        if len(args) < 2:
            raise ConfigError(f"`{first}` must be followed by other arguments")
        if "-m" in args:
            return args[args.index("-m") + 1], True  # a module by name: a library, not an input
        return args[1], False
    import shutil
    first = shutil.which(first) or first
    try:
        with open(first if os.path.isabs(first) else base / first) as f:
            line = f.readline(1024).strip()  # bounded: a big binary may be named in cmd
    except UnicodeDecodeError:
        return None  # a binary: not a Python program
    except OSError as e:
        raise ConfigError(f"cannot read `{first}` to tell whether it is a Python program: {e.strerror or e}") from None
    if not line.startswith("#!"):
        return None
    hint = line[2:].strip()
    if hint.startswith(("/usr/bin/env python", "/usr/bin/env -S python")) or (
            Path(hint).exists() and _PYTHON_NAME.fullmatch(Path(hint).name.lower())) or \
            _is_python_interpreter(hint, base, must_exist=False):
        return first, False
    return None


def _requirements(base: Path, req: str) -> list[str]:
    """The requirements file's lines, read and checked as the official client's ``_parse_requirements`` does (it
    runs after the whole config is parsed, before the paths are validated); refusals carry its messages."""
    try:
        text = (base / req).read_text()
    except OSError as e:
        if e.errno is not None and e.filename is not None:  # the official client names the path as given
            raise ConfigError(f"[Errno {e.errno}] {e.strerror}: {str(Path(req))!r}") from None
        raise ConfigError(str(e)) from None
    except UnicodeDecodeError as e:
        raise ConfigError(str(e)) from None
    from dsjobs.requirements import RequirementError, check_text  # its grammar's regexes: for this file only
    try:
        return check_text(text)
    except RequirementError as e:
        raise ConfigError(str(e)) from None


def parse(text: str, base: Path | str = ".") -> Config:
    """Parse config text; relative paths are checked against ``base`` (the official CLI uses its cwd)."""
    base = Path(base)
    try:
        d = yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"config is not valid YAML: {e}") from None
    if d is None or len(d) == 0:
        raise ConfigError("config is empty")
    if not isinstance(d, dict):
        raise ConfigError("config is empty")  # the official client fails on len() of a non-mapping too
    if "cmd" not in d:
        raise ConfigError("`cmd` is required")
    flags = d.get("flags", [])
    if not _list_of_str(flags):
        raise ConfigError("`flags` should be a list of strings")
    args = d.get("args", {})
    if not _dict_str_str(args):
        raise ConfigError("`args` should be a dict strings to strings")
    env = d.get("env")
    if env is not None and not isinstance(env, dict):
        # The official client looks each of its keys up with `in`: an `env:` with nothing under it (an empty string
        # to YAML's base loader), a list or a string that names none of them is read as no env at all.
        if any(k in env for k in ("vars", "docker", "python")):
            raise ConfigError("`env` should be a dict")
        env = None
    env = env or {}
    c = Config(
        name=d.get("name"), desc=d.get("desc"), cmd=d["cmd"], args=args,
        inputs=_var_paths(d, "inputs", _validate_path(base, True)),
        outputs=_var_paths(d, "outputs", _validate_path(base, False)),
        s3_mounts=_var_paths(d, "s3-mounts", _validate_resource_id),
        datasets=_var_paths(d, "datasets", _validate_resource_id),
        env_vars=_env_vars(env), docker=_docker(env), python=_python(env, base),
        cloud_instance_types=_instance_types(d), attach_project_disk="attach-project-disk" in flags,
        content=text, working_storage_gb=_working_storage(d), output_datasets=_output_datasets(d),
        graceful_shutdown=_shutdown(d), spark_connector=_spark(d),
    )
    names = c.vars
    if len(names) != len(set(names)):
        raise ConfigError("variables in config should be unique")
    if c.python is not None and not c.python.fully_manual:
        roots = set()
        main = _python_main_module(c.cmd, base) if isinstance(c.cmd, str) else None
        if main:
            roots.add(main)
        roots |= {(r, False) for r in (c.python.root_paths or [])}
        if not roots:
            raise ConfigError("Python root module(-s) was not found automatically or set in config")
        c.python_root_modules = sorted(r for r in roots if not os.path.isabs(r[0]))
        c.inputs = list(c.inputs) + [VarPath(r) for r, is_name in c.python_root_modules if not is_name]
    c.cmd = _process_cmd(c).strip()
    if c.python is not None and c.python.requirements_file:
        c.python.requirements = _requirements(base, c.python.requirements_file)
    _check_nesting([(base / i.path).absolute() for i in c.inputs])
    outs = [Path(o.path) for o in c.outputs]
    _check_nesting([o for o in outs if _is_relative(str(o))])
    _check_nesting([o for o in outs if o.is_absolute()])
    return c


def load(path: Path | str, base: Path | str | None = None) -> Config:
    path = Path(path)
    return parse(path.read_text(), base if base is not None else Path.cwd())
