"""Docker benchmark, in one run: a no-op job in a container through the API vs a bare `docker run --rm IMAGE true`."""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb  # noqa: E402
from tests.conftest import Server  # noqa: E402
from tests.dockerenv import shell_image  # noqa: E402
from tests.helpers import run  # noqa: E402

N = 20


def main():
    image = shell_image()
    bare, api = [], []
    with tempfile.TemporaryDirectory() as tmp:
        s = Server(Path(tmp) / "data")
        try:
            params = lambda: jpb.JobParameters(cmd="true", env=jpb.Environment(  # noqa: E731
                docker_image_spec=jpb.DockerImageSpec(image_url=image)))
            run(s.client, params())  # warm-up
            subprocess.run(["docker", "run", "--rm", "--network", "host", image, "true"], check=True)
            for _ in range(N):  # interleaved, so both see the same machine
                t = time.perf_counter()
                subprocess.run(["docker", "run", "--rm", "--init", "--network", "host", image, "true"], check=True,
                               capture_output=True)
                bare.append(time.perf_counter() - t)
                t = time.perf_counter()
                _, op = run(s.client, params())
                assert not op.HasField("error"), op.error.message
                api.append(time.perf_counter() - t)
        finally:
            s.stop()
    res = {"bare_docker_run_ms": statistics.median(bare) * 1e3, "api_job_in_container_ms": statistics.median(api) * 1e3}
    res["overhead_percent"] = (res["api_job_in_container_ms"] / res["bare_docker_run_ms"] - 1) * 100
    out = Path(__file__).parent / "results" / "docker.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"| median of {N} | time |\n|---|---|\n"
          f"| bare `docker run --rm --init IMAGE true` | {res['bare_docker_run_ms']:.0f} ms |\n"
          f"| no-op job in a container through the API (Create, Execute, wait) | {res['api_job_in_container_ms']:.0f} ms |\n"
          f"\nthe engine adds {res['overhead_percent']:.0f}% to the bare run")


if __name__ == "__main__":
    main()
