"""`dsjobs hook install`: every consumer of the official `datasphere` package, in its own interpreter, against
`dsjobs serve`: the CLI typed as in the docs, the SDK in a script, the shape the docs give Airflow tasks, and
nothing at all without DSJOBS_ENDPOINT. Each venv here sees the real official client (0.10.0) through a .pth."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from tests.helpers import ROOT, Serve, client_venv, copy_example, wait_for, wait_output, wait_status

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROBE = r'''
import json, os, sys
at_start = sorted(sys.modules)
meta = [f"{type(f).__module__}.{type(f).__name__}" for f in sys.meta_path]
import datasphere, datasphere.main, datasphere.api as api, datasphere.auth as auth, datasphere.channel as channel
import datasphere.client as client, datasphere.utils as utils
where = lambda f: f"{f.__module__}.{f.__qualname__}"
print(json.dumps({
    "at_start": at_start, "meta_path": meta,
    "modules": sorted(m for m in sys.modules if m.startswith(("datasphere", "dsjobs"))),
    "patched": [where(channel._get_channel), where(auth.create_iam_token), where(client.Client._get_job_link),
                where(utils.check_package_version), where(datasphere.main.check_package_version)],
    "interval": client.operation_check_interval_seconds, "server_env": api.env.name,
    "SERVER_ENV": os.environ.get("SERVER_ENV")}))
'''


@pytest.fixture(scope="module")
def venvs(tmp_path_factory):
    root = tmp_path_factory.mktemp("venvs")
    return {"clean": client_venv(root / "clean", hooked=False), "hooked": client_venv(root / "hooked", hooked=True)}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    srv = Serve(tmp_path_factory.mktemp("hook") / "data")
    client = srv.start()
    yield srv, client
    client.close()
    srv.proc.terminate()
    srv.proc.wait(10)


def env_for(endpoint=None, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSJOBS_", "SERVER_ENV", "YC_"))}
    if endpoint:
        env["DSJOBS_ENDPOINT"] = endpoint
    env.update(extra)
    return env


def run(argv, *, cwd, env, check=True, timeout=180):
    res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    out = res.stdout + res.stderr
    if check:
        assert res.returncode == 0, out
    assert "not refreshable" not in out and "Traceback" not in out or not check, out
    return res


def datasphere(venvs, engine, *args, cwd, check=True):
    """`datasphere ARGS` as the docs type it, in the hooked venv, with DSJOBS_ENDPOINT set."""
    script = str(Path(venvs["hooked"]).parent / "datasphere")
    return run([script, *args], cwd=cwd, env=env_for(engine[1].endpoint), check=check)


def test_without_the_endpoint_the_hook_does_nothing(venvs, tmp_path):
    clean, hooked = (json.loads(run([venvs[k], "-c", PROBE], cwd=tmp_path, env=env_for()).stdout)
                     for k in ("clean", "hooked"))
    assert clean == hooked  # not even imported: same modules at start, same finders, the client's own functions
    assert "dsjobs_datasphere_hook" not in hooked["modules"] + hooked["at_start"]
    for args in (["--help"], ["project", "job", "execute", "--help"], ["project", "list", "--help"]):
        a, b = (run([venvs[k], "-m", "datasphere.main", *args], cwd=tmp_path, env=env_for()) for k in
                ("clean", "hooked"))
        assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr)


def test_with_the_endpoint_every_part_is_redirected(venvs, tmp_path):
    got = json.loads(run([venvs["hooked"], "-c", PROBE], cwd=tmp_path,
                         env=env_for("127.0.0.1:1", SERVER_ENV="DEV")).stdout)
    assert all(p.startswith("dsjobs_datasphere_hook.") for p in got["patched"]), got["patched"]
    assert got["interval"] == 1.0
    # SERVER_ENV=DEV would make the package fail to import (its private API is not in the wheel): hidden from it,
    # and left as it was for everything else
    assert (got["server_env"], got["SERVER_ENV"]) == ("PROD", "DEV")
    # Installed late (the package imported first, as a notebook may): redirected all the same
    from dsjobs.official import SOURCES
    for name, src in SOURCES.items():
        (tmp_path / name).write_bytes(src.read_bytes())
    late = "import datasphere.main, datasphere.client as c, dsjobs_datasphere_hook as h; h.install(); " \
           "print(c.Client._get_job_link.__module__, datasphere.main.check_package_version.__module__)"
    res = run([venvs["clean"], "-c", late], cwd=tmp_path, env=env_for("127.0.0.1:1", PYTHONPATH=str(tmp_path)))
    assert res.stdout.split() == ["dsjobs_datasphere_hook", "dsjobs_datasphere_hook"]


def test_install_status_remove(tmp_path):
    py = client_venv(tmp_path / "v", hooked=False)
    dsjobs = [sys.executable, "-m", "dsjobs", "hook"]
    st = subprocess.run([*dsjobs, "status", "--python", py], capture_output=True, text=True)
    assert st.returncode == 1 and "not installed" in st.stdout
    res = subprocess.run([*dsjobs, "install", "--python", py], capture_output=True, text=True, check=True)
    assert "hook installed in" in res.stdout
    site = Path(res.stdout.split("hook installed in ")[1].split(" (")[0])
    assert sorted(p.name for p in site.glob("dsjobs_datasphere*")) == [
        "dsjobs_datasphere_discovery.py", "dsjobs_datasphere_hook.pth", "dsjobs_datasphere_hook.py"]
    assert subprocess.run([*dsjobs, "status", "--python", py], capture_output=True).returncode == 0
    (site / "dsjobs_datasphere_hook.py").write_text("# older\n" + (site / "dsjobs_datasphere_hook.py").read_text())
    st = subprocess.run([*dsjobs, "status", "--python", py], capture_output=True, text=True)
    assert st.returncode == 1 and "outdated" in st.stdout
    subprocess.run([*dsjobs, "install", "--python", py], check=True, capture_output=True)  # again: brought current
    assert subprocess.run([*dsjobs, "status", "--python", py], capture_output=True).returncode == 0
    run([py, "-c", "import datasphere.main"], cwd=tmp_path, env=env_for("127.0.0.1:1"))  # imports, redirected
    res = subprocess.run([*dsjobs, "remove", "--python", py], capture_output=True, text=True, check=True)
    assert "hook removed" in res.stdout and not list(site.glob("dsjobs_datasphere*"))
    assert not list((site / "__pycache__").glob("dsjobs_datasphere*"))
    assert "no hook" in subprocess.run([*dsjobs, "remove", "--python", py], capture_output=True, text=True).stdout


def test_the_cli_as_the_docs_type_it(venvs, engine, tmp_path):
    srv, client = engine
    work = copy_example("hello", tmp_path)
    res = datasphere(venvs, engine, "project", "job", "execute", "-p", "docs", "-c", "config.yaml", cwd=work)
    out = res.stdout + res.stderr
    assert "job completed successfully" in out and "hello from job" in out
    job = client.list("docs")[0]
    assert (work / "out" / "report").exists()
    # The link is the engine's job page (its web UI), with no token in it, and it answers: with the login form
    # until the token is given, then with the job's page
    link = next(line.split("job link: ")[1].split("\x1b")[0].strip() for line in out.splitlines()
                if "job link: " in line)
    ui_url = [d for d in __import__("dsjobs.discovery", fromlist=["x"]).descriptors()
              if d["endpoint"].endswith(client.endpoint.rsplit(":", 1)[1])][0]["ui_url"]
    assert ui_url and link == f"{ui_url}/communities/local/projects/docs/job/{job.id}"
    token = (srv.data_dir / "token").read_text().strip()
    assert token not in out
    page = requests.get(link, timeout=10)
    assert page.status_code == 401 and 'name="token"' in page.text and "SUCCESS" not in page.text
    browser = requests.Session()
    assert browser.get(f"{link}?token={token}", timeout=10).status_code == 200  # logs in
    page = browser.get(link, timeout=10)
    assert page.status_code == 200 and "SUCCESS" in page.text and job.id in page.text and token not in page.text
    res = datasphere(venvs, engine, "project", "get", "--id", "docs", cwd=work)
    assert "docs" in res.stdout
    datasphere(venvs, engine, "project", "list", "-c", "local", "--format", "json", "-o", "projects.json", cwd=work)
    listed = json.loads((work / "projects.json").read_text())
    listed = listed if isinstance(listed, list) else [listed]  # the client prints one entity as a dict
    assert {"id": "docs", "name": "docs", "community_id": "local"} in listed


SDK_SCRIPT = r'''
import json, sys
from pathlib import Path
from datasphere import SDK
source, out = sys.argv[1], Path(sys.argv[2])
sdk = SDK()
job = sdk.fork_job(source, args={"WHO": "sdk"})
job.wait()
done = sdk.get_job(job.id).done
sdk.download_job_files(job.id, output_dir=out)
print(json.dumps({"id": job.id, "done": done}))
'''

# The shape the DataSphere docs give an Airflow DAG (there is no operator: the task calls the SDK), as plain
# functions: one task forks the job with new arguments and waits, the next downloads what it made.
AIRFLOW_SCRIPT = r'''
import sys
from pathlib import Path
from datasphere import SDK

def fork_job(source_job_id: str, who: str) -> str:
    sdk = SDK()
    job = sdk.fork_job(source_job_id, args={"WHO": who}, env_vars={"MOOD": "scheduled"})
    job.wait()
    return job.id

def collect(job_id: str, dest: str) -> list:
    sdk = SDK()
    assert sdk.get_job(job_id).done
    sdk.download_job_files(job_id, output_dir=dest)
    return sorted(p.name for p in Path(dest).iterdir())

if __name__ == "__main__":
    job_id = fork_job(sys.argv[1], "airflow")          # task 1 (its return value is the XCom)
    print("FILES", collect(job_id, sys.argv[2]))       # task 2
'''


def test_sdk_in_a_script_and_an_airflow_task(venvs, engine, tmp_path):
    _, client = engine
    work = copy_example("hello", tmp_path)
    datasphere(venvs, engine, "project", "job", "execute", "-p", "sdk", "-c", "config.yaml", cwd=work)
    source = client.list("sdk")[0].id
    (tmp_path / "sdk.py").write_text(SDK_SCRIPT)
    res = run([venvs["hooked"], str(tmp_path / "sdk.py"), source, str(tmp_path / "dl")], cwd=tmp_path,
              env=env_for(client.endpoint))
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["done"] is True
    forked = client.get(got["id"])
    assert forked.parent_job_id == source and forked.status == jpb.SUCCESS
    assert (tmp_path / "dl" / "result.txt").read_text().startswith("Hello, sdk!")

    (tmp_path / "dag.py").write_text(AIRFLOW_SCRIPT)
    res = run([venvs["hooked"], str(tmp_path / "dag.py"), source, str(tmp_path / "next")], cwd=tmp_path,
              env=env_for(client.endpoint))
    assert "FILES ['report', 'result.txt']" in res.stdout or "FILES ['report.zip', 'result.txt']" in res.stdout
    assert (tmp_path / "next" / "result.txt").read_text().startswith("Hello, airflow!")
    assert client.list("sdk")[0].parent_job_id == source


def test_ctrl_c_prompts_and_cancels_gracefully_through_dsjobs_datasphere(engine, tmp_path):
    """As the official CLI does against the cloud: Ctrl-C asks "cancel job?", `y` cancels gracefully (the job's
    handler runs and its output is kept), and the CLI goes on waiting until the job is cancelled."""
    _, client = engine
    (tmp_path / "config.yaml").write_text(
        "cmd: \"trap 'echo bye; echo saved > ckpt.txt; exit 0' TERM; echo started; "
        "while true; do sleep 0.1; done\"\noutputs:\n  - ckpt.txt\n"
        "graceful-shutdown:\n  signal: SIGTERM\n  timeout: 30s\n")
    from tests.helpers import official_python
    proc = subprocess.Popen([sys.executable, "-m", "dsjobs", "datasphere", "project", "job", "execute", "-p",
                             "ctrlc", "-c", "config.yaml"], cwd=tmp_path, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env_for(client.endpoint, DSJOBS_DATASPHERE_PYTHON=official_python()))
    try:
        wait_for(lambda: client.list("ctrlc"), 60, "the job to be created")
        job_id = client.list("ctrlc")[0].id
        wait_status(client, job_id, {jpb.EXECUTING}, timeout=60)
        wait_output(client, job_id, b"started")
        proc.send_signal(signal.SIGINT)  # what the terminal sends on Ctrl-C: to the CLI alone, no wrapper left
        time.sleep(0.5)
        proc.stdin.write("y\n")
        proc.stdin.flush()
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "cancel job?" in out and "cancelling job" in out, out
    job = wait_status(client, job_id, {jpb.CANCELLED})
    assert [f.desc.path for f in job.output_files] == ["ckpt.txt"]  # the handler ran: a graceful cancel
    assert "dsjobs/cli.py" not in out and "dsjobs/official.py" not in out, out  # no wrapper traceback
