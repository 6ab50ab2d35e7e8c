"""dsjobs command line: `run` (embedded engine), `serve`, and `project job ...` shaped like the official CLI."""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import grpc

from dsjobs import jobconfig
from dsjobs.client import DEFAULT_ENDPOINT, Client, OperationFailed, build_params

log = logging.getLogger("dsjobs")
STATUS = {0: "UNSPECIFIED", 1: "CREATING", 2: "EXECUTING", 3: "UPLOADING_OUTPUT", 4: "SUCCESS", 5: "ERROR",
          6: "CANCELLED", 7: "CANCELLING", 8: "PREPARING"}


# What rich leaves out of text it prints (rich.control.STRIP_CONTROL_CODES: bell, backspace, VT, FF, CR).
_RICH_STRIPS = dict.fromkeys((7, 8, 11, 12, 13))
# Text rich would change besides: an emoji code (rich/_emoji_replace.py's pattern), a tab (expanded by cell width).
_RICH_CHANGES = re.compile(r"(:(\S*?)(?:(?:\-)(emoji|text))?:)|\t")


class _Stderr:
    """rich's Console(stderr=True) for what dsjobs prints on stderr, loaded only where it draws something (a
    terminal, a forced colour, text it changes): elsewhere rich writes the text as it is, and so does this, without
    rich's ~100 ms of imports."""

    def __init__(self):
        self._console = None
        env = os.environ
        try:
            tty = sys.stderr.isatty()
        except (ValueError, AttributeError):
            tty = False
        self._plain = not tty and "FORCE_COLOR" not in env and "TTY_COMPATIBLE" not in env

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console
            self._console = Console(stderr=True, highlight=False, soft_wrap=True)
        return self._console

    def print(self, text: str, style: Optional[str] = None, markup: bool = True) -> None:
        if self._plain and not (markup and "[" in text) and not _RICH_CHANGES.search(text):
            sys.stderr.write(text.translate(_RICH_STRIPS) + "\n")
            sys.stderr.flush()
        else:
            self.console.print(text, style=style, markup=markup)


class _Printer:
    """Job logs on the terminal: stdout as is, stderr in red, the engine's lines dimmed, on stderr."""

    def __init__(self):
        self.err = _Stderr()
        self.lock = threading.Lock()

    def __call__(self, m) -> None:
        text = m.content.decode("utf-8", errors="replace")
        with self.lock:
            src = m.WhichOneof("source")
            if src == "standard_stream" and m.standard_stream == 1:
                sys.stdout.write(text if text.endswith("\n") else text + "\n")
                sys.stdout.flush()
            elif src == "standard_stream":
                self.err.print(text.rstrip("\n"), style="red", markup=False)
            elif m.file_path == ".system.log":
                for line in text.rstrip("\n").split("\n"):
                    self.err.print(f"[SYS] {line}", style="dim", markup=False)


class _ProgressBar:
    """The job's own progress (JOB_PROGRESS_FILENAME), and the engine's (environment builds), as a rich bar."""

    def __init__(self, console):
        self.console, self.progress, self.task = console.console, None, None

    def update(self, op) -> None:
        from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
        meta = spb.ExecuteProjectJobMetadata()
        if not op.metadata.Unpack(meta) or not meta.HasField("progress"):
            return
        if self.progress is None:
            from rich.progress import BarColumn, Progress, TextColumn
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     TextColumn("{task.percentage:>3.0f}%"), console=self.console, transient=True)
            self.progress.start()
            self.task = self.progress.add_task("job", total=100)
        self.progress.update(self.task, completed=meta.progress.progress,
                             description=meta.progress.message or "job")

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _ts(t) -> str:
    if not t.seconds and not t.nanos:
        return ""
    return datetime.fromtimestamp(t.seconds + t.nanos / 1e9, timezone.utc).isoformat(timespec="seconds")


def _job_dict(j) -> dict:
    return {"id": j.id, "name": j.name, "desc": j.desc, "created_at": _ts(j.created_at),
            "started_at": _ts(j.started_at), "finished_at": _ts(j.finished_at), "status": STATUS[j.status],
            "status_details": j.status_details, "created_by": j.created_by_id, "data_cleared": j.data_cleared,
            "data_expires_at": _ts(j.data_expires_at) or "Never",
            "instance_type": j.actual_cloud_instance_type.name,
            "outputs": [{"path": f.desc.path, "size": f.size_bytes} for f in j.output_files],
            "file_errors": [{"path": e.output_file_desc.path or e.log_file_name, "error": e.description}
                            for e in j.file_errors]}


COLUMNS = ("id", "name", "created_at", "finished_at", "status", "created_by", "data_expires_at")


def _print_jobs(jobs: list, fmt: str, output: Optional[str] = None) -> None:
    rows = [_job_dict(j) for j in jobs]
    with _output(output) as out:
        if fmt == "json":
            out.write(json.dumps(rows, indent=2) + "\n")
            return
        from rich.console import Console
        from rich.table import Table
        t = Table(box=None)
        for col in COLUMNS:
            # an id is what a user copies into the next command: never cut, whatever the width
            t.add_column(col, no_wrap=col == "id", min_width=20 if col == "id" else None, overflow="fold")
        for r in rows:
            t.add_row(*[str(r[c]) for c in COLUMNS])
        # a file or a pipe has no width: the table's own (a terminal's is the terminal's)
        Console(file=out, width=None if out.isatty() else 10_000, highlight=False).print(t)


class _output:
    """``-o FILE`` as the official CLI takes it: stdout by default."""

    def __init__(self, path: Optional[str]):
        self.path, self.f = path, None

    def __enter__(self):
        self.f = open(self.path, "w") if self.path and self.path != "-" else sys.stdout
        return self.f

    def __exit__(self, *exc):
        if self.f is not sys.stdout:
            self.f.close()


# --- running a job and following it ------------------------------------------------------------------------------

def _transfer_errors() -> tuple:
    """What a call or a download raises when it fails: requests is imported by the first transfer (an exception
    of it cannot have been raised before)."""
    loaded = sys.modules.get("requests")
    return (grpc.RpcError, OSError) + ((loaded.RequestException,) if loaded is not None else ())


def _kept_outputs(client: Client, job_id: str, base: Path, output_dir: Optional[Path], printer, hint: str) -> None:
    """A cancelled or failed job's outputs are kept (as in the cloud): fetch them, and say how to get the rest."""
    try:
        job = client.get(job_id)
        paths = client.download_job_files(job, base, output_dir=output_dir) if job.output_files else []
    except _transfer_errors() as e:
        printer.err.print(f"the outputs the job left could not be downloaded: {e}", style="yellow", markup=False)
        paths = []
    if paths:
        printer.err.print("outputs the job left, downloaded:\n" + "\n".join(f"  {p}" for p in paths),
                          style="yellow", markup=False)
    if hint:
        printer.err.print(hint, style="yellow", markup=False)


def follow(client: Client, job_id: str, op, base: Path, *, graceful_cancel: bool, log_offset: int = 0,
           output_dir: Optional[Path] = None, hint: Optional[str] = None, poll_s: float = 0.1,
           cancel_on: tuple = (signal.SIGINT,)) -> int:
    """Stream logs, wait, download outputs, print a summary; returns the job's return code (as the CLI exits).
    ``poll_s``: how often the operation is asked for between log lines (an engine in this process: often).
    ``cancel_on``: the signals that cancel the job (gracefully first, as Ctrl-C does), then follow it to its end."""
    printer = _Printer()
    started = time.monotonic()
    logs_thread = client.follow_logs(job_id, log_offset, printer)
    interrupts = []

    def on_sigint(signum, frame):
        interrupts.append(time.monotonic())
        forced = len(interrupts) > 1 or not graceful_cancel
        again = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        printer.err.print(f"cancelling job {job_id} ({'forced' if forced else 'graceful'}); "
                          f"{'' if forced else f'{again} again to kill it now'}", style="yellow")
        try:
            client.cancel(job_id, graceful=not forced, reason="interrupted from the terminal")
        except grpc.RpcError as e:
            printer.err.print(f"cancel failed: {e.details()}", style="red")
    old = {sig: signal.signal(sig, on_sigint) for sig in cancel_on} \
        if threading.current_thread() is threading.main_thread() else None
    bar = _ProgressBar(printer.err) if sys.stderr.isatty() else None

    def on_poll(op) -> None:
        if bar:
            bar.update(op)
        if op.done:
            return
        # The log stream ends as the job does: looked at again then, not at the next tick of the poll.
        if logs_thread.is_alive():
            logs_thread.join(poll_s)
        else:
            time.sleep(poll_s)
    try:
        try:
            op = client.wait_operation(op, poll_s=0, on_poll=on_poll)
        except OperationFailed as e:
            logs_thread.join(5)
            printer.err.print(str(e), style="red", markup=False)
            _kept_outputs(client, job_id, base, output_dir, printer, f"logs and files of the job: dsjobs project "
                          f"job download-files --id {job_id} --with-logs" if hint is None else hint)
            return 1
        logs_thread.join(5)
    finally:
        if bar:
            bar.stop()
        for sig, handler in (old or {}).items():
            signal.signal(sig, handler)
    from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
    resp = spb.ExecuteProjectJobResponse()
    op.response.Unpack(resp)
    if resp.output_files_errors:
        printer.err.print("Some output files were not uploaded due to errors:", style="yellow")
        for e in resp.output_files_errors:
            printer.err.print(f"  * {e.output_file_desc.path or e.log_file_name} "
                              f"({e.description or 'Error while processing file'})", style="yellow", markup=False)
    errors: list = []
    paths = client.download(list(resp.output_files), base, output_dir, errors=errors)
    for path, why in errors:  # the others are fetched all the same, and the job's code stays its exit status
        printer.err.print(f"cannot download file {path}: {why}", style="red", markup=False)
    rc = resp.result.return_code
    summary = [f"job {job_id}: {'success' if rc == 0 else f'return code {rc}'} "
               f"in {time.monotonic() - started:.2f}s"]
    failed = {path for path, _ in errors}
    fetched = [f for f in sorted(resp.output_files, key=lambda f: f.file.size_bytes) if f.file.desc.path not in failed]
    for f, p in zip(fetched, paths):
        summary.append(f"  {p} ({f.file.size_bytes} bytes{', unpacked' if f.file.compression_type == 2 else ''})")
    printer.err.print("\n".join(summary), style="green" if rc == 0 else "red", markup=False)
    return int(rc)


def submit(client: Client, project: str, config_path: str, base: Path, python: Optional[str] = None,
           cfg: Optional[jobconfig.Config] = None):
    """``cfg``: the config already loaded (parsing runs what cmd names with --version, as the official client does:
    once)."""
    cfg = cfg if cfg is not None else jobconfig.load(config_path, base)
    from dsjobs.autoenv import user_python
    prep = build_params(cfg, base, user_python(python))
    with prep.tmp:
        job_id, uploads = client.create(project, prep, cfg)
        client.upload(uploads, prep.local_paths)
    op = client.execute(job_id)
    return cfg, job_id, op


# --- commands ----------------------------------------------------------------------------------------------------

def cmd_run(a) -> int:
    from engine.app import build_engine
    from engine.config import EngineConfig, default_data_dir
    from engine.errors import FailedPrecondition
    from dsjobs.inprocess import LocalClient

    base = Path.cwd()
    try:
        cfg = jobconfig.load(a.config, base)  # config errors before anything runs
    except (jobconfig.ConfigError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    data_dir = Path(a.data_dir) if a.data_dir else default_data_dir()
    tmp = None
    try:
        engine = build_engine(EngineConfig(data_dir=data_dir, sandbox=a.sandbox, jobs_die_with_engine=True,
                                           warm_sandboxes=False))
    except FailedPrecondition:
        tmp = tempfile.TemporaryDirectory(prefix="dsjobs-run-")
        print(f"note: {data_dir} is in use by a dsjobs server; running with a temporary data dir", file=sys.stderr)
        engine = build_engine(EngineConfig(data_dir=Path(tmp.name), sandbox=a.sandbox, jobs_die_with_engine=True,
                                           warm_sandboxes=False))
    engine.start()
    # This command is the engine's only client: it calls the API in-process (the same servicers and checks, no
    # socket). A gRPC server is started only for the job pages (--ui), which other clients may follow too.
    client = LocalClient(engine)
    server = ui_url = descriptor = None
    if a.ui:
        from engine.api.server import start_grpc
        server, port = start_grpc(engine, "127.0.0.1:0")
        ui_url, why = _start_ui(engine, server.auth, "127.0.0.1:0", required=False)
        if why:
            print(f"dsjobs: {why}", file=sys.stderr, flush=True)
        if ui_url:
            from dsjobs import discovery
            # So that `dsjobs ui` (and a hooked official client) find this engine's pages too.
            descriptor = discovery.write_descriptor(f"127.0.0.1:{port}", files_url=engine.files_url,
                                                    data_dir=str(engine.cfg.data_dir),
                                                    token_path=str(engine.token_path), ui_url=ui_url)
    try:
        _, job_id, op = submit(client, a.project, a.config, base, a.python, cfg=cfg)
        if ui_url:  # the page lives as long as this command
            _show_page(ui_url, _job_path(engine.cfg.community_id, a.project, job_id), engine.token,
                       str(engine.token_path), out=sys.stderr)
        kept = (f"its record is kept in {data_dir}: `dsjobs serve --data-dir {data_dir}`, then `dsjobs project job "
                f"download-files --id {job_id} --with-logs`" if tmp is None else
                "(a temporary data dir, since the default one was in use: nothing else is kept)")
        # The engine is this process: a SIGTERM or SIGHUP (a service manager, a closed terminal) ending it at once
        # left the job running unowned, re-adopted by the next `dsjobs run`, whose own job then queued behind it.
        return follow(client, job_id, op, base, graceful_cancel=cfg.graceful_shutdown is not None,
                      output_dir=Path(a.output_dir) if a.output_dir else None, hint=kept, poll_s=0.02,
                      cancel_on=(signal.SIGINT, signal.SIGTERM, signal.SIGHUP))
    except jobconfig.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # an input that cannot be read
        print(f"error: {e}", file=sys.stderr)
        return 1
    except grpc.RpcError as e:
        print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    finally:
        if descriptor:
            from dsjobs import discovery
            discovery.remove_descriptor(descriptor)
            discovery.remove_descriptor(_login_path(ui_url))
        client.close()
        if server is not None:
            server.stop(1).wait()
        engine.stop(stop_jobs=True)
        if tmp is not None:
            tmp.cleanup()


def _job_path(community: str, project: str, job_id: str) -> str:
    return f"/communities/{community}/projects/{project}/job/{job_id}"


def _loopback(listen: str) -> tuple[str, int]:
    """HOST:PORT of the web UI, on loopback only (its pages hold the session cookie and talk plain HTTP)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host == "localhost":
        host = "127.0.0.1"
    import ipaddress
    try:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError
        return host, int(port)
    except ValueError:
        raise ValueError(f"--ui-listen {listen!r}: the web UI listens on loopback only (127.0.0.1:PORT or "
                         "[::1]:PORT)") from None


def _start_ui(engine, auth, listen: str, required: bool) -> tuple[Optional[str], str]:
    """(the UI's base URL, "") or (None, why in one line) when the `ui` extra is missing; a port that cannot be
    had is an error only when it was asked for (``required``)."""
    from engine.ui import Unavailable
    host, port = _loopback(listen)
    try:
        return engine.start_ui(auth, host, port), ""
    except Unavailable as e:
        return None, str(e)
    except OSError as e:
        if required:
            raise
        return None, f"no web UI: {listen}: {e.strerror or e}"


def _login_path(base: str) -> str:
    from dsjobs import discovery
    return os.path.join(discovery.runtime_dir(), f"ui-{base.rsplit(':', 1)[-1]}-open.html")


def _login_file(base: str, path: str, token: str) -> str:
    """A page (0600, in the per-user runtime directory, removed when its engine stops) that logs the browser in:
    its path goes on the browser's command line, which every local user can read; the token stays in the file."""
    import html
    from dsjobs import discovery
    dest = _login_path(base)
    if not discovery._private_dir(os.path.dirname(dest), create=True):
        raise PermissionError(f"{os.path.dirname(dest)} is not a directory of this user's alone")
    url = html.escape(f"{base}{path}?token={token}")
    tmp = f"{dest}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f'<!doctype html><meta charset="utf-8"><meta name="referrer" content="no-referrer">'
                f'<meta http-equiv="refresh" content="0;url={url}"><title>dsjobs</title>'
                f'<p><a href="{url}">Open the job page</a></p>\n')
    os.replace(tmp, dest)
    return dest


def _show_page(base: str, path: str, token: Optional[str], token_path: str, *, browser: bool = True,
               out=None) -> bool:
    """Open ``base + path`` logged in: in a browser when one can be started, else a login URL, but only to a
    terminal (a URL with the token must not land in a file or a log); else the page's URL and how to log in.
    Returns whether a browser was started."""
    import webbrowser
    out = out or sys.stdout
    page = base + path
    if browser:
        try:
            opener = webbrowser.get()
        except webbrowser.Error:
            opener = None
        if opener is not None:
            try:
                target = "file://" + _login_file(base, path, token) if token else page
            except OSError as e:  # nowhere private to put it: no browser, rather than the token in the open
                print(f"dsjobs: not opening a browser: {e}", file=out, flush=True)
                opener = target = None
            if opener is not None and opener.open(target):
                print(f"opened {page} in a browser", file=out, flush=True)
                return True
    if not token:
        print(page, file=out, flush=True)
    elif out.isatty():
        print(f"{page}?token={token}\n(this URL logs in: it carries the engine's token, so keep it to yourself)",
              file=out, flush=True)
    else:
        print(f"{page}\nno browser to open it in: open it and give its login form the token from "
              f"{token_path or 'the engine'}; a URL that logs in is printed only to a terminal", file=out, flush=True)
    return False


def cmd_serve(a) -> int:
    from engine.api.server import start_grpc
    from engine.app import build_engine
    from engine.config import EngineConfig, default_data_dir
    from dsjobs import discovery

    logging.basicConfig(level=getattr(logging, a.log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = EngineConfig(data_dir=Path(a.data_dir) if a.data_dir else default_data_dir(), files_url=a.files_url,
                       files_port=a.files_port)
    if a.max_concurrent_jobs:
        cfg.max_concurrent_jobs = a.max_concurrent_jobs
    cfg.python_interpreters = tuple(a.python)
    cfg.pip_index_url = a.pip_index_url or ""
    cfg.pip_extra_index_urls = tuple(a.pip_extra_index_url)
    cfg.env_installer = a.env_installer
    cfg.docker_network = a.docker_network
    cfg.docker_build_network = a.docker_build_network or a.docker_network
    cfg.sandbox = a.sandbox
    cfg.warm_sandboxes = a.warm_sandboxes
    cfg.start_pause_s = float(os.environ.get("DSJOBS_TEST_START_PAUSE_S") or 0)  # fault injection in tests
    cfg.files_host = a.files_host
    if bool(a.tls_cert) != bool(a.tls_key):
        print("error: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    if a.tls_cert:
        for flag, f in (("--tls-cert", a.tls_cert), ("--tls-key", a.tls_key)):
            if not os.path.isfile(f):
                print(f"error: {flag} {f}: no such file", file=sys.stderr)
                return 2
        cfg.tls = (a.tls_cert, a.tls_key)  # the API and the file endpoint both
    if a.tls_ca and (not a.tls_cert or not os.path.isfile(a.tls_ca)):
        print(f"error: --tls-ca {a.tls_ca}: " + ("no such file" if a.tls_cert else "goes with --tls-cert"),
              file=sys.stderr)
        return 2
    cfg.sa_token_file = a.sa_token_file or ""
    cfg.mig_fallback = a.mig_fallback
    cfg.cloud_like_default = a.cloud_like_default or ""
    cfg.backend = a.backend
    for pin in a.project_backend:
        project, _, backend = pin.partition("=")
        if backend not in ("local", "ray"):
            print(f"error: --project-backend {pin!r}: expected PROJECT=local or PROJECT=ray", file=sys.stderr)
            return 2
        cfg.project_backends[project] = backend
    if cfg.tls and (cfg.backend == "ray" or "ray" in cfg.project_backends.values()):
        # Ray agents fetch inputs and report over the file endpoint with the system's roots: a certificate they
        # cannot be given the CA of would fail every Ray job at its first request.
        print("error: failed precondition: --tls-cert with the ray backend: Ray agents cannot be given the "
              "engine's CA, so they could not reach its TLS file endpoint; serve Ray without --tls-cert (on a "
              "trusted network), or run TLS jobs on the local backend", file=sys.stderr)
        return 2
    cfg.ray_address = a.ray_address or os.environ.get("DSJOBS_RAY_ADDRESS", "")
    if a.ray_token_file:
        cfg.ray_token = Path(a.ray_token_file).read_text().strip()
    cfg.ray_agent_python = a.ray_agent_python or cfg.ray_agent_python
    cfg.ray_engine_url = a.ray_engine_url or ""
    cfg.ray_node_dir = a.ray_node_dir or cfg.ray_node_dir
    if a.max_job_duration:
        from runners.spec import parse_duration
        cfg.max_job_duration_s = parse_duration(a.max_job_duration)
    if a.log_limit:
        try:
            cfg.log_limit_bytes = jobconfig.parse_human_size(a.log_limit)
        except jobconfig.ConfigError:
            print(f"error: --log-limit {a.log_limit!r}: a size such as 100MB or 2GB", file=sys.stderr)
            return 2
    from engine.api.auth import load_tokens
    warnings = []
    token = a.token
    if token:
        warnings.append("--token puts the token on the command line, where every local user can read it "
                        "(ps, /proc/PID/cmdline); use --token-file or $DSJOBS_TOKEN")
    elif a.token_file:
        token = Path(a.token_file).read_text().strip()
    elif os.environ.get("DSJOBS_TOKEN"):
        token = os.environ["DSJOBS_TOKEN"]
    try:
        tokens = load_tokens(token, a.tokens_file)
    except (OSError, ValueError) as e:
        print(f"error: --tokens-file {a.tokens_file}: {e}", file=sys.stderr)
        return 2
    if a.no_auth:
        warnings.append("--no-auth: every local user (and every process or container that reaches the port) can "
                        "run jobs as you")
    if a.docker_network == "host":
        warnings.append("--docker-network host: containers share the host's network and reach services on its "
                        "loopback (the engine still needs a token)")
    if a.sandbox == "none":
        warnings.append("--sandbox none: process jobs run unconfined and see everything you can see")
    if a.sa_token_file:
        try:
            if os.stat(a.sa_token_file).st_mode & 0o077:
                warnings.append(f"--sa-token-file {a.sa_token_file} can be read by other users (chmod 600 it): "
                                "it holds a service account's token")
        except OSError as e:
            print(f"error: --sa-token-file {a.sa_token_file}: {e.strerror or e}", file=sys.stderr)
            return 2
    if not a.no_ui:
        try:
            _loopback(a.ui_listen)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    # Handlers first: a SIGTERM that comes as soon as the endpoint is printed must still stop us cleanly.
    stop = threading.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: stop.set())
    engine = build_engine(cfg).start()
    try:
        server, port = start_grpc(engine, a.listen, tokens=tokens, no_auth=a.no_auth,
                                  allow_insecure_remote=a.insecure_listen, tls=cfg.tls)
    except PermissionError as e:
        engine.stop()
        print(f"error: {e}", file=sys.stderr)
        return 2
    ui_url, ui_why = None, "the web UI is off (--no-ui)"
    if not a.no_ui:
        try:
            ui_url, ui_why = _start_ui(engine, server.auth, a.ui_listen, required=True)
        except OSError as e:
            server.stop(0).wait()
            engine.stop()
            print(f"error: the web UI cannot listen on {a.ui_listen}: {e.strerror or e} (another --ui-listen, or "
                  "--no-ui)", file=sys.stderr)
            return 2
    host = a.listen.rsplit(":", 1)[0]
    endpoint = f"{host}:{port}"
    descriptor = discovery.write_descriptor(
        f"{'127.0.0.1' if host in ('0.0.0.0', '[::]', '') else host}:{port}", files_url=engine.files_url,
        data_dir=str(cfg.data_dir), token_path="" if a.no_auth else str(engine.token_path), ui_url=ui_url or "",
        tls=bool(cfg.tls), ca_file=os.path.abspath(a.tls_ca) if a.tls_ca else "")
    print(f"dsjobs serving the DataSphere Jobs API on {endpoint} (files on {engine.files_url}), "
          f"data dir {cfg.data_dir}", flush=True)
    if not a.no_auth:
        print(f"dsjobs: every call needs `authorization: Bearer <token>`; the token is in {engine.token_path} "
              "(dsjobs's own clients find it by themselves)", flush=True)
    if ui_url:
        # Never with the token: this line goes to terminals and logs alike.
        print(f"dsjobs: job pages on {ui_url}/ (`dsjobs ui [JOB_ID]` opens one logged in)", flush=True)
    elif not a.no_ui:
        print(f"dsjobs: {ui_why}", flush=True)
    for w in warnings:
        print(f"dsjobs: warning: {w}", file=sys.stderr, flush=True)
    try:
        while not stop.wait(0.5):  # a timed wait, so signal handlers always get to run
            pass
    finally:
        discovery.remove_descriptor(descriptor)
        if ui_url:
            discovery.remove_descriptor(_login_path(ui_url))
    if a.stop_jobs_on_exit:
        print("dsjobs: shutting down; stopping running jobs", flush=True)
    else:
        print("dsjobs: shutting down; running jobs keep running and are re-adopted at the next start", flush=True)
    server.stop(5).wait()
    engine.stop(stop_jobs=a.stop_jobs_on_exit)
    return 0


def _client(a) -> Client:
    return Client(a.endpoint or os.environ.get("DSJOBS_ENDPOINT") or DEFAULT_ENDPOINT,
                  token_file=getattr(a, "token_file", None))


def cmd_execute(a) -> int:
    client = _client(a)
    base = Path.cwd()
    try:
        cfg, job_id, op = submit(client, a.project_id, a.config, base, a.python)
    except (jobconfig.ConfigError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"created job `{job_id}`", file=sys.stderr)
    if a.async_:
        if a.output:
            Path(a.output).write_text(json.dumps({"job_id": job_id, "operation_id": op.id}))
        return 0
    return follow(client, job_id, op, base, graceful_cancel=cfg.graceful_shutdown is not None)


def cmd_attach(a) -> int:
    client = _client(a)
    op = client.execute(a.id)  # the official attach: Execute again returns the job's operation
    return follow(client, a.id, op, Path.cwd(), graceful_cancel=False, log_offset=-1)


def cmd_list(a) -> int:
    _print_jobs(_client(a).list(a.project_id, a.filter or ""), a.format, a.output)
    return 0


def _pairs(items: Optional[list[str]], what: str) -> dict:
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"Invalid name-value pair: {item} ({what})")
        out[name] = value
    return out


def cmd_fork(a) -> int:
    client = _client(a)
    base = Path.cwd()
    docker = None
    if a.docker_image_id and a.docker_image_url:
        print("error: For docker image, specify either ID or URL", file=sys.stderr)
        return 1
    from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
    if a.docker_image_id:
        docker = jpb.Environment(docker_image_resource_id=a.docker_image_id)
    elif a.docker_image_url:
        docker = jpb.Environment(docker_image_spec=jpb.DockerImageSpec(
            image_url=a.docker_image_url, username=a.docker_image_username or "",
            password_ds_secret_name=a.docker_image_password_secret_id or ""))
    storage = None
    if a.working_storage_size:
        storage = jpb.ExtendedWorkingStorage(type=jpb.ExtendedWorkingStorage.SSD,
                                             size_gb=jobconfig.parse_human_size(a.working_storage_size) >> 30)
    try:
        job_id = client.fork(a.id, base, args=_pairs(a.arg, "--arg"), vars=_pairs(a.var, "--var"),
                             env_vars=_pairs(a.env_var, "--env-var"), name=a.name, desc=a.desc, docker=docker,
                             instance_types=tuple(a.cloud_instance_type or ()), working_storage=storage)
    except (ValueError, OSError, jobconfig.ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"created job `{job_id}`", file=sys.stderr)
    op = client.execute(job_id)
    if a.async_:
        if a.output:
            Path(a.output).write_text(json.dumps({"job_id": job_id, "operation_id": op.id}))
        return 0
    return follow(client, job_id, op, base, graceful_cancel=False)


def cmd_delete(a) -> int:
    _client(a).delete(a.id)
    print("job is deleted", file=sys.stderr)
    return 0


def cmd_get(a) -> int:
    client = _client(a)
    j = client.get(a.id)
    d = _job_dict(j)
    d["history"] = _history(client, a.id)
    with _output(a.output) as out:
        if a.format == "json":
            out.write(json.dumps(d, indent=2) + "\n")
            return 0
        for k, v in d.items():
            if k == "history":
                out.write(f"{'history':>16}:\n")
                for line in v:
                    out.write(f"{'':>18}{line}\n")
            else:
                out.write(f"{k:>16}: {v}\n")
    return 0


def _history(client, job_id: str) -> list[str]:
    """What happened to the job, from the engine's own log of it (what the cloud's job page shows)."""
    from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
    out = []
    for resp in client.jobs.ReadLogs(spb.ReadProjectJobLogsRequest(job_id=job_id, offset=0), timeout=10):
        for m in resp.logs:
            if m.file_path == ".system.log":
                for line in m.content.decode(errors="replace").splitlines():
                    out.append(f"{_ts(m.created_at)}  {line}")
        j = client.get(job_id)
        if j.status not in (4, 5, 6):
            break  # a running job: what happened so far
    return out


def cmd_cancel(a) -> int:
    _client(a).cancel(a.id, graceful=a.graceful)
    print("job is canceled", file=sys.stderr)
    return 0


def cmd_set_ttl(a) -> int:
    from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
    client = _client(a)
    req = spb.SetProjectJobDataTtlRequest(job_id=a.id)
    if a.days.lower() not in ("infinity", "inf"):
        try:
            days = int(a.days)
        except ValueError:
            print('error: TTL should be either number of days or literal "infinity"', file=sys.stderr)
            return 1
        if days <= 0:
            print("error: TTL days should be positive", file=sys.stderr)
            return 1
        req.ttl.seconds = days * 86400
    client.jobs.SetDataTtl(req)
    print("data ttl updated", file=sys.stderr)
    return 0


def cmd_download(a) -> int:
    client = _client(a)
    j = client.get(a.id)
    if j.status in (0, 1, 2, 3, 7, 8):
        print(f"job is still running ({STATUS[j.status]}); nothing downloaded", file=sys.stderr)
        return 1
    paths = client.download_job_files(j, Path.cwd(), with_logs=a.with_logs, with_diagnostics=a.with_diagnostics,
                                      output_dir=Path(a.output_dir) if a.output_dir else None)
    for p in paths:
        print(p)
    return 0


def cmd_env(a) -> int:
    from engine.config import default_data_dir
    from runners.pyenv import EnvCache
    from runners.spec import parse_duration
    cache = EnvCache((Path(a.data_dir) if a.data_dir else default_data_dir()) / "envs")
    if a.env_cmd == "list":
        rows = cache.entries()
        if a.format == "json":
            print(json.dumps(rows, indent=2))
            return 0
        from rich.console import Console
        from rich.table import Table
        t = Table(box=None)
        for col in ("key", "python", "requirements", "size", "last used"):
            t.add_column(col)
        for r in rows:
            used = datetime.fromtimestamp(r["last_used"], timezone.utc).isoformat(timespec="seconds")
            t.add_row(r["key"][:12], r.get("python", "?"), " ".join(r.get("requirements", [])) or "-",
                      f"{r['size_bytes'] / (1 << 20):.1f} MiB", used)
        Console().print(t)
        return 0
    removed = cache.prune(parse_duration(a.older_than) if a.older_than else None)
    if a.older_than is None and not removed:
        removed = [e["key"] for e in cache.entries()]
        for k in removed:
            cache.remove(k)
    print(f"removed {len(removed)} environment(s)")
    return 0


def _data_dir(a) -> Path:
    from engine.config import default_data_dir
    return Path(a.data_dir) if a.data_dir else default_data_dir()


def cmd_secret(a) -> int:
    from engine.resources import Secrets
    secrets = Secrets(_data_dir(a))
    if a.secret_cmd != "list" and bool(a.name) == bool(getattr(a, "sa_token", False)):
        print(f"error: dsjobs secret {a.secret_cmd}: give a NAME or --sa-token", file=sys.stderr)
        return 2
    if a.secret_cmd == "set":
        import getpass
        what = "the service account token" if a.sa_token else f"value of {a.name}"
        value = sys.stdin.read().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass(f"{what}: ")
        if a.sa_token:
            from engine.errors import EngineError
            try:
                secrets.set_sa_token(a.project, value)
            except EngineError as e:
                print(f"error: {e.message}", file=sys.stderr)
                return 2
            print(f"service account token set for project {a.project}: its jobs get SA_TOKEN_FILENAME",
                  file=sys.stderr)
            return 0
        secrets.set(a.project, a.name, value)
        print(f"secret {a.name} set for project {a.project}", file=sys.stderr)
    elif a.secret_cmd == "rm" and a.sa_token:
        secrets.remove_sa_token(a.project)
    elif a.secret_cmd == "list":
        for name in secrets.all(a.project):
            print(name)  # names only: values never leave the file
    else:
        secrets.remove(a.project, a.name)
    return 0


def cmd_dirs(a) -> int:
    from engine.resources import Directories
    reg = Directories(_data_dir(a), a.kind)
    if a.dirs_cmd == "add":
        s3 = getattr(a, "s3", None)
        if bool(s3) == bool(a.dir):
            print(f"error: dsjobs {a.kind} add {a.id}: give a DIR" + (" or --s3 ENDPOINT/BUCKET, not both"
                  if a.kind == "mount" else ""), file=sys.stderr)
            return 2
        from engine.errors import EngineError
        try:
            if s3:
                d = reg.add_s3(a.id, s3, a.access_key_secret, a.secret_key_secret, a.region)
                print(f"mount {a.id}: {s3} is copied into {d} before each job that mounts it (keys: the job's "
                      f"project secrets {a.access_key_secret}, {a.secret_key_secret})", file=sys.stderr)
            else:
                reg.add(a.id, a.dir)
        except EngineError as e:
            print(f"error: {e.message}", file=sys.stderr)
            return 2
    elif a.dirs_cmd == "rm":
        reg.remove(a.id)
    else:
        for k, v in reg.all().items():
            print(f"{k}\t{v['dir']}\t{v.get('name', '')}")
    return 0


def cmd_image(a) -> int:
    from engine.resources import Images
    images = Images(_data_dir(a))
    if a.image_cmd == "add":
        images.add(a.id, a.image)
    elif a.image_cmd == "rm":
        images.remove(a.id)
    else:
        for k, v in images.all().items():
            print(f"{k}\t{v}")
    return 0


def cmd_spark(a) -> int:
    from engine.errors import EngineError
    from engine.resources import SparkConnectors
    reg = SparkConnectors(_data_dir(a))
    try:
        if a.spark_cmd == "add":
            conf = {}
            for item in a.conf:
                k, eq, v = item.partition("=")
                if not eq or not k:
                    print(f"error: --conf {item!r}: expected KEY=VALUE (e.g. spark.sql.shuffle.partitions=4)",
                          file=sys.stderr)
                    return 2
                conf[k] = v
            reg.add(a.id, conf)
            print(f"spark connector {a.id}: a local Spark (local[<vCPUs of the instance type>])"
                  + (f" with {len(conf)} setting(s)" if conf else ""), file=sys.stderr)
        elif a.spark_cmd == "rm":
            reg.remove(a.id)
        else:
            for k, v in reg.all().items():
                print(f"{k}\t" + " ".join(f"{ck}={cv}" for ck, cv in sorted((v.get("conf") or {}).items())))
    except EngineError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2
    return 0


def cmd_ui(a) -> int:
    from dsjobs import discovery
    endpoint = a.endpoint or os.environ.get("DSJOBS_ENDPOINT")
    if endpoint:
        desc = discovery.find_descriptor(endpoint)
        if desc is None:
            print(f"error: no dsjobs engine serves {endpoint} on this machine (is `dsjobs serve` running?)",
                  file=sys.stderr)
            return 1
    else:
        desc = discovery.find_descriptor(DEFAULT_ENDPOINT)
        if desc is None:
            with_ui = [d for d in discovery.descriptors() if d.get("ui_url")]
            if len(with_ui) != 1:
                print("error: " + ("no dsjobs engine with a web UI runs on this machine (`dsjobs serve` starts one)"
                                   if not with_ui else "several dsjobs engines run here: say which with --endpoint "
                                   + " or ".join(d["endpoint"] for d in with_ui)), file=sys.stderr)
                return 1
            desc = with_ui[0]
    if not desc.get("ui_url"):
        print(f"error: the engine on {desc['endpoint']} serves no web UI (started with --no-ui, or without the "
              "`ui` extra: pip install 'dsjobs[ui]')", file=sys.stderr)
        return 1
    token = discovery.find_token(desc["endpoint"], getattr(a, "token_file", None)) if desc.get("token_path") \
        else None
    if desc.get("token_path") and not token:
        print(f"error: the token of the engine on {desc['endpoint']} was not found (--token-file FILE, or "
              "$DSJOBS_TOKEN)", file=sys.stderr)
        return 1
    path = f"/jobs/{a.job_id}" if a.job_id else "/"
    _show_page(desc["ui_url"].rstrip("/"), path, token, desc.get("token_path", ""), browser=not a.no_browser)
    return 0


def cmd_datasphere(a) -> int:
    from dsjobs import official
    endpoint = a.endpoint or os.environ.get("DSJOBS_ENDPOINT") or DEFAULT_ENDPOINT
    return official.run(a.args, endpoint, a.datasphere_python, getattr(a, "token_file", None))


def cmd_hook(a) -> int:
    from dsjobs import official
    try:
        py = official.find_python(a.python)
        if a.hook_cmd == "install":
            site, info = official.hook_install(py)
            print(f"hook installed in {site} (python {info['python']})")
            if not info["datasphere"]:
                print(f"note: {py} has no datasphere package yet: `{py} -m pip install datasphere==0.10.0`")
            elif info["datasphere"] != "0.10.0":
                print(f"note: the hook is written for datasphere 0.10.0; {py} has {info['datasphere']}")
            print("every use of datasphere there now talks to dsjobs when DSJOBS_ENDPOINT is set, e.g.\n"
                  "  export DSJOBS_ENDPOINT=127.0.0.1:9098")
        elif a.hook_cmd == "remove":
            site, removed = official.hook_remove(py)
            print(f"hook removed from {site}" if removed else f"no hook in {site}")
        else:
            st = official.hook_status(py)
            state = "installed" if st["current"] else "outdated" if st["installed"] else "not installed"
            print(f"{py}: hook {state} in {st['purelib']}; datasphere {st['datasphere'] or 'not installed'}")
            return 0 if st["current"] else 1
    except (official.HookError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dsjobs", description="Run Yandex DataSphere Jobs locally.")
    p.add_argument("--endpoint", help=f"dsjobs server HOST:PORT (default: $DSJOBS_ENDPOINT or {DEFAULT_ENDPOINT})")
    p.add_argument("--token-file", help="the engine's token (default: $DSJOBS_TOKEN, else found by the endpoint, "
                                        "else the default data dir's)")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a job from config.yaml with an embedded engine (no server)")
    r.add_argument("-c", "--config", required=True)
    r.add_argument("-p", "--project", default="local")
    r.add_argument("--data-dir", help="engine data dir (default: ~/.local/share/dsjobs)")
    r.add_argument("--output-dir", help="download outputs here instead of their declared paths")
    r.add_argument("--sandbox", choices=["bwrap", "none"], default="bwrap",
                   help="confine process jobs with bubblewrap (default), or run them unconfined")
    r.add_argument("--python", help="the Python `python: auto` analyses (default: the active venv's, else the "
                                    "`python` on PATH)")
    r.add_argument("--ui", action="store_true", help="serve the job's page while it runs, and open it")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("serve", help="serve the DataSphere Jobs gRPC API")
    s.add_argument("--listen", default=DEFAULT_ENDPOINT)
    s.add_argument("--data-dir")
    s.add_argument("--files-url", help="base URL clients use for uploads and downloads (default: the local one)")
    s.add_argument("--files-port", type=int, default=0)
    s.add_argument("--max-concurrent-jobs", type=int)
    s.add_argument("--max-job-duration", help="limit on any job's running time, e.g. 2h or 90s (default: none)")
    s.add_argument("--python", action="append", default=[], help="an extra Python interpreter for python_env jobs")
    s.add_argument("--pip-index-url", help="index for every job that does not name its own (a local mirror)")
    s.add_argument("--pip-extra-index-url", action="append", default=[])
    s.add_argument("--env-installer", choices=["auto", "uv", "pip"], default="auto")
    s.add_argument("--docker-network", default="auto",
                   help="auto (default: a bridge network of dsjobs's own, no route to the host's loopback; none "
                        "where Docker cannot make one), none, host, or an existing network's name")
    s.add_argument("--docker-build-network", help="network for python env builds inside an image (they need the "
                                                  "package index); default: as --docker-network")
    s.add_argument("--sandbox", choices=["bwrap", "none"], default="bwrap",
                   help="confine process jobs and env builds with bubblewrap (default), or run them unconfined")
    s.add_argument("--no-warm-sandboxes", dest="warm_sandboxes", action="store_false",
                   help="make every process job's sandbox at its start, instead of each project's next one before "
                        "the job (README, What a process job sees)")
    s.add_argument("--stop-jobs-on-exit", action="store_true", help="stop running jobs instead of leaving them")
    s.add_argument("--token-file", help="also accept the token in this file (besides DATA_DIR/token)")
    s.add_argument("--token", help="also accept this token (visible to every local user: prefer --token-file or "
                                   "$DSJOBS_TOKEN)")
    s.add_argument("--tokens-file", help="file of name:token lines; the name becomes the job's created_by")
    s.add_argument("--no-auth", action="store_true", help="accept calls without a token (loopback only)")
    s.add_argument("--insecure-listen", action="store_true", help="allow a non-loopback address with --no-auth")
    s.add_argument("--tls-cert", metavar="FILE", help="serve the API and the file endpoint over TLS with this "
                                                      "certificate (PEM; for serving beyond loopback)")
    s.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    s.add_argument("--tls-ca", metavar="FILE", help="the CA the engine's own clients (dsjobs, the hooked official "
                                                    "client) check --tls-cert against, recorded for them (a "
                                                    "self-signed certificate: the certificate itself); default: "
                                                    "the system's roots")
    s.add_argument("--files-host", default="127.0.0.1", help="address of the file endpoint (agents on Ray nodes "
                                                               "must reach it)")
    s.add_argument("--backend", choices=["local", "ray"], default="local", help="where jobs run (default: local)")
    s.add_argument("--project-backend", action="append", default=[], metavar="PROJECT=BACKEND",
                   help="pin one project's jobs to a backend, over --backend")
    s.add_argument("--ray-address", help="the Ray head's dashboard URL, e.g. http://HEAD:8265")
    s.add_argument("--ray-token-file", help="file holding the Ray cluster's auth token (RAY_AUTH_MODE=token)")
    s.add_argument("--ray-agent-python", help="Python with dsjobs installed on the Ray nodes (default: python3)")
    s.add_argument("--ray-engine-url", help="how agents on the nodes reach this engine (default: the files URL)")
    s.add_argument("--ray-node-dir", help="working dirs and caches of the agents on each node")
    s.add_argument("--log-limit", metavar="SIZE", help="bytes kept of each of a job's streams (stdout, stderr), "
                                                       "then a marker (default: 100MB, the cloud's)")
    s.add_argument("--ui-listen", default="127.0.0.1:0", metavar="HOST:PORT",
                   help="where the web UI (the job pages) listens, on loopback (default: any free port on 127.0.0.1)")
    s.add_argument("--no-ui", action="store_true", help="serve no web UI")
    s.add_argument("--sa-token-file", help="a service-account token for the jobs of every project without one of "
                                           "its own (dsjobs secret set --sa-token): SA_TOKEN_FILENAME")
    s.add_argument("--mig-fallback", choices=["refuse", "shared"], default="refuse",
                   help="g2.mig where no GPU is in MIG mode: refuse the job (default), or give it a whole GPU, "
                        "shared with other g2.mig jobs (said loudly in its system log)")
    s.add_argument("--cloud-like-default", metavar="IMAGE",
                   help="run every job without env.docker inside IMAGE, as the cloud runs them in its default "
                        "image (working dir /job, python envs built inside it)")
    s.add_argument("--log-level", default="info")
    s.set_defaults(func=cmd_serve)

    u = sub.add_parser("ui", help="open the engine's job pages (or one job's) in a browser, logged in")
    u.add_argument("job_id", nargs="?", help="a job to open (default: the projects)")
    u.add_argument("--no-browser", action="store_true",
                   help="start no browser: print a URL that logs in (only to a terminal) or the page's URL")
    u.set_defaults(func=cmd_ui)

    env = sub.add_parser("env", help="the Python environment cache").add_subparsers(dest="env_cmd", required=True)
    el = env.add_parser("list")
    el.add_argument("--data-dir")
    el.add_argument("--format", choices=["table", "json"], default="table")
    el.set_defaults(func=cmd_env)
    ep = env.add_parser("prune", help="remove cached environments (all, or those unused for --older-than)")
    ep.add_argument("--data-dir")
    ep.add_argument("--older-than", help="e.g. 7d, 12h")
    ep.set_defaults(func=cmd_env)

    ds = sub.add_parser("datasphere", help="run the official datasphere CLI against dsjobs (ARGS as it takes them)")
    ds.add_argument("--datasphere-python", help="python of the official CLI's environment "
                                                "(default: $DSJOBS_DATASPHERE_PYTHON, or the one `datasphere` runs)")
    ds.add_argument("args", nargs=argparse.REMAINDER)
    ds.set_defaults(func=cmd_datasphere)

    hk = sub.add_parser("hook", help="point every use of an official datasphere client (CLI, SDK, Airflow tasks, "
                                     "the VS Code toolkit) at dsjobs whenever DSJOBS_ENDPOINT is set")
    hk_sub = hk.add_subparsers(dest="hook_cmd", required=True)
    for name, text in (("install", "install the hook into that Python's site-packages"),
                       ("remove", "take it out again"), ("status", "whether it is installed and current")):
        x = hk_sub.add_parser(name, help=text)
        x.add_argument("--python", help="the client's interpreter (default: $DSJOBS_DATASPHERE_PYTHON, the one "
                                        "`datasphere` on PATH runs, or this one)")
        x.set_defaults(func=cmd_hook)

    sec = sub.add_parser("secret", help="project secrets (exported to jobs; docker registry passwords)")
    sec_sub = sec.add_subparsers(dest="secret_cmd", required=True)
    for name in ("set", "list", "rm"):
        x = sec_sub.add_parser(name)
        x.add_argument("--project", default="local")
        x.add_argument("--data-dir")
        if name != "list":
            x.add_argument("name", nargs="?")
            x.add_argument("--sa-token", action="store_true",
                           help="the project's service-account token (from stdin): its jobs get the file "
                                "SA_TOKEN_FILENAME names, as in the cloud")
        x.set_defaults(func=cmd_secret)
    for kind, helptext in (("mount", "S3 mounts: a resource id -> a local directory"),
                           ("dataset", "datasets: a resource id -> a local directory")):
        k = sub.add_parser(kind, help=helptext).add_subparsers(dest="dirs_cmd", required=True)
        y = k.add_parser("add")
        y.add_argument("id")
        y.add_argument("dir", nargs="?")
        if kind == "mount":
            y.add_argument("--s3", metavar="ENDPOINT/BUCKET[/PREFIX]",
                           help="back the mount by a real bucket: its objects are copied in before each job "
                                "(cached by ETag), and the job gets AWS_ENDPOINT_URL and the keys to write back")
            y.add_argument("--access-key-secret", default="AWS_ACCESS_KEY_ID",
                           help="the project secret holding the access key id (default: AWS_ACCESS_KEY_ID)")
            y.add_argument("--secret-key-secret", default="AWS_SECRET_ACCESS_KEY",
                           help="the project secret holding the secret key (default: AWS_SECRET_ACCESS_KEY)")
            y.add_argument("--region", default="us-east-1", help="the signing region (Object Storage: ru-central1)")
        y2 = k.add_parser("rm")
        y2.add_argument("id")
        y3 = k.add_parser("list")
        for y in (y, y2, y3):
            y.add_argument("--data-dir")
            y.set_defaults(func=cmd_dirs, kind=kind)

    from dsjobs import repro  # fault, check, replay: reproducing cloud failures locally
    repro.add_commands(sub)

    img = sub.add_parser("image", help="map docker_image_resource_id values to local images")
    img_sub = img.add_subparsers(dest="image_cmd", required=True)
    x = img_sub.add_parser("add")
    x.add_argument("id")
    x.add_argument("image")
    x2 = img_sub.add_parser("rm")
    x2.add_argument("id")
    x3 = img_sub.add_parser("list")
    for x in (x, x2, x3):
        x.add_argument("--data-dir")
        x.set_defaults(func=cmd_image)

    spk = sub.add_parser("spark", help="Spark connectors: a connector id -> a local Spark (SDK().connect_to_spark())")
    spk_sub = spk.add_subparsers(dest="spark_cmd", required=True)
    x = spk_sub.add_parser("add", help="register a local Spark for a connector id")
    x.add_argument("id")
    x.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                   help="a Spark session setting, over the engine's (repeatable)")
    x2 = spk_sub.add_parser("rm")
    x2.add_argument("id")
    x3 = spk_sub.add_parser("list")
    for x in (x, x2, x3):
        x.add_argument("--data-dir")
        x.set_defaults(func=cmd_spark)

    proj = sub.add_parser("project", help="jobs of a server's projects, as the official CLI's `project job`") \
        .add_subparsers(dest="project_cmd", required=True)
    job = proj.add_parser("job", help="execute, fork, attach, list, get, cancel, delete jobs; their TTL and files") \
        .add_subparsers(dest="job_cmd", required=True)
    py_help = "the Python `python: auto` analyses (default: the active venv's, else the `python` on PATH)"
    e = job.add_parser("execute", help="create a job from config.yaml, run it, follow it, download its outputs")
    e.add_argument("-p", "--project-id", required=True, help="project ID")
    e.add_argument("-c", "--config", required=True, help="config file")
    e.add_argument("--async", dest="async_", action="store_true", help="return once the job runs")
    e.add_argument("-o", "--output", help="file for the job's ids, in async mode")
    e.add_argument("--python", help=py_help)
    e.set_defaults(func=cmd_execute)
    f = job.add_parser("fork", help="run a job again with new arguments, files, env vars or environment")
    f.add_argument("--id", required=True, help="source job ID")
    f.add_argument("--arg", action="append", metavar="NAME=VALUE", help="new argument value")
    f.add_argument("--var", action="append", metavar="NAME=PATH", help="new path for an input or output variable")
    f.add_argument("--name", help="new job name")
    f.add_argument("--desc", help="new job description")
    f.add_argument("--env-var", action="append", metavar="NAME=VALUE", help="environment variable")
    f.add_argument("--docker-image-id", help="ID of a Docker image resource")
    f.add_argument("--docker-image-url", help="URL of a Docker image")
    f.add_argument("--docker-image-username", help="username for the Docker image")
    f.add_argument("--docker-image-password-secret-id", help="secret holding the Docker image's password")
    f.add_argument("--working-storage-size", help="working storage size, e.g. 200Gb")
    f.add_argument("--cloud-instance-type", action="append", help="instance type(s), tried in order")
    f.add_argument("--async", dest="async_", action="store_true", help="return once the job runs")
    f.add_argument("-o", "--output", help="file for the job's ids, in async mode")
    f.set_defaults(func=cmd_fork)
    at = job.add_parser("attach", help="follow a running job (its logs from now, then its outputs)")
    at.add_argument("--id", required=True, help="job ID")
    at.set_defaults(func=cmd_attach)
    ls = job.add_parser("list", help="a project's jobs, newest first")
    ls.add_argument("-p", "--project-id", required=True, help="project ID")
    ls.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    ls.add_argument("-o", "--output", help="output file (stdout by default)")
    ls.add_argument("--filter", help="e.g. 'status IN (EXECUTING, UPLOADING_OUTPUT)'")
    ls.set_defaults(func=cmd_list)
    g = job.add_parser("get", help="one job, with what happened to it")
    g.add_argument("--id", required=True, help="job ID")
    g.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    g.add_argument("-o", "--output", help="output file (stdout by default)")
    g.set_defaults(func=cmd_get)
    dl = job.add_parser("delete", help="delete a finished job and its data")
    dl.add_argument("--id", required=True, help="job ID")
    dl.set_defaults(func=cmd_delete)
    c = job.add_parser("cancel", help="cancel a job")
    c.add_argument("--id", required=True, help="job ID")
    c.add_argument("-g", "--graceful", action="store_true", help="the job's graceful-shutdown signal first")
    c.set_defaults(func=cmd_cancel)
    t = job.add_parser("set-data-ttl", help="how long the job's data is kept")
    t.add_argument("--id", required=True, help="job ID")
    t.add_argument("--days", required=True, help='days, or "infinity"')
    t.set_defaults(func=cmd_set_ttl)
    d = job.add_parser("download-files", help="download a job's outputs (and logs, diagnostics)")
    d.add_argument("--id", required=True, help="job ID")
    d.add_argument("--with-logs", action="store_true", help="also stdout.txt, stderr.txt, system.log")
    d.add_argument("--with-diagnostics", action="store_true", help="also the diagnostics files")
    d.add_argument("--output-dir", help="download everything into this directory")
    d.set_defaults(func=cmd_download)
    return p


_GLOBAL_OPTIONS_WITH_VALUE = ("--endpoint", "--token-file")


def _command_index(argv: list[str]) -> Optional[int]:
    """Where the command is in ``argv`` (after dsjobs's own global options), or None."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _GLOBAL_OPTIONS_WITH_VALUE:
            i += 2
        elif arg.startswith("-"):
            i += 1
        else:
            return i
    return None


def _exit_now(rc: int) -> None:
    """End the process as the interpreter does, less its teardown of every module: the threads and atexit handlers
    are waited for and the output flushed as at any exit, then os._exit. (Tearing down grpc's core takes ~50 ms,
    several times that on a busy machine, after the job's outputs and its record are all on disk.)"""
    import atexit
    shutdown, exit_funcs = getattr(threading, "_shutdown", None), getattr(atexit, "_run_exitfuncs", None)
    if shutdown is None or exit_funcs is None:  # not CPython's: the ordinary exit
        return
    shutdown()  # what the interpreter's exit calls first: joins the threads that are not daemons
    exit_funcs()
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said there
            pass
    os._exit(rc)


def main(argv: Optional[list[str]] = None) -> int:
    """The command line; ``argv`` None: this process's own (then `dsjobs run` ends the process itself)."""
    as_program = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    i = _command_index(argv)
    if i is not None and argv[i] == "datasphere":
        # Everything after `datasphere` belongs to the official CLI, its own options first included.
        head, tail = argv[:i], argv[i + 1:]
        py = None
        if tail[:1] == ["--datasphere-python"] and len(tail) > 1:
            py, tail = tail[1], tail[2:]
        a = parser().parse_args(head + ["datasphere"])
        a.args, a.datasphere_python = tail, py
        return a.func(a)
    a = parser().parse_args(argv)
    from engine.errors import EngineError
    try:
        rc = a.func(a)
    except grpc.RpcError as e:
        print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    except EngineError as e:  # a local command (secret, image, mount...) refused its input
        print(f"error: {e.message}", file=sys.stderr)
        return 1
    if as_program and a.func is cmd_run and isinstance(rc, int):
        _exit_now(rc)
    return rc


if __name__ == "__main__":
    sys.exit(main())
