"""Jodo held to the calling window's start: every record carries callDateTime (a real run,
a fake clock, the Jodo simulator asked afterwards when it would ring each record)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from syncd.simulators.jodo.api import JodoSimulator, create_app
from syncd.simulators.ringing import would_ring
from syncd.simulators.server import running
from tests.conftest import drop_csv, run_cli
from tests.support.clock import FakeClock
from tests.support.reliability import (
    jodo_sink,
    route,
    run_engine,
    settings_for,
    vendor_env,
    write_config,
)

HEADER = "id,first,last,phone,email,callback\n"
WINDOW = {"windows": {"mon-sat": "09:00-20:00"}}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def open_rows(sim: JodoSimulator) -> dict[str, dict[str, Any]]:
    return {row["key"]: row for row in sim.holdings()["open"]}


async def test_ordinary_leads_ring_from_the_push_and_a_held_one_from_its_opening(
    tmp_path: Path,
) -> None:
    clock = FakeClock(at("2026-11-30 15:00").timestamp())  # a Monday: NY 10:00, Mumbai 20:30
    sim = JodoSimulator(clock=clock, timezone="Asia/Kolkata")
    with running(create_app(sim)) as url:
        path = write_config(
            tmp_path,
            [jodo_sink(url, timezone="Asia/Kolkata", calltype=1001)],
            routes=[route("jodo", policy=WINDOW)],
        )
        drop_csv(
            tmp_path / "inbox",
            "leads.csv",
            HEADER + "NY,F,L,+12125550100,,\nIN,F,L,+919820012345,,\n",
        )
        first = await run_engine(settings_for(path), deadline_s=60, clock=clock)
        after_first = open_rows(sim)
        opening = first.sinks["jodo"].released_at
        assert opening is not None
        clock.now = opening  # 09:00 in Mumbai the next morning
        await run_engine(settings_for(path), deadline_s=60, clock=clock)
        after_second = open_rows(sim)
        records = {r["leadnumber"]: r for r in sim.records()}

    assert set(after_first) == {"NY"}  # Mumbai's window is closed: held overnight
    assert after_first["NY"]["ring_from"] == at("2026-11-30 15:00").isoformat()
    assert records["NY"]["calltype"] == "1001"  # an ordinary lead keeps its calltype
    assert records["NY"]["callDateTime"] == "2026-11-30 20:30:00"  # the server's clock
    held = after_second["IN"]
    assert datetime.fromtimestamp(opening, UTC) == at("2026-12-01 03:30")
    assert held["ring_from"] == at("2026-12-01 03:30").isoformat()  # the opening, not before
    assert held["ring_until"] is None  # Jodo takes no end: the close is the dialer's hours
    assert not would_ring(held, at("2026-12-01 03:29"))
    assert would_ring(held, at("2026-12-01 03:30"))
    assert all(n == 1 for n in sim.received().values())


def test_check_names_what_jodo_cannot_be_held_to_and_what_to_set(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, [jodo_sink("http://127.0.0.1:9")], routes=[route("jodo", policy=WINDOW)]
    )
    fed = write_config(
        tmp_path / "fed",
        [jodo_sink("http://127.0.0.1:9", queue_ahead_minutes=10, queue_start=20)],
        routes=[route("jodo", policy=WINDOW)],
    )

    checked = run_cli("check", "-c", str(path), env=vendor_env())
    checked_fed = run_cli("check", "-c", str(fed), env=vendor_env())

    assert checked.returncode == 0, checked.stderr
    line = next(x for x in checked.stdout.splitlines() if "sink jodo" in x)
    assert line.startswith("WARNING: sink jodo (jodo): calling window held to the opening")
    assert "NOT held to the window's close" in line and "callDateTime" in line
    assert "in the dialer: set the process's calling hours in Jodo" in line
    assert "queue_ahead_minutes not set" in line
    fed_line = next(x for x in checked_fed.stdout.splitlines() if "sink jodo" in x)
    assert "about 10 min of the dialer's pace waits in it (20 before a pace" in fed_line
