"""A hold is as wide as its cause (issue 30, point 2).

One uContact upload whose answer never came (a connection reset) puts its leads in
doubt: they wait ``settle_s`` on their own. The other leads go on, the outcome poll is
not held, and nothing says the dialer asked for a wait it never asked for. Only a real
Retry-After (or a 429) from the dialer holds the whole sink, and the log says which.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from structlog.testing import capture_logs

from syncd.config import SinkConfig
from syncd.net.guard import guard_from_config
from syncd.net.http import GuardedTransport
from syncd.simulators.server import running
from syncd.simulators.ucontact.api import UContactSimulator, create_app
from tests.conftest import drop_csv
from tests.support.clock import FakeClock
from tests.support.reliability import export, run_engine, settings_for, ucontact_sink, write_config


def named(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == event]


async def test_an_unanswered_upload_holds_its_own_leads_not_the_sink_nor_the_poll(
    tmp_path: Path,
) -> None:
    sim = UContactSimulator(
        users={"api": "ucontact-test-password"},
        dial_delay_s=3600,
        answers={"Dialers/uploadbase": ["reset"]},  # the first upload: carried out, no answer
    )
    with running(create_app(sim)) as url, capture_logs() as logs:
        sink = ucontact_sink(url, batch_size=1, push_concurrency=1, settle_s=60)
        config = write_config(tmp_path, [sink])
        drop_csv(tmp_path / "inbox", "a.csv", export(3))
        summary = await run_engine(settings_for(config), deadline_s=20)

    counts = summary.sinks["ucontact"]
    # The lead in doubt waits its settle_s on its own; the two others went.
    assert (counts.delivered, counts.pending) == (2, 1)
    assert "ucontact" not in summary.poll_failed  # the poll did not wait behind the doubt
    assert not named(logs, "sink.throttle.hold")
    assert not [e for e in logs if "Retry-After" in str(e)]  # the dialer asked for nothing


async def test_a_real_retry_after_holds_the_sink_and_says_the_dialer_asked() -> None:
    clock = FakeClock()
    guard = guard_from_config(SinkConfig(name="uc", kind="ucontact"), clock)

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "20"})

    transport = GuardedTransport(httpx.MockTransport(answer), guard.limits)
    with capture_logs() as logs:
        async with httpx.AsyncClient(transport=transport) as client:
            await client.get("http://dialer.test/upload")
    assert guard.limits.limiter.held_for() == 20
    [hold] = named(logs, "sink.throttle.hold")
    assert hold["cause"] == "the dialer answered HTTP 429 with Retry-After: 20"
    assert guard.limits.hold_text(20) == "the dialer asked to wait 20 s (HTTP 429, Retry-After)"
