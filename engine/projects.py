"""Projects, as far as a local engine has them (ProjectService.Get and List).

The cloud's projects are made in its console; here a project exists through what names it: its jobs, its secrets
(``dsjobs secret set --project P``) or its project disk (``attach-project-disk``). All are in one community,
``EngineConfig.community_id`` ("local"), the one the official client puts in a job's link.
"""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from engine.config import EngineConfig
from engine.errors import FailedPrecondition, InvalidArgument, NotFound
from engine.ids import PROJECT_RE, check_project
from engine.resources import Secrets
from engine.store import Store

DEFAULT_PAGE, MAX_PAGE = 100, 1000  # the official request allows page_size 0-1000
MAX_TOKEN = 100  # the official request's page_token is at most 100 characters
MAX_PATTERN = 1000


@dataclass(frozen=True)
class Project:
    id: str
    created_at: float


class Projects:
    def __init__(self, cfg: EngineConfig, store: Store, secrets: Secrets):
        self.cfg, self.store, self.secrets = cfg, store, secrets

    def _known(self) -> dict[str, float]:
        """Every project this engine has something of -> when it was first used."""
        rows = self.store.projects_created()
        resources = dict(self.secrets.projects())
        try:
            for d in (self.cfg.data_dir / "projects").iterdir():
                home = d / "home"
                if home.is_dir() and not home.is_symlink():
                    t = home.lstat().st_mtime
                    resources[d.name] = min(t, resources.get(d.name, t))
        except FileNotFoundError:
            pass
        # A project with jobs has had its row since its first Create (a data dir of an older engine may lack it).
        found = {p: rows.get(p) or self._first_seen(p, time.time()) for p in self.store.project_ids_with_jobs()}
        for p, t in resources.items():
            # A directory name is only a project when it is an id (or one an older engine stored).
            if p not in found and (PROJECT_RE.fullmatch(p) or p in rows):
                found[p] = rows.get(p) or self._first_seen(p, t)
        return found

    def _first_seen(self, project_id: str, t: float) -> float:
        """Kept from now on, so that the project's created_at does not move when its resources change; a store
        that cannot take it (a full disk) does not keep anyone from reading."""
        try:
            return self.store.note_project(project_id, t)
        except (sqlite3.Error, OSError):
            return t

    def get(self, project_id: str) -> Project:
        check_project("project_id", project_id, self.store.has_project)
        known = self._known()
        if project_id not in known:
            raise NotFound(f"project {project_id!r} is not known to this engine: it has no jobs, secrets or project "
                           "disk (a local project exists once a job names it)")
        return Project(project_id, known[project_id])

    def list(self, community_id: str, page_size: int, page_token: str, name_pattern: str = "",
             owned_by_id: str = "") -> tuple[list[Project], str]:
        """A page of the community's projects by id, and the next page's token (the last id given: projects that
        appear meanwhile neither shift nor repeat a page)."""
        if not community_id:
            raise InvalidArgument("community_id is empty")
        if not 0 <= page_size <= MAX_PAGE:
            raise InvalidArgument(f"page_size {page_size} is out of range (0-{MAX_PAGE})")
        if len(page_token) > MAX_TOKEN or (page_token and not PROJECT_RE.fullmatch(page_token)
                                           and not self.store.has_project(page_token)):
            raise InvalidArgument(f"page_token {page_token[:60]!r} is not a token this server issued")
        if len(name_pattern) > MAX_PATTERN:
            raise InvalidArgument(f"project_name_pattern is longer than {MAX_PATTERN} characters")
        if owned_by_id:
            raise FailedPrecondition(f"owned_by_id {owned_by_id[:60]!r}: a local engine does not record who owns a "
                                     "project; leave it empty")
        if community_id != self.cfg.community_id:
            # As the cloud answers for a community one has no projects in that it cannot show: not there.
            raise NotFound(f"community_id {community_id[:60]!r} is not a community of this engine: its projects "
                           f"are all in community {self.cfg.community_id!r}")
        pattern, known = name_pattern.lower(), self._known()
        ids = sorted(p for p in known if p > page_token and pattern in p.lower())  # a name is its project's id
        size = page_size or DEFAULT_PAGE
        page = [Project(p, known[p]) for p in ids[:size]]
        return page, page[-1].id if len(ids) > size else ""
