"""Do-not-call lists as dated versions, through real runs: a snapshot replaces the list
(a number it leaves out unblocks its leads, which reach the dialer), every version is
recorded with its checksum, a stale list warns (and with strict holds its routes' leads),
and a file of bare numbers without a header is read."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from syncd.core.summary import RunSummary
from syncd.simulators.jodo.api import JodoSimulator, create_app
from syncd.simulators.server import running
from syncd.state import open_store
from syncd.state.base import DncVersion
from tests.conftest import ROOT, drop_csv, run_cli
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
NOW = datetime(2026, 11, 30, 6, 0, tzinfo=UTC).timestamp()


def listing_config(tmp_path: Path, url: str, *, chunk_rows: int = 1000, **listing: Any) -> Path:
    """Return a config: Jodo (withdrawing by disposition) fed by the CRM, list ndnc read
    from tmp_path/dnc-inbox with ``listing``'s settings."""
    on_delete = {"dispomasterid": 7, "disporeasonid": 3}
    sink = jodo_sink(url, dispositions={"login": "supervisor", "on_delete": on_delete})
    inbox = tmp_path / "dnc-inbox"
    inbox.mkdir(exist_ok=True)
    settings = "".join(f"{k} = {json.dumps(v)}\n" for k, v in listing.items())
    toml = (
        f'[[sources]]\nname = "ndnc"\nkind = "csv_drop"\ninbox = "{inbox}"\n'
        f"chunk_rows = {chunk_rows}\n\n"
        '[[dnc_lists]]\nname = "ndnc"\nsource = "ndnc"\ncolumn = "number"\n'
        f'default_region = "IN"\n{settings}'
    )
    return write_config(
        tmp_path, [sink], routes=[route("jodo", policy={"dnc_lists": ["ndnc"]})], extra_toml=toml
    )


async def run_at(path: Path, now: float = NOW) -> RunSummary:
    return await run_engine(settings_for(path), deadline_s=60, clock=FakeClock(now))


def drop_list(tmp_path: Path, name: str, numbers: str) -> Path:
    return drop_csv(tmp_path / "dnc-inbox", name, numbers)


async def versions(path: Path) -> list[DncVersion]:
    store = await open_store(str(settings_for(path).state.path))
    try:
        return await store.dnc_versions("ndnc")
    finally:
        await store.close()


async def listed(path: Path, numbers: list[str]) -> set[str]:
    store = await open_store(str(settings_for(path).state.path))
    try:
        return set(await store.dnc_matches(["ndnc"], numbers))
    finally:
        await store.close()


async def test_a_snapshot_that_leaves_a_number_out_unblocks_its_leads_and_they_reach_the_dialer(
    tmp_path: Path,
) -> None:
    jodo = JodoSimulator(agents={"supervisor": 1})
    with running(create_app(jodo)) as url:
        path = listing_config(tmp_path, url, mode="snapshot")
        drop_list(tmp_path, "ndnc-1.csv", "number\n+919820012341\n+919820012342\n")
        await run_at(path)
        rows = "L1,F,L,9820012341,,\nL2,F,L,9820012342,,\nL3,F,L,9820012343,,\n"
        drop_csv(tmp_path / "inbox", "day1.csv", HEADER + rows)
        read = await run_at(path)
        # The next copy of the register: L2's number is gone, L3's is new.
        drop_list(tmp_path, "ndnc-2.csv", "number\n+919820012341\n+919820012343\n")
        second = await run_at(path)
        after_second = jodo.received()
        # And the one after: neither L1's nor L3's number (L3 was withdrawn after delivery).
        drop_list(tmp_path, "ndnc-3.csv", "number\n+919820012349\n")
        third = await run_at(path)
        explained = run_cli("explain", "L2", "-c", str(path), env=vendor_env())
        audited = run_cli(
            "audit", "--format", "jsonl", "--since", "2026-11-29", "-c", str(path),
            env=vendor_env(),
        )  # fmt: skip

    assert read.routes["crm->jodo"].blocked == {"dnc_list:ndnc": 2}
    assert second.dnc["ndnc"]["withdrawn"] == 1 and second.dnc["ndnc"]["released"] == 1
    assert after_second == {"L3": 1, "L2": 1}  # L2 reached the dialer; the CRM sent nothing
    assert {d["contactvalue"] for d in jodo.dispositions} == {"00919820012343"}
    assert third.dnc["ndnc"]["released"] == 2
    assert jodo.received() == {"L1": 1, "L2": 1, "L3": 2}  # L3 is back at the dialer
    assert read.balanced and second.balanced and third.balanced
    assert "released (dnc_list:ndnc)" in explained.stdout
    records = [json.loads(line) for line in audited.stdout.splitlines()]
    [freed] = [r for r in records if r["key"] == "L2" and r["decision"] == "released"]
    assert freed["dnc_list"] == "ndnc" and freed["list_version"].startswith("v2 of ")
    assert freed["policy_version"] and freed["numbers"] == ["+919820012342"]
    assert await listed(path, ["+919820012341", "+919820012343", "+919820012349"]) == {
        "+919820012349"
    }


async def test_each_version_is_recorded_with_its_file_rows_date_and_checksum(
    tmp_path: Path,
) -> None:
    with running(create_app(JodoSimulator())) as url:
        path = listing_config(tmp_path, url, mode="snapshot")
        first = drop_list(tmp_path, "ndnc-2026-11-02.csv", "number\n+919820012341\n")
        first_sum = hashlib.sha256(first.read_bytes()).hexdigest()
        await run_at(path)
        text = "number\n+919820012342\n+919820012343\nnot-a-number\n\n"
        second = drop_list(tmp_path, "register.csv", text)
        os.utime(second, (NOW - 86400, NOW - 86400))  # no date in its name: its mtime
        second_sum = hashlib.sha256(second.read_bytes()).hexdigest()
        await run_at(path)
        status = run_cli("status", "-c", str(path))

    found = await versions(path)
    assert [(v.version, v.file, v.rows, v.numbers, v.added, v.removed) for v in found] == [
        (2, "register.csv", 3, 2, 2, 1),
        (1, "ndnc-2026-11-02.csv", 1, 1, 1, 0),
    ]
    assert [v.sha256 for v in found] == [second_sum, first_sum]
    assert found[1].file_date == datetime(2026, 11, 2, tzinfo=UTC).timestamp()
    assert found[0].file_date == NOW - 86400
    assert status.returncode == 0, status.stderr
    assert "do-not-call list ndnc (snapshot): version 2 register.csv, 2 numbers" in status.stdout
    assert f"sha256 {second_sum[:12]}" in status.stdout


async def test_a_stale_list_warns_and_a_strict_one_holds_every_lead_until_a_fresh_copy_loads(
    tmp_path: Path,
) -> None:
    jodo = JodoSimulator()
    with running(create_app(jodo)) as url:
        path = listing_config(tmp_path, url, mode="snapshot", strict=True)
        drop_list(tmp_path, "ndnc-2026-10-01.csv", "number\n+919820012341\n")  # 60 days old
        drop_csv(tmp_path / "inbox", "day1.csv", HEADER + "L2,F,L,9820012342,,\n")
        stale = await run_at(path)
        held = jodo.received()
        status = run_cli("status", "-c", str(path))
        explained = run_cli("explain", "L2", "-c", str(path), env=vendor_env())
        drop_list(tmp_path, "ndnc-2026-11-29.csv", "number\n+919820012341\n")
        fresh = await run_at(path)

    assert held == {}
    assert stale.sinks["jodo"].held == 1 and stale.balanced
    assert "days old (ndnc-2026-10-01.csv, dated 2026-10-01" in status.stdout
    assert "max_age_days = 31): load a fresh copy" in status.stdout
    assert "strict: its routes' leads are held" in status.stdout
    assert "held (dnc_list_stale): do-not-call list ndnc is 60 days old" in explained.stdout
    assert jodo.received() == {"L2": 1} and fresh.balanced


async def test_a_stale_list_without_strict_only_warns(tmp_path: Path) -> None:
    jodo = JodoSimulator()
    with running(create_app(jodo)) as url:
        path = listing_config(tmp_path, url, max_age_days=7)
        drop_list(tmp_path, "ndnc-2026-11-01.csv", "number\n+919820012341\n")
        drop_csv(tmp_path / "inbox", "day1.csv", HEADER + "L2,F,L,9820012342,,\n")
        await run_at(path)
        status = run_cli("status", "-c", str(path))

    assert jodo.received() == {"L2": 1}
    assert "do-not-call list ndnc is" in status.stdout and "max_age_days = 7" in status.stdout
    assert "strict" not in status.stdout


async def test_a_list_file_without_a_header_is_read_one_number_a_line(tmp_path: Path) -> None:
    jodo = JodoSimulator()
    with running(create_app(jodo)) as url:
        path = listing_config(tmp_path, url)
        drop_list(tmp_path, "bare.csv", "+919820012341\n09820012342\n")
        drop_list(tmp_path, "wide.csv", "+919820012343,added 2026-11-01\n")
        await run_at(path)
        rows = "L1,F,L,9820012341,,\nL2,F,L,9820012342,,\nL3,F,L,9820012343,,\n"
        rows += "L4,F,L,9820012344,,\n"
        drop_csv(tmp_path / "inbox", "day1.csv", HEADER + rows)
        read = await run_at(path)

    assert read.routes["crm->jodo"].blocked == {"dnc_list:ndnc": 3}
    assert jodo.received() == {"L4": 1}
    assert [v.rows for v in await versions(path)] == [1, 2]


async def test_append_mode_keeps_every_number_a_later_file_leaves_out(tmp_path: Path) -> None:
    jodo = JodoSimulator()
    with running(create_app(jodo)) as url:
        path = listing_config(tmp_path, url)  # mode = "append", the default
        drop_list(tmp_path, "a.csv", "number\n+919820012341\n")
        await run_at(path)
        drop_list(tmp_path, "b.csv", "number\n+919820012342\n")
        await run_at(path)
        drop_csv(tmp_path / "inbox", "day1.csv", HEADER + "L1,F,L,9820012341,,\n")
        read = await run_at(path)

    assert read.routes["crm->jodo"].blocked == {"dnc_list:ndnc": 1}
    assert jodo.received() == {}
    assert [(v.file, v.mode, v.numbers, v.added) for v in await versions(path)] == [
        ("b.csv", "append", 2, 1),
        ("a.csv", "append", 1, 1),
    ]


async def test_a_snapshot_that_fails_while_read_leaves_the_version_in_force(
    tmp_path: Path,
) -> None:
    with running(create_app(JodoSimulator())) as url:
        path = listing_config(tmp_path, url, mode="snapshot", chunk_rows=1)
        drop_list(tmp_path, "v1.csv", "number\n+919820012341\n")
        await run_at(path)
        # Two chunks are staged, then a row too large to parse stops the read.
        broken = "number\n+919820012342\n+919820012343\n" + "9" * 1_100_000 + "\n+919820012344\n"
        drop_list(tmp_path, "v2.csv", broken)
        failed = await run_at(path)
        in_force = await listed(path, ["+919820012341", "+919820012342", "+919820012343"])
        # The register's owner drops the file again, whole this time, under the same name.
        drop_list(tmp_path, "v2.csv", "number\n+919820012344\n")
        await run_at(path)

    assert failed.files_failed and in_force == {"+919820012341"}
    numbers = ["+919820012341", "+919820012342", "+919820012343", "+919820012344"]
    assert await listed(path, numbers) == {"+919820012344"}  # nothing staged before counts
    # The file dropped again after a failure is filed under a stamped name of its own
    # (v2-<time>.csv), so the failed one's error is not among its rejects.
    [second, first] = [v.file for v in await versions(path)]
    assert second.startswith("v2-") and second.endswith(".csv") and first == "v1.csv"


async def test_an_empty_snapshot_is_refused_and_the_version_in_force_stays(
    tmp_path: Path,
) -> None:
    with running(create_app(JodoSimulator())) as url:
        path = listing_config(tmp_path, url, mode="snapshot")
        drop_list(tmp_path, "v1.csv", "number\n+919820012341\n")
        await run_at(path)
        drop_list(tmp_path, "v2.csv", "number\n")
        empty = await run_at(path)
        drop_list(tmp_path, "v3.csv", "number\nnot-a-number\n")
        invalid = await run_at(path)

    assert any("empty snapshot" in f and "no data row" in f for f in empty.files_failed)
    assert any("no valid number" in f for f in invalid.files_failed)
    assert await listed(path, ["+919820012341"]) == {"+919820012341"}
    assert [v.file for v in await versions(path)] == ["v1.csv"]


def test_kill_9_while_a_snapshot_loads_keeps_the_version_in_force_and_the_rerun_switches(
    tmp_path: Path,
) -> None:
    with running(create_app(JodoSimulator())) as url:
        path = listing_config(tmp_path, url, mode="snapshot", chunk_rows=2000)
        drop_list(tmp_path, "v1.csv", "number\n+919820012341\n")
        first = run_cli("run", "--once", "-c", str(path), env=vendor_env())
        assert first.returncode == 0, first.stderr
        n = 200_000
        drop_list(tmp_path, "v2.csv", "number\n" + "".join(f"+9198{i:08d}\n" for i in range(n)))
        proc = start_once(path)
        db = tmp_path / "state" / "state.db"
        wait_for(lambda: _count(db, "dnc_staging") > 0 or proc.poll() is not None)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert _count(db, "dnc_versions") == 1, "the load finished before it could be killed"
        in_force = _numbers(db)
        rerun = run_cli("run", "--once", "-c", str(path), env=vendor_env())

    assert in_force == {"+919820012341"}  # the old version, whole, while the new one loaded
    assert rerun.returncode == 0, rerun.stderr
    assert _count(db, "dnc_numbers") == n and "+919820012341" not in _numbers(db)
    assert _count(db, "dnc_staging") == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT file, rows, numbers FROM dnc_versions ORDER BY version")
        assert rows.fetchall() == [("v1.csv", 1, 1), ("v2.csv", n, n)]


def _count(db: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def _numbers(db: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        return {r[0] for r in conn.execute("SELECT number FROM dnc_numbers WHERE list = 'ndnc'")}


def start_once(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "syncd", "run", "--once", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        env=vendor_env(),
        cwd=ROOT,
    )


def wait_for(condition: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def test_a_first_line_that_looks_like_a_number_is_data_and_a_header_is_not() -> None:
    from syncd.run.pull import headerless_names

    assert headerless_names("number", ("+919820012341",)) == ("number",)
    assert headerless_names("number", ("(982) 001-2341", "x")) == ("number", "column2")
    assert headerless_names("number", ("number",)) is None
    assert headerless_names("number", ("phone", "name")) is None  # a header naming others
    assert headerless_names("number", ("12345",)) is None  # too short to be a number


def test_a_list_file_is_dated_by_its_name_else_by_its_modification_time() -> None:
    from syncd.run.pull import file_date

    day = datetime(2026, 11, 30, tzinfo=UTC).timestamp()
    assert file_date("dnc-2026-11-30.csv", 5.0) == day
    assert file_date("ndnc_20261130.csv", 5.0) == day
    assert file_date("register.csv", 5.0) == 5.0
    assert file_date("dnc-2026-13-40.csv", 5.0) == 5.0  # not a date
    assert file_date("export-120261130.csv", 5.0) == 5.0  # digits of a longer number


def test_a_list_is_stale_past_max_age_days_or_before_any_version() -> None:
    from syncd.config import DncListConfig
    from syncd.run.dnc_lists import list_state

    listing = DncListConfig(name="ndnc", source="ndnc", max_age_days=31)
    version = DncVersion("ndnc", "dnc-2026-10-30.csv", 1, 1, NOW - 31 * 86400, "aa")
    assert list_state(listing, version, NOW).stale is None  # 31 days: still fresh
    older = DncVersion("ndnc", "dnc-2026-10-29.csv", 1, 1, NOW - 32 * 86400, "aa")
    stale = list_state(listing, older, NOW)
    assert stale.stale is not None and "is 32 days old (dnc-2026-10-29.csv" in stale.stale
    assert stale.age_s == 32 * 86400
    never = list_state(listing, None, NOW)
    assert never.stale is not None and "no version loaded yet" in never.stale


def test_a_snapshot_list_needs_a_folder_of_files(tmp_path: Path) -> None:
    path = listing_config(tmp_path, "http://127.0.0.1:9", mode="snapshot")
    text = path.read_text(encoding="utf-8").replace(
        f'name = "ndnc"\nkind = "csv_drop"\ninbox = "{tmp_path / "dnc-inbox"}"\n'
        "chunk_rows = 1000\n",
        'name = "ndnc"\nkind = "sql"\nurl = "sqlite:///x.db"\nquery = "SELECT number FROM dnc"\n'
        'key_column = "number"\ncursor_column = "added_at"\n',
    )
    path.write_text(text, encoding="utf-8")
    checked = run_cli("check", "-c", str(path), env=vendor_env())
    assert checked.returncode != 0
    assert 'dnc_lists[0].mode: "snapshot" reads each file as the whole list' in checked.stderr
    assert "'sql', not a csv_drop folder" in checked.stderr


async def test_gate_explain_says_a_listed_number_is_blocked_and_the_lead_goes_on_its_alternate(
    tmp_path: Path,
) -> None:
    with running(create_app(JodoSimulator())) as url:
        path = listing_config(tmp_path, url)
        drop_list(tmp_path, "dnc-2026-11-29.csv", "number\n9820012345\n")
        await run_at(path)

    shown = run_cli(
        "gate", "explain", "-c", str(path), "9820012345", "9820012346",
        "--at", "2026-11-30T11:30:00+05:30",
    )  # fmt: skip

    assert shown.returncode == 0, shown.stderr
    assert "main +919820012345: blocked (dnc_list:ndnc)" in shown.stdout
    assert "alternate +919820012346: passes the screens" in shown.stdout
    assert "the lead is called on +919820012346" in shown.stdout
    alone = run_cli("gate", "explain", "-c", str(path), "9820012345")
    assert "decision: blocked (dnc_list:ndnc)" in alone.stdout, alone.stdout


async def test_a_snapshot_that_would_unlist_most_of_the_register_is_refused_as_cut_short(
    tmp_path: Path,
) -> None:
    jodo = JodoSimulator(agents={"supervisor": 1})
    register = "number\n" + "".join(f"+9198200123{i:02d}\n" for i in range(10))
    with running(create_app(jodo)) as url:
        path = listing_config(tmp_path, url, mode="snapshot")
        drop_list(tmp_path, "ndnc-1.csv", register)
        await run_at(path)
        drop_csv(tmp_path / "inbox", "day1.csv", HEADER + "L1,F,L,9820012301,,\n")
        await run_at(path)
        drop_list(tmp_path, "ndnc-2.csv", "number\n+919820012300\n+919820012309\n")  # cut short
        cut = await run_at(path)
        still = await listed(path, ["+919820012301"])
        sent_meanwhile = jodo.received()
        wanted = listing_config(tmp_path, url, mode="snapshot", max_shrink_percent=100)
        drop_list(tmp_path, "ndnc-3.csv", "number\n+919820012300\n+919820012309\n")
        meant = await run_at(wanted)

    assert still == {"+919820012301"} and "L1" not in sent_meanwhile
    assert [f for f in cut.files_failed if "max_shrink_percent" in f], cut.files_failed
    assert "2 numbers against 10 in force" in cut.files_failed[0]
    assert meant.dnc["ndnc"]["released"] == 1 and jodo.received() == {"L1": 1}
