"""Feed, don't flood, through real runs: a Jodo simulator that dials ten records a minute
on a fake clock, and a sink with ``queue_ahead_minutes = 10``. What waits undialled in the
dialer stays near ten minutes of its pace, and every lead still gets there."""

from __future__ import annotations

from pathlib import Path

from syncd.simulators.jodo.api import JodoSimulator, create_app
from syncd.simulators.jodo.dialing import DialPlan, DialResult
from syncd.simulators.server import running
from tests.conftest import drop_csv
from tests.support.clock import FakeClock
from tests.support.reliability import jodo_sink, route, run_engine, settings_for, write_config

LEADS = 400
BATCH = 20
PER_MINUTE = 10  # the simulator dials one record every 6 s
AHEAD = 10


def export() -> str:
    rows = "".join(f"L{n},F,L,98200{n:05d},,\n" for n in range(LEADS))
    return "id,first,last,phone,email,callback\n" + rows


async def test_the_dialer_holds_about_its_pace_times_the_minutes_ahead_never_the_backlog(
    tmp_path: Path,
) -> None:
    clock = FakeClock(1_800_000_000.0)
    plan = DialPlan(
        interval_s=60 / PER_MINUTE,
        recording_delay_s=0,
        results=(DialResult("Connected", "Interested", final=True),),
    )
    sim = JodoSimulator(dial=plan, clock=clock)
    waiting: list[int] = []
    notes: list[str | None] = []
    with running(create_app(sim)) as url:
        sink = jodo_sink(
            url,
            batch_size=BATCH,
            push_concurrency=1,
            queue_ahead_minutes=AHEAD,
            recordings={"enabled": False},
            agents={"enabled": False},
        )
        path = write_config(tmp_path, [sink], routes=[route("jodo")])
        drop_csv(tmp_path / "inbox", "leads.csv", export())
        for _minute in range(120):  # one run a minute, as cron would
            summary = await run_engine(settings_for(path), deadline_s=30, clock=clock)
            notes.append(summary.sinks["jodo"].waiting)
            waiting.append(sim.undialled())
            if len(sim.received()) == LEADS and sim.undialled() == 0:
                break
            clock.advance(60)

    # The flood it replaces: all 400 at once. Here: the start (one batch), then about
    # ten minutes of its pace (100), never more than that and one batch.
    assert waiting[0] == BATCH
    assert max(waiting) <= PER_MINUTE * AHEAD + BATCH
    assert max(waiting) >= PER_MINUTE * AHEAD // 2  # it does feed ahead, not one by one
    assert len(sim.received()) == LEADS and sim.undialled() == 0  # everyone got there
    assert all(n == 1 for n in sim.received().values())  # nobody sent twice
    assert notes[0] is not None and notes[0].startswith("feeding the dialer: 20 queued")
    assert any(n and "of its pace (10 a minute)" in n for n in notes)


async def test_an_update_of_a_lead_the_dialer_holds_goes_while_new_leads_wait(
    tmp_path: Path,
) -> None:
    clock = FakeClock(1_800_000_000.0)
    sim = JodoSimulator(clock=clock)  # its dialing engine is off: it reaches nobody
    with running(create_app(sim)) as url:
        sink = jodo_sink(url, queue_ahead_minutes=AHEAD, queue_start=2, push_concurrency=1)
        path = write_config(tmp_path, [sink], routes=[route("jodo")])
        rows = "".join(f"L{n},F,L,98200{n:05d},,\n" for n in range(5))
        drop_csv(tmp_path / "inbox", "a.csv", "id,first,last,phone,email,callback\n" + rows)
        first = await run_engine(settings_for(path), deadline_s=30, clock=clock)
        sent_first = dict(sim.received())
        clock.advance(60)
        changed = "id,first,last,phone,email,callback\nL0,Asha,L,9820000000,,\n"
        drop_csv(tmp_path / "inbox", "b.csv", changed)
        second = await run_engine(settings_for(path), deadline_s=30, clock=clock)

    assert sent_first == {"L0": 1, "L1": 1}  # the start: two, the dialer reached none
    assert first.sinks["jodo"].pending == 3
    assert sim.received() == {"L0": 2, "L1": 1}  # the update went; no new lead did
    assert second.sinks["jodo"].pending == 3
    assert (second.sinks["jodo"].waiting or "").startswith("feeding the dialer: 2 queued")
