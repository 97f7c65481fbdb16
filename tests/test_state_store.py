"""The SQLite store's outbox semantics: claim, complete, retry, and changes while in flight."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from syncd.core.model import Action, LeadWrite, ResultKind
from syncd.state.base import ChunkWrite, Completion
from syncd.state.sqlite import SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "state.db")
    await s.open()
    yield s
    await s.close()


async def enqueue(store: SqliteStore, key: str, hash_: str, cursor: str | None = None) -> None:
    write = ChunkWrite("run1", "crm", "a.csv", cursor=cursor)
    write.leads["jodo"] = [
        LeadWrite(key, hash_, "raw", f'{{"key":"{key}","phone":"+1"}}', Action.UPSERT, "new", 2)
    ]
    await store.apply_chunk(write)


async def test_leads_and_cursor_commit_together(store: SqliteStore) -> None:
    await enqueue(store, "L1", "h1", cursor='{"line": 2}')
    assert await store.get_cursor("crm") == '{"line": 2}'
    assert (await store.counts())["jodo"]["pending"] == 1


async def test_a_claimed_lead_is_not_claimed_twice(store: SqliteStore) -> None:
    await enqueue(store, "L1", "h1")
    first = await store.claim("jodo", 10, 60)
    second = await store.claim("jodo", 10, 60)
    assert [q.key for q in first] == ["L1"] and second == []
    assert first[0].attempts == 1


async def test_a_change_while_in_flight_goes_back_to_the_outbox(store: SqliteStore) -> None:
    await enqueue(store, "L1", "h1")
    [claimed] = await store.claim("jodo", 10, 60)
    await enqueue(store, "L1", "h2")  # the CRM changed it meanwhile
    assert await store.claim("jodo", 10, 60) == []  # still with its worker
    await store.complete("jodo", [Completion("L1", claimed.hash, ResultKind.DELIVERED)])
    [again] = await store.claim("jodo", 10, 60)
    assert again.hash == "h2" and again.delivered_hash == "h1"


async def test_retry_waits_for_its_time_and_failed_is_a_dead_letter(store: SqliteStore) -> None:
    await enqueue(store, "L1", "h1")
    await store.claim("jodo", 10, 60)
    await store.complete(
        "jodo", [Completion("L1", "h1", ResultKind.RETRY, "HTTP 503", next_at=time.time() + 60)]
    )
    assert await store.claim("jodo", 10, 60) == []
    assert (await store.next_due("jodo") or 0) > time.time() + 50
    await store.complete("jodo", [Completion("L1", "h1", ResultKind.RETRY, "HTTP 503", final=True)])
    assert (await store.counts())["jodo"]["failed"] == 1
    assert await store.failure_reasons() == [("jodo", "HTTP 503", 1)]
    assert await store.retry_failed("jodo", reason="503") == 1
    assert [q.key for q in await store.claim("jodo", 10, 60)] == ["L1"]


async def test_orphaned_leases_return_to_the_outbox(store: SqliteStore) -> None:
    await enqueue(store, "L1", "h1")
    await store.claim("jodo", 10, 60)
    assert await store.release_inflight() == 1
    [again] = await store.claim("jodo", 10, 60)
    assert again.attempts == 1  # a crash is not the lead's fault


async def test_newer_schema_than_this_syncd_is_refused(tmp_path: Path) -> None:
    import sqlite3

    from syncd.errors import StoreError

    db = tmp_path / "future.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version=999")
    with pytest.raises(StoreError, match="newer than this syncd"):
        await SqliteStore(db).open()


async def test_a_resync_lookup_returns_only_new_changed_and_same_file_keys(
    store: SqliteStore,
) -> None:
    write = ChunkWrite("run1", "crm", "day1.csv")
    write.leads["jodo"] = [
        LeadWrite(k, "h", f"raw-{k}", '{"key":"x","phone":"+1"}', Action.UPSERT, "new", i)
        for i, k in enumerate(("SAME", "EDITED", "LATER"), start=2)
    ]
    await store.apply_chunk(write)

    in_day2 = await store.lookup_changed(
        "jodo",
        [("SAME", "raw-SAME"), ("EDITED", "raw-EDITED-v2"), ("NEW", "raw-NEW")],
        "day2.csv",
    )
    # A key repeated later in the file that stored it must come back, even unchanged.
    in_day1 = await store.lookup_changed("jodo", [("LATER", "raw-LATER")], "day1.csv")

    assert set(in_day2) == {"EDITED", "NEW"}
    assert in_day2["NEW"] is None
    edited = in_day2["EDITED"]
    assert edited is not None and edited.raw_hash == "raw-EDITED" and edited.hash == "h"
    assert set(in_day1) == {"LATER"} and in_day1["LATER"] is not None
    assert in_day1["LATER"].line == 4


async def test_a_full_disk_is_a_clear_error_and_nothing_is_lost(store: SqliteStore) -> None:
    from syncd.errors import StoreError

    await enqueue(store, "K0", "h0", cursor="c0")
    async with store.db.execute("PRAGMA page_count") as cur:
        row = await cur.fetchone()
    # SQLite's page cap answers exactly as a full disk does (SQLITE_FULL).
    await store.db.execute(f"PRAGMA max_page_count = {row[0] if row else 1}")
    big = ChunkWrite("run1", "crm", "b.csv", cursor="c1")
    big.leads["jodo"] = [
        LeadWrite(f"K{i}", "h", "r" * 500, '{"key":"x","phone":"+1"}', Action.UPSERT, "new", i)
        for i in range(1, 2000)
    ]
    with pytest.raises(StoreError, match="is full") as err:
        await store.apply_chunk(big)
    assert "nothing is lost" in str(err.value) and "Traceback" not in str(err.value)
    assert await store.get_cursor("crm") == "c0"  # the chunk left no trace
    assert await store.pending_count("jodo") == 1

    await store.db.execute("PRAGMA max_page_count = 1073741823")  # space freed
    await store.apply_chunk(big)
    assert await store.get_cursor("crm") == "c1"
    assert await store.pending_count("jodo") == 2000
