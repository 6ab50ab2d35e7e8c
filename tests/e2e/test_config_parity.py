"""dsjobs's config parser against the official one (run in its own environment): the same configs are accepted,
with the same content, and the others rejected with the same message."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from dsjobs.jobconfig import ConfigError, parse
from tests.helpers import official_python

pytestmark = pytest.mark.e2e

CORPUS = [
    "",
    "name: x",
    "cmd: ''",
    "cmd: echo hi",
    "cmd: x\nargs: [a]",
    "cmd: x\nargs: {A: '1', B: two}",
    "cmd: echo ${A} ${B}\nargs: {A: '1'}",
    "cmd: x\ninputs: a",
    "cmd: x\ninputs: [missing.txt]",
    "cmd: cat ${I}\ninputs: [{in.txt: I}, d]",
    "cmd: cat ${I}\ninputs: [{in.txt: {var: I}}]",
    "cmd: x\ninputs: [{in.txt: {vr: I}}]",
    "cmd: x\ninputs: [{in.txt: I, d: J}]",
    "cmd: x\ninputs: [{in.txt: [I]}]",
    "cmd: x\ninputs: [[in.txt]]",
    "cmd: x\ninputs: [in.txt, in.txt]",
    "cmd: x\ninputs: [d, d/f]",
    "cmd: x\noutputs: [/abs/out]",
    "cmd: x > ${O}\noutputs: [{/abs/out: O}]",
    "cmd: x\noutputs: [../up]",
    "cmd: x\noutputs: [a, a/b]",
    "cmd: x\noutputs: [{a: V.1}]",
    "cmd: x\noutputs: [{a: DS_PROJECT_HOME}]",
    "cmd: x\noutputs: [{a: '_LOCAL_MODULE_0'}]",
    "cmd: x\noutputs: [{a: V}, {b: V}]",
    "cmd: x\noutputs: ['a:', 'b:']",
    "cmd: echo ${Y}",
    "cmd: echo ${DS_PROJECT_HOME}",
    "cmd: echo ${DS_PROJECT_HOME}\nflags: [attach-project-disk]",
    "cmd: x\nflags: x",
    "cmd: x\nflags: [other-flag]",
    "cmd: ls ${S} ${bt1234567890abcdefgk}\ns3-mounts: [{bt1234567890abcdefgh: S}]\ndatasets: [bt1234567890abcdefgk]",
    "cmd: x\ndatasets: [{abc: D}]",
    "cmd: x\nenv:",
    "cmd: x\nenv: [a]",
    "cmd: x\nenv: nothing",
    "cmd: x\nenv: {vars: [{A: '1'}, HOME]}",
    "cmd: x\nenv: {vars: {A: '1'}}",
    "cmd: x\nenv: {vars: [{A: [1]}]}",
    "cmd: x\nenv: {vars: [[A]]}",
    "cmd: x\nenv: {vars: [NOT_SET_ANYWHERE_42]}",
    "cmd: x\nenv: {vars: 5}",
    "cmd: x\nenv: {docker: b1gimage}",
    "cmd: x\nenv: {docker: {image: cr.yandex/a/b:1, username: u, password: {secret-id: S}}}",
    "cmd: x\nenv: {docker: {image: i, password: p}}",
    "cmd: x\nenv: {docker: {image: i, password: [p]}}",
    "cmd: x\nenv: {docker: [i]}",
    "cmd: x\nenv: {python: conda}",
    "cmd: x\nenv: {python: {version: '3.10'}}",
    "cmd: x\nenv: {python: {type: other}}",
    "cmd: x\nenv: {python: {type: manual, version: '2.7'}}",
    "cmd: x\nenv: {python: {type: manual, version: '3.10', requirements-file: nope.txt, local-paths: []}}",
    "cmd: x\nenv: {python: {type: manual, version: '3.10.4', requirements-file: req.txt, local-paths: [lib]}}",
    "cmd: x\nenv: {python: {type: manual, version: '3.10', requirements-file: req.txt, local-paths: [], "
    "pip: {index-url: 'https://i', extra-index-urls: [e], trusted-hosts: [h], no-deps: 'true'}}}",
    "cmd: x\nenv: {python: {type: manual, version: '3.10', requirements-file: req.txt, local-paths: [], "
    "pip: {extra-index-urls: e}}}",
    "cmd: x\ncloud-instance-types: [g1.1, c1.4]",
    "cmd: x\ncloud-instance-type: g1.1",
    "cmd: x\ncloud-instance-types: {a: b}",
    "cmd: x\nworking-storage: {size: 10GB}",
    "cmd: x\nworking-storage: {size: 150Gb}",
    "cmd: x\nworking-storage: {type: HDD, size: 200GB}",
    "cmd: x\nworking-storage: {}",
    "cmd: x\nworking-storage: {size: 150.5GB}",
    "cmd: x\ngraceful-shutdown: {signal: SIGKILL}",
    "cmd: x\ngraceful-shutdown: {signal: SIGUSR1, timeout: 1m30s}",
    "cmd: x\ngraceful-shutdown: {timeout: 5 s}",
    "cmd: x\ngraceful-shutdown: {}",
    "cmd: x > ${O}\noutput-datasets: [{name: n, var: O, size: 2GB, labels: {a: b}}]",
    "cmd: x\noutput-datasets: [{var: V, size: 1GB}]",
    "cmd: x\noutput-datasets: [{name: n, size: 1GB}]",
    "cmd: x\noutput-datasets: [{name: n, var: V}]",
    "cmd: x\noutput-datasets: [{name: n, var: V, size: 1GB}, {name: n, var: W, size: 1GB}]",
    "cmd: x\noutput-datasets: x",
    "cmd: x\nspark: {}",
    "cmd: x\nspark: {connector: {name: c}}",
    "cmd: x\nspark: {connector: bt1spark}",
]

OFFICIAL = r'''
import json, sys, os
from pathlib import Path
from datasphere.config import parse_config
from datasphere.validation import validate_paths
from google.protobuf.json_format import MessageToDict
out = []
for path in sys.argv[1:]:
    try:
        c = parse_config(Path(path))
        validate_paths(c, None)
        ws = MessageToDict(c.working_storage) if c.working_storage else None
        g = c.graceful_shutdown_params
        out.append({"ok": True, "cmd": c.cmd, "args": c.args, "inputs": [[i.path, i.var] for i in c.inputs],
                    "outputs": [[o.path, o.var] for o in c.outputs], "env": c.env.vars,
                    "types": c.cloud_instance_types, "disk": c.attach_project_disk,
                    "ws": int(ws["sizeGb"]) if ws else None,
                    "grace": [g.signal, g.timeout.seconds if g.HasField("timeout") else None] if g else None,
                    "ods": [[d.name, d.var, d.size_gb] for d in c.output_datasets],
                    "spark": c.spark_params.connector_id if c.spark_params else None})
    except Exception as e:
        out.append({"ok": False, "error": str(e)})
print(json.dumps(out))
'''


def ours(path: Path) -> dict:
    try:
        c = parse(path.read_text(), path.parent)
    except ConfigError as e:
        return {"ok": False, "error": str(e)}
    g = c.graceful_shutdown
    return {"ok": True, "cmd": c.cmd, "args": c.args, "inputs": [[i.path, i.var] for i in c.inputs],
            "outputs": [[o.path, o.var] for o in c.outputs], "env": c.env_vars, "types": c.cloud_instance_types,
            "disk": c.attach_project_disk, "ws": c.working_storage_gb,
            "grace": [g[0], int(g[1]) if g[1] else None] if g else None,
            "ods": [[d.name, d.var, d.size_gb] for d in c.output_datasets], "spark": c.spark_connector}


def test_same_outcomes_as_the_official_parser(tmp_path):
    (tmp_path / "in.txt").write_text("x")
    (tmp_path / "req.txt").write_text("")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("y")
    (tmp_path / "lib").mkdir()
    paths = []
    for i, text in enumerate(CORPUS):
        p = tmp_path / f"c{i}.yaml"
        p.write_text(text)
        paths.append(p)
    env = {k: v for k, v in os.environ.items() if k != "NOT_SET_ANYWHERE_42"}
    res = subprocess.run([official_python(), "-c", OFFICIAL, *map(str, paths)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    official = json.loads(res.stdout.strip().splitlines()[-1])
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        mine = [ours(p) for p in paths]
    finally:
        os.chdir(old)
    diffs = [(CORPUS[i], official[i], mine[i]) for i in range(len(CORPUS)) if official[i] != mine[i]]
    assert not diffs, "\n\n".join(f"{c!r}\n official: {o}\n dsjobs:   {m}" for c, o, m in diffs)
