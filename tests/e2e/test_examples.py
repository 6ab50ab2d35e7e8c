"""`dsjobs run` on every example under examples/jobs/, as a user runs it: a real CLI process, no server."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# An example with a docker-compose.yml needs its service containers: its own tests/ start them and run it.
EXAMPLES = sorted(p.parent for p in (Path(__file__).resolve().parents[2] / "examples" / "jobs").glob("*/config.yaml")
                  if not (p.parent / "docker-compose.yml").exists())


@pytest.mark.e2e
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_dsjobs_run_example(example, tmp_path):
    work = tmp_path / example.name
    shutil.copytree(example, work, ignore=shutil.ignore_patterns("out", "tests", "__pycache__"))
    expect = json.loads((example / "expect.json").read_text())
    res = subprocess.run([sys.executable, "-m", "dsjobs", "run", "-c", "config.yaml", "--data-dir",
                          str(tmp_path / "data")], cwd=work, capture_output=True, text=True, timeout=120)
    assert res.returncode == expect["return_code"], res.stderr
    for out in expect["outputs"]:
        assert (work / out).is_file(), f"{out} missing; stderr:\n{res.stderr}"
    assert "[SYS]" in res.stderr  # the engine's log streamed live


def test_hello_outputs_content(tmp_path):
    example = EXAMPLES[[p.name for p in EXAMPLES].index("hello")]
    work = tmp_path / "hello"
    shutil.copytree(example, work, ignore=shutil.ignore_patterns("out"))
    res = subprocess.run([sys.executable, "-m", "dsjobs", "run", "-c", "config.yaml", "--data-dir",
                          str(tmp_path / "data")], cwd=work, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert (work / "out/result.txt").read_text() == 'Hello, DataSphere! (params: {"seed":42})\n'
    assert (work / "out/report/listing.txt").read_text() == "a.txt\nb.txt\nnested\n"
    assert "mood is cheerful" in res.stdout and "a warning on stderr" in res.stderr


def test_config_error_reported_before_anything_runs(tmp_path):
    (tmp_path / "config.yaml").write_text("cmd: echo ${NOPE} > ran.txt\n")
    res = subprocess.run([sys.executable, "-m", "dsjobs", "run", "-c", "config.yaml", "--data-dir",
                          str(tmp_path / "data")], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert "`cmd` contains variable not presented in config: NOPE" in res.stderr
    assert not (tmp_path / "ran.txt").exists()


def test_progress_bar_on_a_terminal(tmp_path):
    """On a terminal, `dsjobs run` shows the job's progress (JOB_PROGRESS_FILENAME) as a bar."""
    (tmp_path / "steps.sh").write_text('for i in 1 2 3; do echo "{\\"progress\\": $((i*30)), \\"message\\": '
                                       '\\"step $i\\"}" >> $JOB_PROGRESS_FILENAME; sleep 0.4; done\n')
    (tmp_path / "config.yaml").write_text("cmd: bash steps.sh\ninputs:\n  - steps.sh\n")
    typescript = tmp_path / "typescript"
    cmd = f"{sys.executable} -m dsjobs run -c config.yaml --data-dir {tmp_path / 'data'}"
    subprocess.run(["script", "-qc", cmd, str(typescript)], cwd=tmp_path, capture_output=True, timeout=120,
                   check=True)
    screen = typescript.read_bytes().decode(errors="replace")
    assert "step 3" in screen and "90%" in screen and "━" in screen
