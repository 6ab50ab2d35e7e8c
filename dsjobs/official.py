"""`dsjobs datasphere ARGS...`: the installed official `datasphere` CLI, pointed at a dsjobs engine.

The official CLI (PyPI `datasphere`, 0.10.0) has no endpoint option, and its DEV mode is broken. This runs it
unchanged in its own interpreter with three things replaced: its gRPC channels (insecure, to the dsjobs endpoint),
its IAM token (the local token: $DSJOBS_TOKEN, or a placeholder when the engine needs none), and the version check
against the package index at exit (it needs the internet).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Optional

from dsjobs.discovery import find_token

LAUNCHER = r'''
import os, sys
import grpc
endpoint = sys.argv[1]
sys.argv = ["datasphere"] + sys.argv[2:]
import datasphere.channel as channel
import datasphere.client as client
import datasphere.main as main

def _channel(user_agent=None):
    options = list(channel.CHANNEL_OPTIONS)
    if user_agent:
        options.append(("grpc.primary_user_agent", user_agent))
    return grpc.insecure_channel(endpoint, options=options)

for mod in (channel, client):
    for name in ("get_job_channel", "get_project_channel", "get_op_channel"):
        if hasattr(mod, name):
            setattr(mod, name, _channel)
main.check_package_version = lambda: None
main.main()
'''


def find_python(explicit: Optional[str] = None) -> str:
    """The interpreter the official CLI is installed in."""
    for candidate in (explicit, os.environ.get("DSJOBS_DATASPHERE_PYTHON")):
        if candidate:
            return candidate
    script = shutil.which("datasphere")
    if script:
        with open(script, "rb") as f:
            first = f.readline().decode(errors="replace").strip()
        if first.startswith("#!"):
            return first[2:].split()[0]
    raise FileNotFoundError("the official datasphere CLI is not installed: `pip install datasphere` (in a virtual "
                            "environment of its own is best), or point DSJOBS_DATASPHERE_PYTHON at its python")


def run(args: list[str], endpoint: str, python: Optional[str] = None, token_file: Optional[str] = None) -> int:
    env = dict(os.environ)
    env["YC_IAM_TOKEN"] = find_token(endpoint, token_file) or "dsjobs-local"
    env.pop("SERVER_ENV", None)
    try:
        py = find_python(python)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return subprocess.call([py, "-c", LAUNCHER, endpoint, *args], env=env)
