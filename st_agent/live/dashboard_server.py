"""The dashboard's web server: FastAPI on uvicorn, in a background thread.

Why this stack: FastAPI/Starlette are well kept, stream over WebSockets (uvicorn with
``websockets``) and need no build step; the page is plain JavaScript with canvas plots
and abcjs (vendored in ``st_agent/assets``) for the score, so nothing is fetched from
the network at page load (the Content-Security-Policy allows only this server).

Security (every HTTP and WebSocket request passes :class:`_Guard` first):

* binds ``127.0.0.1`` by default; another host only with ``allow_remote=True``
  (``--dashboard-host``), which logs a warning;
* a random per-launch token (``secrets.token_urlsafe``) in the URL printed on the
  terminal, exchanged at ``/?token=...`` for an HttpOnly, SameSite=Strict session
  cookie (the URL is then redirected to ``/``, so the token leaves the address bar);
  every other request needs that cookie (401 without it);
* ``Host`` must be a loopback name (``127.0.0.1``, ``localhost``, ``[::1]``) or the
  bound host, with the chosen port (403 otherwise: DNS rebinding); ``Origin``, when
  present, must be ``http://`` one of those (403); a WebSocket must carry an allowed
  ``Origin``;
* every state-changing request (``POST /api/control``) needs an allowed ``Origin``,
  a JSON body and the ``X-CSRF-Token`` header equal to the per-launch CSRF token that
  the page carries (a synchronizer token, 403 otherwise);
* a malformed control is refused by :meth:`DashboardHub.submit` (400 with a JSON
  ``{"error": ...}``); every refusal is logged.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from st_agent.errors import UsageError
from st_agent.live.dashboard import ControlRefused, DashboardHub

__all__ = ["COOKIE", "CSRF_HEADER", "DashboardServer", "is_loopback"]

logger = logging.getLogger(__name__)

#: Prefix of the session cookie's name; the name ends with the port
#: (:attr:`DashboardServer.cookie_name`): cookies are shared by every port of a host,
#: so two dashboards open at once (a session and a review) must not overwrite each
#: other's cookie.
COOKIE = "st_dashboard"
CSRF_HEADER = "x-csrf-token"
_WS_TICK_SEC = 0.03
_MAX_BODY = 16_384


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _asset(name: str) -> bytes:
    return resources.files("st_agent").joinpath("assets", name).read_bytes()


class DashboardServer:
    """Serve a :class:`DashboardHub` on a local port from a daemon thread.

    Parameters
    ----------
    hub : DashboardHub
    host : str
        Address to bind; a non-loopback one needs ``allow_remote``.
    port : int
        TCP port; 0 picks a free one.
    allow_remote : bool
        Allow a non-loopback ``host`` (the data is personal: a warning is logged).
    title : str
        Shown on the page.

    Raises
    ------
    UsageError
        A non-loopback host without ``allow_remote``, a bad port, or a port in use.
    """

    def __init__(self, hub: DashboardHub, host: str = "127.0.0.1", port: int = 0,
                 allow_remote: bool = False, title: str = "st-agent session") -> None:
        if not isinstance(host, str) or not host.strip():
            raise UsageError(f"--dashboard-host must be an address, got {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise UsageError(f"--dashboard-port must be an int in [0, 65535], got {port!r}")
        if not is_loopback(host) and not allow_remote:
            raise UsageError(f"the dashboard binds only to this machine (127.0.0.1); binding "
                             f"{host!r} needs --dashboard-host {host} given explicitly")
        self.hub, self.host, self.title = hub, host, title
        self.token = secrets.token_urlsafe(24)
        self.csrf = secrets.token_urlsafe(24)
        self._cookie_value = secrets.token_urlsafe(32)
        self._sock = self._bind(host, port)
        self.port = self._sock.getsockname()[1]
        #: Name of this launch's session cookie (``st_dashboard_<port>``).
        self.cookie_name = f"{COOKIE}_{self.port}"
        names = {"127.0.0.1", "localhost", "[::1]"}
        if not is_loopback(host):
            logger.warning("the dashboard listens on %s:%d: anyone who can reach it and has "
                           "the token sees this listener's state (personal data)",
                           host, self.port)
            names.add(f"[{host}]" if ":" in host else host)
        self.allowed_hosts = frozenset(f"{n}:{self.port}" for n in names)
        self.allowed_origins = frozenset(f"http://{h}" for h in self.allowed_hosts)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    @staticmethod
    def _bind(host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError as e:
            sock.close()
            raise UsageError(f"the dashboard cannot listen on {host}:{port} ({e}); choose "
                             "another --dashboard-port (0 picks a free one)") from e
        sock.listen(16)
        return sock

    @property
    def url(self) -> str:
        """The URL to open, with the token (``http://127.0.0.1:<port>/?token=...``)."""
        shown = "127.0.0.1" if is_loopback(self.host) else self.host
        if ":" in shown:
            shown = f"[{shown}]"
        return f"http://{shown}:{self.port}/?token={self.token}"

    def start(self, timeout_sec: float = 10.0) -> str:
        """Start serving in a daemon thread; return :attr:`url`."""
        import uvicorn

        config = uvicorn.Config(self._app(), log_config=None, log_level="warning",
                                access_log=False, lifespan="off", ws="websockets-sansio")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._sock]},
                                        name="st-dashboard", daemon=True)
        self._thread.start()
        end = time.monotonic() + timeout_sec
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > end:
                raise RuntimeError("the dashboard server did not start")
            time.sleep(0.01)
        return self.url

    def stop(self, grace_sec: float = 0.5) -> None:
        """Let open pages get the last messages, then stop the server."""
        if self._server is None:
            return
        time.sleep(grace_sec)
        self._stopping = True
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._sock.close()
        self._server = None

    # ------------------------------------------------------------------ app
    def _app(self) -> Any:
        from st_agent.live.dashboard_page import CSP, page_html

        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

        @app.get("/")
        def index(request: Request) -> Response:
            if "token" in request.query_params:  # the guard checked it
                resp = RedirectResponse("/", status_code=303)
                resp.set_cookie(self.cookie_name, self._cookie_value, httponly=True,
                                samesite="strict", path="/")
                return resp
            return HTMLResponse(page_html(self.title, self.csrf),
                                headers={"Content-Security-Policy": CSP,
                                         "Cache-Control": "no-store",
                                         "X-Frame-Options": "DENY",
                                         "Referrer-Policy": "no-referrer"})

        @app.get("/dashboard.js")
        def script() -> Response:
            return Response(_asset("dashboard.js"), media_type="text/javascript")

        @app.get("/abcjs.js")
        def abcjs() -> Response:
            return Response(_asset("abcjs-basic-min.js"), media_type="text/javascript")

        @app.get("/api/messages")
        def messages(since: int = 0) -> Response:
            batch, last = self.hub.messages_since(since)
            return JSONResponse({"messages": batch, "last": last})

        @app.post("/api/control")
        async def control(request: Request) -> Response:
            return self._control(await request.body(), JSONResponse)

        @app.websocket("/ws")
        async def ws(websocket: WebSocket) -> None:
            await self._stream(websocket)

        return _Guard(app, self)

    def _control(self, body: bytes, json_response: Callable[..., Any]) -> Any:
        if len(body) > _MAX_BODY:
            return _refuse(json_response, 413, f"a control is at most {_MAX_BODY} bytes")
        try:
            msg = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            return _refuse(json_response, 400, f"the control is not JSON ({e}); send "
                                               '{"action": ..., "value": ...}')
        try:
            action = self.hub.submit(msg)
        except ControlRefused as e:  # logged by the hub
            return json_response({"error": e.message}, status_code=e.status)
        return json_response({"queued": action.action, "value": action.value},
                             status_code=202)

    async def _stream(self, websocket: Any) -> None:
        """Send what the hub published since the last tick, as one JSON array."""
        from starlette.websockets import WebSocketDisconnect

        await websocket.accept()
        try:  # a page that reconnects asks for what it has not seen
            seq = max(0, int(websocket.query_params.get("since", "0")))
        except ValueError:
            seq = 0
        try:
            while not self._stopping:
                batch, seq = self.hub.messages_since(seq)
                if batch:
                    await websocket.send_text(json.dumps(batch))
                await asyncio.sleep(_WS_TICK_SEC)
            await websocket.close()
        except (WebSocketDisconnect, RuntimeError, OSError):
            return

    def authorised(self, cookie_header: str) -> bool:
        """Whether a ``Cookie`` header carries this launch's session cookie."""
        for part in cookie_header.split(";"):
            name, _, value = part.strip().partition("=")
            if name == self.cookie_name and _same(value, self._cookie_value):
                return True
        return False


#: Headers of every answer: biometric data is not cached, types are not sniffed.
_NO_STORE = [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison of a credential (any text: compared as UTF-8 bytes)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                               expected.encode("utf-8", "surrogateescape"))


def _refuse(json_response: Callable[..., Any], status: int, message: str) -> Any:
    logger.warning("dashboard request refused (%d): %s", status, ascii(message))
    return json_response({"error": message}, status_code=status)


class _Guard:
    """ASGI middleware: Host, Origin, token/cookie and CSRF checks on every request."""

    def __init__(self, app: Any, server: DashboardServer) -> None:
        self.app, self.server = app, server

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        why = self._check(scope)
        if why is None:
            if scope["type"] == "http":
                async def send_no_store(message: dict) -> None:
                    if message["type"] == "http.response.start":
                        message = {**message,
                                   "headers": [*message.get("headers", []), *_NO_STORE]}
                    await send(message)

                await self.app(scope, receive, send_no_store)
            else:
                await self.app(scope, receive, send)
            return
        status, message = why
        logger.warning("dashboard %s %s refused (%d): %s", scope["type"],
                       ascii(scope.get("path", "")), status, ascii(message))
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"error": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                *_NO_STORE]})
        await send({"type": "http.response.body", "body": body})

    def _check(self, scope: dict) -> tuple[int, str] | None:
        srv = self.server
        headers: dict[str, str] = {}
        for k, v in scope.get("headers", []):
            headers[k.decode("latin-1").lower()] = v.decode("latin-1")
        host = headers.get("host", "").lower()
        if host not in srv.allowed_hosts:
            return 403, (f"Host {host!r} is not allowed; open the dashboard at "
                         f"http://127.0.0.1:{srv.port}/")
        origin = headers.get("origin")
        websocket = scope["type"] == "websocket"
        changes = not websocket and scope.get("method", "GET") not in ("GET", "HEAD")
        if origin is not None and origin.lower() not in srv.allowed_origins:
            return 403, f"Origin {origin!r} is not allowed (only this dashboard's page)"
        if origin is None and (websocket or changes):
            return 403, "a missing Origin: only this dashboard's page may do this"
        path = scope.get("path", "")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if path == "/" and "token" in query and not websocket:
            if query.get("token") is None or not _same(query["token"][0], srv.token):
                return 401, "wrong token: open the URL printed on the terminal"
            return None
        if not srv.authorised(headers.get("cookie", "")):
            return 401, ("not signed in: open the URL with ?token=... printed on the "
                         "terminal")
        if changes:
            declared = headers.get("content-length", "0")
            if not declared.isdigit() or int(declared) > _MAX_BODY:
                return 413, f"a control is at most {_MAX_BODY} bytes (Content-Length)"
            if not _same(headers.get(CSRF_HEADER, ""), srv.csrf):
                return 403, f"missing or wrong {CSRF_HEADER} header (CSRF protection)"
            if not headers.get("content-type", "").startswith("application/json"):
                return 415, "a control must be sent as application/json"
        return None
