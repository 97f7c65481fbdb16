"""The health port's perimeter: an ASGI layer around every route of the daemon's HTTP port.

It answers before any handler runs, so what it refuses costs no store work:

- a request whose ``Host:`` is not one of ours gets 421 (a DNS-rebinding page in an
  operator's browser sends its own name there);
- at most ``max_rate`` requests a second are served (a client beyond it waits its turn,
  up to ``max_wait_s``), at most ``max_requests`` at once; past either, 503 with
  ``Retry-After``, answered after that wait (a crowd that asks again at once is slowed,
  not fed: the 503s it gets cost the sync as much as the pages would). ``/healthz`` is
  exempt: an orchestrator must not kill a busy but working daemon;
- a handler that outlives ``request_timeout_s``, or whose client went away, is cancelled
  (an abandoned request must not be served minutes later);
- every response carries the headers that keep a browser from framing, sniffing,
  caching or loading anything into the page.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger("syncd.health")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# The page is server-rendered HTML with inline styles and inline SVG: nothing to load.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
_OURS = {name for name, _ in SECURITY_HEADERS}
UNLIMITED_PATHS = frozenset({"/healthz"})  # liveness answers however busy the port is
_REFUSED_HOSTS_LOGGED = 32  # a scan of names must not flood the log


@dataclass(frozen=True)
class PortLimits:
    """How much of the daemon the HTTP port may take."""

    max_requests: int = 16  # handled (or waiting their turn) at once; past it 503
    max_rate: float = 20.0  # requests served a second (a second's worth may come at once)
    max_wait_s: float = 1.0  # the longest a request waits for its turn; past it 503
    request_timeout_s: float = 10.0  # a handler still running then is cancelled (503)
    retry_after_s: int = 2  # also how long a 503 for a busy port is held back
    held_max: int = 512  # busy answers held back at once; past it they go at once


class Pace:
    """Requests served per second with a burst: a token bucket in its virtual-scheduling
    form (GCRA). Pure: the clock is given."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = 1.0 / rate
        self.tolerance = max(burst - 1.0, 0.0) * self.interval
        self._clock = clock
        self._due = float("-inf")  # when the next request is due if the pace were even

    def reserve(self, max_wait_s: float) -> float | None:
        """Return how long this request waits for its turn (its turn is taken), or None
        when that would be longer than ``max_wait_s`` (nothing taken)."""
        now = self._clock()
        due = max(self._due, now)
        wait = due - self.tolerance - now
        if wait > max_wait_s:
            return None
        self._due = due + self.interval
        return max(wait, 0.0)


class AllowedHosts:
    """Which ``Host:`` values the port answers: an IP address (a name typed as digits
    cannot be rebound to another machine), ``localhost`` and ``*.localhost``, the
    listen address, this machine's name, and the configured names (a reverse proxy's)."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(n.strip().lower().rstrip(".") for n in names if n.strip())

    def allows(self, host_header: str) -> bool:
        """Return True when a request with this ``Host:`` header may be answered."""
        host = _host_only(host_header.strip().lower()).rstrip(".")
        if not host:  # HTTP/1.0 without Host: not a browser, nothing to rebind
            return True
        if host == "localhost" or host.endswith(".localhost") or host in self.names:
            return True
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return False
        return True


def _host_only(value: str) -> str:
    """Return the host of a ``Host:`` value without its port (``[::1]:9310`` → ``::1``)."""
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    host, sep, port = value.rpartition(":")
    return host if sep and port.isdigit() and ":" not in host else value


class Perimeter:
    """The ASGI middleware that applies :class:`AllowedHosts` and :class:`PortLimits`."""

    def __init__(self, app: App, hosts: AllowedHosts, limits: PortLimits) -> None:
        self.app = app
        self.hosts = hosts
        self.limits = limits
        self.inflight = 0  # handlers running now (tests read it: abandoned work ends)
        self.pace = Pace(limits.max_rate, limits.max_rate)
        self._held = 0  # busy answers being held back
        self._refused_hosts: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _secured(send)
        host = _header(scope, b"host")
        if not self.hosts.allows(host):
            self._log_refused(host)
            await _plain(send, 421, "misdirected request\n")
            return
        wait = 0.0
        if scope.get("path") not in UNLIMITED_PATHS:
            turn = None
            if self.inflight < self.limits.max_requests:
                turn = self.pace.reserve(self.limits.max_wait_s)
            if turn is None:
                await self._busy(send)
                return
            wait = turn
        self.inflight += 1
        try:
            await self._bounded(scope, receive, send, wait)
        finally:
            self.inflight -= 1

    async def _busy(self, send: Send) -> None:
        """Answer 503, held back by Retry-After first (up to ``held_max`` at once)."""
        if self._held < self.limits.held_max:
            self._held += 1
            try:
                await asyncio.sleep(self.limits.retry_after_s)
            finally:
                self._held -= 1
        retry = str(self.limits.retry_after_s).encode()
        await _plain(send, 503, "busy, try again shortly\n", [(b"retry-after", retry)])

    async def _bounded(self, scope: Scope, receive: Receive, send: Send, wait: float) -> None:
        """Run the app, cancelled when its client disconnects or its time is up."""
        inbox: asyncio.Queue[Message] = asyncio.Queue(maxsize=1)
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        async def handle() -> None:
            if wait > 0:  # its turn at the port's pace
                await asyncio.sleep(wait)
            await self.app(scope, inbox.get, sending)

        handler = asyncio.create_task(handle())

        async def watch() -> None:
            # The one reader of the connection: hands the body on as the app asks for it,
            # and cancels the app when the client goes away.
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    handler.cancel()
                    return
                await inbox.put(message)

        watcher = asyncio.create_task(watch())
        try:
            done, _ = await asyncio.wait({handler}, timeout=self.limits.request_timeout_s)
            if not done:
                handler.cancel()
                log.warning(
                    "health.request.timeout",
                    path=scope.get("path"),
                    timeout_s=self.limits.request_timeout_s,
                )
            outcome: BaseException | None = (await asyncio.gather(handler, return_exceptions=True))[
                0
            ]
            if not done and not started:
                await _plain(send, 503, "took too long, try again shortly\n")
            elif isinstance(outcome, Exception):
                raise outcome
        finally:
            watcher.cancel()
            handler.cancel()
            await asyncio.gather(watcher, handler, return_exceptions=True)

    def _log_refused(self, host: str) -> None:
        if host in self._refused_hosts or len(self._refused_hosts) >= _REFUSED_HOSTS_LOGGED:
            return
        self._refused_hosts.add(host)
        log.warning(
            "health.host.refused",
            host=host[:100],
            action="a reverse proxy's name goes in health.allowed_hosts",
        )


class Secured:
    """An ASGI app whose every answer carries :data:`SECURITY_HEADERS` and nothing else of
    the perimeter (the webhook port's: its senders are authenticated servers)."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            send = _secured(send)
        await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


def _secured(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            kept = [(k, v) for k, v in message.get("headers") or () if k.lower() not in _OURS]
            message["headers"] = [*kept, *SECURITY_HEADERS]
        await send(message)

    return sending


async def _plain(
    send: Send, status: int, text: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
