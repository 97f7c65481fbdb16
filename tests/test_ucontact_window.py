"""uContact held to the calling window: each lead uploaded with its own zone, taken out of
the campaign at its window's close and sent again at the next opening (a fake clock, the
real pipeline, a uContact simulator asked what it holds and whom it would ring)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from syncd.core.summary import RunSummary
from syncd.simulators.ringing import would_ring
from syncd.simulators.server import running
from syncd.simulators.ucontact.api import UContactSimulator, create_app
from syncd.sinks.ucontact.timezones import upload_zone
from tests.conftest import drop_csv, run_cli
from tests.support.clock import FakeClock
from tests.support.reliability import (
    UCONTACT_PASSWORD,
    route,
    run_engine,
    settings_for,
    ucontact_sink,
    vendor_env,
    write_config,
)

HOURS = {"mon-sat": "09:00-20:00"}
HEADER = "id,first,last,phone,email,callback,alt\n"
GB, NY = "+442071234567", "+12125550100"  # London (UTC+0 in winter), New York (UTC-5)


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# The dialer's clock: each run moves it to the run's moment (a schedule falls due, and
# campaign hours apply, on the test's time, not on the wall clock's).
DIALER_CLOCK = FakeClock()


def simulator(**settings: Any) -> UContactSimulator:
    # dial_delay_s: it dials only when the test says so (dial_now)
    return UContactSimulator(
        users={"api": UCONTACT_PASSWORD}, dial_delay_s=3600.0, clock=DIALER_CLOCK, **settings
    )


def config(tmp_path: Path, url: str) -> Path:
    return write_config(
        tmp_path,
        [ucontact_sink(url)],
        routes=[route("ucontact", map={"alt_phones": ["alt"]}, policy={"windows": HOURS})],
    )


async def run_at(path: Path, when: str) -> RunSummary:
    DIALER_CLOCK.now = at(when)
    return await run_engine(settings_for(path), deadline_s=60, clock=FakeClock(at(when)))


def open_keys(sim: UContactSimulator) -> set[str]:
    return {row["key"] for row in sim.holdings()["open"]}


def audited(path: Path) -> list[dict[str, Any]]:
    """Return `syncd audit`'s records since 2026-11-30 (its JSON lines)."""
    out = run_cli(
        "audit", "--since", "2026-11-30", "--format", "jsonl", "-c", str(path), env=vendor_env()
    )
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def leads_table(tmp_path: Path) -> dict[str, tuple[str, str]]:
    db = sqlite3.connect(tmp_path / "state" / "state.db")
    try:
        return {k: (a, s) for k, a, s in db.execute("SELECT key, action, state FROM leads")}
    finally:
        db.close()


async def test_a_lead_is_withdrawn_at_the_close_and_back_at_the_next_opening_not_before(
    tmp_path: Path,
) -> None:
    sim = simulator(hours=HOURS)
    with running(create_app(sim)) as url:
        path = config(tmp_path, url)
        drop_csv(tmp_path / "inbox", "leads.csv", HEADER + f"GB1,Ana,L,{GB},,,\n")
        pushed = await run_at(path, "2026-11-30 19:40")  # a Monday, 19:40 in London
        [row] = sim.holdings()["open"]
        in_dialer = open_keys(sim)
        withdrawn = await run_at(path, "2026-11-30 20:01")
        after_close = open_keys(sim)
        night = await run_at(path, "2026-12-01 08:59")
        before_opening = open_keys(sim)
        morning = await run_at(path, "2026-12-01 09:00")
        after_opening = sim.holdings()["open"]
        records = audited(path)

    assert pushed.sinks["ucontact"].delivered == 1 and in_dialer == {"GB1"}
    # The dialer holds the lead with its zone: the campaign's hours apply on London's clock.
    assert row["hours_zone"] == "Europe/London" and row["ring_from"] is None
    assert would_ring(row, datetime.fromtimestamp(at("2026-11-30 19:50"), UTC), HOURS)
    assert [u["timezone"] for u in sim.uploads_made()][:1] == ["Europe/London"]
    # 20:01: taken out of the campaign (RemoveContact), held for the next opening.
    assert withdrawn.sinks["ucontact"].delivered == 1  # the withdrawal, confirmed
    assert after_close == set()
    assert [e.phone for e in sim.removed] == ["00442071234567"]
    # Not back before the window opens…
    assert before_opening == set()
    assert night.sinks["ucontact"].held == 1
    assert night.sinks["ucontact"].released_at == at("2026-12-01 09:00")
    # …and back when it does, uploaded again with its zone.
    assert morning.sinks["ucontact"].delivered == 1
    assert [r["key"] for r in after_opening] == ["GB1"]
    assert sim.dial_list()["00442071234567"] == {"present": 1, "added": 2, "peak": 1, "dialed": 0}
    assert [u["timezone"] for u in sim.uploads_made()] == ["Europe/London"] * 2
    assert pushed.balanced and withdrawn.balanced and night.balanced and morning.balanced
    # The audit says what happened and why.
    decisions = [(r["decision"], r["rule"]) for r in records if r["key"] == "GB1"]
    assert decisions == [
        ("pushed", ""),
        ("withdrawal_queued", "window_closed"),
        ("withdrawn", "window_closed"),
        ("held", "window_closed"),
        ("pushed", ""),
    ]


async def test_a_lead_dialled_to_the_end_before_the_close_is_not_sent_again(
    tmp_path: Path,
) -> None:
    sim = simulator(outcomes={"ANSWERED": 1.0})
    with running(create_app(sim)) as url:
        path = config(tmp_path, url)
        drop_csv(tmp_path / "inbox", "leads.csv", HEADER + f"GB1,Ana,L,{GB},,,\n")
        await run_at(path, "2026-11-30 19:40")
        assert sim.dial_now() == 1  # answered; its call record is read after the close
        await run_at(path, "2026-11-30 20:01")
        morning = await run_at(path, "2026-12-01 09:00")
        later = await run_at(path, "2026-12-01 10:00")
        explained = run_cli("explain", "GB1", "-c", str(path), env=vendor_env())

    assert morning.sinks["ucontact"].delivered == later.sinks["ucontact"].delivered == 0
    assert open_keys(sim) == set()
    assert sim.dial_list()["00442071234567"]["added"] == 1  # never uploaded again
    assert leads_table(tmp_path)["GB1"] == ("delete", "removed")
    assert "dialled to a final result after its delivery" in explained.stdout


async def test_leads_in_two_zones_go_in_one_upload_each_with_its_own_zone(
    tmp_path: Path,
) -> None:
    sim = simulator(hours=HOURS)
    with running(create_app(sim)) as url:
        path = config(tmp_path, url)
        both = "+442071234568"  # London, with a New York alternate
        rows = f"GB1,A,L,{GB},,,\nNY1,B,L,{NY},,,\nBOTH,C,L,{both},,,{NY}\n"
        drop_csv(tmp_path / "inbox", "leads.csv", HEADER + rows)
        summary = await run_at(path, "2026-11-30 15:00")  # 15:00 in London, 10:00 in New York
        uploads = sim.uploads_made()
        rows_by_key = {r["key"]: r for r in sim.holdings()["open"]}

    assert summary.sinks["ucontact"].delivered == 3
    zones = {u["timezone"]: u["text"] for u in uploads}
    assert set(zones) == {"Europe/London", "America/New_York"}
    assert "crmkey=NY1" in zones["America/New_York"]
    assert "crmkey=GB1" in zones["Europe/London"]
    # A lead in both zones goes with the one whose window closes first (London's).
    assert "crmkey=BOTH" in zones["Europe/London"]
    assert {k: r["hours_zone"] for k, r in rows_by_key.items()} == {
        "GB1": "Europe/London",
        "NY1": "America/New_York",
        "BOTH": "Europe/London",
    }
    # 20:30 in London is 15:30 in New York: the campaign's hours ring only the New Yorker.
    evening = datetime.fromtimestamp(at("2026-11-30 20:30"), UTC)
    ringing = {k for k, r in rows_by_key.items() if would_ring(r, evening, HOURS)}
    assert ringing == {"NY1"}


def test_the_upload_zone_is_the_one_whose_window_closes_first() -> None:
    winter = datetime(2026, 11, 30, 15, tzinfo=UTC)
    zones = ("America/New_York", "Europe/London", "America/Chicago")
    assert upload_zone(zones, None, winter) == "Europe/London"
    assert upload_zone(("Europe/Dublin", "Europe/London"), None, winter) == "Europe/Dublin"
    assert upload_zone((), "America/Montevideo", winter) == "America/Montevideo"
    assert upload_zone((), None, winter) is None


async def test_a_callback_in_the_next_opening_stays_scheduled_over_the_night(
    tmp_path: Path,
) -> None:
    sim = simulator(hours=HOURS)
    with running(create_app(sim)) as url:
        path = config(tmp_path, url)
        row = f"CB1,Ana,L,{GB},,2026-12-01 10:00,\n"  # call back tomorrow at 10:00
        drop_csv(tmp_path / "inbox", "leads.csv", HEADER + row)
        await run_at(path, "2026-11-30 19:40")
        evening = await run_at(path, "2026-11-30 20:01")
        [scheduled] = sim.holdings()["open"]
        next_evening = await run_at(path, "2026-12-01 20:01")  # not dialled by its close
        after = open_keys(sim)

    # The schedule holds its start; its close is that of tomorrow's opening, not tonight's.
    assert evening.sinks["ucontact"].delivered == 0 and not sim.removed
    assert scheduled["key"] == "CB1" and scheduled["ring_from"] == "2026-12-01T10:00:00+00:00"
    assert not would_ring(scheduled, datetime.fromtimestamp(at("2026-12-01 09:30"), UTC), HOURS)
    assert would_ring(scheduled, datetime.fromtimestamp(at("2026-12-01 10:00"), UTC), HOURS)
    assert next_evening.sinks["ucontact"].delivered == 1 and after == set()
    assert sim.requests["Dialers/RemoveScheduleDialerCall"] == 1


NDNC = """
[[sources]]
name = "ndnc"
kind = "csv_drop"
inbox = "{inbox}"

[[dnc_lists]]
name = "ndnc"
source = "ndnc"
column = "number"
default_region = "GB"
"""


async def test_a_number_listed_while_its_lead_is_out_for_the_night_never_comes_back(
    tmp_path: Path,
) -> None:
    sim = simulator()
    lists = tmp_path / "dnc-inbox"
    lists.mkdir()
    with running(create_app(sim)) as url:
        path = write_config(
            tmp_path,
            [ucontact_sink(url)],
            routes=[route("ucontact", policy={"windows": HOURS, "dnc_lists": ["ndnc"]})],
            extra_toml=NDNC.format(inbox=lists),
        )
        drop_csv(lists, "ndnc-0.csv", "number\n+442079999999\n")
        drop_csv(tmp_path / "inbox", "leads.csv", HEADER + f"GB1,Ana,L,{GB},,,\n")
        await run_at(path, "2026-11-30 19:40")
        await run_at(path, "2026-11-30 20:01")  # out for the night
        drop_csv(lists, "ndnc-1.csv", f"number\n{GB}\n")  # the person asks to be left alone
        listed = await run_at(path, "2026-11-30 23:00")
        morning = await run_at(path, "2026-12-01 09:00")

    assert listed.dnc["ndnc"]["withdrawn"] == 1
    assert morning.sinks["ucontact"].delivered == 0 and open_keys(sim) == set()
    assert sim.dial_list()["00442071234567"]["added"] == 1  # never uploaded again
    assert "00442071234567" in sim.snapshot()["campaigns"]["Ventas->"]["blacklist"]


CONSENTED = "id,first,last,phone,email,callback,alt,consent\n"
CONSENT = {"consent_column": "consent", "consent_max_age_days": 365}


@contextmanager
def consented_lead(tmp_path: Path, given: str) -> Iterator[tuple[UContactSimulator, Path]]:
    """Serve a campaign with HOURS and a config whose route maps a consent date good for
    365 days; drop London's GB1, its consent given at ``given``."""
    sim = simulator(hours=HOURS)
    rules = route(
        "ucontact",
        map={"alt_phones": ["alt"], "fields": {"consent": "consent"}},
        policy={"windows": HOURS, **CONSENT},
    )
    with running(create_app(sim)) as url:
        path = write_config(tmp_path, [ucontact_sink(url)], routes=[rules])
        drop_csv(tmp_path / "inbox", "leads.csv", CONSENTED + f"GB1,Ana,L,{GB},,,,{given}\n")
        yield sim, path


async def test_a_lead_whose_consent_runs_out_before_the_close_is_withdrawn_for_it_for_good(
    tmp_path: Path,
) -> None:
    # Consent runs out on 2026-11-30 at 19:30 UTC, half an hour before London's close.
    with consented_lead(tmp_path, "2025-11-30T19:30:00+00:00") as (sim, path):
        pushed = await run_at(path, "2026-11-30 19:00")
        [held] = sim.holdings()["open"]
        withdrawn = await run_at(path, "2026-11-30 19:31")
        after_expiry = open_keys(sim)
        night = await run_at(path, "2026-11-30 20:01")
        morning = await run_at(path, "2026-12-01 09:00")
        later = await run_at(path, "2026-12-01 10:00")
        records = audited(path)
        explained = run_cli("explain", "GB1", "-c", str(path), env=vendor_env())
        listed = run_cli("rejects", "-c", str(path), env=vendor_env())

    assert pushed.sinks["ucontact"].delivered == 1 and held["key"] == "GB1"
    assert listed.returncode == 0, listed.stderr
    [refused] = [line for line in listed.stdout.splitlines() if "GB1" in line]
    assert "blocked (consent_expired): consent ran out" in refused
    # 19:31: out of the campaign at its consent's end, not at the window's close.
    assert withdrawn.sinks["ucontact"].delivered == 1 and after_expiry == set()
    assert [e.phone for e in sim.removed] == ["00442071234567"]
    # Never back: not held for the next opening, not uploaded again when it comes.
    assert night.sinks["ucontact"].held == 0
    assert morning.sinks["ucontact"].delivered == later.sinks["ucontact"].delivered == 0
    assert open_keys(sim) == set()
    assert sim.dial_list()["00442071234567"]["added"] == 1
    assert all(s.balanced for s in (pushed, withdrawn, night, morning, later))
    # The audit and `syncd explain` give consent as the reason, never the window.
    decisions = [(r["decision"], r["rule"]) for r in records if r["key"] == "GB1"]
    assert decisions == [
        ("pushed", ""),
        ("withdrawal_queued", "consent_expired"),
        ("withdrawn", "consent_expired"),
        ("blocked", "consent_expired"),  # the refusal, as `syncd rejects` lists it
    ]
    withdrawal = next(r for r in records if r["event"] == "gate.withdrawn")
    assert withdrawal["reason"].startswith(
        "blocked (consent_expired): consent ran out at 2026-11-30 19:30 UTC"
    )
    assert explained.returncode == 0, explained.stderr
    assert "blocked (consent_expired): consent ran out" in explained.stdout
    assert "window_closed" not in explained.stdout


async def test_a_lead_out_for_the_night_whose_consent_runs_out_before_the_opening_is_refused_now(
    tmp_path: Path,
) -> None:
    # Consent runs out on 2026-12-01 at 02:00 UTC: after tonight's close, before 09:00.
    with consented_lead(tmp_path, "2025-12-01T02:00:00+00:00") as (sim, path):
        await run_at(path, "2026-11-30 19:00")
        night = await run_at(path, "2026-11-30 20:01")
        morning = await run_at(path, "2026-12-01 09:00")
        records = audited(path)

    # Taken out at the close, as the window says; not held for an opening it cannot see.
    assert [e.phone for e in sim.removed] == ["00442071234567"]
    assert night.sinks["ucontact"].held == 0 and night.sinks["ucontact"].refused == 1
    assert morning.sinks["ucontact"].delivered == 0 and open_keys(sim) == set()
    assert sim.dial_list()["00442071234567"]["added"] == 1
    decisions = [(r["decision"], r["rule"]) for r in records if r["key"] == "GB1"]
    assert decisions == [
        ("pushed", ""),
        ("withdrawal_queued", "window_closed"),
        ("withdrawn", "window_closed"),
        ("held", "window_closed"),
        ("blocked", "consent_expired"),
    ]
    held, refused = records[-2:]
    assert held["at_utc"] == refused["at_utc"] == "2026-11-30 20:01:00 UTC"
    assert "not held for the next opening: blocked (consent_expired)" in held["reason"]
    assert "consent runs out at 2026-12-01 02:00 UTC" in refused["reason"]
