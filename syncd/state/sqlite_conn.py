"""The SQLite store's connection: aiosqlite's, plus whole transactions in one hop.

aiosqlite runs each statement on the connection's own thread, and hands its result back
to the event loop: a hop each way. A push's completion was six hops (BEGIN, a read, the
updates, the events, the stats, COMMIT), its claim three, and while the event loop is
busy (other batches, the pull's planning) each hop waits for the loop's turn: a call
answering in 0.5 ms on an idle loop took 6 ms beside a task working in 2 ms slices.
:meth:`StoreConnection.transact` runs a whole transaction, its reads and its writes, on
that thread in one hop, in order with every other statement of the connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

# A statement, its parameters, and whether they are a list of rows (executemany)
Statement = tuple[str, Sequence[Any], bool]
T = TypeVar("T")


class StoreConnection(aiosqlite.Connection):
    """An aiosqlite connection that can also run a whole transaction in one hop.

    It reaches into aiosqlite's worker (``_execute``, ``_conn``), which pyproject
    bounds to the versions tested; tests/test_sqlite_conn.py fails first if it moves.
    """

    async def transact(self, build: Callable[[sqlite3.Connection], tuple[T, list[Statement]]]) -> T:
        """Run one transaction (BEGIN IMMEDIATE … COMMIT) on the connection's thread:
        ``build`` reads what it needs and returns a result and the statements to write,
        which run next, in order. All of it, or none (rolled back, the error raised)."""
        return await self._execute(_transact, self._conn, build)  # type: ignore[no-untyped-call,no-any-return]

    async def apply(self, statements: Sequence[Statement]) -> None:
        """Run ``statements`` in one transaction, in one hop (see :meth:`transact`)."""
        await self.transact(lambda _conn: (None, list(statements)))


async def connect(path: str | Path) -> StoreConnection:
    """Return an open connection to the store at ``path``, in autocommit mode: each
    transaction is begun explicitly."""
    conn = StoreConnection(lambda: sqlite3.connect(str(path), isolation_level=None), 64)
    await conn  # starts its thread, which connects
    return conn


def _transact(
    conn: sqlite3.Connection, build: Callable[[sqlite3.Connection], tuple[T, list[Statement]]]
) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result, statements = build(conn)
        for sql, params, many in statements:
            if many:
                conn.executemany(sql, params)
            else:
                conn.execute(sql, params)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite rolled back already after SQLITE_FULL
            conn.execute("ROLLBACK")
        raise
    return result
