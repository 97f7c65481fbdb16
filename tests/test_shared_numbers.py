"""Households and offices: leads that share a number, as the dialer sees them.

A dialer rings numbers. With the default ``duplicates = "one_per_number"`` it holds
one open record per number and the other leads of that number wait their turn; a
removal that Jodo applies to a whole number (``saveDisposition`` by
``contactvalue``) never closes another live lead. Checked in the simulator, after
``syncd run --once`` as cron runs it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from syncd.simulators.jodo.api import JodoSimulator
from tests.conftest import drop_csv, jodo_full_config, run_cli
from tests.support.clock import FakeClock
from tests.support.households import Member, export, households, open_records
from tests.support.jodo_outcomes import serve
from tests.support.reliability import BEFORE_A_RETRY_S, run_engine, settings_for

ON_DELETE = """
[sinks.dispositions]
login = "supervisor"
on_delete = { dispomasterid = 9, disporeasonid = 1 }
"""
DELETED = 'deleted = "deleted"'


def config(tmp_path: Path, url: str, duplicates: str | None = None) -> Path:
    extra = f'duplicates = "{duplicates}"\n' if duplicates else ""
    return jodo_full_config(tmp_path, url, sink_extra=extra + ON_DELETE, map_extra=DELETED)


def sync(tmp_path: Path, cfg: Path, name: str, text: str) -> None:
    drop_csv(tmp_path / "inbox", name, text)
    done = run_cli("run", "--once", "-c", str(cfg))
    assert done.returncode == 0, done.stdout + done.stderr


def status(cfg: Path) -> dict[str, object]:
    shown = run_cli("status", "--json", "-c", str(cfg))
    assert shown.returncode == 0, shown.stderr
    return dict(json.loads(shown.stdout))


def live_numbers(members: list[Member], deleted: set[str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for m in members:
        if m.key not in deleted:
            out.setdefault(m.dialled, set()).add(m.key)
    return out


def test_one_record_per_number_and_a_removal_closes_only_its_own_lead(tmp_path: Path) -> None:
    members = households(count=10, size=3, singles=20)
    sim = JodoSimulator(agents={"supervisor": 1})
    with serve(sim) as jodo:
        cfg = config(tmp_path, jodo.url)
        sync(tmp_path, cfg, "monday.csv", export(members))

        held = open_records(sim)
        assert sorted(held) == sorted({m.dialled for m in members})
        assert all(len(keys) == 1 for keys in held.values()), "a number rings twice"
        seen = status(cfg)
        assert seen["gate"] == {"jodo": {"held same_number": 20}}
        assert len(seen["waiting"]) == 20  # type: ignore[arg-type]

        # The CRM deletes the lead the dialer holds in half the households, and five singles.
        holders = {keys[0] for number, keys in held.items() if number.startswith("00919820000")}
        gone = {k for k in holders if int(k[1:4]) < 5} | {f"S{s:03d}" for s in range(5)}
        sync(tmp_path, cfg, "tuesday.csv", export(members, gone))

    now_open = open_records(sim)
    for number, live in live_numbers(members, gone).items():
        keys = now_open.get(number, [])
        assert len(keys) == 1 and keys[0] in live, f"{number}: open {keys}, live {sorted(live)}"
    for single in range(5):
        assert f"009198210{single:05d}" not in now_open, "a deleted single still rings"


def test_with_duplicates_allowed_a_removal_waits_while_the_number_is_someone_elses(
    tmp_path: Path,
) -> None:
    members = households(count=4, size=3, singles=0)
    sim = JodoSimulator(agents={"supervisor": 1})
    with serve(sim) as jodo:
        cfg = config(tmp_path, jodo.url, duplicates="allow")
        sync(tmp_path, cfg, "monday.csv", export(members))
        assert all(len(keys) == 3 for keys in open_records(sim).values())

        # One member of each household leaves: the others keep being called.
        first_gone = {f"H{h:03d}-0" for h in range(4)}
        sync(tmp_path, cfg, "tuesday.csv", export(members, first_gone))
        for number, live in live_numbers(members, first_gone).items():
            assert live <= set(open_records(sim)[number]), f"{number}: a live lead was closed"
        assert sim.dispositions == []
        seen = status(cfg)
        assert seen["gate"] == {"jodo": {"held removal_waits": 4}}
        waiting = {w["key"]: w for w in seen["waiting"]}  # type: ignore[attr-defined]
        assert set(waiting) == first_gone
        assert "the number is also lead H000-" in waiting["H000-0"]["reason"]

        # The whole first household leaves: now its number is closed.
        all_gone = first_gone | {"H000-1", "H000-2"}
        sync(tmp_path, cfg, "wednesday.csv", export(members, all_gone))
        explained = run_cli("explain", "H000-0", "-c", str(cfg))

    assert "00919820000000" not in open_records(sim)
    for number, live in live_numbers(members, all_gone).items():
        assert live <= set(open_records(sim)[number]), f"{number}: a live lead was closed"
    assert "removal_waits" in explained.stdout, explained.stdout


async def test_the_next_lead_of_a_number_waits_until_the_holder_s_removal_has_landed(
    tmp_path: Path,
) -> None:
    members = households(count=2, size=2, singles=0)
    sim = JodoSimulator()  # nobody may dispose yet: saveDisposition says "Invalid login"
    clock = FakeClock(datetime(2026, 11, 30, 6, 0, tzinfo=UTC).timestamp())
    with serve(sim) as jodo:
        cfg = config(tmp_path, jodo.url)
        drop_csv(tmp_path / "inbox", "monday.csv", export(members))
        await run_engine(settings_for(cfg), deadline_s=60, clock=clock)
        drop_csv(tmp_path / "inbox", "tuesday.csv", export(members, {"H000-0"}))
        # The refused removal's retry is the next run's.
        refused = await run_engine(settings_for(cfg), deadline_s=BEFORE_A_RETRY_S, clock=clock)
        while_failing = open_records(sim)
        sim.floor.set_agent("supervisor", 1)  # the disposing login exists now
        clock.advance(2 * 3600)
        landed = await run_engine(settings_for(cfg), deadline_s=60, clock=clock)

    assert refused.sinks["jodo"].pending == 1  # the removal, still to land
    assert while_failing["00919820000000"] == ["H000-0"], "the next member went too early"
    assert landed.sinks["jodo"].delivered == 2  # the removal, then the next member
    assert open_records(sim)["00919820000000"] == ["H000-1"]


def test_a_lead_set_aside_and_then_deleted_leaves_the_run_balanced(tmp_path: Path) -> None:
    members = households(count=2, size=3, singles=0)
    sim = JodoSimulator(agents={"supervisor": 1})
    with serve(sim) as jodo:
        cfg = config(tmp_path, jodo.url)
        sync(tmp_path, cfg, "monday.csv", export(members))
        drop_csv(tmp_path / "inbox", "tuesday.csv", export(members, {"H000-2", "H001-1"}))
        done = run_cli("run", "--once", "-c", str(cfg))

    assert done.returncode == 0, done.stderr
    assert "MISMATCH" not in done.stdout, done.stdout
    assert "accounting:" in done.stdout
