"""The job page: a web UI on loopback over the job service (projects, job lists, a page per job with live logs,
progress, charts, files and cancel), served by uvicorn in a thread of the engine's process.

Its stack (Starlette, uvicorn, Jinja2) is the `ui` extra and costs ~200 ms of imports, so nothing here is imported
until a UI is started (engine/app.py ``Engine.start_ui``); this module itself imports only the standard library,
so that ``missing()`` can say what is lacking without importing any of it.
"""
from __future__ import annotations

import importlib.util
import sys

NEEDS = ("starlette", "uvicorn", "jinja2")
PYTHON = (3, 11)  # Starlette 1.8+ (the pinned 1.10) needs 3.11


class Unavailable(Exception):
    """The UI cannot start in this environment; the message says why and what to install."""


def missing() -> str:
    """Why the UI cannot start here (one line), or "" when it can."""
    if sys.version_info < PYTHON:
        return (f"the web UI needs Python {PYTHON[0]}.{PYTHON[1]}+ (this is {sys.version_info[0]}."
                f"{sys.version_info[1]}); serving the API without it")
    absent = [m for m in NEEDS if importlib.util.find_spec(m) is None]
    if absent:
        return (f"the web UI is not installed ({', '.join(absent)} missing: pip install 'dsjobs[ui]'); serving the "
                "API without it")
    return ""
