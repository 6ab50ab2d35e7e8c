"""`python: auto` as the official client does it: envzy derives the Python version, the requirements and the local
modules from the job's root modules, in the interpreter the user runs (the official client analyses the
interpreter it is installed in: a user's venv, with the job's dependencies in it).

The analysis runs in that interpreter (`dsjobs run --python`, else the active venv's, else the `python` on PATH;
the Python API and the pytest plugin use their own). envzy comes from there when it is installed (it is, next to the
official client); otherwise dsjobs installs envzy 0.3.1 for that interpreter once, into a cache of its own, and
puts it at the end of sys.path, so that the user's own packages are the ones analysed. envzy asks pypi.org which
packages are public (those become requirements, the rest local modules); $DSJOBS_ENVZY_INDEX_URL names a mirror
to ask instead. The install of envzy honours uv's own settings (UV_INDEX_URL, UV_FIND_LINKS, UV_OFFLINE...).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

from dsjobs.jobconfig import Config, ConfigError

ENVZY = "envzy==0.3.1"  # what datasphere 0.10.0 uses

HELPER = r'''
import importlib, importlib.util, itertools, json, os, sys
from pathlib import Path
sys.path.append(os.getcwd())  # as the official client does
from envzy import AutoExplorer
extra, roots = json.loads(sys.argv[1]), json.loads(sys.argv[2])
index = os.environ.get("DSJOBS_ENVZY_INDEX_URL")  # a mirror instead of pypi.org, for what counts as public
explorer = AutoExplorer(extra_index_urls=extra, **({"pypi_index_url": index} if index else {}))
checks = ["if __name__ == '__main__':", 'if __name__ == "__main__":']

def namespace(path, is_name):
    if is_name:
        return vars(importlib.import_module(path))
    lines = Path(path).read_text().split("\n")
    if not any(any(l.startswith(c) for c in checks) for l in lines):
        raise ValueError(f"Main script `{path}` must have line `{checks[0]}`")
    spec = importlib.util.spec_from_file_location("module", path)
    if spec is None:
        raise ValueError(f"Main script `{path}` can't be loaded by importlib")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return vars(module)

reqs, locs = [], []
try:
    for path, is_name in roots:
        sys.path.append(str(Path(path).parent))
        ns = namespace(path, is_name)
        reqs.append([f"{n}=={v}" if v else n for n, v in explorer.get_pypi_packages(ns).items()])
        locs.append(explorer.get_local_module_paths(ns))
except (ValueError, OSError, ImportError) as e:  # what the official client stops with, worded as it is
    print(json.dumps({"error": f"{type(e).__name__}: {e}" if not isinstance(e, ValueError) else str(e)}))
    sys.exit(0)
merge = lambda items: sorted(set(itertools.chain(*items)))
print(json.dumps({"version": ".".join(str(x) for x in explorer.target_python[:2]),
                  "requirements": merge(reqs), "local_paths": merge(locs)}))
'''


PROBE = ("import importlib.util, json, sys; print(json.dumps({'tag': sys.implementation.cache_tag, "
         "'version': '%d.%d' % sys.version_info[:2], 'envzy': importlib.util.find_spec('envzy') is not None}))")


def user_python(explicit: Optional[str] = None) -> str:
    """The interpreter a user runs their code with: ``explicit``, the active venv's, the `python` on PATH."""
    if explicit:
        return explicit
    venv = os.environ.get("VIRTUAL_ENV")
    if venv and os.access(os.path.join(venv, "bin", "python"), os.X_OK):
        return os.path.join(venv, "bin", "python")
    return shutil.which("python") or shutil.which("python3") or sys.executable


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dsjobs" / "envzy"


def _envzy_for(py: str) -> Optional[str]:
    """A directory holding envzy for ``py`` (None: ``py`` has its own)."""
    try:
        res = subprocess.run([py, "-c", PROBE], capture_output=True, text=True, timeout=60)
    except OSError as e:
        raise ConfigError(f"`python: auto`: cannot run {py}: {e.strerror}") from None
    if res.returncode != 0:
        raise ConfigError(f"`python: auto`: {py} does not start: {res.stderr.strip()[-300:]}")
    info = json.loads(res.stdout)
    if info["envzy"]:
        return None
    target = cache_dir() / f"{ENVZY.replace('==', '-')}-{info['tag']}"
    if (target / ".complete").exists():
        return str(target)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [sys.executable, "-m", "uv", "pip", "install", "--quiet", "--python", py, "--target", str(tmp), ENVZY]
    if os.environ.get("PIP_INDEX_URL") and not os.environ.get("UV_INDEX_URL"):
        cmd += ["--index-url", os.environ["PIP_INDEX_URL"]]
    print(f"`python: auto`: installing {ENVZY} for {py} (python {info['version']}), once, into {cache_dir()}",
          file=sys.stderr)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ConfigError(f"`python: auto` needs {ENVZY} for {py} and could not install it: "
                          f"{(res.stderr.strip() or res.stdout.strip())[-500:]}")
    (tmp / ".complete").write_text(ENVZY)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, target)
    except OSError:  # another process got there first
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def derive(c: Config, base: Path, python: Optional[str] = None) -> dict:
    """{"version", "requirements", "local_paths"} for the config's root modules, analysed in ``python`` (default:
    this interpreter)."""
    py = python or sys.executable
    extra_path = _envzy_for(py)
    extra = c.python.pip.extra_index_urls if c.python and c.python.pip else []
    env = dict(os.environ)
    if extra_path:
        # appended, after the user's site-packages: their packages are the ones analysed (as the official
        # client's would be, installed beside them)
        env["DSJOBS_ENVZY_PATH"] = extra_path
    helper = "import os, sys\nif os.environ.get('DSJOBS_ENVZY_PATH'):\n" \
             "    sys.path.append(os.environ['DSJOBS_ENVZY_PATH'])\n" + HELPER
    res = subprocess.run([py, "-c", helper, json.dumps(extra), json.dumps(c.python_root_modules)], cwd=base,
                         capture_output=True, text=True, timeout=300, env=env)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ConfigError(f"python environment analysis in {py} failed: {last}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    if "error" in out:
        raise ConfigError(f"python environment analysis in {py}: {out['error']}")
    return out
