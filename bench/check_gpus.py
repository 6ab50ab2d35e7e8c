"""GPU machine check: run as it is on a machine with (at least) two NVIDIA GPUs and the driver loaded.

    .venv/bin/python bench/check_gpus.py [--docker IMAGE]

An engine of its own (temporary data dir, real NVML through nvidia-ml-py, the real sandbox) runs two g1.1 jobs at
once, each until both are up; it checks that

1. NVML lists at least two GPUs, by UUID;
2. both jobs run side by side, each sees exactly one GPU (CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES), and the
   two are different; with nvidia-smi on the machine, `nvidia-smi -L` inside each job lists only its own GPU
   (the sandbox binds only that device node);
3. `.gpu_stats.tsv` rows stream for each job through ReadLogs (a header, then rows of its GPU's UUID);
4. `actual_cloud_instance_type` is g1.1.

With --docker IMAGE the same two jobs run in containers of IMAGE (device requests by UUID; needs the NVIDIA
Container Toolkit; the image should have nvidia-smi, as nvidia/cuda images do once the toolkit mounts it).
Exit status 0 when every check passed, 1 when one failed (said which), 2 when this machine has fewer than 2 GPUs.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dsjobs.client import Client  # noqa: E402
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb  # noqa: E402
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb  # noqa: E402
from engine.api.server import start_grpc  # noqa: E402
from engine.app import build_engine  # noqa: E402
from engine.config import EngineConfig  # noqa: E402
from runners import gpus  # noqa: E402

# A process job gets CUDA_VISIBLE_DEVICES and NVIDIA_VISIBLE_DEVICES; a container only NVIDIA_VISIBLE_DEVICES (what
# the NVIDIA Container Toolkit reads), and what it was really given is what nvidia-smi -L lists inside it.
JOB = ('echo "visible=${CUDA_VISIBLE_DEVICES:-$NVIDIA_VISIBLE_DEVICES}"; '
       'if command -v nvidia-smi >/dev/null; then nvidia-smi -L | sed "s/^/smi: /"; else echo "smi: none"; fi; '
       'touch "$DS_PROJECT_HOME/up.$DSJOBS_JOB_ID"; '
       'while [ "$(ls "$DS_PROJECT_HOME" | grep -c "^up\\.")" -lt 2 ] || [ ! -e "$DS_PROJECT_HOME/go" ]; '
       'do sleep 0.2; done')


def fail(msg: str) -> None:
    print(f"FAIL: {msg}")
    sys.exit(1)


def wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            fail(f"{what}: not reached in {timeout:g}s")
        time.sleep(0.1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docker", metavar="IMAGE", help="run the two jobs in containers of IMAGE")
    a = ap.parse_args()
    devices = [d for d in gpus.discover() or [] if not d.mig]
    print(f"NVML: {len(devices)} GPU(s): " + ", ".join(f"{d.uuid} ({d.name})" for d in devices))
    if len(devices) < 2:
        print("this check needs a machine with at least 2 GPUs (NVML found fewer)")
        return 2
    with tempfile.TemporaryDirectory(prefix="dsjobs-gpu-check-") as tmp:
        cfg = EngineConfig(data_dir=Path(tmp) / "data", max_concurrent_jobs=4, gpu_stats_interval_s=1.0)
        engine = build_engine(cfg).start()
        server, port = start_grpc(engine, "127.0.0.1:0")
        client = Client(f"127.0.0.1:{port}", token=engine.token)
        try:
            return check(client, Path(tmp) / "data" / "projects" / "gpucheck" / "home", a.docker)
        finally:
            client.close()
            server.stop(0).wait()
            engine.stop(stop_jobs=True)


def check(client: Client, home: Path, image: str | None) -> int:
    env = jpb.Environment(docker_image_spec=jpb.DockerImageSpec(image_url=image)) if image else jpb.Environment()
    params = jpb.JobParameters(cmd=JOB, cloud_instance_types=[jpb.CloudInstanceType(name="g1.1")],
                               attach_project_disk=True, env=env)
    ids, ops = [], []
    for _ in range(2):
        op = client.jobs.Create(spb.CreateProjectJobRequest(project_id="gpucheck", job_parameters=params))
        r = spb.CreateProjectJobResponse()
        op.response.Unpack(r)
        ids.append(r.job_id)
        ops.append(client.execute(r.job_id))
    logs: dict[str, list] = {j: [] for j in ids}

    def read(j):
        for resp in client.jobs.ReadLogs(spb.ReadProjectJobLogsRequest(job_id=j, offset=0)):
            logs[j].extend(resp.logs)
    for j in ids:
        threading.Thread(target=read, args=(j,), daemon=True).start()
    wait(lambda: all((home / f"up.{j}").exists() for j in ids), 600, "both jobs running at once")
    print("ok: both g1.1 jobs run side by side")

    def stats_rows(j):
        text = b"".join(m.content for m in logs[j] if m.file_path == ".gpu_stats.tsv").decode()
        return [ln for ln in text.splitlines()[1:] if ln.strip()]
    wait(lambda: all(stats_rows(j) for j in ids), 60, "a .gpu_stats.tsv row for each job")
    (home / "go").touch()
    for op in ops:
        while not op.done:
            time.sleep(0.2)
            op = client.get_operation(op.id)
        if op.HasField("error"):
            fail(f"a job failed: {op.error.message}")
    time.sleep(1)  # the log streams' last lines
    seen = []
    for j in ids:
        out = b"".join(m.content for m in logs[j] if m.WhichOneof("source") == "standard_stream"
                       and m.standard_stream == 1).decode()
        print(f"job {j}:\n  " + out.strip().replace("\n", "\n  "))
        visible = [ln.removeprefix("visible=") for ln in out.splitlines() if ln.startswith("visible=")]
        if len(visible) != 1 or not visible[0] or "," in visible[0]:
            fail(f"job {j} does not see exactly one GPU: {visible}")
        seen.append(visible[0])
        smi = [ln for ln in out.splitlines() if ln.startswith("smi: GPU")]
        if image and not smi:
            fail(f"job {j}: no `nvidia-smi -L` in the container of {image}: what it was given cannot be checked "
                 "(use an nvidia/cuda image with the NVIDIA Container Toolkit)")
        if smi and (len(smi) != 1 or visible[0] not in smi[0]):
            fail(f"job {j}: nvidia-smi -L shows {smi}, not only {visible[0]}")
        rows = stats_rows(j)
        if not all(visible[0] in r.split("\t")[2] for r in rows):
            fail(f"job {j}: .gpu_stats.tsv rows of another GPU: {rows[:2]}")
        print(f"  .gpu_stats.tsv: {len(rows)} row(s), e.g. {rows[0]!r}")
        if client.get(j).actual_cloud_instance_type.name != "g1.1":
            fail(f"job {j}: actual_cloud_instance_type is not g1.1")
    if seen[0] == seen[1]:
        fail(f"both jobs saw the same GPU {seen[0]}")
    print(f"ok: each job saw one GPU, different ones ({seen[0]}, {seen[1]}); stats rows streamed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
