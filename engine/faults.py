"""The cloud's failures, injected: which faults a job gets (its env var DSJOBS_FAULTS, over its project's setting
``dsjobs fault set PROJECT SPEC``), kept in DATA_DIR/faults/<project> (0600). What each fault does on a machine is
runners/faults.py's; upload URLs and log streams are the engine's own (engine/jobs.py)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from engine.errors import InvalidArgument
from engine.ids import check_project
from engine.resources import write_private
from runners.spec import FAULTS_VAR, FaultSpec, parse_faults


def check(field: str, text: str) -> FaultSpec:
    """A fault list, or INVALID_ARGUMENT naming the field, the value and the fault that is not one."""
    try:
        return parse_faults(text)
    except ValueError as e:
        raise InvalidArgument(f"{field} {text[:200]!r}: {e}") from None


class ProjectFaults:
    def __init__(self, data_dir: Path):
        self.root = Path(data_dir) / "faults"

    def _path(self, project: str) -> Path:
        return self.root / check_project("project", project)

    def set(self, project: str, text: str) -> FaultSpec:
        spec = check("fault spec", text)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(self._path(project), spec.text)
        return spec

    def clear(self, project: str) -> bool:
        try:
            os.unlink(self._path(project))
            return True
        except FileNotFoundError:
            return False

    def get(self, project: str) -> str:
        try:
            return self._path(project).read_text().strip()
        except (FileNotFoundError, InvalidArgument, NotADirectoryError):
            return ""

    def all(self) -> dict[str, str]:
        try:
            return {p.name: p.read_text().strip() for p in sorted(self.root.iterdir()) if p.is_file()}
        except FileNotFoundError:
            return {}

    def of(self, project: str, env_vars: Optional[dict]) -> FaultSpec:
        """The job's faults: the project's, then the job's own (a later value of a fault wins)."""
        own = (env_vars or {}).get(FAULTS_VAR, "")
        text = ",".join(x for x in (self.get(project), own) if x)
        try:
            return parse_faults(text)
        except ValueError:  # a project file edited by hand: the job's own list alone (it was checked at Create)
            return check(f"env.vars[{FAULTS_VAR}]", own)
