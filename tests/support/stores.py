"""State stores for tests: the embedded SQLite one and a PostgreSQL one in a schema of its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg

from syncd.core.clock import SYSTEM_CLOCK, Clock
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
