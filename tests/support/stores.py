"""State stores for tests: the embedded SQLite one and a PostgreSQL one in a schema of its own."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg

from syncd.core.clock import SYSTEM_CLOCK, Clock
from syncd.state import migrations
from syncd.state.postgres import PostgresStore, dsn_of
from syncd.state.sqlite import SqliteStore
from tests.conftest import database_url

PG_ENV = "SYNCD_TEST_PG_URL"
KINDS = ("sqlite", "postgresql")


def pg_url() -> str:
    """Return the test PostgreSQL URL (a failure under CI when it is not set, else a skip)."""
    return database_url(PG_ENV)


def new_schema() -> str:
    return f"syncd_t_{uuid.uuid4().hex[:10]}"


async def drop_schema(schema: str) -> None:
    conn = await asyncpg.connect(dsn_of(pg_url()))
    try:
        # Under the lock a store migrates under: a migration reading the catalog
        # (pg_indexes, migration 7) while another schema's objects are dropped fails with
        # "could not open relation with OID …" (tests in parallel drop schemas often).
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('syncd.migrate'))")
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@asynccontextmanager
async def fresh_store(
    kind: str, tmp_path: Path, clock: Clock = SYSTEM_CLOCK, **pg: Any
) -> AsyncIterator[SqliteStore]:
    """Yield an opened, empty store of ``kind``; a PostgreSQL one is dropped afterwards."""
    if kind == "sqlite":
        store = SqliteStore(tmp_path / "state.db", clock)
        await store.open()
        try:
            yield store
        finally:
            await store.close()
        return
    schema = pg.pop("schema", None) or new_schema()
    store = PostgresStore(pg_url(), clock, schema=schema, **pg)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
        await drop_schema(schema)


@asynccontextmanager
async def store_at_schema(
    kind: str,
    tmp_path: Path,
    version: int,
    kv: Sequence[tuple[str, str, str]],
    statements: Sequence[str] = (),
    **pg: Any,
) -> AsyncIterator[SqliteStore]:
    """Yield a store made at schema ``version`` holding ``kv`` rows (and what
    ``statements``, SQL both databases take, wrote), opened (so migrated to the newest
    schema) by this syncd; a PostgreSQL one (``pg``: its options) is dropped afterwards."""
    if kind == "sqlite":
        db = tmp_path / "state.db"
        with sqlite3.connect(db) as conn:
            for step in migrations.load("sqlite")[:version]:
                conn.executescript(step.sql)
            conn.execute(f"PRAGMA user_version={version:d}")
            conn.executemany("INSERT INTO kv (scope, name, value) VALUES (?, ?, ?)", kv)
            for statement in statements:
                conn.execute(statement)
        store = SqliteStore(db)
        await store.open()
        try:
            yield store
        finally:
            await store.close()
        return
    schema = new_schema()
    conn = await asyncpg.connect(dsn_of(pg_url()), server_settings={"search_path": schema})
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        async with conn.transaction():
            await conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            for step in migrations.load("postgres")[:version]:
                await conn.execute(step.sql)
                await conn.execute("INSERT INTO schema_version VALUES ($1)", step.number)
            await conn.executemany("INSERT INTO kv (scope, name, value) VALUES ($1, $2, $3)", kv)
            for statement in statements:
                await conn.execute(statement)
    finally:
        await conn.close()
    store = PostgresStore(pg_url(), schema=schema, **pg)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
        await drop_schema(schema)


@asynccontextmanager
async def traced(store: SqliteStore) -> AsyncIterator[list[str]]:
    """Collect the statements a SQLite store sends meanwhile, their values written in."""
    sent: list[str] = []
    await store.db.set_trace_callback(sent.append)
    try:
        yield sent
    finally:
        await store.db.set_trace_callback(None)


async def plan_of(store: SqliteStore, sent: Sequence[str], starts: str) -> list[str]:
    """Return SQLite's plan, step by step, of the one statement of ``sent`` starting so."""
    (statement,) = [s for s in sent if s.lstrip().startswith(starts)]
    rows = await store.db.execute_fetchall("EXPLAIN QUERY PLAN " + statement)
    return [str(row[3]) for row in rows]
