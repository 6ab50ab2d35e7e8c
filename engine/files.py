"""Signed upload/download URLs and the HTTP endpoint that serves the blob store on loopback.

A URL is ``{base}/blobs/{sha256}?size=N&exp=T&sig=S`` where S = HMAC-SHA256(key, method|sha256|size|exp):
an upload URL cannot be used to download, nor for another object, size or expiry, and it stops working at T.
The official client PUTs the raw bytes and GETs the whole body; nothing else is needed from it.
"""
from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import secrets
import socket
import ssl
import struct
import sys
import threading
import time
import types
from typing import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from engine.cas import SHA_RE, BlobStore, DigestMismatch
from engine.errors import EngineError

log = logging.getLogger(__name__)
# Any local process, a job included, can connect before it shows a signature: what connections may hold is bounded.
MAX_CONNECTIONS = 256  # open at once, a thread each; more are closed as they come
HEAD_TIMEOUT_S = 10.0  # for a request's line and headers, from their first byte (_HeadReader)
UPLOAD_BUFFER = 1 << 20  # measured (bench/bench_files.py): 4 MiB reads stall the loopback stream, 2-4x slower


def load_key(path: Path) -> bytes:
    """The signing key, created on first use, readable by its owner only."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return key


class Signer:
    def __init__(self, key: bytes, base_url: str, ttl_s: float = 3600.0, clock=time.time):
        self.key = key
        self.base_url = base_url.rstrip("/")
        self.ttl_s = ttl_s
        self.clock = clock

    def _sig(self, method: str, sha: str, size: int, exp: int) -> str:
        msg = f"{method}|{sha}|{size}|{exp}".encode()
        return hmac.new(self.key, msg, hashlib.sha256).hexdigest()

    def url(self, method: str, sha: str, size: int, ttl_s: float | None = None) -> str:
        exp = int(self.clock() + (self.ttl_s if ttl_s is None else ttl_s))
        return f"{self.base_url}/blobs/{sha}?size={size}&exp={exp}&sig={self._sig(method, sha, size, exp)}"

    def verify(self, method: str, sha: str, query: dict) -> int:
        """The signed size when the URL is valid for this method and object; raises PermissionError otherwise."""
        try:
            size, exp, sig = int(query["size"][0]), int(query["exp"][0]), query["sig"][0]
        except (KeyError, ValueError, IndexError):
            raise PermissionError("missing or malformed signature parameters") from None
        if not hmac.compare_digest(self._sig(method, sha, size, exp), sig):
            raise PermissionError("bad signature")
        if self.clock() > exp:
            raise PermissionError("URL expired")
        return size


def _answered(fn):
    """Every request gets an answer: a malformed one 400, a failure of the engine 500 (logged), never a
    connection dropped without a word."""
    def handler(self):
        self.body_taken = False
        try:
            fn(self)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except DigestMismatch as e:
            self._reply(400, f"bad request: {e.message}")
        except Exception:  # noqa: BLE001
            log.exception("file endpoint: %s %s", self.command, urlsplit(self.path).path)
            try:
                self._reply(500, "internal error of the engine; see its log")
            except OSError:
                self.close_connection = True
    return handler


class _HeadReader(io.RawIOBase):
    """A connection's reads: waiting for a request, and in a body, each may take ``idle`` seconds (the endpoint's idle
    timeout); a request's line and headers, once their first byte is in, have HEAD_TIMEOUT_S in all, whatever
    trickles in meanwhile (a per-read timeout let a byte every 9 s hold a connection, and its slot, for good)."""

    def __init__(self, sock, idle: float):
        self.sock, self.idle = sock, idle
        self.head, self.deadline = False, None

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.head and self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"a request head not finished in {HEAD_TIMEOUT_S:g} s")
            self.sock.settimeout(min(left, self.idle))
        else:
            self.sock.settimeout(self.idle)
        n = self.sock.recv_into(b)
        if self.head and self.deadline is None and n:
            self.deadline = time.monotonic() + HEAD_TIMEOUT_S
        return n


class _Handler(BaseHTTPRequestHandler):
    server: "FileServer"
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # a garbage request line gets a status line too, not a bare page
    # A connection that sends nothing for this long (between requests, or in the middle of a body) is closed:
    # idle or stuck clients cannot hold the endpoint's threads.
    timeout = 60

    def setup(self) -> None:
        super().setup()
        self._reader = _HeadReader(self.connection, self.timeout)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        # From the first byte this request's head is read for, the head has HEAD_TIMEOUT_S in all.
        self._reader.head, self._reader.deadline = True, None
        super().handle_one_request()

    def parse_request(self) -> bool:
        ok = super().parse_request()  # the headers are in: a body (an upload, say) may take its time
        self._reader.head = False
        return ok

    def log_message(self, fmt, *args):  # the default logs whole URLs, signatures included
        log.debug("%s %s", getattr(self, "command", None), urlsplit(getattr(self, "path", "") or "").path)

    def _reply(self, code: int, text: str = "", headers: tuple = ()) -> None:
        body = (text + "\n").encode() if text else b""
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        if code >= 400:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self._body_out(body)

    def reply_text(self, code: int, text: str, headers: tuple = ()) -> None:
        """A plain-text answer (to a GET or a HEAD) for a mounted route."""
        self._reply(code, text, headers)

    def reply_json(self, code: int, obj: dict) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self._body_out(body)

    def _body_out(self, body: bytes) -> None:
        if self.command != "HEAD":  # a HEAD answer has the headers of the GET one, never a body
            self.wfile.write(body)

    def body_chunks(self):
        self.body_taken = True
        return self._body()

    def read_body(self, limit: int) -> bytes:
        self.body_taken = True
        return b"".join(self._body(limit=limit)) if self.headers.get("Content-Length") or \
            self.headers.get("Transfer-Encoding") else b""

    def drain(self) -> None:
        """Consume a body nobody read, so the connection stays usable for the next request (a malformed one
        closes the connection instead)."""
        if self.body_taken:
            return
        self.body_taken = True
        try:
            for _ in self._body():
                pass
        except DigestMismatch:
            self.close_connection = True

    def _mounted(self, method: str) -> bool:
        """Whether a mounted route (the runner channel, the job page) took the request; it answers every method,
        those it does not serve included."""
        url = urlsplit(self.path)
        self.body_taken = False
        for prefix, handler in self.server.routes.items():
            if url.path.startswith(prefix):
                handler(self, method, url.path.split("/"), url.query)
                return True
        if url.path.startswith("/runner/"):
            self.drain()
            self._reply(404, "this engine has no remote backend")
            return True
        return False

    @_answered
    def do_POST(self):
        if not self._mounted("POST"):
            self._reply(405, "method not allowed")

    @_answered
    def do_HEAD(self):
        if not self._mounted("HEAD"):
            self._reply(405, "method not allowed")

    def __getattr__(self, name: str):
        # Any other method (DELETE, OPTIONS, a made-up one): a mounted route says what it allows; elsewhere it
        # is not implemented, as before.
        if not name.startswith("do_"):
            raise AttributeError(name)
        return types.MethodType(_other_method, self)

    def _target(self, method: str):
        url = urlsplit(self.path)
        parts = url.path.split("/")
        if len(parts) != 3 or parts[1] != "blobs" or not SHA_RE.fullmatch(parts[2]):
            self._reply(404, "not found")
            return None
        try:
            size = self.server.signer.verify(method, parts[2], parse_qs(url.query))
        except PermissionError as e:
            self._reply(403, f"forbidden: {e}")
            return None
        return parts[2], size

    def _body(self, limit: int | None = None):
        """The request body in pieces of at most 1 MiB, never more than ``limit`` bytes read (a chunk that would
        pass it is refused before it is read: memory stays flat whatever size a client announces)."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            total = 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    n = int(line.split(b";")[0].strip() or b"0", 16)
                except ValueError:
                    raise DigestMismatch(f"malformed chunk size {line[:40]!r}") from None
                if n < 0:
                    raise DigestMismatch(f"malformed chunk size {line[:40]!r}")
                if n == 0:
                    self.rfile.readline(1024)
                    return
                total += n
                if limit is not None and total > limit:
                    raise DigestMismatch(f"body is longer than the declared size {limit}")
                while n > 0:
                    piece = self.rfile.read(min(n, 1 << 20))
                    if not piece:
                        raise DigestMismatch("body ended in the middle of a chunk")
                    n -= len(piece)
                    yield piece
                self.rfile.readline(1024)
        length = self.headers.get("Content-Length")
        if length is None:
            raise DigestMismatch("Content-Length or chunked encoding is required")
        try:
            remaining = int(length)
        except ValueError:
            raise DigestMismatch(f"malformed Content-Length {length[:40]!r}") from None
        if remaining < 0 or (limit is not None and remaining > limit):
            raise DigestMismatch(f"Content-Length {remaining} does not fit the declared size {limit}")
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                raise DigestMismatch(f"body ended {remaining} bytes before its Content-Length")
            remaining -= len(chunk)
            yield chunk

    def _body_views(self, limit: int):
        """The body as _body gives it, but a Content-Length one read straight into one reused buffer of UPLOAD_BUFFER
        (views of it: each is consumed, hashed and written, before the next read overwrites it)."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked" or self.headers.get("Content-Length") is None:
            yield from self._body(limit=limit)
            return
        remaining = int(self.headers["Content-Length"])  # checked by do_PUT: the URL's size
        buf = bytearray(min(remaining, UPLOAD_BUFFER))
        view = memoryview(buf)
        while remaining > 0:
            n = self.rfile.readinto(view[:min(remaining, len(buf))])
            if not n:
                raise DigestMismatch(f"body ended {remaining} bytes before its Content-Length")
            remaining -= n
            yield view[:n]

    @_answered
    def do_PUT(self):
        if self._mounted("PUT"):
            return
        target = self._target("PUT")
        if target is None:
            return
        sha, size = target
        declared = self.headers.get("Content-Length")
        if declared is not None and declared.strip() != str(size):
            self._reply(400, f"size invalid: Content-Length {declared[:40]}, the URL is for {size} bytes")
            return
        try:
            self.server.blobs.write(self._body_views(size), expect_sha=sha, expect_size=size)
        except DigestMismatch as e:
            self._reply(400, f"digest invalid: {e.message}")
            return
        except EngineError as e:
            self._reply(507, e.message)
            return
        self._reply(201)

    @_answered
    def do_GET(self):
        if self._mounted("GET"):
            return
        target = self._target("GET")
        if target is None:
            return
        sha, _ = target
        try:
            f = open(self.server.blobs.path(sha), "rb")
        except FileNotFoundError:
            self._reply(404, "no such object (its data may have been deleted)")
            return
        with f:
            size = os.fstat(f.fileno()).st_size
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.flush()
            sent = _send_file(self.connection, f, size)
            if sent != size:
                self.close_connection = True  # the blob got shorter under us, or the reader stalled


def _send_file(conn, f, size: int) -> int:
    """sendfile(2) from the blob's pages to the socket, blocking, each call as large as the kernel takes: the
    thread holds the GIL once per call, not once per socket buffer (socket.sendfile on a socket with a timeout
    selects and sends a buffer at a time, and with the engine's other threads busy each wakeup waits for the GIL:
    2x slower measured, a read/write loop 10x). The idle timeout stays, as the kernel's SO_SNDTIMEO. A TLS socket
    sends through its own buffer (socket.sendfile's fallback). Only the size announced is sent."""
    if isinstance(conn, ssl.SSLSocket):
        return conn.sendfile(f, 0, size)
    idle = conn.gettimeout()
    if idle is not None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", int(idle), int(idle % 1 * 1e6)))
    conn.settimeout(None)
    sent = 0
    try:
        while sent < size:
            try:
                n = os.sendfile(conn.fileno(), f.fileno(), sent, size - sent)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):  # BlockingIOError: SO_SNDTIMEO, the
                break  # reader took nothing for `idle` seconds
            if n == 0:  # the file ends before `size`
                break
            sent += n
    finally:
        conn.settimeout(idle)
    return sent


@_answered
def _other_method(self: _Handler) -> None:
    if not self._mounted(self.command):
        self._reply(501, f"method {self.command[:20]!r} not implemented")


class FileServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # socketserver's default backlog is 5: a few clients connecting at once (uploads in parallel, agents, a page's
    # fetches) while this process waits for a core filled it, and the kernel dropped each SYN beyond it, retried by
    # the client a second later (measured: 60 connections one after another took 9 s, the worst 1.03 s).
    request_queue_size = 512

    def __init__(self, addr: tuple[str, int], blobs: BlobStore, signer: Callable[[str], Signer],
                 idle_timeout_s: float = 60.0, tls: tuple[str, str] | None = None):
        """``signer`` makes the URL signer from the base URL of the port the server got; ``tls``: (cert file, key
        file) to serve HTTPS, as the gRPC API does when it has them (a client beyond loopback needs both)."""
        self.blobs = blobs
        self.routes: dict[str, Callable] = {}  # path prefix -> handler(request, method, parts, query)
        self.idle_timeout_s = idle_timeout_s
        super().__init__(addr, type("Handler", (_Handler,), {"timeout": idle_timeout_s}))
        self.tls = None
        if tls is not None:
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.load_cert_chain(*tls)
        self.signer = signer(f"{'https' if self.tls else 'http'}://{addr[0]}:{self.server_address[1]}")
        self._thread: threading.Thread | None = None
        # Unbounded, connections that send nothing took a thread and a descriptor each, until the engine had none
        # left for its API.
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread for it (RuntimeError: can't start new thread)
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        """With TLS, the handshake happens here, in the connection's own thread (never in the accepting one, where a
        slow or silent client would hold up every other)."""
        try:
            if self.tls is not None:
                try:
                    request.settimeout(min(HEAD_TIMEOUT_S, self.idle_timeout_s))
                    request = self.tls.wrap_socket(request, server_side=True)
                except OSError:
                    self.shutdown_request(request)
                    return
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def mount(self, prefix: str, handler: Callable) -> None:
        """Routes beside the blobs: a backend's (the runner channel's /runner/), the job page's
        (/communities/). ``handler(request, method, parts, query)`` answers every method of its paths."""
        self.routes[prefix] = handler

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return  # the other side went away (an agent that exited during its long poll): nothing to tell
        super().handle_error(request, client_address)

    def start(self) -> None:
        # No poll interval: the serving thread sleeps in select() until a connection comes or stop() wakes it
        # (socketserver's default would make every stop wait up to 0.5 s for the next poll).
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": None},
                                        name="dsjobs-files", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        try:  # wakes the select(); accept() then fails at once until shutdown() has set its flag
            self.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if getattr(self, "_thread", None) is not None:  # shutdown() waits for a serve_forever() that must have run
            self.shutdown()
        self.server_close()
