"""The health and metrics HTTP server (Starlette on uvicorn, in the daemon's event loop).

``/healthz``: the process and its event loop answer (liveness).
``/readyz``: 200 when syncd can do its work, 503 with the reasons otherwise.
``/metrics``: Prometheus text format.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import structlog
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from syncd.errors import ConfigError, SyncdError

log = structlog.get_logger("syncd.health")

ReadinessCheck = Callable[[], Awaitable[list[str]]]  # returns the reasons it is not ready
MetricsRender = Callable[[], Awaitable[bytes]]


def create_app(
    readiness: ReadinessCheck,
    metrics: MetricsRender,
    warnings: Callable[[], list[str]] = list,
) -> Starlette:
    """Return the ASGI app answering /healthz, /readyz and /metrics.

    ``warnings`` lists what needs fixing although leads flow: shown by /readyz, which
    stays 200 for them.
    """

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        reasons = await readiness()
        said = warnings()
        if reasons:
            return JSONResponse(
                {"status": "not ready", "reasons": reasons, "warnings": said}, status_code=503
            )
        return JSONResponse({"status": "ready", "reasons": [], "warnings": said})

    async def metrics_endpoint(request: Request) -> Response:
        return Response(await metrics(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readyz, methods=["GET", "HEAD"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
        ]
    )


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
