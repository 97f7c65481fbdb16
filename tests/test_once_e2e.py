"""`syncd run --once` as a user runs it: a subprocess, a config, an inbox, a dialer."""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import stat
from pathlib import Path

from tests.conftest import Simulated, cli_env, drop_csv, jodo_config, run_cli

HEADER = "id,first,last,phone,email,callback\n"


def export(rows: list[str]) -> str:
    return HEADER + "".join(r + "\n" for r in rows)


def valid_rows(n: int, start: int = 0) -> list[str]:
    return [f"L{i},First{i},Last{i},98200{i:05d},l{i}@x.in," for i in range(start, start + n)]


def finished(stderr: str) -> dict[str, object]:
    for line in stderr.splitlines():
        if '"run.finished"' in line:
            return dict(json.loads(line))
    raise AssertionError(f"no run.finished line in:\n{stderr}")


def test_once_delivers_exactly_the_valid_leads_and_files_the_rejects(
    jodo: Simulated, tmp_path: Path
) -> None:
    config = jodo_config(tmp_path, jodo.url)
    rows = [
        *valid_rows(120),
        "B1,Bad,Phone,12345,,",
        ",No,Key,9820099999,,",
        "B2,Bad,Date,9820088888,,next tuesday",
        "L5,First5,Again,9820000005,,",  # duplicate key: the later row wins
    ]
    drop_csv(tmp_path / "inbox", "export.csv", export(rows))

    result = run_cli("run", "--once", "-c", str(config))

    assert result.returncode == 0, result.stderr
    totals = finished(result.stderr)
    assert totals["read"] == 124 and totals["rejected"] == 4 and totals["new"] == 120
    assert totals["delivered"] == 120 and totals["pending"] == 0
    records = {r["leadnumber"]: r for r in jodo.sim.records()}
    assert set(records) == {f"L{i}" for i in range(120)}
    assert records["L5"]["lname"] == "Again"
    assert all(n == 1 for n in jodo.sim.received().values())
    assert (
        "accounting: read = rejected + skipped + unchanged + new + changed + deleted: ok"
        in result.stdout
    )
    with (tmp_path / "inbox" / "done" / "export.csv.rejects.csv").open(encoding="utf-8") as fh:
        rejects = {row["line"]: row for row in csv.DictReader(fh)}
    assert set(rejects) == {"7", "122", "123", "124"}
    assert "superseded by line 125" in rejects["7"]["reason"]
    assert "invalid phone '12345'" in rejects["122"]["reason"] and rejects["122"]["id"] == "B1"
    assert "missing key" in rejects["123"]["reason"]
    assert "invalid date 'next tuesday'" in rejects["124"]["reason"]


def test_a_second_file_pushes_only_the_changed_and_new_leads(
    jodo: Simulated, tmp_path: Path
) -> None:
    config = jodo_config(tmp_path, jodo.url)
    drop_csv(tmp_path / "inbox", "day1.csv", export(valid_rows(50)))
    assert run_cli("run", "--once", "-c", str(config)).returncode == 0
    requests_before = jodo.sim.requests["ImportProcessData"]

    day2 = valid_rows(50)
    day2[3] = "L3,First3,Married,9820000003,l3@x.in,"
    day2[7] = "L7,First7,Last7,+91 98200 00007,l7@x.in,"  # same number, other spelling
    drop_csv(tmp_path / "inbox", "day2.csv", export([*day2, *valid_rows(2, start=50)]))
    result = run_cli("run", "--once", "-c", str(config))

    assert result.returncode == 0, result.stderr
    totals = finished(result.stderr)
    assert (totals["new"], totals["changed"], totals["unchanged"]) == (2, 1, 49)
    assert totals["delivered"] == 3
    received = jodo.sim.received()
    assert received["L3"] == 2 and received["L50"] == 1 and received["L7"] == 1
    assert jodo.sim.requests["ImportProcessData"] == requests_before + 1
    assert {r["leadnumber"]: r for r in jodo.sim.records()}["L3"]["lname"] == "Married"


def test_exit_1_and_leads_stay_queued_when_the_dialer_refuses_our_keys(
    jodo: Simulated, tmp_path: Path
) -> None:
    config = jodo_config(tmp_path, jodo.url)
    drop_csv(tmp_path / "inbox", "a.csv", export(valid_rows(10)))
    result = run_cli("run", "--once", "-c", str(config), env=cli_env(TEST_JODO_APIKEY="wrong"))
    assert result.returncode == 1
    assert "sink.stopped" in result.stderr and "API key not found" in result.stderr
    assert "wrong" not in result.stderr.replace("TEST_JODO_APIKEY", "")
    assert jodo.sim.records() == []

    fixed = run_cli("run", "--once", "-c", str(config))
    assert fixed.returncode == 0, fixed.stderr
    assert finished(fixed.stderr)["carried"] == 10
    assert len(jodo.sim.records()) == 10


def test_status_shows_counts_last_run_and_recent_rejects(jodo: Simulated, tmp_path: Path) -> None:
    config = jodo_config(tmp_path, jodo.url)
    drop_csv(tmp_path / "inbox", "a.csv", export([*valid_rows(5), "B1,Bad,Phone,12,,"]))
    assert run_cli("run", "--once", "-c", str(config)).returncode == 0
    result = run_cli("status", "-c", str(config), "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["counts"]["jodo"]["delivered"] == 5
    assert status["last_run"]["summary"]["balanced"] is True
    assert status["rejects"][0]["reason"].startswith("invalid phone '12'")
    human = run_cli("status", "-c", str(config))
    assert "delivered" in human.stdout and "invalid phone" in human.stdout


def test_state_store_is_private_to_the_service_user(jodo: Simulated, tmp_path: Path) -> None:
    config = jodo_config(tmp_path, jodo.url)
    drop_csv(tmp_path / "inbox", "a.csv", export(valid_rows(3)))
    assert run_cli("run", "--once", "-c", str(config)).returncode == 0
    db = tmp_path / "state" / "state.db"
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1


def test_invalid_config_exits_2(tmp_path: Path) -> None:
    config = jodo_config(tmp_path, "http://127.0.0.1:9")
    config.write_text(
        config.read_text().replace('updateparam = "crmuniquefield"', 'updateparam = "x"')
    )
    result = run_cli("run", "--once", "-c", str(config))
    assert result.returncode == 2
    assert "sinks[0].updateparam: must be one of" in result.stderr
