"""The push's per-batch look-ups read indexes, never every lead of the sink.

A full scan per batch makes the push slower the bigger the outbox (a batch's cost grows
with the store, the whole push with its square): 107 s for 200,000 leads where 50,000
took 10. The statements the store really sends are captured and their plans read.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from syncd.core.model import Action
from syncd.state.base import ChunkWrite, LeadWrite
from syncd.state.sqlite import SqliteStore
from tests.support.stores import plan_of, traced

LEADS = 3000


def lead(i: int, action: Action = Action.UPSERT) -> LeadWrite:
    phone = f"+9198200{i:05d}"
    return LeadWrite(f"K{i:05d}", f"h{i}", "raw", f'{{"key":"K{i:05d}","phone":"{phone}"}}',
                     action, "new", i)  # fmt: skip


@asynccontextmanager
async def a_filled_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """Yield a store holding LEADS queued leads, closed afterwards."""
    store = SqliteStore(tmp_path / "state.db")
    await store.open()
    try:
        chunk = ChunkWrite("run", "crm", "a.csv")
        chunk.leads["jodo"] = [lead(i) for i in range(LEADS)]
        await store.apply_chunk(chunk)
        yield store
    finally:
        await store.close()


async def statements_of(tmp_path: Path) -> list[str]:
    async with a_filled_store(tmp_path) as store:
        sent: list[str] = []
        await store.db._execute(store.db._conn.set_trace_callback, sent.append)  # type: ignore[attr-defined]
        numbers = [f"+9198200{i:05d}" for i in range(0, 1000, 2)]  # a batch's 500
        await store.number_holders("jodo", numbers)
        await store.queued_removals("jodo")
        await store.db._execute(store.db._conn.set_trace_callback, None)  # type: ignore[attr-defined]
        return [s for s in sent if "FROM" in s.upper()]


async def test_a_batch_s_numbers_and_queued_removals_are_read_through_indexes(
    tmp_path: Path,
) -> None:
    sent = await statements_of(tmp_path)
    assert len(sent) == 2, sent
    with sqlite3.connect(tmp_path / "state.db") as db:
        for statement in sent:
            plan = " | ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + statement))
            assert "USING INDEX leads_phone" in plan or "USING INDEX leads_removals" in plan, plan
            assert "PRIMARY KEY (sink=?)" not in plan and "SCAN l" not in plan, plan


async def test_a_batch_s_numbers_are_read_through_the_phone_index_as_bound_parameters(
    tmp_path: Path,
) -> None:
    """Planned as the store runs it, its values bound (not written into its text, as the
    trace shows them): with the sink a parameter, SQLite took the outbox's index, every
    lead of the sink, for the leads of a batch's numbers (200 ms a batch on 200,000
    leads), once the leads had row ids and the phone index no longer carried the sink."""
    async with a_filled_store(tmp_path) as store:
        query, params = store.number_holders_query([f"+9198200{i:05d}" for i in range(0, 400, 2)])
        plan = " | ".join(
            str(row[3])
            for row in await store.db.execute_fetchall(
                "EXPLAIN QUERY PLAN " + query, (*params, "jodo")
            )
        )
    assert "SEARCH l USING INDEX leads_phone" in plan, plan


async def test_claims_left_in_flight_are_found_through_the_outbox_index(tmp_path: Path) -> None:
    """Each run's start and end give back what a crash or a cut-off left in flight: read
    through leads_queued, not every lead (150 ms on 200,000 leads, twice a run)."""
    async with a_filled_store(tmp_path) as store:
        async with traced(store) as sent:
            await store.release_inflight("jodo")
        plan = " | ".join(await plan_of(store, sent, "UPDATE leads"))
    assert "USING INDEX leads_queued" in plan and "SCAN leads |" not in plan + " |", plan
