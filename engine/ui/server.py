"""uvicorn in a thread of the engine's process, on a socket bound here.

Binding here, not in uvicorn, makes a busy port an OSError for the caller (uvicorn would log it and sys.exit in
its thread). uvicorn leaves signal handling alone off the main thread (the engine keeps its own), and stops when
``should_exit`` is set; the page's streams watch ``stopping`` so that it need not wait for them.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Callable, Optional

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

# The file endpoint's bounds (any local process, a job included, can connect before it has a token); here the
# deadline covers a request's body too, from its first byte (or the connection's start): the pages' forms are small.
from engine.files import HEAD_TIMEOUT_S, MAX_CONNECTIONS


class _Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's head and a cap on connections. uvicorn's only timer
    is keep-alive's, armed after a response and cancelled by the next request's first byte, so a connection that
    sent part of a request, or nothing, was held forever: one of the engine's descriptors each, until it had none
    left for the API (Create failed, "Too many open files")."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._head_timer = None
        if len(self.connections) > MAX_CONNECTIONS:
            transport.close()
            return
        self._arm()

    def _reading_request(self) -> bool:
        """Whether a request is being read: its head, or its body (a POST /login that announced a body and sent
        none held its connection for good, no token needed)."""
        return self.cycle is None or self.cycle.response_complete or self.cycle.more_body

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_late)

    def _head_late(self) -> None:
        self._head_timer = None
        if self._reading_request() and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._reading_request():
            self._arm()
        super().data_received(data)
        if not self._reading_request() and self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def connection_lost(self, exc) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)



class UiServer:
    def __init__(self, make_app: Callable[[int], object], host: str, port: int, stopping: threading.Event):
        """``make_app(port)``: the ASGI app, for the port the socket got."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        # A restarted engine takes its port back at once, while connections of the previous one are in TIME_WAIT:
        # browsers that follow a job reconnect to the same address.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError:
            self.sock.close()
            raise
        self.sock.set_inheritable(False)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.stopping = stopping
        # h11 (pure Python, _Protocol) whatever else is installed, so behaviour does not depend on httptools;
        # no proxy headers: any local process could claim any client address with them.
        config = uvicorn.Config(make_app(self.port), http=_Protocol, loop="asyncio", lifespan="off", log_config=None,
                                access_log=False, proxy_headers=False, server_header=False, date_header=True,
                                timeout_graceful_shutdown=3, timeout_keep_alive=30)
        self.server = uvicorn.Server(config)
        # Its lifecycle lines ("Started server process", ...) say nothing the engine's own lines do not.
        logging.getLogger("uvicorn.error").setLevel(max(logging.WARNING, logging.getLogger().level))
        self.thread = threading.Thread(target=self._run, name="dsjobs-ui", daemon=True)
        self.error: Optional[BaseException] = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except BaseException as e:  # noqa: BLE001 - uvicorn's SystemExit included: handed to start()
            self.error = e

    def start(self, timeout: float = 30.0) -> "UiServer":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the web UI did not start: {self.error!r}")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(10)
        self.sock.close()
