"""The job pages' routes, over the job service: what the API's calls mean is what the pages show and do (a cancel
here is JobService.cancel, the gRPC Cancel's own method; a download is DownloadJobFiles' file).

    /communities/<c>/projects                      the projects
    /communities/<c>/projects/<p>                  a project's jobs, newest first, paged, by status
    /communities/<c>/projects/<p>/job/<id>         a job (the link the official client prints)
    /communities/<c>/projects/<p>/job/<id>/log     its log, page by page
    /communities/<c>/projects/<p>/job/<id>/cancel  POST
    /communities/<c>/projects/<p>/job/<id>/files/<kind>/<path>  an output, log or diagnostic file
    /jobs/<id>                                     -> the job's page (what `dsjobs ui JOB_ID` opens)
    /api/jobs/<id>, /events, /log?page=N, /stats   its status, stream, log pages and resource stats
"""
from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, \
    Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from engine.errors import EngineError, FailedPrecondition, InvalidArgument, NotFound
from engine.ids import PROJECT_RE
from engine.model import File, FileDesc
from engine.ui import logindex, sse, views
from engine.ui.auth import Gate, GateMiddleware, local_path
from runners import journal
from runners.fsops import read_regular

HERE = Path(__file__).parent
JOB_RE = re.compile(r"ds[0-9a-v]{18}")
PAGE_SIZE = 50
STATS_TAIL = 2 << 20  # of each stats file: ~10 hours of samples every 3 s
DOWNLOAD_CHUNK = 1 << 20  # Starlette reads 64 KiB at a time by default: 5x slower (research: 204 vs 1243 MiB/s)
# No inline script anywhere (the page's data is in data- attributes); inline styles are the ANSI colours.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
# In the order a job goes through them
STATUS_NAMES = ["CREATING", "PREPARING", "EXECUTING", "UPLOADING_OUTPUT", "SUCCESS", "ERROR", "CANCELLING",
                "CANCELLED"]


class Ui:
    def __init__(self, jobs, community: str, stopping: threading.Event):
        self.jobs, self.community, self.stopping = jobs, community, stopping
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                                      trim_blocks=True, lstrip_blocks=True)
        self.env.globals.update(community=community, status_names=STATUS_NAMES, quote=quote)

    def render(self, name: str, **ctx) -> str:
        return self.env.get_template(name).render(**ctx)

    # --- lookups -------------------------------------------------------------------------------------------

    def job_in(self, request: Request):
        """The job a page's path names: its community, project and id all this engine's, else 404 (one answer
        for every wrong part, as the file endpoint's job link has)."""
        p = request.path_params
        if p["community"] != self.community or not PROJECT_RE.fullmatch(p["project"]) or \
                not JOB_RE.fullmatch(p["job_id"]):
            raise NotFound("no such job")
        try:
            job = self.jobs.get(p["job_id"])
        except NotFound:
            job = None
        if job is None or job.project_id != p["project"]:
            raise NotFound("no such job")
        return job

    def job_by_id(self, request: Request):
        job_id = request.path_params["job_id"]
        if not JOB_RE.fullmatch(job_id):
            raise NotFound("no such job")
        return self.jobs.get(job_id)

    def page_url(self, job) -> str:
        return f"/communities/{self.community}/projects/{job.project_id}/job/{job.id}"

    def html(self, request: Request, name: str, status: int = 200, **ctx) -> HTMLResponse:
        ctx.setdefault("user", request.state.user)
        return HTMLResponse(self.render(name, csrf=request.state.csrf, **ctx), status_code=status)

    # --- pages ---------------------------------------------------------------------------------------------

    def root(self, request: Request):
        return RedirectResponse(f"/communities/{self.community}/projects", 303)

    def projects(self, request: Request):
        if request.path_params["community"] != self.community:
            raise NotFound(f"community {request.path_params['community']!r} is not this engine's")
        token = request.query_params.get("after", "")
        page, nxt = self.jobs.projects.list(self.community, 100, token)
        return self.html(request, "projects.html", projects=[(p.id, views.when(p.created_at)) for p in page],
                         next=nxt)

    def job_list(self, request: Request):
        if request.path_params["community"] != self.community:
            raise NotFound(f"community {request.path_params['community']!r} is not this engine's")
        project = request.path_params["project"]
        if not PROJECT_RE.fullmatch(project):
            raise NotFound("no such project")
        chosen = [s for s in request.query_params.getlist("status") if s]
        bad = [s for s in chosen if s not in STATUS_NAMES]
        if bad:
            raise InvalidArgument(f"unknown status {bad[0][:40]!r}: one of {', '.join(STATUS_NAMES)}")
        try:
            page_no = int(request.query_params.get("page", "0"))
            if not 0 <= page_no < 1 << 24:
                raise ValueError
        except ValueError:
            raise InvalidArgument(f"page {request.query_params.get('page', '')[:40]!r} is not a page number") \
                from None
        flt = f"status IN ({', '.join(chosen)})" if chosen else ""
        jobs, nxt = self.jobs.list(project, PAGE_SIZE, str(page_no * PAGE_SIZE) if page_no else "", flt)
        rows = [{"id": j.id, "name": j.name, "status": j.status.name, "instance": views.instance_type(j),
                 "started": views.when(j.started_at), "created": views.when(j.created_at),
                 "duration": views.duration(j), "rc": "" if j.return_code is None else j.return_code,
                 "url": self.page_url(j)} for j in jobs]

        def link(n: int) -> str:
            return "?" + urlencode([("status", s) for s in chosen] + ([("page", n)] if n else []))
        return self.html(request, "jobs.html", project=project, rows=rows, chosen=chosen, page_no=page_no,
                         prev=link(page_no - 1) if page_no else "", next=link(page_no + 1) if nxt else "")

    def job_page(self, request: Request):
        job = self.job_in(request)
        if request.query_params.get("part") == "files":
            return self.html(request, "files.html", job=job, files=views.files(job), url=self.page_url(job))
        index = logindex.of(self.jobs.journal(job.id))
        state = views.status_of(job, self.jobs.progress(job.id))
        parent = None
        if job.parent_job_id:
            try:
                parent = self.jobs.get(job.parent_job_id)
            except NotFound:
                parent = None
        return self.html(request, "job.html", job=job, state=state, url=self.page_url(job),
                         timeline=views.timeline(job), params=views.parameters(job), files=views.files(job),
                         config=views.shown_config(job.config), pages=index.pages(),
                         parent=(job.parent_job_id, self.page_url(parent) if parent else ""),
                         when=views.when)

    def log_page(self, request: Request):
        job = self.job_in(request)
        return self.html(request, "log.html", job=job, url=self.page_url(job))

    def by_id(self, request: Request):
        return RedirectResponse(self.page_url(self.job_by_id(request)), 303)

    def cancel(self, request: Request):
        job = self.job_in(request)
        form = dict(parse_qsl(request.state.body.decode("latin-1")))
        graceful = form.get("graceful") == "1" and job.params.graceful_shutdown is not None
        if form.get("confirm") != "yes":
            return self.html(request, "cancel.html", job=job, url=self.page_url(job), graceful=graceful)
        try:
            self.jobs.cancel(job.id, "cancelled from the job page", graceful)
        except FailedPrecondition as e:
            return self.html(request, "error.html", 409, title="Not cancelled", message=e.message,
                             back=self.page_url(job))
        return RedirectResponse(self.page_url(job), 303)

    def download(self, request: Request):
        job = self.job_in(request)
        kind, name = request.path_params["kind"], request.path_params["name"]
        listed = {"output": job.output_files, "log": job.log_files, "diagnostic": job.diagnostic_files}.get(kind)
        if listed is None:
            raise NotFound(f"no file kind {kind[:20]!r}: output, log or diagnostic")
        match = next((f for f in listed if (f.desc.path or f.desc.var) == name), None)
        if match is None:
            raise NotFound(f"job {job.id} has no {kind} file {name[:200]!r}")
        # What DownloadJobFiles hands out (a log enters the blob store on its first download); the page streams
        # it itself, to name it: a browser keeps the download attribute only for a link of the page's own origin.
        got = self.jobs.download_urls(job.id, [File(desc=FileDesc(path=match.desc.path, var=match.desc.var),
                                                    sha256=match.sha256)])[0].file
        path = self.jobs.blobs.path(got.sha256)
        if not Path(path).is_file():
            raise FailedPrecondition(f"the file {name!r} is no longer stored (its data may have been deleted)")
        base = name.rsplit("/", 1)[-1] + (".zip" if got.compression_type == "ZIP" else "")
        r = FileResponse(path, filename=base, media_type="application/octet-stream")
        r.chunk_size = DOWNLOAD_CHUNK
        return r

    # --- data for the page's script ------------------------------------------------------------------------

    def api_job(self, request: Request):
        job = self.job_by_id(request)
        return JSONResponse(views.status_of(job, self.jobs.progress(job.id)))

    def api_log(self, request: Request):
        """One page of the journal: its records (stdout, stderr, system), and which pages there are."""
        job = self.job_by_id(request)
        index = logindex.of(self.jobs.journal(job.id))
        raw = request.query_params.get("page", "-1")
        try:
            n = int(raw)
        except ValueError:
            raise InvalidArgument(f"page {raw[:40]!r} is not a page number (negative: from the last)") from None
        pages = index.pages()
        if not -pages <= n < pages:
            raise InvalidArgument(f"page {n}: the log has {pages} page(s) (0 to {pages - 1}, or -1 for the last)")
        n = n % pages
        start = index.page_start(n)
        records, end = journal.read(self.jobs.journal(job.id), start, logindex.PAGE)
        return JSONResponse({"page": n, "pages": pages, "start": start, "end": end, "size": index.end,
                             "status": job.status.name,
                             "r": [[r.stream, round(r.created_at, 3), r.content.decode("utf-8", "replace")]
                                   for r in records if r.stream in sse.SHOWN]})

    def api_stats(self, request: Request):
        """The job's resource samples so far (the stream brings the next ones), at most their last 2 MiB."""
        job = self.job_by_id(request)
        run = self.jobs.run_dir(job.id)
        out = {}
        for key, name in (("docker", "docker_stats.tsv"), ("gpu", "gpu_stats.tsv")):
            head = read_regular(str(run / name), 4096) or b""
            data = read_regular(str(run / name), STATS_TAIL, tail=True) or b""
            header = head.split(b"\n", 1)[0] + b"\n" if b"\n" in head else b""
            if len(data) == STATS_TAIL:
                data = data.split(b"\n", 1)[1] if b"\n" in data else b""  # a cut first row
            if data.startswith(header):
                data = data[len(header):]
            out[key] = (header + data).decode("utf-8", "replace")
        return JSONResponse(out)

    async def api_events(self, request: Request):
        job = await asyncio.to_thread(self.job_by_id, request)
        index = logindex.of(self.jobs.journal(job.id))
        given = request.headers.get("last-event-id") or request.query_params.get("from")
        if given is None:
            start = await asyncio.to_thread(index.tail)
        else:
            try:
                start = int(given)
            except ValueError:
                raise InvalidArgument(f"offset {given[:40]!r} is not a number") from None
            if not await asyncio.to_thread(index.is_start, start):
                raise InvalidArgument(f"offset {start} is not where a record of the job's log starts (resume from "
                                      "an event id this stream gave)")
        return StreamingResponse(sse.stream(self.jobs, job.id, start, self.stopping), media_type="text/event-stream",
                                 headers=sse.HEADERS)

    # --- login ---------------------------------------------------------------------------------------------

    def login(self, request: Request):
        gate: Gate = request.state.gate
        if request.method == "GET":
            return HTMLResponse(self.render("login.html", target=local_path(request.query_params.get("next", "/")),
                                            error=""), headers={"Cache-Control": "no-store"})
        form = dict(parse_qsl(request.state.body.decode("latin-1")))
        return gate.login(form.get("token", "").strip(), form.get("next", "/"))

    def logout(self, request: Request):
        gate: Gate = request.state.gate
        r = RedirectResponse("/login", 303)
        r.delete_cookie(gate.cookie, path="/", httponly=True, samesite="strict")
        return r


async def _body(request: Request) -> None:
    request.state.body = await request.body()


def _with_body(handler):
    """A sync handler of a POST, with its (small, already checked) body read first."""
    async def endpoint(request: Request):
        await _body(request)
        return await asyncio.to_thread(handler, request)
    return endpoint


def _errors(ui: Ui):
    def page(request: Request, status: int, title: str, message: str) -> Response:
        if request.url.path.startswith("/api/"):
            return PlainTextResponse(message, status)
        return HTMLResponse(ui.render("error.html", title=title, message=message, back="", csrf="",
                                      user=getattr(request.state, "user", None)), status)

    async def not_found(request, exc):
        return page(request, 404, "Not found", getattr(exc, "message", "") or "not found")

    async def invalid(request, exc):
        return page(request, 400, "Bad request", exc.message)

    async def precondition(request, exc):
        return page(request, 409, "Not possible now", exc.message)

    async def engine_error(request, exc):
        return page(request, 503 if exc.code in ("UNAVAILABLE", "RESOURCE_EXHAUSTED") else 500, "Engine error",
                    exc.message)

    async def http_error(request, exc):
        return page(request, exc.status_code, "Error", exc.detail or "")
    from starlette.exceptions import HTTPException
    return {NotFound: not_found, InvalidArgument: invalid, FailedPrecondition: precondition,
            EngineError: engine_error, HTTPException: http_error}


class _Headers:
    """The same headers on every answer: no framing, no sniffing, no referrer to other sites, nothing cached but
    the vendored files."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        static = scope["path"].startswith("/static/")

        async def sending(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                # same-origin, not no-referrer: with no-referrer a browser sends `Origin: null` on the page's own
                # form posts, which the gate refuses; a login page's answer says no-referrer itself.
                extra = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                         (b"x-frame-options", b"DENY"), (b"referrer-policy", b"same-origin"),
                         (b"cross-origin-resource-policy", b"same-origin")]
                if b"cache-control" not in names:
                    extra.append((b"cache-control", b"max-age=3600" if static else b"no-store"))
                message = {**message, "headers": headers + [h for h in extra if h[0] not in names]}
            await send(message)
        return await self.app(scope, receive, sending)


def build(jobs, auth, key: bytes, host: str, port: int, community: str, stopping: threading.Event) -> Starlette:
    """The UI's ASGI app. ``auth`` is the API's Auth (the same tokens); ``key`` the engine's signing key, from
    which the session and CSRF keys are derived."""
    ui = Ui(jobs, community, stopping)
    gate = Gate(auth, key, host, port, ui.render)
    job = "/communities/{community}/projects/{project}/job/{job_id}"
    routes = [
        Route("/", ui.root),
        Route("/favicon.ico", lambda request: Response(status_code=204)),  # browsers ask; the pages have none
        Route("/login", _with_body(ui.login), methods=["GET", "POST"]),
        Route("/logout", _with_body(ui.logout), methods=["POST"]),
        Route("/communities/{community}/projects", ui.projects),
        Route("/communities/{community}/projects/", ui.projects),
        Route("/communities/{community}/projects/{project}", ui.job_list),
        Route("/communities/{community}/projects/{project}/", ui.job_list),
        Route(job, ui.job_page),
        Route(job + "/", ui.job_page),
        Route(job + "/log", ui.log_page),
        Route(job + "/cancel", _with_body(ui.cancel), methods=["POST"]),
        Route(job + "/files/{kind}/{name:path}", ui.download),
        Route("/jobs/{job_id}", ui.by_id),
        Route("/api/jobs/{job_id}", ui.api_job),
        Route("/api/jobs/{job_id}/events", ui.api_events),
        Route("/api/jobs/{job_id}/log", ui.api_log),
        Route("/api/jobs/{job_id}/stats", ui.api_stats),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes, exception_handlers=_errors(ui),
                     middleware=[Middleware(_Headers), Middleware(GateMiddleware, gate=gate)])
