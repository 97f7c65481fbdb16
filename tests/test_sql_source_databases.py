"""The SQL source's paging on the real PostgreSQL and MariaDB: long ties, time types, quirks."""

from __future__ import annotations

import asyncio
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from structlog.testing import capture_logs

from syncd.sources.sql import Position, SqlSource, SqlSourceConfig
from tests.conftest import database_url
from tests.test_sql_source import pull


@dataclass
class Db:
    kind: str
    url: str
    engine: AsyncEngine
    table: str

    async def run(self, sql: str, params: Any = None) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text(sql.format(t=self.table)), params or {})

    def source(self, **overrides: Any) -> SqlSource:
        settings: dict[str, Any] = {
            "name": "crm",
            "url": self.url,
            "query": f"SELECT * FROM {self.table}",
            "key_column": "ref",
            "cursor_column": "changed",
            "page_size": 997,
            **overrides,
        }
        return SqlSource(SqlSourceConfig(**settings), required_columns={"ref", "phone"})


@pytest.fixture(params=["pg", "mysql"])
async def db(request: pytest.FixtureRequest) -> AsyncIterator[Db]:
    kind = str(request.param)
    url = database_url("SYNCD_TEST_PG_URL" if kind == "pg" else "SYNCD_TEST_MYSQL_URL")
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    found = Db(kind, url, engine, f"crm_src_{uuid.uuid4().hex[:8]}")
    try:
        yield found
    finally:
        await found.run("DROP TABLE IF EXISTS {t}")
        await engine.dispose()


async def test_twenty_thousand_rows_with_one_change_time_arrive_once_in_key_order(
    db: Db,
) -> None:
    changed = "timestamptz" if db.kind == "pg" else "DATETIME(6)"
    # PostgreSQL keeps an instant (read back in UTC), MariaDB a wall-clock time.
    at = datetime(2026, 11, 22, 10, 0, 0, 123456)
    if db.kind == "pg":
        at = at.replace(tzinfo=ZoneInfo("Asia/Kolkata"))
    await db.run(
        f"CREATE TABLE {{t}} (ref VARCHAR(12) PRIMARY KEY, phone VARCHAR(20), changed {changed})"
    )
    await db.run("CREATE INDEX {t}_sync ON {t} (changed, ref)")
    await db.run(
        "INSERT INTO {t} VALUES (:ref, :phone, :at)",
        [{"ref": f"K{i:06d}", "phone": "9820012345", "at": at} for i in range(20_000)],
    )

    got = await pull(db.source(), None)

    assert got.failed is None
    assert [r["ref"] for r in got.rows] == [f"K{i:06d}" for i in range(20_000)]
    assert len(got.cursors) == 21  # 20 full pages of 997 and the rest
    last = Position.from_json(got.cursor)
    assert last is not None and last.key == "K019999"
    if db.kind == "pg":
        assert got.rows[0]["changed"] == "2026-11-22T04:30:00.123456+00:00"  # in UTC
    else:
        assert got.rows[0]["changed"] == "2026-11-22T10:00:00.123456"

    again = await pull(db.source(overlap_s=0), got.cursor)
    assert [r["ref"] for r in again.rows] == [r["ref"] for r in got.rows]  # same instant: re-read


async def test_a_crashed_pull_resumes_inside_a_run_of_equal_times(db: Db) -> None:
    await db.run("CREATE TABLE {t} (ref INT PRIMARY KEY, phone VARCHAR(20), changed DATE)")
    await db.run(
        "INSERT INTO {t} VALUES (:ref, :phone, :day)",
        [{"ref": i, "phone": "9820012345", "day": _day(i // 1500)} for i in range(1, 5001)],
    )
    source = db.source(overlap_s=0, page_size=400)
    complete = await pull(source, None)
    committed = complete.cursors[5]  # died after six pages: inside the second day

    resumed = await pull(db.source(overlap_s=0, page_size=400), committed)

    seen = {int(r["ref"]) for r in complete.rows[: 6 * 400]}
    assert seen | {int(r["ref"]) for r in resumed.rows} == set(range(1, 5001))
    assert min(int(r["ref"]) for r in resumed.rows) == 1500  # from the start of that day


async def test_messy_values_become_text_rows(db: Db) -> None:
    if db.kind == "pg":
        ddl = (
            "CREATE TABLE {t} (ref BIGINT PRIMARY KEY, phone NUMERIC(14), flag BOOLEAN,"
            " phones TEXT[], extra JSONB, changed TIMESTAMP)"
        )
        row = {"phones": ["022 2345 6789", "98200 12345"], "flag": True, "extra": '{"a": 1}'}
        insert = (
            "INSERT INTO {t} VALUES (1, 919820012345, :flag, :phones, CAST(:extra AS jsonb), now())"
        )
    else:
        ddl = (
            "CREATE TABLE {t} (ref BIGINT PRIMARY KEY, phone DOUBLE, flag BIT(1),"
            " phones VARCHAR(80), extra JSON, changed DATETIME)"
        )
        row = {"phones": "022 2345 6789; 98200 12345", "flag": 1, "extra": '{"a": 1}'}
        insert = "INSERT INTO {t} VALUES (1, 919820012345, :flag, :phones, :extra, NOW())"
    await db.run(ddl)
    await db.run(insert, row)

    (got,) = (await pull(db.source(), None)).rows

    assert got["ref"] == "1" and got["phone"] == "919820012345"
    assert got["flag"] in ("true", "1")
    assert "022 2345 6789" in got["phones"] and "98200 12345" in got["phones"]
    assert got["extra"].replace(" ", "") == '{"a":1}'


async def test_a_query_returning_a_column_twice_fails_the_pull_naming_it(db: Db) -> None:
    await db.run("CREATE TABLE {t} (ref INT PRIMARY KEY, phone VARCHAR(20), changed DATE)")
    query = (
        f"SELECT a.ref, a.phone, a.changed, b.phone FROM {db.table} a"
        f" JOIN {db.table} b ON b.ref = a.ref"
    )

    got = await pull(db.source(query=query), None)

    assert got.failed is not None and "phone" in got.failed
    if db.kind == "pg":
        assert "twice" in got.failed and "alias" in got.failed
    else:  # MariaDB refuses the derived table itself
        assert got.failed.startswith("cannot read the database: Duplicate column name")


def _day(n: int) -> date:
    return date(2026, 11, 1) + timedelta(days=n)


async def test_zero_dates_in_a_mariadb_crm_are_read_by_every_pull_exactly_once() -> None:
    url = database_url("SYNCD_TEST_MYSQL_URL")
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    db = Db("mysql", url, engine, f"crm_src_{uuid.uuid4().hex[:8]}")
    try:
        # Old CRMs run without NO_ZERO_DATE and stamp rows 0000-00-00 00:00:00.
        async with engine.connect() as conn:
            await conn.execute(text("SET SESSION sql_mode = ''"))
            await conn.execute(
                text(
                    f"CREATE TABLE {db.table} (ref VARCHAR(12) PRIMARY KEY, phone VARCHAR(20),"
                    " changed DATETIME NULL)"
                )
            )
            await conn.execute(
                text(
                    f"INSERT INTO {db.table} VALUES ('D1', '9820012345', '2026-11-20 10:00:00'),"
                    " ('Z1', '9820012346', '0000-00-00 00:00:00'), ('N1', '9820012347', NULL)"
                )
            )
        first = await pull(db.source(), None)
        async with engine.connect() as conn:
            await conn.execute(text("SET SESSION sql_mode = ''"))
            await conn.execute(
                text(f"INSERT INTO {db.table} VALUES ('Z2', '9820012348', '0000-00-00 00:00:00')")
            )
        incremental = await pull(db.source(), first.cursor)
        full = await pull(db.source(), first.cursor, full=True)
    finally:
        await db.run("DROP TABLE IF EXISTS {t}")
        await engine.dispose()

    assert first.failed is None and sorted(r["ref"] for r in first.rows) == ["D1", "N1", "Z1"]
    assert sorted(r["ref"] for r in incremental.rows) == ["D1", "N1", "Z1", "Z2"]
    assert sorted(r["ref"] for r in full.rows) == ["D1", "N1", "Z1", "Z2"]  # none twice


async def test_a_pull_of_many_chunks_reads_the_table_with_one_statement(db: Db) -> None:
    # Before: one ORDER BY … LIMIT query per chunk; over a MariaDB join each of them sorted
    # what was left, and 200 of them took ~200 s of a 251 s --full of 1M rows (issue 27).
    await db.run("CREATE TABLE {t} (ref INT PRIMARY KEY, phone VARCHAR(20), changed DATE)")
    await db.run("CREATE INDEX {t}_sync ON {t} (changed, ref)")
    await db.run(
        "INSERT INTO {t} VALUES (:ref, :phone, :day)",
        [{"ref": i, "phone": "9820012345", "day": _day(i // 700)} for i in range(1, 5001)],
    )
    source = db.source(page_size=400)
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "syncd_src" in statement:  # the source's own, not the driver's set-up queries
            statements.append(statement)

    event.listen(source.engine().sync_engine, "before_cursor_execute", count)
    got = await pull(source, None)

    assert got.failed is None
    assert [int(r["ref"]) for r in got.rows] == list(range(1, 5001))  # each once, in order
    assert len(got.cursors) == 13  # 12 chunks of 400 and the rest, each its checkpoint
    dated = [s for s in statements if "ORDER BY syncd_src" in s and ", syncd_src" in s]
    assert len(dated) == 1, dated
    # The whole pull: the undated rows, the dated ones, the keyless ones; one statement each.
    assert len(statements) == 3, statements


async def test_a_stream_the_server_drops_mid_pull_goes_on_after_the_last_row_handed_out(
    db: Db,
) -> None:
    await _wide_rows(db, 40_000)
    source = db.source(page_size=1000)
    refs: list[int] = []
    cut = False
    chunks = 0
    try:
        with capture_logs() as logs:
            async for chunk in source.chunks(None):
                assert chunk.failed is None, chunk.failed
                refs += [int(values[0]) for _, values in chunk.rows]
                chunks += 1
                if chunks == 3 and not cut:
                    await _cut_the_stream(db)
                    cut = True
    finally:
        await source.close()

    assert [e["event"] for e in logs].count("source.stream.reopened") == 1
    assert refs == list(range(1, 40001))  # nothing skipped, nothing twice


async def _wide_rows(db: Db, n: int) -> None:
    """Fill ``db``'s table with rows too wide for the stream to sit whole in socket buffers."""
    await db.run(
        "CREATE TABLE {t} (ref INT PRIMARY KEY, phone VARCHAR(20), changed DATE,"
        " filler VARCHAR(400))"
    )
    await db.run(
        "INSERT INTO {t} VALUES (:ref, :phone, :day, :filler)",
        [
            {"ref": i, "phone": "9820012345", "day": _day(i // 9000), "filler": "x" * 400}
            for i in range(1, n + 1)
        ],
    )


async def _cut_the_stream(db: Db) -> None:
    """Kill, from another session, the server connection streaming ``db``'s table."""
    (stream,) = await _streams(db)
    kill = "SELECT pg_terminate_backend({id})" if db.kind == "pg" else "KILL CONNECTION {id}"
    async with db.engine.connect() as conn:
        await conn.execute(text(kill.format(id=stream)))


async def test_a_pull_given_up_mid_stream_leaves_no_statement_running_on_the_crm(db: Db) -> None:
    # The pipeline stops reading (a failed commit, a stop) and closes the source: the
    # stream's connection goes with it, rather than reading every row left first.
    await _wide_rows(db, 40_000)
    source = db.source(page_size=1000)
    chunks = source.chunks(None)
    first = await anext(chunks)
    assert len(first.rows) == 1000 and len(await _streams(db)) == 1

    await source.close()

    for _ in range(300):  # the server ends the session once it sees the socket closed
        if not await _streams(db):
            break
        await asyncio.sleep(0.1)
    assert await _streams(db) == []


async def _streams(db: Db) -> list[int]:
    """Return the server connections running a statement over ``db``'s table."""
    if db.kind == "pg":
        find = (
            "SELECT pid FROM pg_stat_activity WHERE query LIKE :q AND pid <> pg_backend_pid()"
            " AND state <> 'idle'"
        )
    else:
        find = (
            "SELECT id FROM information_schema.processlist WHERE info LIKE :q"
            " AND id <> CONNECTION_ID()"
        )
    async with db.engine.connect() as conn:
        found = (await conn.execute(text(find), {"q": f"%FROM {db.table}%"})).scalars().all()
    return [int(i) for i in found]


async def test_a_pipeline_slower_than_the_database_holds_one_chunk_not_the_result(
    db: Db,
) -> None:
    # asyncmy reads whatever the server sends into one growing buffer: while the pipeline
    # committed a chunk, the rest of the result piled up (715 MB at a million rows).
    await _wide_rows(db, 60_000)  # ~30 MB of rows on the wire
    source = db.source(page_size=1000)
    tracemalloc.start()
    try:
        async for chunk in source.chunks(None):
            assert chunk.failed is None, chunk.failed
            await asyncio.sleep(0.02)  # a commit to the state store, much slower than the CRM
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await source.close()

    assert peak < 12 * 2**20, f"{peak / 2**20:.0f} MB held while reading"
