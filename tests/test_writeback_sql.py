"""The SQL writeback against the real PostgreSQL and MariaDB (and SQLite)."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from syncd.core.model import AgentStatus
from syncd.errors import ConfigError
from syncd.writeback.runner import run_writebacks
from tests.conftest import ROOT, cli_env, database_url, run_cli
from tests.support.writeback import (
    cli_config,
    keys,
    outcome,
    settings,
    status,
    store_with,
)


@dataclass
class Crm:
    """A CRM database with a leads table and two call-log tables, all named uniquely."""

    kind: str
    url: str
    engine: AsyncEngine
    leads: str
    calls: str  # one row per (sink, key, version): the idempotent log
    writes: str  # one row per statement run: counts every write, repeats included

    async def scalar(self, sql: str) -> Any:
        async with self.engine.connect() as conn:
            return (await conn.execute(text(sql))).scalar()

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        async with self.engine.connect() as conn:
            return [tuple(r) for r in (await conn.execute(text(sql))).fetchall()]

    def statements(self) -> list[str]:
        ignore, conflict = (
            ("INSERT IGNORE", "") if self.kind == "mysql" else ("INSERT", " ON CONFLICT DO NOTHING")
        )
        return [
            f"UPDATE {self.leads} SET call_status = :status, disposition = :disposition,"
            " attempts = :attempts, last_dialed_at = :last_dialed_at,"
            " recording_url = :recording_url WHERE lead_id = :key",
            f"{ignore} INTO {self.calls} (sink, lead_key, version, status, disposition)"
            f" VALUES (:sink, :key, :version, :status, :disposition){conflict}",
            f"INSERT INTO {self.writes} (lead_key, version) VALUES (:key, :version)",
        ]


DDL = {
    "pg": [
        "CREATE TABLE {leads} (lead_id varchar(20) PRIMARY KEY, name text,"
        " call_status varchar(20), disposition varchar(12), attempts integer,"
        " last_dialed_at timestamptz, recording_url text)",
        "CREATE TABLE {calls} (id bigserial PRIMARY KEY, sink text NOT NULL,"
        " lead_key varchar(20) NOT NULL, version integer NOT NULL, status text,"
        " disposition varchar(12), UNIQUE (sink, lead_key, version))",
        "CREATE TABLE {writes} (lead_key varchar(20), version integer)",
    ],
    "mysql": [
        "CREATE TABLE {leads} (lead_id VARCHAR(20) PRIMARY KEY, name TEXT,"
        " call_status VARCHAR(20), disposition VARCHAR(12), attempts INT,"
        " last_dialed_at DATETIME, recording_url TEXT) ENGINE=InnoDB",
        "CREATE TABLE {calls} (id BIGINT AUTO_INCREMENT PRIMARY KEY, sink VARCHAR(40) NOT NULL,"
        " lead_key VARCHAR(20) NOT NULL, version INT NOT NULL, status TEXT,"
        " disposition VARCHAR(12), UNIQUE KEY (sink, lead_key, version)) ENGINE=InnoDB",
        "CREATE TABLE {writes} (lead_key VARCHAR(20), version INT) ENGINE=InnoDB",
    ],
}
ENV = {"pg": "SYNCD_TEST_PG_URL", "mysql": "SYNCD_TEST_MYSQL_URL"}


@pytest.fixture(params=["pg", "mysql"])
async def crm(request: pytest.FixtureRequest) -> AsyncIterator[Crm]:
    kind = str(request.param)
    url = database_url(ENV[kind])
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    suffix = uuid.uuid4().hex[:8]
    names = {"leads": f"crm_leads_{suffix}", "calls": f"crm_calls_{suffix}"}
    names["writes"] = f"crm_writes_{suffix}"
    async with engine.connect() as conn:
        for ddl in DDL[kind]:
            await conn.execute(text(ddl.format(**names)))
    try:
        yield Crm(kind, url, engine, **names)
    finally:
        async with engine.connect() as conn:
            for table in names.values():
                await conn.execute(text(f"DROP TABLE {table}"))
        await engine.dispose()


async def add_leads(crm: Crm, lead_keys: list[str]) -> None:
    async with crm.engine.begin() as conn:
        await conn.execute(
            text(f"INSERT INTO {crm.leads} (lead_id, name) VALUES (:k, :n)"),
            [{"k": k, "n": f"Lead {k}"} for k in lead_keys],
        )


def sql_writeback(crm: Crm, **overrides: Any) -> dict[str, Any]:
    return {
        "name": "crm-db",
        "kind": "sql",
        "url": crm.url,
        "statement": crm.statements(),
        "batch_size": 50,
        "attempts": 2,
        **overrides,
    }


async def test_outcomes_land_exactly_once_across_kill_9_and_restart(
    tmp_path: Path, crm: Crm
) -> None:
    total = 3000
    lead_keys = keys(total)
    await add_leads(crm, lead_keys)
    store = await store_with(tmp_path / "state" / "state.db", [outcome(k) for k in lead_keys])
    await store.close()
    config = cli_config(tmp_path, sql_writeback(crm))
    # Another CRM session holds lead L01500: the batch holding it waits on the lock,
    # with every earlier batch committed. That is where the process gets killed.
    locker = create_async_engine(crm.url)  # not autocommit: the lock lasts until rollback
    blocker = await locker.connect()
    await blocker.begin()
    await blocker.execute(
        text(f"SELECT lead_id FROM {crm.leads} WHERE lead_id = 'L01500' FOR UPDATE")
    )
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "syncd", "run", "--once", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=cli_env(),
        cwd=ROOT,
    )
    try:
        for _ in range(600):
            if await crm.scalar(f"SELECT COUNT(*) FROM {crm.writes}") == 1450:
                break
            assert proc.returncode is None, "the run ended before reaching the locked lead"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # the batch with L01500 is now in flight, blocked
        proc.kill()  # SIGKILL
        assert await asyncio.wait_for(proc.wait(), 10) == -9
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await blocker.rollback()
        await blocker.close()
        await locker.dispose()
    assert await crm.scalar(f"SELECT COUNT(*) FROM {crm.writes}") == 1450

    restarted = await asyncio.to_thread(run_cli, "run", "--once", "-c", str(config))

    assert restarted.returncode == 0, restarted.stderr[-2000:]
    assert "written back through crm-db: 1550" in restarted.stdout
    writes = await crm.rows(f"SELECT lead_key, COUNT(*) FROM {crm.writes} GROUP BY lead_key")
    assert len(writes) == total and {n for _, n in writes} == {1}
    calls = await crm.rows(f"SELECT lead_key, version, status FROM {crm.calls}")
    assert sorted(calls) == [(k, 1, "connected") for k in lead_keys]
    updated = await crm.rows(
        f"SELECT COUNT(*), MIN(disposition), MAX(attempts) FROM {crm.leads}"
        " WHERE call_status = 'connected'"
    )
    assert updated == [(total, "Interested", 1)]


async def test_times_are_written_in_the_configured_zone(tmp_path: Path, crm: Crm) -> None:
    await add_leads(crm, ["L1"])
    store = await store_with(tmp_path / "state.db", [outcome("L1")])
    try:
        await run_writebacks(settings(tmp_path, sql_writeback(crm)), store)
    finally:
        await store.close()

    when = await crm.scalar(f"SELECT last_dialed_at FROM {crm.leads} WHERE lead_id = 'L1'")
    if crm.kind == "pg":  # timestamptz: a point in time
        assert when == datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
    else:  # DATETIME: the wall clock of the configured zone (UTC by default)
        assert when == datetime(2026, 11, 22, 9, 30)


async def test_a_record_the_crm_refuses_is_kept_with_its_reason_the_rest_written(
    tmp_path: Path, crm: Crm
) -> None:
    await add_leads(crm, keys(40))
    outcomes = [outcome(k) for k in keys(40)]
    outcomes[22] = outcome("L00023", disposition="Interested in the premium plan")  # > 12
    store = await store_with(tmp_path / "state.db", outcomes)
    try:
        written = await run_writebacks(settings(tmp_path, sql_writeback(crm)), store)
        again = await run_writebacks(settings(tmp_path, sql_writeback(crm)), store)
        history = await store.lead_history("L00023")
    finally:
        await store.close()

    assert written == {"crm-db": 39} and again == {"crm-db": 0}
    assert await crm.scalar(f"SELECT COUNT(*) FROM {crm.calls}") == 39
    (event,) = [e for e in history["events"] if e["kind"] == "writeback.refused"]
    assert "crm-db v1" in event["detail"] and "too long" in event["detail"].lower()


async def test_a_statement_the_database_cannot_run_stops_the_writeback(
    tmp_path: Path, crm: Crm
) -> None:
    bad = sql_writeback(crm, statement=f"UPDATE {crm.leads} SET nosuch = :status")
    store = await store_with(tmp_path / "state.db", [outcome(k) for k in keys(5)])
    try:
        written = await run_writebacks(settings(tmp_path, bad), store)
        last = await status(store, "crm-db")
        pending = await store.pending_writeback("crm-db")
    finally:
        await store.close()

    assert written == {"crm-db": 0} and len(pending) == 5
    assert "nosuch" in last["error"]


async def test_upserts_into_a_sqlite_call_log_and_agent_statuses(tmp_path: Path) -> None:
    crm_db = tmp_path / "crm.db"
    with sqlite3.connect(crm_db) as conn:
        conn.execute(
            "CREATE TABLE call_log (lead TEXT, sink TEXT, status TEXT, dialed TEXT,"
            " version INTEGER, PRIMARY KEY (lead, sink))"
        )
        conn.execute("CREATE TABLE agent_board (login TEXT PRIMARY KEY, status TEXT)")
    upsert = (
        "INSERT INTO call_log VALUES (:key, :sink, :status, :last_dialed_at, :version)"
        " ON CONFLICT (lead, sink) DO UPDATE SET status = excluded.status,"
        " dialed = excluded.dialed, version = excluded.version"
    )
    calls = {"name": "log", "kind": "sql", "url": f"sqlite:///{crm_db}", "statement": upsert}
    calls["timezone"] = "Asia/Kolkata"
    agents = {
        "name": "board",
        "kind": "sql",
        "what": "agents",
        "url": f"sqlite:///{crm_db}",
        "statement": "INSERT OR REPLACE INTO agent_board VALUES (:login, :status)",
    }
    store = await store_with(tmp_path / "state.db", [outcome("L1"), outcome("L2", sink="ameyo")])
    try:
        await store.record_agents([AgentStatus("jodo", "asha", "Ready")])
        written = await run_writebacks(settings(tmp_path, calls, agents), store)
    finally:
        await store.close()

    assert written == {"log": 2, "board": 1}
    with sqlite3.connect(crm_db) as conn:
        assert conn.execute("SELECT * FROM call_log ORDER BY lead").fetchall() == [
            ("L1", "jodo", "connected", "2026-11-22 15:00:00", 1),
            ("L2", "ameyo", "connected", "2026-11-22 15:00:00", 1),
        ]
        assert conn.execute("SELECT * FROM agent_board").fetchall() == [("asha", "Ready")]


def test_a_statement_naming_a_value_outcomes_lack_is_a_config_error(tmp_path: Path) -> None:
    wb = {
        "name": "crm-db",
        "kind": "sql",
        "url": "sqlite:///crm.db",
        "statement": "UPDATE leads SET owner = :login WHERE id = :key",
    }
    with pytest.raises(ConfigError) as info:
        settings(tmp_path, wb)
    (problem,) = info.value.problems
    assert problem.startswith("writebacks[0]") and "'login'" in problem
    assert "available: key, sink, version, status" in problem


async def test_refused_outcomes_are_written_again_after_syncd_retry_writeback(
    tmp_path: Path, crm: Crm
) -> None:
    await add_leads(crm, keys(10))
    outcomes = [outcome(k) for k in keys(10)]
    for i in (2, 5):  # longer than the column's 12 characters: refused
        outcomes[i] = outcome(f"L{i + 1:05d}", disposition="Interested in the premium plan")
    wb = sql_writeback(crm)
    config = cli_config(tmp_path, wb)
    (tmp_path / "state").mkdir(exist_ok=True)
    store = await store_with(tmp_path / "state" / "state.db", outcomes)
    try:
        first = await run_writebacks(settings(tmp_path, wb), store)
    finally:
        await store.close()
    assert first == {"crm-db": 8}

    env = cli_env(CRM_DB_URL=crm.url)
    shown = await asyncio.to_thread(run_cli, "status", "-c", str(config), env=env)
    assert "crm-db: 2 outcome(s) refused by the CRM" in shown.stdout, shown.stdout
    assert "syncd retry --writeback crm-db" in shown.stdout

    # The CRM's administrator widens the column; the two refused versions go out again.
    widen = {
        "pg": f"ALTER TABLE {crm.leads} ALTER COLUMN disposition TYPE varchar(40)",
        "mysql": f"ALTER TABLE {crm.leads} MODIFY disposition VARCHAR(40)",
    }[crm.kind]
    calls = {
        "pg": f"ALTER TABLE {crm.calls} ALTER COLUMN disposition TYPE varchar(40)",
        "mysql": f"ALTER TABLE {crm.calls} MODIFY disposition VARCHAR(40)",
    }[crm.kind]
    async with crm.engine.connect() as conn:
        await conn.execute(text(widen))
        await conn.execute(text(calls))
    retried = await asyncio.to_thread(
        run_cli,
        "retry",
        "--writeback",
        "crm-db",
        "--reason",
        "too long",
        "-c",
        str(config),
        env=env,
    )
    assert retried.returncode == 0, retried.stderr
    assert "2 refused outcome(s) of crm-db" in retried.stdout

    store = await store_with(tmp_path / "state" / "state.db", [])
    try:
        second = await run_writebacks(settings(tmp_path, wb), store)
        again = await run_writebacks(settings(tmp_path, wb), store)
    finally:
        await store.close()
    assert second == {"crm-db": 2} and again == {"crm-db": 0}
    assert await crm.scalar(f"SELECT COUNT(*) FROM {crm.calls}") == 10


KEY_TYPES = [
    ("integer", ["10", "11"]),
    ("bigint", ["12345678901", "12345678902"]),
    ("uuid", [str(uuid.UUID(int=1)), str(uuid.UUID(int=2))]),
    ("text", ["L1", "L2"]),
]


async def write_to_typed_table(
    tmp_path: Path, kind: str, key_type: str, crm_keys: list[str], outcome_keys: list[str]
) -> tuple[dict[str, int], list[str | None], list[tuple[str, int]]]:
    """Write outcomes through ``UPDATE … WHERE id = :key`` into a table keyed by ``key_type``;
    return what was written, the table's statuses and the refusals by reason."""
    url = database_url(ENV[kind])
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    table = f"crm_typed_{uuid.uuid4().hex[:8]}"
    async with engine.connect() as conn:
        await conn.execute(text(f"CREATE TABLE {table} (id {key_type} PRIMARY KEY, status text)"))
        for key in crm_keys:
            await conn.execute(text(f"INSERT INTO {table} (id) VALUES ('{key}')"))
    wb = {
        "name": "crm-db",
        "kind": "sql",
        "url": url,
        "statement": f"UPDATE {table} SET status = :status WHERE id = :key",
        "attempts": 1,
    }
    try:
        store = await store_with(tmp_path / "state.db", [outcome(k) for k in outcome_keys])
        try:
            written = await run_writebacks(settings(tmp_path, wb), store)
            refused = await store.refused_writebacks("crm-db")
        finally:
            await store.close()
        async with engine.connect() as conn:
            rows = (await conn.execute(text(f"SELECT status FROM {table} ORDER BY id"))).fetchall()
    finally:
        async with engine.connect() as conn:
            await conn.execute(text(f"DROP TABLE {table}"))
        await engine.dispose()
    return written, [r[0] for r in rows], refused


@pytest.mark.parametrize(("key_type", "crm_keys"), KEY_TYPES, ids=[k for k, _ in KEY_TYPES])
@pytest.mark.parametrize("kind", ["pg", "mysql"])
async def test_a_key_column_of_any_type_takes_the_write(
    tmp_path: Path, kind: str, key_type: str, crm_keys: list[str]
) -> None:
    if kind == "mysql" and key_type in ("uuid", "text"):
        key_type = "varchar(40)"  # MySQL has no UUID type, and a TEXT key needs a length
    written, statuses, refused = await write_to_typed_table(
        tmp_path, kind, key_type, crm_keys, crm_keys
    )
    assert written == {"crm-db": 2} and refused == []
    assert statuses == ["connected", "connected"]


async def test_a_key_that_cannot_be_the_columns_type_is_refused_with_a_reason(
    tmp_path: Path,
) -> None:
    written, statuses, refused = await write_to_typed_table(
        tmp_path, "pg", "integer", ["10"], ["10", "L-7"]
    )
    assert written == {"crm-db": 1} and statuses == ["connected"]
    [(reason, count)] = refused
    assert "'L-7' is not a valid int4" in reason and count == 1
