"""The Ameyo session: one login shared by every worker, renewed once per expiry, kept alive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import structlog
from structlog.testing import capture_logs

from syncd.core.clock import SYSTEM_CLOCK
from syncd.core.model import Action, Lead, QueuedLead, ResultKind
from syncd.errors import RetryableError, SinkConfigError
from syncd.net.ratelimit import RateLimiter
from syncd.run.engine import Engine
from syncd.simulators.ameyo.api import AmeyoSimulator, create_app
from syncd.simulators.faults import Faults
from syncd.simulators.server import running
from syncd.sinks.ameyo.config import AmeyoSinkConfig
from syncd.sinks.ameyo.sink import AmeyoSink
from syncd.sinks.base import SinkContext
from syncd.state import open_store
from syncd.state.sqlite import SqliteStore
from tests.support.clock import FakeClock, Sleepers
from tests.support.reliability import AMEYO_PASSWORD, ameyo_sink, settings_for, write_config

T = TypeVar("T")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "state.db")
    await s.open()
    yield s
    await s.close()


def serve(sim: AmeyoSimulator) -> Iterator[str]:
    with running(create_app(sim)) as url:
        yield url


def make_sink(
    url: str, store: SqliteStore, clock: FakeClock | None = None, **overrides: Any
) -> AmeyoSink:
    values: dict[str, Any] = {
        "name": "ameyo",
        "url": url,
        "auth": {"mode": "session", "user_id": "syncd", "password": "secret"},
        "campaign_id": 1,
        "lead_id": 1,
        **overrides,
    }
    ctx = SinkContext(
        store=store,
        region="IN",
        log=structlog.get_logger("syncd.sink"),
        clock=clock or SYSTEM_CLOCK,
    )
    return AmeyoSink(AmeyoSinkConfig(**values), ctx)


def queued(n: int) -> QueuedLead:
    key = f"L{n:03d}"
    lead = Lead(key, f"+9198200{n:05d}", first_name="Lead", last_name=str(n))
    return QueuedLead("ameyo", key, f"h{n}", Action.UPSERT, lead, attempts=1)


def logins_after_expiry(logs: list[dict[str, Any]]) -> int:
    return sum(
        1 for e in logs if e["event"] == "sink.session.login" and e.get("reason") == "expired"
    )


async def test_twenty_concurrent_pushes_on_an_expired_session_cause_one_login(
    store: SqliteStore,
) -> None:
    sim = AmeyoSimulator(dialing=False)
    for url in serve(sim):
        with capture_logs() as logs:
            sink = make_sink(url, store, push_concurrency=20)
            await sink.open()
            sim.expire_sessions()
            results = await asyncio.gather(*(sink.push([queued(n)]) for n in range(20)))
            await sink.close()
    assert all(r.kind is ResultKind.DELIVERED for [r] in results)
    assert sim.logins == 2
    assert logins_after_expiry(logs) == 1
    assert len(sim.customer_list()) == 20


async def test_each_expiry_during_a_run_costs_exactly_one_login(store: SqliteStore) -> None:
    clock = FakeClock()
    sim = AmeyoSimulator(dialing=False, session_timeout_s=0.3, ping_interval_ms=60_000, clock=clock)
    for url in serve(sim):
        with capture_logs() as logs:
            sink = make_sink(url, store, clock)
            await sink.open()
            first = await sink.push([queued(1), queued(2)])
            clock.advance(0.5)  # idle past the timeout: the server drops the session
            second = await sink.push([queued(3)])
            clock.advance(0.5)
            third = await sink.push([queued(4)])
            await sink.close()
    assert [r.kind for r in [*first, *second, *third]] == [ResultKind.DELIVERED] * 4
    assert sim.counts["expired"] == 2
    assert sim.logins == 3
    assert logins_after_expiry(logs) == sim.counts["expired"]


async def test_keepalive_pings_hold_a_session_across_an_idle_period_longer_than_the_timeout(
    store: SqliteStore,
) -> None:
    clock = FakeClock()
    sim = AmeyoSimulator(dialing=False, session_timeout_s=1.0, ping_interval_ms=300, clock=clock)
    for url in serve(sim):
        sink = make_sink(url, store, clock)
        await sink.open()
        assert sink.keepalive_interval_s == pytest.approx(0.3)
        for _ in range(7):  # 2.1 s idle, a keep-alive at every interval (the engine's job)
            clock.advance(0.3)
            await sink.keepalive()
        [result] = await sink.push([queued(1)])
        assert sink.health().session == "valid"
        await sink.close()
    assert result.kind is ResultKind.DELIVERED
    assert sim.pings >= 3
    assert sim.counts["expired"] == 0
    assert sim.logins == 1


async def test_a_keepalive_right_after_a_request_sends_no_ping(store: SqliteStore) -> None:
    clock = FakeClock()
    sim = AmeyoSimulator(dialing=False, ping_interval_ms=300, clock=clock)
    for url in serve(sim):
        sink = make_sink(url, store, clock)
        await sink.open()
        await sink.push([queued(1)])
        clock.advance(0.1)  # less than half an interval: the push proved the session alive
        await sink.keepalive()
        assert sim.pings == 0
        clock.advance(0.3)
        await sink.keepalive()
        await sink.close()
    assert sim.pings == 1


async def test_a_short_session_timeout_is_kept_alive_at_a_third_of_it(store: SqliteStore) -> None:
    # The server announces a 20 s pingInterval but drops sessions after 0.9 s idle.
    clock = FakeClock()
    sim = AmeyoSimulator(dialing=False, session_timeout_s=0.9, ping_interval_ms=20_000, clock=clock)
    for url in serve(sim):
        sink = make_sink(url, store, clock)
        await sink.open()
        assert sink.keepalive_interval_s == pytest.approx(0.3)
        for _ in range(10):
            clock.advance(sink.keepalive_interval_s or 0)
            await sink.keepalive()
        [result] = await sink.push([queued(1)])
        await sink.close()
    assert result.kind is ResultKind.DELIVERED
    assert (sim.counts["expired"], sim.logins) == (0, 1)


async def test_the_configured_ping_interval_overrides_the_servers(store: SqliteStore) -> None:
    clock = FakeClock()
    sim = AmeyoSimulator(dialing=False, session_timeout_s=1.0, ping_interval_ms=60_000, clock=clock)
    for url in serve(sim):
        sink = make_sink(url, store, clock, ping_interval_s=0.25)
        await sink.open()
        assert sink.keepalive_interval_s == pytest.approx(0.25)
        for _ in range(6):
            clock.advance(0.25)
            await sink.keepalive()
        await sink.close()
    assert sim.counts["expired"] == 0
    assert sim.logins == 1
    assert sim.pings >= 2


async def test_close_logs_out(store: SqliteStore) -> None:
    sim = AmeyoSimulator(dialing=False, ping_interval_ms=100)
    for url in serve(sim):
        sink = make_sink(url, store)
        await sink.open()
        await sink.close()
    assert sim.counts["logouts"] == 1
    assert not sim.sessions


async def test_a_failing_keepalive_is_logged_once_by_the_engine_and_the_session_recovers(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    sim = AmeyoSimulator(
        users={"syncd": AMEYO_PASSWORD}, dialing=False, ping_interval_ms=100, clock=clock
    )
    for url in serve(sim):
        config = write_config(tmp_path, [ameyo_sink(url, retry_max_s=0.2)])
        settings = settings_for(config)
        store = await open_store(str(settings.state.path))
        engine = Engine(settings, store, clock=clock)
        try:
            with capture_logs() as logs:
                await engine.open()
                sim.faults.set(Faults(error_rate=1.0))
                for _ in range(4):
                    clock.advance(0.1)
                    await engine.keepalive("ameyo")
                sim.faults.set(Faults())
                for _ in range(2):
                    clock.advance(0.1)
                    await engine.keepalive("ameyo")
        finally:
            await engine.close()
            await store.close()
    events = [e["event"] for e in logs if e["log_level"] != "debug"]  # repeats are debug
    assert events.count("sink.session.ping.failed") == 1
    assert events.count("sink.session.ping.recovered") == 1
    assert engine.health.failure("keepalive:ameyo") is None


async def test_random_invalid_session_answers_are_survived_with_one_login_each(
    store: SqliteStore,
) -> None:
    sim = AmeyoSimulator(dialing=False, faults=Faults(invalid_session_rate=0.3, seed=7))
    for url in serve(sim):
        sink = make_sink(url, store)
        await sink.open()
        delivered, retried = 0, 0
        for n in range(12):
            try:
                [result] = await sink.push([queued(n)])
            except RetryableError as exc:  # refused again right after a new login
                assert "session" in str(exc).lower() or "login page" in str(exc)
                retried += 1
            else:
                assert result.kind is ResultKind.DELIVERED
                delivered += 1
        await sink.close()
    invalidated = sim.counts["invalidated"]
    assert invalidated > 0
    assert sim.logins == 1 + invalidated
    assert delivered + retried == 12
    assert delivered > retried


async def test_a_lead_that_is_not_in_the_campaign_stops_the_sink_at_open(
    store: SqliteStore,
) -> None:
    sim = AmeyoSimulator(dialing=False)
    for url in serve(sim):
        sink = make_sink(url, store, lead_id=7)
        with pytest.raises(SinkConfigError, match="lead 7 is not in campaign 1"):
            await sink.open()
        await sink.close()
        disabled = make_sink(url, store, lead_id=35)
        with pytest.raises(SinkConfigError, match="lead 35 of campaign 1 is disabled"):
            await disabled.open()
        assert disabled.health().stopped_reason is not None
        await disabled.close()
        unknown = make_sink(url, store, campaign_id=9)
        with pytest.raises(SinkConfigError, match="campaign 9"):
            await unknown.open()
        await unknown.close()


async def test_cloud_header_auth_opens_without_a_session(store: SqliteStore) -> None:
    sim = AmeyoSimulator(dialing=False)
    auth = {
        "mode": "headers",
        "hash_key": "test-hash-key",
        "policy_name": "syncd",
        "requesting_host": "crm.example.com",
    }
    for url in serve(sim):
        sink = make_sink(url, store, auth=auth)
        await sink.open()
        [result] = await sink.push([queued(1)])
        assert sink.keepalive_interval_s is None
        assert sink.health().session == "not needed"
        await sink.keepalive()
        await sink.close()
    assert result.kind is ResultKind.DELIVERED
    assert (sim.logins, sim.pings, sim.counts["logouts"]) == (0, 0, 0)


class Recording(AmeyoSimulator):
    """The Ameyo simulator, noting each command and the (fake) time it arrived."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen: list[tuple[str, float]] = []

    def handle(self, command: str, data: Any, headers: dict[str, str]) -> Any:
        self.seen.append((command, self.clock()))
        return super().handle(command, data, headers)


async def on_virtual_time(work: Awaitable[T], sleepers: Sleepers, sink: AmeyoSink) -> T:
    """Return ``work``'s result, moving the fake clock only while no request is in flight."""
    task = asyncio.ensure_future(work)
    while not task.done():
        await asyncio.sleep(0.002)  # real time, for the loopback requests to finish
        if sink.guard.limits.in_flight == 0 and sleepers.quiescent():
            sleepers.wake_next()
    return task.result()


async def test_a_new_login_and_its_replay_go_ahead_of_requests_waiting_for_the_rate(
    store: SqliteStore,
) -> None:
    # Eight uploads queue for a rate of one request every 0.5 s on a session that has
    # expired. The new login and the replay of the upload that found the session dead
    # go next, not behind the seven waiting uploads (3.5 s, longer than the session).
    clock = FakeClock()
    sleepers = Sleepers(clock)
    sim = Recording(dialing=False, session_timeout_s=1.2, ping_interval_ms=60_000, clock=clock)
    for url in serve(sim):
        sink = make_sink(url, store, clock, rate_limit_per_s=2.0, push_concurrency=8)
        sink.guard.limits.limiter = RateLimiter(2.0, clock=clock, sleep=sleepers)
        await on_virtual_time(sink.open(), sleepers, sink)
        clock.advance(2.0)  # idle past the timeout: the server drops the session
        expired_at = clock.now
        pushes = asyncio.gather(*(sink.push([queued(n)]) for n in range(8)))
        results = await on_virtual_time(pushes, sleepers, sink)
        await on_virtual_time(sink.close(), sleepers, sink)

    assert all(r.kind is ResultKind.DELIVERED for [r] in results)
    assert len(sim.customer_list()) == 8
    assert sim.logins == 2 and sim.counts["expired"] >= 1
    after = [(c, t) for c, t in sim.seen if t >= expired_at and c != "logout"]
    [relogin] = [t for c, t in after if c == "login"]
    uploads = [t for c, t in after if c != "login"]
    assert relogin - uploads[0] <= 0.5  # the login went out right after the first refusal
    replay = min(t for t in uploads if t > relogin)
    assert replay - relogin <= 0.5  # and its replay right after the login
