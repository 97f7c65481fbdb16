"""`syncd status` reads no table that grows with the leads whole.

Its snapshot (syncd.run.status.collect) took 2 s on a million leads, growing with the
store: the held leads, failure reasons, oldest pending lead, outcomes per dialer and
refused writebacks were each read from every row. The statements it really sends are
captured and their plans read: where one scans leads, outcomes, refused rows or
writeback marks, it scans a partial index of the few rows it asks for (migration 14).
Counts per sink and state count index ranges, one per sink and state.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from syncd.config import Settings, load_settings
from syncd.core.model import Action, ResultKind
from syncd.run.status import collect
from syncd.state.base import ChunkWrite, Completion, LeadWrite
from syncd.state.postgres import PgConnection, PostgresStore, to_postgres
from syncd.state.sqlite import SqliteStore
from tests.support.reliability import (
    ameyo_sink,
    jodo_sink,
    ucontact_sink,
    vendor_env,
    write_config,
)
from tests.support.stores import drop_schema, new_schema, pg_url

# Indexes holding only the rows of a few states (or the newest runs first)
BOUNDED = {
    "leads_queued",
    "leads_held",
    "leads_failed",
    "leads_waiting",
    "leads_withdrawals",
    "rejects_blocked",
    "writeback_refused",
    "runs_started",
}
GROWING = {"leads", "outcomes", "rejects", "writeback_marks"}
ALIASES = {"l": "leads", "o": "outcomes", "r": "rejects"}


def settings_of(tmp_path: Path) -> Settings:
    sinks = [jodo_sink("http://127.0.0.1:9"), ameyo_sink("http://127.0.0.1:9")]
    sinks.append(ucontact_sink("http://127.0.0.1:9"))
    writeback = {"name": "crm-files", "kind": "csv", "outbox": str(tmp_path / "out")}
    return load_settings(write_config(tmp_path, sinks, writebacks=[writeback]), vendor_env())


def lead(i: int) -> LeadWrite:
    phone = f"+9198200{i:05d}"
    return LeadWrite(f"K{i}", f"h{i}", "raw", f'{{"key":"K{i}","phone":"{phone}"}}',
                     Action.UPSERT, "new", i)  # fmt: skip


async def a_store_with_history(settings: Settings) -> SqliteStore:
    """Return an open store with a run whose leads were delivered, refused and queued."""
    store = SqliteStore(settings.state.path)
    await store.open()
    await store.start_run("run-1", "pull crm")  # a daemon's pull: its leads counted
    chunk = ChunkWrite("run-1", "crm", "a.csv")
    chunk.leads["jodo"] = [lead(i) for i in range(30)]
    await store.apply_chunk(chunk)
    claimed = await store.claim("jodo", 20, 60.0)
    kinds = [ResultKind.DELIVERED, ResultKind.REJECTED]
    await store.complete(
        "jodo",
        [
            Completion(q.key, q.hash, kinds[i % 2], reason="HTTP 400: bad number", claim=q.claim)
            for i, q in enumerate(claimed)
        ],
    )
    await store.finish_run("run-1", {})
    return store


async def statements_of(settings: Settings) -> list[str]:
    store = await a_store_with_history(settings)
    try:
        sent: list[str] = []
        await store.db._execute(store.db._conn.set_trace_callback, sent.append)  # type: ignore[attr-defined]
        await collect(settings, store)
        await store.db._execute(store.db._conn.set_trace_callback, None)  # type: ignore[attr-defined]
        return [s for s in sent if "FROM" in s.upper()]
    finally:
        await store.close()


def whole_reads(plan: list[str]) -> list[str]:
    """Return the plan's lines that scan a growing table other than through a bounded index."""
    found = []
    for line in plan:
        m = re.match(r"SCAN (\w+)(?: USING (?:COVERING )?INDEX (\w+))?", line)
        if m is None:
            continue
        table = ALIASES.get(m.group(1), m.group(1))
        if table in GROWING and m.group(2) not in BOUNDED:
            found.append(line)
    return found


async def test_status_reads_the_leads_through_indexes_of_the_rows_it_shows(
    tmp_path: Path,
) -> None:
    settings = settings_of(tmp_path)
    sent = await statements_of(settings)
    assert any("FROM leads WHERE run_id IN" in s for s in sent), "the run history's counts"
    with sqlite3.connect(settings.state.path) as db:
        for statement in sent:
            plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + statement)]
            scans = whole_reads(plan)
            # the ten newest refused rows, by rowid from the end: ten rows read
            if scans == ["SCAN rejects"] and "ORDER BY id DESC LIMIT" in statement:
                continue
            assert scans == [], (statement, plan)


async def test_on_postgresql_the_run_historys_counts_read_the_leads_they_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PostgreSQL's index of runs holds only the delivered and refused leads (its
    migration 19: a claim and a pull's insert add no entry to it); the statement names
    their states, so it reads that index and not every lead."""
    schema = new_schema()
    store = PostgresStore(pg_url(), schema=schema)
    await store.open()
    try:
        await store.start_run("run-1", "pull crm")
        chunk = ChunkWrite("run-1", "crm", "a.csv")
        chunk.leads["jodo"] = [lead(i) for i in range(20000)]
        await store.apply_chunk(chunk)
        claimed = await store.claim("jodo", 500, 60.0)
        await store.complete("jodo", [Completion(q.key, q.hash, ResultKind.DELIVERED,
                                                 claim=q.claim) for q in claimed])  # fmt: skip
        async with store._lock:
            await store.db.raw.execute("ANALYZE leads")
        sent: list[tuple[str, Sequence[Any]]] = []
        execute_fetchall = PgConnection.execute_fetchall

        async def recording(
            self: PgConnection, query: str, params: Sequence[Any] = ()
        ) -> list[tuple[Any, ...]]:
            sent.append((query, params))
            return await execute_fetchall(self, query, params)

        monkeypatch.setattr(PgConnection, "execute_fetchall", recording)
        [run] = await store.recent_runs()
        monkeypatch.undo()
        [(counts, ids)] = [(q, p) for q, p in sent if "FROM leads WHERE run_id IN" in q]
        async with store._lock:
            plan = "\n".join(
                r[0] for r in await store.db.raw.fetch("EXPLAIN " + to_postgres(counts), *ids)
            )
    finally:
        await store.close()
        await drop_schema(schema)
    assert (run["delivered_now"], run["refused_now"]) == (500, 0)
    assert "leads_run_counted" in plan and "Seq Scan" not in plan, plan
