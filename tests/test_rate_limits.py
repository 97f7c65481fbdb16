"""A sink's rate limit and concurrency cap hold for all its requests, not only pushes.

Logins, health checks, outcome polls and keep-alives go to the same dialer as the
uploads; the vendor's limit counts them all, so syncd does too.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from syncd.net.ratelimit import RateLimiter, RequestLimits
from syncd.run.engine import Engine
from syncd.simulators.faults import Faults
from syncd.simulators.server import running
from tests.conftest import drop_csv
from tests.support.clock import FakeClock, Sleepers
from tests.support.reliability import (
    VENDORS,
    RequestCounter,
    Vendor,
    export,
    run_engine,
    settings_for,
)

RATE = 20.0  # requests a second: one every 50 ms


@pytest.mark.parametrize("vendor", VENDORS, ids=lambda v: v.name)
async def test_every_request_of_a_sink_goes_through_its_rate_limiter(
    vendor: Vendor, tmp_path: Path
) -> None:
    sim = vendor.simulator(Faults())
    counter = RequestCounter(vendor.app(sim))
    limiters: list[RateLimiter] = []

    def limiter_of(engine: Engine) -> None:
        limiters.append(engine.sinks[vendor.name].sink.guard.limits.limiter)

    with running(counter) as url:
        config = vendor.config(
            tmp_path, url, batch_size=2, push_concurrency=4, rate_limit_per_s=RATE
        )
        drop_csv(tmp_path / "inbox", "a.csv", export(8))
        summary = await run_engine(settings_for(config), deadline_s=60, inspect=limiter_of)

    assert summary.sinks[vendor.name].delivered == 8
    assert counter.count > 8 // 2  # more than the four pushes: logins, checks, polls
    # Each request the dialer saw (logout included) waited its turn in the sink's
    # limiter, polls too; the spacing itself is the limiter's, tested on a fake clock below.
    [limiter] = limiters
    assert (limiter.rate_per_s, limiter.granted) == (RATE, counter.count)


async def test_the_limiter_spaces_requests_at_its_rate_on_a_fake_clock() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RATE, clock=clock, sleep=clock.sleep)
    started = clock.now
    sent_at = []
    for _ in range(10):
        await limiter.acquire()
        sent_at.append(clock.now - started)
    assert sent_at == pytest.approx([n / RATE for n in range(10)])
    limiter.hold(2.0)  # a Retry-After: the next request waits it out, then the rate resumes
    await limiter.acquire()
    assert clock.now - started == pytest.approx(9 / RATE + 2.0)
    assert limiter.granted == 11


async def test_requests_of_one_sink_share_its_limits_across_callers() -> None:
    clock = FakeClock()
    limits = RequestLimits("jodo", rate_per_s=RATE, max_in_flight=2, clock=clock)
    limits.limiter = RateLimiter(RATE, burst=2, clock=clock, sleep=clock.sleep)
    peak = 0

    async def request() -> None:
        nonlocal peak
        async with limits.slot():
            peak = max(peak, limits.in_flight)
            await asyncio.sleep(0)

    await asyncio.gather(*(request() for _ in range(8)))
    assert limits.limiter.granted == 8
    assert peak <= 2
    # A burst of two, then one every 1/RATE: eight requests span six intervals.
    assert clock.now - 1_000_000.0 == pytest.approx(6 / RATE)


async def test_max_in_flight_caps_the_requests_inside_one_push(tmp_path: Path) -> None:
    # Re-sending changed uContact leads removes each number first, several at once
    # inside a single push: the cap is on requests, so they go one by one.
    vendor = next(v for v in VENDORS if v.name == "ucontact")
    sim = vendor.simulator(Faults(latency_ms=20))
    counter = RequestCounter(vendor.app(sim))
    with running(counter) as url:
        config = vendor.config(tmp_path, url, batch_size=8, push_concurrency=1, max_in_flight=1)
        drop_csv(tmp_path / "inbox", "a.csv", export(8))
        first = await run_engine(settings_for(config), deadline_s=60)
        changed = export(8).replace(",First", ",Changed")
        drop_csv(tmp_path / "inbox", "b.csv", changed)
        second = await run_engine(settings_for(config), deadline_s=60)

    assert first.sinks["ucontact"].delivered == 8
    assert second.sinks["ucontact"].delivered == 8
    assert counter.by_path["/Integra/resources/Dialers/RemoveContact"] == 8
    assert counter.max_active == 1


async def test_an_urgent_request_goes_ahead_of_those_queued_for_the_rate() -> None:
    # A new login and its replay must not wait behind every request already queued:
    # a short session would expire before the replay went out.
    clock = FakeClock()
    sleepers = Sleepers(clock)
    limiter = RateLimiter(10.0, clock=clock, sleep=sleepers)  # one every 0.1 s
    started = clock.now
    granted: list[tuple[str, float]] = []

    async def request(name: str, urgent: bool = False) -> None:
        await limiter.acquire(urgent=urgent)
        granted.append((name, round(clock.now - started, 6)))

    queued = [asyncio.create_task(request(name)) for name in "ABCD"]
    await asyncio.sleep(0)  # A goes at once; B, C and D wait their turns
    urgent = asyncio.create_task(request("login", urgent=True))
    await asyncio.sleep(0)
    while sleepers.pending:
        sleepers.wake_next()
        for _ in range(3):
            await asyncio.sleep(0)
    await asyncio.gather(*queued, urgent)

    assert granted == [("A", 0.0), ("login", 0.1), ("B", 0.2), ("C", 0.3), ("D", 0.4)]
    assert limiter.waiting == 0
