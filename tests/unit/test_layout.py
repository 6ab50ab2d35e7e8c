"""The layout's rules (tools/check_layout.py): the tree keeps them, and a violation of each kind is caught."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("check_layout", ROOT / "tools" / "check_layout.py")
check_layout = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_layout)


def test_the_tree_keeps_the_layout_rules():
    assert check_layout.check(ROOT) == []


def test_each_kind_of_violation_is_caught(tmp_path):
    files = {
        "runners/bad.py": "from engine.model import Job\n",
        "runners/lazy.py": "def f():\n    import dsjobs_pb.yandex\n",
        "engine/jobs.py": "from dsjobs_pb.yandex.cloud.operation import operation_pb2\n",
        "engine/api/convert.py": "from dsjobs_pb.yandex.cloud.operation import operation_pb2\n",  # allowed
        "engine/store.py": "from runners import pyenv\n",
        "engine/app.py": "from runners import pyenv\n",  # allowed: machines are wired here
        "engine/backends/ray/backend.py": "from engine.lifecycle import Lifecycle\n",
        "engine/lifecycle.py": "from engine.backends.local import LocalBackend\n",
        "engine/cas.py": "def f(job):\n    job.status = 1\n",
        "engine/files.py": "def f(jobs):\n    jobs.update('x', None, to=2)\n",
        "dsjobs/client.py": "import engine.app\n",
        "engine/ui/app.py": "from engine.lifecycle import Lifecycle\n",
        "engine/ui/sse.py": "def f(job):\n    job.status = 4\n",
        "engine/ui/views.py": "from dsjobs_pb.yandex.cloud.operation import operation_pb2\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    found = {p.split(":")[0] for p in check_layout.check(tmp_path)}
    assert found == {"runners/bad.py", "runners/lazy.py", "engine/jobs.py", "engine/store.py",
                     "engine/backends/ray/backend.py", "engine/lifecycle.py", "engine/cas.py", "engine/files.py",
                     "dsjobs/client.py", "engine/ui/app.py", "engine/ui/sse.py", "engine/ui/views.py"}
