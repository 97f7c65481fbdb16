"""End to end: `syncd run --once` pushes leads, the simulator dials them, outcomes come back."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from syncd.simulators.jodo.api import DialPlan, DialResult, JodoSimulator
from syncd.state.sqlite import SqliteStore
from tests.conftest import drop_csv, jodo_full_config, run_cli
from tests.support.jodo_outcomes import outcomes, records_by_phone, serve
from tests.support.logs import events

CSV = """id,phone,first,last
L1,98200 00001,Asha,Rao
L2,+91 98200 00002,Ravi,Iyer
L3,0091-9820000003,Meera,Das
"""


async def test_pushed_leads_are_dialled_and_their_outcomes_and_recordings_land_in_the_store(
    tmp_path: Path,
) -> None:
    sim = JodoSimulator(
        dial=DialPlan(interval_s=0, retry_s=3600, recording_delay_s=None),
        agents={"alice": 1, "bob": 1},
    )
    sim.script("00919820000001", DialResult("Connected", "Interested", final=True))
    sim.script("00919820000002", DialResult("No Answer"))
    sim.script("00919820000003", DialResult("Connected", "Not Interested", final=True))
    with serve(sim) as jodo:
        # cron's next run is minutes later; here it is at once: ask again at once too
        asks = "[sinks.recordings]\nask_again_s = 0\n"
        config = jodo_full_config(tmp_path, jodo.url, sink_extra=asks)
        drop_csv(tmp_path / "inbox", "leads.csv", CSV)
        first = run_cli("run", "--once", "-c", str(config))
        assert first.returncode == 0, first.stderr
        assert "outcomes from jodo: 3 new or changed" in first.stdout

        store = SqliteStore(tmp_path / "state" / "state.db")
        await store.open()
        try:
            got = await outcomes(store)
        finally:
            await store.close()
        held = records_by_phone(sim)
        expected = {
            "L1": ("connected", "Interested", "00919820000001"),
            "L2": ("no_answer", "", "00919820000002"),
            "L3": ("connected", "Not Interested", "00919820000003"),
        }
        for key, (status, disposition, number) in expected.items():
            assert got[key]["status"] == status
            assert got[key]["disposition"] == disposition
            assert got[key]["call_id"] == held[number]["systemcallid"]
            assert got[key]["agent"] == held[number]["agentlogin"] in ("alice", "bob")
            assert got[key]["recording_url"] == ""  # the dialer has no recording yet

        sim.publish_recordings()
        second = run_cli("run", "--once", "-c", str(config))
        assert second.returncode == 0, second.stderr
        assert "outcomes from jodo: 3 new or changed" in second.stdout
        explained = run_cli("explain", "L1", "-c", str(config))

    store = SqliteStore(tmp_path / "state" / "state.db")
    await store.open()
    try:
        got = await outcomes(store)
    finally:
        await store.close()
    for o in got.values():
        assert o["recording_url"] == sim.recording_path(o["call_id"]) != ""
    assert sim.received() == {"L1": 1, "L2": 1, "L3": 1}  # nobody pushed twice
    assert got["L1"]["recording_url"] in explained.stdout


@pytest.mark.parametrize(
    ("sink_extra", "offset_s", "said"),
    [
        # The sink says the server runs on Asia/Kolkata (as the example does); the
        # server's clock is on UTC.
        ('timezone = "Asia/Kolkata"', 0.0, "the dialer's clock is 5.5 h behind ours"),
        # Right zone, but the server's clock runs half an hour late.
        ("", -1800.0, "the dialer's clock is 30 min behind ours"),
    ],
    ids=["zone", "clock"],
)
async def test_a_dialer_clock_that_disagrees_with_ours_loses_no_outcome_and_is_named(
    tmp_path: Path, sink_extra: str, offset_s: float, said: str
) -> None:
    # Polling on our clock asked for the wrong hours: after the first poll's day of
    # lookback, every outcome was missed without a word.
    sim = JodoSimulator(
        dial=DialPlan(interval_s=0, retry_s=3600, recording_delay_s=None), clock_offset_s=offset_s
    )
    for n in (1, 2, 3, 4):
        sim.script(f"0091982000000{n}", DialResult("Connected", "Interested", final=True))
    with serve(sim) as jodo:
        config = jodo_full_config(tmp_path, jodo.url, sink_extra=sink_extra)
        drop_csv(tmp_path / "inbox", "leads.csv", CSV)
        first = run_cli("run", "--once", "-c", str(config))
        drop_csv(tmp_path / "inbox", "more.csv", "id,phone,first,last\nL4,9820000004,Anil,Nair\n")
        second = run_cli("run", "--once", "-c", str(config))
        status = run_cli("status", "-c", str(config))

    assert first.returncode == 0 and second.returncode == 0, second.stderr
    assert "outcomes from jodo: 3 new or changed" in first.stdout
    assert "outcomes from jodo: 1 new or changed" in second.stdout  # L4, dialled since
    for result in (first, second):
        assert f"warning, jodo: {said}" in " ".join(result.stdout.split())  # however wrapped
        [skew] = events(result.stderr, "sink.clock.skew")  # logged once a run, as an error
        assert skew["level"] == "error"
    assert said in " ".join(status.stdout.split())
    if sink_extra:
        hint = "set the sink's timezone to the zone of the Jodo server's clock"
        assert hint in " ".join(second.stdout.split())


def _explained_with_outcome(
    config: Path, within_s: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Return `syncd explain L1` once it shows an outcome, polling again (`run --once`
    with nothing new) while the dialer has not rung yet or the poll came first."""
    give_up = time.monotonic() + within_s
    while True:
        shown = run_cli("explain", "L1", "-c", str(config))
        if "outcome at " in shown.stdout or time.monotonic() > give_up:
            return shown
        assert run_cli("run", "--once", "-c", str(config)).returncode == 0


async def test_explain_says_whether_an_outcome_belongs_to_the_record_the_dialer_holds_now(
    tmp_path: Path,
) -> None:
    sim = JodoSimulator(dial=DialPlan(interval_s=0, retry_s=3600, recording_delay_s=None))
    sim.script("00919820000001", DialResult("Connected", "Interested", final=True))
    with serve(sim) as jodo:
        config = jodo_full_config(tmp_path, jodo.url)
        drop_csv(tmp_path / "inbox", "leads.csv", CSV)
        assert run_cli("run", "--once", "-c", str(config)).returncode == 0
        before = _explained_with_outcome(config)
        # The CRM changes the lead after its call: the dialer gets a new record.
        drop_csv(
            tmp_path / "inbox", "again.csv", "id,phone,first,last\nL1,98200 00001,Asha,Menon\n"
        )
        assert run_cli("run", "--once", "-c", str(config)).returncode == 0
        after = run_cli("explain", "L1", "-c", str(config))

    assert "for the current record" in before.stdout
    assert "connected" in after.stdout
    assert "for an earlier record: the lead was sent again at" in after.stdout
