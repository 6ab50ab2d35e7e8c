"""`dsjobs check`: one config per finding (and one with none), through the real command; requirements are resolved
by the real uv against a package index served here (tests/pyindex.py) for Linux x86_64 and the job's Python."""
from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from tests.pyindex import Index, make_wheel

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("check-index")
    ix = Index(root)
    ix.add("dsj-pure", "1.0")
    # Only a CPython 3.11 wheel: resolves for 3.11, not for the cloud's 3.10.
    built = make_wheel(root, "dsj-native", "1.0")
    ix.add_file(shutil.copy(built, root / "dsj_native-1.0-cp311-cp311-manylinux_2_28_x86_64.whl"))
    # Only an sdist (static metadata): resolves, but the cloud would build it from source.
    src = root / "src" / "dsj_src-1.0"
    src.mkdir(parents=True)
    (src / "PKG-INFO").write_text("Metadata-Version: 2.2\nName: dsj-src\nVersion: 1.0\n")
    (src / "pyproject.toml").write_text('[project]\nname = "dsj-src"\nversion = "1.0"\n')
    with tarfile.open(root / "files" / "dsj_src-1.0.tar.gz", "w:gz") as t:
        t.add(src, "dsj_src-1.0")
    page = root / "simple" / "dsj-src"
    page.mkdir(parents=True)
    (page / "index.html").write_text(f'<a href="../../files/{html.escape("dsj_src-1.0.tar.gz")}">dsj_src-1.0.tar.gz</a>')
    yield ix
    ix.close()


def check(tmp_path: Path, config: str, files: dict | None = None, *args) -> tuple[int, list[dict]]:
    (tmp_path / "config.yaml").write_text(textwrap.dedent(config))
    for name, content in (files or {}).items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, int):  # a sparse file of that size
            with open(p, "wb") as f:
                f.truncate(content)
        else:
            p.write_text(content)
    r = subprocess.run([sys.executable, "-m", "dsjobs", "check", "-c", "config.yaml", "--format", "json",
                        "--data-dir", str(tmp_path / "data"), "--python", sys.executable, *args],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 1), r.stderr
    found = json.loads(r.stdout)
    assert r.returncode == (1 if found else 0)
    assert all(f["fix"] for f in found)  # each finding says what to do
    return r.returncode, found


def codes(found) -> list[str]:
    return sorted(f["code"] for f in found)


def test_a_config_with_nothing_to_say(tmp_path, index):
    rc, found = check(tmp_path, f"""\
        cmd: python3 main.py
        env:
          python:
            type: manual
            version: "3.10"
            requirements-file: req.txt
            pip:
              index-url: {index.url}
        inputs:
          - data.csv
        outputs:
          - out.txt
        """, {"req.txt": "dsj-pure==1.0\n", "data.csv": "a,b\n", "main.py": "if __name__ == '__main__':\n  pass\n"})
    assert (rc, found) == (0, [])
    text = subprocess.run([sys.executable, "-m", "dsjobs", "check", "-c", "config.yaml", "--python", sys.executable,
                           "--data-dir", str(tmp_path / "data")], cwd=tmp_path, capture_output=True, text=True)
    assert text.returncode == 0 and "nothing found" in text.stdout


def test_a_config_the_official_client_refuses(tmp_path):
    rc, found = check(tmp_path, "cmd: cat ${MISSING}\n")
    assert rc == 1 and codes(found) == ["config"]
    assert "`cmd` contains variable not presented in config: MISSING" in found[0]["message"]


def _manual(index, version: str, req: str) -> str:
    return f"""\
        cmd: python3 main.py
        env:
          python:
            type: manual
            version: "{version}"
            requirements-file: req.txt
            pip:
              index-url: {index.url}
        """


def test_requirements_that_do_not_resolve_for_the_clouds_python(tmp_path, index):
    files = {"req.txt": "dsj-native==1.0\n", "main.py": "if __name__ == '__main__':\n  pass\n"}
    rc, found = check(tmp_path, _manual(index, "3.10", "req.txt"), files)
    assert codes(found) == ["requirements"], found
    assert "Python 3.10" in found[0]["message"] and "dsj-native" in found[0]["message"]
    rc, found = check(tmp_path, _manual(index, "3.11", "req.txt"), files)  # it does for 3.11
    assert codes(found) == ["python-version"], found


def test_a_requirement_the_cloud_would_build_from_source(tmp_path, index):
    rc, found = check(tmp_path, _manual(index, "3.10", "req.txt"),
                      {"req.txt": "dsj-src==1.0\n", "main.py": "if __name__ == '__main__':\n  pass\n"})
    assert codes(found) == ["requirements-sdist"] and "dsj-src" in found[0]["message"], found


def test_a_local_python_other_than_the_clouds(tmp_path):
    rc, found = check(tmp_path, "cmd: python3 main.py\ninputs:\n  - main.py\n", {"main.py": "print(1)\n"})
    local = "%d.%d" % sys.version_info[:2]
    if local == "3.10":
        assert found == []
    else:
        assert codes(found) == ["local-python"] and f"Python {local}" in found[0]["message"]


def test_python_auto_pitfalls(tmp_path):
    rc, found = check(tmp_path, "cmd: python -u main.py\nenv:\n  python: auto\n",
                      {"main.py": "if __name__ == '__main__':\n  pass\n"})
    assert "python-auto" in codes(found) and "'-u'" in next(f for f in found if f["code"] == "python-auto")["message"]


def test_a_fully_manual_env_does_not_upload_the_main_script(tmp_path, index):
    rc, found = check(tmp_path, _manual(index, "3.10", "req.txt").rstrip(" ") + "            local-paths: []\n",
                      {"req.txt": "dsj-pure==1.0\n", "main.py": "print(1)\n"})
    assert codes(found) == ["python-manual"] and "main.py" in found[0]["message"], found


def test_an_input_over_5_gb(tmp_path):
    rc, found = check(tmp_path, "cmd: cat big.bin\ninputs:\n  - big.bin\n", {"big.bin": (5 << 30) + 1})
    assert codes(found) == ["input-size"] and "big.bin" in found[0]["message"]


def test_inputs_over_10_gb_in_all(tmp_path):
    names = [f"part{i}.bin" for i in range(3)]
    rc, found = check(tmp_path, "cmd: cat part*\ninputs:\n" + "".join(f"  - {n}\n" for n in names),
                      {n: 4 << 30 for n in names})
    assert codes(found) == ["inputs-total"]


def test_outputs_over_the_clients_download_cap(tmp_path):
    rc, found = check(tmp_path, "cmd: make-model\noutputs:\n  - small.txt\n  - model.bin\n",
                      {"small.txt": "x", "model.bin": (1 << 30) + (100 << 20)})
    assert codes(found) == ["download-cap"] and "model.bin" in found[0]["message"]
    assert "small.txt" not in found[0]["message"]  # the smallest come first, as the client downloads them


def test_instance_types_with_quotas_requests_or_no_such_name(tmp_path):
    rc, found = check(tmp_path, "cmd: echo\ncloud-instance-types: [g2.1, c1.80, x9.9]\n")
    assert codes(found) == ["instance-quota", "instance-quota", "instance-type"]
    text = " ".join(f["message"] for f in found)
    assert "g2.1 needs a quota" in text and "c1.80 is for businesses only" in text and "'x9.9'" in text


def test_resource_ids_nothing_here_knows(tmp_path):
    rc, found = check(tmp_path, "cmd: ls ${bt123456789012345678}\ns3-mounts:\n  - bt123456789012345678\n")
    assert codes(found) == ["resource-id"] and "bt123456789012345678" in found[0]["message"]
    (tmp_path / "d").mkdir()
    subprocess.run([sys.executable, "-m", "dsjobs", "mount", "add", "bt123456789012345678", str(tmp_path / "d"),
                    "--data-dir", str(tmp_path / "data")], check=True, capture_output=True)
    assert check(tmp_path, "cmd: ls ${bt123456789012345678}\ns3-mounts:\n  - bt123456789012345678\n") == (0, [])


def test_an_image_on_a_registry_with_pull_limits(tmp_path):
    rc, found = check(tmp_path, "cmd: echo\nenv:\n  docker:\n    image: python:3.10-slim\n")
    assert codes(found) == ["image-pull-limit"]
    assert check(tmp_path, "cmd: echo\nenv:\n  docker:\n    image: cr.yandex/crp123/python:3.10\n") == (0, [])
