"""Docker executor: a job runs in a container on the local Docker Engine (docker SDK).

The Docker Engine owns the container, so it outlives a crash of dsjobs; containers carry the labels
``dsjobs.job-id`` and ``dsjobs.project-id``, which is how a restarted engine finds them again. The container runs
with an init process (signals reach the job's whole process group, zombies are reaped), the job's working directory
bind-mounted at /job, and CPU and memory limits from the instance type.
"""
from __future__ import annotations

import logging
import os
import re
import shlex
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from runners.executors import stats
from runners.executors import supervisor as sv
from runners.executors.base import ExitResult, Executor, Handle, RunSpec
from runners.spec import Failure, FailureKind, JobFailure, StopRequest
from runners import journal
from runners.journal import printable

log = logging.getLogger(__name__)

JOB_DIR = "/job"
LABEL_JOB, LABEL_PROJECT = "dsjobs.job-id", "dsjobs.project-id"
# Runs cmd with bash when the image has it, else with sh; cmd arrives as $0 so it needs no quoting. Project secrets
# come on the container's stdin (never in a file, nor in the container's environment, which `docker inspect`
# shows), as shell lines the wrapper sources before the job starts with nothing on its stdin.
SHELL_WRAPPER = ('if [ -n "$DSJOBS_SECRETS_ON_STDIN" ]; then unset DSJOBS_SECRETS_ON_STDIN; . /dev/stdin; '
                 'exec </dev/null; fi; '
                 'if [ -x /bin/bash ]; then exec /bin/bash -c "$0"; else exec /bin/sh -c "$0"; fi')


def secrets_script(secrets: dict[str, str], note) -> bytes:
    """Project secrets as shell lines for the wrapper; names that are not shell variable names are skipped, said."""
    lines = []
    for name, value in secrets.items():
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            lines.append(f"export {name}={shlex.quote(value)}\n")
        else:
            note(f"secret {name!r} is not exported in a container: its name is not a shell variable name")
    return "".join(lines).encode()


CONTAINER_PROGRESS = "/dsjobs/progress"
CONTAINER_PROJECT_HOME = "/dsjobs/project"


def gpu_request(uuids: list[str]):
    from docker.types import DeviceRequest
    return DeviceRequest(device_ids=list(uuids), capabilities=[["gpu"]])


TOOLKIT = "NVIDIA Container Toolkit"


def gpu_failure(e: BaseException, cs: "ContainerSpec") -> Optional[JobFailure]:
    """A start that failed because the Docker Engine cannot give containers GPUs, said as such."""
    text = str(getattr(e, "explanation", "") or e)
    if not cs.gpus or "could not select device driver" not in text:
        return None
    return JobFailure(FailureKind.UNSUPPORTED, (
        f"instance type {cs.instance or '?'} needs GPUs ({', '.join(cs.gpus)}) and the Docker Engine cannot give a "
        f"container GPUs: the {TOOLKIT} (package nvidia-container-toolkit, whose nvidia-container-runtime-hook "
        f"must be on dockerd's PATH when dockerd starts) is not installed on this host ({text}); install it and "
        "restart dockerd, or run the job without env.docker (a process job is given its GPUs by "
        "CUDA_VISIBLE_DEVICES)"))


def job_path_mapper(table: list[tuple[str, str]]):
    """Host path -> the path a container sees, from (host dir, dir inside) pairs; other paths are unchanged."""
    def to_job(p: str) -> str:
        for host, inside in table:
            if p == host or p.startswith(host + "/"):
                return inside + p[len(host):]
        return p
    return to_job


@dataclass(frozen=True)
class Network:
    name: str
    why: str


NETWORK = "dsjobs"  # a bridge network of dsjobs's own: containers on it have no route to the host's loopback
_NETWORKS: dict[str, Network] = {}
_NETWORKS_MU = threading.Lock()


def job_network(dc, wanted: str) -> Network:
    """The Docker network for ``wanted``: ``auto`` is a user-defined bridge that the engine creates once where the
    Docker Engine can make one (outside access as the cloud gives it, no way to the engine on 127.0.0.1), else
    ``none``; ``host`` only when asked for; any other value is an existing network's name."""
    if wanted == "host":
        return Network("host", "the host's network, as asked for: the job can reach services on the host's "
                               "loopback, the engine included (which still needs a token)")
    if wanted == "none":
        return Network("none", "no network, as asked for")
    if wanted != "auto":
        return Network(wanted, "the Docker network the engine was told to use")
    with _NETWORKS_MU:
        if "auto" not in _NETWORKS:
            import docker.errors
            try:
                found = dc.networks.list(names=[NETWORK])
                if not [n for n in found if n.name == NETWORK]:
                    dc.networks.create(NETWORK, driver="bridge", labels={"dsjobs": "1"})
                _NETWORKS["auto"] = Network(NETWORK, "a bridge network of dsjobs's own: outside access, no route "
                                                     "to the host's loopback")
            except docker.errors.APIError as e:
                _NETWORKS["auto"] = Network("none", f"no network: the Docker Engine cannot make a bridge network "
                                                    f"here ({e.explanation or e})")
        return _NETWORKS["auto"]


def capped(cpus: float, memory_bytes: int, note, name: str) -> tuple[float, int]:
    """An instance type's CPU and memory, capped at what this machine has (and said so)."""
    ncpu, mem = os.cpu_count() or 1, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    c, m = min(cpus, ncpu), min(memory_bytes, mem)
    if c < cpus or m < memory_bytes:
        note(f"instance type {name} ({cpus:g} vCPU, {memory_bytes / (1 << 30):g} GB) capped at what this machine "
             f"has: {c:g} CPU(s), {m / (1 << 30):.1f} GB")
    return c, m


def client():
    import docker
    try:
        c = docker.from_env(timeout=60)
        c.ping()
        return c
    except Exception as e:  # noqa: BLE001 - any failure to reach the daemon reads the same to a user
        raise JobFailure(FailureKind.SERVICE_UNAVAILABLE, f"the Docker Engine is not reachable "
                         f"({e.__class__.__name__}: {e}); start dockerd or set DOCKER_HOST") from None


def ensure_image(dc, url: str, username: str = "", password: str = "", note=lambda m: None,
                 timeout_s: float = 1800.0) -> None:
    """Use the image if present, pull it otherwise (with credentials when given), within ``timeout_s``.
    The password is never logged."""
    import docker.errors
    try:
        dc.images.get(url)
        return
    except docker.errors.ImageNotFound:
        pass
    note(f"pulling image {url}" + (f" as {username}" if username else ""))
    repo, tag = _split(url)
    auth = {"username": username, "password": password} if username or password else None
    outcome: list = []

    def pull():
        try:
            dc.images.pull(repo, tag=tag, auth_config=auth)
            outcome.append(None)
        except Exception as e:  # noqa: BLE001 - handed to the waiting thread
            outcome.append(e)
    t = threading.Thread(target=pull, daemon=True, name="dsjobs-pull")
    t.start()
    t.join(timeout_s)
    if not outcome:
        raise JobFailure(FailureKind.DEADLINE, f"pulling image {url} took longer than its limit of {timeout_s:g}s")
    try:
        if outcome[0] is not None:
            raise outcome[0]
    except docker.errors.APIError as e:
        text = str(e.explanation or e)
        if password:
            text = text.replace(password, "***")
        hint = "check the image name and the registry's address"
        low = text.lower()
        if "denied" in low or "unauthorized" in low or "authentication" in low or "no basic auth" in low:
            hint = "the registry wants credentials: set docker username and a project secret holding the password"
        raise JobFailure(FailureKind.IMAGE_UNAVAILABLE, f"cannot pull image {url}: {text} ({hint})") from None


def _split(url: str) -> tuple[str, str]:
    if "@" in url:
        return url, None
    slash = url.rfind("/")
    colon = url.rfind(":")
    if colon > slash:
        return url[:colon], url[colon + 1:]
    return url, "latest"


@dataclass
class ContainerSpec:
    image: str
    job_id: str
    project_id: str
    binds: dict[str, dict] = field(default_factory=dict)  # host path -> {"bind": path, "mode": "rw"|"ro"}
    user: Optional[str] = None
    network: str = "host"
    cpus: Optional[float] = None
    memory_bytes: Optional[int] = None
    secrets: bytes = field(default=b"", repr=False)  # secrets_script(); sent on stdin, kept nowhere
    gpus: list[str] = field(default_factory=list)  # device UUIDs (NVML's) the container is given
    instance: str = ""  # the instance type, for messages


_DOCKER_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def docker_time(text) -> Optional[float]:
    """A Docker Engine time (RFC 3339 with nanoseconds, "2026-12-02T02:33:45.123456789Z") as a Unix time; None
    for none (Docker's zero time, "0001-01-01T00:00:00Z", is none too)."""
    import calendar
    m = _DOCKER_TIME.match(text or "")
    if not m or m.group(1).startswith("0001-"):
        return None
    secs = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")) + float(m.group(2) or 0)
    if m.group(3) != "Z":
        sign = 1 if m.group(3)[0] == "+" else -1
        secs -= sign * (int(m.group(3)[1:3]) * 3600 + int(m.group(3)[4:6]) * 60)
    return secs


@dataclass
class DockerHandle(Handle):
    run_dir: str
    container_id: str
    stop: Optional[StopRequest] = None
    threads: list = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    started_at: Optional[float] = None  # when this executor started it (not known for an adopted container)


class DockerExecutor(Executor):
    name = "docker"
    STATS_INTERVAL_S = 3.0

    def __init__(self):
        self._client = None
        self._mu = threading.Lock()

    @property
    def dc(self):
        with self._mu:
            if self._client is None:
                self._client = client()
            return self._client

    def start(self, spec: RunSpec) -> DockerHandle:
        cs: ContainerSpec = spec.container
        env = dict(spec.env)
        if cs.secrets:
            env["DSJOBS_SECRETS_ON_STDIN"] = "1"
        container = self.dc.containers.create(
            cs.image, command=["/bin/sh", "-c", SHELL_WRAPPER, spec.argv[-1]], working_dir=JOB_DIR,
            environment=env, labels={LABEL_JOB: cs.job_id, LABEL_PROJECT: cs.project_id}, init=True,
            network_mode=cs.network, user=cs.user, volumes=cs.binds, tty=False,
            # With secrets: an open stdin that closes after our one send (docker-py sets StdinOnce only when the
            # container is not "detached", which for a create means nothing else).
            stdin_open=bool(cs.secrets), detach=not cs.secrets,
            cap_drop=["NET_RAW"],  # no forged packets (to the host's loopback, say), whatever the host's sysctls
            nano_cpus=int(cs.cpus * 1e9) if cs.cpus else None, mem_limit=cs.memory_bytes or None,
            memswap_limit=cs.memory_bytes or None,
            # Exactly the job's GPUs, by UUID (never Count with DeviceIDs: the daemon refuses both).
            device_requests=[gpu_request(cs.gpus)] if cs.gpus else None,
        )
        sv.write_atomic(os.path.join(spec.run_dir, "container"), {"id": container.id}, durable=False)
        # What a restarted engine needs to go on copying the logs and to keep the job's deadline (same keys as the
        # process executor's spec).
        sv.write_atomic(os.path.join(spec.run_dir, "spec"), {
            "journal": spec.journal, "stdout": spec.stdout, "stderr": spec.stderr,
            "log_limit_bytes": spec.log_limit_bytes, "max_duration_s": spec.max_duration_s,
            "deadline_stop": spec.deadline_stop.as_dict()}, durable=False)
        sock = self.dc.api.attach_socket(container.id, params={"stdin": 1, "stream": 1}) if cs.secrets else None
        try:
            container.start()
        except Exception as e:  # noqa: BLE001 - the container is not left behind in Created
            if sock is not None:
                sock.close()
            try:
                container.remove(force=True)
            except Exception:  # noqa: BLE001
                pass
            raise gpu_failure(e, cs) or e
        if sock is not None:
            raw = getattr(sock, "_sock", sock)
            try:
                raw.sendall(cs.secrets)
            finally:
                raw.close()  # the end of stdin (StdinOnce): the wrapper has them all
                sock.close()
        h = DockerHandle(spec.run_dir, container.id, started_at=time.time())  # its deadline counts from here
        self._follow(h, spec, since=None)
        if spec.max_duration_s:
            self._arm_deadline(h, spec.max_duration_s, spec.deadline_stop, cs.job_id)
        return h

    def _arm_deadline(self, h: DockerHandle, seconds: float, request: StopRequest, job_id: str) -> None:
        def deadline():
            if not h.done.wait(max(0.0, seconds)):
                self.stop(h, request)
        threading.Thread(target=deadline, daemon=True, name=f"dsjobs-deadline-{job_id}").start()

    def _follow(self, h: DockerHandle, spec: RunSpec, since: Optional[float]) -> None:
        """Copy the container's stdout and stderr (one thread each) into the job's logs, and sample its stats."""
        sink = sv.LogSink(spec.journal, spec.stdout, spec.stderr, spec.log_limit_bytes)
        mu = threading.Lock()
        left = [2]

        def pump(stream: int):
            try:
                kw = {"since": since} if since else {}
                for chunk in self.dc.api.logs(h.container_id, stdout=stream == journal.Stream.STDOUT,
                                              stderr=stream == journal.Stream.STDERR, stream=True, follow=True, **kw):
                    with mu:
                        sink.feed(stream, chunk)
                        failed = sink.failed
                    if failed and h.stop is None:  # a full disk under the logs: the job ends with that error
                        self.stop(h, StopRequest(9, 0.0, failed, kind="storage"))
            except Exception as e:  # noqa: BLE001 - a broken stream must not hide the exit status
                with mu:
                    sink.system(f"log stream from the container ended: {e}")
            finally:
                with mu:
                    left[0] -= 1
                    if left[0] == 0:
                        sink.flush_partial()
                        sink.close()

        for stream in (journal.Stream.STDOUT, journal.Stream.STDERR):
            t = threading.Thread(target=pump, args=(stream,), daemon=True, name="dsjobs-docker-logs")
            t.start()
            h.threads.append(t)
        stats.start(spec.run_dir, spec.journal, h.done, self.STATS_INTERVAL_S, lambda: self._stats(h.container_id))

    def _stats(self, cid: str) -> Optional[stats.Sample]:
        try:
            s = self.dc.api.stats(cid, stream=False)
        except Exception:  # noqa: BLE001 - the container may have just ended
            return None
        try:
            cpu = s["cpu_stats"]
            pre = s["precpu_stats"]
            cpu_delta = cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
            sys_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
            ncpu = cpu.get("online_cpus") or 1
            pct = (cpu_delta / sys_delta) * ncpu * 100 if sys_delta > 0 else 0.0
            mem = s.get("memory_stats", {})
            rd = wr = 0
            for e in (s.get("blkio_stats", {}).get("io_service_bytes_recursive") or []):
                if e.get("op", "").lower() == "read":
                    rd += e.get("value", 0)
                elif e.get("op", "").lower() == "write":
                    wr += e.get("value", 0)
            pids = s.get("pids_stats", {}).get("current", 0)
            nets = s.get("networks")  # absent with network "none"
            rx = sum(n.get("rx_bytes", 0) for n in nets.values()) if nets else None
            tx = sum(n.get("tx_bytes", 0) for n in nets.values()) if nets else None
            return pct, mem.get("usage", 0), mem.get("limit", 0), rd, wr, pids, rx, tx
        except (KeyError, TypeError, ZeroDivisionError):
            return None

    def started_at(self, handle: DockerHandle) -> Optional[float]:
        return handle.started_at

    def adopt(self, run_dir: str, job_id: str) -> Optional[DockerHandle]:
        import docker.errors
        info = sv.read_file(os.path.join(run_dir, "container"))
        try:
            if isinstance(info, dict):
                c = self.dc.containers.get(info["id"])
            else:
                found = self.dc.containers.list(all=True, filters={"label": f"{LABEL_JOB}={job_id}"})
                if not found:
                    return None
                c = found[0]
        except docker.errors.NotFound:
            return None
        # When the container started (the Docker Engine's clock, this machine's): the job's recorded start, and
        # what its deadline still counts from after this engine's restart.
        h = DockerHandle(run_dir, c.id, started_at=docker_time((c.attrs.get("State") or {}).get("StartedAt")))
        spec = sv.read_file(os.path.join(run_dir, "spec"))
        if isinstance(spec, dict):
            last = journal.last_output_time(spec["journal"])
            rs = RunSpec(job_id=job_id, run_dir=run_dir, argv=[], cwd="", env={}, journal=spec["journal"],
                         stdout=spec["stdout"], stderr=spec["stderr"], log_limit_bytes=spec.get("log_limit_bytes", 0))
            self._follow(h, rs, last)
            limit, stop = spec.get("max_duration_s"), spec.get("deadline_stop")
            if limit and isinstance(stop, dict):
                ran = time.time() - h.started_at if h.started_at else 0.0
                self._arm_deadline(h, float(limit) - ran, StopRequest.from_dict(stop), job_id)
        return h

    def wait(self, handle: DockerHandle, timeout: Optional[float] = None) -> Optional[ExitResult]:
        import docker.errors
        import requests
        api = self.dc.api  # the low-level client: no extra inspect per call on the way to the exit status
        try:
            res = api.wait(handle.container_id, timeout=timeout) if timeout else api.wait(handle.container_id)
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            return None
        except docker.errors.NotFound:
            handle.done.set()
            return ExitResult(None, failure=Failure(FailureKind.RUNNER_LOST, "the job's container disappeared"))
        handle.done.set()
        for t in handle.threads:
            t.join(10)
        code = res.get("StatusCode")
        note = None
        # The Docker Engine learns of an OOM kill from an event of its own, which may come after the exit it
        # answered `wait` with: a SIGKILL nobody here sent is asked about again for a moment before it is no OOM.
        tries = 10 if code == 137 and handle.stop is None else 1
        for i in range(tries):
            try:
                if api.inspect_container(handle.container_id)["State"].get("OOMKilled"):
                    note = "the container was killed: out of memory (the instance type's memory limit)"
                    break
            except docker.errors.NotFound:
                break
            if i + 1 < tries:
                time.sleep(0.1)
        sig = code - 128 if code and code > 128 else None
        if handle.stop is not None and handle.stop.kind == "storage":
            return ExitResult(code, signal=sig, stopped=handle.stop, note=note or "",
                              failure=Failure(FailureKind.NO_SPACE, handle.stop.reason))
        return ExitResult(code, signal=sig, stopped=handle.stop, note=note or "")

    def stop(self, handle: DockerHandle, request: StopRequest) -> None:
        import docker.errors
        if handle.stop is not None and not request.forced:
            return  # already stopping; only a forced stop changes anything
        handle.stop = request
        sig = 9 if request.grace_s <= 0 else request.signal
        try:
            # Through the init process, which forwards the signal to the job's process group.
            self.dc.api.kill(handle.container_id, signal=int(sig))
        except docker.errors.APIError:
            return
        if sig != 9:
            def escalate():
                if not handle.done.wait(request.grace_s):
                    try:
                        self.dc.api.kill(handle.container_id, signal=9)
                    except docker.errors.APIError:
                        pass
            threading.Thread(target=escalate, daemon=True, name="dsjobs-docker-kill").start()

    def cleanup(self, handle: DockerHandle) -> None:
        import docker.errors
        try:
            self.dc.api.remove_container(handle.container_id, force=True)
        except docker.errors.APIError:
            pass


_PYTHONS: dict[str, list[str]] = {}


def image_pythons(dc, image: str) -> list[str]:
    """The python3.X interpreters an image has (major.minor), looked up once per image id."""
    image_id = dc.api.inspect_image(image)["Id"]
    if image_id not in _PYTHONS:
        script = ("for d in /usr/local/bin /usr/bin /bin /opt/conda/bin; do ls $d 2>/dev/null; done | "
                  "grep -E '^python3\\.[0-9]+$' | sort -u")
        out = dc.containers.run(image, ["/bin/sh", "-c", script], remove=True, network_mode="none",
                                stdout=True, stderr=False)
        _PYTHONS[image_id] = sorted({x[len("python"):] for x in out.decode().split()},
                                    key=lambda v: tuple(map(int, v.split("."))))
    return _PYTHONS[image_id]


def build_env_in_image(dc, image: str, version: str, env_dir: str, spec, log, timeout_s: float,
                       network: str = "none") -> None:
    """Build a venv with the image's own Python, inside a container; ``env_dir`` is bind-mounted at the same path,
    so the env's absolute paths are valid both for the builder and for the jobs that mount it later. Index
    settings go in the container's environment, not on its command line (which every local user can read)."""
    import shlex as _sh
    env = {"PIP_CONFIG_FILE": "/dev/null", "PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    if spec.index_url:
        env["PIP_INDEX_URL"] = spec.index_url
    if spec.extra_index_urls:
        env["PIP_EXTRA_INDEX_URL"] = " ".join(spec.extra_index_urls)
    if spec.trusted_hosts:
        env["PIP_TRUSTED_HOST"] = " ".join(spec.trusted_hosts)
    steps = [f"python{version} -m venv {_sh.quote(env_dir)}"]
    if spec.requirements:
        reqs = " ".join(_sh.quote(r) for r in spec.requirements)
        steps.append(f"{_sh.quote(env_dir)}/bin/python -m pip install --no-input "
                     f"{'--no-deps ' if spec.no_deps else ''}{reqs}")
    script = "set -e; " + "; ".join(steps)
    log(f"$ {script}")
    c = dc.containers.run(image, ["/bin/sh", "-c", script], detach=True, network_mode=network,
                          volumes={env_dir: {"bind": env_dir, "mode": "rw"}}, environment=env,
                          labels={"dsjobs.env-build": "1"})
    tail: list[str] = []
    try:
        deadline = time.monotonic() + timeout_s
        for line in c.logs(stream=True, follow=True):
            for text in line.decode(errors="replace").splitlines():
                tail.append(text)
                del tail[:-40]
                log("  " + printable(text))  # package code's output, indented
            if time.monotonic() > deadline:
                break
        try:
            code = c.wait(timeout=max(1.0, deadline - time.monotonic()))["StatusCode"]
        except Exception:  # noqa: BLE001 - read timeout: the build overran its limit
            c.kill()
            raise JobFailure(FailureKind.DEADLINE, f"environment build took longer than its limit of {timeout_s:g}s") \
                from None
    finally:
        c.remove(force=True)
    if code != 0:
        raise JobFailure(FailureKind.ENV_BUILD_FAILED, "environment build in the image failed:\n" + "\n".join(tail[-20:]))
