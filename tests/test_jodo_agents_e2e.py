"""End to end: an agent goes absent, `syncd run --once` moves their leads exactly once."""

from __future__ import annotations

import time
from pathlib import Path

from syncd.simulators.jodo.api import DialPlan, DialResult, JodoSimulator
from tests.conftest import drop_csv, jodo_full_config, run_cli
from tests.support.jodo_outcomes import records_by_phone, serve

CSV = """id,phone,first,last,agent
L1,9820000001,Asha,Rao,alice
L2,9820000002,Ravi,Iyer,alice
L3,9820000003,Meera,Das,bob
"""

SINK = """
[sinks.reallocation]
fallback = ["bob", "carol"]
after_s = 900
"""


def test_an_absent_agents_leads_are_reallocated_exactly_once(tmp_path: Path) -> None:
    plan = DialPlan(
        interval_s=0, retry_s=3600, recording_delay_s=None, results=(DialResult("Busy"),)
    )
    sim = JodoSimulator(dial=plan, agents={"alice": 1, "bob": 1, "carol": 1})
    with serve(sim) as jodo:
        config = jodo_full_config(tmp_path, jodo.url, sink_extra=SINK, map_extra='agent = "agent"')
        drop_csv(tmp_path / "inbox", "leads.csv", CSV)
        first = run_cli("run", "--once", "-c", str(config))
        assert first.returncode == 0, first.stderr
        assert "reallocatedata" not in sim.requests  # alice is at work

        sim.set_agent_status("alice", 0, since=time.time() - 3600)  # logged out an hour ago
        second = run_cli("run", "--once", "-c", str(config))
        third = run_cli("run", "--once", "-c", str(config))
        status = run_cli("status", "-c", str(config))
        explained = run_cli("explain", "L1", "-c", str(config))

    assert second.returncode == 0 and third.returncode == 0, second.stderr + third.stderr
    held = records_by_phone(sim)
    # bob has L3 of his own, carol nothing: carol gets the first, then bob (a tie, listed first)
    assert held["00919820000001"]["userlogin"] == "carol"
    assert held["00919820000002"]["userlogin"] == "bob"
    assert held["00919820000003"]["userlogin"] == "bob"
    assert sim.requests["reallocatedata"] == 2  # the third run moved nothing again
    assert status.returncode == 0, status.stderr
    assert "agents at the dialers" in status.stdout
    assert "alice" in status.stdout and "Logged Out" in status.stdout
    assert "jodo.reallocated" in explained.stdout and "alice -> carol" in explained.stdout
