"""A sink's rate limit and concurrency cap hold for all its requests, not only pushes.

Logins, health checks, outcome polls and keep-alives go to the same dialer as the
uploads; the vendor's limit counts them all, so syncd does too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd.simulators.faults import Faults
from syncd.simulators.server import running
from tests.conftest import drop_csv
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
async def test_every_request_of_a_sink_keeps_to_its_rate_limit(
    vendor: Vendor, tmp_path: Path
) -> None:
    sim = vendor.simulator(Faults())
    counter = RequestCounter(vendor.app(sim))
    with running(counter) as url:
        config = vendor.config(
            tmp_path, url, batch_size=2, push_concurrency=4, rate_limit_per_s=RATE
        )
        drop_csv(tmp_path / "inbox", "a.csv", export(8))
        summary = await run_engine(settings_for(config), deadline_s=60)

    assert summary.sinks[vendor.name].delivered == 8
    assert counter.count > 8 // 2  # more than the four pushes: logins, checks, polls
    gaps = [b - a for a, b in zip(counter.times, counter.times[1:], strict=False)]
    # No burst (max_in_flight unset): every request waits its turn, polls included.
    assert min(gaps) >= 0.9 / RATE, sorted(gaps)[:5]


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
