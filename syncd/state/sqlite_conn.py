"""The SQLite store's connection: aiosqlite's, plus whole transactions in one hop.

aiosqlite runs each statement on the connection's own thread, and hands its result back
to the event loop: a hop each way. A push's completion was six hops (BEGIN, a read, the
updates, the events, the stats, COMMIT), its claim three, and while the event loop is
busy (other batches, the pull's planning) each hop waits for the loop's turn: a call
answering in 0.5 ms on an idle loop took 6 ms beside a task working in 2 ms slices.
:meth:`StoreConnection.apply` sends a transaction's statements together and runs them
on that thread, in order with every other statement of the connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite

# A statement, its parameters, and whether they are a list of rows (executemany)
Statement = tuple[str, Sequence[Any], bool]


class StoreConnection(aiosqlite.Connection):
    """An aiosqlite connection that can also apply a transaction's writes in one hop.

    It reaches into aiosqlite's worker (``_execute``, ``_conn``), which pyproject
    bounds to the versions tested; tests/test_sqlite_conn.py fails first if it moves.
    """

    async def apply(self, statements: Sequence[Statement]) -> None:
        """Run ``statements`` in one transaction (BEGIN IMMEDIATE … COMMIT) on the
        connection's thread: all of them, or none (rolled back, the error raised)."""
        await self._execute(_apply, self._conn, list(statements))  # type: ignore[no-untyped-call]


async def connect(path: str | Path) -> StoreConnection:
    """Return an open connection to the store at ``path``, in autocommit mode: each
    transaction is begun explicitly."""
    conn = StoreConnection(lambda: sqlite3.connect(str(path), isolation_level=None), 64)
    await conn  # starts its thread, which connects
    return conn


def _apply(conn: sqlite3.Connection, statements: list[Statement]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, params, many in statements:
            if many:
                conn.executemany(sql, params)
            else:
                conn.execute(sql, params)
    except BaseException:
        if conn.in_transaction:  # SQLite rolled back already after SQLITE_FULL
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class Deferred:
    """A transaction's writes, kept to be applied together (:meth:`StoreConnection.apply`).

    It stands in for the connection where a transaction writes without reading back:
    ``execute`` and ``executemany`` are recorded, in order; reads go to ``reads``, the
    connection itself (before any write is applied: the caller holds the store's lock,
    so nothing else reaches the connection in between).
    """

    def __init__(self, reads: aiosqlite.Connection) -> None:
        self.reads = reads
        self.statements: list[Statement] = []

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.statements.append((sql, params, False))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.statements.append((sql, rows, True))

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self.statements:  # a read after a write would not see it: a bug here
            raise RuntimeError("a deferred transaction reads after writing")
        return await self.reads.execute_fetchall(sql, params)
