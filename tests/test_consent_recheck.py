"""Consent and do-not-call lists checked again at push and while a dialer holds the lead.

A row read with a day of consent left may wait in the outbox, or be held by its calling
window, past that day; a lead delivered with consent left sits in the dialer after it
runs out; a number may be listed after its lead was read. Real runs on a fake clock and
a Jodo simulator: who the dialer would ring, and what `syncd audit` says.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from syncd.core.gate import (
    ALLOWED,
    GateDecision,
    Screening,
    Verdict,
    consent_at_push,
    consent_expiry,
)
from syncd.core.model import Lead
from syncd.core.summary import RunSummary
from syncd.simulators.faults import Faults
from syncd.simulators.jodo.api import JodoSimulator, create_app
from syncd.simulators.server import running
from tests.conftest import drop_csv, run_cli
from tests.support.clock import FakeClock
from tests.support.reliability import route, run_engine, settings_for, vendor_env, write_config
from tests.test_gate_e2e import at, run_at, withdrawing_jodo

HEADER = "id,first,last,phone,email,callback,consent\n"
WINDOW = {"mon-sat": "09:00-20:00"}
CONSENT = {"consent_column": "consent", "consent_max_age_days": 365}
LIST = (
    '[[sources]]\nname = "ndnc"\nkind = "csv_drop"\ninbox = "{inbox}"\n\n'
    '[[dnc_lists]]\nname = "ndnc"\nsource = "ndnc"\ncolumn = "number"\ndefault_region = "IN"\n'
)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def config(tmp_path: Path, url: str, *, lists: bool = False, **policy: Any) -> Path:
    """Return a config: the CRM feeds a Jodo that withdraws by disposition, the consent
    column mapped; ``policy`` is the route's gate (with ``lists``: list ndnc too)."""
    extra = ""
    if lists:
        inbox = tmp_path / "dnc-inbox"
        inbox.mkdir(exist_ok=True)
        extra = LIST.format(inbox=inbox)
        policy = {**policy, "dnc_lists": ["ndnc"]}
    sink = withdrawing_jodo(url)
    sink["max_attempts"] = 1
    rules = route("jodo", map={"fields": {"consent": "consent"}}, policy=policy)
    return write_config(tmp_path, [sink], routes=[rules], extra_toml=extra)


async def failing_run(path: Path, now: float) -> RunSummary:
    """Return the summary of a run while the dialer fails every request: a short deadline,
    so the failing outcome poll is not asked again (it would wait in real time)."""
    return await run_engine(settings_for(path), deadline_s=1, clock=FakeClock(now))


def audit(path: Path) -> list[dict[str, Any]]:
    done = run_cli(
        "audit", "--since", "2026-11-01", "--until", "2026-12-31", "--format", "jsonl",
        "-c", str(path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def decisions(rows: list[dict[str, Any]], key: str) -> list[tuple[str, str, str]]:
    return [(r["event"], r["decision"], r["rule"]) for r in rows if r["key"] == key]


def ringing(sim: JodoSimulator) -> set[str]:
    """Return the leads the dialer would ring: its open records."""
    return {r["key"] for r in sim.holdings()["open"]}


# -- through real runs ------------------------------------------------------------------


async def test_a_lead_read_with_a_day_of_consent_is_not_held_past_it_nor_pushed(
    tmp_path: Path,
) -> None:
    # The case: read with 364 days of consent, then held by the window past day
    # 365. Before, it was pushed when the window opened, at 365 days and more.
    sim = JodoSimulator(agents={"supervisor": 1})
    with running(create_app(sim)) as url:
        path = config(tmp_path, url, windows=WINDOW, **CONSENT)
        drop_csv(
            tmp_path / "inbox",
            "day.csv",
            HEADER
            # runs out 02:00 UTC; the window opens 09:00 in Mumbai, 03:30 UTC
            + "OLD1,F,L,9820012345,,,2025-11-30T02:00:00+00:00\n"
            + "NEW1,F,L,9820012346,,,2026-06-01\n",
        )
        read = await run_at(path, FakeClock(at("2026-11-30 00:30")))  # 06:00 in Mumbai
        opened = await run_at(path, FakeClock(at("2026-11-30 03:30")))
        rows = audit(path)
        explained = run_cli("explain", "OLD1", "-c", str(path), env=vendor_env())

    assert read.routes["crm->jodo"].new == 2  # 364 days old when read: not blocked then
    assert (read.sinks["jodo"].refused, read.sinks["jodo"].held) == (1, 1)
    assert read.balanced and opened.balanced
    assert ringing(sim) == {"NEW1"}
    assert "OLD1" not in sim.received()
    assert decisions(rows, "OLD1") == [("push.rejected", "blocked", "consent_expired")]
    [refused] = [r for r in rows if r["key"] == "OLD1"]
    assert refused["numbers"] == ["+919820012345"]
    assert "before the calling window opens" in refused["reason"]
    assert "blocked (consent_expired)" in explained.stdout


async def test_a_lead_whose_consent_runs_out_while_queued_is_refused_at_push(
    tmp_path: Path,
) -> None:
    # No calling window: the lead waits in the outbox (a dialer that was down) instead.
    sim = JodoSimulator(faults=Faults(error_rate=1.0))
    with running(create_app(sim)) as url:
        path = config(tmp_path, url, **CONSENT)
        drop_csv(
            tmp_path / "inbox", "day.csv", HEADER + "OLD1,F,L,9820012345,,,2025-11-30T08:00:00Z\n"
        )
        await failing_run(path, at("2026-11-30 06:00"))  # the dialer fails: a dead letter
        retried = run_cli("retry", "--sink", "jodo", "-c", str(path), env=vendor_env())
        sim.faults.set(Faults())
        later = await run_at(path, FakeClock(at("2026-11-30 09:00")))  # an hour past day 365
        rows = audit(path)

    assert retried.returncode == 0, retried.stderr
    assert later.sinks["jodo"].refused == 1 and later.balanced
    assert "OLD1" not in sim.received()
    assert ("push.rejected", "blocked", "consent_expired") in decisions(rows, "OLD1")


async def test_a_delivered_lead_whose_consent_runs_out_is_withdrawn_from_the_dialer(
    tmp_path: Path,
) -> None:
    sim = JodoSimulator(agents={"supervisor": 1})
    with running(create_app(sim)) as url:
        path = config(tmp_path, url, windows=WINDOW, **CONSENT)
        drop_csv(
            tmp_path / "inbox",
            "day.csv",
            HEADER
            + "D1,F,L,9820012345,,,2025-12-01T00:00:00+00:00\n"  # runs out 2026-12-01 00:00
            + "K1,F,L,9820012346,,,2026-06-01\n",
        )
        first = await run_at(path, FakeClock(at("2026-11-30 06:00")))  # 11:30 in Mumbai
        before = ringing(sim)
        second = await run_at(path, FakeClock(at("2026-12-01 06:00")))  # a day later
        third = await run_at(path, FakeClock(at("2026-12-02 06:00")))
        rows = audit(path)

    assert first.sinks["jodo"].delivered == 2 and before == {"D1", "K1"}
    assert ringing(sim) == {"K1"}  # D1 is no longer rung
    assert {d["contactvalue"] for d in sim.dispositions} == {"00919820012345"}
    assert second.sinks["jodo"].carried == 1 and second.sinks["jodo"].delivered == 1
    assert second.balanced and third.balanced
    assert third.sinks["jodo"].delivered == 0  # withdrawn once
    assert sorted(decisions(rows, "D1")) == [
        ("gate.blocked", "blocked", "consent_expired"),  # the refusal, as `rejects` lists it
        ("gate.withdrawn", "withdrawal_queued", "consent_expired"),
        ("push.delivered", "pushed", ""),
        ("push.delivered", "withdrawn", "consent_expired"),
    ]
    queued = next(r for r in rows if r["key"] == "D1" and r["event"] == "gate.withdrawn")
    assert queued["numbers"] == ["+919820012345"] and queued["zones"] == ["Asia/Calcutta"]
    assert "consent ran out at 2026-12-01 00:00 UTC" in queued["reason"]


async def test_a_number_listed_after_its_lead_failed_is_not_pushed_when_sent_again(
    tmp_path: Path,
) -> None:
    # A dead letter is not withdrawn when its number is listed (the dialer never had it);
    # `syncd retry` sends it again, and the push must look at the lists itself.
    sim = JodoSimulator(faults=Faults(error_rate=1.0))
    with running(create_app(sim)) as url:
        path = config(tmp_path, url, lists=True)
        drop_csv(tmp_path / "inbox", "day.csv", HEADER + "L1,F,L,9820012345,,,\n")
        failed = await failing_run(path, at("2026-11-30 06:00"))
        drop_csv(tmp_path / "dnc-inbox", "ndnc.csv", "number\n+919820012345\n")
        sim.faults.set(Faults())
        await run_at(path, FakeClock(at("2026-11-30 07:00")))  # the list loads
        retried = run_cli("retry", "--sink", "jodo", "-c", str(path), env=vendor_env())
        again = await run_at(path, FakeClock(at("2026-11-30 08:00")))
        rows = audit(path)

    assert failed.sinks["jodo"].failed == 1
    assert retried.returncode == 0, retried.stderr
    assert "L1" not in sim.received()
    assert again.sinks["jodo"].refused == 1 and again.balanced
    refused = [r for r in rows if r["key"] == "L1" and r["event"] == "push.rejected"]
    assert [(r["decision"], r["rule"], r["dnc_list"]) for r in refused] == [
        ("blocked", "dnc_list:ndnc", "ndnc")
    ]
    assert refused[0]["reason"] == (
        "blocked (dnc_list:ndnc): its main number is on the do-not-call list ndnc"
    )
    assert refused[0]["numbers"] == ["+919820012345"]  # the audit names it; the log does not


async def test_a_lead_held_by_its_window_when_its_number_is_listed_is_not_pushed_at_the_opening(
    tmp_path: Path,
) -> None:
    # The list's load takes it off the outbox while it is held (kept as a guard).
    sim = JodoSimulator(agents={"supervisor": 1})
    with running(create_app(sim)) as url:
        path = config(tmp_path, url, lists=True, windows=WINDOW)
        drop_csv(tmp_path / "inbox", "day.csv", HEADER + "NY1,F,L,+12125550100,,,\n")
        held = await run_at(path, FakeClock(at("2026-11-30 06:00")))  # 01:00 in New York
        drop_csv(tmp_path / "dnc-inbox", "ndnc.csv", "number\n+12125550100\n")
        await run_at(path, FakeClock(at("2026-11-30 07:00")))
        opened = await run_at(path, FakeClock(at("2026-11-30 14:00")))  # 09:00 in New York

    assert held.sinks["jodo"].held == 1
    assert opened.sinks["jodo"].delivered == 0 and opened.sinks["jodo"].held == 0
    assert sim.received() == {}


def test_the_daemon_withdraws_a_lead_whose_consent_ran_out(
    tmp_path: Path, start_daemon: Any
) -> None:
    import asyncio

    sim = JodoSimulator(agents={"supervisor": 1})
    with running(create_app(sim)) as url:
        path = config(tmp_path, url, **CONSENT)
        drop_csv(tmp_path / "inbox", "day.csv", HEADER + "D1,F,L,9820012345,,,2025-12-01\n")
        # Delivered on 2026-11-30 with a day of consent left; the daemon runs on today's clock.
        asyncio.run(run_at(path, FakeClock(at("2026-11-30 06:00"))))
        assert ringing(sim) == {"D1"}
        daemon = start_daemon(path, env=vendor_env())
        daemon.wait_for("gate.withdrawn", reason="consent_expired")
        deadline = time.monotonic() + 20
        while ringing(sim) and time.monotonic() < deadline:
            time.sleep(0.05)
        daemon.stop()

    assert ringing(sim) == set()


# -- the pure decisions ----------------------------------------------------------------

NOW = utc("2026-11-30 00:30")
RULES = Screening(consent_max_age=timedelta(days=365))


@pytest.mark.parametrize(
    ("cell", "rules", "until"),
    [
        ("2025-11-30T02:00:00+00:00", RULES, utc("2026-11-30 02:00")),
        ("2025-11-30", RULES, utc("2026-11-30 00:00")),  # a date alone: midnight UTC
        ("2025-11-30T07:30:00+05:30", RULES, utc("2026-11-30 02:00")),
        ("yes", RULES, None),  # consent without a date never runs out
        ("", RULES, None),
        ("whenever", RULES, None),
        (None, RULES, None),  # no consent column
        ("2025-11-30", Screening(), None),  # no maximum age
    ],
)
def test_the_consent_expiry_is_its_date_plus_the_maximum_age(
    cell: str | None, rules: Screening, until: datetime | None
) -> None:
    assert consent_expiry(cell, rules) == until


HOLD = GateDecision(
    Verdict.HOLD, "window_closed", "held", until=utc("2026-11-30 03:30"), zones=("Asia/Calcutta",)
)
OPEN = GateDecision(Verdict.ALLOW, closes=utc("2026-11-30 14:30"), zones=("Asia/Calcutta",))
NEVER = GateDecision(Verdict.BLOCK, "window_never_open", "never")


@pytest.mark.parametrize(
    ("decision", "until", "verdict", "code", "closes"),
    [
        (OPEN, None, Verdict.ALLOW, "", utc("2026-11-30 14:30")),  # no expiry: as it was
        (OPEN, utc("2027-01-01"), Verdict.ALLOW, "", utc("2026-11-30 14:30")),
        (OPEN, utc("2026-11-30 10:00"), Verdict.ALLOW, "", utc("2026-11-30 10:00")),  # dial by
        (OPEN, utc("2026-11-30 00:30"), Verdict.BLOCK, "consent_expired", None),  # ran out now
        (OPEN, utc("2026-11-29"), Verdict.BLOCK, "consent_expired", None),
        (ALLOWED, utc("2026-11-30 10:00"), Verdict.ALLOW, "", utc("2026-11-30 10:00")),
        (ALLOWED, utc("2026-11-29"), Verdict.BLOCK, "consent_expired", None),
        (HOLD, utc("2026-11-30 02:00"), Verdict.BLOCK, "consent_expired", None),  # the issue's
        (HOLD, utc("2026-11-30 03:30"), Verdict.BLOCK, "consent_expired", None),
        (HOLD, utc("2026-11-30 05:00"), Verdict.HOLD, "window_closed", None),
        (NEVER, utc("2026-11-29"), Verdict.BLOCK, "window_never_open", None),
    ],
)
def test_consent_at_push_refuses_what_ran_out_or_would_while_held(
    decision: GateDecision,
    until: datetime | None,
    verdict: Verdict,
    code: str,
    closes: datetime | None,
) -> None:
    got = consent_at_push(decision, until, NOW)
    assert (got.verdict, got.code, got.closes) == (verdict, code, closes)
    if got.code == "consent_expired":
        assert got.zones == decision.zones  # the audit keeps the zones decided in


def test_consent_at_push_counts_the_time_the_dialer_needs_to_place_the_call() -> None:
    until = utc("2026-11-30 00:40")
    assert consent_at_push(OPEN, until, NOW).verdict is Verdict.ALLOW
    late = consent_at_push(OPEN, until, NOW, margin=timedelta(minutes=15))
    assert (late.verdict, late.code) == (Verdict.BLOCK, "consent_expired")


def test_a_lead_keeps_its_consent_expiry_and_one_without_keeps_its_text() -> None:
    plain = Lead(key="L1", phone="+919820012345")
    assert "consent_until" not in plain.to_json()
    lead = Lead(key="L1", phone="+919820012345", consent_until=utc("2026-11-30 02:00:00.5"))
    data = lead.to_json()
    assert data["consent_until"] == "2026-11-30T02:00:00+00:00"  # one shape, whole seconds
    assert Lead.from_json(data).consent_until == utc("2026-11-30 02:00")
