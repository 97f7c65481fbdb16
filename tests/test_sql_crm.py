"""A CRM in real PostgreSQL and MariaDB, synced to the Jodo simulator by `syncd run --once`.

The schema looks like one a CRM ships: integer keys, a modified time with
second precision (thousands of rows share each value), a soft-delete flag, a
joined address table in latin1, NULLs anywhere, and some rows that cannot be leads.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from syncd.sources.sql import Position
from syncd.state.sqlite import SqliteStore
from tests.conftest import ROOT, Simulated, cli_env, database_url, run_cli
from tests.test_dnc_lists import wait_for

ROWS = 50_000
PER_MINUTE = 5_000  # rows sharing one modified_at value

SCHEMA = {
    "pg": [
        "CREATE TABLE {leads} (lead_id bigint PRIMARY KEY, first_name varchar(80),"
        " last_name varchar(80), mobile varchar(64), email varchar(120),"
        " callback_at timestamp, owner_login varchar(40), deleted boolean NOT NULL DEFAULT false,"
        " notes bytea, modified_at timestamp(0) NOT NULL)",
        "CREATE INDEX {leads}_sync ON {leads} (modified_at, lead_id)",
        "CREATE TABLE {addresses} (lead_id bigint PRIMARY KEY, city varchar(60),"
        " pincode varchar(10))",
        "INSERT INTO {leads} (lead_id, first_name, last_name, mobile, email, owner_login,"
        " modified_at) SELECT g, 'First' || g, 'Last' || g, '98200' || lpad(g::text, 5, '0'),"
        " 'lead' || g || '@example.com', CASE WHEN g % 7 = 0 THEN NULL ELSE 'asha' END,"
        " timestamp '2026-11-01 10:00:00' + (g / {per_minute}) * interval '1 minute'"
        " FROM generate_series(1, {rows}) AS g",
        "INSERT INTO {addresses} SELECT g, CASE WHEN g % 2 = 0 THEN 'Zürich' ELSE 'Pune' END,"
        " '4110' || (g % 100) FROM generate_series(1, {rows}) AS g",
    ],
    "mysql": [
        "CREATE TABLE {leads} (lead_id BIGINT NOT NULL PRIMARY KEY, first_name VARCHAR(80),"
        " last_name VARCHAR(80), mobile VARCHAR(64), email VARCHAR(120), callback_at DATETIME,"
        " owner_login VARCHAR(40), deleted TINYINT(1) NOT NULL DEFAULT 0, notes VARBINARY(200),"
        " modified_at DATETIME NOT NULL, KEY leads_sync (modified_at, lead_id))"
        " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        "CREATE TABLE {addresses} (lead_id BIGINT PRIMARY KEY, city VARCHAR(60),"
        " pincode VARCHAR(10)) ENGINE=InnoDB DEFAULT CHARSET=latin1",
        "INSERT INTO {leads} (lead_id, first_name, last_name, mobile, email, owner_login,"
        " modified_at) SELECT seq, CONCAT('First', seq), CONCAT('Last', seq),"
        " CONCAT('98200', LPAD(seq, 5, '0')), CONCAT('lead', seq, '@example.com'),"
        " IF(seq % 7 = 0, NULL, 'asha'),"
        " TIMESTAMP '2026-11-01 10:00:00' + INTERVAL (seq DIV {per_minute}) MINUTE"
        " FROM seq_1_to_{rows}",
        "INSERT INTO {addresses} SELECT seq, IF(seq % 2 = 0, 'Zürich', 'Pune'),"
        " CONCAT('4110', seq % 100) FROM seq_1_to_{rows}",
    ],
}
LAST_MINUTE = f"2026-11-01 10:{ROWS // PER_MINUTE:02d}:00"
LATER = "2026-11-01 11:00:00"

QUERY = (
    "SELECT l.lead_id, l.first_name, l.last_name, l.mobile, l.email, l.callback_at,"
    " l.owner_login, l.deleted, l.notes, l.modified_at, a.city"
    " FROM {leads} l LEFT JOIN {addresses} a ON a.lead_id = l.lead_id"
)

CONFIG = """\
[state]
path = "{state}"

[log]
level = "info"
format = "json"

[[sources]]
name = "crm"
kind = "sql"
url = "env:CRM_DB_URL"
query = "{query}"
key_column = "lead_id"
cursor_column = "modified_at"
overlap_s = 30
page_size = 5000

[[sinks]]
name = "jodo"
kind = "jodo"
url = "{jodo}/CustomerWebServices/handleCustomerWS"
apikey = "env:TEST_JODO_APIKEY"
servicekey = "VoiceProcess"
media = 12
updateparam = "crmuniquefield"
batch_size = 1000
push_concurrency = 2
retry_base_s = 0.1
retry_max_s = 0.5

[[routes]]
source = "crm"
sink = "jodo"
default_region = "IN"
timezone = "Asia/Kolkata"
[routes.map]
key = "lead_id"
phone = "mobile"
first_name = "first_name"
last_name = "last_name"
email = "email"
call_at = "callback_at"
agent = "owner_login"
deleted = "deleted"
[routes.map.fields]
city = "city"
notes = "notes"
"""


@dataclass
class CrmDb:
    kind: str
    url: str
    engine: AsyncEngine
    leads: str
    addresses: str

    async def run(self, sql: str, params: dict[str, Any] | None = None) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text(sql.format(leads=self.leads)), params or {})

    def true(self) -> str:
        return "true" if self.kind == "pg" else "1"


@pytest.fixture(params=["pg", "mysql"])
async def crm_db(request: pytest.FixtureRequest) -> AsyncIterator[CrmDb]:
    kind = str(request.param)
    url = database_url("SYNCD_TEST_PG_URL" if kind == "pg" else "SYNCD_TEST_MYSQL_URL")
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    suffix = uuid.uuid4().hex[:8]
    names = {"leads": f"crm_leads_{suffix}", "addresses": f"crm_addr_{suffix}"}
    async with engine.connect() as conn:
        for ddl in SCHEMA[kind]:
            await conn.execute(text(ddl.format(rows=ROWS, per_minute=PER_MINUTE, **names)))
    try:
        yield CrmDb(kind, url, engine, **names)
    finally:
        async with engine.connect() as conn:
            for table in names.values():
                await conn.execute(text(f"DROP TABLE {table}"))
        await engine.dispose()


async def add_messy_rows(db: CrmDb) -> None:
    """Rows a real CRM holds: NULLs, a zero date, latin1 bytes, bad and multiple phones."""
    rows: list[dict[str, Any]] = [
        {"id": 60001, "mobile": None, "callback": None, "notes": None, "deleted": False},
        {"id": 60003, "mobile": "9820060003", "callback": None, "notes": "Café".encode("latin-1")},
        {"id": 60004, "mobile": "unknown", "callback": None, "notes": None},
        {"id": 60005, "mobile": "9820060005", "callback": None, "notes": None, "deleted": True},
        {"id": 60007, "mobile": "98200 60007 / 022-2345-6789", "callback": None, "notes": None},
        {"id": 60008, "mobile": "+91 98200 60008", "callback": None, "notes": b"ok"},
    ]
    for row in rows:
        await db.run(
            "INSERT INTO {leads} (lead_id, mobile, callback_at, notes, deleted, modified_at)"
            " VALUES (:id, :mobile, :callback, :notes, :deleted, :at)",
            {"deleted": False, **row, "at": _when(LAST_MINUTE)},
        )
    if db.kind == "mysql":  # only MySQL/MariaDB keep zero dates (in a lax sql_mode)
        async with db.engine.connect() as conn:
            await conn.execute(text("SET SESSION sql_mode = ''"))
            await conn.execute(
                text(
                    f"INSERT INTO {db.leads} (lead_id, mobile, callback_at, modified_at)"
                    " VALUES (60002, '9820060002', '0000-00-00 00:00:00', :at)"
                ),
                {"at": _when(LAST_MINUTE)},
            )
            await conn.execute(text("SET SESSION sql_mode = DEFAULT"))


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def write_config(tmp_path: Path, db: CrmDb, jodo_url: str) -> Path:
    path = tmp_path / "syncd.toml"
    query = QUERY.format(leads=db.leads, addresses=db.addresses)
    path.write_text(
        CONFIG.format(state=tmp_path / "state" / "state.db", query=query, jodo=jodo_url),
        encoding="utf-8",
    )
    return path


async def sync(config: Path, db: CrmDb, *extra: str) -> dict[str, Any]:
    """Run `syncd run --once` and return the route's counts from the stored summary."""
    env = cli_env(CRM_DB_URL=db.url)
    done = await asyncio.to_thread(run_cli, "run", "--once", "-c", str(config), *extra, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    store = SqliteStore(config.parent / "state" / "state.db")
    await store.open()
    try:
        last = await store.last_run()
    finally:
        await store.close()
    assert last is not None and last["summary"]["balanced"], last
    counts: dict[str, Any] = last["summary"]["routes"]["crm->jodo"]
    return counts


async def stored(config: Path, call: str, *args: Any) -> Any:
    store = SqliteStore(config.parent / "state" / "state.db")
    await store.open()
    try:
        return await getattr(store, call)(*args)
    finally:
        await store.close()


async def test_a_crm_table_syncs_every_row_once_then_changes_deletes_and_a_full_resync(
    tmp_path: Path, crm_db: CrmDb, jodo: Simulated
) -> None:
    await add_messy_rows(crm_db)
    config = write_config(tmp_path, crm_db, jodo.url)

    first = await sync(config, crm_db)

    received = jodo.sim.received()
    good = {str(i) for i in range(1, ROWS + 1)} | {"60007", "60008"}
    assert set(received) == good and set(received.values()) == {1}
    records = {r["leadnumber"]: r for r in jodo.sim.records()}
    assert records["60007"]["mobilenumber"] == "+919820060007"
    assert records["2"]["city"] == "Zürich" and records["7"].get("userlogin") is None
    rejects = {r["key"]: r["reason"] for r in await stored(config, "recent_rejects", 20)}
    assert "missing phone" in rejects["60001"]
    assert "column 'notes' is not valid utf-8" in rejects["60003"]
    assert "invalid phone 'unknown'" in rejects["60004"]
    if crm_db.kind == "mysql":
        assert "zero date" in rejects["60002"]
    messy = 7 if crm_db.kind == "mysql" else 6
    assert first["read"] == ROWS + messy and first["new"] == ROWS + 2
    assert first["skipped"] == 1  # 60005: deleted before the dialer ever had it

    # The CRM edits three leads, soft-deletes one and adds one, all at one new time.
    await crm_db.run(
        "UPDATE {leads} SET first_name = 'Changed', modified_at = :at"
        " WHERE lead_id IN (7, 25000, 49999)",
        {"at": _when(LATER)},
    )
    await crm_db.run(
        f"UPDATE {{leads}} SET deleted = {crm_db.true()}, modified_at = :at WHERE lead_id = 12",
        {"at": _when(LATER)},
    )
    await crm_db.run(
        "INSERT INTO {leads} (lead_id, mobile, first_name, modified_at)"
        " VALUES (70001, '9820070001', 'New', :at)",
        {"at": _when(LATER)},
    )

    second = await sync(config, crm_db)

    received = jodo.sim.received()
    assert {k for k, n in received.items() if n == 2} == {"7", "25000", "49999"}
    assert received["70001"] == 1 and received["12"] == 1
    assert (second["new"], second["changed"], second["deleted"]) == (1, 3, 1)
    # The five changed rows, and the first pull's last minute again (the 30 s overlap).
    assert second["read"] == 5 + 1 + messy
    (lead12,) = (await stored(config, "lead_history", "12"))["leads"]
    assert json.loads(lead12["lead_json"]) == {"deleted": True, "key": "12"}

    full = await sync(config, crm_db, "--full")

    assert full["read"] == ROWS + messy + 1
    assert (full["new"], full["changed"], full["deleted"]) == (0, 0, 0)
    assert sum(jodo.sim.received().values()) == ROWS + 2 + 1 + 3  # nothing pushed again


async def test_a_pull_killed_between_chunks_resumes_after_the_last_committed_one(
    tmp_path: Path, crm_db: CrmDb, jodo: Simulated
) -> None:
    config = write_config(tmp_path, crm_db, jodo.url)
    text_config = config.read_text(encoding="utf-8").replace("page_size = 5000", "page_size = 500")
    config.write_text(text_config.replace("overlap_s = 30", "overlap_s = 0"), encoding="utf-8")
    env = cli_env(CRM_DB_URL=crm_db.url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "syncd", "run", "--once", "-c", str(config)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
        cwd=ROOT,
    )
    state = tmp_path / "state" / "state.db"
    try:
        # --once pushes while it pulls: killed here, mid-pull, the dialer may hold some.
        await asyncio.to_thread(wait_for, lambda: _committed_leads(state) >= 6000)
    finally:
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)
    committed = Position.from_json(await stored(config, "get_cursor", "crm"))
    assert committed is not None and committed.phase == "main", "killed after the pull"
    before_kill = set(jodo.sim.received())

    resumed = await sync(config, crm_db)

    received = jodo.sim.received()
    assert set(received) == {str(i) for i in range(1, ROWS + 1)}
    assert len(jodo.sim.records()) == ROWS  # the dialer holds each lead once
    # Sent again only what the kill left unanswered: at most the requests in flight
    # (push_concurrency 2 × batch_size 1000), and only leads sent before it.
    again = {key for key, times in received.items() if times > 1}
    assert again <= before_kill and len(again) <= 2 * 1000
    assert set(received.values()) <= {1, 2}
    # Read again: from the committed chunk's change time on (rows sharing that time may
    # still be committed late), not from the start.
    async with crm_db.engine.connect() as conn:
        left = await conn.scalar(
            text(f"SELECT COUNT(*) FROM {crm_db.leads} WHERE modified_at >= :at"),
            {"at": committed.cursor},
        )
    assert resumed["read"] == left < ROWS


def _committed_leads(state: Path) -> int:
    try:
        with sqlite3.connect(state, timeout=1) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM leads").fetchone()[0])
    except sqlite3.Error:
        return 0
