"""`dsjobs replay JOB_ID [--from ENDPOINT]`: a job that ran in the cloud (or on another dsjobs), run again here with
the same parameters, and the two runs compared side by side.

1. Credentials, as the official client finds them (datasphere/auth.py), for the real cloud, never from the command
   line (every local user can read it): an IAM token (``$YC_IAM_TOKEN``, ``--iam-token-file``) as is; an OAuth
   token (``$YC_TOKEN``, ``$YC_OAUTH_TOKEN``, ``--oauth-token-file``)
   exchanged for one (one gRPC call, ``IamTokenService.Create`` on iam.api.cloud.yandex.net:443, TLS); else the
   ``yc`` profile (``--profile`` or its current one, ~/.config/yandex-cloud/config.yaml): its OAuth ``token``
   exchanged the same way, its ``service-account-key`` as a PS256 JWT (PyJWT and cryptography), a federated profile
   through ``yc iam create-token`` (only yc does the browser sign-in). Against another dsjobs: ``--token-file``.
2. The job: ProjectJobService.Get (config, job parameters, instance type, env, status, details), then
   DownloadJobFiles for its outputs, logs and diagnostics. A job whose data was cleared is refused.
3. Its inputs, found here by sha256 (the current dir and the paths its config names, ``--inputs DIR``, dsjobs's blob
   store); each one missing or changed is named with its path, var, size and digest, and nothing runs.
4. Secrets: those its cmd reads that are neither env vars nor args (``$NAME``, ``${NAME}``), and its registry
   password's, from dsjobs's secrets store for the job's project; missing ones are named, and nothing runs.
5. The run here (an engine in this process), with the same parameters and the instance type that ran there, then
   the report: return code, status, the last lines of stderr and the system log, outputs by name with size and
   sha256 (same / differs / only there / only here), durations (``--format json`` for the same as JSON).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

CLOUD_ENDPOINT = "datasphere.api.cloud.yandex.net:443"
IAM_ENDPOINT = "iam.api.cloud.yandex.net:443"
CLIENT_VERSION = ("x-client-version", "datasphere=0.10.0")
JWT_AUDIENCE = "https://iam.api.cloud.yandex.net/iam/v1/tokens"
TAIL = 20
WELL_KNOWN_ENV = {"HOME", "PATH", "PWD", "USER", "SHELL", "TMPDIR", "LANG", "LC_ALL", "DS_PROJECT_HOME",
                  "JOB_PROGRESS_FILENAME", "JOB_DATAPROC_CONNECTION_CONFIG", "VIRTUAL_ENV", "PYTHONPATH",
                  "CUDA_VISIBLE_DEVICES", "RANDOM", "SECONDS", "OLDPWD", "IFS", "BASH_SOURCE", "LINENO"}


class ReplayError(Exception):
    """The replay cannot go on; the message says why and what to do (exit status 2)."""


# --- 1. credentials -------------------------------------------------------------------------------------------------

def _iam_messages():
    """CreateIamTokenRequest and CreateIamTokenResponse (yandex.cloud.iam.v1), the two fields of each dsjobs uses,
    in a descriptor pool of their own: encoded by protobuf itself, without shipping the IAM protos or yandexcloud."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    F = descriptor_pb2.FieldDescriptorProto
    f = descriptor_pb2.FileDescriptorProto(name="dsjobs/iam_token.proto", package="yandex.cloud.iam.v1",
                                           syntax="proto3")
    req = f.message_type.add(name="CreateIamTokenRequest")
    req.oneof_decl.add(name="identity")
    for number, name in ((1, "yandex_passport_oauth_token"), (2, "jwt")):
        req.field.add(name=name, number=number, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL, oneof_index=0)
    resp = f.message_type.add(name="CreateIamTokenResponse")
    resp.field.add(name="iam_token", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return tuple(message_factory.GetMessageClass(pool.FindMessageTypeByName(f"yandex.cloud.iam.v1.{n}"))
                 for n in ("CreateIamTokenRequest", "CreateIamTokenResponse"))


def create_iam_token_request(*, oauth: str = "", jwt: str = "") -> bytes:
    """yandex.cloud.iam.v1.CreateIamTokenRequest, encoded (field 1: yandex_passport_oauth_token, 2: jwt)."""
    request, _ = _iam_messages()
    return (request(yandex_passport_oauth_token=oauth) if oauth else request(jwt=jwt)).SerializeToString()


def parse_iam_token_response(data: bytes) -> str:
    """CreateIamTokenResponse.iam_token (field 1) from its encoding."""
    from google.protobuf.message import DecodeError
    _, response = _iam_messages()
    try:
        token = response.FromString(data).iam_token
    except DecodeError:
        raise ReplayError("the IAM service answered something that is not a CreateIamTokenResponse") from None
    if not token:
        raise ReplayError("the IAM service answered without an IAM token")
    return token


def exchange(request: bytes, channel_factory: Optional[Callable] = None, endpoint: str = IAM_ENDPOINT) -> str:
    """The one call the official client makes: IamTokenService.Create, no auth metadata, TLS to ``endpoint``."""
    import grpc
    channel = channel_factory() if channel_factory else grpc.secure_channel(endpoint, grpc.ssl_channel_credentials())
    try:
        call = channel.unary_unary("/yandex.cloud.iam.v1.IamTokenService/Create")
        return parse_iam_token_response(call(request, timeout=30))
    except grpc.RpcError as e:
        raise ReplayError(f"the IAM token exchange with {endpoint} failed: {e.code().name}: {e.details()}") from None
    finally:
        channel.close()


def yc_profile(name: Optional[str] = None, path: Optional[Path] = None) -> tuple[str, dict]:
    """(profile name, its settings) of the yc CLI's config."""
    import yaml
    path = path or Path(os.environ.get("YC_CONFIG_PATH") or Path.home() / ".config" / "yandex-cloud" / "config.yaml")
    try:
        d = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ReplayError(f"no credentials: no $YC_IAM_TOKEN, --iam-token-file, $YC_TOKEN, $YC_OAUTH_TOKEN or "
                          f"--oauth-token-file, and no yc profile ({path} does not exist; `yc init` makes one)") from None
    name = name or d.get("current") or "default"
    profile = (d.get("profiles") or {}).get(name)
    if not isinstance(profile, dict):
        raise ReplayError(f"yc profile {name!r} is not in {path} (it has: {', '.join(d.get('profiles') or {})})")
    return name, profile


def sa_jwt(key: dict, now: Optional[float] = None) -> str:
    """The PS256 JWT a service account's authorized key signs (as yandexcloud and yc make it)."""
    try:
        import jwt as pyjwt
    except ImportError:
        raise ReplayError("a service-account-key profile needs PyJWT and cryptography (pip install pyjwt "
                          "cryptography), or use `yc iam create-token` and $YC_IAM_TOKEN") from None
    now = int(now if now is not None else time.time())
    return pyjwt.encode({"iss": key["service_account_id"], "aud": JWT_AUDIENCE, "iat": now, "exp": now + 3600},
                        key["private_key"], algorithm="PS256", headers={"kid": key["id"]})


def _token_file(path: str, flag: str) -> str:
    try:
        with open(path) as f:
            token = f.read().strip()
    except OSError as e:
        raise ReplayError(f"{flag} {path}: {e.strerror or e}") from None
    if not token:
        raise ReplayError(f"{flag} {path} is empty")
    return token


def iam_token(a, env=os.environ, channel_factory: Optional[Callable] = None,
              run: Callable = subprocess.run) -> tuple[str, str]:
    """(IAM token, where it came from), in the official client's order (a file option after its env var)."""
    if env.get("YC_IAM_TOKEN"):
        return env["YC_IAM_TOKEN"], "IAM token"
    if getattr(a, "iam_token_file", None):
        return _token_file(a.iam_token_file, "--iam-token-file"), "IAM token"
    oauth = env.get("YC_TOKEN") or env.get("YC_OAUTH_TOKEN")
    if not oauth and getattr(a, "oauth_token_file", None):
        oauth = _token_file(a.oauth_token_file, "--oauth-token-file")
    if oauth:
        return exchange(create_iam_token_request(oauth=oauth), channel_factory), "OAuth token exchange"
    name, profile = yc_profile(getattr(a, "profile", None))
    if profile.get("token"):
        return exchange(create_iam_token_request(oauth=profile["token"]), channel_factory), \
            f"yc profile {name} (OAuth token exchange)"
    if profile.get("service-account-key"):
        return exchange(create_iam_token_request(jwt=sa_jwt(profile["service-account-key"])), channel_factory), \
            f"yc profile {name} (service account key)"
    try:
        r = run(["yc", "iam", "create-token", "--no-user-output", "--profile", name], capture_output=True,
                text=True, timeout=300)
    except FileNotFoundError:
        raise ReplayError(f"yc profile {name} has neither a token nor a service account key, and `yc` is not on "
                          "PATH to sign in with it (federated accounts need yc)") from None
    token = (r.stdout.strip().splitlines() or [""])[-1]
    if r.returncode != 0 or not token:
        raise ReplayError(f"`yc iam create-token --profile {name}` failed: {r.stderr.strip()[-500:]}")
    return token, f"yc profile {name} (yc iam create-token)"


# --- 2. the job there -----------------------------------------------------------------------------------------------

def _connect(a):
    from dsjobs.client import Client
    source = a.source
    if a.source_token_file:
        token, how = Path(a.source_token_file).read_text().strip(), f"token file {a.source_token_file}"
    else:
        token, how = iam_token(a)
    return Client(source, token=token, tls=not a.insecure, ca_file=a.ca_file), how


def _zip_digest(path: Path) -> str:
    """A directory output's content (names and bytes, not the archive's timestamps)."""
    h = hashlib.sha256()
    with zipfile.ZipFile(path) as z:
        for info in sorted(z.infolist(), key=lambda i: i.filename):
            if not info.is_dir():
                h.update(info.filename.encode() + b"\0" + hashlib.sha256(z.read(info)).digest())
    return h.hexdigest()


@dataclass
class Side:
    where: str
    status: str = ""
    status_details: str = ""
    return_code: Optional[int] = None
    instance_type: str = ""
    duration_s: Optional[float] = None
    stderr_tail: list = field(default_factory=list)
    system_log_tail: list = field(default_factory=list)
    outputs: dict = field(default_factory=dict)  # path -> {size, sha256, content}


STATUS = {0: "UNSPECIFIED", 1: "CREATING", 2: "EXECUTING", 3: "UPLOADING_OUTPUT", 4: "SUCCESS", 5: "ERROR",
          6: "CANCELLED", 7: "CANCELLING", 8: "PREPARING"}


def _rc_from_details(details: str) -> Optional[int]:
    m = re.search(r"(?:return|exit)(?:ed)? (?:with )?code (-?\d+)", details or "", re.I)
    return int(m.group(1)) if m else None


def _duration(job) -> Optional[float]:
    if job.started_at.seconds and job.finished_at.seconds:
        return round((job.finished_at.seconds + job.finished_at.nanos / 1e9)
                     - (job.started_at.seconds + job.started_at.nanos / 1e9), 3)
    return None


def _fetch(client, job, into: Path) -> dict[str, Path]:
    """The job's outputs, logs and diagnostics, each downloaded as is (no unpacking): desc.path -> local file."""
    import requests
    from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
    files = list(job.output_files) + list(job.log_files) + list(job.diagnostic_files)
    if not files:
        return {}
    r = client.jobs.DownloadJobFiles(spb.DownloadProjectJobFilesRequest(job_id=job.id, files=files),
                                     metadata=[CLIENT_VERSION], timeout=60)
    out = {}
    for i, f in enumerate(r.download_files):
        dest = into / f"{i}-{Path(f.file.desc.path).name}"
        with requests.get(f.url, stream=True, verify=client.verify, timeout=60) as resp:
            resp.raise_for_status()
            with open(dest, "wb") as w:
                for chunk in resp.iter_content(1 << 20):
                    w.write(chunk)
        out[f.file.desc.path] = dest
    return out


def _tail(path: Optional[Path], n: int = TAIL) -> list:
    if path is None or not path.exists():
        return []
    return path.read_text(errors="replace").splitlines()[-n:]


def _outputs(files, local: dict[str, Path]) -> dict:
    out = {}
    for f in files:
        p = local.get(f.desc.path)
        content = f.sha256
        if p is not None and f.compression_type == 2:
            content = _zip_digest(p)
        out[f.desc.path] = {"size": f.size_bytes, "sha256": f.sha256, "content": content,
                            "directory": f.compression_type == 2}
    return out


# --- 3. inputs here -------------------------------------------------------------------------------------------------

def _sha(path: Path) -> tuple[str, int]:
    from dsjobs.client import _sha256_size
    return _sha256_size(str(path))


def find_inputs(job, dirs: list[Path], blobs: Optional[Path], tmp: Path) -> tuple[dict, list, list]:
    """({sha256: local file}, missing, changed): every input and local module of the job, by digest."""
    from dsjobs.client import zip_path
    p = job.job_parameters
    wanted = list(p.input_files) + (list(p.env.python_env.local_modules) if p.env.HasField("python_env") else [])
    found, missing, changed = {}, [], []
    index: Optional[dict] = None
    for f in wanted:
        if f.sha256 in found:
            continue
        candidates = []
        for d in [Path.cwd(), *dirs]:
            q = Path(f.desc.path) if os.path.isabs(f.desc.path) else d / f.desc.path
            if q.exists():
                candidates.append(q)
        hit, seen = None, []
        for q in candidates:
            if q.is_dir() or f.compression_type == 2:
                z = tmp / f"in-{f.sha256[:16]}.zip"
                try:
                    zip_path(q, str(z))  # as the official client zips it
                except OSError:
                    continue
                q = z
            sha, size = _sha(q)
            if sha == f.sha256:
                hit = q
                break
            seen.append({"path": str(candidates[len(seen)]), "sha256": sha, "size": size})
        if hit is None and blobs is not None:
            b = blobs / "objects" / f.sha256[:2] / f.sha256[2:]
            if b.is_file():
                hit = b
        if hit is None and dirs:
            if index is None:  # every file of --inputs, by digest
                index = {}
                for d in dirs:
                    for q in d.rglob("*"):
                        if q.is_file():
                            index.setdefault(_sha(q)[0], q)
            hit = index.get(f.sha256)
        item = {"path": f.desc.path, "var": f.desc.var, "size": f.size_bytes, "sha256": f.sha256}
        if hit is not None:
            found[f.sha256] = hit
        elif seen:
            changed.append({**item, "here": seen})
        else:
            missing.append(item)
    return found, missing, changed


def needed_secrets(job) -> list[str]:
    """What the job reads from project secrets, as far as its parameters show it."""
    p = job.job_parameters
    defined = set(p.env.vars) | {a.name for a in p.arguments} | {f.desc.var for f in p.input_files} | \
        {d.var for d in p.output_files} | set(p.s3_mount_ids) | set(p.dataset_ids) | WELL_KNOWN_ENV
    names = []
    for m in re.finditer(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", p.cmd):
        n = m.group(1)
        if n not in defined and not n.startswith("DSJOBS_") and n not in names:
            names.append(n)
    if p.env.HasField("docker_image_spec") and p.env.docker_image_spec.password_ds_secret_name:
        names.append(p.env.docker_image_spec.password_ds_secret_name)
    return names


# --- 4. the run here, and the report ---------------------------------------------------------------------------------

def _run_here(job, found: dict, data_dir: Path, sandbox: str, timeout: float, tmp: Path, secrets: dict) -> Side:
    from dsjobs.api import EmbeddedEngine
    from dsjobs.client import OperationFailed
    from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
    from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
    from engine.errors import FailedPrecondition
    from engine.resources import Secrets
    try:
        eng = EmbeddedEngine(data_dir, sandbox=sandbox)
    except FailedPrecondition:  # a server holds it: a data dir of this replay's own, with the secrets it needs
        eng = EmbeddedEngine(tmp / "engine", sandbox=sandbox)
        for name, value in secrets.items():
            Secrets(tmp / "engine").set(job.project_id, name, value)
    c = eng.client
    try:
        params = jpb.JobParameters()
        params.CopyFrom(job.job_parameters)
        if job.actual_cloud_instance_type.name:  # the type that ran there, and its limits
            del params.cloud_instance_types[:]
            params.cloud_instance_types.append(jpb.CloudInstanceType(name=job.actual_cloud_instance_type.name))
        if timeout:
            params.env.vars["DSJOBS_MAX_DURATION"] = f"{timeout:g}"
        op = c.jobs.Create(spb.CreateProjectJobRequest(project_id=job.project_id, job_parameters=params,
                                                       config=job.config, name=f"replay of {job.id}"))
        op = c.wait_operation(op)
        resp = spb.CreateProjectJobResponse()
        op.response.Unpack(resp)
        c.upload(list(resp.upload_files), {sha: str(p) for sha, p in found.items()})
        try:
            c.wait_operation(c.execute(resp.job_id), poll_s=0.05)
        except OperationFailed:
            pass  # the job's own error: in the report
        here = c.get(resp.job_id)
        files = _fetch(c, here, tmp / "here")
        logs = {Path(k).name: v for k, v in files.items() if k.startswith("job_logs/")}
        side = Side("here", STATUS[here.status], here.status_details, None, here.actual_cloud_instance_type.name,
                    _duration(here), _tail(logs.get("stderr.txt")), _tail(logs.get("system.log")),
                    _outputs(here.output_files, files))
        side.return_code = _rc_from_details(here.status_details) if here.status != 4 else 0
        side.job_id = here.id  # type: ignore[attr-defined]
        return side
    finally:
        eng.close()


def compare(there: Side, here: Side) -> list[dict]:
    rows = []
    for path in sorted(set(there.outputs) | set(here.outputs)):
        a, b = there.outputs.get(path), here.outputs.get(path)
        verdict = "only there" if b is None else "only here" if a is None else \
            "same" if a["content"] == b["content"] else "differs"
        rows.append({"path": path, "verdict": verdict, "there": a, "here": b})
    return rows


def _print(report: dict) -> None:
    t, h = report["there"], report["here"]
    w = 34
    print(f"replay of job {report['job_id']} (project {report['project_id']}) from {report['source']}")
    for label, key in (("status", "status"), ("return code", "return_code"), ("instance type", "instance_type"),
                       ("duration, s", "duration_s"), ("status details", "status_details")):
        print(f"  {label:15} {str(t.get(key, '')) if t.get(key) is not None else '-':{w}} "
              f"{str(h.get(key)) if h.get(key) is not None else '-'}")
    print("  outputs:")
    for r in report["outputs"]:
        a, b = r["there"], r["here"]
        fmt = (lambda x: f"{x['size']} B {x['sha256'][:12]}" if x else "-")
        print(f"    {r['path']:30} {r['verdict']:10} there {fmt(a):24} here {fmt(b)}")
    for label, key in (("stderr", "stderr_tail"), ("system log", "system_log_tail")):
        for side, d in (("there", t), ("here", h)):
            print(f"  last lines of {label}, {side}:")
            for line in d[key] or ["(empty)"]:
                print(f"    | {line}")


def main(a) -> int:
    from engine.config import default_data_dir
    from engine.resources import Secrets
    data_dir = Path(a.data_dir) if a.data_dir else default_data_dir()
    tmp_ctx = tempfile.TemporaryDirectory(prefix="dsjobs-replay-")
    tmp = Path(a.keep) if a.keep else Path(tmp_ctx.name)
    (tmp / "there").mkdir(parents=True, exist_ok=True)
    (tmp / "here").mkdir(parents=True, exist_ok=True)
    import grpc
    try:
        try:
            client, how = _connect(a)
        except ReplayError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        try:
            from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
            job = client.jobs.Get(spb.GetProjectJobRequest(job_id=a.job_id), metadata=[CLIENT_VERSION], timeout=60)
            if job.status not in (4, 5, 6):
                print(f"error: job {a.job_id} is {STATUS[job.status]} at {a.source}: replay a finished job",
                      file=sys.stderr)
                return 2
            if job.data_cleared:
                print(f"error: job {a.job_id}: its data was cleared at {a.source} (its inputs, outputs and logs are "
                      "gone there), so it cannot be replayed: nothing is guessed. Run it again from its config "
                      "(`dsjobs run -c`) with your current inputs", file=sys.stderr)
                return 2
            there_files = _fetch(client, job, tmp / "there")
        except grpc.RpcError as e:
            print(f"error: {a.source}: {e.code().name}: {e.details()}", file=sys.stderr)
            return 2
        finally:
            client.close()
        logs = {Path(k).name: v for k, v in there_files.items() if k.startswith("job_logs/") or
                Path(k).name in ("stderr.txt", "system.log", "stdout.txt")}
        there = Side(a.source, STATUS[job.status], job.status_details,
                     0 if job.status == 4 else _rc_from_details(job.status_details),
                     job.actual_cloud_instance_type.name, _duration(job), _tail(logs.get("stderr.txt")),
                     _tail(logs.get("system.log")), _outputs(job.output_files, there_files))
        blobs = data_dir / "blobs"
        found, missing, changed = find_inputs(job, [Path(d) for d in a.inputs], blobs if blobs.is_dir() else None,
                                              tmp)
        secrets_store = Secrets(data_dir)
        secrets, no_secret = {}, []
        for name in needed_secrets(job):
            try:
                secrets[name] = secrets_store.get(job.project_id, name)
            except Exception:  # noqa: BLE001 - not in the store
                no_secret.append(name)
        problems = []
        for m in missing:
            problems.append(f"input {m['path']}{' (var ' + m['var'] + ')' if m['var'] else ''}: not found here "
                            f"({m['size']} bytes, sha256 {m['sha256']}); give its directory with --inputs DIR")
        for ch in changed:
            heres = "; ".join(f"{x['path']} is {x['size']} bytes, sha256 {x['sha256']}" for x in ch["here"])
            problems.append(f"input {ch['path']}{' (var ' + ch['var'] + ')' if ch['var'] else ''} changed: the job "
                            f"had {ch['size']} bytes, sha256 {ch['sha256']}; here {heres}")
        for name in no_secret:
            problems.append(f"secret {name}: not in dsjobs's secrets store for project {job.project_id} "
                            f"(dsjobs secret set --project {job.project_id} {name})")
        if problems:
            if a.format == "json":
                print(json.dumps({"job_id": job.id, "source": a.source, "ran": False, "problems": problems,
                                  "missing_inputs": missing, "changed_inputs": changed,
                                  "missing_secrets": no_secret}, indent=2))
            else:
                print(f"job {job.id} cannot be replayed here as it ran at {a.source}:", file=sys.stderr)
                for p in problems:
                    print(f"  - {p}", file=sys.stderr)
            return 2
        here = _run_here(job, found, data_dir, a.sandbox, a.timeout, tmp, secrets)
        report = {"job_id": job.id, "project_id": job.project_id, "source": a.source, "credentials": how,
                  "ran": True, "local_job_id": getattr(here, "job_id", ""),
                  "there": asdict(there), "here": asdict(here), "outputs": compare(there, here)}
        report["same"] = (there.status == here.status and there.return_code == here.return_code
                          and all(r["verdict"] == "same" for r in report["outputs"]))
        if a.format == "json":
            print(json.dumps(report, indent=2))
        else:
            _print(report)
            print("same outcome and outputs" if report["same"] else "the runs differ")
        return 0 if report["same"] else 1
    finally:
        if not a.keep:
            tmp_ctx.cleanup()
        else:
            shutil.rmtree(Path(tmp_ctx.name), ignore_errors=True)
