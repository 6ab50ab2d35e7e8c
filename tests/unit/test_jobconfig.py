"""dsjobs's config parser gives the official client's messages (datasphere-behaviour.md section 2)."""
import pytest

from dsjobs.jobconfig import ConfigError, parse


@pytest.fixture
def base(tmp_path):
    (tmp_path / "in.txt").write_text("x")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("y")
    return tmp_path


@pytest.mark.parametrize("text,message", [
    ("", "config is empty"),
    ("name: x", "`cmd` is required"),
    ("cmd: ''", "empty `cmd`"),
    ("cmd: x\nargs: [a]", "`args` should be a dict strings to strings"),
    ("cmd: x\ninputs: a", "`inputs` should be a list"),
    ("cmd: x\ninputs: [missing.txt]", "invalid `inputs` entry: `missing.txt`: value is incorrect: no such path: missing.txt"),
    ("cmd: x\noutputs: [/abs/out]", "invalid `outputs` entry: `/abs/out`: value is incorrect: path without variable should be relative: /abs/out"),
    ("cmd: x\noutputs: [{a: V, b: W}]", "invalid `outputs` entry: `{'a': 'V', 'b': 'W'}`: multiple items in dict"),
    ("cmd: x\noutputs: [{a: {vr: V}}]", "only `var` param is supported"),
    ("cmd: x\noutputs: [{a: V.1}]", "var `V.1` does not fit regexp [0-9a-z-A-z\\-_]{1,50}"),
    ("cmd: x\noutputs: [{a: DS_PROJECT_HOME}]", "name `DS_PROJECT_HOME` is reserved and cannot be used for variable"),
    ("cmd: echo ${Y}", "`cmd` contains variable not presented in config: Y"),
    ("cmd: echo ${DS_PROJECT_HOME}", "DS_PROJECT_HOME is unavailable since you did not add `attach-project-disk` option"),
    ("cmd: x\noutputs: [{a: V}, {b: V}]", "variables in config should be unique"),
    ("cmd: x\noutputs: [a, a]", "Paths must be unique"),
    ("cmd: x\noutputs: [a, a/b]", "Path 'a/b' is included in path 'a'"),
    ("cmd: x\ndatasets: [{abc: D}]", "value is incorrect: invalid resource ID: abc"),
    ("cmd: x\nflags: x", "`flags` should be a list of strings"),
    ("cmd: x\nenv: {vars: [{A: [1]}]}", "environment var name and value should be str"),
    ("cmd: x\nenv: {vars: [NOT_SET_ANYWHERE_42]}", "environment var `NOT_SET_ANYWHERE_42` is missing"),
    ("cmd: x\nenv: {docker: {image: i, password: p}}", "Plain text password is prohibited"),
    ("cmd: x\nenv: {python: conda}", "invalid python env format: conda"),
    ("cmd: x\nenv: {python: {version: '3.10'}}", "you have to specify `type` of python env"),
    ("cmd: x\nenv: {python: {type: other}}", "possible python env types are: ['auto', 'manual']"),
    ("cmd: x\nenv: {python: {type: manual, version: '2.7'}}", "unsupported python version: 2.7"),
    ("cmd: x\nworking-storage: {size: 10GB}", "working storage size should not be less then 100 Gb"),
    ("cmd: x\nworking-storage: {type: HDD, size: 200GB}", "possible working storage types are: [SSD]"),
    ("cmd: x\ngraceful-shutdown: {signal: SIGKILL}", "Value of 'signal' must be one of (SIGHUP, SIGINT, SIGUSR1, SIGUSR2, SIGTERM), not SIGKILL"),
    ("cmd: x\ngraceful-shutdown: {timeout: 5 s}", "Cannot parse field 'timeout' in 'graceful-shutdown'"),
    ("cmd: x\noutput-datasets: [{var: V, size: 1GB}]", "Output dataset dict must contain name"),
    ("cmd: x\nspark: {}", "Spark connector is not provided"),
])
def test_official_messages(base, text, message):
    with pytest.raises(ConfigError) as e:
        parse(text, base)
    assert message in str(e.value)


def test_valid_config(base):
    c = parse("cmd: run ${A} ${B} ${R} ${bt1234567890abcdefgh}\nargs: {R: '0'}\ninputs: [{in.txt: A}, d]\n"
              "outputs: [{out/x: B}]\ns3-mounts: [bt1234567890abcdefgh]\ncloud-instance-types: [g1.1, c1.4]\n"
              "graceful-shutdown: {signal: SIGUSR1, timeout: 1m30s}\nworking-storage: {size: 150GB}\n"
              "env: {vars: [{X: '1'}]}\nflags: [attach-project-disk]", base)
    assert c.args == {"R": "0"} and c.cloud_instance_types == ["g1.1", "c1.4"]
    assert c.graceful_shutdown == (10, 90.0) and c.working_storage_gb == 150 and c.attach_project_disk
    assert c.env_vars == {"X": "1"} and [i.path for i in c.inputs] == ["in.txt", "d"]


def test_the_root_module_is_found_as_the_official_client_finds_it(base):
    """utils.parse_python_main_module: after an interpreter, by its common name or by its --version (so a path to
    one works), or the program itself when its shebang is Python's; a first word that names nothing is refused."""
    import sys
    auto = "\nenv:\n  python: auto\n"
    (base / "main.py").write_text("print(1)\n")
    c = parse(f"cmd: {sys.executable} main.py{auto}", base)
    assert c.python_root_modules == [("main.py", False)]
    c = parse(f"cmd: python3 -m pkg.train{auto}", base)
    assert c.python_root_modules == [("pkg.train", True)]
    (base / "train.py").write_text("#!/usr/bin/env python3\nprint(1)\n")
    (base / "train.py").chmod(0o755)
    c = parse(f"cmd: ./train.py --epochs 1{auto}", base)
    assert c.python_root_modules == [("./train.py", False)]
    with pytest.raises(ConfigError, match="root module"):
        parse(f"cmd: bash -c true{auto}", base)  # a program, not Python's
    with pytest.raises(ConfigError, match="file `nothere.py` was not found"):
        parse(f"cmd: nothere.py{auto}", base)
    with pytest.raises(ConfigError, match="must be followed by other arguments"):
        parse(f"cmd: {sys.executable}{auto}", base)


@pytest.mark.parametrize("env", ["env:", "env: []", "env: [a]", "env: nothing"])
def test_an_env_that_is_not_a_mapping_and_names_no_key_is_no_env(base, env):
    # The official client looks its keys up with `in`: `env:` left empty (its vars commented out) runs.
    c, plain = parse(f"cmd: echo hi\n{env}\n", base), parse("cmd: echo hi\n", base)
    assert (c.env_vars, c.docker, c.python) == (plain.env_vars, plain.docker, plain.python) == (None, None, None)


def test_the_official_limits_are_checked_before_anything_is_sent(base, monkeypatch):
    """config.check_limits, with its messages: dsjobs sent the job and the engine refused it in words of its own."""
    from dsjobs import jobconfig
    from dsjobs.client import build_params
    outs = "".join(f"\n  - o{i}" for i in range(101))
    with pytest.raises(ConfigError, match="^number of output files must be not greater than 100$"):
        build_params(parse(f"cmd: x\noutputs:{outs}", base), base)
    monkeypatch.setattr(jobconfig, "UPLOAD_FILE_MAX_SIZE_BYTES", 0)
    with pytest.raises(ConfigError, match=r"^size of file in.txt = 1.0B, while limit = 0.0B$"):
        build_params(parse("cmd: x\ninputs: [in.txt]", base), base)
    monkeypatch.setattr(jobconfig, "UPLOAD_FILE_MAX_SIZE_BYTES", 5 << 30)
    monkeypatch.setattr(jobconfig, "UPLOAD_FILES_MAX_TOTAL_SIZE_BYTES", 1)
    with pytest.raises(ConfigError) as e:
        build_params(parse("cmd: x\ninputs: [in.txt, d/f]", base), base)
    assert str(e.value) == "total size of input files = 2.0B, while limit = 1.0B bytes."
    assert jobconfig.humanize_bytes_size(5 << 30) == "5.0GB"


def test_a_vars_override_naming_no_file_is_a_config_error(base):
    # run_job(vars=...) raised a bare FileNotFoundError from deep in the upload; the config's own check, by name.
    from dsjobs.api import run_job
    (base / "config.yaml").write_text("cmd: cat ${A}\ninputs:\n  - in.txt: A\n")
    with pytest.raises(ConfigError, match="^invalid `vars` entry: `A`: value is incorrect: no such path: gone.txt$"):
        run_job(base / "config.yaml", vars={"A": "gone.txt"})
