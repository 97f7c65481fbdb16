"""The SQLite state store (default, embedded): WAL, versioned migrations, mode 0600."""

from __future__ import annotations

import asyncio
import contextlib
import json
import operator
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import (
    AsyncIterator,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import Any

import aiosqlite
import orjson
import structlog

from syncd.core import latency
from syncd.core.clock import SYSTEM_CLOCK, Clock
from syncd.core.feed import FeedCounts
from syncd.core.model import (
    Action,
    AgentStatus,
    Lead,
    LeadState,
    Outcome,
    QueuedLead,
    ResultKind,
    StoredLead,
    consent_text,
)
from syncd.core.numbers import Holder
from syncd.core.refusals import Refusal
from syncd.core.window_hold import WINDOW_CODE
from syncd.errors import StoreError
from syncd.state import migrations, queries
from syncd.state.base import (
    CLOSED,
    RETURNING,
    WITHDRAWAL_REFUSED,
    WITHDRAWN,
    BlockedLead,
    ChunkWrite,
    Completion,
    DncVersion,
    ExpiredLead,
    ListedLead,
    QueuedSummary,
    SchemaState,
    WindowLead,
    WindowMoves,
    stats_hour,
)
from syncd.state.ledger import LedgerRow, Placement, ledger_row, placement_row
from syncd.state.migrations import Migration
from syncd.state.sqlite_conn import Statement, StoreConnection, connect

# The schema's steps: syncd/state/migrations/sqlite/NNNN_name.sql, never edited once
# released; the store records each step it applied with the file's sha256.
MIGRATIONS: tuple[Migration, ...] = migrations.load("sqlite")
# Created outside the numbered steps: a store made before it existed gets it too.
MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS migrations (number INTEGER PRIMARY KEY, name TEXT NOT NULL,"
    " sha256 TEXT, applied_at REAL)"
)

log = structlog.get_logger("syncd.state")

# What retention may delete: kind -> (table, time column, key column).
_PRUNABLE: dict[str, tuple[str, str, str]] = {
    "events": ("events", "at", "id"),
    "rejects": ("rejects", "created_at", "id"),
    "runs": ("runs", "started_at", "run_id"),
}
# The kinds whose newest row outlives retention: the last run, which `status` and the
# page show ("last run: …"). A refused row or an event kept past its age would only be
# personal data retention promised to drop.
_KEEP_NEWEST = frozenset({"runs"})

_GIVE_BACK = "CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END"  # an attempt not spent
# A lead never delivered with a version sent whose answer never came: `doubt_number`
# is that version's number (set by a push's retry that names it, or by a claim
# released after a crash; cleared by a delivery). In flight it is left to the push's
# completion (a removal queued meanwhile takes the number then).
_IN_DOUBT = (
    "(l.delivered_hash IS NULL AND l.action = 'upsert' AND l.doubt_number IS NOT NULL"
    " AND l.state != 'inflight')"
)
# A push's result naming the number sent, its answer lost (params: it twice; '' names
# none and leaves the doubt as it was).
_DOUBT_SENT = "doubt_number = CASE WHEN CAST(? AS TEXT) != '' THEN ? ELSE doubt_number END"
# A claim released without its result (a crash, a cut-off push): its request may have
# gone, so the version claimed is in doubt by its number.
# A lead's numbers, not the whole lead: a batch's own leads hold its numbers, and parsing
# each one's JSON cost a push ~3 µs a lead.
_NUMBERS_OF = "json_extract(l.lead_json, '$.phone'), json_extract(l.lead_json, '$.alt_phones')"
RELEASED_DOUBT = (
    "doubt_number = CASE WHEN action = 'upsert' AND delivered_hash IS NULL"
    " THEN COALESCE(json_extract(lead_json, '$.phone'), doubt_number) ELSE doubt_number END"
)


def listed_lead(row: Sequence[Any]) -> ListedLead:
    """Return a row of ``listed_leads``' query (its columns in ListedLead's order)."""
    sink, key, state, delivered, raw_hash, number, hash_, text, doubt = row
    return ListedLead(sink, key, state, bool(delivered), raw_hash, number, hash_, text, doubt)


# StoredLead's in_doubt and attempted (the number of the version sent in doubt)
_DOUBT_COLUMNS = f"{_IN_DOUBT}, CASE WHEN {_IN_DOUBT} THEN l.doubt_number END"
# Fencing: a claim's results and requeues apply only where the lead still carries the
# claim's token (params: the token twice); None (no claim known) matches by key alone.
_FENCE = "(CAST(? AS TEXT) IS NULL OR claim_token = ?)"
# The leads a run's history counts (delivered, refused): PostgreSQL's index of runs
# holds only these (leads_run_counted, its migration 19: a claim and a pull's insert add
# no entry to it), and serves only a statement that names the same states.
COUNTED_IN_RUNS = "state IN ('delivered', 'rejected', 'failed')"
# A lead as a pull's plan reads it (StoredLead's fields, of the leads ``l``). The version
# time (core.versions) is read out of the JSON only where the text holds one.
STORED_LEAD = (
    "l.hash, l.raw_hash, l.state, l.origin, l.line, l.run_id, l.klass,"
    " l.delivered_hash IS NOT NULL, CASE WHEN instr(l.lead_json, '\"version_at\"') > 0"
    f" THEN json_extract(l.lead_json, '$.version_at') END, {_DOUBT_COLUMNS}"
)
# A lead taken out of the dialer at its calling window's close (syncd.run.window): its
# removal carries the lead as it was, marked; it comes back at the next opening.
WINDOW_WITHDRAWAL = (
    f"action = 'delete' AND json_extract(lead_json, '$.withdrawn') = '{WINDOW_CODE}'"
)
# The lead was dialled to a final result since its delivery (the dialer is done with it).
_DIALLED = """EXISTS (SELECT 1 FROM outcomes o WHERE o.sink = l.sink AND o.key = l.key
    AND o.status IN ('connected', 'closed')
    AND COALESCE(o.last_dialed_at, o.observed_at) >= COALESCE(l.delivered_at, 0))"""
_ADD_STAT = (
    "INSERT INTO stats (sink, at, metric, bucket, n) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (sink, at, metric, bucket) DO UPDATE SET n = stats.n + excluded.n"
)
# The sinks a table holds rows of (CTE ``sinks``), read by seeking from one sink to the
# next in an index led by ``sink``: a few look-ups, where DISTINCT or GROUP BY sink read
# every row. Status counts per sink then count index ranges (migration 14).
_EACH_SINK = (
    "WITH RECURSIVE sinks (sink) AS (SELECT MIN(sink) FROM {table}"
    " UNION ALL SELECT (SELECT MIN(sink) FROM {table} WHERE sink > sinks.sink)"
    " FROM sinks WHERE sinks.sink IS NOT NULL)"
)
_STATES = ", ".join(f"('{s.value}')" for s in LeadState)
_BUSY_MS = 10_000  # how long a statement waits for another process's lock
_VACUUM_STEP = 2000  # free pages given back per step (8 MB of 4 KiB pages)
_CHUNK = 500  # SQLite's host-parameter limit is generous, but long IN lists plan badly
_PAIRS = 400  # (key, raw hash) pairs per query: 802 parameters, under old SQLite's 999
# Where SQLite takes more (32766 parameters since 3.32), a re-sync's lookup sends this many
# pairs per query: each query is a hop to the database thread and back, and a hop waits
# for the GIL the source's reading thread holds (50 hops a 20,000-row chunk cost more
# than the comparisons they carried).
_PAIRS_MAX = 4000

# What a writeback can read: table, key column, columns beyond sink/key/version/observed_at.
_WRITEBACK_SOURCES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "outcomes": (
        "outcomes",
        "key",
        (
            "status",
            "raw_status",
            "disposition",
            "attempts",
            "last_dialed_at",
            "agent",
            "call_id",
            "recording_url",
        ),
    ),
    "agents": ("agents", "login", ("status", "description", "duration_s", "changed_at")),
}


async def _apply_dnc_versions(db: Any, chunk: ChunkWrite, now: float) -> None:
    """Stage a snapshot's numbers, switch a list to a version read whole, keep blocked leads.

    The switch is one statement pair inside the chunk's transaction: the numbers new to
    the list join it unchecked (their leads are matched next, as in append mode), those
    the version left out leave it. Until then the version in force is untouched, so a
    crash while a file is read keeps it, and the stage resumes with the file's cursor.
    """
    if chunk.dnc_restage is not None:
        await db.execute("DELETE FROM dnc_staging WHERE list = ?", (chunk.dnc_restage,))
    if chunk.dnc_staged:
        await db.executemany(
            "INSERT INTO dnc_staging (list, number, origin) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            [(name, number, chunk.origin) for name, number in chunk.dnc_staged],
        )
    v = chunk.dnc_version
    if v is not None:
        added = removed = 0
        if v.mode == "snapshot":
            cur = await db.execute(
                "INSERT INTO dnc_numbers (list, number, origin, added_at)"
                " SELECT s.list, s.number, s.origin, ? FROM dnc_staging s WHERE s.list = ?"
                " AND NOT EXISTS (SELECT 1 FROM dnc_numbers d"
                " WHERE d.list = s.list AND d.number = s.number)",
                (now, v.list),
            )
            added = cur.rowcount or 0
            cur = await db.execute(
                "DELETE FROM dnc_numbers WHERE list = ? AND NOT EXISTS (SELECT 1 FROM"
                " dnc_staging s WHERE s.list = dnc_numbers.list AND s.number = dnc_numbers.number)",
                (v.list,),
            )
            removed = cur.rowcount or 0
            await db.execute("DELETE FROM dnc_staging WHERE list = ?", (v.list,))
        rows = list(await db.execute_fetchall(
            "SELECT (SELECT COUNT(*) FROM dnc_numbers WHERE list = ?),"
            " (SELECT COALESCE(MAX(version), 0) FROM dnc_versions WHERE list = ?),"
            " (SELECT numbers FROM dnc_versions WHERE list = ? ORDER BY version DESC LIMIT 1)",
            (v.list, v.list, v.list),
        ))  # fmt: skip
        numbers, last, before = int(rows[0][0]), int(rows[0][1]), rows[0][2]
        if v.mode != "snapshot":
            added = max(numbers - int(before or 0), 0)
        await db.execute(
            "INSERT INTO dnc_versions (list, version, file, mode, rows, numbers, added, removed,"
            " loaded_at, file_date, sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (v.list, last + 1, _storable(v.file), v.mode, v.rows, numbers, added, removed, now,
             v.file_date or now, v.sha256),
        )  # fmt: skip
    if chunk.dnc_blocked:
        await db.executemany(
            "INSERT INTO dnc_blocked (sink, key, list, hash, raw_hash, lead_json, blocked_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sink, key) DO UPDATE SET"
            " list = excluded.list, hash = excluded.hash, raw_hash = excluded.raw_hash,"
            " lead_json = excluded.lead_json, blocked_at = excluded.blocked_at",
            [(b.sink, b.key, b.list, b.hash, b.raw_hash, b.lead_json, now)
             for b in chunk.dnc_blocked],
        )  # fmt: skip
    # Every mapped row of a route using lists says "not blocked now": one probe spares an
    # initial load of a million leads as many deletes while no lead is kept back.
    if chunk.dnc_unblocked and list(await db.execute_fetchall("SELECT 1 FROM dnc_blocked LIMIT 1")):
        await db.executemany(
            "DELETE FROM dnc_blocked WHERE sink = ? AND key = ?", chunk.dnc_unblocked
        )


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value else None


class SqliteStore:
    """The embedded store. One connection; an asyncio lock makes each transaction atomic.

    aiosqlite runs statements on one thread in order, but two coroutines awaiting
    between statements would interleave inside one transaction: the lock prevents that.
    """

    lease_s: float | None = None  # one process: a claim's lease is the push's own
    QUERIES = "sqlite"  # the folder of its named statements (syncd/state/queries)

    def __init__(self, path: str | os.PathLike[str], clock: Clock = SYSTEM_CLOCK) -> None:
        self.path = str(path)
        self.clock = clock  # what stored times are taken from (retention prunes by them)
        self._db: StoreConnection | None = None
        self._lock = asyncio.Lock()
        # The claims whose pushes are still running (see settle), by token, with their
        # sink: the only leases a shared store's heartbeat renews.
        self._live_claims: dict[str, str] = {}
        self._pairs = _PAIRS  # (key, raw hash) pairs per lookup query; see open
        self._keys = _CHUNK  # keys per look-up query by key (see _in_list)

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        path = Path(self.path)
        try:
            await asyncio.to_thread(_create_private, path)
            self._db = await connect(path)
            await self._incremental_vacuum()  # before WAL: a new file takes it only first
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA synchronous=NORMAL")
            await self._db.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
            await self._db.execute("PRAGMA foreign_keys=ON")
            await self._migrate()
            self._pairs = pairs_per_query(_variable_limit())
        except (OSError, aiosqlite.Error) as exc:
            await self.close()
            raise StoreError(f"cannot open state store {self.path}: {exc}") from exc
        except BaseException:
            # aiosqlite's worker thread is not a daemon: an unclosed connection would
            # keep the process from exiting.
            await self.close()
            raise

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    @property
    def db(self) -> StoreConnection:
        if self._db is None:
            raise StoreError("state store is not open")
        return self._db

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            db = self.db
            try:
                try:
                    await db.execute("BEGIN IMMEDIATE")
                except asyncio.CancelledError:
                    # SQLite's thread begins the transaction anyway once the lock frees:
                    # end it before the lock is given back, or every later write fails
                    # ("cannot start a transaction within a transaction").
                    await asyncio.shield(self._end_begun())
                    raise
                try:
                    yield db
                except BaseException:
                    if db.in_transaction:  # SQLite already rolled back after SQLITE_FULL
                        await db.execute("ROLLBACK")
                    raise
                else:
                    await db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                raise self._explain(exc) from exc

    async def _fetch_all(self, sql: str, params: Sequence[Any]) -> Any:
        """Run one statement on its own (the caller holds the lock); return its rows."""
        try:
            return await self.db.execute_fetchall(sql, params)
        except sqlite3.OperationalError as exc:
            raise self._explain(exc) from exc

    async def _end_begun(self) -> None:
        """Roll back a BEGIN whose caller was cancelled (queued after it: it runs after)."""
        with contextlib.suppress(sqlite3.OperationalError):  # it had failed: nothing begun
            await self.db.execute("ROLLBACK")

    def _explain(self, exc: sqlite3.OperationalError) -> StoreError:
        """Return the StoreError saying what went wrong with the store, and what to do."""
        text = str(exc)
        if "full" in text:
            return StoreError(
                f"the disk holding the state store {self.path} is full ({text}); free space "
                "there: nothing was written, nothing is lost, syncd carries on once it can write"
            )
        if "readonly" in text or "read-only" in text:
            return StoreError(f"the state store {self.path} is read-only ({text})")
        return StoreError(f"the state store {self.path} failed: {text}")

    async def _incremental_vacuum(self) -> None:
        """Let pruning give space back: auto_vacuum=INCREMENTAL, set once per store.

        A new store takes it before its first table; an older one is rebuilt once
        (VACUUM), which takes a while on a big store and is logged.
        """
        db = self.db
        async with db.execute("PRAGMA auto_vacuum") as cur:
            row = await cur.fetchone()
        if row is not None and int(row[0]) == 2:
            return
        await db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        async with db.execute("SELECT COUNT(*) FROM sqlite_master") as cur:
            row = await cur.fetchone()
        if row is not None and int(row[0]):
            log.info("state.vacuum", path=self.path, why="once, so that pruning frees space")
            try:
                await db.execute("VACUUM")
            except sqlite3.OperationalError as exc:  # another syncd is writing: next open
                log.info("state.vacuum.later", path=self.path, reason=str(exc))

    async def _migrate(self) -> None:
        """Apply the steps the store lacks; refuse a store migrated past this syncd.

        One process holds a SQLite store (the run lock), so no lock beyond each step's
        transaction is needed.
        """
        db = self.db
        await db.execute(MIGRATIONS_TABLE)
        version = await self._user_version()
        problem = migrations.too_old(self.path, len(MIGRATIONS), await self._schema_at(version))
        if problem:
            raise StoreError(problem)
        await self._record_unrecorded(version)
        for step in MIGRATIONS[version:]:
            # name and sha256 are checked by the loader (NNNN_name.sql, hex): inlined safely
            await db.executescript(
                f"BEGIN IMMEDIATE;\n{step.sql}\n"
                f"INSERT INTO migrations (number, name, sha256, applied_at) VALUES"
                f" ({step.number}, '{step.name}', '{step.sha256}', {self.clock.time()!r});\n"
                f"PRAGMA user_version={step.number};\nCOMMIT;"
            )
            log.info("state.migrated", store=self.path, migration=step.name)
        for warning in (await self.schema_state()).edited:
            log.warning("state.migration.edited", store=self.path, warning=warning)

    async def _user_version(self) -> int:
        async with self.db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _schema_at(self, version: int) -> int:
        """Return the store's schema: its version, or a recorded step past it."""
        async with self.db.execute("SELECT MAX(number) FROM migrations") as cur:
            row = await cur.fetchone()
        return max(version, int(row[0]) if row and row[0] is not None else 0)

    async def _record_unrecorded(self, version: int) -> None:
        """Record the steps a store took before syncd recorded them: no checksum known."""
        async with self._tx() as db:
            await db.executemany(
                "INSERT INTO migrations (number, name) VALUES (?, ?) ON CONFLICT DO NOTHING",
                [(m.number, m.name) for m in MIGRATIONS[:version]],
            )

    async def schema_state(self) -> SchemaState:
        async with self._lock:
            rows = await self.db.execute_fetchall(
                "SELECT number, name, sha256 FROM migrations ORDER BY number"
            )
            version = await self._user_version()
        applied = [migrations.Applied(int(n), str(name), sha) for n, name, sha in rows]
        return SchemaState(
            at=max([version, *(a.number for a in applied)]),
            knows=len(MIGRATIONS),
            edited=migrations.edited("sqlite", applied),
        )

    async def prune(self, keep_s: Mapping[str, float], batch: int = 2000) -> dict[str, int]:
        """Return the rows deleted per kind; each batch its own short transaction.

        ``keep_s`` maps ``events``, ``rejects`` and ``runs`` to how many seconds of
        each to keep, counted on the clock their times were written with; a kind left
        out is kept. The newest run is always kept (the last run, for `status`); every
        other row older than its kind's seconds goes.
        """
        done: dict[str, int] = {}
        now = self.clock.time()
        for kind, seconds in keep_s.items():
            cutoff = now - seconds
            if kind == "stats":  # a few dozen rows per sink and hour: one statement
                async with self._tx() as db:
                    cur = await db.execute("DELETE FROM stats WHERE at < ?", (cutoff,))
                    done[kind] = cur.rowcount
                continue
            if kind == "rejects":  # what is remembered of refused rows goes with them
                await self._prune_refused(cutoff, batch)
            table, column, key = _PRUNABLE[kind]
            newest = (
                f" AND {key} != (SELECT {key} FROM {table} ORDER BY {column} DESC LIMIT 1)"
                if kind in _KEEP_NEWEST
                else ""
            )
            total = 0
            while True:
                async with self._tx() as db:
                    cur = await db.execute(
                        f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table}"
                        f" WHERE {column} < ?{newest} ORDER BY {key} LIMIT ?)",
                        (cutoff, batch),
                    )
                    deleted = cur.rowcount
                total += deleted
                if deleted < batch:
                    break
                await asyncio.sleep(0)  # let pushes and pulls in between batches
            done[kind] = total
        # Also when nothing was pruned: pages freed by other deletes (a list's stage, a
        # lead withdrawn) are given back too, and a pass with no free page costs a query.
        await self._reclaim_space()
        return done

    async def _prune_refused(self, cutoff: float, batch: int) -> None:
        """Forget refusals older than the rejects kept: such a row is only mapped again."""
        while True:
            async with self._tx() as db:
                cur = await db.execute(
                    "DELETE FROM refused WHERE (sink, key) IN (SELECT sink, key FROM refused"
                    " WHERE refused_at < ? LIMIT ?)",
                    (cutoff, batch),
                )
                deleted = cur.rowcount
            if deleted < batch:
                return
            await asyncio.sleep(0)

    async def _pages(self) -> tuple[int, int]:
        """Return the store's (page_count, freelist_count)."""
        counts = []
        for pragma in ("page_count", "freelist_count"):
            async with self.db.execute(f"PRAGMA {pragma}") as cur:
                row = await cur.fetchone()
            counts.append(int(row[0]) if row else 0)
        return counts[0], counts[1]

    async def _reclaim_space(self) -> None:
        """Give the free pages back to the file system.

        ``PRAGMA incremental_vacuum`` frees one page per step of its statement, and the
        sqlite3 module steps a statement that returns no columns only once: through
        ``execute`` it freed one page per prune while thousands stayed free. A script
        is stepped to its end. Steps of ``_VACUUM_STEP`` pages let pushes in between.
        """
        given = 0
        while True:
            async with self._lock:
                _, free = await self._pages()
                if not free:
                    break
                await self.db.executescript(f"PRAGMA incremental_vacuum({_VACUUM_STEP});")
                _, left = await self._pages()
            given += free - left
            if left >= free:  # auto_vacuum is off (the switch waits for a VACUUM): no use
                break
            await asyncio.sleep(0)
        if given:
            async with self._lock:
                # In WAL mode the file is cut at a checkpoint, and the moved pages sit in
                # the -wal file until one empties it: without this the space comes back
                # only at the next automatic checkpoint, and the -wal keeps its size.
                # It waits for readers (`syncd status`…) on older snapshots: a second at
                # most, not the usual ten, since pushes wait on this lock; a busy
                # checkpoint is harmless (the next prune's, or SQLite's own, finishes it).
                await self.db.execute("PRAGMA busy_timeout=1000")
                try:
                    await self.db.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    await self.db.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
            log.info("state.space_reclaimed", pages=given)

    async def size_bytes(self) -> int:
        def total() -> int:
            paths = [Path(self.path + suffix) for suffix in ("", "-wal", "-shm")]
            return sum(p.stat().st_size for p in paths if p.exists())

        return await asyncio.to_thread(total)

    async def integrity_ok(self) -> bool:
        async with self.db.execute("PRAGMA integrity_check") as cur:
            row = await cur.fetchone()
        return bool(row and row[0] == "ok")

    # -- replicas: one host, one process (the store lock), so it leads everything --

    async def lead(self, job: str, ttl_s: float) -> bool:
        return True

    async def resign(self) -> None:
        return None

    async def heartbeat(self) -> None:
        return None

    async def replicas(self, within_s: float = 60.0) -> list[dict[str, Any]]:
        return []

    async def listen(self, woken: Callable[[str], None]) -> None:
        return None  # nobody else writes this store

    # -- cursors -----------------------------------------------------------

    async def get_cursor(self, source: str) -> str | None:
        async with (
            self._lock,
            self.db.execute("SELECT value FROM cursors WHERE source = ?", (source,)) as cur,
        ):
            row = await cur.fetchone()
        return str(row[0]) if row else None

    async def set_cursor(self, source: str, value: str | None) -> None:
        async with self._tx() as db:
            await _write_cursor(db, source, value)

    # -- reconcile ---------------------------------------------------------

    def _in_list(self, column: str, items: Sequence[str]) -> tuple[str, list[Any]]:
        """Return the condition ``column`` is one of ``items``, and its parameters: here
        ``IN (?, …)``, a parameter each (at most ``self._keys`` items a statement)."""
        return f"{column} IN ({','.join('?' * len(items))})", list(items)

    def _numbers_table(self, numbers: Sequence[str]) -> tuple[str, list[Any]]:
        """Return the CTE ``n(phone)`` of a look-up's numbers and its parameters: here
        ``VALUES``, a parameter each (at most ``self._keys`` numbers a statement)."""
        return f"WITH n(phone) AS (VALUES {','.join('(?)' for _ in numbers)})", list(numbers)

    def _pairs_table(self, pairs: Sequence[tuple[str, str]]) -> tuple[str, list[Any]]:
        """Return the CTE ``c(key, raw)`` of a look-up's (key, raw hash) pairs and its
        parameters: here ``VALUES``, two parameters a pair (see ``self._pairs``)."""
        values = ",".join("(?, ?)" for _ in pairs)
        return f"WITH c(key, raw) AS (VALUES {values}) ", list(chain.from_iterable(pairs))

    async def _by_keys(self, select: str, sink: str, keys: Sequence[str]) -> list[Any]:
        """Return the rows of ``select`` + `` WHERE sink = ? AND key IN (…)`` for ``keys``."""
        out: list[Any] = []
        async with self._lock:
            for part in in_parts(list(keys), self._keys):
                among, params = self._in_list("key", part)
                # One hop to the database thread per part, not one per few rows.
                out += await self.db.execute_fetchall(
                    f"{select} WHERE sink = ? AND {among}", (sink, *params)
                )
        return out

    async def lookup(self, sink: str, keys: Sequence[str]) -> dict[str, StoredLead]:
        rows = await self._by_keys(
            "SELECT l.key, l.hash, l.raw_hash, l.state, l.origin, l.line, l.run_id, l.klass,"
            f" l.delivered_hash IS NOT NULL, NULL, {_DOUBT_COLUMNS} FROM leads l",
            sink,
            keys,
        )
        return {row[0]: StoredLead(*row[1:]) for row in rows}

    async def lookup_changed(
        self, sink: str, rows: Sequence[tuple[str, str]], origin: str
    ) -> dict[str, StoredLead | None]:
        found: dict[str, StoredLead | None] = {}
        differing: list[str] = []
        async with self._lock:
            # In key order: the index's neighbouring entries are read together, each page
            # once, whatever order the export has (by date, e-mail keys, UUIDs).
            ordered = sorted(rows)
            for start in range(0, len(ordered), self._pairs):
                pairs, params = self._pairs_table(ordered[start : start + self._pairs])
                # The comparison runs inside the database, over the raw-hash index alone:
                # a re-sync of a million mostly unchanged rows brings back only the few
                # that differ; their stored leads are read next.
                result = await self.db.execute_fetchall(
                    f"{pairs}SELECT c.key, l.key IS NULL FROM c"
                    " LEFT JOIN leads l INDEXED BY leads_raw ON l.sink = ? AND l.key = c.key"
                    " WHERE l.key IS NULL OR l.raw_hash IS NOT c.raw OR l.origin = ?",
                    (*params, sink, origin),
                )
                for key, new in result:
                    if new:
                        found[key] = None
                    else:
                        differing.append(key)
            for part in in_parts(differing, self._keys):
                among, params = self._in_list("l.key", part)
                stored = await self.db.execute_fetchall(
                    f"SELECT l.key, {STORED_LEAD} FROM leads l WHERE l.sink = ? AND {among}",
                    (sink, *params),
                )
                for row in stored:
                    found[row[0]] = StoredLead(*row[1:])
        for key in differing:  # gone since the comparison (another replica's pruning)
            found.setdefault(key, None)
        return found

    async def refusals(self, sink: str, keys: Sequence[str]) -> dict[str, Refusal]:
        rows = await self._by_keys(
            "SELECT key, raw_hash, fingerprint, reason, facts, blocked FROM refused", sink, keys
        )
        return {
            key: Refusal(key, raw, fp, reason, facts or "", bool(blocked))
            for key, raw, fp, reason, facts, blocked in rows
        }

    async def apply_chunk(self, chunk: ChunkWrite) -> None:
        await self.apply_chunks([chunk])

    async def apply_chunks(self, chunks: Sequence[ChunkWrite]) -> None:
        """Commit several chunks in one transaction (a webhook's concurrent POSTs: one
        commit for all). Their keys must not overlap: each was planned without the others."""
        now = self.clock.time()
        counted: dict[tuple[str, str], int] = {}
        for chunk in chunks:
            for name, metric, n in chunk.stats:
                counted[name, metric] = counted.get((name, metric), 0) + n
        at = stats_hour(now)
        async with self._tx() as db:
            await self._fence(db, {c.lead for c in chunks if c.lead})
            for chunk in chunks:
                await self._write_chunk(db, chunk, now)
            # Last, as a push's: on a shared store the first write locks the hour's rows
            await db.executemany(
                _ADD_STAT, [(name, at, metric, 0, n) for (name, metric), n in counted.items()]
            )
            await self._announce(db, chunks)

    async def _fence(self, db: Any, jobs: set[str]) -> None:
        """Raise LeadLost when this process no longer leads one of ``jobs`` (inside the
        write's transaction): one process alone leads every job of this store."""
        return None

    async def _announce(self, db: Any, chunks: Sequence[ChunkWrite]) -> None:
        """Tell other processes sharing the store, with the commit, which outboxes got
        leads: nobody shares this one (each chunk's commit wakes this process's pushes)."""
        return None

    async def _write_chunk(self, db: Any, chunk: ChunkWrite, now: float) -> None:
        """Write one chunk: leads, rejects, refusals, lists, events, cursor (in a transaction)."""
        read_at = now if chunk.received_at is None else min(now, chunk.received_at)
        for sink, writes in chunk.leads.items():
            enqueue = [w for w in writes if w.enqueue]
            refresh = [w for w in writes if not w.enqueue]
            await db.executemany(
                """
                INSERT INTO leads (sink, key, hash, raw_hash, lead_json, action, state,
                    attempts, next_at, origin, line, run_id, klass, created_at, updated_at,
                    source)
                VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (sink, key) DO UPDATE SET
                    hash = excluded.hash, raw_hash = excluded.raw_hash,
                    lead_json = excluded.lead_json, action = excluded.action,
                    -- a claimed lead stays with its worker; completion re-queues it
                    state = CASE WHEN leads.state = 'inflight' THEN 'inflight'
                                 ELSE excluded.state END,
                    attempts = 0, next_at = 0, last_error = NULL,
                    -- the close of the version the dialer holds; none held: none
                    dial_until = CASE WHEN leads.delivered_hash IS NULL THEN NULL
                                      ELSE leads.dial_until END,
                    origin = excluded.origin, line = excluded.line,
                    run_id = excluded.run_id, klass = excluded.klass,
                    updated_at = excluded.updated_at, source = excluded.source
                """,
                [
                    (
                        sink,
                        w.key,
                        w.hash,
                        w.raw_hash,
                        w.lead_json,
                        w.action.value,
                        w.state,
                        chunk.origin,
                        w.line,
                        chunk.run_id,
                        w.klass,
                        now,
                        read_at,
                        chunk.source,
                    )
                    for w in enqueue
                ],
            )
            await db.executemany(
                "UPDATE leads SET raw_hash = ?, origin = ?, line = ?, run_id = ?, klass = ?"
                " WHERE sink = ? AND key = ?",
                [
                    (w.raw_hash, chunk.origin, w.line, chunk.run_id, w.klass, sink, w.key)
                    for w in refresh
                ],
            )
            # The same content at a newer version time: the time alone is set, the rest of
            # the stored JSON kept (it may carry a mark, as a window's withdrawal does).
            await db.executemany(
                "UPDATE leads SET lead_json = json_set(lead_json, '$.version_at', ?)"
                " WHERE sink = ? AND key = ?",
                [(w.version_at, sink, w.key) for w in refresh if w.version_at is not None],
            )
        await db.executemany(
            "INSERT INTO rejects (run_id, source, sink, origin, line, key, reason, row_json,"
            " created_at, facts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    chunk.run_id,
                    chunk.source,
                    sink,
                    _storable(r.origin or chunk.origin),
                    r.line,
                    _storable(r.key),
                    _storable(r.reason),
                    _storable(json.dumps(r.row, ensure_ascii=False)),
                    now,
                    r.facts or None,
                )
                for sink, r in chunk.rejects
            ],
        )
        await db.executemany(
            "INSERT INTO refused (sink, key, raw_hash, fingerprint, blocked, reason, facts,"
            " refused_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sink, key) DO UPDATE"
            " SET raw_hash = excluded.raw_hash, fingerprint = excluded.fingerprint,"
            " blocked = excluded.blocked, reason = excluded.reason, facts = excluded.facts,"
            " refused_at = excluded.refused_at",
            [
                (sink, r.key, r.raw_hash, r.fingerprint, int(r.blocked),
                 _storable(r.reason), r.facts or None, now)
                for sink, r in chunk.refused
            ],
        )  # fmt: skip
        if chunk.dnc:
            await db.executemany(
                "INSERT INTO dnc_numbers (list, number, origin, added_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(name, number, _storable(chunk.origin), now) for name, number in chunk.dnc],
            )
        await _apply_dnc_versions(db, chunk, now)
        if chunk.dnc_checked is not None:
            # The withdrawals of these numbers commit with this mark, or neither does.
            await db.execute(
                "UPDATE dnc_numbers SET checked = 1 WHERE list = ? AND checked = 0",
                (chunk.dnc_checked,),
            )
        await db.executemany(
            "INSERT INTO events (at, sink, key, kind, detail, facts) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (now, sink, key, kind, _storable(detail), facts or None)
                for sink, key, kind, detail, facts in chunk.events
            ],
        )
        if chunk.cursor is not None:
            await _write_cursor(db, chunk.source, chunk.cursor)

    async def rejects_for_origin(
        self, source: str, origin: str
    ) -> list[tuple[int | None, str, str, str]]:
        async with (
            self._lock,
            self.db.execute(
                "SELECT line, sink, reason, row_json FROM rejects WHERE source = ? AND origin = ?"
                " ORDER BY line, id",
                (source, origin),
            ) as cur,
        ):
            return [(r[0], r[1], r[2], r[3]) async for r in cur]

    # -- push --------------------------------------------------------------

    async def release_inflight(self, sink: str | None = None) -> int:
        """Return claimed leads to the outbox (after a crash, or on shutdown).

        Their attempt stays spent: a push cut off or killed may have sent its request,
        so a lead never delivered stays in doubt (the dialer may hold it)."""
        async with self._tx() as db:
            # `state IN (…)` is leads_queued's predicate: SQLite reads that index only where
            # the statement names it (else every lead, 150 ms on 200,000, at each run's
            # start and end).
            cur = await db.execute(
                f"UPDATE leads SET state = 'pending', lease_until = NULL, {RELEASED_DOUBT}"
                " WHERE state IN ('pending', 'inflight') AND state = 'inflight'"
                " AND (CAST(? AS TEXT) IS NULL OR sink = ?)",
                (sink, sink),
            )
            return cur.rowcount

    async def claim(self, sink: str, limit: int, lease_s: float) -> list[QueuedLead]:
        now = self.clock.time()
        token = new_claim_token()
        async with self._lock:
            # One hop: the rows come back with the UPDATE, one statement, atomic on its
            # own (no BEGIN and COMMIT, two hops more). The leads due first, then in
            # the order they were queued (their row ids, which the outbox's index holds):
            # a batch's rows lie together in the table whatever order the keys have.
            rows = await self._fetch_all(
                """
                UPDATE leads SET state = 'inflight', lease_until = ?, attempts = attempts + 1,
                    claim_token = ?
                WHERE rowid IN (
                    SELECT rowid FROM leads WHERE sink = ? AND state = 'pending' AND next_at <= ?
                    ORDER BY next_at, rowid LIMIT ?)
                RETURNING key, hash, action, lead_json, attempts, vendor_ref, delivered_hash,
                    source, updated_at, doubt_number
                """,
                (now + lease_s, token, sink, now, limit),
            )
        return self._claimed(sink, rows, token)

    def _claimed(self, sink: str, rows: Iterable[Sequence[Any]], token: str) -> list[QueuedLead]:
        """Return claimed rows as the push takes them, their claim live until settled."""
        batch = queued_leads(sink, rows, token)
        if batch:
            self._live_claims[token] = sink
        return batch

    def settle(self, claim: str | None) -> None:
        self._live_claims.pop(claim or "", None)

    # What a claim still holding its leads must show besides its token: nothing here (one
    # process: nobody else claims, and a lease that ran out is not swept back).
    _LEASE_LIVE = ""

    async def still_claimed(self, sink: str, claim: str, keys: Sequence[str]) -> set[str]:
        held: set[str] = set()
        async with self._lock:
            for part in in_parts(list(keys), self._keys):
                among, params = self._in_list("key", part)
                rows = await self.db.execute_fetchall(
                    "SELECT key FROM leads WHERE sink = ? AND claim_token = ?"
                    f" AND state = 'inflight'{self._LEASE_LIVE} AND {among}",
                    (sink, claim, *params),
                )
                held.update(str(r[0]) for r in rows)
        return held

    async def complete(self, sink: str, completions: Sequence[Completion]) -> list[str]:
        now = self.clock.time()
        keys = [c.key for c in completions]
        per_query = self._keys

        def write(conn: sqlite3.Connection) -> tuple[list[str], list[Statement]]:
            # On SQLite's thread, in the transaction: the whole completion is one hop.
            stored: dict[str, tuple[str | None, float, bool]] = {}
            for part in in_parts(keys, per_query):
                marks = ",".join("?" * len(part))
                rows = conn.execute(f"{AS_STORED} AND key IN ({marks})", (sink, *part))
                stored.update(as_stored(rows))
            stale, kept = split_stale(completions, stored)
            return stale, result_statements(sink, kept, now, stored)

        async with self._lock:
            try:
                return await self.db.transact(write)
            except sqlite3.OperationalError as exc:
                raise self._explain(exc) from exc

    async def next_due(self, sink: str) -> float | None:
        """Return when the earliest pending lead of ``sink`` may be pushed, None if none."""
        async with (
            self._lock,
            self.db.execute(
                "SELECT MIN(next_at) FROM leads WHERE sink = ? AND state = 'pending'", (sink,)
            ) as cur,
        ):
            row = await cur.fetchone()
        return float(row[0]) if row and row[0] is not None else None

    async def pending_count(self, sink: str | None = None) -> int:
        async with (
            self._lock,
            self.db.execute(
                "SELECT COUNT(*) FROM leads WHERE state IN ('pending', 'inflight')"
                " AND (CAST(? AS TEXT) IS NULL OR sink = ?)",
                (sink, sink),
            ) as cur,
        ):
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def feed_counts(
        self, sink: str, *, reached_since: float, delivered_since: float, now: float
    ) -> FeedCounts:
        """Return what the sink's dialer has reached and still holds (``core.feed``).

        ``reached``: outcomes observed since ``reached_since``; ``queued``: leads the
        dialer holds (delivered since ``delivered_since``, an update of one waiting in
        the outbox included) with no outcome at all, their ``call_at`` (a callback) not
        in the future; ``others_due``: updates and removals due now,
        which the feed does not hold back.
        """
        upcoming = datetime.fromtimestamp(now, UTC).isoformat()  # Lead.call_at's own form
        reached_sql = "SELECT COUNT(*) FROM outcomes WHERE sink = ? AND observed_at >= ?"
        queued_sql = """
            SELECT COUNT(*) FROM leads l
            WHERE l.sink = ? AND l.action = 'upsert' AND l.delivered_hash IS NOT NULL
              AND l.state != 'removed' AND l.delivered_at >= ?
              AND (json_extract(l.lead_json, '$.call_at') IS NULL
                   OR json_extract(l.lead_json, '$.call_at') <= ?)
              AND NOT EXISTS (SELECT 1 FROM outcomes o WHERE o.sink = l.sink AND o.key = l.key)
        """
        others_sql = (
            "SELECT COUNT(*) FROM leads WHERE sink = ? AND state = 'pending' AND next_at <= ?"
            " AND (action = 'delete' OR delivered_hash IS NOT NULL)"
        )
        async with self._lock:
            found = []
            for sql, params in (
                (reached_sql, (sink, reached_since)),
                (queued_sql, (sink, delivered_since, upcoming)),
                (others_sql, (sink, now)),
            ):
                async with self.db.execute(sql, params) as cur:
                    row = await cur.fetchone()
                found.append(int(row[0]) if row else 0)
        return FeedCounts(reached=found[0], queued=found[1], others_due=found[2])

    async def requeue(
        self,
        sink: str,
        keys: Sequence[str],
        next_at: float,
        reason: str,
        *,
        claim: str | None = None,
    ) -> None:
        """Return claimed leads untouched: the sink, not the lead, was at fault."""
        async with self._tx() as db:
            await db.executemany(
                "UPDATE leads SET state = 'pending', next_at = ?, last_error = ?,"
                f" attempts = {_GIVE_BACK}, lease_until = NULL, claim_token = NULL"
                f" WHERE sink = ? AND key = ? AND state = 'inflight' AND {_FENCE}",
                [(next_at, reason, sink, k, claim, claim) for k in keys],
            )

    async def hold(
        self,
        sink: str,
        holds: Sequence[tuple[str, float, str]],
        facts: Mapping[str, str] | None = None,
        *,
        claim: str | None = None,
    ) -> None:
        facts = facts or {}
        async with self._tx() as db:
            await db.executemany(
                "UPDATE leads SET state = 'held', next_at = ?, last_error = ?,"
                f" attempts = {_GIVE_BACK}, lease_until = NULL, claim_token = NULL"
                f" WHERE sink = ? AND key = ? AND state = 'inflight' AND {_FENCE}",
                [(until, reason, sink, key, claim, claim) for key, until, reason in holds],
            )
            now = self.clock.time()
            await db.executemany(
                "INSERT INTO events (at, sink, key, kind, detail, facts) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (now, sink, key, "gate.held", _storable(reason), facts.get(key) or None)
                    for key, _, reason in holds
                ],
            )

    async def number_holders(
        self,
        sink: str,
        numbers: Sequence[str],
        *,
        alternates: bool = False,
        besides: Collection[str] = (),
    ) -> list[Holder]:
        """Return the sink's live leads (queued or held by the dialer) holding ``numbers``.

        By main number through the phone index; with ``alternates``, alternate numbers
        too (a scan of the sink's leads, narrowed by a substring test, then checked).
        """
        wanted = list(dict.fromkeys(n for n in numbers if n))
        found: dict[str, Holder] = {}
        live = (
            f"SELECT l.key, l.state, l.delivered_hash IS NOT NULL, {_NUMBERS_OF}"
            " FROM leads l WHERE l.sink = ? AND l.action = 'upsert'"
            " AND l.state IN ('pending', 'inflight', 'held', 'delivered') AND "
        )
        async with self._lock:
            for part in in_parts(wanted, self._keys):
                main, params = self.number_holders_query(part)
                for row in await self.db.execute_fetchall(main, [*params, sink]):
                    if row[0] not in besides:  # a batch's own leads, each read once a push
                        found[row[0]] = _holder(*row)
                # an OR of a substring test per number: at most _CHUNK numbers a statement
                for few in in_parts(part, _CHUNK) if alternates else ():
                    where = "(" + " OR ".join("instr(l.lead_json, ?) > 0" for _ in few) + ")"
                    for row in await self.db.execute_fetchall(live + where, [sink, *few]):
                        if row[0] in besides:
                            continue
                        holder = _holder(*row)
                        if set(few).intersection(holder.alt_phones):
                            found[row[0]] = holder
        return list(found.values())

    # Named: with the sink a bound parameter, SQLite took the outbox's index (every lead
    # of the sink) over it once the leads had row ids (migration 18), 200 ms a batch on
    # 200,000 leads. PostgreSQL's store names none (its planner has statistics).
    _PHONE_INDEX = " INDEXED BY leads_phone"

    def number_holders_query(self, numbers: Sequence[str]) -> tuple[str, list[Any]]:
        """Return the statement of the live leads whose main number is one of ``numbers``
        and its parameters, but for the sink's, which comes last.

        The numbers are a table the leads are joined to: each is looked up in the phone
        index. As `json_extract(…) IN (10 or more numbers)` SQLite scanned every lead of
        the sink instead, parsing its JSON, on every push batch: the push slowed with the
        outbox (107 s for 200,000 leads)."""
        numbers_table, params = self._numbers_table(numbers)
        return (
            f"{numbers_table}"
            f" SELECT l.key, l.state, l.delivered_hash IS NOT NULL, {_NUMBERS_OF}"
            f" FROM n JOIN leads l{self._PHONE_INDEX}"
            " ON json_extract(l.lead_json, '$.phone') = n.phone"
            " WHERE l.sink = ? AND l.action = 'upsert'"
            " AND l.state IN ('pending', 'inflight', 'held', 'delivered')"
        ), params

    # Its WHERE is the predicate of the partial index leads_removals (SQLite migration 13,
    # PostgreSQL 11). SQLite, knowing nothing of the table's spread, took the primary key
    # (every lead of the sink) over it: the index is named (PostgreSQL's store drops that).
    queued_removals_query = (
        "SELECT key, hash, action, lead_json, attempts, vendor_ref, delivered_hash"
        " FROM leads INDEXED BY leads_removals"
        " WHERE sink = ? AND action = 'delete' AND delivered_hash IS NOT NULL"
        " AND state IN ('pending', 'inflight', 'held') LIMIT ?"
    )

    async def queued_removals(self, sink: str, limit: int = 10_000) -> list[QueuedLead]:
        """Return the sink's removals of leads the dialer holds that have not landed yet."""
        # One hop to SQLite's thread (execute, fetch and close were three): a push asks
        # this on every batch, and each hop waits its turn on the event loop.
        async with self._lock:
            rows = await self.db.execute_fetchall(self.queued_removals_query, (sink, limit))
        return queued_leads(sink, rows)

    async def set_aside(
        self,
        sink: str,
        waits: Sequence[tuple[str, float, str, str]],
        facts: Mapping[str, str] | None = None,
        *,
        claim: str | None = None,
    ) -> None:
        """Hold claimed leads (key, until, reason, the key they wait for) behind another lead."""
        facts = facts or {}
        async with self._tx() as db:
            await db.executemany(
                "UPDATE leads SET state = 'held', next_at = ?, last_error = ?, waits_for = ?,"
                f" attempts = {_GIVE_BACK}, lease_until = NULL, claim_token = NULL"
                f" WHERE sink = ? AND key = ? AND state = 'inflight' AND {_FENCE}",
                [
                    (until, reason, other, sink, key, claim, claim)
                    for key, until, reason, other in waits
                ],
            )
            now = self.clock.time()
            await db.executemany(
                "INSERT INTO events (at, sink, key, kind, detail, facts) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (now, sink, key, "push.waits", _storable(why), facts.get(key) or None)
                    for key, _, why, _ in waits
                ],
            )

    async def release_waiting(self, sink: str, keys: Sequence[str]) -> int:
        """Put back in the outbox the leads held behind any of ``keys`` (they left)."""
        released = 0
        async with self._tx() as db:
            for part in in_parts(list(keys), self._keys):
                among, params = self._in_list("waits_for", part)
                cur = await db.execute(
                    "UPDATE leads SET state = 'pending', next_at = 0, waits_for = NULL"
                    f" WHERE sink = ? AND state = 'held' AND {among}",
                    [sink, *params],
                )
                released += cur.rowcount or 0
        return released

    async def failing_withdrawals(self, min_attempts: int, limit: int = 20) -> list[dict[str, Any]]:
        """Return removals still queued after ``min_attempts`` tries, or that the dialer
        refused (``refused``: an alert from the first refusal), most tried first."""
        query = (
            "SELECT sink, key, attempts, last_error FROM leads WHERE action = 'delete'"
            " AND state IN ('pending', 'inflight') AND (attempts >= ? OR last_error LIKE ?)"
            " ORDER BY attempts DESC, sink, key LIMIT ?"
        )
        refused = f"{WITHDRAWAL_REFUSED}%"
        async with self._lock, self.db.execute(query, (min_attempts, refused, limit)) as cur:
            return [
                {
                    "sink": sink,
                    "key": key,
                    "attempts": int(n),
                    "reason": why,
                    "refused": str(why or "").startswith(WITHDRAWAL_REFUSED),
                }
                async for sink, key, n, why in cur
            ]

    async def waiting(self, limit: int = 20) -> list[dict[str, Any]]:
        """Return leads held behind another lead of their number (set aside, removals)."""
        query = (
            "SELECT sink, key, action, waits_for, last_error FROM leads"
            " WHERE state = 'held' AND waits_for IS NOT NULL ORDER BY sink, key LIMIT ?"
        )
        async with self._lock, self.db.execute(query, (limit,)) as cur:
            return [
                {"sink": sink, "key": key, "action": action, "waits_for": other, "reason": why}
                async for sink, key, action, other, why in cur
            ]

    async def window_closed(self, sink: str, now: float, limit: int = 500) -> list[WindowLead]:
        """Return the leads of ``sink`` the window's close concerns, earliest close first.

        ``closed``: the dialer holds a version (``delivered_hash``) whose opening closed
        (a newer one may wait in the outbox); ``withdrawn``: its window withdrawal
        landed; ``returning``: held for its return, due, and dialled meanwhile.
        """
        query = f"""
            SELECT key, CASE WHEN state = 'removed' THEN '{WITHDRAWN}'
                             WHEN delivered_hash IS NULL THEN '{RETURNING}'
                             ELSE '{CLOSED}' END,
                   lead_json, {_DIALLED}
            FROM leads l WHERE sink = ? AND dial_until IS NOT NULL AND (
                (action = 'upsert' AND delivered_hash IS NOT NULL AND dial_until <= ?
                 AND state IN ('delivered', 'pending', 'held') AND waits_for IS NULL)
                OR (state = 'removed' AND {WINDOW_WITHDRAWAL})
                OR (state = 'held' AND action = 'upsert' AND delivered_hash IS NULL
                    AND next_at <= ? AND {_DIALLED}))
            ORDER BY dial_until, key LIMIT ?
        """
        async with self._lock, self.db.execute(query, (sink, now, now, limit)) as cur:
            return [WindowLead(k, stage, text, bool(d)) async for k, stage, text, d in cur]

    async def move_window(self, sink: str, moves: WindowMoves) -> int:
        now = self.clock.time()
        events: list[tuple[float, str, str, str, str | None, str | None]] = []
        queued = 0  # leads that entered the outbox (pending or held), less those that left
        withdrawn: set[str] = set()  # the keys whose withdrawal this pass queued
        withdraw = (
            "UPDATE leads SET action = 'delete', lead_json = ?, state = 'pending',"
            " next_at = 0, attempts = 0, last_error = ?, lease_until = NULL"
            " WHERE sink = ? AND key = ? AND action = 'upsert' AND dial_until IS NOT NULL"
            " AND delivered_hash IS NOT NULL AND waits_for IS NULL AND state "
        )
        async with self._tx() as db:
            for key, text, why, facts in moves.withdraw:
                # Delivered, it joins the outbox; a newer version waiting there (the
                # dialer still holds the old one) becomes the withdrawal, then returns
                # (a window withdrawal; one for consent that ran out never does).
                reason = _storable(why)
                cur = await db.execute(withdraw + "= 'delivered'", (text, reason, sink, key))
                joined = cur.rowcount or 0
                if not joined:
                    cur = await db.execute(
                        withdraw + "IN ('pending', 'held')", (text, reason, sink, key)
                    )
                queued += joined
                if joined or cur.rowcount:
                    events.append((now, sink, key, "gate.withdrawn", reason, facts or None))
                    withdrawn.add(key)
            for key, text, until, reason, facts in moves.back:
                cur = await db.execute(
                    "UPDATE leads SET action = 'upsert', lead_json = ?, state = 'held',"
                    " next_at = ?, attempts = 0, last_error = ?, delivered_hash = NULL"
                    f" WHERE sink = ? AND key = ? AND state = 'removed' AND {WINDOW_WITHDRAWAL}",
                    (text, until, _storable(reason), sink, key),
                )
                if cur.rowcount:
                    queued += 1
                    events.append((now, sink, key, "gate.held", _storable(reason), facts or None))
            for key, reason, facts in moves.done:
                # Dialled: the window is forgotten. Held for its return, it stays out of
                # the dialer (removed); the CRM's next change of it sends it again.
                cur = await db.execute(
                    "UPDATE leads SET state = 'removed', action = 'delete', last_error = ?,"
                    " dial_until = NULL WHERE sink = ? AND key = ? AND state = 'held'"
                    " AND action = 'upsert' AND delivered_hash IS NULL AND dial_until IS NOT NULL",
                    (_storable(reason), sink, key),
                )
                left = cur.rowcount or 0
                if not left:
                    cur = await db.execute(
                        "UPDATE leads SET dial_until = NULL,"
                        " last_error = CASE WHEN state = 'removed' THEN ? ELSE last_error END"
                        " WHERE sink = ? AND key = ? AND dial_until IS NOT NULL"
                        " AND state != 'inflight'",
                        (_storable(reason), sink, key),
                    )
                queued -= left
                if (left or cur.rowcount) and reason:
                    events.append(
                        (now, sink, key, "gate.not_returned", _storable(reason), facts or None)
                    )
            await db.executemany(
                "INSERT INTO events (at, sink, key, kind, detail, facts) VALUES (?, ?, ?, ?, ?, ?)",
                events,
            )
            run_id, source, origin = moves.refused_as
            await db.executemany(
                "INSERT INTO rejects (run_id, source, sink, origin, line, key, reason, row_json,"
                " created_at, facts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        run_id,
                        source,
                        sink,
                        origin,
                        None,
                        key,
                        _storable(why),
                        "[]",
                        now,
                        facts or None,
                    )
                    for key, why, facts in moves.refused
                    if key in withdrawn
                ],
            )
        return queued

    async def release_held(self, sink: str, now: float) -> int:
        async with self._tx() as db:
            cur = await db.execute(
                "UPDATE leads SET state = 'pending', next_at = 0"
                " WHERE sink = ? AND state = 'held' AND next_at <= ?",
                (sink, now),
            )
            return cur.rowcount or 0

    async def requeue_expired(
        self, sink: str, now: float, reason: str, closed_by: float | None = None
    ) -> int:
        async with self._tx() as db:
            cur = await db.execute(
                "UPDATE leads SET state = 'pending', next_at = ?, attempts = 0,"
                " dial_until = NULL, last_error = ?"
                " WHERE sink = ? AND state = 'delivered' AND action = 'upsert'"
                " AND dial_until IS NOT NULL AND dial_until <= ?"
                " AND NOT EXISTS (SELECT 1 FROM outcomes o"
                " WHERE o.sink = leads.sink AND o.key = leads.key"
                " AND (o.status IN ('connected', 'closed')"
                " OR o.last_dialed_at >= leads.delivered_at))"
                " RETURNING key",
                (now, reason, sink, now if closed_by is None else closed_by),
            )
            keys = [str(r[0]) for r in await cur.fetchall()]
            await db.executemany(
                "INSERT INTO events (at, sink, key, kind, detail) VALUES (?, ?, ?, ?, ?)",
                [(now, sink, key, "dialer.expired", reason) for key in keys],
            )
            return len(keys)

    async def release_held_for(self, sink: str, reason: str) -> int:
        async with self._tx() as db:
            cur = await db.execute(
                "UPDATE leads SET state = 'pending', next_at = 0 WHERE sink = ?"
                " AND state = 'held' AND substr(last_error, 1, ?) = ?",
                (sink, len(reason), reason),
            )
            return cur.rowcount or 0

    async def held(self, sink: str) -> tuple[int, float | None]:
        async with (
            self._lock,
            self.db.execute(
                "SELECT COUNT(*), MIN(next_at) FROM leads WHERE sink = ? AND state = 'held'",
                (sink,),
            ) as cur,
        ):
            row = await cur.fetchone()
        if not row or not row[0]:
            return 0, None
        return int(row[0]), float(row[1])

    async def retry_failed(
        self, sink: str, *, reason: str | None = None, key: str | None = None
    ) -> int:
        # Refused and failed leads; and the withdrawals waiting for a later try (past
        # max_attempts: an hour), whose number stays dialable until they land.
        async with self._tx() as db:
            cur = await db.execute(
                "UPDATE leads SET state = 'pending', attempts = 0, next_at = 0"
                " WHERE sink = ? AND (state IN ('failed', 'rejected')"
                " OR (state = 'pending' AND action = 'delete' AND next_at > 0))"
                " AND (CAST(? AS TEXT) IS NULL OR instr(last_error, ?) > 0)"
                " AND (CAST(? AS TEXT) IS NULL OR key = ?)",
                (sink, reason, reason, key, key),
            )
            return cur.rowcount

    # -- outcomes, agents, kv ------------------------------------------------

    async def recording_links(self, sink: str, keys: Sequence[str]) -> dict[str, tuple[str, str]]:
        rows = await self._by_keys("SELECT key, call_id, recording_url FROM outcomes", sink, keys)
        return {key: (str(call), str(url)) for key, call, url in rows if call and url}

    async def record_outcomes(self, outcomes: Iterable[Outcome]) -> int:
        """Store outcomes that are new or changed; return how many were.

        What the store holds is read for the whole batch at once and the writes go in
        one ``executemany``: one hop to the database per part, not three per outcome.
        """
        batch = list(outcomes)
        now = self.clock.time()
        async with self._tx() as db:
            held = await self._held_outcomes(db, batch)
            rows, events = [], []
            for o in batch:
                digest = outcome_digest(o)
                observed = o.observed_at.timestamp()
                row = held.get((o.sink, o.key))
                if row is not None and (row[2] == digest or row[1] > observed):
                    continue  # unchanged, or an older observation than the one we hold
                version = (row[0] + 1) if row else 1
                held[(o.sink, o.key)] = (version, observed, digest)  # a repeat in the batch
                rows.append(
                    (
                        o.sink, o.key, version, observed, o.status, o.raw_status,
                        o.disposition, o.attempts, _epoch(o.last_dialed_at), o.agent,
                        o.call_id, o.recording_url, json.dumps(o.raw, default=str), digest,
                    )
                )  # fmt: skip
                events.append(
                    (now, o.sink, o.key, "outcome", f"v{version} {o.status} {o.disposition}")
                )
            await db.executemany(
                """
                INSERT INTO outcomes (sink, key, version, observed_at, status, raw_status,
                    disposition, attempts, last_dialed_at, agent, call_id, recording_url,
                    raw_json, content_hash)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (sink, key) DO UPDATE SET version = excluded.version,
                    observed_at = excluded.observed_at, status = excluded.status,
                    raw_status = excluded.raw_status, disposition = excluded.disposition,
                    attempts = excluded.attempts, last_dialed_at = excluded.last_dialed_at,
                    agent = excluded.agent, call_id = excluded.call_id,
                    recording_url = excluded.recording_url, raw_json = excluded.raw_json,
                    content_hash = excluded.content_hash
                """,
                rows,
            )
            await db.executemany(
                "INSERT INTO events (at, sink, key, kind, detail) VALUES (?, ?, ?, ?, ?)", events
            )
        return len(rows)

    async def _held_outcomes(
        self, db: Any, batch: Sequence[Outcome]
    ) -> dict[tuple[str, str], tuple[int, float, str]]:
        """Return (version, observed_at, content_hash) of the stored outcomes of ``batch``."""
        by_sink: dict[str, list[str]] = {}
        for o in batch:
            by_sink.setdefault(o.sink, []).append(o.key)
        held: dict[tuple[str, str], tuple[int, float, str]] = {}
        for sink, wanted in by_sink.items():
            unique = list(dict.fromkeys(wanted))
            for part in in_parts(unique, self._keys):
                among, params = self._in_list("key", part)
                found = await db.execute_fetchall(
                    "SELECT key, version, observed_at, content_hash FROM outcomes"
                    f" WHERE sink = ? AND {among}",
                    (sink, *params),
                )
                for key, version, observed, digest in found:
                    held[(sink, key)] = (int(version), float(observed), str(digest))
        return held

    async def delivered(
        self, sink: str, *, after_key: str = "", limit: int = 500
    ) -> list[tuple[str, str | None, str]]:
        """Return (key, vendor_ref, lead_json) of delivered leads in key order, for polling."""
        async with (
            self._lock,
            self.db.execute(
                "SELECT key, vendor_ref, lead_json FROM leads WHERE sink = ? AND key > ?"
                " AND state = 'delivered' ORDER BY key LIMIT ?",
                (sink, after_key, limit),
            ) as cur,
        ):
            return [(r[0], r[1], r[2]) async for r in cur]

    async def record_agents(self, agents: Iterable[AgentStatus]) -> int:
        changed = 0
        async with self._tx() as db:
            for a in agents:
                cur = await db.execute(
                    """
                    INSERT INTO agents (sink, login, status, description, duration_s, changed_at,
                        observed_at, raw_json, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)
                    ON CONFLICT (sink, login) DO UPDATE SET status = excluded.status,
                        description = excluded.description, duration_s = excluded.duration_s,
                        changed_at = excluded.changed_at, observed_at = excluded.observed_at,
                        raw_json = excluded.raw_json, version = agents.version + 1
                    WHERE agents.status IS NOT excluded.status
                       OR agents.changed_at IS NOT excluded.changed_at
                    """,
                    (
                        a.sink,
                        a.login,
                        a.status,
                        a.description,
                        a.duration_s,
                        _epoch(a.changed_at),
                        _epoch(a.observed_at) or self.clock.time(),
                        json.dumps(a.raw, default=str),
                    ),
                )
                changed += cur.rowcount
        return changed

    async def kv_get(self, scope: str, name: str) -> str | None:
        async with (
            self._lock,
            self.db.execute(
                "SELECT value FROM kv WHERE scope = ? AND name = ?", (scope, name)
            ) as cur,
        ):
            row = await cur.fetchone()
        return str(row[0]) if row else None

    async def kv_many(self, scope: str, names: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        async with self._lock:
            for part in in_parts(list(dict.fromkeys(names)), self._keys):
                among, params = self._in_list("name", part)
                rows = await self.db.execute_fetchall(
                    f"SELECT name, value FROM kv WHERE scope = ? AND {among}", (scope, *params)
                )
                found.update((str(name), str(value)) for name, value in rows)
        return found

    async def kv_set(self, scope: str, name: str, value: str | None) -> None:
        async with self._tx() as db:
            if value is None:
                await db.execute("DELETE FROM kv WHERE scope = ? AND name = ?", (scope, name))
            else:
                await db.execute(
                    "INSERT INTO kv (scope, name, value) VALUES (?, ?, ?)"
                    " ON CONFLICT (scope, name) DO UPDATE SET value = excluded.value",
                    (scope, name, value),
                )

    async def kv_scan(self, scope: str, limit: int = 100) -> list[tuple[str, str]]:
        query = "SELECT name, value FROM kv WHERE scope = ? ORDER BY name LIMIT ?"
        async with self._lock, self.db.execute(query, (scope, limit)) as cur:
            return [(str(name), str(value)) async for name, value in cur]

    # -- the sinks' ledger of their leads (syncd.state.ledger.SinkLedger) ---------

    def _ledger_sql(self, name: str) -> str:
        return queries.load(self.QUERIES, "sink_ledger")[name]

    async def ledger_get(self, sink: str, key: str) -> LedgerRow | None:
        async with self._lock, self.db.execute(self._ledger_sql("ledger_get"), (sink, key)) as cur:
            row = await cur.fetchone()
        return ledger_row(row) if row else None

    async def ledger_place(
        self, sink: str, key: str, placement: Placement, numbers: Sequence[str] = ()
    ) -> None:
        await self.ledger_place_many(sink, [(key, placement, numbers)])

    async def ledger_place_many(
        self, sink: str, placements: Sequence[tuple[str, Placement, Sequence[str]]]
    ) -> None:
        if not placements:
            return
        async with self._tx() as db:
            # One row per lead: an upsert by (sink, key) takes a lead once per statement.
            last = {key: (key, p) for key, p, _ in placements}
            await db.executemany(
                self._ledger_sql("ledger_place"),
                [(sink, key, *placement_row(p)) for key, p in last.values()],
            )
            points = [
                (sink, n, key) for key, _, numbers in placements for n in dict.fromkeys(numbers)
            ]
            if points:  # in order: the number's last lead owns it
                await db.executemany(self._ledger_sql("ledger_point"), points)

    async def ledger_forget(self, sink: str, key: str, numbers: Sequence[str]) -> None:
        async with self._tx() as db:
            await db.execute(self._ledger_sql("ledger_unplace"), (sink, key))
            released = [(sink, n, key) for n in dict.fromkeys(numbers)]
            if released:
                await db.executemany(self._ledger_sql("ledger_release"), released)

    async def ledger_owner(self, sink: str, number: str) -> str | None:
        sql = self._ledger_sql("ledger_owner")
        async with self._lock, self.db.execute(sql, (sink, number)) as cur:
            row = await cur.fetchone()
        return str(row[0]) if row else None

    async def ledger_set_calls(self, sink: str, key: str, calls: Sequence[str]) -> None:
        text = json.dumps(list(calls), separators=(",", ":"))
        async with self._tx() as db:
            await db.execute(self._ledger_sql("ledger_set_calls"), (sink, key, text))

    async def ledger_set_newest_call(self, sink: str, key: str, at: float) -> None:
        async with self._tx() as db:
            await db.execute(self._ledger_sql("ledger_set_newest_call"), (sink, key, at))

    async def ledger_set_disposition(self, sink: str, key: str, digest: str) -> None:
        async with self._tx() as db:
            await db.execute(self._ledger_sql("ledger_set_disposition"), (sink, key, digest))

    async def add_event(self, sink: str, key: str, kind: str, detail: str) -> None:
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO events (at, sink, key, kind, detail) VALUES (?, ?, ?, ?, ?)",
                (self.clock.time(), sink, key, kind, detail),
            )

    # -- reporting -----------------------------------------------------------

    # Each (sink, state) counted on its range of leads_outbox: a third less work for
    # SQLite than grouping every entry of it (a million leads: 50 ms, not 75).
    counts_query = (
        _EACH_SINK.format(table="leads") + f", states (state) AS (VALUES {_STATES})"
        " SELECT sinks.sink, states.state, (SELECT COUNT(*) FROM leads"
        " WHERE leads.sink = sinks.sink AND leads.state = states.state)"
        " FROM sinks, states WHERE sinks.sink IS NOT NULL"
    )

    async def counts(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        async with self._lock, self.db.execute(self.counts_query) as cur:
            async for sink, state, n in cur:
                result.setdefault(sink, {s.value: 0 for s in LeadState})[state] = int(n)
        return result

    async def oldest_pending(self) -> dict[str, float]:
        async with (
            self._lock,
            self.db.execute(
                "SELECT sink, MIN(updated_at) FROM leads WHERE state IN ('pending', 'inflight')"
                " GROUP BY sink"
            ) as cur,
        ):
            return {r[0]: float(r[1]) async for r in cur}

    async def start_run(self, run_id: str, mode: str) -> None:
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO runs (run_id, mode, started_at) VALUES (?, ?, ?)",
                (run_id, mode, self.clock.time()),
            )

    async def finish_run(self, run_id: str, summary: dict[str, Any]) -> None:
        async with self._tx() as db:
            await db.execute(
                "UPDATE runs SET finished_at = ?, summary_json = ? WHERE run_id = ?",
                (self.clock.time(), json.dumps(summary), run_id),
            )

    async def last_run(self) -> dict[str, Any] | None:
        async with (
            self._lock,
            self.db.execute(
                "SELECT run_id, mode, started_at, finished_at, summary_json FROM runs"
                " ORDER BY started_at DESC LIMIT 1"
            ) as cur,
        ):
            row = await cur.fetchone()
        if row is None:
            return None
        return {
            "run_id": row[0],
            "mode": row[1],
            "started_at": row[2],
            "finished_at": row[3],
            "summary": json.loads(row[4]) if row[4] else None,
        }

    async def dnc_matches(self, lists: Sequence[str], numbers: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        unique = list(dict.fromkeys(numbers))
        names = list(lists)
        async with self._lock:
            for part in in_parts(unique, self._keys):
                among, params = self._in_list("number", part)
                lists_marks = ",".join("?" * len(names))
                async with self.db.execute(
                    f"SELECT number, list FROM dnc_numbers WHERE {among}"
                    f" AND list IN ({lists_marks})",
                    [*params, *names],
                ) as cur:
                    async for number, name in cur:
                        found.setdefault(number, name)
        return found

    async def listed_leads(self, list_name: str) -> list[ListedLead]:
        # Driven by the leads, one pass each, probing the list by its primary key. Driven
        # by the numbers, SQLite scanned the whole phone index once per new number (it
        # cannot search an expression index against a TEXT column): a million numbers
        # against a million leads ran for hours.
        query = """
            SELECT l.sink, l.key, l.state, l.delivered_hash IS NOT NULL, l.raw_hash,
                json_extract(l.lead_json, '$.phone'), l.hash, l.lead_json, l.doubt_number
            FROM leads l
            WHERE EXISTS (SELECT 1 FROM dnc_numbers d WHERE d.list = ?
                AND d.number = json_extract(l.lead_json, '$.phone') AND d.checked = 0)
            UNION
            SELECT l.sink, l.key, l.state, l.delivered_hash IS NOT NULL, l.raw_hash, j.value,
                l.hash, l.lead_json, l.doubt_number
            FROM leads l CROSS JOIN json_each(l.lead_json, '$.alt_phones') j
            WHERE json_array_length(l.lead_json, '$.alt_phones') > 0
                AND EXISTS (SELECT 1 FROM dnc_numbers d
                    WHERE d.list = ? AND d.number = j.value AND d.checked = 0)
        """
        async with self._lock:
            async with self.db.execute(
                "SELECT 1 FROM dnc_numbers WHERE list = ? AND checked = 0 LIMIT 1", (list_name,)
            ) as cur:
                if await cur.fetchone() is None:
                    return []
            async with self.db.execute(query, (list_name, list_name)) as cur:
                return [listed_lead(r) async for r in cur]

    async def consent_expired(
        self, sinks: Sequence[str], now: float, limit: int = 1000
    ) -> list[ExpiredLead]:
        if not sinks:
            return []
        # The expiries are texts of one shape (consent_text): compared as text, through
        # the partial index of migration 7, whose WHERE the query repeats word for word.
        until = consent_text(datetime.fromtimestamp(now, UTC))
        async with self._lock:
            rows = await self.db.execute_fetchall(consent_query(len(sinks)), (until, *sinks, limit))
        return [ExpiredLead(*row) for row in rows]

    async def dnc_versions(self, list_name: str, limit: int = 20) -> list[DncVersion]:
        async with self._lock:
            rows = await self.db.execute_fetchall(
                "SELECT list, file, rows, numbers, file_date, sha256, mode, added, removed,"
                " loaded_at, version FROM dnc_versions WHERE list = ?"
                " ORDER BY version DESC LIMIT ?",
                (list_name, limit),
            )
        return [DncVersion(*row) for row in rows]

    async def dnc_staged_count(self, list_name: str) -> int:
        async with self._lock:
            rows = await self.db.execute_fetchall(
                "SELECT COUNT(*) FROM dnc_staging WHERE list = ?", (list_name,)
            )
        return int(next(iter(rows))[0])

    async def dnc_staged_origin(self, list_name: str) -> str | None:
        async with self._lock:
            rows = list(
                await self.db.execute_fetchall(
                    "SELECT origin FROM dnc_staging WHERE list = ? LIMIT 1", (list_name,)
                )
            )
        return str(rows[0][0]) if rows else None

    async def blocked_leads(self, list_name: str) -> list[BlockedLead]:
        async with self._lock:
            rows = await self.db.execute_fetchall(
                "SELECT sink, key, list, hash, raw_hash, lead_json FROM dnc_blocked"
                " WHERE list = ? ORDER BY sink, key",
                (list_name,),
            )
        return [BlockedLead(*row) for row in rows]

    async def audit(self, since: float, until: float) -> AsyncIterator[dict[str, Any]]:
        # ``known``: the latest facts naming numbers written before an event of the same
        # lead; a removal's own lead text no longer holds the numbers it takes back.
        known = """CASE WHEN {t}.facts LIKE '%"numbers"%' THEN NULL ELSE
                     (SELECT p.facts FROM events p WHERE p.key = {t}.key AND p.sink = {t}.sink
                      AND {before} AND p.facts LIKE '%"numbers"%' ORDER BY p.id DESC LIMIT 1)
                   END"""
        query = f"""
            SELECT e.at, e.sink, e.key, e.kind, e.detail, l.lead_json, e.facts,
                   {known.format(t="e", before="p.id < e.id")}
            FROM events e LEFT JOIN leads l ON l.sink = e.sink AND l.key = e.key
            WHERE e.at >= ? AND e.at < ? AND (e.kind LIKE 'gate.%' OR e.kind LIKE 'push.%')
            UNION ALL
            SELECT r.created_at, r.sink, r.key, 'gate.blocked', r.reason, l.lead_json, r.facts,
                   {known.format(t="r", before="p.at <= r.created_at")}
            FROM rejects r LEFT JOIN leads l ON l.sink = r.sink AND l.key = r.key
            WHERE r.created_at >= ? AND r.created_at < ? AND r.reason LIKE 'blocked (%'
            ORDER BY 1
        """
        cols = ["at", "sink", "key", "kind", "detail", "lead_json", "facts", "known"]
        async with self._lock, self.db.execute(query, (since, until, since, until)) as cur:
            async for row in cur:
                yield dict(zip(cols, row, strict=True))

    async def gate_counts(self) -> dict[str, dict[str, int]]:
        # Blocked rows are refusals whose reason starts "blocked (<code>)"; held leads
        # wait in the outbox with "held (<code>)…" as their last error.
        query = """
            SELECT sink, 'blocked', substr(reason, 10, instr(reason, ')') - 10), COUNT(*)
            FROM rejects WHERE reason LIKE 'blocked (%' GROUP BY 1, 3
            UNION ALL
            SELECT sink, 'held', substr(last_error, 7, instr(last_error, ')') - 7), COUNT(*)
            FROM leads WHERE state = 'held' GROUP BY 1, 3
        """
        out: dict[str, dict[str, int]] = {}
        async with self._lock, self.db.execute(query) as cur:
            async for sink, decision, code, n in cur:
                out.setdefault(sink, {})[f"{decision} {code}"] = int(n)
        return out

    async def recent_rejects(self, limit: int = 10) -> list[dict[str, Any]]:
        async with (
            self._lock,
            self.db.execute(
                "SELECT created_at, source, sink, origin, line, key, reason FROM rejects"
                " ORDER BY id DESC LIMIT ?",
                (limit,),
            ) as cur,
        ):
            cols = ["at", "source", "sink", "origin", "line", "key", "reason"]
            return [dict(zip(cols, r, strict=True)) async for r in cur]

    async def all_rejects(self, source: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Yield every refused row (of ``source``, or of all), oldest first, with its cells."""
        where, params = ("WHERE source = ?", (source,)) if source else ("", ())
        async with (
            self._lock,
            self.db.execute(
                "SELECT created_at, source, sink, origin, line, key, reason, row_json FROM rejects "
                f"{where} ORDER BY id",
                params,
            ) as cur,
        ):
            cols = ["at", "source", "sink", "origin", "line", "key", "reason", "row"]
            async for r in cur:
                yield dict(zip(cols, r, strict=True))

    async def run_rejects(self, run_id: str, limit: int = 10) -> list[dict[str, Any]]:
        """Return the first rows refused in one run: origin, line, key, reason, sink."""
        async with (
            self._lock,
            self.db.execute(
                "SELECT origin, line, key, reason, sink FROM rejects WHERE run_id = ?"
                " ORDER BY id LIMIT ?",
                (run_id, limit),
            ) as cur,
        ):
            cols = ("origin", "line", "key", "reason", "sink")
            return [dict(zip(cols, row, strict=True)) async for row in cur]

    async def queued(self, sink: str) -> AsyncIterator[QueuedSummary]:
        """Yield every lead waiting in ``sink``'s outbox, by key (held under the lock)."""
        async with (
            self._lock,
            self.db.execute(
                "SELECT key, action, delivered_hash IS NOT NULL FROM leads"
                " WHERE sink = ? AND state IN ('pending', 'inflight') ORDER BY key",
                (sink,),
            ) as cur,
        ):
            async for key, action, delivered in cur:
                yield QueuedSummary(key, Action(action), bool(delivered))

    async def failure_reasons(self, limit: int = 10) -> list[tuple[str, str, int]]:
        async with (
            self._lock,
            self.db.execute(
                "SELECT sink, COALESCE(last_error, ''), COUNT(*) FROM leads"
                " WHERE state IN ('failed', 'rejected') GROUP BY sink, last_error"
                " ORDER BY COUNT(*) DESC LIMIT ?",
                (limit,),
            ) as cur,
        ):
            return [(r[0], r[1], r[2]) async for r in cur]

    async def lead_history(self, key: str) -> dict[str, Any]:
        """Return what the store knows of one lead key, across sinks."""
        async with self._lock:
            statement = queries.load(self.QUERIES, "history")["lead_history"]
            async with self.db.execute(statement, (key,)) as cur:
                cols = [
                    "sink",
                    "state",
                    "hash",
                    "attempts",
                    "last_error",
                    "vendor_ref",
                    "origin",
                    "line",
                    "lead_json",
                    "updated_at",
                    "delivered_at",
                ]
                leads = [dict(zip(cols, r, strict=True)) async for r in cur]
            async with self.db.execute(
                "SELECT at, sink, kind, detail FROM events WHERE key = ? ORDER BY id", (key,)
            ) as cur:
                events = [
                    dict(zip(["at", "sink", "kind", "detail"], r, strict=True)) async for r in cur
                ]
            async with self.db.execute(
                "SELECT sink, version, observed_at, status, disposition, attempts, agent,"
                " recording_url FROM outcomes WHERE key = ?",
                (key,),
            ) as cur:
                ocols = [
                    "sink",
                    "version",
                    "observed_at",
                    "status",
                    "disposition",
                    "attempts",
                    "agent",
                    "recording_url",
                ]
                outcomes = [dict(zip(ocols, r, strict=True)) async for r in cur]
            async with self.db.execute(
                "SELECT created_at, source, sink, origin, line, reason FROM rejects"
                " WHERE key = ? ORDER BY id",
                (key,),
            ) as cur:
                rcols = ["at", "source", "sink", "origin", "line", "reason"]
                rejects = [dict(zip(rcols, r, strict=True)) async for r in cur]
        return {"leads": leads, "events": events, "outcomes": outcomes, "rejects": rejects}

    async def agent_dump(self) -> list[dict[str, Any]]:
        async with (
            self._lock,
            self.db.execute(
                "SELECT sink, login, status, description, duration_s, changed_at, observed_at"
                " FROM agents ORDER BY sink, login"
            ) as cur,
        ):
            cols = [
                "sink",
                "login",
                "status",
                "description",
                "duration_s",
                "changed_at",
                "observed_at",
            ]
            return [dict(zip(cols, r, strict=True)) async for r in cur]

    async def last_call(self, sink: str, key: str) -> dict[str, Any] | None:
        async with (
            self._lock,
            self.db.execute(
                "SELECT call_id, agent, status, observed_at FROM outcomes"
                " WHERE sink = ? AND key = ?",
                (sink, key),
            ) as cur,
        ):
            row = await cur.fetchone()
        if row is None:
            return None
        return dict(zip(["call_id", "agent", "status", "observed_at"], row, strict=True))

    async def outcome_dump(self) -> list[dict[str, Any]]:
        async with (
            self._lock,
            self.db.execute(
                "SELECT sink, key, version, status, disposition, attempts, agent, call_id,"
                " recording_url FROM outcomes ORDER BY sink, key"
            ) as cur,
        ):
            cols = [
                "sink",
                "key",
                "version",
                "status",
                "disposition",
                "attempts",
                "agent",
                "call_id",
                "recording_url",
            ]
            return [dict(zip(cols, r, strict=True)) async for r in cur]

    async def delivered_since(self, since: float) -> int:
        """Return how many leads were last delivered at or after ``since`` (epoch seconds)."""
        async with (
            self._lock,
            self.db.execute("SELECT COUNT(*) FROM leads WHERE delivered_at >= ?", (since,)) as cur,
        ):
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    # -- history for the status page (stats, runs, outcomes) ------------------------

    async def record_backlog(self, pending: Mapping[str, int]) -> None:
        """Keep, per sink, the largest outbox seen this hour (the backlog chart)."""
        at = stats_hour(self.clock.time())
        async with self._tx() as db:
            await db.executemany(
                "INSERT INTO stats (sink, at, metric, bucket, n) VALUES (?, ?, 'pending', 0, ?)"
                " ON CONFLICT (sink, at, metric, bucket) DO UPDATE SET"
                " n = CASE WHEN excluded.n > stats.n THEN excluded.n ELSE stats.n END",
                [(sink, at, int(n)) for sink, n in pending.items()],
            )

    async def stats_since(self, since: float) -> list[tuple[str, float, str, int, int]]:
        """Return the hourly stats from ``since`` on: (sink, hour, metric, bucket, n)."""
        async with self._lock:
            rows = await self.db.execute_fetchall(
                "SELECT sink, at, metric, bucket, n FROM stats WHERE at >= ?"
                " ORDER BY sink, at, metric, bucket",
                (since,),
            )
        return [(str(s), float(at), str(m), int(b), int(n)) for s, at, m, b, n in rows]

    async def record_run(
        self, run_id: str, mode: str, started_at: float, summary: dict[str, Any]
    ) -> None:
        """Record a finished run at once (a daemon's pull pass that read something)."""
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO runs (run_id, mode, started_at, finished_at, summary_json)"
                " VALUES (?, ?, ?, ?, ?)",
                (run_id, mode, started_at, self.clock.time(), json.dumps(summary)),
            )

    async def recent_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """Return the last ``limit`` runs, newest first; a daemon's pull pass with its
        leads a dialer holds now (``delivered_now``) and those refused (``refused_now``)."""
        async with self._lock:
            rows = await self.db.execute_fetchall(
                "SELECT run_id, mode, started_at, finished_at, summary_json FROM runs"
                " ORDER BY started_at DESC LIMIT ?",
                (limit,),
            )
            # Each lead of a run is read for its state: only where the figures are
            # wanted. A `run --once` summary has its deliveries (a first sync's run of a
            # million leads was a million reads, for every status, until ten more runs).
            ids = [str(r[0]) for r in rows if str(r[1] or "").startswith("pull")]
            marks = ", ".join("?" * len(ids))
            counted = (
                await self.db.execute_fetchall(
                    "SELECT run_id, SUM(CASE WHEN state = 'delivered' THEN 1 ELSE 0 END),"
                    " SUM(CASE WHEN state IN ('rejected', 'failed') THEN 1 ELSE 0 END)"
                    f" FROM leads WHERE run_id IN ({marks}) AND {COUNTED_IN_RUNS}"
                    " GROUP BY run_id",
                    ids,
                )
                if ids
                else []
            )
        live: dict[str, tuple[int | None, int | None]] = dict.fromkeys(ids, (0, 0))
        live.update((str(r[0]), (int(r[1] or 0), int(r[2] or 0))) for r in counted)
        return [
            {
                "run_id": r[0],
                "mode": r[1],
                "started_at": r[2],
                "finished_at": r[3],
                "summary": json.loads(r[4]) if r[4] else None,
                "delivered_now": live.get(str(r[0]), (None, None))[0],
                "refused_now": live.get(str(r[0]), (None, None))[1],
            }
            for r in rows
        ]

    # Per sink, on the ranges of outcomes_observed (migration 14): the count, the range
    # since ``since`` and its last entry, not every outcome read and summed (218 ms at
    # half a million outcomes, now 22).
    outcome_counts_query = _EACH_SINK.format(table="outcomes") + (
        " SELECT sink, (SELECT COUNT(*) FROM outcomes o WHERE o.sink = sinks.sink),"
        " (SELECT COUNT(*) FROM outcomes o WHERE o.sink = sinks.sink AND o.observed_at >= ?),"
        " (SELECT MAX(observed_at) FROM outcomes o WHERE o.sink = sinks.sink)"
        " FROM sinks WHERE sink IS NOT NULL"
    )

    async def outcome_counts(self, since: float) -> dict[str, dict[str, Any]]:
        """Return per sink the outcomes held, those observed since ``since``, and the
        latest one's time."""
        async with self._lock:
            rows = await self.db.execute_fetchall(self.outcome_counts_query, (since,))
        return {
            str(sink): {"received": int(n), "recent": int(recent or 0), "last_at": last}
            for sink, n, recent, last in rows
        }

    async def cursor_times(self) -> dict[str, tuple[str, float]]:
        """Return each source's cursor and when it was last written."""
        async with self._lock:
            rows = await self.db.execute_fetchall("SELECT source, value, updated_at FROM cursors")
        return {str(src): (str(value), float(at)) for src, value, at in rows}

    # -- writeback: outcome and agent versions not yet written to the CRM ---------

    async def pending_writeback(
        self,
        writeback: str,
        what: str = "outcomes",
        *,
        sinks: Sequence[str] = (),
        after: tuple[str, str] = ("", ""),
        limit: int = 500,
    ) -> list[dict[str, Any]]:
        """Return versions ``writeback`` has not written yet, in (sink, key) order after ``after``.

        ``what`` is "outcomes" (key = lead key) or "agents" (key = agent login).
        """
        table, key, cols = _WRITEBACK_SOURCES[what]
        only = f" AND t.sink IN ({','.join('?' * len(sinks))})" if sinks else ""
        names = ["sink", "key", "version", "observed_at", *cols, "raw_json"]
        select = ", ".join(["t.sink", f"t.{key}", "t.version", "t.observed_at"])
        select += "".join(f", t.{c}" for c in cols) + ", t.raw_json"
        async with (
            self._lock,
            self.db.execute(
                f"SELECT {select} FROM {table} t LEFT JOIN writeback_marks m"
                f" ON m.writeback = ? AND m.sink = t.sink AND m.key = t.{key}"
                f" WHERE (t.sink > ? OR (t.sink = ? AND t.{key} > ?))"
                f" AND (m.version IS NULL OR m.version < t.version){only}"
                f" ORDER BY t.sink, t.{key} LIMIT ?",
                (writeback, after[0], after[0], after[1], *sinks, limit),
            ) as cur,
        ):
            return [dict(zip(names, r, strict=True)) async for r in cur]

    async def mark_written(
        self,
        writeback: str,
        marks: Sequence[tuple[str, str, int]],
        *,
        state: str | None = None,
        refused: str | None = None,
    ) -> None:
        """Record (sink, key, version)s as written (or ``refused`` with that reason), and the
        writeback's state, in one go."""
        now = self.clock.time()
        async with self._tx() as db:
            await db.executemany(
                "INSERT INTO writeback_marks (writeback, sink, key, version, written_at, refused)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (writeback, sink, key) DO UPDATE SET"
                " version = CASE WHEN writeback_marks.version > excluded.version"
                " THEN writeback_marks.version ELSE excluded.version END,"
                " written_at = excluded.written_at, refused = excluded.refused",
                [(writeback, sink, key, version, now, refused) for sink, key, version in marks],
            )
            if state is not None:
                await db.execute(
                    "INSERT INTO kv (scope, name, value) VALUES ('writeback.state', ?, ?)"
                    " ON CONFLICT (scope, name) DO UPDATE SET value = excluded.value",
                    (writeback, state),
                )

    async def refused_writebacks(self, writeback: str) -> list[tuple[str, int]]:
        """Return the reasons ``writeback``'s refused versions carry, with how many each."""
        async with (
            self._lock,
            self.db.execute(
                "SELECT refused, COUNT(*) FROM writeback_marks WHERE writeback = ?"
                " AND refused IS NOT NULL GROUP BY refused ORDER BY COUNT(*) DESC",
                (writeback,),
            ) as cur,
        ):
            return [(str(r[0]), int(r[1])) async for r in cur]

    async def retry_writeback(self, writeback: str, *, reason: str | None = None) -> int:
        """Make the refused versions of ``writeback`` (those whose reason contains ``reason``)
        pending again; return how many."""
        like = f"%{reason}%" if reason else "%"
        async with self._tx() as db:
            cur = await db.execute(
                "DELETE FROM writeback_marks WHERE writeback = ? AND refused IS NOT NULL"
                " AND refused LIKE ?",
                (writeback, like),
            )
            return int(cur.rowcount)


def pairs_per_query(variable_limit: int) -> int:
    """Return how many (key, raw hash) pairs a lookup query carries under SQLite's limit of
    host parameters (32766 since 3.32 as built by default, 999 before; two are not pairs)."""
    return max(1, min(_PAIRS_MAX, (variable_limit - 2) // 2))


def _variable_limit() -> int:
    """Return the host-parameter limit of the SQLite library this process uses."""
    with contextlib.closing(sqlite3.connect(":memory:")) as probe:
        return probe.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)


def consent_query(sinks: int) -> str:
    """Return the statement of ``consent_expired`` for ``sinks`` sinks (params: the expiry
    text, the sinks, the limit). Its WHERE repeats the partial index's (migration 7).

    ``sink || ''`` keeps SQLite off the primary key: without statistics it would read
    every lead of the sinks rather than the few the expiry index names."""
    marks = ",".join("?" * sinks)
    return (
        "SELECT sink, key, state, raw_hash, json_extract(lead_json, '$.consent_until'),"
        " lead_json FROM leads"
        " WHERE delivered_hash IS NOT NULL AND action = 'upsert'"
        " AND json_extract(lead_json, '$.consent_until') IS NOT NULL"
        " AND json_extract(lead_json, '$.consent_until') <= ?"
        f" AND (sink || '') IN ({marks})"
        " ORDER BY json_extract(lead_json, '$.consent_until'), sink, key LIMIT ?"
    )


def outcome_digest(o: Outcome) -> str:
    """Return the text an outcome's content is compared by (unchanged outcomes are skipped)."""
    content = {
        "status": o.status,
        "raw_status": o.raw_status,
        "disposition": o.disposition,
        "attempts": o.attempts,
        "last_dialed_at": _epoch(o.last_dialed_at),
        "agent": o.agent,
        "call_id": o.call_id,
        "recording_url": o.recording_url,
    }
    return json.dumps(content, sort_keys=True)


def _holder(key: str, state: str, delivered: Any, phone: Any, alternates: Any) -> Holder:
    """Return a holder from its stored numbers (``alternates``: the JSON array's text)."""
    alts = orjson.loads(alternates) if alternates and alternates != "[]" else ()
    return Holder(key, state, bool(delivered), str(phone or ""), tuple(str(a) for a in alts))


def in_parts(items: list[str], size: int) -> Iterator[list[str]]:
    """Yield ``items`` in lists of at most ``size`` (a statement's placeholders are few)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def new_claim_token() -> str:
    """Return a claim's token: unique across replicas and restarts."""
    return uuid.uuid4().hex


def queued_leads(
    sink: str, rows: Iterable[Sequence[Any]], claim: str | None = None
) -> list[QueuedLead]:
    """Return claimed rows (key, hash, action, lead_json, attempts, vendor_ref,
    delivered_hash[, source, updated_at[, doubt_number]]) as the push takes them, in key
    order, under ``claim``'s token."""
    rows = list(rows)
    batch = [
        QueuedLead(
            sink=sink,
            key=r[0],
            hash=r[1],
            action=_ACTIONS.get(r[2]) or Action(r[2]),  # a dict's look-up: once a lead
            lead=Lead.from_json(orjson.loads(r[3])),
            attempts=r[4],
            vendor_ref=r[5],
            delivered_hash=r[6],
            claim=claim,
            source=str(r[7] or "") if len(r) > 7 else "",
            read_at=float(r[8]) if len(r) > 8 and r[8] is not None else None,
        )
        for r in rows
    ]
    batch.sort(key=_BY_KEY)
    doubts = {r[0]: r[9] for r in rows if len(r) > 9 and r[9] and r[2] == "delete" and not r[6]}
    if doubts:
        for q in batch:
            _name_the_doubt(q, doubts.get(q.key))
    return batch


def _name_the_doubt(q: QueuedLead, number: str | None) -> None:
    """Give a removal of a lead never delivered the number of the version sent in doubt.

    The pull names it when it queues the removal (``reconcile.naming_attempt``), unless
    the lead was in flight then; the push's completion names the number it sent itself,
    but a push that sent nothing (a doubt settling, a failure the dialer answered) has
    none to give. The store kept it (``doubt_number``): without it, the removal would be
    settled as "never delivered" while the dialer holds the lead."""
    if number and not q.lead.phone:
        q.lead.phone = number


_ACTIONS = {a.value: a for a in Action}
_BY_KEY = operator.attrgetter("key")


async def _each(db: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run ``sql`` for each of ``rows``; nothing at all (no hop to the database) for none."""
    if rows:
        await db.executemany(sql, rows)


# What a completion checks and counts of each lead it writes: the claim token, when its
# version was read (``updated_at``) and whether it is a removal (+ `` AND key IN …``)
AS_STORED = "SELECT key, claim_token, updated_at, action = 'delete' FROM leads WHERE sink = ?"


def as_stored(
    rows: Iterable[Sequence[Any]],
) -> Iterator[tuple[str, tuple[str | None, float, bool]]]:
    """Return (key, (claim token, updated_at, removal)) of the rows :data:`AS_STORED` read."""
    return ((str(k), (t, float(at or 0), bool(gone))) for k, t, at, gone in rows)


def split_stale(
    completions: Sequence[Completion], stored: Mapping[str, tuple[str | None, float, bool]]
) -> tuple[list[str], list[Completion]]:
    """Return the keys whose claim another one has replaced (sorted), and the rest."""
    stale = {
        c.key
        for c in completions
        if c.claim is not None and stored.get(c.key, (None,))[0] != c.claim
    }
    return sorted(stale), [c for c in completions if c.key not in stale]


def result_statements(
    sink: str,
    completions: Sequence[Completion],
    now: float,
    stored: Mapping[str, tuple[str | None, float, bool]],
) -> list[Statement]:
    """Return the statements that write a push's results (in complete's transaction),
    each with its rows; a statement with no rows is left out (a hop saved: on a shared
    store each is a round trip)."""
    statements: list[Statement] = []

    def add(sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            statements.append((sql, rows, True))

    counted = _delivery_stats(sink, completions, now, stored)
    delivered, rejected, retry, failed = [], [], [], []
    for c in completions:
        if c.kind is ResultKind.DELIVERED:  # most of them: one tuple, nothing unpacked
            pushed, claim = c.pushed_hash, c.claim
            delivered.append(
                (pushed, c.vendor_ref, now, pushed, c.dial_until, sink, c.key, claim, claim)
            )
            continue
        fence = (c.claim, c.claim)
        if c.kind is ResultKind.REJECTED:
            rejected.append((c.pushed_hash, c.reason, sink, c.key, *fence))
        elif c.final:
            doubt = (c.attempted, c.attempted)
            failed.append((c.pushed_hash, c.reason, *doubt, sink, c.key, *fence))
        else:
            attempted = (c.attempted, c.attempted)
            spent = 1 if c.spent else 0
            retry.append(
                (c.next_at or now, c.reason, spent, *attempted, *attempted, sink, c.key, *fence)
            )
    # A statement with no rows is skipped: each is a hop to SQLite's thread and back,
    # and a batch the dialer took whole has only deliveries (three hops of nine).
    # When the CRM changed the lead while it was in flight, the newer content
    # goes back to the outbox instead of being marked done.
    add(
        f"""
        UPDATE leads SET
            state = CASE WHEN hash != ? THEN 'pending'
                         WHEN action = 'delete' THEN 'removed' ELSE 'delivered' END,
            attempts = CASE WHEN state = 'pending' THEN 0 ELSE attempts END,
            vendor_ref = COALESCE(?, vendor_ref),
            -- a window withdrawal keeps when the lead went in: a call since then
            -- keeps it from coming back (window_closed)
            delivered_at = CASE WHEN {WINDOW_WITHDRAWAL} THEN delivered_at ELSE ? END,
            delivered_hash = ?, doubt_number = NULL,
            dial_until = CASE WHEN action = 'delete' THEN dial_until
                              ELSE CAST(? AS DOUBLE PRECISION) END,
            last_error = NULL, lease_until = NULL, next_at = 0, claim_token = NULL
        WHERE sink = ? AND key = ? AND {_FENCE}
        """,
        delivered,
    )
    add(
        f"""
        UPDATE leads SET
            state = CASE WHEN hash != ? THEN 'pending' ELSE 'rejected' END,
            last_error = ?, lease_until = NULL, next_at = 0, claim_token = NULL
        WHERE sink = ? AND key = ? AND {_FENCE}
        """,
        rejected,
    )
    add(
        f"""
        UPDATE leads SET
            state = CASE WHEN hash != ? THEN 'pending' ELSE 'failed' END,
            last_error = ?, {_DOUBT_SENT},
            lease_until = NULL, next_at = 0, claim_token = NULL
        WHERE sink = ? AND key = ? AND {_FENCE}
        """,
        failed,
    )
    # A removal the CRM queued while this upsert was in flight, its answer now lost:
    # the dialer may hold the version sent; the removal names it by its number.
    add(
        "UPDATE leads SET state = 'pending', next_at = ?, last_error = ?,"
        f" attempts = CASE WHEN CAST(? AS INTEGER) = 1 THEN attempts ELSE {_GIVE_BACK} END,"
        " lead_json = CASE WHEN action = 'delete' AND delivered_hash IS NULL"
        " AND CAST(? AS TEXT) != '' THEN json_set(lead_json, '$.phone', ?)"
        f" ELSE lead_json END, {_DOUBT_SENT},"
        f" lease_until = NULL, claim_token = NULL WHERE sink = ? AND key = ? AND {_FENCE}",
        retry,
    )
    add(
        "INSERT INTO events (at, sink, key, kind, detail, facts) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                now,
                sink,
                c.key,
                "push." + ("failed" if c.final else c.kind.value),
                _push_detail(c),
                c.facts or None,
            )
            for c in completions
        ],
    )
    # Last: every push adds to the same rows of this hour's stats, and on a shared
    # store the first write locks them until the commit. Written first, they held
    # every other replica's (and worker's) completion back while this one updated
    # its leads; written last, for one round trip.
    add(_ADD_STAT, counted)
    return statements


def _push_detail(c: Completion) -> str:
    """Return what a lead's history says of one push: the reason, the dialer's answer, its id."""
    ref = f"vendor ref {c.vendor_ref}" if c.vendor_ref else ""
    if not c.reason:  # a delivery (one a lead pushed): its answer and its id
        if not (c.reply and ref):
            return c.reply or ref
        return c.reply if c.reply == ref else f"{c.reply}; {ref}"
    parts = [p for p in (c.reason, c.reply, ref) if p]
    # Repeats dropped (a reason the reply says again); a list, not a dict, when no two
    # parts can be alike: this runs for every lead pushed.
    return "; ".join(parts if len(parts) < 2 else dict.fromkeys(parts))


def _create_private(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Created 0600 before SQLite touches it; its -wal/-shm files inherit the mode.
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def _delivery_stats(
    sink: str,
    completions: Sequence[Completion],
    now: float,
    stored: Mapping[str, tuple[str | None, float, bool]],
) -> list[tuple[str, float, str, int, int]]:
    """Return a push's deliveries as rows to add to this hour's stats (``_ADD_STAT``):
    how many, and how long each lead took from the read of its version (``updated_at``
    in ``stored``, see ``_as_stored``) to the dialer. Withdrawals are not leads
    delivered. The rows come in one order (the buckets sorted): two transactions adding
    to the same rows then lock them in the same order, never each waiting for the other."""
    ages = [
        now - stored[c.key][1]
        for c in completions
        if c.kind is ResultKind.DELIVERED and c.key in stored and not stored[c.key][2]
    ]
    if not ages:
        return []
    at = stats_hour(now)
    counted = [(sink, at, "delivered", 0, len(ages))]
    counted += [(sink, at, "latency", b, n) for b, n in sorted(latency.histogram(ages).items())]
    return counted


async def _write_cursor(db: aiosqlite.Connection, source: str, value: str | None) -> None:
    if value is None:
        await db.execute("DELETE FROM cursors WHERE source = ?", (source,))
        return
    await db.execute(
        "INSERT INTO cursors (source, value, updated_at) VALUES (?, ?, ?)"
        " ON CONFLICT (source) DO UPDATE SET value = excluded.value,"
        " updated_at = excluded.updated_at",
        (source, value, time.time()),
    )


def _storable(text: str | None) -> str | None:
    """Return ``text`` with undecodable bytes (lone surrogates) and NULs as U+FFFD.

    A refused row may hold bytes its file's encoding could not decode (SQLite stores
    UTF-8 only) or a NUL a POST escaped (PostgreSQL's text takes none): the row must be
    kept (with its reason), not crash the pull.
    """
    if text is None:
        return None
    return (
        text.encode("utf-8", "surrogatepass").decode("utf-8", "replace").replace("\x00", "\ufffd")
    )


def snapshot(source: Path, target: Path) -> None:
    """Copy the SQLite state store at ``source`` to ``target`` without writing to it.

    A store with no write-ahead log is whole in its one file (closed cleanly, nobody
    writing): a plain file copy. Otherwise SQLite's online backup, read-only, gives
    a consistent snapshot while another syncd keeps writing.
    """
    if not source.exists():
        return  # first run: the dry run starts from an empty store
    wal = source.with_name(source.name + "-wal")
    if not wal.exists():
        shutil.copyfile(source, target)
        if _intact(target):
            return
        target.unlink()
    _online_copy(source, target)


def _online_copy(source: Path, target: Path) -> None:
    """Copy a live store with SQLite's online backup: one consistent snapshot, read-only."""
    try:
        src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
        try:
            dst = sqlite3.connect(target)
            try:
                src.backup(dst)  # all pages in one step: a writer cannot make it restart
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read state store {source} for a copy: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Backup:
    path: Path
    schema: int
    leads: int
    size: int  # bytes


def backup(source: Path, target: Path) -> Backup:
    """Return what was copied, having written a consistent copy of a store to ``target``.

    Safe while syncd runs (copying the file and its -wal by hand is not): the copy is
    written beside the target, checked, and renamed into place, owner-only.
    """
    if not source.exists():
        raise StoreError(f"no state store at {source}")
    if target.exists():
        raise StoreError(f"{target} exists: choose another name (a backup never overwrites)")
    part = target.with_name(target.name + ".part")
    part.unlink(missing_ok=True)
    _create_private(part)
    try:
        _online_copy(source, part)
        if not _intact(part):
            raise StoreError(f"the copy of {source} failed its integrity check; try again")
        conn = sqlite3.connect(part)
        try:
            conn.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            schema = int(conn.execute("PRAGMA user_version").fetchone()[0])
            leads = int(conn.execute("SELECT COUNT(*) FROM leads").fetchone()[0])
        finally:
            conn.close()
        with part.open("rb") as fh:
            os.fsync(fh.fileno())
        part.rename(target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return Backup(target, schema, leads, target.stat().st_size)


def _intact(path: Path) -> bool:
    try:
        conn = sqlite3.connect(path)
    except sqlite3.Error:
        return False
    try:
        row = conn.execute("PRAGMA quick_check").fetchone()
        return bool(row and row[0] == "ok")
    except sqlite3.Error:
        return False
    finally:
        conn.close()
