"""Connections to the daemon's HTTP port cannot take the files the sync needs (issue 29).

A client that opens a connection and never finishes its request head holds one of
the process's files. Through the whole daemon, with its open files capped low, so a
few hundred such clients are past what it may open: the sync still pulls a drop and
pushes it, /healthz answers, and the log is not flooded. Also in the port's server
alone: the head deadline, who is let go at the cap, and the answer past it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from syncd.daemon.connections import Throttle, default_max_connections
from syncd.daemon.perimeter import PortLimits
from syncd.daemon.probes import HealthServer, create_app
from tests.conftest import Simulated, daemon_config, drop_csv
from tests.support.clock import FakeClock
from tests.support.flood import (
    HALF_HEAD,
    Flood,
    closed_by_peer,
    half_sent,
    most_open_files,
    open_files,
)

HEADER = "id,phone,first,last,email,callback\n"
FILES = 256  # the daemon's open-file limit here: 400 clients are well past it


def leads_csv(count: int) -> str:
    rows = (f"L{i:05d},98450{i:05d},Asha,Rao,a{i}@example.com,\n" for i in range(count))
    return HEADER + "".join(rows)


def with_health(config: Path, extra: str) -> Path:
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[health]\n", f"[health]\n{extra}\n", 1), encoding="utf-8")
    return config


def wait_until(what: Callable[[], bool], timeout: float = 60, message: Any = "") -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError((message() if callable(message) else message) or "not in time")
        time.sleep(0.05)


def health_port(daemon: Any) -> int:
    return int(daemon.wait_for("health.listening")["port"])


def test_half_sent_requests_past_the_file_limit_leave_the_sync_and_healthz_working(
    tmp_path: Path, jodo: Simulated, start_daemon: Any
) -> None:
    # A long head deadline: the cap alone must keep the files, not the deadline's sweep.
    config = with_health(daemon_config(tmp_path, jodo.url), "head_timeout_s = 300")
    daemon = start_daemon(config, preexec=open_files(FILES))
    daemon.wait_for("daemon.ready")
    port = health_port(daemon)
    with half_sent(port, 400) as flood:
        assert len(flood) > FILES  # the kernel took them all: past what syncd may open
        drop_csv(tmp_path / "inbox", "leads.csv", leads_csv(25))
        wait_until(lambda: len(jodo.sim.received()) == 25, message=lambda: daemon.events[-20:])
        alive = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30)
        let_go = sum(closed_by_peer(conn) for conn in flood)
    assert alive.status_code == 200
    assert let_go >= len(flood) - FILES  # the oldest half-sent were let go, not kept
    assert daemon.stop() == 0
    text = [e for e in daemon.events if e.get("event") == "(text)"]
    assert len(text) < 10, text[:20]  # no traceback flood, whatever else happened
    full = [e for e in daemon.events if e.get("event") == "health.connections.full"]
    assert 1 <= len(full) <= 3, full  # said once per interval, with what to do
    assert "LimitNOFILE" in full[0]["action"]


def test_a_flood_reopening_past_the_file_limit_never_takes_the_process_to_it(
    tmp_path: Path, jodo: Simulated, start_daemon: Any
) -> None:
    # The trial of issue 29: connections kept open past the file limit, half trickling a
    # head, the rest idle, any closed opened again. Past the cap the port stops accepting:
    # the rest wait in the kernel's backlog, which holds no file of the daemon's.
    config = with_health(daemon_config(tmp_path, jodo.url), "head_timeout_s = 300")
    daemon = start_daemon(config, preexec=open_files(FILES))
    daemon.wait_for("daemon.ready")
    port = health_port(daemon)
    done = threading.Event()
    most = most_open_files(daemon.proc.pid, done)
    try:
        with Flood(port, FILES * 2) as flood:
            wait_until(lambda: flood.opened > FILES * 3, message=lambda: flood.opened)
            drop_csv(tmp_path / "inbox", "leads.csv", leads_csv(25))
            wait_until(lambda: len(jodo.sim.received()) == 25, message=lambda: daemon.events[-20:])
            alive = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30)
    finally:
        done.set()
    assert most() < FILES, most()
    assert alive.status_code == 200
    assert daemon.stop() == 0
    assert not [e for e in daemon.events if e.get("event") == "job.failed"]
    assert not [e for e in daemon.events if e.get("event") == "port.accept.failed"]


def test_a_request_head_not_sent_in_time_is_closed_however_it_trickles(
    tmp_path: Path, jodo: Simulated, start_daemon: Any
) -> None:
    config = with_health(daemon_config(tmp_path, jodo.url), "head_timeout_s = 0.5")
    daemon = start_daemon(config)
    daemon.wait_for("daemon.ready")
    port = health_port(daemon)
    with half_sent(port, 5) as idle, socket.create_connection(("127.0.0.1", port)) as kept:
        # a keep-alive connection: one whole request, then half of the next one
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        first = kept.recv(4096)
        kept.sendall(HALF_HEAD)
        with socket.create_connection(("127.0.0.1", port)) as trickle:
            # a byte at a time, each well within the deadline: the head never ends
            trickled = trickle_until_closed(trickle, timeout=60)
        wait_until(lambda: all(closed_by_peer(c) for c in [*idle, kept]), timeout=60)
    assert first.startswith(b"HTTP/1.1 200")
    assert trickled
    assert daemon.stop() == 0


def trickle_until_closed(conn: socket.socket, timeout: float) -> bool:
    """Send the half head a byte at a time until the server closes; True if it did."""
    deadline = time.monotonic() + timeout
    for byte in (HALF_HEAD + b"a" * 100_000)[:100_000]:
        try:
            conn.sendall(bytes([byte]))
        except OSError:
            return True
        if closed_by_peer(conn):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return False


# -- the port's server alone ---------------------------------------------------------------


class StuckPage:
    """A /status handler that runs until released."""

    def __init__(self) -> None:
        self.running = 0
        self.release = asyncio.Event()

    async def __call__(self) -> str:
        self.running += 1
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return "<p>page</p>"


async def nothing() -> list[str]:
    return []


async def no_metrics() -> bytes:
    return b""


async def eventually(condition: Callable[[], bool], within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_past_the_cap_busy_requests_are_kept_and_a_new_connection_gets_503() -> None:
    page = StuckPage()
    app = create_app(nothing, no_metrics, page=page, limits=PortLimits(max_requests=8))
    server = HealthServer(app, "127.0.0.1:0", max_connections=3, head_timeout_s=600)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            held = [asyncio.create_task(client.get("/status")) for _ in range(3)]
            await eventually(lambda: page.running == 3)
            async with httpx.AsyncClient() as other:
                refused = await other.get(f"http://127.0.0.1:{server.port}/healthz")
            page.release.set()
            done = await asyncio.gather(*held)
            after = await client.get("/healthz")
    finally:
        await server.stop()
    assert refused.status_code == 503 and refused.headers["retry-after"]
    assert refused.headers["connection"] == "close"
    assert [d.status_code for d in done] == [200, 200, 200]
    assert after.status_code == 200


async def test_at_the_cap_the_port_leaves_new_connections_in_the_kernels_backlog() -> None:
    # asyncio's own accept would take all 20 at once, each a file, before any is let go;
    # this also fails if asyncio.Server no longer has what the gate uses.
    server = HealthServer(create_app(nothing, no_metrics), "127.0.0.1:0", max_connections=2)
    await server.start()
    guard = server.guard
    assert guard is not None and guard.gates
    held: list[int] = []
    admit = guard.admit

    def counted(new: Any) -> bool:
        held.append(len(guard.open) + 1)  # with the new one
        return admit(new)

    guard.admit = counted  # type: ignore[method-assign]
    try:
        with half_sent(server.port, 20) as flood:
            await eventually(lambda: sum(closed_by_peer(c) for c in flood) == 18)
            async with httpx.AsyncClient() as client:
                alive = await client.get(f"http://127.0.0.1:{server.port}/healthz")
    finally:
        await server.stop()
    assert alive.status_code == 200
    assert max(held) <= 3, held  # the cap, and one more to let the oldest half-sent go
    assert guard.let_go >= 18


def test_the_ports_share_of_the_open_file_limit() -> None:
    assert default_max_connections(1024, 1) == 256  # systemd's default soft limit
    assert default_max_connections(1024, 2) == 128  # health and one webhook source
    assert default_max_connections(8192, 1) == 2048
    assert default_max_connections(16, 4) == 8  # never fewer than a handful


def test_a_flood_is_said_once_per_interval_with_how_often_it_happened() -> None:
    clock = FakeClock()
    throttle = Throttle(every_s=60, clock=clock.monotonic)
    said = [throttle.due() for _ in range(5)]
    clock.advance(61)
    again = throttle.due()
    assert said == [1, None, None, None, None]
    assert again == 5  # the four kept quiet and this one


def test_a_stream_of_malformed_requests_is_said_once_per_interval_not_once_each(
    tmp_path: Path, jodo: Simulated, start_daemon: Any
) -> None:
    # The HTTP server says "Invalid HTTP request received." for each request it cannot
    # parse: a visitor sending garbage in a loop would fill the journal line by line.
    daemon = start_daemon(daemon_config(tmp_path, jodo.url))
    daemon.wait_for("daemon.ready")
    port = health_port(daemon)
    for _ in range(200):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"\x16\x03\x01 not HTTP at all\r\n\r\n")
            with contextlib.suppress(OSError):
                conn.recv(1024)  # its 400, or the close
    alive = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30)
    assert alive.status_code == 200
    assert daemon.stop() == 0
    lines = [e for e in daemon.events if "Invalid HTTP request" in repr(e)]
    assert lines == [], lines[:5]  # not a line each
    said = [e for e in daemon.events if e.get("event") == "port.request.malformed"]
    assert len(said) == 1 and said[0]["times"] >= 1, said  # once a minute, how often
