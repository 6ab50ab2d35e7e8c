"""The official `datasphere` client against dsjobs: `dsjobs hook install|remove|status` and `dsjobs datasphere`.

Both use one mechanism, dsjobs/hook.py: installed, it redirects every use of the package in that interpreter (CLI,
SDK, the VS Code toolkit) whenever DSJOBS_ENDPOINT is set; `dsjobs datasphere ARGS` loads it by path and then
becomes the official CLI (exec, so that Ctrl-C reaches the CLI alone and its "cancel job?" prompt works as it does
against the cloud).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

from dsjobs import hook as _hook

HERE = Path(__file__).resolve().parent
SOURCES = {f"{_hook.MODULE_NAME}.py": HERE / "hook.py", f"{_hook.DISCOVERY_NAME}.py": HERE / "discovery.py"}

# argv: discovery.py, hook.py, then the CLI's own arguments
LAUNCHER = r'''
import importlib.util, sys
def load(name, path):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
load("dsjobs_datasphere_discovery", sys.argv[1])
load("dsjobs_datasphere_hook", sys.argv[2]).install()
sys.argv = ["datasphere"] + sys.argv[3:]
from datasphere.main import main
sys.exit(main())
'''


class HookError(Exception):
    pass


def find_python(explicit: Optional[str] = None) -> str:
    """The interpreter the official client is installed in: ``explicit``, $DSJOBS_DATASPHERE_PYTHON, the one the
    `datasphere` on PATH runs, or this one when it has the package."""
    for candidate in (explicit, os.environ.get("DSJOBS_DATASPHERE_PYTHON")):
        if candidate:
            return candidate
    script = shutil.which("datasphere")
    if script:
        with open(script, "rb") as f:
            first = f.readline().decode(errors="replace").strip()
        if first.startswith("#!"):
            return first[2:].split()[0]
    import importlib.util
    if importlib.util.find_spec("datasphere") is not None:
        return sys.executable
    raise FileNotFoundError("the official datasphere CLI is not installed: `pip install datasphere` (in a virtual "
                            "environment of its own is best), or point DSJOBS_DATASPHERE_PYTHON at its python")


def _probe(python: str) -> dict:
    code = ("import json, sysconfig, sys\n"
            "try:\n    from importlib.metadata import version; v = version('datasphere')\n"
            "except Exception:\n    v = None\n"
            "print(json.dumps({'purelib': sysconfig.get_paths()['purelib'], 'datasphere': v,"
            " 'python': sys.version.split()[0]}))")
    try:
        res = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    except OSError as e:
        raise HookError(f"cannot run {python}: {e.strerror}") from None
    if res.returncode != 0:
        raise HookError(f"{python} failed: {res.stderr.strip()[-300:]}")
    return json.loads(res.stdout)


def hook_install(python: str) -> tuple[Path, dict]:
    info = _probe(python)
    site = Path(info["purelib"])
    if not os.access(site, os.W_OK):
        raise HookError(f"cannot write to {site} (the site-packages of {python}); run as its owner")
    for name, src in SOURCES.items():
        tmp = site / f".{name}.tmp"
        shutil.copyfile(src, tmp)
        os.replace(tmp, site / name)
    (site / _hook.PTH_NAME).write_text(_hook.PTH_LINE)
    return site, info


def hook_files(site: Path) -> list[Path]:
    return [site / _hook.PTH_NAME, *(site / n for n in SOURCES)]


def hook_remove(python: str) -> tuple[Path, list[Path]]:
    site = Path(_probe(python)["purelib"])
    removed = []
    for p in hook_files(site) + sorted((site / "__pycache__").glob(f"{_hook.MODULE_NAME}.*")) + \
            sorted((site / "__pycache__").glob(f"{_hook.DISCOVERY_NAME}.*")):
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
    return site, removed


def hook_status(python: str) -> dict:
    info = _probe(python)
    site = Path(info["purelib"])
    files = {p.name: p.exists() for p in hook_files(site)}
    current = all(files.values()) and all((site / n).read_bytes() == src.read_bytes() for n, src in SOURCES.items())
    return {**info, "installed": all(files.values()), "current": current, "files": files}


def run(args: list[str], endpoint: str, python: Optional[str] = None, token_file: Optional[str] = None) -> int:
    """Become the official CLI, redirected to ``endpoint`` (returns only when it cannot be started)."""
    try:
        py = find_python(python)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    env = dict(os.environ, DSJOBS_ENDPOINT=endpoint)
    if token_file:
        env["DSJOBS_TOKEN_FILE"] = os.path.abspath(token_file)
    argv = [py, "-c", LAUNCHER, str(SOURCES[f"{_hook.DISCOVERY_NAME}.py"]), str(SOURCES[f"{_hook.MODULE_NAME}.py"]),
            *args]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(py, argv, env)
    except OSError as e:
        print(f"error: cannot run {py}: {e.strerror}", file=sys.stderr)
        return 2
