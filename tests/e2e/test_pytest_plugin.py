"""The pytest plugin, tested with pytest's own pytester (a real pytest run in a subprocess)."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

CONFIGS = {
    "ok/config.yaml": "cmd: echo hello ${WHO} $GREETING > out.txt; mkdir -p d; echo x > d/x.txt\n"
                      "args:\n  WHO: world\nenv:\n  vars:\n    - GREETING: hi\noutputs:\n  - out.txt\n  - d\n",
    "bad/config.yaml": "cmd: echo 'the real reason it broke' >&2; exit 7\n",
    "slow/config.yaml": "cmd: sleep 1; echo $DSJOBS_JOB_ID > pid.txt\noutputs:\n  - pid.txt\n",
}


@pytest.fixture
def project(pytester):
    for path, text in CONFIGS.items():
        p = pytester.path / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return pytester


def test_passing_failing_overrides_and_directories(project):
    project.makepyfile(test_jobs="""
        from pathlib import Path
        HERE = Path(__file__).parent

        def test_ok(dsjobs, tmp_path):
            r = dsjobs.run(HERE / "ok/config.yaml")
            assert r.return_code == 0 and r.status == "SUCCESS"
            assert r.outputs["out.txt"].read_text() == "hello world hi\\n"
            assert r.outputs["out.txt"].parent == tmp_path  # outputs land in the test's tmp_path
            assert (r.outputs["d"] / "x.txt").read_text() == "x\\n"

        def test_overrides(dsjobs):
            r = dsjobs.run(HERE / "ok/config.yaml", args={"WHO": "you"}, env={"GREETING": "hey"})
            assert r.outputs["out.txt"].read_text() == "hello you hey\\n"

        def test_bad(dsjobs):
            r = dsjobs.run(HERE / "bad/config.yaml")
            assert r.return_code == 0
    """)
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*dsjobs job * (ERROR, return code 7) stderr*", "*the real reason it broke*"])


def test_jobs_of_parallel_tests_do_not_interfere(project):
    project.makepyfile(test_par="""
        import threading
        from pathlib import Path
        HERE = Path(__file__).parent

        def test_two_at_once(dsjobs, tmp_path):
            results = {}
            def go(i):
                results[i] = dsjobs.run(HERE / "slow/config.yaml", output_dir=tmp_path / f"o{i}")
            threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
            [t.start() for t in threads]
            [t.join() for t in threads]
            pids = {results[i].outputs["pid.txt"].read_text() for i in range(2)}
            assert len(pids) == 2 and all(r.duration < 20 for r in results.values())
            assert results[0].job_id != results[1].job_id
    """)
    project.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_config_error_raises_with_the_official_message(project):
    (project.path / "broken.yaml").write_text("cmd: echo ${NOPE}\n")
    project.makepyfile(test_err="""
        import pytest
        from pathlib import Path
        from dsjobs import ConfigError

        def test_err(dsjobs):
            with pytest.raises(ConfigError) as e:
                dsjobs.run(Path(__file__).parent / "broken.yaml")
            assert "`cmd` contains variable not presented in config: NOPE" in str(e.value)
    """)
    project.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
