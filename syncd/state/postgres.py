"""The PostgreSQL state store: several syncd replicas share one store.

It keeps the SQLite store's contract and its SQL: the statements of
:class:`~syncd.state.sqlite.SqliteStore` are written in the subset both databases
share, and :class:`PgConnection` runs them on asyncpg (``?`` placeholders become
``$n``; a null-safe ``IS NOT`` becomes ``IS DISTINCT FROM``). What differs is here:

- **claims** take a batch with ``FOR UPDATE SKIP LOCKED`` and a lease naming the
  replica (``lease_holder``); a replica gives back only its own leases and those
  whose lease ran out (a replica that died), never a live replica's;
- **leadership**: :meth:`PostgresStore.lead` takes or renews a lease row per job
  (a source's pull, a sink's poll, a writeback) on the database's clock, so exactly
  one replica runs each; another takes over once a dead leader's lease expires;
- **replicas** announce themselves with a heartbeat row, shown by ``syncd status``;
- **a pool of connections**: each task borrows its own for a statement or a
  transaction (:class:`_Lease`), never one another task is using; a connection the
  database dropped (a restart, a failover) is replaced on the next borrow;
- **the database's clock** for every stored time: the store's clock is a
  :class:`~syncd.core.clock.DatabaseClock` set from the database's at open and at
  each heartbeat, and the engine of a shared store reads the same one;
- migrations of its own, run under an advisory lock (replicas may start together).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
import re
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import structlog

from syncd import __version__
from syncd.core.clock import SYSTEM_CLOCK, Clock, DatabaseClock
from syncd.core.model import QueuedLead, StoredLead
from syncd.errors import LeadLost, StoreError
from syncd.state import migrations
from syncd.state.base import ChunkWrite, Completion, ListedLead, SchemaState
from syncd.state.migrations import Migration
from syncd.state.sqlite import (
    AS_STORED,
    RELEASED_DOUBT,
    STORED_LEAD,
    SqliteStore,
    as_stored,
    in_parts,
    listed_lead,
    new_claim_token,
    result_statements,
    split_stale,
)

log = structlog.get_logger("syncd.state")

# The schema's steps: syncd/state/migrations/postgres/NNNN_name.sql, never edited once
# released; each replica migrates under an advisory lock and records each step's sha256.
MIGRATIONS: tuple[Migration, ...] = migrations.load("postgres")
MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS migrations (number INTEGER PRIMARY KEY, name TEXT NOT NULL,"
    " sha256 TEXT, applied_at DOUBLE PRECISION)"
)

# The database's clock: one clock for every replica's leases.
CHANNEL = "syncd_outbox"  # NOTIFY payload: the sink whose outbox got leads
NOW = "CAST(extract(epoch from clock_timestamp()) AS DOUBLE PRECISION)"
_RETURNS_ROWS = re.compile(r"^\s*(SELECT|WITH)\b|\bRETURNING\b", re.IGNORECASE)
# The database went away (a restart, a failover, the network): try again later. A
# shutdown's "terminating connection due to administrator command" is an operator
# intervention, not a connection error, in asyncpg's taxonomy.
_GONE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
)
# A session the server ended between two statements (a shutdown's FATAL arrives while
# the connection waits for its next statement): asyncpg takes the message as out of turn
# and fails that next statement as "another operation is in progress". A connection is
# lent to one task at a time (_Lease), so here it means the session is over.
_LOST = (*_GONE, asyncpg.InternalClientError)
# A transaction this long without a statement belongs to a replica frozen in it (a VM
# paused, SIGSTOP): the database ends it, and the row locks it held (leads mid-chunk, its
# lead of the pull) no longer stop every other replica. syncd's own transactions send
# their statements back to back; a live replica whose transaction is ended this way (an
# event loop starved for as long) gets a StoreError and tries again.
IDLE_IN_TRANSACTION_S = 10.0
# How long a replica taking over a lease run out waits for the old leader's transaction
# (a chunk, which holds its lease row FOR SHARE until it commits) before it takes the
# old leader for stalled inside it and ends it (PostgresStore._end_stalled).
TAKEOVER_WAIT_S = 5.0
# Connections per replica: the push workers of every sink, the pull, polls, writebacks
# and the status page each borrow one at a time; more waiters than this queue.
POOL_SIZE = 10
# Keys (or key and raw hash pairs) one look-up statement carries, as arrays: more than a
# chunk of the default 5,000 rows (sources.csv_drop), so a chunk's look-up is one statement
KEYS_PER_QUERY = 20_000
# Leads a pull writes before the store analyzes them (then: once the table grew fourfold)
ANALYZE_AFTER_ROWS = 1000
# Every sink that holds leads, as an array: a loose scan of the primary key (sink, key),
# one probe per sink, where a statement names no sink but must read by it (PostgreSQL
# has no skip scan of its own). syncd/state/queries/postgres/history.sql spells it too.
SINKS = """ARRAY(
    WITH RECURSIVE sinks(sink) AS (
        SELECT min(sink) FROM leads
        UNION ALL
        SELECT (SELECT min(l.sink) FROM leads l WHERE l.sink > sinks.sink)
        FROM sinks WHERE sinks.sink IS NOT NULL)
    SELECT sink FROM sinks WHERE sink IS NOT NULL)"""
# The heartbeat's renewal of the leases of its live claims (params: their sinks, the
# replica, their tokens, the lease in seconds). Their sinks: the leads in flight are read
# by sink and state (leads_queued), with no index of their own (migration 19).
RENEWAL = f"""
    WITH mine AS (
        SELECT sink, key FROM leads
        WHERE sink = ANY(CAST(? AS TEXT[])) AND state = 'inflight'
            AND lease_holder = ? AND claim_token = ANY(CAST(? AS TEXT[]))
        FOR UPDATE SKIP LOCKED)
    UPDATE leads SET lease_until = {NOW} + CAST(? AS DOUBLE PRECISION)
    FROM mine WHERE leads.sink = mine.sink AND leads.key = mine.key
    """
# The leads' columns the store's statements select, join or group by: what the pull's
# ANALYZE reads. Not the lead's JSON (wide: half of what an ANALYZE of every column
# cost, 154 ms against 82 ms on 50,000 leads), its hashes compared in SET clauses
# alone, and what the store only reads back; autovacuum's ANALYZE still takes them all.
PLANNED_COLUMNS = (
    "sink", "key", "state", "next_at", "phone", "consent_until", "claim_token",
    "lease_holder", "lease_until", "run_id", "action", "delivered_hash", "waits_for",
    "updated_at", "last_error", "attempts", "origin", "raw_hash",
)  # fmt: skip
_PLACEHOLDER = re.compile(r"\?")
_NULL_SAFE_NOT = re.compile(r"\bIS NOT (?!NULL\b|DISTINCT\b)")
_JSON_FIELD = re.compile(r"json_extract\(([\w.]+), '\$\.(\w+)'\)")
# A lead's fields that are columns of their own here (migration 18), kept by a trigger
_LEAD_COLUMN = re.compile(r"json_extract\((\w+\.)?lead_json, '\$\.(phone|consent_until)'\)")
# json_set(column, '$.field', ?): one text field set in a JSON text column
_JSON_SET = re.compile(r"json_set\(([\w.]+), '\$\.(\w+)', \?\)")
_JSONB_SET = r"CAST(jsonb_set(CAST(\1 AS jsonb), '{\2}', to_jsonb(CAST(? AS TEXT))) AS TEXT)"


def release_statement(sink: str | None, holder: str) -> tuple[str, tuple[Any, ...]]:
    """Return the statement giving back to the outbox the leads in flight of ``sink`` (of
    every sink: None) that ``holder`` claimed or whose lease ran out, and its parameters.

    They are read by sink and state (leads_queued); for every sink, those of the loose
    scan. One statement per case: a sink given as a parameter that may be NULL leaves a
    generic plan no sink to read by."""
    among, params = ("sink = ?", (sink,)) if sink is not None else (f"sink = ANY({SINKS})", ())
    return (
        "UPDATE leads SET state = 'pending', lease_until = NULL, lease_holder = NULL,"
        f" {RELEASED_DOUBT} WHERE {among} AND state = 'inflight'"
        f" AND (lease_holder = ? OR lease_holder IS NULL OR lease_until < {NOW})",
        (*params, holder),
    )


@functools.lru_cache(maxsize=512)
def to_postgres(sql: str) -> str:
    """Return a statement of the shared SQL subset in PostgreSQL's spelling."""
    sql = _NULL_SAFE_NOT.sub("IS DISTINCT FROM ", sql)
    sql = _LEAD_COLUMN.sub(r"\1\2", sql)
    sql = _JSON_FIELD.sub(r"(\1::jsonb ->> '\2')", sql)
    sql = _JSON_SET.sub(_JSONB_SET, sql)
    sql = sql.replace("instr(", "strpos(")
    counter = iter(range(1, 100_000))
    return _PLACEHOLDER.sub(lambda _m: f"${next(counter)}", sql)


def _rowcount(status: str | None) -> int:
    """Return the row count of a command tag ("UPDATE 3", "INSERT 0 1")."""
    tail = (status or "").rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class PgCursor:
    """The part of a DB-API cursor the store's statements use."""

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int) -> None:
        self.rows = rows
        self.rowcount = rowcount

    async def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    async def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows

    def __aiter__(self) -> AsyncIterator[tuple[Any, ...]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[tuple[Any, ...]]:
        for row in self.rows:
            yield row


class _Statement:
    """``await conn.execute(...)`` and ``async with conn.execute(...) as cur`` alike."""

    def __init__(self, conn: PgConnection, sql: str, params: Sequence[Any]) -> None:
        self.conn, self.sql, self.params = conn, sql, params

    def __await__(self) -> Generator[Any, None, PgCursor]:
        return self.conn.run(self.sql, self.params).__await__()

    async def __aenter__(self) -> PgCursor:
        return await self.conn.run(self.sql, self.params)

    async def __aexit__(self, *exc: object) -> None:
        return None


class PgConnection:
    """A pooled asyncpg connection with the aiosqlite calls the store's SQL is written against.

    One task uses it at a time (it is lent by :class:`_Lease`); a lost connection
    fails the statement with a :class:`StoreError` and the pool replaces it.
    """

    def __init__(self, raw: asyncpg.Connection, where: str) -> None:
        self.raw = raw
        self.where = where  # the store's URL without its password, for errors

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Statement:
        return _Statement(self, sql, params)

    async def run(self, sql: str, params: Sequence[Any]) -> PgCursor:
        text = to_postgres(sql)
        try:
            if _RETURNS_ROWS.search(text):
                rows = await self.raw.fetch(text, *params)
                return PgCursor([tuple(r) for r in rows], len(rows))
            return PgCursor([], _rowcount(await self.raw.execute(text, *params)))
        except _LOST as exc:
            raise _unreachable(self.where, exc, self.raw) from None

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return (await self.run(sql, params)).rows

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run ``sql`` once per row; as one set-based statement where that is the same.

        asyncpg pipelines an executemany, but the server still runs each row as a
        statement of its own: a batch's 500 completions were 500 UPDATEs and 500
        INSERTs, most of a push's time in the store. See :func:`set_based`.
        """
        rows = list(rows)
        if not rows:
            return
        text = to_postgres(sql)
        try:
            if len(rows) > 1:
                one = await self._set_based(text)
                if one is not None and one.applies_to(rows):
                    sql, params = one.bound(rows)
                    await self.raw.execute(sql, *params)
                    return
            await self.raw.executemany(text, rows)
        except _LOST as exc:
            raise _unreachable(self.where, exc, self.raw) from None

    async def _set_based(self, text: str) -> SetBased | None:
        if text not in _SET_BASED:
            bare = _COMMENT.sub("", text)  # a comment's words are not the statement's
            shape = _shape_of(bare)
            if shape is None:
                _SET_BASED[text] = None
            else:
                # the parameters' types, as the server infers them, type the arrays
                types = list((await self.raw.prepare(text)).get_parameters())
                _SET_BASED[text] = set_based(bare, shape, types)
        return _SET_BASED[text]


class SetBased:
    """An UPDATE by key or a plain INSERT rewritten to take every row at once, each
    parameter as an array (``unnest``): one statement instead of one per row.

    A parameter whose value is the same in every row (the sink, the run, the state, the
    time of a pull's chunk or a batch's completion) goes once, as a scalar: asyncpg
    spends 350-650 ns of the client's CPU on each array element (an ABC instance check
    per element), and a 5,000-row chunk's insert sent 80,000 of them, most repeats.
    """

    def __init__(
        self,
        render: Callable[[frozenset[int]], str],
        key: tuple[int, int] | None,
        per_row: frozenset[int] = frozenset(),
    ) -> None:
        self.render = render  # the statement, given the parameters sent as scalars
        self.key = key  # the (sink, key) parameters of an UPDATE, 0-based
        self.per_row = per_row  # parameters sent as arrays even when every row has one value
        self.sql = render(frozenset())  # every parameter an array
        self._by_fixed: dict[frozenset[int], str] = {}

    def applies_to(self, rows: Sequence[Sequence[Any]]) -> bool:
        """An UPDATE is the same as row by row only when no two rows name one lead:
        each then updates its own row, from that row's values before the statement."""
        if self.key is None:
            return True
        a, b = self.key
        return len({(r[a], r[b]) for r in rows}) == len(rows)

    def columns(self, rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
        return [list(column) for column in zip(*rows, strict=True)]

    def bound(self, rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
        """Return the statement for ``rows`` and its parameters: an array per parameter
        that differs between rows, the value itself for one that does not."""
        columns = self.columns(rows)
        fixed = frozenset(
            i
            for i, column in enumerate(columns)
            if i not in self.per_row and _same_in_every_row(column)
        )
        if len(fixed) == len(columns):  # one array at least: it numbers the rows
            fixed -= {0}
        if fixed not in self._by_fixed:
            self._by_fixed[fixed] = self.render(fixed)
        params = [column[0] if i in fixed else column for i, column in enumerate(columns)]
        return self._by_fixed[fixed], params


def _same_in_every_row(column: list[Any]) -> bool:
    """Return True when every value of ``column`` is the first one, of its type too (1
    and 1.0 are equal, but not the same parameter). Both tests run in C."""
    first = column[0]
    return column.count(first) == len(column) and len(set(map(type, column))) == 1


_SET_BASED: dict[str, SetBased | None] = {}
_UPDATE = re.compile(r"^\s*UPDATE\s+(\w+)\s+SET\s+(.*?)\s+WHERE\s+(.*?)\s*$", re.S | re.I)
_BY_KEY = re.compile(r"\bsink = \$(\d+) AND key = \$(\d+)\b")
_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+(\w+)\s*\(([^()]*)\)\s*VALUES\s*\(", re.S | re.I)
_UNSAFE = re.compile(r"\b(RETURNING|FROM|SELECT)\b", re.I)
_BY_LEAD = re.compile(r"^\s*ON\s+CONFLICT\s*\(\s*sink\s*,\s*key\s*\)\s+DO\b", re.I)
_COMMENT = re.compile(r"--[^\n]*")
_PARAM = re.compile(r"\$(\d+)")


def _shape_of(text: str) -> str | None:
    """Return "update" or "insert" for a statement :func:`set_based` can rewrite."""
    if _UNSAFE.search(text):
        return None  # a sub-select, a join, rows returned: row by row
    if (m := _UPDATE.match(text)) and _BY_KEY.search(m.group(3)):
        return "update"
    if _insert_parts(text) is not None:
        return "insert"
    return None


def _insert_parts(text: str) -> tuple[str, str, str, str, tuple[int, int] | None] | None:
    """Return (table, columns, values, what follows them, the (sink, key) parameters of
    an upsert) of an ``INSERT … VALUES (…)``, plain or ``ON CONFLICT (sink, key)``;
    None for another statement."""
    m = _INSERT.match(text)
    if m is None:
        return None
    depth, at = 1, m.end()
    while depth and at < len(text):  # the VALUES' closing parenthesis
        depth += {"(": 1, ")": -1}.get(text[at], 0)
        at += 1
    if depth or "'" in text[m.end() : at]:
        return None  # a quoted parenthesis could mislead the count: row by row
    values, tail = text[m.end() : at - 1], text[at:]
    if not tail.strip():
        return m.group(1), m.group(2), values, "", None
    # An upsert of leads: the same as row by row only when no two rows name one lead
    # (else PostgreSQL refuses to change a row twice in one statement). Its DO UPDATE
    # sees only the table and `excluded`: no parameter of its own.
    if not _BY_LEAD.match(tail) or _PARAM.search(tail):
        return None
    columns = [c.strip() for c in m.group(2).split(",")]
    items = [v.strip() for v in values.split(",")]
    if len(columns) != len(items):
        return None
    params = {c: _PARAM.fullmatch(v) for c, v in zip(columns, items, strict=True)}
    sink, key = params.get("sink"), params.get("key")
    if sink is None or key is None:
        return None
    return m.group(1), m.group(2), values, tail, (int(sink[1]) - 1, int(key[1]) - 1)


def set_based(text: str, shape: str, types: Sequence[Any]) -> SetBased | None:
    """Return ``text`` (an UPDATE of one lead by ``sink = $a AND key = $b``, or an
    INSERT … VALUES, plain or an upsert of leads) as one statement over arrays of its
    parameters, None if the parameters' types are not all plain ones.

    ``UPDATE t SET c = $1 WHERE sink = $2 AND key = $3`` becomes ``UPDATE t SET
    c = r.p1 FROM unnest($1::T1[], $2::T2[], $3::T3[]) AS r(p1, p2, p3) WHERE sink =
    r.p2 AND key = r.p3``; an INSERT selects its VALUES from the same ``unnest``, in
    the rows' order, its ON CONFLICT clause unchanged. A parameter the same in every
    row (see :meth:`SetBased.bound`) keeps its number and is a scalar: ``CAST($2 AS
    T2)`` where ``r.p2`` was, and out of the ``unnest``.
    """
    if any(t.kind != "scalar" or t.schema != "pg_catalog" or t.name == "unknown" for t in types):
        return None  # an array of it would not say what its elements are
    n = len(types)

    def unnest(fixed: frozenset[int]) -> tuple[str, str]:
        varying = [i for i in range(n) if i not in fixed]
        arrays = ", ".join(f"CAST(${i + 1} AS {types[i].name}[])" for i in varying)
        return arrays, ", ".join(f"p{i + 1}" for i in varying)

    def to_row(part: str, fixed: frozenset[int]) -> str:
        def ref(m: re.Match[str]) -> str:
            i = int(m.group(1)) - 1
            return f"CAST(${i + 1} AS {types[i].name})" if i in fixed else f"r.p{i + 1}"

        return _PARAM.sub(ref, part)

    if shape == "update":
        m = _UPDATE.match(text)
        by_key = _BY_KEY.search(m.group(3)) if m else None
        if m is None or by_key is None:
            return None
        table, assignments, where = m.group(1), m.group(2), m.group(3)

        def update(fixed: frozenset[int]) -> str:
            arrays, names = unnest(fixed)
            return (
                f"UPDATE {table} SET {to_row(assignments, fixed)} FROM unnest({arrays})"
                f" AS r({names}) WHERE {to_row(where, fixed)}"
            )

        sink = int(by_key.group(1)) - 1
        # The WHERE's other parameters (a claim's token: the fence) stay arrays, compared
        # with each row of the unnest: as constants, the planner estimated from them how
        # many leads match (none, after an ANALYZE taken before any claim) and looped
        # over the unnest once per lead of the table it then scanned (500 x 500
        # comparisons, 60-70 ms a completion instead of 15). Joined by key only, it
        # finds each row's lead by the primary key.
        per_row = frozenset(int(i) - 1 for i in _PARAM.findall(where)) - {sink}
        return SetBased(update, (sink, int(by_key.group(2)) - 1), per_row)
    parts = _insert_parts(text)
    if parts is None:
        return None
    table, columns, values, tail, key = parts

    def insert(fixed: frozenset[int]) -> str:
        arrays, names = unnest(fixed)
        return (
            f"INSERT INTO {table} ({columns}) SELECT {to_row(values, fixed)}"
            f" FROM unnest({arrays}) WITH ORDINALITY AS r({names}, row_number)"
            f" ORDER BY row_number{tail}"
        )

    return SetBased(insert, key)


def _unreachable(where: str, exc: BaseException, raw: Any = None) -> StoreError:
    """Return the StoreError of a lost database; a connection left unusable is closed
    (the pool connects a new one on the next borrow)."""
    reason = _reason(exc)
    if isinstance(exc, asyncpg.InternalClientError):  # see _LOST
        reason = "the database ended the session (a restart, a failover)"
        if raw is not None:
            raw.terminate()
    return StoreError(f"the state store {where} cannot be reached: {reason}")


class _Lease:
    """``async with store._lock``: a pooled connection for the current task, which
    ``store.db`` returns until the block ends.

    The SQLite store's statements are written as ``async with self._lock`` around
    ``self.db``: there one lock guards one connection. Here each entry borrows a
    connection of its own, so tasks run their statements side by side and no
    connection is ever used by two tasks at once (asyncpg refuses that: "another
    operation is in progress"). An entry nested in the same task reuses the task's
    connection (a transaction's statements stay in it). Each entry is its own
    object: a generator closed by another task still returns what it borrowed.
    """

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.pg: PgConnection | None = None  # None once given back
        self.token: contextvars.Token[tuple[Any, _Lease] | None] | None = None

    async def __aenter__(self) -> _Lease:
        if self.store._borrowed() is None:
            self.pg = await self.store._borrow()
            self.token = self.store._lent.set((asyncio.current_task(), self))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.pg is None:
            return
        pg, self.pg = self.pg, None
        if self.token is not None:
            with contextlib.suppress(ValueError):  # left in another task's context
                self.store._lent.reset(self.token)
        await self.store._give_back(pg)


def dsn_of(url: str) -> str:
    """Return an asyncpg DSN for a SQLAlchemy-style URL (``postgresql+asyncpg://``)."""
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)


class PostgresStore(SqliteStore):
    """The shared store: a pool of asyncpg connections per replica, the SQLite store's
    contract, the database's clock."""

    QUERIES = "postgres"
    # PostgreSQL's planner picks its indexes (the phone index, the partial index
    # leads_removals) itself: it keeps statistics. INDEXED BY is SQLite's.
    _PHONE_INDEX = ""
    queued_removals_query = SqliteStore.queued_removals_query.replace(
        " INDEXED BY leads_removals", ""
    )
    # Status's counts grouped: PostgreSQL aggregates an index-only scan faster than it
    # runs a subquery per sink and state (a million leads: 120 ms, 260 per range).
    counts_query = "SELECT sink, state, COUNT(*) FROM leads GROUP BY sink, state"
    outcome_counts_query = (
        "SELECT sink, COUNT(*), COUNT(*) FILTER (WHERE observed_at >= ?), MAX(observed_at)"
        " FROM outcomes GROUP BY sink"
    )

    def __init__(
        self,
        url: str,
        clock: Clock = SYSTEM_CLOCK,
        *,
        schema: str | None = None,
        lease_s: float | None = None,
        pool_size: int = POOL_SIZE,
    ) -> None:
        super().__init__(url, clock)
        self.clock: DatabaseClock = DatabaseClock(clock)
        self.path = _shown(url)  # what status and errors show: never the password
        self._dsn = dsn_of(url)
        self.schema = schema
        self.lease_s = lease_s  # caps the push lease: a dead replica's claims come back sooner
        self.pool_size = pool_size
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.session_name = session_name(self.holder)  # its sessions' application_name
        self._end_failed: set[tuple[str, str]] = set()  # (job, holder) said once
        self._pool: Any = None
        # the connection the current task borrowed (see _Lease), with the task
        self._lent: contextvars.ContextVar[tuple[Any, _Lease] | None] = contextvars.ContextVar(
            f"syncd_pg_{id(self)}", default=None
        )
        self._notifying: set[int] = set()  # server pids this replica's NOTIFYs came from
        self._listener: Any = None  # the connection LISTENing for other replicas' wake-ups
        self._woken: Callable[[str], None] | None = None
        self._warned_schema = 0  # the store's schema a warning named (see _newer_store)
        self._unanalyzed = 0  # leads written by this replica's pulls since its last ANALYZE
        self._analyzed_rows = 0  # the leads that ANALYZE counted
        self._analyzing: asyncio.Task[None] | None = None  # the ANALYZE beside the pull
        # A look-up's keys (and pairs) go as array parameters: a whole chunk in one
        # statement (see _in_list); the bound keeps one message of a huge chunk sane.
        self._keys = self._pairs = KEYS_PER_QUERY

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        try:
            if self.schema:
                await (await self._raw_connection(create_schema=True)).close(timeout=5)
            self._pool = await asyncpg.create_pool(
                self._dsn,
                # none kept open for their own sake: after a restart asyncpg would
                # reconnect that floor in the background, logging a traceback per try
                min_size=0,
                max_size=self.pool_size,
                server_settings=self._settings(),
                reset=_rollback_only,
                timeout=10,  # to connect
            )
            async with self._lock:
                await self._migrate()
            await self._read_clock()
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await self.close()
            raise StoreError(f"cannot open state store {self.path}: {_reason(exc)}") from None
        except StoreError as exc:  # the first borrow: the database cannot be reached
            await self.close()
            raise StoreError(f"cannot open state store: {exc}") from None

    def _settings(self) -> dict[str, str]:
        settings = {
            "application_name": self.session_name,
            "idle_in_transaction_session_timeout": str(int(IDLE_IN_TRANSACTION_S * 1000)),
        }
        if self.schema:
            settings["search_path"] = self.schema
        return settings

    async def _raw_connection(self, *, create_schema: bool = False) -> Any:
        """Return a connection outside the pool (the listener's; the schema's creation)."""
        raw = await asyncpg.connect(self._dsn, server_settings=self._settings(), timeout=10)
        if create_schema and self.schema:
            try:
                async with raw.transaction():
                    # IF NOT EXISTS still races with a replica starting at the same time.
                    await raw.execute("SELECT pg_advisory_xact_lock(hashtext('syncd.migrate'))")
                    await raw.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            except BaseException:
                await raw.close()
                raise
        return raw

    async def close(self) -> None:
        if self._analyzing is not None:
            self._analyzing.cancel()
            await asyncio.gather(self._analyzing, return_exceptions=True)
            self._analyzing = None
        if self._listener is not None:
            listener, self._listener = self._listener, None
            with contextlib.suppress(*_GONE):
                await listener.close(timeout=5)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                async with asyncio.timeout(5):
                    await pool.execute("DELETE FROM replicas WHERE holder = $1", self.holder)
            except (*_GONE, asyncpg.PostgresError):
                pass  # its heartbeat ages out
            try:
                await asyncio.wait_for(pool.close(), 5)
            except TimeoutError:  # a task still holds a connection: it fails, as it would
                pool.terminate()

    # -- connections: one per task at a time ----------------------------------------

    @property  # type: ignore[override]
    def _lock(self) -> _Lease:
        """Where the SQLite store takes its lock, this store lends a connection."""
        return _Lease(self)

    @_lock.setter
    def _lock(self, _sqlite_lock: object) -> None:
        pass  # SqliteStore.__init__ sets its one lock; this store has none

    @property
    def db(self) -> Any:
        held = self._borrowed()
        if held is None:  # a statement outside `async with self._lock`: a bug
            raise StoreError(f"state store {self.path}: no connection lent to this task")
        return held

    def _borrowed(self) -> PgConnection | None:
        lent = self._lent.get()
        if lent is None or lent[0] is not asyncio.current_task():
            return None  # a task started inside another's lease borrows its own
        # None when given back already: a generator left unfinished, closed later
        return lent[1].pg

    async def _borrow(self) -> PgConnection:
        if self._pool is None:
            raise StoreError("state store is not open")
        try:
            # a connection the database dropped is replaced here, not handed out
            return PgConnection(await self._pool.acquire(), self.path)
        except (*_GONE, asyncpg.PostgresError) as exc:  # "the database is starting up"
            raise _unreachable(self.path, exc) from None

    async def _give_back(self, pg: PgConnection) -> None:
        if self._pool is None:
            return
        # The pool waits for a cancelled query's cancellation before lending the
        # connection again; a broken one it closes and replaces on the next borrow.
        with contextlib.suppress(*_GONE, asyncpg.PostgresError):
            await self._pool.release(pg.raw)

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[Any]:
        async with self._lock:
            pg = self.db
            try:
                async with pg.raw.transaction():
                    yield pg
            except _LOST as exc:
                raise _unreachable(self.path, exc, pg.raw) from None
            except asyncpg.PostgresError as exc:
                raise StoreError(f"the state store {self.path} failed: {_reason(exc)}") from None

    @asynccontextmanager
    async def _statement(self) -> AsyncIterator[Any]:
        """A connection for one statement, its own transaction (no BEGIN, no COMMIT: two
        round trips fewer than :meth:`_tx`), failing as :meth:`_tx` fails."""
        async with self._lock:
            pg = self.db
            try:
                yield pg
            except _LOST as exc:
                raise _unreachable(self.path, exc, pg.raw) from None
            except asyncpg.PostgresError as exc:
                raise StoreError(f"the state store {self.path} failed: {_reason(exc)}") from None

    async def _read_clock(self) -> None:
        """Set the store's clock from the database's (see DatabaseClock)."""
        async with self._lock:
            local = self.clock.local
            asked = local.monotonic()
            rows = await self.db.execute_fetchall(f"SELECT {NOW}")
            self.clock.anchor(float(rows[0][0]), asked, local.monotonic())

    async def _migrate(self) -> None:
        pg = self.db.raw
        async with pg.transaction():
            # Replicas may start together: one migrates, the others wait and find it done.
            # A replica older than the store is refused here, before it touches anything.
            await pg.execute("SELECT pg_advisory_xact_lock(hashtext('syncd.migrate'))")
            await pg.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            await pg.execute(MIGRATIONS_TABLE)
            version = await pg.fetchval("SELECT max(version) FROM schema_version") or 0
            recorded = await pg.fetchval("SELECT max(number) FROM migrations") or 0
            problem = migrations.too_old(self.path, len(MIGRATIONS), max(version, recorded))
            if problem:
                raise StoreError(problem)
            # steps a store took before syncd recorded them: no checksum known
            await pg.executemany(
                "INSERT INTO migrations (number, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                [(m.number, m.name) for m in MIGRATIONS[:version]],
            )
            for step in MIGRATIONS[version:]:
                await pg.execute(step.sql)
                await pg.execute("INSERT INTO schema_version VALUES ($1)", step.number)
                await pg.execute(
                    "INSERT INTO migrations (number, name, sha256, applied_at)"
                    f" VALUES ($1, $2, $3, {NOW})",
                    step.number,
                    step.name,
                    step.sha256,
                )
                log.info("state.migrated", store=self.path, migration=step.name)
        for warning in (await self.schema_state()).edited:
            log.warning("state.migration.edited", store=self.path, warning=warning)

    async def schema_state(self) -> SchemaState:
        async with self._lock:
            db = self.db
            version = (await db.execute_fetchall("SELECT max(version) FROM schema_version"))[0][0]
            rows = await db.execute_fetchall(
                "SELECT number, name, sha256 FROM migrations ORDER BY number"
            )
        applied = [migrations.Applied(int(n), str(name), sha) for n, name, sha in rows]
        return SchemaState(
            at=max([int(version or 0), *(a.number for a in applied)]),
            knows=len(MIGRATIONS),
            edited=migrations.edited("postgres", applied),
        )

    async def _reclaim_space(self) -> None:
        return None  # autovacuum's job

    async def size_bytes(self) -> int:
        async with self._lock:
            rows = await self.db.execute_fetchall(
                "SELECT COALESCE(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relkind = 'r' AND n.nspname = current_schema()"
            )
        return int(rows[0][0])

    async def integrity_ok(self) -> bool:
        async with self._lock:
            rows = await self.db.execute_fetchall("SELECT count(*) >= 0 FROM leads")
        return bool(rows[0][0])

    # -- the pull's look-ups: a chunk's keys in one statement -----------------------

    def _in_list(self, column: str, items: Sequence[str]) -> tuple[str, list[Any]]:
        """The items as one array parameter, ``unnest`` into a semi-join. As ``IN ($1, …,
        $500)`` a 5,000-row chunk took ten statements per look-up (the last part of each
        chunk a text of its own, prepared again).

        Not ``= ANY($n)``: once PostgreSQL plans the prepared statement generically it
        cannot hash an array parameter, and tested each row the index range gave against
        every key: a pull's look-up of 5,000 keys among 1,000 refusals took 176 ms, as
        a join 1 ms."""
        return f"{column} IN (SELECT unnest(CAST(? AS TEXT[])))", [list(items)]

    def _numbers_table(self, numbers: Sequence[str]) -> tuple[str, list[Any]]:
        """The numbers as one array parameter, ``unnest`` into rows: a batch's look-up of
        its numbers (on every push) had a parameter a number, 500 to bind and plan."""
        return "WITH n(phone) AS (SELECT unnest(CAST(? AS TEXT[])))", [list(numbers)]

    async def lookup_changed(
        self, sink: str, rows: Sequence[tuple[str, str]], origin: str
    ) -> dict[str, StoredLead | None]:
        """One statement a chunk, the comparison and the stored leads together: a round
        trip to the database costs more here than reading each lead's row by its key
        (SQLite's compares through an index first; an index-only read here needs every
        page all-visible, which a table of claims and completions rarely is)."""
        found: dict[str, StoredLead | None] = {}
        async with self._lock:
            for start in range(0, len(rows), self._pairs):
                pairs, params = self._pairs_table(rows[start : start + self._pairs])
                result = await self.db.execute_fetchall(
                    f"{pairs}SELECT c.key, l.key IS NULL, {STORED_LEAD}"
                    " FROM c LEFT JOIN leads l ON l.sink = ? AND l.key = c.key"
                    " WHERE l.key IS NULL OR l.raw_hash IS NOT c.raw OR l.origin = ?",
                    (*params, sink, origin),
                )
                for row in result:
                    found[row[0]] = None if row[1] else StoredLead(*row[2:])
        return found

    def _pairs_table(self, pairs: Sequence[tuple[str, str]]) -> tuple[str, list[Any]]:
        """The pairs as two array parameters, ``unnest`` into rows: one statement text for
        any number of pairs, where ``VALUES`` took 400 pairs a statement (13 a chunk)."""
        return (
            "WITH c(key, raw) AS (SELECT * FROM unnest(CAST(? AS TEXT[]), CAST(? AS TEXT[]))) ",
            [[key for key, _ in pairs], [raw for _, raw in pairs]],
        )

    # -- claims that survive a dead replica ---------------------------------------

    async def release_inflight(self, sink: str | None = None) -> int:
        """Return to the outbox this replica's claims and those whose lease ran out.

        Their attempt stays spent: the push may have sent its request before it was cut
        off or its replica died, so a lead never delivered stays in doubt."""
        async with self._tx() as db:
            cur = await db.execute(*release_statement(sink, self.holder))
            return int(cur.rowcount)

    # A lease that ran out is lost: the next claim of any replica takes it over.
    _LEASE_LIVE = f" AND lease_until > {NOW}"

    async def claim(self, sink: str, limit: int, lease_s: float) -> list[QueuedLead]:
        if self.lease_s is not None:
            lease_s = min(lease_s, self.lease_s)
        now = self.clock.time()
        token = new_claim_token()
        async with self._statement() as db:
            # One statement, no transaction around it (it was BEGIN, a sweep of the
            # lapsed leases, the claim, COMMIT): every round trip to the database is a
            # wait for each push worker of every replica, on every batch.
            cur = await db.execute(
                # A lease that ran out belongs to a replica that died mid-push: its leads
                # are in doubt and are claimed again first (`lapsed`; the vendor's upsert
                # makes the repeat harmless), counted as the attempt they were. Until then
                # they keep its token: a result it still writes then stands.
                #
                # The picks are CTEs: evaluated once. As `key IN (SELECT … LIMIT n FOR
                # UPDATE SKIP LOCKED)` the planner may run the subquery again per row,
                # and SKIP LOCKED then hands out more than n. `= ANY(ARRAY(…))` makes
                # the update look the picked keys up by index, not hash the whole table.
                f"""
                WITH lapsed AS (
                    SELECT key FROM leads WHERE sink = ? AND state = 'inflight'
                        AND lease_until < {NOW}
                    ORDER BY next_at, key LIMIT ? FOR UPDATE SKIP LOCKED),
                fresh AS (
                    SELECT key FROM leads WHERE sink = ? AND state = 'pending' AND next_at <= ?
                    ORDER BY next_at, key LIMIT ? FOR UPDATE SKIP LOCKED),
                picked AS (
                    (SELECT key FROM lapsed) UNION ALL (SELECT key FROM fresh) LIMIT ?)
                UPDATE leads SET state = 'inflight', lease_holder = ?, claim_token = ?,
                    lease_until = {NOW} + CAST(? AS DOUBLE PRECISION), attempts = attempts + 1
                WHERE leads.sink = ? AND leads.key = ANY(ARRAY(SELECT key FROM picked))
                RETURNING leads.key, hash, action, lead_json, attempts, vendor_ref, delivered_hash,
                    source, updated_at, doubt_number
                """,
                (sink, limit, sink, now, limit, limit, self.holder, token, float(lease_s), sink),
            )
            rows = await cur.fetchall()
        return self._claimed(sink, rows, token)

    async def complete(self, sink: str, completions: Sequence[Completion]) -> list[str]:
        now = self.clock.time()
        async with self._tx() as db:
            stored: dict[str, tuple[str | None, float, bool]] = {}
            for part in in_parts([c.key for c in completions], self._keys):
                among, params = self._in_list("key", part)
                rows = await db.execute_fetchall(f"{AS_STORED} AND {among}", (sink, *params))
                stored.update(as_stored(rows))
            stale, kept = split_stale(completions, stored)
            # Each a round trip, few and set-based (PgConnection.executemany)
            for sql, rows, _many in result_statements(sink, kept, now, stored):
                await db.executemany(sql, rows)
        return stale

    # -- wake-ups across replicas ----------------------------------------------------

    async def _announce(self, db: Any, chunks: Sequence[ChunkWrite]) -> None:
        """Tell the other replicas which outboxes got leads: a NOTIFY in the chunks'
        transaction is sent when it commits (never if it rolls back), with no statement,
        round trip or connection of its own after the commit."""
        queued = sorted(
            {s for c in chunks for s, writes in c.leads.items() if any(w.enqueue for w in writes)}
        )
        if queued:
            self._notifying.add(db.raw.get_server_pid())
            for sink in queued:
                await db.execute("SELECT pg_notify(?, ?)", (CHANNEL, sink))

    async def _fence(self, db: Any, jobs: set[str]) -> None:
        """Raise LeadLost unless this replica still leads each of ``jobs``: its lease row
        is read FOR SHARE, so no other replica takes the job over before this commits."""
        for job in sorted(jobs):
            cur = await db.execute(
                f"SELECT 1 FROM leaders WHERE job = ? AND holder = ? AND until > {NOW} FOR SHARE",
                (job, self.holder),
            )
            if await cur.fetchone() is None:
                raise LeadLost(job)

    async def apply_chunks(self, chunks: Sequence[ChunkWrite]) -> None:
        """Commit chunks (and their wake-ups, see _announce); keep the statistics."""
        await super().apply_chunks(chunks)
        await self._keep_statistics(
            sum(w.enqueue for c in chunks for ws in c.leads.values() for w in ws)
        )

    async def _keep_statistics(self, written: int) -> None:
        """ANALYZE the leads once the pull has written ANALYZE_AFTER_ROWS, then each time
        the table may have grown fourfold: a bulk load is not left to autovacuum.

        A table the planner has no statistics of looks nearly empty to it: every push's
        look-up of the batch's numbers (``number_holders``) then took the outbox index
        and parsed the JSON of every live lead of the sink (165 ms a batch at 50,000
        leads instead of 5, growing with the table). Autovacuum would analyze it a
        minute or more later, or never where it is off. The plans need the table's size
        and its numbers' spread, not precision: growing fourfold keeps it to a few
        ANALYZEs per load (each samples up to 30,000 rows); the churn of claims and
        completions is autovacuum's.

        The ANALYZE runs beside the pull, on a connection of its own, one at a time: the
        pull's next chunk does not wait for it (0.1-0.4 s each, on the path of the
        leader's pull, which every replica's pushes follow). The pushes woken by this
        chunk ran beside it before as well.
        """
        self._unanalyzed += written
        if self._unanalyzed < max(ANALYZE_AFTER_ROWS, 3 * self._analyzed_rows):
            return
        if self._analyzing is not None and not self._analyzing.done():
            return  # the one running counts these rows too, or the next one will
        self._unanalyzed = 0
        self._analyzing = asyncio.create_task(self._analyze(), name="syncd-analyze-leads")

    async def _analyze(self) -> None:
        try:
            async with self._lock:
                await self.db.execute(f"ANALYZE leads ({', '.join(PLANNED_COLUMNS)})")
                rows = await self.db.execute_fetchall(
                    "SELECT reltuples FROM pg_class WHERE oid = CAST('leads' AS regclass)"
                )
        except (StoreError, asyncpg.PostgresError) as exc:
            # statistics are a help to the plans, not a result: autovacuum makes them too
            log.warning("state.analyze.failed", table="leads", reason=_reason(exc))
            return
        self._analyzed_rows = max(int(rows[0][0]) if rows else 0, 0)
        log.debug("state.analyzed", table="leads", rows=self._analyzed_rows)

    async def listen(self, woken: Callable[[str], None]) -> None:
        """Call ``woken(sink)`` whenever another replica queues leads for ``sink``.

        A second connection listens; if it is lost, pushes still run on their tick, and
        the next :meth:`heartbeat` listens again.
        """
        self._woken = woken
        await self._listen()

    async def _listen(self) -> None:
        if self._woken is None or (self._listener is not None and not self._listener.is_closed()):
            return
        woken, own = self._woken, self._notifying

        def notified(_conn: Any, pid: int, _channel: str, sink: str) -> None:
            if pid not in own:  # this replica's own pull already woke its pushers
                woken(sink)

        try:
            self._listener = await self._raw_connection()
            await self._listener.add_listener(CHANNEL, notified)
        except _GONE as exc:
            self._listener = None
            log.warning("state.listen.failed", reason=_reason(exc), action="pushes run on a tick")

    # -- leadership and replicas --------------------------------------------------

    async def lead(self, job: str, ttl_s: float) -> bool:
        """Return True when this replica leads ``job`` (taken or renewed for ``ttl_s``).

        A job another replica leads is left alone while its lease runs: no row lock is
        asked for, so a contender never waits behind the leader's chunk (which reads its
        lease row FOR SHARE until it commits). A lease run out is taken over, waiting at
        most TAKEOVER_WAIT_S for the old leader's chunk: longer, and the old leader stands
        still inside it (see :meth:`_end_stalled`).
        """
        async with self._tx() as db:
            rows = await db.execute_fetchall(
                f"SELECT holder, until, until > {NOW} FROM leaders WHERE job = ?", (job,)
            )
            if rows and rows[0][0] != self.holder and rows[0][2]:
                return False
            try:
                async with db.raw.transaction():  # a savepoint: the wait may time out
                    if rows and rows[0][0] != self.holder:
                        await db.raw.execute(
                            f"SET LOCAL lock_timeout = {int(TAKEOVER_WAIT_S * 1000)}"
                        )
                    cur = await db.execute(
                        f"""
                        INSERT INTO leaders (job, holder, since, until)
                        VALUES (?, ?, {NOW}, {NOW} + CAST(? AS DOUBLE PRECISION))
                        ON CONFLICT (job) DO UPDATE SET holder = excluded.holder,
                            since = CASE WHEN leaders.holder = excluded.holder
                                         THEN leaders.since ELSE excluded.since END,
                            until = excluded.until
                        WHERE leaders.holder = excluded.holder OR leaders.until < {NOW}
                        RETURNING holder
                        """,
                        (job, self.holder, float(ttl_s)),
                    )
                    return await cur.fetchone() is not None
            except asyncpg.LockNotAvailableError:
                stalled = (str(rows[0][0]), float(rows[0][1]))
        await self._end_stalled(job, *stalled)
        return False

    async def _end_stalled(self, job: str, holder: str, until: float) -> None:
        """End the transactions ``holder`` began before its lease of ``job`` ran out and
        still holds open: it stands still inside them (a VM paused, SIGSTOP), holding
        the locks the job's next leader needs. One idle inside its transaction the
        database ends by itself (IDLE_IN_TRANSACTION_S); one stopped half-way through
        sending a statement shows as ``active`` and nothing else would end it. Woken, the
        replica finds its session gone and its lead taken (LeadLost). Nothing it did in
        them was committed; the next leader does it again."""
        name = session_name(holder)
        try:
            async with self._tx() as db:
                rows = await db.execute_fetchall(
                    """
                    SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
                    WHERE application_name = ? AND datname = current_database()
                        AND pid != pg_backend_pid()
                        AND extract(epoch from xact_start) < ?
                    """,
                    (name, until),
                )
        except StoreError as exc:
            if (job, holder) not in self._end_failed:
                self._end_failed.add((job, holder))
                log.error(
                    "leader.fence.failed",
                    job=job,
                    holder=holder,
                    reason=str(exc),
                    action="give syncd's database role pg_signal_backend, or stop the"
                    " replica that stands still: until then no other replica runs this job",
                )
            return
        log.warning(
            "leader.fenced",
            job=job,
            holder=holder,
            ended=int(rows[0][0]),
            why="its lease ran out inside a transaction it does not finish (paused or"
            " stopped); those transactions were ended so that another replica runs the job",
        )

    async def resign(self) -> None:
        """Give up every job this replica leads (a clean stop: the others need not wait)."""
        async with self._tx() as db:
            await db.execute("DELETE FROM leaders WHERE holder = ?", (self.holder,))

    async def heartbeat(self) -> None:
        """Say this replica is alive (``syncd status`` lists the replicas seen lately), and
        extend the leases of the leads its running pushes claimed: a dead or frozen
        replica's run out, and so do those of a push that gave up (see ``settle``)."""
        live = sorted(self._live_claims)
        sinks = sorted(set(self._live_claims.values()))
        async with self._tx() as db:
            if self.lease_s is not None and live:
                # SKIP LOCKED: a lead whose row is locked is being written by its push's
                # completion (or taken over): it needs no renewal. Waiting for it, the
                # heartbeat held rows that completion waited for in turn, a deadlock
                # PostgreSQL broke after a second by failing one of them. A renewal
                # skipped while a completion fails is made at the next heartbeat.
                await db.execute(RENEWAL, (sinks, self.holder, live, float(self.lease_s)))
            await db.execute(
                f"""
                INSERT INTO replicas (holder, host, pid, started_at, seen_at, syncd_version,
                    knows_schema)
                VALUES (?, ?, ?, {NOW}, {NOW}, ?, ?)
                ON CONFLICT (holder) DO UPDATE SET seen_at = excluded.seen_at
                """,
                (self.holder, socket.gethostname(), os.getpid(), __version__, len(MIGRATIONS)),
            )
            [(at,)] = await db.execute_fetchall("SELECT max(version) FROM schema_version")
        self._newer_store(int(at or 0))
        await self._read_clock()  # the local clock may drift, or the database's be set
        await self._listen()  # again, if its connection was lost

    def _newer_store(self, at: int) -> None:
        """Say once per step that a newer replica migrated the store past this one: it
        carries on (steps only add), but would refuse to start again."""
        if at > len(MIGRATIONS) and at > self._warned_schema:
            self._warned_schema = at
            log.warning(
                "state.schema.newer",
                store=self.path,
                knows=len(MIGRATIONS),
                at=at,
                action="upgrade this replica's syncd before it restarts",
            )

    async def replicas(self, within_s: float = 60.0) -> list[dict[str, Any]]:
        """Return the replicas seen within ``within_s``, with the jobs each leads."""
        async with self._lock:
            db = self.db
            rows = await db.execute_fetchall(
                f"SELECT holder, host, pid, started_at, {NOW} - seen_at, syncd_version,"
                " knows_schema FROM replicas"
                f" WHERE seen_at > {NOW} - CAST(? AS DOUBLE PRECISION) ORDER BY started_at",
                (float(within_s),),
            )
            jobs = await db.execute_fetchall(
                f"SELECT job, holder, {NOW} - since, until - {NOW} FROM leaders"
                f" WHERE until > {NOW} ORDER BY job"
            )
        out = []
        for holder, host, pid, started, age, version, knows in rows:
            leads = [
                {"job": j, "for_s": round(float(held), 1), "lease_left_s": round(float(left), 1)}
                for j, h, held, left in jobs
                if h == holder
            ]
            out.append(
                {
                    "replica": holder,
                    "host": host,
                    "pid": pid,
                    "started_at": float(started),
                    "seen_s_ago": round(float(age), 1),
                    # None: a replica started before replicas recorded their versions
                    "version": version,
                    "knows_schema": knows,
                    "leads": leads,
                    "this": holder == self.holder,
                }
            )
        return out

    # -- what the SQLite store does with SQLite's JSON functions -------------------

    async def listed_leads(self, list_name: str) -> list[ListedLead]:
        query = """
            SELECT l.sink, l.key, l.state, l.delivered_hash IS NOT NULL, l.raw_hash, d.number,
                l.hash, l.lead_json, l.doubt_number
            FROM dnc_numbers d JOIN leads l ON l.phone = d.number
            WHERE d.list = $1 AND d.checked = 0
            UNION
            SELECT l.sink, l.key, l.state, l.delivered_hash IS NOT NULL, l.raw_hash, j.value,
                l.hash, l.lead_json, l.doubt_number
            FROM leads l CROSS JOIN LATERAL jsonb_array_elements_text(
                CASE WHEN jsonb_typeof(l.lead_json::jsonb -> 'alt_phones') = 'array'
                     THEN l.lead_json::jsonb -> 'alt_phones' ELSE '[]'::jsonb END) AS j(value)
            JOIN dnc_numbers d ON d.number = j.value AND d.list = $1 AND d.checked = 0
        """
        async with self._lock:
            db = self.db
            if not await db.execute_fetchall(
                "SELECT 1 FROM dnc_numbers WHERE list = ? AND checked = 0 LIMIT 1", (list_name,)
            ):
                return []
            rows = await db.execute_fetchall(query, (list_name,))
        return [listed_lead(r) for r in rows]


async def _rollback_only(conn: asyncpg.Connection) -> None:
    """Ready a connection given back to the pool. asyncpg's own reset sends a query on
    every return (RESET ALL, UNLISTEN, advisory unlocks); the store's connections keep
    no session state (its locks are per transaction, LISTEN has its own connection), so
    only a transaction a failure left open needs ending."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


def _shown(url: str) -> str:
    """Return a database URL without its password."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def session_name(holder: str) -> str:
    """Return the ``application_name`` of a replica's sessions: its own, so that one
    taking over its lead finds them (pg_stat_activity), and an operator sees whose each
    is. The holder's random part comes first: the name is cut at 63 characters."""
    host, pid, tag = holder.rsplit(":", 2)
    return f"syncd {tag}:{pid} {host}"[:63]


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


async def wait_for_database(url: str, timeout_s: float = 5.0) -> str | None:
    """Return why the database at ``url`` cannot be reached, None when it answers."""
    try:
        conn = await asyncio.wait_for(asyncpg.connect(dsn_of(url)), timeout_s)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return _reason(exc)
    await conn.close()
    return None
