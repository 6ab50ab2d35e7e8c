"""`python: {type: manual, ...}` in config.yaml: dsjobs's config parsing (jobconfig, used by `dsjobs run`, `dsjobs
execute`, `run_job` and the pytest plugin) refuses what the official client 0.10.0 refuses, with its words.

Each case is a job directory; the official client judges it in one interpreter of its own environment exactly as
`datasphere execute` does before anything is uploaded (``parse_config``, ``define_py_env``, ``validate_paths``, in
the directory), and dsjobs judges it with ``jobconfig.load``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dsjobs.jobconfig import ConfigError, load

ROOT = Path(__file__).resolve().parents[2]

ORACLE = r'''
import json, os, sys
from pathlib import Path
from datasphere.config import parse_config
from datasphere.pyenv import define_py_env
from datasphere.validation import validate_paths

out = [list(sys.version_info[:2])]
for d in json.loads(sys.stdin.read()):
    os.chdir(d)
    try:
        cfg = parse_config(Path("config.yaml"))
        py = define_py_env(cfg.python_root_modules, cfg.env.python) if cfg.env.python else None
        validate_paths(cfg, py)
        out.append({"ok": {"fully_manual": cfg.env.python.is_fully_manual, "version": py.version,
                           "requirements": py.requirements}})
    except Exception as e:
        out.append({"error": str(e)})
print(json.dumps(out))
'''

MANUAL = "cmd: python a.py\nenv:\n  python:\n    type: manual\n    version: '3.11'\n" \
         "    requirements-file: requirements.txt\n    local-paths: [a.py]\n"

# name: (config.yaml, requirements.txt as bytes or None, the official message or None when it is accepted)
CASES = {
    "comment line": (MANUAL, b"numpy==1.0\n# pinned for the demo\nscipy\n",
                     "Expected package name at the start of dependency specifier\n"
                     "    # pinned for the demo\n    ^"),
    "trailing comment": (MANUAL, b"numpy==1.0  # comment\n",
                         "Expected end or semicolon (after version specifier)\n"
                         "    numpy==1.0  # comment\n         ~~~~~~~^"),
    "marker": (MANUAL, b"numpy\nscipy; python_version < '3.8'\n",
               "requirement markers are not supported (scipy; python_version < '3.8')"),
    "url": (MANUAL, b"torch @ https://download.pytorch.org/whl/torch-2.0.whl\n",
            "requirement url is not supported (torch @ https://download.pytorch.org/whl/torch-2.0.whl)"),
    "marker before url": (MANUAL, b"x @ https://h/x.whl ; os_name == 'nt'\n",
                          "requirement markers are not supported (x @ https://h/x.whl ; os_name == 'nt')"),
    "include": (MANUAL, b"-r other.txt\n",
                "Expected package name at the start of dependency specifier\n    -r other.txt\n    ^"),
    "index url": (MANUAL, b"--index-url https://x/simple\nnumpy\n",
                  "Expected package name at the start of dependency specifier\n    --index-url https://x/simple\n    ^"),
    "editable": (MANUAL, b"-e .\n", "Expected package name at the start of dependency specifier\n    -e .\n    ^"),
    "bad operator": (MANUAL, b"numpy=>1.0\n",
                     "Expected end or semicolon (after name and no valid version specifier)\n    numpy=>1.0\n         ^"),
    "arbitrary swallows a comma": (MANUAL, b"a===1,2\n", "Invalid specifier: '2'"),
    "bad escape in a marker": (MANUAL, b"a; os_name == '\\x'\n",
                               "(unicode error) 'unicodeescape' codec can't decode bytes in position 0-1: truncated "
                               "\\xXX escape (<unknown>, line 1)"),
    "first bad line wins": (MANUAL, b"ok==1\nbad==\nworse; os_name=='nt'\n",
                            "Expected end or semicolon (after name and no valid version specifier)\n"
                            "    bad==\n       ^"),
    "crlf and blanks": (MANUAL, b"\r\n  numpy==1.0 \r\n\r\n\t--no-deps\r\nx[]\r\n", None),
    "valid": (MANUAL, b"--no-deps\n--extra-index-url https://x/simple\n--trusted-host x\n"
                      b"numpy>=1.0,<2 \nrequests[socks] (>=2.8.1, ==2.8.*)\nzope.interface===5.0-odd\n", None),
    "empty file": (MANUAL, b"", None),
    "not utf-8": (MANUAL, b"numpy\n\xff\n", "'utf-8' codec can't decode byte 0xff in position 6: invalid start byte"),
    "requirements before paths": (MANUAL.replace("cmd: python a.py", "cmd: python a.py\ninputs: [d, d/f]"),
                                  b"# c\n", "Expected package name at the start of dependency specifier\n    # c\n    ^"),
    "paths after requirements": (MANUAL.replace("cmd: python a.py", "cmd: python a.py\ninputs: [d, d/f]"),
                                 b"numpy\n", "Path '{DIR}/d/f' is included in path '{DIR}/d'"),
    # the other checks of a manual environment in the official config.py
    "version without minor": (MANUAL.replace("'3.11'", "'3'"), b"numpy\n", "unsupported python version: 3"),
    "version x": (MANUAL.replace("'3.11'", "'3.x'"), b"numpy\n", "unsupported python version: 3.x"),
    "version too long": (MANUAL.replace("'3.11'", "'3.10.1.2'"), b"numpy\n", "unsupported python version: 3.10.1.2"),
    "python 2": (MANUAL.replace("'3.11'", "'2.7'"), b"numpy\n", "unsupported python version: 2.7"),
    "patch version is cut": (MANUAL.replace("'3.11'", "'3.10.4'"), b"numpy\n", None),
    "empty version is set": (MANUAL.replace("'3.11'", "''"), b"numpy\n", None),
    "empty requirements-file is set": (MANUAL.replace("requirements.txt", "''"), None, None),
    "missing requirements": (MANUAL.replace("requirements.txt", "./missing//reqs.txt"), None,
                             "requirements file `missing/reqs.txt` was not found"),
    "requirements is a directory": (MANUAL.replace("requirements.txt", "d"), None,
                                    "[Errno 21] Is a directory: 'd'"),
    "requirements is a list": (MANUAL.replace("requirements.txt", "[r.txt]"), None,
                               "expected str, bytes or os.PathLike object, not list"),
    "root and local paths": (MANUAL.replace("local-paths", "root-paths: [a.py]\n    local-paths"), b"numpy\n",
                             "only one of options `root-modules`, `local-paths` can be set at a time"),
    "root paths not a list": (MANUAL.replace("local-paths: [a.py]", "root-paths: a.py"), b"numpy\n",
                              "`root-paths` should be a list of strings"),
    "local paths not a list": (MANUAL.replace("[a.py]", "a.py"), b"numpy\n",
                               "`local-paths` should be a list of strings"),
}


# errors worded by Python itself (the official client's interpreter, and dsjobs's): equal words only on equal Pythons
PYTHON_WORDED = {"requirements is a list", "bad escape in a marker"}


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """Every case's job directory, and what the official client says of each."""
    root = tmp_path_factory.mktemp("jobs")
    dirs = {}
    for i, (name, (config, reqs, _)) in enumerate(CASES.items()):
        d = root / f"case{i}"
        (d / "d").mkdir(parents=True)
        (d / "d" / "f").write_text("x")
        (d / "a.py").write_text("if __name__ == '__main__':\n    pass\n")
        (d / "config.yaml").write_text(config)
        if reqs is not None:
            (d / "requirements.txt").write_bytes(reqs)
        dirs[name] = d
    py = os.environ.get("DSJOBS_DATASPHERE_PYTHON") or str(ROOT / ".venv-datasphere" / "bin" / "python")
    assert os.path.exists(py), "the official CLI is not installed: `make test` installs it into .venv-datasphere"
    res = subprocess.run([py, "-c", ORACLE], input=json.dumps([str(d) for d in dirs.values()]), text=True,
                         capture_output=True, timeout=120, env=dict(os.environ, LC_ALL="C.UTF-8"))
    assert res.returncode == 0, res.stderr
    python, *verdicts = json.loads(res.stdout)
    same_python = tuple(python) == sys.version_info[:2]
    return {name: (d, official, same_python) for (name, d), official in zip(dirs.items(), verdicts)}


@pytest.mark.parametrize("name", CASES)
def test_same_verdict_and_words_as_the_official_client(jobs, name):
    d, official, same_python = jobs[name]
    expected = CASES[name][2]
    try:
        py = load(d / "config.yaml", d).python
        mine = {"ok": {"fully_manual": py.fully_manual, "version": py.version or None,
                       "requirements": py.requirements}}
    except ConfigError as e:
        mine = {"error": str(e)}
    if expected is None:
        assert "ok" in official, official  # the case itself is what it claims to be
    else:
        assert official == {"error": expected.replace("{DIR}", str(d))}
    if name in PYTHON_WORDED and not same_python:
        assert "error" in mine  # worded by each side's own Python
    else:
        assert mine == official


def test_requirements_are_the_official_lines(jobs):
    d = jobs["valid"][0]
    assert load(d / "config.yaml", d).python.requirements == [
        "--no-deps", "--extra-index-url https://x/simple", "--trusted-host x", "numpy>=1.0,<2",
        "requests[socks] (>=2.8.1, ==2.8.*)", "zope.interface===5.0-odd"]
