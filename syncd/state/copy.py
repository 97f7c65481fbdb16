"""Moving a site's SQLite store to PostgreSQL (``syncd state copy --to URL``).

Everything the store knows moves in one PostgreSQL transaction — leads with what
each dialer holds, cursors, outcomes, writeback marks, rejects, history, lists and
their versions — so the replicas start where the single host stopped and a re-sync
sends nothing. A
copy into a store that already holds leads is refused (it would mix two sites).
Leads a crash left in flight are copied as waiting: they go again, as after a
restart.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syncd.errors import StoreError
from syncd.state.postgres import PostgresStore

# Table -> its columns (both stores have them); the order a restore needs.
TABLES: dict[str, tuple[str, ...]] = {
    "meta": ("name", "value"),
    "cursors": ("source", "value", "updated_at"),
    "leads": (
        "sink", "key", "hash", "raw_hash", "lead_json", "action", "state", "attempts",
        "next_at", "lease_until", "last_error", "vendor_ref", "delivered_hash", "origin",
        "line", "run_id", "klass", "created_at", "updated_at", "delivered_at", "waits_for",
        "dial_until", "source",
    ),
    "rejects": ("id", "run_id", "source", "sink", "origin", "line", "key", "reason", "row_json",
                "created_at", "facts"),
    "events": ("id", "at", "sink", "key", "kind", "detail", "facts"),
    "outcomes": (
        "sink", "key", "version", "observed_at", "status", "raw_status", "disposition",
        "attempts", "last_dialed_at", "agent", "call_id", "recording_url", "raw_json",
        "content_hash",
    ),
    "writeback_marks": ("writeback", "sink", "key", "version", "written_at", "refused"),
    "agents": ("sink", "login", "status", "description", "duration_s", "changed_at",
               "observed_at", "raw_json", "version"),
    "kv": ("scope", "name", "value"),
    "runs": ("run_id", "mode", "started_at", "finished_at", "summary_json"),
    "dnc_numbers": ("list", "number", "origin", "added_at", "checked"),
    "dnc_staging": ("list", "number", "origin"),
    "dnc_versions": ("list", "version", "file", "mode", "rows", "numbers", "added", "removed",
                     "loaded_at", "file_date", "sha256"),
    "dnc_blocked": ("sink", "key", "list", "hash", "raw_hash", "lead_json", "blocked_at"),
    "stats": ("sink", "at", "metric", "bucket", "n"),
    "refused": ("sink", "key", "raw_hash", "fingerprint", "blocked", "reason", "facts",
                "refused_at"),
    "sink_ledger": ("sink", "key", "number", "alternatives", "mode", "schedule", "held", "late",
                    "late_at", "late_until", "sent_hash", "sent_at", "check_at", "calls",
                    "newest_call", "disposition", "ref", "valid_until"),
    "sink_ledger_numbers": ("sink", "number", "key"),
}  # fmt: skip
IDENTITY = ("rejects", "events")  # their ids carry on from the copied ones
PAGE = 5000


@dataclass
class Copied:
    """How many rows of each table were copied."""

    rows: dict[str, int] = field(default_factory=dict)

    @property
    def leads(self) -> int:
        return self.rows.get("leads", 0)


def _pages(source: Path, table: str, columns: tuple[str, ...]) -> Iterator[list[tuple[Any, ...]]]:
    # Pages are read on worker threads, one at a time.
    conn = sqlite3.connect(
        f"{source.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
    )
    try:
        cur = conn.execute(f"SELECT {', '.join(columns)} FROM {table}")
        while rows := cur.fetchmany(PAGE):
            yield [_fresh(table, columns, row) for row in rows]
    finally:
        conn.close()


def _fresh(table: str, columns: tuple[str, ...], row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Return a row as the new store takes it: a claim of the old host is no claim."""
    if table != "leads" or row[columns.index("state")] != "inflight":
        return row
    values = list(row)
    values[columns.index("state")] = "pending"
    values[columns.index("lease_until")] = None
    return tuple(values)


async def copy_to_postgres(source: Path, url: str, *, schema: str | None = None) -> Copied:
    """Return what was copied from the SQLite store at ``source`` to PostgreSQL at ``url``."""
    if not await asyncio.to_thread(source.exists):
        raise StoreError(f"no state store at {source}")
    target = PostgresStore(url, schema=schema)
    await target.open()  # creates and migrates an empty store
    copied = Copied()
    try:
        async with target._tx() as db:
            raw = db.raw
            if await raw.fetchval("SELECT count(*) FROM leads"):
                raise StoreError(
                    f"the store at {target.path} already holds leads: copy into an empty "
                    "database or schema (a store holds one site)"
                )
            for table, columns in TABLES.items():
                await raw.execute(f"DELETE FROM {table}")  # e.g. meta rows of a fresh store
                marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
                insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
                count = 0
                pages = _pages(source, table, columns)
                while (page := await asyncio.to_thread(next, pages, None)) is not None:
                    await raw.executemany(insert, page)
                    count += len(page)
                copied.rows[table] = count
            for table in IDENTITY:
                await raw.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" GREATEST((SELECT max(id) FROM {table}), 1))"
                )
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the state store {source}: {exc}") from None
    finally:
        await target.close()
    return copied
