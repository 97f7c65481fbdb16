"""The per-sink circuit breaker and throttle: a failing dialer is left alone, not flooded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from syncd.net.breaker import BreakerState, CircuitBreaker
from syncd.run.engine import Engine
from syncd.simulators.faults import Faults
from syncd.simulators.jodo.api import JodoSimulator, create_app
from syncd.simulators.server import running
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
