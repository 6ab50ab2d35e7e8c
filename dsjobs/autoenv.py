"""`python: auto` as the official client does it: envzy derives the Python version, the requirements and the local
modules from the job's root modules, on this machine.

envzy 0.3.1 pins packaging<24, which cannot live in dsjobs's own environment (pytest 9 and virtualenv 21 need
newer), so the analysis runs in the official CLI's interpreter (DSJOBS_DATASPHERE_PYTHON or the `datasphere` on
PATH), which has envzy: the same interpreter and the same envzy give the same environment through either CLI.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from dsjobs.jobconfig import Config, ConfigError

HELPER = r'''
import importlib, importlib.util, itertools, json, os, sys
from pathlib import Path
sys.path.append(os.getcwd())  # as the official client does
from envzy import AutoExplorer
extra, roots = json.loads(sys.argv[1]), json.loads(sys.argv[2])
explorer = AutoExplorer(extra_index_urls=extra)
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
except ValueError as e:
    print(json.dumps({"error": str(e)}))
    sys.exit(0)
merge = lambda items: sorted(set(itertools.chain(*items)))
print(json.dumps({"version": ".".join(str(x) for x in explorer.target_python[:2]),
                  "requirements": merge(reqs), "local_paths": merge(locs)}))
'''


def derive(c: Config, base: Path) -> dict:
    """{"version", "requirements", "local_paths"} for the config's root modules."""
    from dsjobs.official import find_python
    try:
        py = find_python()
    except FileNotFoundError as e:
        raise ConfigError(f"`python: auto` needs envzy, which comes with the official CLI: {e}") from None
    extra = c.python.pip.extra_index_urls if c.python and c.python.pip else []
    res = subprocess.run([py, "-c", HELPER, json.dumps(extra), json.dumps(c.python_root_modules)], cwd=base,
                         capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        raise ConfigError(f"python environment analysis failed: {res.stderr.strip().splitlines()[-1:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    if "error" in out:
        raise ConfigError(out["error"])
    return out
