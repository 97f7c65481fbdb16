"""An HTTP port's hold on the process's open files: how many connections it keeps and
how long a connection may take to send its request head (issue 29).

Each connection is an open file, and the store, the CRM and the dialers need files
too. uvicorn caps nothing until a request head is whole (``limit_concurrency`` answers
503 only then), and times out only idle keep-alive connections: a client that sends
half a head holds its file for ever, and enough of them take the process to its
limit (EMFILE), where the sync cannot open a drop or a socket to the dialer. So:

- each port keeps at most ``max_connections`` (by default a share of the process's
  open-file limit); past it, the oldest connection still waiting for its head is let go
  (a flood of half-sent requests cannot keep a working client out), and when every
  connection is a request being served, the new one gets 503 and is closed;
- a connection that has not sent a whole request head ``head_timeout_s`` after it
  opened (or after its previous answer) is closed, however it trickles;
- a port holding ``max_connections`` (and the one more it takes to let someone go or
  answer 503) stops accepting: new connections wait in the kernel's backlog, which holds
  no file of ours, and it accepts again as soon as one of its connections is gone. Taking
  whatever the kernel has queued and closing it at once would still spend the files
  (asyncio accepts up to the backlog's length per tick, each an open file, before a
  protocol can refuse any of them);
- what was let go or refused, and an accept loop out of files, is said once a minute,
  structured, with what to do, not as a traceback per attempt; out of files, the port
  tries again a second later (asyncio's own loop goes on trying the whole backlog).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h11
import structlog
from uvicorn.protocols.http.h11_impl import H11Protocol

from syncd.config import Settings
from syncd.daemon.perimeter import SECURITY_HEADERS
from syncd.sources.webhook import WebhookSourceConfig

log = structlog.get_logger("syncd.health")

HEAD_TIMEOUT_S = 5.0
PORTS_SHARE = 0.25  # all HTTP ports together keep at most this share of the open-file limit
MIN_CONNECTIONS = 8
SAID_EVERY_S = 60.0
RAISE_LIMIT = (
    "raise the open-file limit (LimitNOFILE= in the systemd unit, ulimit -n) or keep the "
    "port off untrusted networks; lower max_connections to leave the sync more files"
)
_ACCEPT_FAILED = "socket.accept() out of system resource"  # asyncio's words for it
_MALFORMED = "Invalid HTTP request received"  # uvicorn's words for a request it cannot parse
_OUT_OF_FILES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
ACCEPT_RETRY_S = 1.0  # out of files: accept again after this long


def open_files_limit() -> int:
    """Return the process's soft limit of open files (a large number when unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


def default_max_connections(files: int, ports: int) -> int:
    """Return the connections one of ``ports`` HTTP ports keeps when not configured: an
    equal part of ``PORTS_SHARE`` of ``files`` (the rest is the sync's)."""
    return max(MIN_CONNECTIONS, int(files * PORTS_SHARE) // max(ports, 1))


def connection_limits(
    port: str, max_connections: int | None, head_timeout_s: float, ports: int
) -> ConnectionLimits:
    """Return one port's limits: ``max_connections`` as configured, else its default share
    (``ports``: how many HTTP ports the daemon listens on)."""
    kept = max_connections or default_max_connections(open_files_limit(), ports)
    return ConnectionLimits(port, kept, head_timeout_s)


def http_ports(settings: Settings) -> int:
    """Return how many HTTP ports the daemon listens on: health's and each webhook source's."""
    hooks = sum(isinstance(s, WebhookSourceConfig) for s in settings.sources)
    return hooks + (1 if settings.health.enabled else 0)


class Throttle:
    """Says something at most once per ``every_s``, with how often it happened since.
    Pure: the clock is given."""

    def __init__(self, every_s: float = SAID_EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.every_s = every_s
        self._clock = clock
        self._said_at = float("-inf")
        self.count = 0  # times since it was last said

    def due(self) -> int | None:
        """Count one more; return the count to say now, or None to stay quiet."""
        self.count += 1
        now = self._clock()
        if now - self._said_at < self.every_s:
            return None
        said, self.count, self._said_at = self.count, 0, now
        return said


@dataclass(frozen=True)
class ConnectionLimits:
    """How many connections a port keeps and how long a request head may take."""

    port: str  # for the log: "health", or the webhook source's name
    max_connections: int
    head_timeout_s: float = HEAD_TIMEOUT_S
    retry_after_s: int = 2


@dataclass
class PortGuard:
    """One port's connections, in the order they opened, and what it said of them."""

    limits: ConnectionLimits
    open: dict[GuardedProtocol, None] = field(default_factory=dict)  # ordered: oldest first
    full: Throttle = field(default_factory=Throttle)
    let_go: int = 0  # connections closed to make room, since the start
    refused: int = 0  # connections answered 503, since the start
    gates: list[AcceptGate] = field(default_factory=list)  # its listening sockets

    def room(self, accepting: int) -> int:
        """Return how many more connections to accept, ``accepting`` being accepted but not
        yet open: up to the cap and one more (to let the oldest half-sent go, or say 503)."""
        return self.limits.max_connections + 1 - len(self.open) - accepting

    def admit(self, new: GuardedProtocol) -> bool:
        """Take ``new`` in; return False when it must be refused. Past the cap the oldest
        connection still waiting for its head is let go instead, if there is one."""
        self.open[new] = None
        if len(self.open) <= self.limits.max_connections:
            return True
        victim = next((c for c in self.open if c is not new and c.waiting_for_head()), None)
        if victim is not None:
            self.let_go += 1
            victim.let_go()
        else:
            self.refused += 1
        self._say_full()
        return victim is not None

    def gone(self, conn: GuardedProtocol) -> None:
        self.open.pop(conn, None)
        for gate in self.gates:
            gate.update()

    def _say_full(self) -> None:
        times = self.full.due()
        if times is None:
            return
        log.warning(
            _full_event(self.limits),
            port=self.limits.port,
            max_connections=self.limits.max_connections,
            times=times,
            let_go=self.let_go,
            refused=self.refused,
            open_files_limit=open_files_limit(),
            action=RAISE_LIMIT,
        )


def _full_event(limits: ConnectionLimits) -> str:
    return "health.connections.full" if limits.port == "health" else "webhook.connections.full"


class GuardedProtocol(H11Protocol):
    """uvicorn's h11 protocol under a :class:`PortGuard` (see the module's docstring).

    uvicorn's internals are used here and nowhere else: ``connections``, ``conn`` (the
    h11 state machine), ``cycle`` and ``on_response_complete``.
    """

    guard: PortGuard  # set on the class built by guarded_protocol()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm_head_timer()
        if not self.guard.admit(self):
            self._refuse()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.gone(self)
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:  # its 503 is on its way; what it sends is read and dropped
            return
        super().data_received(data)

    def eof_received(self) -> None:
        if self._refused:
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_timer()  # the next request's head has the same time

    def waiting_for_head(self) -> bool:
        """Return True while no request head is in (new, idle between requests, or half-sent)."""
        if self._refused or self.transport is None or self.transport.is_closing():
            return False
        idle = self.cycle is None or self.cycle.response_complete
        return idle and self.conn.their_state is h11.IDLE

    def let_go(self) -> None:
        """Close this connection now (it holds a file and has not asked for anything)."""
        self.transport.abort()

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(
            self.guard.limits.head_timeout_s, self._head_deadline
        )

    def _head_deadline(self) -> None:
        self._head_timer = None
        if self.waiting_for_head():
            self.transport.close()

    def _refuse(self) -> None:
        """Answer 503 at once and close: every connection kept is a request being served."""
        self._refused = True
        if self._head_timer is not None:
            self._head_timer.cancel()
        self.transport.write(_busy_answer(self.guard.limits.retry_after_s))
        if self.transport.can_write_eof():
            # Half-close, then close when the client has sent its request (or after a
            # second): closing with its request unread would reset the connection and
            # the client would see a reset, not the 503.
            self.transport.write_eof()
            self._head_timer = self.loop.call_later(1.0, self.transport.abort)
        else:
            self.transport.close()


def _busy_answer(retry_after_s: int) -> bytes:
    body = b"busy, try again shortly\n"
    head = [
        b"HTTP/1.1 503 Service Unavailable",
        b"content-type: text/plain; charset=utf-8",
        b"content-length: " + str(len(body)).encode(),
        b"retry-after: " + str(retry_after_s).encode(),
        b"connection: close",
        *(name + b": " + value for name, value in SECURITY_HEADERS),
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedProtocol]:
    """Return the protocol class for one port (uvicorn's ``http=``), with its own guard."""
    return type("PortProtocol", (GuardedProtocol,), {"guard": PortGuard(limits)})


class AcceptGate:
    """Accepts one listening socket's connections while its port has room (see the
    module's docstring), in place of the event loop's own accept, which takes all the
    kernel has queued each time the socket is ready."""

    def __init__(self, guard: PortGuard, server: asyncio.Server, sock: socket.socket) -> None:
        self.guard = guard
        self.server = server
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.factory = _protocol_factory(server)
        self.accepting: set[asyncio.Task[None]] = set()  # accepted, protocol not made yet
        self.reading = False
        self.backing_off = False
        guard.gates.append(self)
        self.loop.remove_reader(sock.fileno())  # the loop's own accept
        self.update()

    def update(self) -> None:
        """Accept while there is room, or stop; never once the server is closed."""
        wanted = (
            self.server.is_serving()
            and not self.backing_off
            and self.guard.room(len(self.accepting)) > 0
        )
        if wanted and not self.reading:
            self.loop.add_reader(self.sock.fileno(), self._readable)
        elif self.reading and not wanted and self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
        self.reading = wanted

    def _readable(self) -> None:
        for _ in range(max(self.guard.room(len(self.accepting)), 0)):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                break  # nothing more queued
            except OSError as exc:
                if exc.errno not in _OUT_OF_FILES:
                    raise  # the loop logs it and calls again
                self._out_of_files(exc)
                break
            conn.setblocking(False)
            opening = self.loop.create_task(self._open(conn))
            self.accepting.add(opening)
            opening.add_done_callback(self._opened)
        self.update()

    async def _open(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self.factory, conn)
        except OSError:  # gone before its transport was made
            conn.close()

    def _opened(self, opening: asyncio.Task[None]) -> None:
        self.accepting.discard(opening)
        self.update()

    def _out_of_files(self, exc: OSError) -> None:
        self.loop.call_exception_handler({"message": _ACCEPT_FAILED, "exception": exc})
        self.backing_off = True
        self.loop.call_later(ACCEPT_RETRY_S, self._retry)

    def _retry(self) -> None:
        self.backing_off = False
        self.update()


def _protocol_factory(server: asyncio.Server) -> Callable[[], asyncio.BaseProtocol]:
    """Return what ``server`` makes a connection's protocol with. asyncio has no public
    way to pause a Server's accepting, nor to read its protocol factory: CPython's
    ``Server`` keeps it as ``_protocol_factory`` (3.8 to 3.13). tests/test_port_files.py
    fails here if that changes."""
    factory: Callable[[], asyncio.BaseProtocol] = server._protocol_factory  # type: ignore[attr-defined]
    return factory


def gate_accepting(servers: list[asyncio.Server], sockets: list[socket.socket], http: Any) -> None:
    """Put each of ``servers`` (one per socket of ``sockets``) under its port's accept
    gate, when ``http`` (uvicorn's protocol class) is a guarded one."""
    guard = getattr(http, "guard", None)
    if not isinstance(guard, PortGuard):
        return
    for server, sock in zip(servers, sockets, strict=True):
        AcceptGate(guard, server, sock)


class AcceptFailures:
    """The event loop's exception handler: an accept out of files is said once a minute,
    structured, instead of asyncio's traceback on every try; the rest goes on as before."""

    def __init__(self) -> None:
        self.throttle = Throttle()

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if context.get("message") != _ACCEPT_FAILED or not isinstance(exc, OSError):
            loop.default_exception_handler(context)
            return
        times = self.throttle.due()
        if times is None:
            return
        log.warning(
            "port.accept.failed",
            error=errno.errorcode.get(exc.errno or 0, str(exc.errno)),
            out_of_files=exc.errno in _OUT_OF_FILES,
            times=times,
            open_files_limit=open_files_limit(),
            action=RAISE_LIMIT,
        )


class MalformedRequests(logging.Filter):
    """The HTTP server's "Invalid HTTP request received." for each request it cannot
    parse, said once a minute, structured, with how often: a visitor sending garbage in
    a loop must not write the journal a line a request."""

    def __init__(self) -> None:
        super().__init__()
        self.throttle = Throttle()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith(_MALFORMED):
            return True
        times = self.throttle.due()
        if times is not None:
            log.warning(
                "port.request.malformed",
                times=times,
                action="a client sends what is not HTTP (a TLS client on the plain port, a "
                "scanner): answered 400; find it by the port's firewall or proxy logs",
            )
        return False


def install_accept_failures(loop: asyncio.AbstractEventLoop) -> None:
    """Make ``loop`` say accept failures once a minute (see :class:`AcceptFailures`), and
    the HTTP server's malformed requests likewise (:class:`MalformedRequests`)."""
    loop.set_exception_handler(AcceptFailures())
    server_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, MalformedRequests) for f in server_log.filters):
        server_log.addFilter(MalformedRequests())
