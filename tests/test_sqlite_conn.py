"""The SQLite store's connection: a transaction's writes go to SQLite's thread together.

Each statement aiosqlite runs is a hop to the connection's thread and back, and while
the event loop is busy (other batches, the pull) each hop waits for the loop's turn. A
push's batch takes two: its claim (one statement) and its completion (one transaction,
its read and its writes together).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from syncd.core.model import Action, LeadWrite, ResultKind
from syncd.errors import StoreError
from syncd.state.base import ChunkWrite, Completion
from syncd.state.sqlite import SqliteStore
from syncd.state.sqlite_conn import Statement, StoreConnection, connect
from tests.support.stores import fresh_store


@pytest.fixture
async def conn(tmp_path: Path) -> AsyncIterator[StoreConnection]:
    db = await connect(tmp_path / "t.db")
    await db.execute("CREATE TABLE t (a INTEGER PRIMARY KEY)")
    try:
        yield db
    finally:
        await db.close()


async def values(db: StoreConnection) -> list[int]:
    return [int(r[0]) for r in await db.execute_fetchall("SELECT a FROM t ORDER BY a")]


async def test_a_transaction_applied_at_once_writes_every_statement_in_order(
    conn: StoreConnection,
) -> None:
    await conn.apply(
        [
            ("INSERT INTO t VALUES (?)", [(1,), (2,)], True),
            ("INSERT INTO t VALUES (?)", (3,), False),
            ("DELETE FROM t WHERE a = ?", (2,), False),
        ]
    )
    assert await values(conn) == [1, 3]
    assert not conn.in_transaction


async def test_a_failing_statement_leaves_nothing_of_its_transaction(
    conn: StoreConnection,
) -> None:
    await conn.apply([("INSERT INTO t VALUES (?)", (1,), False)])
    with pytest.raises(sqlite3.IntegrityError):
        await conn.apply(
            [
                ("INSERT INTO t VALUES (?)", (4,), False),
                ("INSERT INTO t VALUES (?)", (1,), False),  # taken: the whole one goes
            ]
        )
    assert await values(conn) == [1]
    assert not conn.in_transaction  # and the connection takes the next one
    await conn.apply([("INSERT INTO t VALUES (?)", (5,), False)])
    assert await values(conn) == [1, 5]


async def test_a_transaction_reads_then_writes_what_it_read_in_one_go(
    conn: StoreConnection,
) -> None:
    await conn.apply([("INSERT INTO t VALUES (?)", [(1,), (2,)], True)])

    def double(db: sqlite3.Connection) -> tuple[int, list[Statement]]:
        found = [int(r[0]) for r in db.execute("SELECT a FROM t")]
        return len(found), [("INSERT INTO t VALUES (?)", [(a * 10,) for a in found], True)]

    assert await conn.transact(double) == 2
    assert await values(conn) == [1, 2, 10, 20]


def count_hops(store: SqliteStore) -> Callable[[], int]:
    """Count the calls the store's connection sends to its thread from now on."""
    db: Any = store.db
    sent = db._execute
    hops = [0]

    async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops[0] += 1
        return await sent(fn, *args, **kwargs)

    db._execute = counted
    return lambda: hops[0]


async def queued(store: SqliteStore, n: int) -> None:
    write = ChunkWrite("run1", "crm", "a.csv")
    write.leads["jodo"] = [
        LeadWrite(
            f"L{i}", f"h{i}", "raw", f'{{"key":"L{i}","phone":"+1"}}', Action.UPSERT, "new", i + 2
        )
        for i in range(n)
    ]
    await store.apply_chunk(write)


async def test_a_batch_is_claimed_and_completed_in_two_hops(tmp_path: Path) -> None:
    async with fresh_store("sqlite", tmp_path) as store:
        await queued(store, 50)
        hops = count_hops(store)
        batch = await store.claim("jodo", 50, 60)
        assert len(batch) == 50 and hops() == 1
        done = [Completion(q.key, q.hash, ResultKind.DELIVERED, claim=q.claim) for q in batch]
        assert await store.complete("jodo", done) == []
        assert hops() == 2  # the completion: its read and its writes, one transaction
        assert (await store.counts())["jodo"]["delivered"] == 50


async def test_a_completion_on_a_full_disk_writes_nothing_and_goes_through_later(
    tmp_path: Path,
) -> None:
    async with fresh_store("sqlite", tmp_path) as store:
        await queued(store, 200)
        batch = await store.claim("jodo", 200, 60)
        (pages,) = next(iter(await store.db.execute_fetchall("PRAGMA page_count")))
        # SQLite's page cap answers exactly as a full disk does (SQLITE_FULL).
        await store.db.execute(f"PRAGMA max_page_count = {pages}")
        done = [
            Completion(q.key, q.hash, ResultKind.DELIVERED, vendor_ref="r" * 400, claim=q.claim)
            for q in batch
        ]
        with pytest.raises(StoreError, match="is full"):
            await store.complete("jodo", done)
        counts = (await store.counts())["jodo"]
        assert counts["delivered"] == 0 and counts["inflight"] == 200  # no half of it
        await store.db.execute("PRAGMA max_page_count = 1073741823")  # space freed
        assert await store.complete("jodo", done) == []
        assert (await store.counts())["jodo"]["delivered"] == 200
