"""The health and metrics HTTP server (Starlette on uvicorn, in the daemon's event loop).

``/healthz``: the process and its event loop answer (liveness).
``/readyz``: 200 when syncd can do its work, 503 with the reasons otherwise.
``/metrics``: Prometheus text format.
``/status``: the status page for a person (:mod:`syncd.daemon.status_page`).
``/``: redirects to ``/status`` (a person types the bare address).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
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
from syncd.errors import ConfigError, SyncdError

log = structlog.get_logger("syncd.health")

ReadinessCheck = Callable[[], Awaitable[list[str]]]  # returns the reasons it is not ready
MetricsRender = Callable[[], Awaitable[bytes]]
PageRender = Callable[[], Awaitable[str]]


@dataclass(frozen=True)
class StatusAccess:
    """Who may read /status: anyone on loopback; elsewhere only with the bearer token."""

    loopback: bool
    token: str | None

    def refusal(self, authorization: str) -> str | None:
        """Return why a request with this Authorization header is refused, None if allowed."""
        if self.loopback:
            return None
        if self.token is None:
            return "the health server is not on loopback: set health.status_token to see /status"
        given = authorization.removeprefix("Bearer ").strip()
        if not authorization.startswith("Bearer ") or not hmac.compare_digest(given, self.token):
            return "send Authorization: Bearer <health.status_token>"
        return None


def is_loopback(host: str) -> bool:
    """Return True for an address only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(
    readiness: ReadinessCheck,
    metrics: MetricsRender,
    warnings: Callable[[], Awaitable[list[str]]] | None = None,
    page: PageRender | None = None,
    access: StatusAccess = StatusAccess(loopback=True, token=None),
) -> Starlette:
    """Return the ASGI app answering /healthz, /readyz, /metrics and /status (and / with it).

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
        refused = access.refusal(request.headers.get("authorization", ""))
        if refused is not None:
            return PlainTextResponse(
                refused, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        if page is None:
            return PlainTextResponse("no status page here", status_code=404)
        return HTMLResponse(await page(), headers={"Cache-Control": "no-store"})

    async def root(request: Request) -> Response:
        # Relative, so it also lands on the page behind a proxy that adds a path prefix.
        return RedirectResponse("status", status_code=302)

    return Starlette(
        routes=[
            Route("/", root, methods=["GET", "HEAD"]),
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readyz, methods=["GET", "HEAD"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/status", status_page, methods=["GET"]),
        ]
    )


def status_access(health: HealthConfig) -> StatusAccess:
    """Return who may read /status, from where the health server listens and its token."""
    host, _ = parse_listen(health.listen)
    token = health.status_token.get_secret_value() if health.status_token else None
    return StatusAccess(loopback=is_loopback(host), token=token)


def parse_listen(value: str) -> tuple[str, int]:
    """Return (host, port) of ``host:port``, ``[v6]:port`` or ``:port``; raise ConfigError."""
    text = value.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"health.listen: {value!r} is not host:port (e.g. 127.0.0.1:9310)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"health.listen: write an IPv6 address in brackets: [{host}]:{port_text}")
    return host or "0.0.0.0", int(port_text)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns SIGTERM/SIGINT/SIGHUP."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        return None


class HealthServer:
    """Serves the app on a socket bound up front, so a busy port fails the start clearly."""

    def __init__(self, app: Any, listen: str) -> None:
        self.app = app
        self.listen = listen
        self.port: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._server: _Server | None = None

    async def start(self) -> None:
        host, port = parse_listen(self.listen)
        sock = _bind(host, port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
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
        log.info("health.listening", host=host, port=self.port)

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
