"""Project secrets and image ids: the local stand-ins for DataSphere's project resources (files in the data dir)."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from engine.errors import FailedPrecondition, InvalidArgument

NAME_RE = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


class Secrets:
    """data_dir/secrets/<project>/<NAME>, each file readable by its owner only."""

    def __init__(self, data_dir: Path):
        self.root = Path(data_dir) / "secrets"

    def _path(self, project: str, name: str) -> Path:
        for what, v in (("project", project), ("secret name", name)):
            if not NAME_RE.fullmatch(v):
                raise InvalidArgument(f"{what} {v!r} is not valid ([A-Za-z0-9_.-], up to 128)")
        return self.root / project / name

    def set(self, project: str, name: str, value: str) -> None:
        p = self._path(project, name)
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        tmp = p.with_name(f".{p.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value)
        os.replace(tmp, p)

    def get(self, project: str, name: str) -> str:
        try:
            return self._path(project, name).read_text()
        except FileNotFoundError:
            raise FailedPrecondition(f"project {project!r} has no secret {name!r} "
                                     f"(dsjobs secret set --project {project} {name})") from None

    def all(self, project: str) -> dict[str, str]:
        d = self.root / project
        if not NAME_RE.fullmatch(project) or not d.is_dir():
            return {}
        return {p.name: p.read_text() for p in sorted(d.iterdir()) if p.is_file() and not p.name.startswith(".")}

    def remove(self, project: str, name: str) -> None:
        self._path(project, name).unlink(missing_ok=True)


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
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

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

    def add(self, rid: str, directory: str | Path, **meta) -> None:
        if not RESOURCE_ID_RE.fullmatch(rid):
            raise InvalidArgument(f"{self.kind} id {rid!r} must be a resource id: 20 characters of [0-9a-z]")
        d = Path(directory).resolve()
        if not d.is_dir():
            raise InvalidArgument(f"{self.kind} {rid}: {str(d)!r} is not a directory")
        data = self.all()
        data[rid] = {"dir": str(d), **meta}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def remove(self, rid: str) -> None:
        data = self.all()
        data.pop(rid, None)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def resolve(self, rid: str) -> str:
        entry = self.all().get(rid)
        if entry is None or not os.path.isdir(entry["dir"]):
            raise FailedPrecondition(f"{self.kind} {rid!r} is not registered on this engine "
                                     f"(dsjobs {self.kind} add {rid} DIR)")
        return entry["dir"]
