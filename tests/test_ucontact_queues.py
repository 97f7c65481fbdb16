"""uContact's queue figures: read with the campaign's status, shown, and a hold on pushes
to a campaign nobody has been logged in to for too long."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncd.sinks.base import QueueFigures
from syncd.sinks.ucontact.queues import hold_reason, no_agents_since, parse_queue_summary
from tests.conftest import drop_csv, run_cli
from tests.support.clock import FakeClock
from tests.support.reliability import (
    UCONTACT_PASSWORD,
    export,
    route,
    run_engine,
    settings_for,
    ucontact_sink,
    vendor_env,
    write_config,
)
from tests.support.ucontact import served

# The document's example answer, as printed (the last element: the request's id only).
DOC_QUEUE_SUMMARY = [
    {"queue": "Power<-", "loggedIn": 10, "available": 5, "callers": 3, "holdTime": 18,
     "talkTime": 130, "longestHoldTime": 220, "internalActionId": "1982468278_6312",
     "dateReceived": "Nov 2, 2018 11:31:42 AM"},
    {"queue": "test->", "loggedIn": 0, "available": 0, "callers": 0, "holdTime": 0,
     "talkTime": 0, "longestHoldTime": 0, "internalActionId": "1982468278_6312",
     "dateReceived": "Nov 2, 2018 11:31:42 AM"},
    {"internalActionId": "1982468278_6312", "dateReceived": "Nov 2, 2018 11:31:42 AM"},
]  # fmt: skip


def test_the_documents_queue_summary_reads_as_figures_per_queue() -> None:
    assert parse_queue_summary(DOC_QUEUE_SUMMARY, "Power<-") == QueueFigures(
        "Power<-", logged_in=10, available=5, callers_waiting=3, hold_s=18, talk_s=130,
        longest_hold_s=220,
    )  # fmt: skip
    assert parse_queue_summary(DOC_QUEUE_SUMMARY, "test->") == QueueFigures("test->", 0, 0, 0)
    assert parse_queue_summary(DOC_QUEUE_SUMMARY, "Ventas->") is None
    assert parse_queue_summary({"error": "x"}, "Power<-") is None
    odd = [{"queue": "Power<-", "loggedIn": "4", "available": None, "callers": "-1"}]
    assert parse_queue_summary(odd, "Power<-") == QueueFigures("Power<-", 4, 0, 0)


USERS = {"api": UCONTACT_PASSWORD}
NOBODY, SOMEONE = QueueFigures("Ventas->", 0, 0, 2), QueueFigures("Ventas->", 2, 1, 0)
SINCE_CASES = [
    # (figures, known since, now, since now)
    (NOBODY, None, 1000.0, 1000.0),  # first seen empty: from now
    (NOBODY, 400.0, 1000.0, 400.0),  # still empty: from when it was first seen so
    (SOMEONE, 400.0, 1000.0, None),  # someone logged in: the count starts over
]


@pytest.mark.parametrize(("figures", "before", "now", "since"), SINCE_CASES)
def test_since_when_a_queue_has_had_nobody(
    figures: QueueFigures, before: float | None, now: float, since: float | None
) -> None:
    assert no_agents_since(figures, before, now) == since


HOLD_CASES = [
    # (nobody since, now, hold after minutes, held)
    (None, 5000.0, 10.0, False),  # someone is logged in
    (1000.0, 1000.0 + 599, 10.0, False),  # empty for under ten minutes
    (1000.0, 1000.0 + 600, 10.0, True),
    (1000.0, 99999.0, None, False),  # the option is off
]


@pytest.mark.parametrize(("since", "now", "after_min", "held"), HOLD_CASES)
def test_when_pushes_to_an_empty_campaign_wait(
    since: float | None, now: float, after_min: float | None, held: bool
) -> None:
    reason = hold_reason("Ventas->", since, now, after_min)
    assert (reason is not None) is held
    if reason:
        assert "no agent logged in to campaign Ventas-> since" in reason


async def run_at(config: Path, clock: FakeClock) -> Any:
    return await run_engine(settings_for(config), deadline_s=60, clock=clock)


async def test_pushes_wait_while_nobody_is_logged_in_and_go_when_an_agent_logs_in(
    tmp_path: Path,
) -> None:
    clock = FakeClock(1_800_000_000.0)
    with served(users=USERS, queue_agents={"Ventas->": [0, 0]}) as (sim, url):
        sink = ucontact_sink(url, hold_without_agents_min=10)
        config = write_config(tmp_path, [sink], routes=[route("ucontact")])
        drop_csv(tmp_path / "inbox", "first.csv", export(3))
        first = await run_at(config, clock)  # empty for no time yet: the leads go
        assert first.sinks["ucontact"].delivered == 3

        clock.advance(11 * 60)
        drop_csv(tmp_path / "inbox", "second.csv", export(2, start=3))
        second = await run_at(config, clock)
        counts = second.sinks["ucontact"]
        assert (counts.delivered, counts.pending) == (0, 2)
        assert counts.waiting and "no agent logged in to campaign Ventas-> since" in counts.waiting
        said = shown(run_cli("status", "-c", str(config), env=vendor_env()).stdout)
        assert "queue Ventas->: 0 agent(s) logged in, 0 available, 3 caller(s) waiting" in said
        assert "warning: no agent logged in to campaign Ventas->" in said

        sim.apply_settings({"queue_agents": {"Ventas->": [2, 1]}})
        third = await run_at(config, clock)
        assert third.sinks["ucontact"].delivered == 2
        assert len(sim.dial_list()) == 5
        said = shown(run_cli("status", "-c", str(config), env=vendor_env()).stdout)
    assert "queue Ventas->: 2 agent(s) logged in, 1 available" in said
    assert "no agent logged in" not in said


def shown(text: str) -> str:
    """Return what `syncd status` printed, as one line (the console wraps long ones)."""
    return " ".join(text.split())


def test_queue_figures_are_metrics_of_the_daemon(tmp_path: Path, start_daemon: Any) -> None:
    with served(users=USERS, queue_agents={"Ventas->": [3, 2]}) as (_sim, url):
        config = write_config(
            tmp_path,
            [ucontact_sink(url)],
            routes=[route("ucontact")],
            extra_toml='[health]\nlisten = "127.0.0.1:0"\n',
        )
        daemon = start_daemon(config, env=vendor_env())
        daemon.wait_for("daemon.ready")
        text = httpx.get(f"{daemon.base_url}/metrics").text
        assert daemon.stop() == 0
    labels = r'\{queue="Ventas->",sink="ucontact"\}'
    assert re.search(f"syncd_sink_agents_logged_in{labels} 3.0", text), text
    assert re.search(f"syncd_sink_agents_available{labels} 2.0", text)
    assert re.search(f"syncd_sink_callers_waiting{labels} 0.0", text)


def test_a_server_without_queuesummary_delivers_every_lead_and_status_says_the_figures_are_off(
    tmp_path: Path,
) -> None:
    # Older releases and API users without supervisor rights answer it 404 (issue 24).
    missing = {"Supervisor/queuesummary"}
    with served(users=USERS, missing_endpoints=missing) as (sim, url):
        config = write_config(tmp_path, [ucontact_sink(url)], routes=[route("ucontact")])
        drop_csv(tmp_path / "inbox", "leads.csv", export(40))
        result = run_cli("run", "--once", "-c", str(config), env=vendor_env())
        status = shown(run_cli("status", "-c", str(config), env=vendor_env()).stdout)

    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert len(sim.dial_list()) == 40
    off = [line for line in result.stderr.splitlines() if '"sink.feature.off"' in line]
    assert len(off) == 1 and "Supervisor/queuesummary" in off[0] and '"status": 404' in off[0]
    assert "warning: Supervisor/queuesummary is off: the dialer answered HTTP 404" in status
    assert "stopped" not in status
