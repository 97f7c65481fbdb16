"""The health and metrics HTTP server (Starlette on uvicorn, in the daemon's event loop).

``/healthz``: the process and its event loop answer (liveness).
``/readyz``: 200 when syncd can do its work, 503 with the reasons otherwise.
``/metrics``: Prometheus text format.
``/status``: the status page for a person (:mod:`syncd.daemon.status_page`).
``/login``: off loopback, a browser's way in: the token typed once, a cookie after.
``/``: redirects to ``/status`` (a person types the bare address).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import structlog
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route

from syncd.config import HealthConfig
from syncd.daemon.access import COOKIE as COOKIE
from syncd.daemon.access import SESSION_S as SESSION_S
from syncd.daemon.access import StatusAccess as StatusAccess
from syncd.daemon.access import is_loopback as is_loopback
from syncd.daemon.access import parse_listen as parse_listen
from syncd.daemon.access import status_access as status_access
from syncd.daemon.connections import (
    HEAD_TIMEOUT_S,
    PortGuard,
    connection_limits,
    gate_accepting,
    guarded_protocol,
)
from syncd.daemon.perimeter import AllowedHosts, Perimeter, PortLimits
from syncd.errors import SyncdError

log = structlog.get_logger("syncd.health")

ReadinessCheck = Callable[[], Awaitable[list[str]]]  # returns the reasons it is not ready
MetricsRender = Callable[[], Awaitable[bytes]]
PageRender = Callable[[], Awaitable[str]]


LOOPBACK_ONLY = StatusAccess(loopback=True, token=None)  # no token: loopback alone
_FORM_BYTES = 4096  # a sign-in form is a token: a larger body is not one


_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>syncd status: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:15px system-ui,sans-serif;margin:3em auto;max-width:26em}}
input{{font:inherit;padding:.3em}} .bad{{color:#b00020}}</style></head>
<body><h1>syncd status</h1>{said}
<form method="post" action="login">
<label>Status token (<code>health.status_token</code>)<br>
<input type="password" name="token" autocomplete="current-password" required autofocus>
</label> <button type="submit">Sign in</button></form></body></html>
"""
# The sign-in form must not be framed by another site (a click-jacked sign-in): the
# perimeter (syncd.daemon.perimeter) sends the frame, CSP and cache headers on every answer.


def login_page(said: str = "") -> str:
    """Return the sign-in form (``said``: a line above it, HTML, no request's text)."""
    return _LOGIN_PAGE.format(said=f'<p class="bad">{said}</p>' if said else "")


async def _form_token(request: Request) -> str | None:
    """Return the ``token`` field of a urlencoded sign-in form, None if there is none."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _FORM_BYTES:
            return None
    try:
        fields = urllib.parse.parse_qs(body.decode("utf-8", "replace"), max_num_fields=8)
    except ValueError:  # more fields than a sign-in has
        return None
    values = fields.get("token")
    return values[0] if values else None


def create_app(
    readiness: ReadinessCheck,
    metrics: MetricsRender,
    warnings: Callable[[], Awaitable[list[str]]] | None = None,
    page: PageRender | None = None,
    access: StatusAccess = LOOPBACK_ONLY,
    hosts: AllowedHosts | None = None,
    limits: PortLimits | None = None,
) -> Perimeter:
    """Return the ASGI app answering /healthz, /readyz, /metrics and /status (and / with it),
    behind its perimeter (``hosts``: by default the loopback names and IP addresses).

    ``warnings`` lists what needs fixing although leads flow: shown by /readyz, which
    stays 200 for them.
    """

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        reasons = await readiness()
        said = await warnings() if warnings is not None else []
        if reasons:
            return JSONResponse(
                {"status": "not ready", "reasons": reasons, "warnings": said}, status_code=503
            )
        return JSONResponse({"status": "ready", "reasons": [], "warnings": said})

    async def metrics_endpoint(request: Request) -> Response:
        return Response(await metrics(), media_type=CONTENT_TYPE_LATEST)

    async def status_page(request: Request) -> Response:
        refused = access.refusal(
            request.headers.get("authorization", ""),
            request.cookies.get(COOKIE, ""),
            time.time(),
        )
        if refused is not None:
            if access.token is None:
                return PlainTextResponse(
                    refused, status_code=401, headers={"WWW-Authenticate": "Bearer"}
                )
            # A browser cannot send the header: the way in is the sign-in form.
            said = (
                'This page needs the status token: <a href="login">sign in</a>, or send '
                "Authorization: Bearer &lt;health.status_token&gt;."
            )
            return HTMLResponse(
                login_page(said), status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        if page is None:
            return PlainTextResponse("no status page here", status_code=404)
        return HTMLResponse(await page())

    async def login(request: Request) -> Response:
        if access.loopback:  # nothing to sign in to
            return RedirectResponse("status", status_code=303)
        if access.token is None:
            refused = access.refusal("")
            return PlainTextResponse(str(refused), status_code=401)
        if request.method != "POST":
            return HTMLResponse(login_page())
        given = await _form_token(request)
        client = request.client.host if request.client else "unknown"
        if given is None or not access.signs_in(given):
            # Nothing of what was typed goes back or into the log.
            log.warning("status.login.refused", client=client)
            return HTMLResponse(
                login_page("That is not the status token."),
                status_code=401,
            )
        log.info("status.login", client=client)
        # Relative, as `/`'s redirect: it lands on the page behind a path-prefix proxy too.
        done = RedirectResponse("status", status_code=303)
        done.set_cookie(
            COOKIE,
            access.session(time.time()),
            max_age=SESSION_S,
            path=None,  # the folder /login is in: `/`, or a proxy's prefix
            # https as the client saw it: uvicorn takes X-Forwarded-Proto from the
            # proxies it trusts (FORWARDED_ALLOW_IPS, loopback by default)
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return done

    async def root(request: Request) -> Response:
        # Relative, so it also lands on the page behind a proxy that adds a path prefix.
        return RedirectResponse("status", status_code=302)

    app = Starlette(
        routes=[
            Route("/", root, methods=["GET", "HEAD"]),
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readyz, methods=["GET", "HEAD"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/status", status_page, methods=["GET"]),
            Route("/login", login, methods=["GET", "POST"]),
        ]
    )
    return Perimeter(app, hosts or AllowedHosts(()), limits or PortLimits())


def allowed_hosts(health: HealthConfig) -> AllowedHosts:
    """Return the Host: names the port answers: the configured ones, the listen address
    and this machine's name (IP addresses and localhost always)."""
    host, _ = parse_listen(health.listen)
    return AllowedHosts([*health.allowed_hosts, host, socket.gethostname()])


def port_limits(health: HealthConfig) -> PortLimits:
    """Return how much of the daemon the port may take, from ``[health]``."""
    return PortLimits(
        max_requests=health.max_requests,
        max_rate=health.max_rate,
        request_timeout_s=health.request_timeout_s,
        retry_after_s=max(1, round(health.snapshot_s)),
    )


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns SIGTERM/SIGINT/SIGHUP."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        return None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if sockets is not None and self.started:
            # accept only while the port has room (syncd.daemon.connections)
            gate_accepting(self.servers, sockets, self.config.http_protocol_class)


class HealthServer:
    """Serves the app on a socket bound up front, so a busy port fails the start clearly."""

    def __init__(
        self,
        app: Any,
        listen: str,
        *,
        max_connections: int | None = None,
        head_timeout_s: float = HEAD_TIMEOUT_S,
        ports: int = 1,
    ) -> None:
        self.app = app
        self.listen = listen
        # each connection is a file the sync may need (syncd.daemon.connections)
        self.limits = connection_limits("health", max_connections, head_timeout_s, ports)
        self.guard: PortGuard | None = None  # its connections, once started
        self.port: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._server: _Server | None = None

    async def start(self) -> None:
        host, port = parse_listen(self.listen)
        sock = _bind(host, port)
        self.port = sock.getsockname()[1]
        http = guarded_protocol(self.limits)
        self.guard = http.guard
        config = uvicorn.Config(
            self.app,
            http=http,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="health")
        while not self._server.started and not self._task.done():  # noqa: ASYNC110 - no event in uvicorn
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()
            raise SyncdError(f"health server on {self.listen} stopped at start")
        log.info(
            "health.listening",
            host=host,
            port=self.port,
            max_connections=self.limits.max_connections,
        )

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, timeout=5)
        self._server = self._task = None


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SyncdError(
            f"health.listen {host}:{port}: cannot listen ({exc.strerror}); "
            "pick another address or set health.enabled = false"
        ) from None
    sock.set_inheritable(False)
    return sock
