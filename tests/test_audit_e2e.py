"""`syncd audit` answers a regulator: every decision with the number, the lead's local time
and zones, the rule, the policy version, the do-not-call list, call_at moves, and the
dialer's answer to a withdrawal (a real Jodo simulator, the CLI as a subprocess)."""

from __future__ import annotations

import csv
import io
import json
import re
import signal
import sqlite3
from pathlib import Path
from typing import Any

from syncd.core.audit import route_policy_version
from syncd.simulators.faults import Faults
from syncd.simulators.jodo.api import JodoSimulator, create_app
from syncd.simulators.server import running
from tests.conftest import Simulated, drop_csv, run_cli
from tests.support.clock import FakeClock
from tests.support.reliability import jodo_sink, route, settings_for, write_config
from tests.test_crash_once import start_once, wait_for
from tests.test_gate_e2e import DNC_LIST, at, run_at, withdrawing_jodo

HEADER = "id,first,last,phone,email,callback,dnc,consent\n"
POLICY = {
    "windows": {"mon-sat": "09:00-20:00"},
    "dnc_column": "dnc",
    "consent_column": "consent",
    "require_consent": True,
    "dnc_lists": ["ndnc"],
}


def configure(tmp_path: Path, url: str, lists: Path, windows: dict[str, str]) -> Path:
    policy = {**POLICY, "windows": windows}
    return write_config(
        tmp_path,
        [withdrawing_jodo(url)],
        routes=[route("jodo", map={"fields": {"dnc": "dnc", "consent": "consent"}}, policy=policy)],
        extra_toml=DNC_LIST.format(inbox=lists),
    )


def audit(path: Path, fmt: str) -> list[dict[str, Any]]:
    done = run_cli("audit", "--since", "2026-11-01", "--format", fmt, "-c", str(path))
    assert done.returncode == 0, done.stderr
    if fmt == "jsonl":
        return [json.loads(line) for line in done.stdout.splitlines()]
    return list(csv.DictReader(io.StringIO(done.stdout)))


def one(rows: list[dict[str, Any]], key: str, decision: str) -> dict[str, Any]:
    found = [r for r in rows if r["key"] == key and r["decision"] == decision]
    assert len(found) == 1, (key, decision, [(r["key"], r["decision"]) for r in rows])
    return found[0]


async def test_the_audit_names_number_local_time_rule_policy_list_moves_and_the_dialers_answer(
    tmp_path: Path,
) -> None:
    sim = JodoSimulator(agents={"supervisor": 1})
    lists = tmp_path / "dnc-inbox"
    lists.mkdir()
    crm = tmp_path / "inbox"
    clock = FakeClock(at("2026-11-30 06:00"))  # a Monday: 11:30 in Mumbai, 01:00 in New York
    with running(create_app(sim)) as url:
        path = configure(tmp_path, url, lists, {"mon-sat": "09:00-20:00"})
        first_version = route_policy_version(settings_for(path).routes[0])
        drop_csv(
            crm,
            "day1.csv",
            HEADER
            + "OK1,F,L,9820012345,,,,yes\n"
            + "NY1,F,L,+12125550100,,,,yes\n"  # 01:00 in New York: held
            + "DNC1,F,L,9820012346,,,yes,yes\n"  # the CRM's do-not-call flag
            + "NOC1,F,L,9820012347,,,,\n"  # no consent
            + "JUNK1,F,L,9999999999,,,,yes\n"  # a placeholder
            + "CB1,F,L,9820012350,,2026-11-30 22:00,,yes\n"  # 03:30 in Mumbai: moved to 09:00
            + "LIST1,F,L,9820012349,,,,yes\n",  # its number arrives on the list below
        )
        drop_csv(lists, "ndnc.csv", "number\n+919820012349\n")
        await run_at(path, clock)
        # The window changes (a new policy version); OK1 asks to be left alone; a new lead
        # holds the listed number.
        path = configure(tmp_path, url, lists, {"mon-sat": "08:00-20:00"})
        second_version = route_policy_version(settings_for(path).routes[0])
        drop_csv(
            crm,
            "day2.csv",
            HEADER + "OK1,F,L,9820012345,,,yes,yes\n" + "LIST2,F,L,9820012349,,,,yes\n",
        )
        await run_at(path, clock)
        rows = audit(path, "jsonl")
        sheet = audit(path, "csv")

    assert first_version != second_version
    pushed = one(rows, "OK1", "pushed")
    assert pushed["numbers"] == ["+919820012345"]
    assert pushed["zones"] == ["Asia/Calcutta"] and pushed["at_local"][0].endswith("IST")
    assert pushed["policy_version"] == first_version  # kept after the configuration changed
    held = one(rows, "NY1", "held")
    assert (held["rule"], held["numbers"], held["zones"]) == (
        "window_closed",
        ["+12125550100"],
        ["America/New_York"],
    )
    assert held["at_local"][0].endswith(("EST", "EDT"))
    assert held["policy_version"] == first_version
    for key, rule in [("DNC1", "dnc_crm"), ("NOC1", "no_consent"), ("JUNK1", "placeholder_number")]:
        blocked = one(rows, key, "blocked")
        assert blocked["rule"] == rule and blocked["policy_version"] == first_version
        assert blocked["zones"] == ["Asia/Calcutta"]  # the lead's zone, not the route's UTC
        assert blocked["numbers"] and blocked["numbers"][0].startswith("+91")
    moved = one(rows, "CB1", "call_at_moved")
    assert moved["call_at_from"] == "2026-11-30T22:00:00+00:00"
    assert moved["call_at_to"] == "2026-12-01T03:30:00+00:00"  # 09:00 in Mumbai
    assert moved["numbers"] == ["+919820012350"] and moved["zones"] == ["Asia/Calcutta"]
    listed = one(rows, "LIST1", "withdrawal_queued")
    assert (listed["dnc_list"], listed["rule"]) == ("ndnc", "dnc_list:ndnc")
    # the list's version in force: its number, the registry copy's date, file, checksum
    assert re.fullmatch(
        r"v1 of \d{4}-\d{2}-\d{2} \(.+, sha256 [0-9a-f]{12}\)", listed["list_version"]
    )
    assert listed["numbers"] == ["+919820012349"]
    blocked_by_list = one(rows, "LIST2", "blocked")
    assert blocked_by_list["dnc_list"] == "ndnc"
    assert blocked_by_list["list_version"] == listed["list_version"]
    assert blocked_by_list["policy_version"] == second_version
    assert blocked_by_list["zones"] == ["Asia/Calcutta"]
    withdrawn_block = one(rows, "OK1", "blocked")
    assert (
        withdrawn_block["rule"] == "dnc_crm"
        and "withdrawal from the dialer is queued" in withdrawn_block["reason"]
    )
    assert withdrawn_block["policy_version"] == second_version
    withdrawn = one(rows, "OK1", "withdrawn")
    assert withdrawn["rule"] == "dnc_crm"
    assert withdrawn["numbers"] == ["+919820012345"]
    assert withdrawn["dialer_answer"].startswith("saveDisposition 7/3: Jodo: status")
    assert withdrawn["policy_version"] == second_version
    # The CSV says the same, one cell per column.
    csv_held = one(sheet, "NY1", "held")
    assert csv_held["numbers"] == "+12125550100" and csv_held["zones"] == "America/New_York"
    assert csv_held["rule"] == "window_closed" and csv_held["policy_version"] == first_version
    csv_moved = one(sheet, "CB1", "call_at_moved")
    assert csv_moved["call_at_to"] == "2026-12-01T03:30:00+00:00"
    assert one(sheet, "OK1", "withdrawn")["dialer_answer"].startswith("saveDisposition 7/3")
    assert len(sheet) == len(rows)


def test_after_kill_9_every_push_the_store_counts_and_every_block_is_in_the_audit(
    jodo: Simulated, tmp_path: Path
) -> None:
    n = 800
    jodo.sim.faults.set(Faults(latency_ms=40))
    config = write_config(
        tmp_path,
        [jodo_sink(jodo.url, batch_size=20)],
        routes=[
            route(
                "jodo",
                map={"fields": {"dnc": "dnc"}},
                policy={"windows": {"all": "00:00-24:00"}, "dnc_column": "dnc"},
            )
        ],
    )
    rows = [f"L{i},F,L,98{i:08d},,,{'yes' if i % 10 == 0 else ''}\n" for i in range(n)]
    drop_csv(
        tmp_path / "inbox", "big.csv", "id,first,last,phone,email,callback,dnc\n" + "".join(rows)
    )

    proc = start_once(config)
    try:  # a bound, not a timing: with both cores busy the run's start can be slow
        wait_for(lambda: 200 <= len(jodo.sim.records()), timeout=180)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert len(jodo.sim.records()) < n - n // 10, "the run finished before it could be killed"
    with sqlite3.connect(tmp_path / "state" / "state.db") as conn:
        delivered = {k for (k,) in conn.execute("SELECT key FROM leads WHERE state = 'delivered'")}
    audited = audit(config, "jsonl")

    pushed = {r["key"] for r in audited if r["decision"] == "pushed"}
    blocked = {r["key"] for r in audited if r["decision"] == "blocked"}
    assert delivered and pushed == delivered  # every push the store knows of, no more
    assert blocked == {f"L{i}" for i in range(0, n, 10)}  # committed with the file's chunk
    assert all(r["numbers"] and r["policy_version"] for r in audited)

    jodo.sim.faults.set(Faults())
    assert run_cli("run", "--once", "-c", str(config)).returncode == 0
    after = audit(config, "jsonl")
    assert {r["key"] for r in after if r["decision"] == "pushed"} == {
        str(r["leadnumber"]) for r in jodo.sim.records()
    }
