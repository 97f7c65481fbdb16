"""Jodo upserting by number: a lead whose number changes leaves no record behind.

With ``updateparam = "mobilenumber"`` Jodo knows a record by its number alone: the
changed lead goes in as a second record, and the one under the old number stays open,
rung for a person who may no longer hold that number (found by a fresh-eyes trial).
"""

from __future__ import annotations

from pathlib import Path

from syncd.simulators.jodo.api import JodoSimulator, create_app
from syncd.simulators.server import running
from tests.conftest import drop_csv
from tests.support.clock import FakeClock
from tests.support.reliability import jodo_sink, route, run_engine, settings_for, write_config

HEADER = "id,first,last,phone,email,callback\n"
ON_DELETE = {"dispomasterid": 7, "disporeasonid": 3}


async def test_a_lead_whose_number_changes_is_closed_under_its_old_number(
    tmp_path: Path,
) -> None:
    sim = JodoSimulator(agents={"supervisor": 1})
    clock = FakeClock(1_796_000_000.0)
    with running(create_app(sim)) as url:
        sink = jodo_sink(url, updateparam="mobilenumber")
        sink["dispositions"] = {"login": "supervisor", "on_delete": ON_DELETE}
        path = write_config(tmp_path, [sink], routes=[route("jodo")])
        drop_csv(tmp_path / "inbox", "a.csv", HEADER + "M1,Old,Owner,9820066601,,\n")
        first = await run_engine(settings_for(path), deadline_s=60, clock=clock)
        drop_csv(tmp_path / "inbox", "b.csv", HEADER + "M1,New,Number,9820066699,,\n")
        second = await run_engine(settings_for(path), deadline_s=60, clock=clock)
        held = sim.holdings()

    assert first.exit_code() == 0 and second.exit_code() == 0
    opened = [(r["key"], r["numbers"]) for r in held["open"]]
    assert opened == [("M1", ["00919820066699"])], held  # the new number, once
    assert [r["numbers"] for r in held["closed"]] == [["00919820066601"]]
    assert [d["contactvalue"] for d in sim.dispositions] == ["00919820066601"]
