"""End to end: a lead the CRM closes stops being dialled after the next `syncd run --once`."""

from __future__ import annotations

from pathlib import Path

from syncd.simulators.jodo.api import DialPlan, DialResult, JodoSimulator
from syncd.state.sqlite import SqliteStore
from tests.conftest import drop_csv, jodo_full_config, run_cli
from tests.support.jodo_outcomes import outcomes, serve

SINK = """
[sinks.dispositions]
login = "supervisor"
[[sinks.dispositions.rules]]
field = "crm_status"
values = ["Not interested", "DNC"]
dispomasterid = 3
disporeasonid = 7
remarks = "Closed in the CRM"
"""
MAP = """
[routes.map.fields]
crm_status = "status"
"""


async def test_a_lead_closed_in_the_crm_stops_being_dialled(tmp_path: Path) -> None:
    plan = DialPlan(
        interval_s=0,
        retry_s=0,
        max_attempts=100,
        recording_delay_s=None,
        results=(DialResult("No Answer"),),
    )
    sim = JodoSimulator(dial=plan, agents={"alice": 1, "supervisor": 1})
    asha, ravi = "00919820000001", "00919820000002"
    with serve(sim) as jodo:
        config = jodo_full_config(tmp_path, jodo.url, sink_extra=SINK, map_extra=MAP)
        drop_csv(
            tmp_path / "inbox",
            "monday.csv",
            "id,phone,first,last,status\nL1,9820000001,Asha,Rao,Open\nL2,9820000002,Ravi,Iyer,Open\n",
        )
        first = run_cli("run", "--once", "-c", str(config))
        assert first.returncode == 0, first.stderr
        drop_csv(
            tmp_path / "inbox",
            "tuesday.csv",
            "id,phone,first,last,status\nL2,9820000002,Ravi,Iyer,Not interested\n",
        )
        second = run_cli("run", "--once", "-c", str(config))
        assert second.returncode == 0, second.stderr
        state = sim.dial_state()
        closed_after = state[ravi].attempts
        going_on = state[asha].attempts
        for _ in range(3):
            sim.advance()

    state = sim.dial_state()
    assert state[ravi].disposed and state[ravi].attempts == closed_after
    assert state[asha].attempts == going_on + 3
    assert sim.dispositions == [
        {"contactvalue": ravi, "login": "supervisor", "ids": [3, 7], "remarks": "Closed in the CRM"}
    ]
    store = SqliteStore(tmp_path / "state" / "state.db")
    await store.open()
    try:
        got = await outcomes(store)
    finally:
        await store.close()
    assert (got["L2"]["status"], got["L2"]["disposition"]) == ("closed", "Closed in the CRM")
    assert got["L1"]["status"] == "no_answer"
