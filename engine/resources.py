"""Project secrets and image ids: the local stand-ins for DataSphere's project resources (files in the data dir)."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from engine.errors import FailedPrecondition, InvalidArgument
from engine.ids import check_made, check_project, check_secret_name, path_safe

def write_private(path: Path, text: str) -> None:
    """Atomically, readable by the owner only (its directory made, 0700, when the CLI registers something before
    the engine's first start)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class Secrets:
    """data_dir/secrets/<project>/<NAME>, each file readable by its owner only (directories 0700); registry
    passwords sent in the clear with a job are kept here too, under .jobs/<job id>, and nowhere else."""

    def __init__(self, data_dir: Path):
        self.root = Path(data_dir) / "secrets"

    def _dir(self, project: str) -> Path:
        if not path_safe(project):
            raise InvalidArgument(f"project {project!r} cannot have secrets (not a valid project id)")
        return self.root / project

    def _path(self, project: str, name: str) -> Path:
        check_project("project", project)
        return self._dir(project) / check_secret_name(name)

    def _write(self, p: Path, value: str) -> None:
        self.root.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # before the engine's first start
        self.root.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.root, 0o700)
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(p, value)

    def set(self, project: str, name: str, value: str) -> None:
        self._write(self._path(project, name), value)

    def get(self, project: str, name: str) -> str:
        try:
            if not path_safe(name):  # names an older engine accepted (with a '.') stay readable
                raise FileNotFoundError(name)
            return self._dir(project).joinpath(name).read_text()
        except (FileNotFoundError, InvalidArgument):
            raise FailedPrecondition(f"project {project!r} has no secret {name!r} "
                                     f"(dsjobs secret set --project {project} {name})") from None

    def all(self, project: str) -> dict[str, str]:
        if not path_safe(project):
            return {}
        d = self.root / project
        if not d.is_dir():
            return {}
        return {p.name: p.read_text() for p in sorted(d.iterdir()) if p.is_file() and not p.name.startswith(".")}

    def remove(self, project: str, name: str) -> None:
        self._path(project, name).unlink(missing_ok=True)

    def projects(self) -> dict[str, float]:
        """Projects that have a secret -> when their oldest secret was written."""
        out = {}
        try:
            dirs = [d for d in self.root.iterdir() if not d.name.startswith(".") and d.is_dir()
                    and not d.is_symlink()]
        except FileNotFoundError:
            return out
        for d in dirs:
            times = [p.lstat().st_mtime for p in d.iterdir() if not p.name.startswith(".") and p.is_file()
                     and not p.is_symlink()]
            if times:
                out[d.name] = min(times)
        return out

    SA_TOKEN = ".sa_token"  # a dot name: never exported as an environment variable, listed or removed by name

    def set_sa_token(self, project: str, value: str) -> None:
        """The project's service-account token: each job gets it in the file SA_TOKEN_FILENAME names."""
        check_project("project", project)
        if not value.strip():
            raise InvalidArgument("the service account token is empty")
        self._write(self._dir(project) / self.SA_TOKEN, value.strip())

    def sa_token(self, project: str) -> str:
        if not path_safe(project):
            return ""
        try:
            return (self.root / project / self.SA_TOKEN).read_text()
        except FileNotFoundError:
            return ""

    def remove_sa_token(self, project: str) -> None:
        check_project("project", project)
        (self._dir(project) / self.SA_TOKEN).unlink(missing_ok=True)

    def set_job_password(self, job_id: str, value: str) -> None:
        self._write(self.root / ".jobs" / check_made("job_id", job_id, "ds"), value)

    def job_password(self, job_id: str) -> str:
        try:
            return (self.root / ".jobs" / check_made("job_id", job_id, "ds")).read_text()
        except FileNotFoundError:
            raise FailedPrecondition(f"the registry password of job {job_id!r} is gone (its data was deleted)") \
                from None

    def remove_job_password(self, job_id: str) -> None:
        (self.root / ".jobs" / check_made("job_id", job_id, "ds")).unlink(missing_ok=True)


class Images:
    """docker_image_resource_id -> a local image, in data_dir/images.json."""

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / "images.json"

    def all(self) -> dict[str, str]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}

    def _write(self, data: dict) -> None:
        write_private(self.path, json.dumps(data, indent=1, sort_keys=True))

    def add(self, image_id: str, image: str) -> None:
        if not image_id or not image:
            raise InvalidArgument("an image id and an image are required")
        data = self.all()
        data[image_id] = image
        self._write(data)

    def remove(self, image_id: str) -> None:
        data = self.all()
        data.pop(image_id, None)
        self._write(data)

    def resolve(self, image_id: str) -> str:
        image = self.all().get(image_id)
        if image is None:
            raise FailedPrecondition(f"docker_image_resource_id {image_id!r} is not known to this engine "
                                     f"(map it to a local image: dsjobs image add {image_id} IMAGE)")
        return image


RESOURCE_ID_RE = re.compile(r"[0-9a-z]{20}")


class Directories:
    """Resource id -> a local directory: S3 mounts (``dsjobs mount add``) and datasets (``dsjobs dataset add``).
    A job refers to them as ``${<id>}``, as the cloud's client sends them."""

    def __init__(self, data_dir: Path, kind: str):
        self.kind = kind
        self.path = Path(data_dir) / f"{kind}s.json"

    def all(self) -> dict[str, dict]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}

    def add(self, rid: str, directory: str | Path, own: bool = False, **meta) -> None:
        """Register ``directory`` (the user's choice, resolved) for ``rid``; ``own``: one the engine made from a
        job's output, kept exactly where it is and refused if it is a symlink."""
        if not RESOURCE_ID_RE.fullmatch(rid):
            raise InvalidArgument(f"{self.kind} id {rid!r} must be a resource id: 20 characters of [0-9a-z]")
        d = Path(directory) if own else Path(directory).resolve()
        if not d.is_dir() or (own and d.is_symlink()):
            raise InvalidArgument(f"{self.kind} {rid}: {str(d)!r} is not a directory")
        data = self.all()
        data[rid] = {"dir": str(d), **meta}
        write_private(self.path, json.dumps(data, indent=1, sort_keys=True))

    def remove(self, rid: str) -> None:
        data = self.all()
        data.pop(rid, None)
        write_private(self.path, json.dumps(data, indent=1, sort_keys=True))

    def add_s3(self, rid: str, url: str, access_key_secret: str = "AWS_ACCESS_KEY_ID",
               secret_key_secret: str = "AWS_SECRET_ACCESS_KEY", region: str = "us-east-1") -> Path:
        """An S3 mount backed by a bucket (``url`` = ENDPOINT/BUCKET[/PREFIX]): a directory of the engine's own
        (data_dir/s3/<id>) that the bucket's objects are copied into before each job that mounts it; the keys are
        the job's project secrets of these names."""
        if not RESOURCE_ID_RE.fullmatch(rid):
            raise InvalidArgument(f"{self.kind} id {rid!r} must be a resource id: 20 characters of [0-9a-z]")
        endpoint, bucket, prefix = parse_s3_url(url)
        for what, name in (("--access-key-secret", access_key_secret), ("--secret-key-secret", secret_key_secret)):
            try:
                check_secret_name(name)
            except InvalidArgument as e:
                raise InvalidArgument(f"s3 mount {rid}: {what}: {e.message}") from None
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # before the engine's first start
        d = self.path.parent / "s3" / rid
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = self.all()
        data[rid] = {"dir": str(d), "s3": {"endpoint": endpoint, "bucket": bucket, "prefix": prefix,
                                           "region": region, "access_key_secret": access_key_secret,
                                           "secret_key_secret": secret_key_secret}}
        write_private(self.path, json.dumps(data, indent=1, sort_keys=True))
        return d

    def s3(self, rid: str) -> dict | None:
        entry = self.all().get(rid)
        return entry.get("s3") if entry else None

    def resolve(self, rid: str) -> str:
        entry = self.all().get(rid)
        if entry is None or not os.path.isdir(entry["dir"]):
            raise FailedPrecondition(f"{self.kind} {rid!r} is not registered on this engine "
                                     f"(dsjobs {self.kind} add {rid} DIR)")
        return entry["dir"]


def parse_s3_url(url: str) -> tuple[str, str, str]:
    """ENDPOINT/BUCKET[/PREFIX] -> (endpoint, bucket, prefix)."""
    from urllib.parse import urlsplit
    u = urlsplit(url or "")
    parts = [p for p in u.path.split("/") if p]
    if u.scheme not in ("http", "https") or not u.netloc or not parts:
        raise InvalidArgument(f"--s3 {url!r}: expected ENDPOINT/BUCKET[/PREFIX], e.g. "
                              "https://storage.yandexcloud.net/my-bucket or http://127.0.0.1:9000/my-bucket/data")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", parts[0]):
        raise InvalidArgument(f"--s3 {url!r}: {parts[0]!r} is not a bucket name (3-63 of [a-z0-9.-])")
    prefix = "/".join(parts[1:])
    return f"{u.scheme}://{u.netloc}", parts[0], prefix + "/" if prefix else ""


CONNECTOR_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class SparkConnectors:
    """spark_parameters.connector_id -> a local Spark (``dsjobs spark add ID [--conf k=v ...]``), in
    data_dir/spark.json: the job gets the connection config the official SDK's ``connect_to_spark()`` reads."""

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / "spark.json"

    def all(self) -> dict[str, dict]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}

    def add(self, connector_id: str, conf: dict[str, str]) -> None:
        if not CONNECTOR_ID_RE.fullmatch(connector_id or ""):
            raise InvalidArgument(f"spark connector id {connector_id!r} must be 1-64 characters of "
                                  "[A-Za-z0-9._-], starting with a letter or digit")
        for k, v in conf.items():
            if not k or not isinstance(v, str) or "\x00" in k + v:
                raise InvalidArgument(f"spark connector {connector_id}: --conf {k!r}={v!r} is not a KEY=VALUE "
                                      "pair of strings")
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # before the engine's first start
        data = self.all()
        data[connector_id] = {"conf": dict(conf)}
        write_private(self.path, json.dumps(data, indent=1, sort_keys=True))

    def remove(self, connector_id: str) -> None:
        data = self.all()
        data.pop(connector_id, None)
        write_private(self.path, json.dumps(data, indent=1, sort_keys=True))

    def resolve(self, connector_id: str) -> dict[str, str]:
        entry = self.all().get(connector_id)
        if entry is None:
            raise FailedPrecondition(f"spark_parameters.connector_id {connector_id!r} is not known to this engine "
                                     f"(register a local Spark for it: dsjobs spark add {connector_id})")
        return dict(entry.get("conf") or {})
