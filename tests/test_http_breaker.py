"""The per-sink circuit breaker and throttle: a failing dialer is left alone, not flooded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import stamina
from structlog.testing import capture_logs

from syncd.config import SinkConfig
from syncd.core.summary import RunSummary, SinkCounts
from syncd.net.breaker import BreakerState, CircuitBreaker
from syncd.net.guard import guard_from_config
from syncd.net.http import GuardedTransport
from syncd.run.engine import Engine
from syncd.simulators.faults import Faults
from syncd.simulators.jodo.api import JodoSimulator, create_app
from syncd.simulators.server import running
from syncd.state.sqlite import SqliteStore
from tests.conftest import drop_csv
from tests.support.clock import FakeClock
from tests.support.reliability import (
    RequestCounter,
    export,
    jodo_sink,
    keys,
    run_engine,
    settings_for,
    write_config,
)

PUSH = b"ImportProcessData"


# -- the state machine ----------------------------------------------------------------


def test_breaker_opens_after_the_configured_failures_in_a_row() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("jodo", failure_threshold=3, reset_s=10, clock=clock)
    breaker.record_failure("HTTP 500")
    breaker.record_failure("HTTP 500")
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    breaker.record_failure("HTTP 503")
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    assert breaker.wait_s() == 10
    assert breaker.snapshot() == {
        "state": "open",
        "consecutive_failures": 3,
        "next_probe_in_s": 10,
        "last_failure": "HTTP 503",
    }


def test_a_success_in_between_resets_the_count() -> None:
    breaker = CircuitBreaker("jodo", failure_threshold=2, clock=FakeClock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


def test_after_the_pause_exactly_one_probe_goes() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("jodo", failure_threshold=1, reset_s=10, clock=clock)
    breaker.record_failure()
    clock.now += 10
    assert breaker.allow()  # the probe
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow()  # everyone else waits for its answer
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow() and breaker.allow()


def test_a_failed_probe_reopens_for_twice_as_long_up_to_the_cap() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("jodo", failure_threshold=1, reset_s=10, max_reset_s=25, clock=clock)
    breaker.record_failure()
    pauses = []
    for _ in range(3):
        pauses.append(breaker.wait_s())
        clock.now += breaker.wait_s()
        assert breaker.allow()
        breaker.record_failure()
    assert pauses == [10, 20, 25]
    assert breaker.state is BreakerState.OPEN


def test_a_probe_that_found_nothing_to_send_is_given_back() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("jodo", failure_threshold=1, reset_s=1, clock=clock)
    breaker.record_failure()
    clock.now += 1
    assert breaker.allow()
    breaker.cancel()
    assert breaker.allow()


def test_an_answer_to_another_request_makes_an_open_breaker_probe_at_once() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("jodo", failure_threshold=1, reset_s=10, max_reset_s=120, clock=clock)
    breaker.record_failure()
    for _ in range(3):  # the outage: every probe fails, the wait doubles
        clock.now += breaker.wait_s()
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.wait_s() == 80
    clock.now += 5  # the dialer is back: a poll (or a login) is answered
    breaker.record_answer()
    assert breaker.wait_s() == 0
    assert breaker.allow()  # the probe goes now, not 75 s later
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED


def test_a_dialer_that_answers_reads_but_fails_pushes_is_probed_once_per_reset_at_most() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("jodo", failure_threshold=1, reset_s=10, max_reset_s=600, clock=clock)
    breaker.record_failure()
    breaker.record_answer()
    assert breaker.allow()
    breaker.record_failure()  # the early probe failed too: its push path is broken
    for _ in range(50):  # a poll reading fifty pages in a row
        breaker.record_answer()
    assert breaker.wait_s() == 10  # one early probe per reset_s, not one per page
    clock.now += 10
    assert breaker.allow()
    breaker.record_failure()
    breaker.record_answer()
    assert breaker.wait_s() == 10  # still at most one per reset_s; the doubled wait is 40


def test_an_answer_leaves_a_closed_or_probing_breaker_alone() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("jodo", failure_threshold=2, reset_s=10, clock=clock)
    breaker.record_failure()
    breaker.record_answer()  # closed: the push's own answer decides, not a poll's
    assert (breaker.state, breaker.failures) == (BreakerState.CLOSED, 1)
    breaker.record_failure()
    clock.now += 10
    assert breaker.allow()  # the probe is out
    breaker.record_answer()
    assert breaker.state is BreakerState.HALF_OPEN and not breaker.allow()


@pytest.mark.parametrize(
    ("status", "probes"), [(200, True), (401, True), (500, False), (429, False), (503, False)]
)
async def test_every_request_the_dialer_answers_tells_the_breaker(
    status: int, probes: bool
) -> None:
    clock = FakeClock()
    guard = guard_from_config(SinkConfig(name="jodo", kind="jodo", breaker_failures=1), clock)
    guard.breaker.record_failure("HTTP 500")
    assert guard.breaker.wait_s() > 0
    inner = httpx.MockTransport(lambda request: httpx.Response(status))
    async with httpx.AsyncClient(transport=GuardedTransport(inner, guard.limits)) as client:
        await client.get("http://dialer.test/outcomes")
    assert (guard.breaker.wait_s() == 0) is probes


def test_state_is_a_plain_attribute_with_a_gauge_value() -> None:
    breaker = CircuitBreaker("jodo", failure_threshold=1, clock=FakeClock())
    assert (breaker.state, breaker.state_value) == ("closed", 0)
    breaker.record_failure()
    assert (breaker.state, breaker.state_value) == ("open", 2)


# -- in the push loop, against the Jodo simulator --------------------------------------


def breaker_state(engine: Engine, into: dict[str, Any]) -> None:
    sink = engine.sinks["jodo"].sink
    into.update(sink.health().details)
    into["guard_state"] = sink.guard.breaker.state


async def test_a_dialer_that_keeps_failing_is_left_alone_and_no_lead_spends_its_attempts(
    tmp_path: Path,
) -> None:
    sim = JodoSimulator(faults=Faults(error_rate=1.0))
    counter = RequestCounter(create_app(sim), only=PUSH)
    with running(counter) as url:
        sink = jodo_sink(
            url,
            batch_size=5,
            push_concurrency=1,
            max_attempts=3,
            breaker_failures=2,
            breaker_reset_s=600,
        )
        config = write_config(tmp_path, [sink])
        drop_csv(tmp_path / "inbox", "a.csv", export(20))
        seen: dict[str, Any] = {}
        summary = await run_engine(
            settings_for(config), deadline_s=30, inspect=lambda e: breaker_state(e, seen)
        )

    # Two pushes (each with its in-call retries), then the breaker opened and nothing
    # more was sent: the next probe is after the deadline, so the run ended early.
    assert counter.count == 2 * 4
    assert seen["breaker"]["state"] == "open" and seen["guard_state"] is BreakerState.OPEN
    counts = summary.sinks["jodo"]
    assert (counts.delivered, counts.failed, counts.pending) == (0, 0, 20)


async def test_the_breaker_probes_after_its_pause_and_closes_when_the_dialer_is_back(
    tmp_path: Path,
) -> None:
    sim = JodoSimulator(faults=Faults(error_rate=1.0))

    before_probe: list[str] = []

    def recover(n: int, when: str) -> None:
        if n == 8 and when == "after":  # the 8th request is the last in-call retry of push 2
            sim.faults.set(Faults())
        if n == 9 and when == "before":  # what the breaker had said when the probe went out
            before_probe.extend(e["event"] for e in logs if e["event"].startswith("sink.breaker"))

    counter = RequestCounter(create_app(sim), hook=recover, only=PUSH)
    with running(counter) as url, capture_logs() as logs:
        sink = jodo_sink(
            url, batch_size=5, push_concurrency=1, breaker_failures=2, breaker_reset_s=0.3
        )
        config = write_config(tmp_path, [sink])
        drop_csv(tmp_path / "inbox", "a.csv", export(20))
        seen: dict[str, Any] = {}
        summary = await run_engine(
            settings_for(config), deadline_s=30, inspect=lambda e: breaker_state(e, seen)
        )

    assert {r["leadnumber"] for r in sim.records("VoiceProcess")} == keys(20)
    assert summary.sinks["jodo"].delivered == 20
    assert seen["breaker"]["state"] == "closed"
    # Nothing was sent while it was open: the next request was the half-open probe.
    assert before_probe == ["sink.breaker.opened", "sink.breaker.half_open"]


async def test_being_told_to_slow_down_holds_the_sink_without_opening_the_breaker(
    tmp_path: Path,
) -> None:
    sim = JodoSimulator(faults=Faults(rate_429=1.0, retry_after="1"))

    def relent(n: int, when: str) -> None:
        if n == 3 and when == "after":
            sim.faults.set(Faults())

    counter = RequestCounter(create_app(sim), hook=relent, only=PUSH)
    with running(counter) as url, capture_logs() as logs:
        sink = jodo_sink(url, batch_size=5, push_concurrency=3, breaker_failures=1)
        config = write_config(tmp_path, [sink])
        drop_csv(tmp_path / "inbox", "a.csv", export(15))
        seen: dict[str, Any] = {}
        summary = await run_engine(
            settings_for(config), deadline_s=30, inspect=lambda e: breaker_state(e, seen)
        )

    assert summary.sinks["jodo"].delivered == 15
    assert seen["breaker"]["state"] == "closed"
    # Three workers were told "Retry-After: 1" at once: one hold of the whole sink (the
    # limiter's waiting is tested on a fake clock), and the breaker never opened.
    holds = [e for e in logs if e["event"] == "sink.throttle.hold"]
    assert holds and all(e["seconds"] == pytest.approx(1.0) for e in holds)
    assert not [e for e in logs if e["event"] == "sink.breaker.opened"]


async def test_push_level_rate_limit_spaces_the_requests(tmp_path: Path) -> None:
    sim = JodoSimulator()
    counter = RequestCounter(create_app(sim), only=PUSH)
    with running(counter) as url:
        sink = jodo_sink(url, batch_size=2, push_concurrency=4, rate_limit_per_s=20)
        config = write_config(tmp_path, [sink])
        drop_csv(tmp_path / "inbox", "a.csv", export(20))
        summary = await run_engine(settings_for(config), deadline_s=30)

    assert summary.sinks["jodo"].delivered == 20
    gaps = [b - a for a, b in zip(counter.times, counter.times[1:], strict=False)]
    assert counter.count == 10
    # Bursts up to max_in_flight (unset: 1) are allowed; then one every 50 ms.
    assert sum(gaps) >= 9 * 0.05 * 0.9


async def test_max_in_flight_caps_concurrent_requests_below_the_worker_count(
    tmp_path: Path,
) -> None:
    sim = JodoSimulator(faults=Faults(latency_ms=30))
    counter = RequestCounter(create_app(sim), only=PUSH)
    with running(counter) as url:
        sink = jodo_sink(url, batch_size=2, push_concurrency=4, max_in_flight=1)
        config = write_config(tmp_path, [sink])
        drop_csv(tmp_path / "inbox", "a.csv", export(16))
        summary = await run_engine(settings_for(config), deadline_s=30)

    assert summary.sinks["jodo"].delivered == 16
    assert counter.max_active == 1


async def test_a_sink_that_answers_retry_for_every_lead_also_opens_the_breaker(
    tmp_path: Path,
) -> None:
    # The uContact sink turns a failed upload into a retry per lead instead of raising.
    from syncd.simulators.ucontact.api import UContactSimulator
    from syncd.simulators.ucontact.api import create_app as ucontact_app
    from tests.support.reliability import ucontact_sink

    sim = UContactSimulator(users={"api": "ucontact-test-password"}, dial_delay_s=3600)

    def outage(n: int, when: str) -> None:
        if n == 1 and when == "before":  # logged in fine; the uploads start failing
            sim.faults.set(Faults(error_rate=1.0))

    counter = RequestCounter(ucontact_app(sim), hook=outage, only=b"/Dialers/uploadbase")
    with running(counter) as url:
        sink = ucontact_sink(
            url, batch_size=5, push_concurrency=1, breaker_failures=2, breaker_reset_s=600
        )
        config = write_config(tmp_path, [sink])
        drop_csv(tmp_path / "inbox", "a.csv", export(20))
        seen: dict[str, Any] = {}

        def state(engine: Engine) -> None:
            seen.update(engine.sinks["ucontact"].sink.health().details)

        summary = await run_engine(settings_for(config), deadline_s=30, inspect=state)

    assert seen["breaker"]["state"] == "open"
    assert summary.sinks["ucontact"].failed == 0
    assert counter.count <= 2 * 4  # two failed pushes, each with its in-call retries


async def test_pushes_resume_a_tick_after_the_dialer_is_back_not_after_the_doubled_wait(
    tmp_path: Path,
) -> None:
    # The daemon's rhythm on a fake clock: a push pass (deadline: now) and an outcome
    # poll every 5 s tick. The dialer is down for 200 s: the breaker's probes fail and
    # its wait doubles to 80 s. When the dialer returns, the first poll it answers
    # makes the breaker probe at once, and the next tick delivers.
    tick_s = 5.0
    clock = FakeClock(1_800_000_000.0)
    sim = JodoSimulator(clock=clock)
    with running(create_app(sim)) as url, stamina.set_testing(True, attempts=1):
        sink = jodo_sink(
            url,
            batch_size=5,
            push_concurrency=1,
            breaker_failures=1,
            breaker_reset_s=10,
            retry_base_s=0.5,
            retry_max_s=120,
        )
        settings = settings_for(write_config(tmp_path, [sink]))
        drop_csv(tmp_path / "inbox", "a.csv", export(20))
        store = SqliteStore(settings.state.path, clock)
        await store.open()
        engine = Engine(settings, store, clock=clock)
        try:
            await engine.pull(settings.sources[0], RunSummary("pull"))
            await engine.open()
            breaker = engine.sinks["jodo"].sink.guard.breaker

            async def tick() -> None:
                await engine.push("jodo", SinkCounts(), deadline=clock.time())
                await engine.poll("jodo")
                clock.advance(tick_s)

            sim.faults.set(Faults(error_rate=1.0))
            back_at = clock.time() + 200
            while clock.time() < back_at:
                await tick()
            assert breaker.state is BreakerState.OPEN
            wait_when_back = breaker.wait_s()
            sim.faults.set(Faults())
            ticks = 0
            while len(sim.received()) < 20 and ticks < 40:
                await tick()
                ticks += 1
        finally:
            await engine.close()
            await store.close()

    assert wait_when_back >= 60  # without the poll's word, pushes would wait this long
    assert sim.received() == {key: 1 for key in keys(20)}
    assert ticks <= 2  # the poll of the first tick, the pushes of the second
    assert breaker.state is BreakerState.CLOSED
