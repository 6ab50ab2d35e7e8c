"""The runner channel: how an agent running a job on a remote node talks to the engine, over HTTP only (the agent's
side is runners/agent.py).

The agent always dials the engine; the backend (Ray) never carries job data. Routes, under ``/runner/<attempt>/``:

- ``GET spec`` with the one-time token from the entrypoint: the attempt's AttemptSpec (runners/spec.py) and the
  attempt token for every later call
  (the entrypoint is shown in Ray's dashboard, so what it carries must be useless once used);
- ``POST state`` {"status": "EXECUTING"|"UPLOADING_OUTPUT"}: the job's status as the node sees it;
- ``PUT journal?offset=N``: whole log records (runners/journal.py framing) at byte offset N of the node's
  journal; appended once, at that offset only, else 409 with the offset the engine has (the agent rewinds);
- ``PUT progress`` / ``PUT file?name=``: the job's progress file and small diagnostic files, whole;
- ``GET stop?wait=S``: long-poll for a stop request (also the agent's heartbeat);
- ``PUT blob?sha=&size=``: an output's bytes into the blob store, digest checked;
- ``PUT result``: the AttemptResult, outputs included; idempotent.

Attempts are fenced: once the engine declares an attempt lost, every call from it gets 410 Gone and its agent kills
its process tree and exits, so a job is never reported twice.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import struct
import threading
import time
from typing import Callable, Optional
from urllib.parse import parse_qs

from engine.backends.base import Sink
from engine.cas import SHA_RE, BlobStore, DigestMismatch
from engine.errors import EngineError
from engine.model import Attempt
from engine.records import Records
from engine.store import StaleWrite
from runners import journal
from runners.spec import JobFailure, StopRequest

log = logging.getLogger(__name__)
MARK_OFFSET = struct.Struct(">Q")
MAX_JOURNAL_PUT = 8 << 20
SMALL_FILES = {"docker_stats.tsv", "env_build.log"}


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Gone(Exception):
    """The attempt is fenced (lost) or unknown."""


class RunnerChannel:
    def __init__(self, records: Records, blobs: BlobStore, lease: Callable[[str], Callable[[str], None]],
                 spec_of: Callable[[Attempt], dict]):
        self.records = records
        self.store = records.store
        self.blobs = blobs
        self.lease = lease
        self.spec_of = spec_of
        self.sink: Optional[Sink] = None  # set when the backend opens
        self._cv = threading.Condition()
        self._stops: dict[str, StopRequest] = {}
        self._received: dict[str, int] = {}
        self._journal_mu = threading.Lock()
        self.last_seen: dict[str, float] = {}  # attempt -> monotonic time of its agent's last call
        self.closed = False

    def close(self) -> None:
        """The engine is stopping: long polls end, and agents are told to retry (503) until it is back."""
        with self._cv:
            self.closed = True
            self._cv.notify_all()

    # --- engine side ---------------------------------------------------------------------------------------------

    def new_attempt(self, job_id: str, backend: str, **fields) -> tuple[Attempt, str]:
        n = len(self.store.attempts(job_id=job_id)) + 1
        token = secrets.token_urlsafe(24)
        a = Attempt(id=f"dsjobs-{job_id}-{n}", job_id=job_id, backend=backend, spec_token_sha=_sha(token),
                    submitted_at=time.time(), **fields)
        self.store.put_attempt(a)
        return a, token

    def request_stop(self, attempt_id: str, request: StopRequest) -> None:
        with self._cv:
            prev = self._stops.get(attempt_id)
            if prev is not None and prev.forced:
                return  # a forced stop is never softened by a later graceful one
            self._stops[attempt_id] = request
            self._cv.notify_all()

    def stop_request(self, attempt_id: str) -> Optional[StopRequest]:
        with self._cv:
            return self._stops.get(attempt_id)

    def fence(self, attempt_id: str, reason: str) -> bool:
        """Declare the attempt lost; False when its result arrived first (then the result stands)."""
        with self._cv:
            a = self.store.get_attempt(attempt_id)
            if a is None or a.state in ("DONE", "LOST"):
                return a is not None and a.state == "LOST"
            a.state, a.reason = "LOST", reason
            self.store.put_attempt(a)
            self._cv.notify_all()
            return True

    def wait(self, attempt_id: str, timeout: float) -> Optional[Attempt]:
        """The attempt once it is DONE or LOST; None while it runs after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                a = self.store.get_attempt(attempt_id)
                if a is not None and a.state in ("DONE", "LOST"):
                    return a
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cv.wait(left)

    # --- HTTP side -------------------------------------------------------------------------------------------------

    def handle(self, h, method: str, parts: list[str], query: str) -> None:
        """``h`` is the file server's request handler; parts = ["", "runner", attempt, verb]."""
        if len(parts) != 4:
            return h.reply_json(404, {"error": "not found"})
        aid, verb = parts[2], parts[3]
        q = {k: v[0] for k, v in parse_qs(query).items()}
        if self.closed:
            h.drain()
            return h.reply_json(503, {"error": "the engine is stopping; retry"})
        try:
            a = self.store.get_attempt(aid)
            if a is None:
                raise Gone(f"attempt {aid!r} is unknown")
            token = h.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if verb == "spec" and method == "GET":
                return self._spec(h, a, token)
            if not a.token_sha or not hmac.compare_digest(_sha(token), a.token_sha):
                return h.reply_json(403, {"error": "bad attempt token"})
            if a.state == "LOST":
                raise Gone(f"attempt {aid} was declared lost: {a.reason}")
            self.last_seen[aid] = time.monotonic()
            route = {("POST", "state"): self._state, ("PUT", "journal"): self._journal,
                     ("PUT", "progress"): self._progress, ("PUT", "file"): self._file, ("GET", "stop"): self._stop,
                     ("PUT", "blob"): self._blob, ("PUT", "result"): self._result}.get((method, verb))
            if route is None:
                return h.reply_json(404, {"error": f"no route {method} {verb}"})
            if a.state == "DONE" and verb != "result":
                raise Gone(f"attempt {aid} is finished")
            return route(h, a, q)
        except Gone as e:
            h.drain()
            return h.reply_json(410, {"error": str(e)})
        except (ValueError, KeyError, DigestMismatch) as e:
            h.drain()
            return h.reply_json(400, {"error": f"bad request: {e}"})
        except (BrokenPipeError, ConnectionResetError):
            raise  # the agent went away (exited during a long poll): the server drops the connection quietly
        except Exception as e:  # noqa: BLE001 - e.g. the store closing under a long poll: the agent retries
            if not self.closed:
                log.exception("runner channel: %s %s of %s", method, verb, aid)
            return h.reply_json(503, {"error": f"the engine could not serve this call: {type(e).__name__}"})

    def _spec(self, h, a: Attempt, token: str) -> None:
        with self._cv:
            a = self.store.get_attempt(a.id)
            if not hmac.compare_digest(_sha(token), a.spec_token_sha):
                return h.reply_json(403, {"error": "bad spec token"})
            if a.state != "SUBMITTED":
                raise Gone(f"the spec of attempt {a.id} was already fetched (state {a.state})")
            attempt_token = secrets.token_urlsafe(32)
            a.state, a.token_sha = "RUNNING", _sha(attempt_token)
            self.store.put_attempt(a, expect="SUBMITTED")
        self.last_seen[a.id] = time.monotonic()
        try:
            spec = self.spec_of(a)
        except (EngineError, JobFailure) as e:
            self.fence(a.id, e.message)
            raise Gone(e.message) from None
        h.reply_json(200, {"token": attempt_token, **spec})

    def _state(self, h, a: Attempt, q: dict) -> None:
        body = json.loads(h.read_body(1 << 16) or b"{}")
        status = body.get("status")
        if status == "EXECUTING":
            at = body.get("at")
            ok = isinstance(at, (int, float)) and math.isfinite(at)  # (JSON may say NaN)
            self.sink.executing(a.job_id, a.instance, at=float(at) if ok else None)
        elif status == "UPLOADING_OUTPUT":
            self.sink.uploading(a.job_id)
        with self._cv:
            stop = self._stops.get(a.id)
        h.reply_json(200, {"stop": stop.as_dict() if stop else None})

    def received(self, a: Attempt) -> int:
        """How many bytes of the attempt's node journal the engine has (from the marks in its own journal)."""
        if a.id in self._received:
            return self._received[a.id]
        tag, got = a.id.encode() + b"\0", 0
        try:
            with open(self.records.journal(a.job_id), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
        for r in journal.parse(data, keep_marks=True):
            if r.stream == journal.Stream.MARK and r.content.startswith(tag):
                got = MARK_OFFSET.unpack(r.content[len(tag):])[0]
        self._received[a.id] = got
        return got

    def _journal(self, h, a: Attempt, q: dict) -> None:
        offset = int(q["offset"])
        body = h.read_body(MAX_JOURNAL_PUT)
        # Whole, well-formed records of the job's streams only: the journal is shared with the engine's lines.
        if journal.whole(body, streams=journal.Stream.OF_JOB) != len(body):
            raise ValueError("a partial or malformed record at the end of the body")
        with self._journal_mu:
            have = self.received(a)
            if offset != have:
                if offset < have and offset + len(body) <= have:
                    return h.reply_json(200, {"received": have})  # a resend of what is stored
                return h.reply_json(409, {"received": have})
            if body:
                now = have + len(body)
                tag = a.id.encode() + b"\0" + MARK_OFFSET.pack(now)
                # Records and the mark in one write: after a crash the mark says exactly what was stored.
                self.records.run(a.job_id).make()
                fd = journal.open_for_append(self.records.journal(a.job_id))
                try:
                    os.write(fd, body + journal.frame(journal.Stream.MARK, tag))
                finally:
                    os.close(fd)
                self._received[a.id] = now
        h.reply_json(200, {"received": self._received[a.id]})

    def _progress(self, h, a: Attempt, q: dict) -> None:
        body = h.read_body(1 << 20)
        path = self.records.progress_path(a.job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(body)
        os.replace(tmp, path)
        h.reply_json(200, {})

    def _file(self, h, a: Attempt, q: dict) -> None:
        name = q["name"]
        if name not in SMALL_FILES:
            raise ValueError(f"file name {name!r} is not one of {sorted(SMALL_FILES)}")
        body = h.read_body(16 << 20)
        self.records.run(a.job_id).make()
        path = self.records.run_dir(a.job_id) / name
        tmp = path.with_name(name + ".tmp")
        tmp.write_bytes(body)
        os.replace(tmp, path)
        h.reply_json(200, {})

    def _stop(self, h, a: Attempt, q: dict) -> None:
        deadline = time.monotonic() + min(float(q.get("wait", 0)), 30.0)
        with self._cv:
            while True:
                stop = self._stops.get(a.id)
                left = deadline - time.monotonic()
                if stop is not None or left <= 0 or self.closed:
                    break
                self._cv.wait(left)
        if self.closed:
            return h.reply_json(503, {"error": "the engine is stopping; retry"})
        if self.store.get_attempt(a.id).state == "LOST":
            raise Gone(f"attempt {a.id} was declared lost")
        h.reply_json(200, {"stop": stop.as_dict() if stop else None})

    def _blob(self, h, a: Attempt, q: dict) -> None:
        sha, size = q["sha"], int(q["size"])
        if not SHA_RE.fullmatch(sha):
            raise ValueError(f"sha {sha!r} is not a sha256 digest")
        lease = self.lease(a.job_id)
        with self.blobs.lock(sha):  # the job's reference first, then whether the object exists (cas.py)
            lease(sha)
            have = self.blobs.has(sha)
        if have:
            h.drain()
            return h.reply_json(200, {})
        try:
            self.blobs.write(h.body_chunks(), expect_sha=sha, expect_size=size, lease=lease)
        except DigestMismatch as e:
            return h.reply_json(400, {"error": f"digest invalid: {e.message}"})
        except EngineError as e:
            return h.reply_json(507, {"error": e.message})
        h.reply_json(201, {})

    def _result(self, h, a: Attempt, q: dict) -> None:
        body = json.loads(h.read_body(16 << 20))
        with self._cv:
            a = self.store.get_attempt(a.id)
            if a.state == "DONE":
                return h.reply_json(200, {})  # a retry of a result that was stored
            if a.state == "LOST":
                raise Gone(f"attempt {a.id} was declared lost: {a.reason}")
            a.state, a.result = "DONE", body
            try:
                self.store.put_attempt(a, expect="RUNNING")
            except StaleWrite as e:
                raise Gone(str(e)) from None
            self._cv.notify_all()
        h.reply_json(200, {})
