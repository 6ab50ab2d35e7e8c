"""The job link's address on the file endpoint: /communities/<community>/projects/<project>/job/<job id>.

The official client prints that link after a job (as the cloud's UI has a page there). While the engine serves
its web UI (engine/ui/), the descriptor's ui_url makes the link point there, and this route sends links that still
name the file endpoint (an engine without the UI printed them, or a client found no descriptor) on to the page.
Without the UI it answers GET and HEAD with the job's status as one line of plain text, and nothing else: it is
served without a token (whoever has the link has the job's id, as the user who clicked it does), so it gives no
name, no logs, no files, and the same 404 for a job that does not exist and for one of another project or
community.
"""
from __future__ import annotations

import re

from engine.errors import NotFound
from engine.store import Store

# The path exactly, as it arrives (never percent-decoded, so an encoded `/` or `..` is no path of this route),
# with the ids as this engine makes them; a trailing slash is allowed.
_PATH = re.compile(r"/communities/([A-Za-z0-9_-]{1,64})/projects/([A-Za-z0-9][A-Za-z0-9_-]{0,63})"
                   r"/job/(ds[0-9a-v]{18})/?")
PREFIX = "/communities/"
ALLOW = (("Allow", "GET, HEAD"),)
# The status changes while the job runs; no browser or proxy should keep an old one, or read it as anything else.
HEADERS = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"))


class JobPage:
    def __init__(self, store: Store, community_id: str):
        self.store, self.community_id = store, community_id
        # Set while the engine serves its web UI (engine/app.py Engine.start_ui): the link then sends the browser
        # to the job's page there, where the token is asked for. Every link of the right form is sent on without
        # a look at the store, so the answer tells nothing (not even whether the job exists) to someone without
        # the token; the status line is for engines without the UI.
        self.ui_url = ""

    def status_line(self, path: str) -> str | None:
        """The page's text, or None when the path names no job of this engine's community and that project."""
        m = _PATH.fullmatch(path)
        if m is None or m.group(1) != self.community_id:
            return None
        project, job_id = m.group(2), m.group(3)
        try:
            job = self.store.get_job(job_id)
        except NotFound:
            return None
        if job.project_id != project:
            return None
        return f"job {job.id} (project {job.project_id}): {job.status.name}"

    def handle(self, h, method: str, parts: list[str], query: str) -> None:
        """A route of engine/files.py's FileServer (``h`` is its request handler)."""
        if method not in ("GET", "HEAD"):
            return h.reply_text(405, "method not allowed", ALLOW)
        path = "/".join(parts)
        m = _PATH.fullmatch(path)
        if self.ui_url and m is not None and m.group(1) == self.community_id:
            page = f"{self.ui_url}/communities/{m.group(1)}/projects/{m.group(2)}/job/{m.group(3)}"
            return h.reply_text(307, f"the job's page: {page}", HEADERS + (("Location", page),))
        text = self.status_line(path)
        if text is None:
            return h.reply_text(404, "not found", HEADERS)
        h.reply_text(200, text, HEADERS)
