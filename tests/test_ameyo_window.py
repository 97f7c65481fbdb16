"""The calling window held at Ameyo: validityTime is the window's close (issue 25).

Through real `run --once` passes on a fake clock against the Ameyo simulator: a lead
pushed at 19:40 in Mumbai (window 09:00-20:00) rings until 20:00 and not after; one
that expired undialled is sent again at the next opening; leads whose windows close
at different times go in one request each; a callback tomorrow is kept until
tomorrow's close.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from syncd.simulators.ameyo.api import AmeyoSimulator, create_app
from syncd.simulators.ringing import would_ring
from syncd.simulators.server import running
from syncd.sinks.ameyo.config import AmeyoSinkConfig
from syncd.sinks.ameyo.replies import ameyo_validity
from syncd.state.sqlite import SqliteStore
from tests.conftest import drop_csv, run_cli
from tests.support.clock import FakeClock
from tests.support.reliability import (
    AMEYO_PASSWORD,
    ameyo_sink,
    route,
    run_engine,
    settings_for,
    vendor_env,
    write_config,
)

HEADER = "id,first,last,phone,email,callback\n"
WINDOW = {"windows": {"mon-sat": "09:00-20:00"}}
CLOUD = {"hash-key": "test-hash-key", "policy-name": "syncd", "requesting-host": "10.0.0.1"}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def at(text: str) -> float:
    return utc(text).timestamp()


def config(tmp_path: Path, url: str, **sink: Any) -> Path:
    return write_config(
        tmp_path,
        [ameyo_sink(url, timezone="Asia/Kolkata", **sink)],
        routes=[route("ameyo", policy=WINDOW)],
    )


def simulator(clock: FakeClock, **kwargs: Any) -> AmeyoSimulator:
    return AmeyoSimulator(users={"syncd": AMEYO_PASSWORD}, clock=clock, timezone="Asia/Kolkata",
                          **kwargs)  # fmt: skip


def rows_by_key(sim: AmeyoSimulator) -> dict[str, dict[str, Any]]:
    return {row["key"]: row for row in sim.holdings()["open"]}


async def held_until(path: Path) -> tuple[int, float | None]:
    store = SqliteStore(settings_for(path).state.path)
    await store.open()
    try:
        return await store.held("ameyo")
    finally:
        await store.close()


async def test_a_lead_rings_until_the_window_closes_and_again_at_the_next_opening(
    tmp_path: Path,
) -> None:
    # Monday 2026-11-30 14:10 UTC is 19:40 in Mumbai: twenty minutes of window left.
    clock = FakeClock(at("2026-11-30 14:10"))
    sim = simulator(clock, dialing=False)  # nobody dials it: it expires undialled
    with running(create_app(sim)) as url:
        path = config(tmp_path, url)
        drop_csv(tmp_path / "inbox", "a.csv", HEADER + "M1,Asha,K,9820012345,,\n")
        first = await run_engine(settings_for(path), deadline_s=60, clock=clock)
        evening = rows_by_key(sim)["M1"]
        clock.now = at("2026-11-30 14:35")  # 20:05 in Mumbai: closed
        second = await run_engine(settings_for(path), deadline_s=60, clock=clock)
        # Not queued again before an outcome poll that started after the close went
        # through (this run's, at its end): a call placed before 20:00 would show there.
        not_yet = await held_until(path)
        clock.now = at("2026-11-30 14:40")
        await run_engine(settings_for(path), deadline_s=60, clock=clock)
        held = await held_until(path)
        closed_rows = rows_by_key(sim)
        uploads_at_close = list(sim.uploads().values())
        clock.now = at("2026-12-01 03:30")  # Tuesday 09:00 in Mumbai: open again
        third = await run_engine(settings_for(path), deadline_s=60, clock=clock)
        morning = rows_by_key(sim)["M1"]

    assert first.sinks["ameyo"].delivered == 1
    assert evening["ring_until"] == utc("2026-11-30 14:30").isoformat()  # 20:00 IST
    assert evening["ring_from"] is None  # no callback: from the upload on
    assert would_ring(evening, utc("2026-11-30 14:20"))  # 19:50 IST
    assert not would_ring(evening, utc("2026-11-30 14:35"))  # 20:05 IST
    assert not would_ring(evening, utc("2026-12-01 03:35"))  # not even tomorrow, unless sent
    # After the close: queued again, held by the gate until the next opening, not sent.
    assert second.sinks["ameyo"].delivered == 0
    assert not_yet == (0, None)
    assert held == (1, at("2026-12-01 03:30"))
    assert uploads_at_close == [1]
    assert not would_ring(closed_rows["M1"], utc("2026-11-30 14:35"))
    # The next opening: sent again with the new close; dialable again until 20:00 IST.
    assert third.sinks["ameyo"].delivered == 1
    assert morning["ring_until"] == utc("2026-12-01 14:30").isoformat()
    assert would_ring(morning, utc("2026-12-01 03:35"))
    assert not would_ring(morning, utc("2026-12-01 14:31"))
    assert list(sim.uploads().values()) == [2]
    assert first.balanced and second.balanced and third.balanced


async def test_a_lead_the_dialer_rang_is_not_sent_again_after_its_close(tmp_path: Path) -> None:
    clock = FakeClock(at("2026-11-30 14:10"))  # 19:40 IST
    sim = simulator(clock)  # the dialer rings it at once
    sim.set_dialer(["NO_ANSWER"], redial_after_s=3600.0)  # its redial would fall at 20:40
    with running(create_app(sim)) as url:
        path = config(tmp_path, url)
        drop_csv(tmp_path / "inbox", "a.csv", HEADER + "M1,Asha,K,9820012345,,\n")
        await run_engine(settings_for(path), deadline_s=60, clock=clock)
        clock.now = at("2026-11-30 15:30")  # 21:00 IST: the redial's time has passed
        await run_engine(settings_for(path), deadline_s=60, clock=clock)
        clock.now = at("2026-12-01 03:30")
        third = await run_engine(settings_for(path), deadline_s=60, clock=clock)
        [customer] = sim.customer_list()

    assert customer.attempts == 1  # the redial past validityTime was not dialled
    assert customer.due is None
    assert third.sinks["ameyo"].delivered == 0 and list(sim.uploads().values()) == [1]


async def test_a_customer_who_answered_after_the_last_poll_is_not_sent_again(
    tmp_path: Path,
) -> None:
    clock = FakeClock(at("2026-11-30 14:10"))  # 19:40 IST
    sim = simulator(clock, dialing=False)
    with running(create_app(sim)) as url:
        path = config(tmp_path, url)
        drop_csv(tmp_path / "inbox", "a.csv", HEADER + "M1,Asha,K,9820012345,,\n")
        await run_engine(settings_for(path), deadline_s=60, clock=clock)  # pushed, polled
        clock.now = at("2026-11-30 14:20")  # 19:50 IST: the dialer rings her; she buys
        sim.set_dialer(["CONNECTED"])
        sim.snapshot()  # the dialer's floor moves to now
        clock.now = at("2026-11-30 15:00")  # 20:30 IST: the first run after the close
        await run_engine(settings_for(path), deadline_s=60, clock=clock)
        clock.now = at("2026-12-01 03:30")  # 09:00 IST the next morning
        await run_engine(settings_for(path), deadline_s=60, clock=clock)
        [customer] = sim.customer_list()
        history = run_cli("explain", "M1", "-c", str(path), env=vendor_env())

    assert customer.attempts == 1 and list(sim.uploads().values()) == [1]  # not rung again
    assert "dialer.expired" not in history.stdout
    assert "connected" in history.stdout.lower()


async def test_leads_whose_windows_close_apart_go_in_a_request_each(tmp_path: Path) -> None:
    # Monday 10:00 UTC: 15:30 in Mumbai (closes 14:30 UTC), 10:00 in London (20:00 UTC).
    clock = FakeClock(at("2026-11-30 10:00"))
    sim = simulator(clock, dialing=False)
    with running(create_app(sim)) as url:
        path = config(tmp_path, url)
        rows = "IN1,A,K,9820012345,,\nGB1,B,L,+442071234567,,\nIN2,C,M,9820012346,,\n"
        drop_csv(tmp_path / "inbox", "a.csv", HEADER + rows)
        summary = await run_engine(settings_for(path), deadline_s=60, clock=clock)
        held = rows_by_key(sim)

    assert summary.sinks["ameyo"].delivered == 3
    assert sim.requests["uploadContactAndAddCallback"] == 2
    assert held["IN1"]["ring_until"] == held["IN2"]["ring_until"] == "2026-11-30T14:30:00+00:00"
    assert held["GB1"]["ring_until"] == "2026-11-30T20:00:00+00:00"


async def test_a_callback_tomorrow_is_kept_until_tomorrows_close(tmp_path: Path) -> None:
    clock = FakeClock(at("2026-11-30 10:00"))  # 15:30 IST, Monday
    sim = simulator(clock, dialing=False)
    with running(create_app(sim)) as url:
        path = config(tmp_path, url)
        callback = "2026-12-01T10:00:00+05:30"
        drop_csv(tmp_path / "inbox", "a.csv", HEADER + f"M1,Asha,K,9820012345,,{callback}\n")
        await run_engine(settings_for(path), deadline_s=60, clock=clock)
        row = rows_by_key(sim)["M1"]

    assert row["ring_from"] == utc("2026-12-01 04:30").isoformat()
    assert row["ring_until"] == utc("2026-12-01 14:30").isoformat()  # Tuesday 20:00 IST
    assert would_ring(row, utc("2026-12-01 05:00"))
    assert not would_ring(row, utc("2026-11-30 16:00"))


# -- the wire: what syncd sends and what the simulator reads ---------------------------------


@pytest.mark.parametrize(
    ("zone", "offset", "text"),
    [
        ("Asia/Kolkata", True, "2026-11-30 20:00:00 GMT+05:30"),
        ("America/New_York", True, "2026-11-30 09:30:00 GMT-05:00"),
        ("UTC", True, "2026-11-30 14:30:00 GMT+00:00"),
        ("Asia/Kolkata", False, "2026-11-30 20:00:00"),
    ],
)
def test_validity_time_is_the_servers_wall_clock_with_its_offset(
    zone: str, offset: bool, text: str
) -> None:
    assert ameyo_validity(utc("2026-11-30 14:30"), zone, offset=offset) == text


@pytest.mark.parametrize(
    ("sent", "until"),
    [
        ("2026-11-30 20:00:00 GMT+05:30", "2026-11-30 14:30"),
        ("2026-11-30 20:00:00 +0530", "2026-11-30 14:30"),
        ("2026-11-30 20:00:00 IST", "2026-11-30 14:30"),  # the document's shape
        ("2026-11-30 20:00:00", "2026-11-30 14:30"),  # the server's own clock
        ("2026-11-30 09:30:00 GMT-05:00", "2026-11-30 14:30"),
    ],
)
def test_the_simulator_reads_a_validity_time_as_a_java_server_would(sent: str, until: str) -> None:
    sim = AmeyoSimulator(timezone="Asia/Kolkata", dialing=False)
    data = {
        "campaignId": 1,
        "leadId": 1,
        "properties": {"update.customer": True},
        "customerRecords": [{"phone1": "9820012345", "crm_key": "M1"}],
        "validityTime": sent,
    }
    sim.handle("uploadContacts", data, CLOUD)
    [customer] = sim.customer_list()
    assert customer.valid_until == at(until)


def test_a_validity_time_in_an_unknown_zone_is_refused_and_nothing_stored() -> None:
    sim = AmeyoSimulator(dialing=False)
    data = {
        "campaignId": 1,
        "leadId": 1,
        "properties": {},
        "customerRecords": [{"phone1": "9820012345"}],
        "validityTime": "2026-11-30 20:00:00 Mars/Olympus",
    }
    body = sim.handle("uploadContacts", data, CLOUD).body
    assert b"validity.time.invalid" in bytes(body)
    assert sim.customer_list() == []


def test_a_later_upload_with_a_new_validity_makes_an_expired_customer_dialable() -> None:
    clock = FakeClock(at("2026-11-30 14:10"))
    sim = AmeyoSimulator(timezone="Asia/Kolkata", clock=clock, dial_outcomes=["NO_ANSWER"],
                         redial_after_s=3600.0)  # fmt: skip

    def upload(validity: str) -> None:
        data = {
            "campaignId": 1,
            "leadId": 1,
            "properties": {"update.customer": True},
            "customerRecords": [{"phone1": "9820012345"}],
            "validityTime": validity,
        }
        sim.handle("uploadContacts", data, CLOUD)

    upload("2026-11-30 20:00:00")
    clock.now = at("2026-12-01 03:00")  # the redial at 20:40 IST fell after validityTime
    assert sim.customer_list()[0].attempts == 1
    upload("2026-12-01 20:00:00")
    clock.now = at("2026-12-01 03:05")
    [customer] = sim.customer_list()
    assert customer.attempts == 2  # dialled again once the new validity came
    assert customer.valid_until == at("2026-12-01 14:30")


def test_the_sink_declares_what_it_holds_the_dialer_to() -> None:
    base = {
        "name": "ameyo",
        "url": "http://ameyo:8888",
        "campaign_id": 1,
        "lead_id": 1,
        "auth": {"mode": "headers", "hash_key": "k", "policy_name": "p", "requesting_host": "h"},
    }
    held = AmeyoSinkConfig.model_validate(base).window_hold()
    assert held.held and held.close == "expiry" and held.per_request
    assert "validityTime" in held.describe()
    off = AmeyoSinkConfig.model_validate({**base, "validity_time": "off"}).window_hold()
    assert not off.held and not off.per_request
