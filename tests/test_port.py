"""The daemon's HTTP port cannot starve the sync, and a browser page elsewhere cannot read it.

Over real HTTP: the whole daemon for what it serves, the port's app alone (a handler
that never ends) for the cap, the timeout and a client that goes away.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncd.config import load_settings
from syncd.daemon.perimeter import AllowedHosts, Pace, Perimeter, PortLimits
from syncd.daemon.probes import HealthServer, create_app
from syncd.daemon.sdnotify import Notifier
from syncd.daemon.service import Daemon
from syncd.daemon.snapshot import Snapshot
from syncd.simulators.jodo.api import JodoSimulator
from syncd.simulators.jodo.api import create_app as jodo_app
from syncd.simulators.server import running
from tests.conftest import cli_env, daemon_config
from tests.support.clock import FakeClock

SECURITY = {
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
}


def with_health(config: Path, extra: str) -> Path:
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[health]\n", f"[health]\n{extra}\n", 1), encoding="utf-8")
    return config


async def eventually(condition: Callable[[], bool], within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# -- headers and Host: (issue 29, point 5) ------------------------------------------------


def test_every_answer_carries_the_browser_headers_and_a_foreign_host_gets_421(
    tmp_path: Path, start_daemon: Any
) -> None:
    with running(jodo_app(JodoSimulator())) as url:
        config = with_health(
            daemon_config(tmp_path, url), 'allowed_hosts = ["syncd.proxy.example"]'
        )
        daemon = start_daemon(config)
        daemon.wait_for("daemon.ready")
        base = daemon.base_url
        port = base.rsplit(":", 1)[1]
        paths = ["/status", "/readyz", "/healthz", "/metrics", "/login", "/"]
        ours = {p: httpx.get(base + p) for p in paths}
        proxied = httpx.get(base + "/status", headers={"Host": "syncd.proxy.example"})
        by_name = httpx.get(base + "/status", headers={"Host": f"localhost:{port}"})
        rebound = {
            p: httpx.get(base + p, headers={"Host": f"attacker.example:{port}"}) for p in paths
        }
        assert daemon.stop() == 0
    for path, answer in ours.items():
        assert answer.status_code in (200, 302, 303), (path, answer.status_code)
        for name, value in SECURITY.items():
            assert value in answer.headers.get(name, ""), (path, name, answer.headers)
    assert proxied.status_code == 200 and "syncd status" in proxied.text
    assert by_name.status_code == 200
    for path, answer in rebound.items():
        assert answer.status_code == 421, path
        assert "syncd" not in answer.text and "jodo" not in answer.text  # nothing said
        assert answer.headers["x-frame-options"] == "DENY"
    refused = [e for e in daemon.events if e.get("event") == "health.host.refused"]
    assert len(refused) == 1 and refused[0]["host"].startswith("attacker.example")


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:9310", True),
        ("[::1]:9310", True),
        ("10.1.2.3:9310", True),  # an address typed as digits cannot be rebound
        ("localhost", True),
        ("app.localhost:9310", True),
        ("syncd.proxy.example", True),
        ("SYNCD.proxy.example.:443", True),
        ("", True),  # HTTP/1.0 without Host: not a browser
        ("attacker.example", False),
        ("127.0.0.1.attacker.example", False),
        ("localhost.attacker.example:9310", False),
    ],
)
def test_which_host_headers_the_port_answers(host: str, allowed: bool) -> None:
    assert AllowedHosts(["syncd.proxy.example"]).allows(host) is allowed


# -- the store read once per snapshot (point 4) ---------------------------------------------


class ReadyNotifier(Notifier):
    """systemd's notifier (off here), noting when the daemon said it is ready."""

    said_ready = False

    def ready(self, status: str | None = None) -> bool:
        self.said_ready = True
        return super().ready(status)


class CountingStore:
    """The daemon's real store, counting the calls the port's pages make."""

    def __init__(self, store: Any, calls: Counter[str]) -> None:
        self._store = store
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._store, name)
        if not callable(found):
            return found

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._calls[name] += 1
            return found(*args, **kwargs)

        return counted


async def test_a_crowd_on_status_metrics_and_readyz_reads_the_store_once_per_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from syncd.daemon import service

    opened = service.open_store
    calls: Counter[str] = Counter()

    async def counting_store(cfg: Any) -> Any:
        return CountingStore(await opened(cfg), calls)

    monkeypatch.setattr(service, "open_store", counting_store)
    for name, value in cli_env().items():
        if name.startswith("TEST_"):
            monkeypatch.setenv(name, value)
    with running(jodo_app(JodoSimulator())) as url:
        config = with_health(
            daemon_config(tmp_path, url),
            "snapshot_s = 3600\nmax_requests = 1000\nmax_rate = 100000",
        )
        notifier = ReadyNotifier()
        daemon = Daemon(load_settings(str(config)), str(config), notifier=notifier)
        task = asyncio.create_task(daemon.run())
        try:
            await eventually(lambda: daemon.phase == "running" or task.done())
            # the start's own reads end with the ready line's
            await eventually(lambda: notifier.said_ready or task.done())
            assert daemon.health is not None and daemon.store is not None
            calls.clear()  # what the start read
            base = f"http://127.0.0.1:{daemon.health.port}"
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                answers = await asyncio.gather(
                    *(client.get(p) for p in ("/status", "/metrics", "/readyz") * 40)
                )
                assert [a.status_code for a in answers] == [200] * 120
                again = await client.get("/status")
            seen = dict(calls)  # before the stop's own reads
        finally:
            daemon._on_stop_signal(signal.SIGTERM)
            assert await task == 0
    assert "syncd status" in again.text
    assert seen["counts"] == 1  # the page's snapshot
    assert seen["size_bytes"] == 1  # the metrics' snapshot
    # once each by the readiness, page and metrics snapshots, for 121 requests
    assert seen["failing_withdrawals"] == 3
    assert seen["pending_count"] == 3 * len(daemon.settings.sinks)


async def test_a_snapshot_is_computed_once_per_period_however_many_ask() -> None:
    clock = FakeClock()
    computed: list[float] = []
    release = asyncio.Event()

    async def compute() -> float:
        await release.wait()
        computed.append(clock())
        return clock()

    snap = Snapshot(compute, period_s=5.0, duty=0.5, clock=clock)
    waiting = [asyncio.create_task(snap.get()) for _ in range(50)]
    await asyncio.sleep(0)
    clock.advance(1.0)  # the refresh took a second
    release.set()
    assert set(await asyncio.gather(*waiting)) == {1_000_001.0}
    assert len(computed) == 1
    clock.advance(4.9)
    assert await snap.get() == 1_000_001.0 and len(computed) == 1
    clock.advance(0.2)
    assert await snap.get() == clock() and len(computed) == 2


async def test_a_refresh_that_took_long_is_not_run_again_soon() -> None:
    clock = FakeClock()

    async def slow() -> int:
        clock.advance(3.0)  # a large store: the refresh costs 3 s
        return 1

    snap = Snapshot(slow, period_s=2.0, duty=0.2, clock=clock)
    await snap.get()
    assert snap.fresh_for() == pytest.approx(15.0)  # 3 s is a fifth of 15
    clock.advance(14.0)
    await snap.get()
    assert snap.refreshes == 1


async def test_an_abandoned_request_does_not_cancel_the_refresh_the_others_wait_for() -> None:
    release = asyncio.Event()

    async def compute() -> str:
        await release.wait()
        return "page"

    snap = Snapshot(compute, period_s=5.0)
    leaving = asyncio.create_task(snap.get())
    staying = asyncio.create_task(snap.get())
    await asyncio.sleep(0)
    leaving.cancel()
    release.set()
    assert await staying == "page"
    assert snap.refreshes == 1


# -- the pace, the cap, the timeout, the client that leaves (point 4) ---------------------


def test_the_pace_lets_a_burst_through_then_spaces_requests_and_refuses_past_the_wait() -> None:
    clock = FakeClock()
    pace = Pace(rate=10, burst=3, clock=clock)
    assert [pace.reserve(1.0) for _ in range(3)] == [0.0, 0.0, 0.0]  # the burst
    waits = [pace.reserve(1.0) for _ in range(10)]
    assert waits == pytest.approx([0.1 * i for i in range(1, 11)])  # one every 0.1 s
    assert pace.reserve(1.0) is None  # 1.1 s: past the longest wait; nothing taken
    clock.advance(5.0)
    assert pace.reserve(1.0) == 0.0


def test_a_client_asking_one_at_a_time_is_never_refused() -> None:
    clock = FakeClock()
    pace = Pace(rate=5, burst=5, clock=clock)
    for _ in range(100):  # a test polling every 10 ms
        wait = pace.reserve(1.0)
        assert wait is not None
        clock.advance(wait + 0.01)


async def test_a_crowd_waits_its_turn_at_the_pace_and_past_the_wait_gets_503() -> None:
    page = StuckPage()
    page.release.set()
    limits = PortLimits(max_requests=100, max_rate=5, max_wait_s=0.5, retry_after_s=1)
    server = await served(page, limits)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            answers = await asyncio.gather(*(client.get("/status") for _ in range(30)))
    finally:
        await server.stop()
    codes = Counter(a.status_code for a in answers)
    # a burst of 5, then one every 0.2 s for at most 0.5 s (a couple more, however slow
    # the machine sends them); the rest are refused without reaching the page
    assert codes[200] >= 5 and codes[503] > 0 and set(codes) == {200, 503}
    assert page.started == codes[200]


class StuckPage:
    """A /status that never finishes; counts the handlers running."""

    def __init__(self) -> None:
        self.running = 0
        self.started = 0
        self.release = asyncio.Event()

    async def __call__(self) -> str:
        self.running += 1
        self.started += 1
        try:
            await self.release.wait()
            return "<html>done</html>"
        finally:
            self.running -= 1


async def nothing() -> list[str]:
    return []


async def no_metrics() -> bytes:
    return b""


async def served(page: Callable[[], Awaitable[str]], limits: PortLimits) -> HealthServer:
    server = HealthServer(create_app(nothing, no_metrics, page=page, limits=limits), "127.0.0.1:0")
    await server.start()
    return server


async def test_past_the_cap_a_request_gets_503_with_retry_after_and_healthz_still_answers() -> None:
    page = StuckPage()
    server = await served(page, PortLimits(max_requests=2, retry_after_s=1))
    perimeter: Perimeter = server.app
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            held = [asyncio.create_task(client.get("/status")) for _ in range(2)]
            await eventually(lambda: page.running == 2)
            busy = await client.get("/status")
            ready = await client.get("/readyz")
            alive = await client.get("/healthz")
            page.release.set()
            done = await asyncio.gather(*held)
        await eventually(lambda: perimeter.inflight == 0)
        async with httpx.AsyncClient() as client:
            after = await client.get(f"http://127.0.0.1:{server.port}/readyz")
    finally:
        await server.stop()
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert busy.headers["x-frame-options"] == "DENY"
    assert ready.status_code == 503
    assert alive.status_code == 200
    assert [d.status_code for d in done] == [200, 200]
    assert after.status_code == 200


async def test_a_client_that_goes_away_leaves_no_handler_running() -> None:
    page = StuckPage()
    server = await served(page, PortLimits(max_requests=4, request_timeout_s=600))
    perimeter: Perimeter = server.app
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", server.port)) as conn:
                conn.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                await eventually(lambda: page.running == 1)
            await eventually(lambda: page.running == 0 and perimeter.inflight == 0)
    finally:
        await server.stop()
    assert page.started == 3


async def test_a_request_past_its_timeout_is_cut_off_with_503() -> None:
    page = StuckPage()
    server = await served(page, PortLimits(max_requests=4, request_timeout_s=0.3))
    perimeter: Perimeter = server.app
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            answer = await client.get("/status", timeout=60)
        await eventually(lambda: page.running == 0 and perimeter.inflight == 0)
    finally:
        await server.stop()
    assert answer.status_code == 503
    assert page.started == 1
