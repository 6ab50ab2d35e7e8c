"""Who may see the job pages, and from where: the API's tokens, a session cookie, CSRF tokens, and the engine's
own address only.

- A page or stream needs the session cookie (or ``?token=T``, which logs in); the cookie holds an HMAC of the
  token, never the token, under a key derived from the engine's signing key, so it survives a restart and means
  nothing to anyone else. Its name carries the port: cookies ignore ports, so two engines on 127.0.0.1 would
  otherwise overwrite each other's.
- ``?token=T`` is answered with 200, Set-Cookie and a meta refresh to the same URL without the token. A 303 would
  be simpler, but a SameSite=Strict cookie set on a redirect of a navigation that began on another site (a link
  in a local app) is not sent on the redirected request, and the page stays logged out even after a reload; the
  refresh is a navigation of our own site, which sends it.
- Every request must name the engine's own address in Host (a DNS name rebound to 127.0.0.1 must not reach the
  pages) and, when it has one, in Origin; every write needs the CSRF token of its session. SameSite does not help
  here: every port of localhost is the same site.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from typing import Callable, Optional
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.responses import HTMLResponse, PlainTextResponse, Response

SAFE = ("GET", "HEAD")
MAX_FORM = 64 << 10  # the page's forms are a few fields; anything bigger is not one of them
_LEADING_SLASHES = re.compile(r"^[/\\]+")


# A browser drops ASCII tabs and newlines anywhere in a URL before it parses it (the URL standard), so "/\t/host"
# is "//host" to it: they go first, and any other control character makes the target no path of ours.
_DROPPED = str.maketrans("", "", "\t\n\r")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def local_path(target: str) -> str:
    """``target`` as a path of this site: never //host or /\\host, which browsers read as another site."""
    target = target.translate(_DROPPED)
    if not target.startswith("/") or _CONTROL.search(target):
        return "/"
    return _LEADING_SLASHES.sub("/", target)


class Gate:
    def __init__(self, auth, key: bytes, host: str, port: int, render: Callable[..., str]):
        """``auth``: the API's (engine/api/auth.py Auth), so the pages take exactly the API's tokens."""
        self.auth = auth
        self.key = hmac.new(key, b"dsjobs job pages", hashlib.sha256).digest()
        self.cookie = f"dsjobs-ui-{port}"
        literal = f"[{host}]" if ":" in host else host
        self.hosts = {f"{literal}:{port}", f"localhost:{port}"}
        self.origins = {f"http://{h}" for h in self.hosts}
        self.render = render
        self._sessions = {self._mac("session", tok): name for tok, name in auth.tokens.items()} \
            if auth.required else {}

    def _mac(self, what: str, value: str) -> str:
        return hmac.new(self.key, f"{what}\0{value}".encode(), hashlib.sha256).hexdigest()

    def user(self, token: str) -> Optional[str]:
        """The token's user, or None; through the API's own check (every token compared, in constant time)."""
        if not self.auth.required:
            return self.auth.owner
        return self.auth.user([("authorization", f"Bearer {token}")]) if token else None

    def session_user(self, session: str) -> Optional[str]:
        if not self.auth.required:
            return self.auth.owner
        found, given = None, session.encode("utf-8", "replace")
        for value, name in self._sessions.items():
            if hmac.compare_digest(value.encode(), given):  # no early exit: nothing to time
                found = name
        return found

    def csrf(self, session: str) -> str:
        return self._mac("csrf", session or "anonymous")

    def login(self, token: str, target: str) -> Response:
        """The answer to a token (``?token=``, the login form): the cookie and a refresh to ``target``."""
        target = local_path(target)
        if self.user(token) is None:
            return HTMLResponse(self.render("login.html", target=target, error="That is not this engine's token."),
                                status_code=403, headers={"Cache-Control": "no-store"})
        # Its own URL has the token: no Referer from here, not even to this site's next page.
        r = HTMLResponse(self.render("loggedin.html", target=target),
                         headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
        if self.auth.required:
            r.set_cookie(self.cookie, self._mac("session", token), httponly=True, samesite="strict", path="/")
        return r


def _strip_token(scope) -> str:
    """The request's path (as sent: still percent-encoded) and query, without ``token``."""
    query = [(k, v) for k, v in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
             if k != "token"]
    path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    return path + (f"?{urlencode(query)}" if query else "")


class GateMiddleware:
    """Every request through the gate: address checks for all, a session for pages and streams (the vendored
    and static files are public), the CSRF token for every write."""

    def __init__(self, app, gate: Gate):
        self.app, self.gate = app, gate

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        g = self.gate
        headers = Headers(scope=scope)
        if headers.get("host", "") not in g.hosts:
            return await PlainTextResponse(
                f"this is not the engine's address (Host {headers.get('host', '')[:100]!r}); open "
                f"http://{sorted(g.hosts)[0]}/", 400)(scope, receive, send)
        origin = headers.get("origin")
        if origin is not None and origin not in g.origins:
            return await PlainTextResponse(f"requests from {origin[:100]!r} are refused: only the engine's own pages "
                                           "may send them", 403)(scope, receive, send)
        path, method = scope["path"], scope["method"]
        if path.startswith("/static/") or path == "/favicon.ico":
            return await self.app(scope, receive, send)
        token = dict(parse_qsl(scope["query_string"].decode("latin-1"))).get("token")
        if token is not None and method in SAFE:
            return await g.login(token, _strip_token(scope))(scope, receive, send)
        session = cookie_parser(headers.get("cookie", "")).get(g.cookie, "")
        user = g.session_user(session)
        state = scope.setdefault("state", {})
        state.update(user=user, csrf=g.csrf(session), gate=g)
        if path == "/login":
            return await self.app(scope, receive, send)
        if user is None:
            if path.startswith("/api/"):
                return await PlainTextResponse("log in first: open the page with ?token=<the engine's token>",
                                               401)(scope, receive, send)
            return await HTMLResponse(g.render("login.html", target=_strip_token(scope), error=""), 401,
                                      headers={"Cache-Control": "no-store"})(scope, receive, send)
        if method in SAFE:
            return await self.app(scope, receive, send)
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > MAX_FORM:
                return await PlainTextResponse("request body too large", 413)(scope, receive, send)
            if not message.get("more_body"):
                break
        sent = headers.get("x-csrf-token") or dict(parse_qsl(body.decode("latin-1"))).get("csrf", "")
        if not hmac.compare_digest(sent.encode("utf-8", "replace"), state["csrf"].encode()):
            return await PlainTextResponse("missing or wrong CSRF token: reload the page and try again",
                                           403)(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await self.app(scope, replay, send)
