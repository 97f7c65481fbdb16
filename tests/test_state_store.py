"""The store contract, run against both stores (SQLite and PostgreSQL): the outbox, claims,
retries, changes while in flight, lookups, outcomes, writeback marks, lists and history."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from syncd.core.feed import FeedCounts
from syncd.core.model import Action, LeadWrite, Outcome, Reject, ResultKind
from syncd.core.refusals import Refusal
from syncd.state.base import (
    CLOSED,
    RETURNING,
    WITHDRAWN,
    BlockedLead,
    ChunkWrite,
    Completion,
    DncVersion,
    WindowMoves,
)
from syncd.state.postgres import dsn_of
from syncd.state.sqlite import SqliteStore, consent_query, pairs_per_query
from tests.support.stores import (
    KINDS,
    fresh_store,
    new_schema,
    pg_url,
    plan_of,
    store_at_schema,
    traced,
)


@pytest.fixture(params=KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with fresh_store(request.param, tmp_path) as s:
        yield s


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with fresh_store("sqlite", tmp_path) as s:
        yield s


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


async def test_a_wait_syncd_chose_gives_its_attempt_back_and_a_try_keeps_it(
    store: SqliteStore,
) -> None:
    await enqueue(store, "L1", "h1")
    await enqueue(store, "L2", "h2")
    await store.claim("jodo", 10, 60)
    await store.complete(
        "jodo",
        [
            Completion("L1", "h1", ResultKind.RETRY, "settling", next_at=0.0, spent=False),
            Completion("L2", "h2", ResultKind.RETRY, "HTTP 503", next_at=0.0),
        ],
    )
    again = {q.key: q.attempts for q in await store.claim("jodo", 10, 60)}
    assert again == {"L1": 1, "L2": 2}  # the claim counts the try it may become


async def test_a_lead_sent_and_unanswered_is_in_doubt_with_the_number_it_was_sent_with(
    store: SqliteStore,
) -> None:
    await enqueue(store, "L1", "h1")  # sent, the answer lost: in doubt
    await enqueue(store, "L2", "h2")  # sent, refused: not in doubt
    await enqueue(store, "L3", "h3")  # claimed, given back unsent: not in doubt
    await store.claim("jodo", 10, 60)
    await store.complete(
        "jodo",
        [
            Completion("L1", "h1", ResultKind.RETRY, "timed out", next_at=0.0, attempted="+1"),
            Completion("L2", "h2", ResultKind.REJECTED, "Duplicate record"),
        ],
    )
    await store.requeue("jodo", ["L3"], 0.0, "campaign paused")
    for found in (
        await store.lookup("jodo", ["L1", "L2", "L3"]),
        await store.lookup_changed("jodo", [("L1", "x"), ("L2", "x"), ("L3", "x")], "b.csv"),
    ):
        doubt = {k: (s.in_doubt, s.attempted) for k, s in found.items() if s is not None}
        assert {k: (bool(d), a) for k, (d, a) in doubt.items()} == {
            "L1": (True, "+1"),
            "L2": (False, None),
            "L3": (False, None),
        }


async def doubt_of(store: SqliteStore, key: str) -> tuple[bool, str | None]:
    found = (await store.lookup("jodo", [key]))[key]
    return bool(found.in_doubt), found.attempted


async def test_a_lead_in_doubt_stays_in_doubt_with_the_number_sent_when_the_crm_changes_it(
    store: SqliteStore,
) -> None:
    await enqueue(store, "L1", "h1")  # sent as +1, the answer lost
    await store.claim("jodo", 10, 60)
    await store.complete(
        "jodo", [Completion("L1", "h1", ResultKind.RETRY, "timed out", next_at=0.0, attempted="+1")]
    )
    changed = ChunkWrite("run2", "crm", "b.csv")
    changed.leads["jodo"] = [
        LeadWrite("L1", "h2", "raw2", '{"key":"L1","phone":"+2"}', Action.UPSERT, "changed", 2)
    ]
    await store.apply_chunk(changed)  # the new version is queued, not sent yet
    assert await doubt_of(store, "L1") == (True, "+1")  # the dialer may hold +1


async def test_a_lead_in_doubt_refused_or_given_up_on_and_retried_stays_in_doubt(
    store: SqliteStore,
) -> None:
    await enqueue(store, "L1", "h1")
    await enqueue(store, "L2", "h2")
    await store.claim("jodo", 10, 60)
    lost = [
        Completion(k, h, ResultKind.RETRY, "timed out", next_at=0.0, attempted="+1")
        for k, h in (("L1", "h1"), ("L2", "h2"))
    ]
    await store.complete("jodo", lost)
    await store.claim("jodo", 10, 60)
    await store.complete(
        "jodo",
        [
            # the first upload had landed: the dialer says it holds the record already
            Completion("L1", "h1", ResultKind.REJECTED, "Duplicate record"),
            Completion("L2", "h2", ResultKind.RETRY, "timed out", final=True, attempted="+1"),
        ],
    )
    assert await doubt_of(store, "L1") == (True, "+1")
    assert await store.retry_failed("jodo") == 2  # an operator's `syncd retry`
    assert await doubt_of(store, "L1") == (True, "+1")
    assert await doubt_of(store, "L2") == (True, "+1")


async def test_a_lead_delivered_after_its_doubt_is_no_longer_in_doubt(store: SqliteStore) -> None:
    await enqueue(store, "L1", "h1")
    await store.claim("jodo", 10, 60)
    await store.complete(
        "jodo", [Completion("L1", "h1", ResultKind.RETRY, "timed out", next_at=0.0, attempted="+1")]
    )
    await store.claim("jodo", 10, 60)
    await store.complete("jodo", [Completion("L1", "h1", ResultKind.DELIVERED, vendor_ref="r1")])
    assert await doubt_of(store, "L1") == (False, None)


@pytest.mark.parametrize("kind", KINDS)
async def test_an_upgraded_store_keeps_its_leads_in_doubt_and_drops_per_lead_links(
    kind: str, tmp_path: Path
) -> None:
    def lead_row(key: str, state: str, attempts: int, delivered: str = "NULL") -> str:
        return (
            "INSERT INTO leads (sink, key, hash, lead_json, action, state, attempts, next_at,"
            " delivered_hash, created_at, updated_at) VALUES ('jodo', "
            f"'{key}', 'h', '{{\"phone\": \"+{key[1:]}\"}}', 'upsert', '{state}', {attempts},"
            f" 0, {delivered}, 0, 0)"
        )

    old = [
        lead_row("L1", "pending", 1),  # sent, its answer lost
        lead_row("L2", "pending", 0),  # never sent
        lead_row("L3", "delivered", 1, "'h'"),
    ]
    links = [("jodo:jd:recording", "L1", '{"call_id": "c1", "url": "u"}')]
    async with store_at_schema(kind, tmp_path, 16, links, old) as store:
        doubts = {key: await doubt_of(store, key) for key in ("L1", "L2", "L3")}
        left = await store.kv_get("jodo:jd:recording", "L1")
    assert doubts == {"L1": (True, "+1"), "L2": (False, None), "L3": (False, None)}
    assert left is None


async def test_a_removal_queued_while_its_upsert_was_in_flight_takes_the_number_sent(
    store: SqliteStore,
) -> None:
    await enqueue(store, "L1", "h1")
    await enqueue(store, "L2", "h2")
    await store.claim("jodo", 10, 60)
    gone = ChunkWrite("run2", "crm", "b.csv")
    gone.leads["jodo"] = [
        LeadWrite(k, f"d{k}", "r", f'{{"deleted": true, "key": "{k}"}}', Action.DELETE,
                  "skipped", 2, state="removed")
        for k in ("L1", "L2")
    ]  # fmt: skip
    await store.apply_chunk(gone)
    await store.complete(
        "jodo",
        [
            Completion("L1", "h1", ResultKind.RETRY, "timed out", next_at=0.0, attempted="+1"),
            Completion("L2", "h2", ResultKind.REJECTED, "Duplicate record"),
        ],
    )
    removals = {q.key: q for q in await store.claim("jodo", 10, 60)}
    assert removals["L1"].action is Action.DELETE and removals["L1"].lead.phone == "+1"
    assert removals["L2"].action is Action.DELETE and removals["L2"].lead.phone == ""


async def test_orphaned_leases_return_to_the_outbox_in_doubt(store: SqliteStore) -> None:
    await enqueue(store, "L1", "h1")
    await store.claim("jodo", 10, 60)
    assert await store.release_inflight() == 1
    # a push killed or cut off may have sent its request: the dialer may hold the lead
    assert (await store.lookup("jodo", ["L1"]))["L1"].in_doubt  # type: ignore[union-attr]
    [again] = await store.claim("jodo", 10, 60)
    assert again.attempts == 2


async def test_newer_schema_than_this_syncd_is_refused(tmp_path: Path) -> None:
    import sqlite3

    from syncd.errors import StoreError

    db = tmp_path / "future.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version=999")
    with pytest.raises(
        StoreError, match=r"this syncd knows schema \d+, .* is at schema 999: upgrade"
    ):
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


async def test_a_resync_lookup_longer_than_one_query_returns_every_changed_key(
    store: SqliteStore,
) -> None:
    keys = [f"L{i:05d}" for i in range(pairs_per_query(250_000) + 101)]
    write = ChunkWrite("run1", "crm", "day1.csv")
    write.leads["jodo"] = [
        LeadWrite(k, "h", f"raw-{k}", '{"key":"x","phone":"+1"}', Action.UPSERT, "new", i)
        for i, k in enumerate(keys, start=2)
    ]
    await store.apply_chunk(write)
    edited = set(keys[::997]) | {keys[-1]}

    found = await store.lookup_changed(
        "jodo",
        [(k, f"raw-{k}" + ("-v2" if k in edited else "")) for k in keys] + [("NEW", "raw")],
        "day2.csv",
    )

    assert set(found) == edited | {"NEW"}
    assert found["NEW"] is None and all(found[k] is not None for k in edited)


async def test_a_resync_compares_each_row_in_the_raw_hash_index_not_the_leads_rows(
    sqlite_store: SqliteStore,
) -> None:
    """A lead's row carries its JSON: read by the table, a re-sync of an export whose keys
    are not in the store's order (e-mail keys, an export by date) read most of it from
    disk. The comparison reads the index of keys and raw hashes (migration 18); only the
    leads that differ are read whole."""
    store = sqlite_store
    write = ChunkWrite("run1", "crm", "day1.csv")
    write.leads["jodo"] = [
        LeadWrite(f"L{i}", "h", f"raw-{i}", '{"key":"x","phone":"+1"}', Action.UPSERT, "new", i)
        for i in range(50)
    ]
    await store.apply_chunk(write)
    async with traced(store) as sent:
        found = await store.lookup_changed(
            "jodo",
            [(f"L{i}", f"raw-{i}" + ("-v2" if i == 7 else "")) for i in range(50)],
            "day2.csv",
        )

    assert set(found) == {"L7"} and found["L7"] is not None and found["L7"].raw_hash == "raw-7"
    plan = await plan_of(store, sent, "WITH c(key, raw)")
    searches = [step for step in plan if "SEARCH" in step]
    assert searches == ["SEARCH l USING COVERING INDEX leads_raw (sink=? AND key=?) LEFT-JOIN"]


async def test_a_claim_takes_the_due_leads_as_queued_from_the_outbox_index_unsorted(
    sqlite_store: SqliteStore,
) -> None:
    """The leads due first, then in the order they were queued (their row ids, since
    migration 18): read from the outbox's index without sorting the pending leads, and a
    batch's rows lie together in the table. In key order, an index without the key
    sorted every pending lead for each claim (88 us a lead claimed, on 200,000 queued),
    and with scattered keys each batch read rows all over the table."""
    store = sqlite_store
    for key in ("B", "A", "C"):
        await enqueue(store, key, "h")
    async with traced(store) as sent:
        claimed = await store.claim("jodo", 2, 60.0)

    assert [q.key for q in claimed] == ["A", "B"]  # B and A, queued first; sorted by key
    plan = await plan_of(store, sent, "UPDATE leads SET state = 'inflight'")
    assert any("USING COVERING INDEX leads_outbox" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan


async def test_a_store_upgraded_to_row_ids_keeps_every_lead_whole_and_its_ledger_link(
    tmp_path: Path,
) -> None:
    """SQLite's step 18 copies the leads into a table with row ids: every column of every
    lead is kept, and a lead's ledger still goes with it."""
    columns = (
        "sink, key, hash, raw_hash, lead_json, action, state, attempts, next_at, lease_until,"
        " last_error, vendor_ref, delivered_hash, origin, line, run_id, klass, created_at,"
        " updated_at, delivered_at, waits_for, dial_until, claim_token, source, doubt_number"
    )
    rows = [
        ("jodo", "L1", "h1", "r1", '{"key":"L1","phone":"+1"}', "upsert", "delivered", 1, 0.0,
         None, None, "ref-1", "h1", "a.csv", 2, "run1", "new", 1.0, 2.0, 3.0, None, 4.0,
         None, "crm", None),
        ("jodo", "L2", "h2", "r2", '{"key":"L2","phone":"+2"}', "delete", "pending", 2, 5.0,
         6.0, "HTTP 503", None, None, "a.csv", 3, "run1", "deleted", 1.0, 2.0, None, "L1",
         None, "tok", "crm", "+2"),
    ]  # fmt: skip
    values = ", ".join(
        "(" + ", ".join("NULL" if v is None else repr(v) for v in row) + ")" for row in rows
    )
    old = [
        f"INSERT INTO leads ({columns}) VALUES {values}",
        "INSERT INTO sink_ledger (sink, key, number) VALUES ('jodo', 'L1', '+1')",
        "INSERT INTO sink_ledger_numbers (sink, number, key) VALUES ('jodo', '+1', 'L1')",
    ]
    async with store_at_schema("sqlite", tmp_path, 17, [], old) as store:
        kept = await store.db.execute_fetchall(f"SELECT {columns} FROM leads ORDER BY key")
        await store.db.execute("DELETE FROM leads WHERE key = 'L1'")
        ledger = await store.db.execute_fetchall(
            "SELECT key FROM sink_ledger UNION ALL SELECT key FROM sink_ledger_numbers"
        )
        (kind,) = await store.db.execute_fetchall(
            "SELECT sql FROM sqlite_master WHERE name = 'leads'"
        )
    assert [tuple(r) for r in kept] == rows
    assert list(ledger) == []  # gone with its lead
    assert "WITHOUT ROWID" not in kind[0]


async def test_a_removal_queued_while_its_lead_in_doubt_was_in_flight_names_that_number(
    store: SqliteStore,
) -> None:
    """A push cut off by the run's deadline left L in doubt (the dialer may hold it under
    +15550000001). The next run claimed it again; the CRM's deletion arrived while it was
    in flight, so the pull could not name the number; the push then only waited for the
    doubt to settle (no request, no number of its own). The removal must still go out
    under the number in doubt: settled as "never delivered", the dialer kept the lead
    the CRM deleted (the quirk catalogue's uContact cut_mid_request, 2 runs in 5 under load).
    """
    write = ChunkWrite("run1", "crm", "monday.csv")
    write.leads["jodo"] = [LeadWrite("L", "h1", "raw1", '{"key":"L","phone":"+15550000001"}',
                                     Action.UPSERT, "new", 2)]  # fmt: skip
    await store.apply_chunk(write)
    await store.claim("jodo", 10, 60.0)
    await store.release_inflight("jodo")  # the deadline cut the request off: in doubt
    (again,) = await store.claim("jodo", 10, 60.0)
    gone = ChunkWrite("run2", "crm", "tuesday.csv")  # planned while L is in flight
    gone.leads["jodo"] = [LeadWrite("L", "h2", "raw2", '{"key":"L","deleted":true}',
                                    Action.DELETE, "deleted", 2)]  # fmt: skip
    await store.apply_chunk(gone)
    settling = Completion(
        "L", again.hash, ResultKind.RETRY, "settling", next_at=0.0, claim=again.claim, spent=False
    )  # syncd's own wait: no request, so no number of its own
    await store.complete("jodo", [settling])
    store.settle(again.claim)

    (removal,) = await store.claim("jodo", 10, 60.0)

    assert removal.action is Action.DELETE and removal.delivered_hash is None
    assert removal.lead.phone == "+15550000001"  # the record the dialer may hold


def test_a_lookup_query_stays_under_the_host_parameter_limit() -> None:
    assert 2 * pairs_per_query(999) + 2 <= 999  # SQLite before 3.32, as built by default
    assert 2 * pairs_per_query(32766) + 2 <= 32766
    assert pairs_per_query(5) == 1


async def test_a_refusal_is_remembered_per_sink_and_key_replaced_and_pruned_with_rejects(
    store: SqliteStore,
) -> None:
    first = ChunkWrite("run1", "crm", "day1.csv")
    first.refused = [
        ("jodo", Refusal("B1", "raw-1", "fp", "invalid phone '12345' in column 'phone'")),
        ("jodo", Refusal("B2", "raw-2", "fp", "blocked (dnc_crm): the CRM marks it", "{}", True)),
        ("ameyo", Refusal("B1", "raw-9", "fp", "missing phone")),
    ]
    await store.apply_chunk(first)
    later = ChunkWrite("run2", "crm", "day2.csv")
    later.refused = [("jodo", Refusal("B1", "raw-1b", "fp2", "invalid phone '1'"))]
    await store.apply_chunk(later)

    found = await store.refusals("jodo", ["B1", "B2", "NOPE"])
    assert found == {
        "B1": Refusal("B1", "raw-1b", "fp2", "invalid phone '1'"),
        "B2": Refusal("B2", "raw-2", "fp", "blocked (dnc_crm): the CRM marks it", "{}", True),
    }
    assert set(await store.refusals("ameyo", ["B1", "B2"])) == {"B1"}
    await store.prune({"rejects": -3600})  # everything is older than an hour ahead
    assert await store.refusals("jodo", ["B1", "B2"]) == {}


async def test_a_full_disk_is_a_clear_error_and_nothing_is_lost(
    sqlite_store: SqliteStore,
) -> None:
    store = sqlite_store
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


# -- the rest of the contract ------------------------------------------------------------


def lead_json(key: str, phone: str = "+15550100", alt: tuple[str, ...] = ()) -> str:
    import json

    return json.dumps({"key": key, "phone": phone, "alt_phones": list(alt)})


async def test_lookup_hold_release_requeue_and_history(store: SqliteStore) -> None:
    await enqueue(store, "L1", "h1")
    await enqueue(store, "L2", "h2")
    found = await store.lookup("jodo", ["L1", "L2", "NOPE"])
    assert sorted(found) == ["L1", "L2"] and found["L1"].hash == "h1"
    assert not found["L1"].delivered and found["L1"].line == 2
    claimed = await store.claim("jodo", 10, 60)
    await store.hold("jodo", [("L1", time.time() - 1, "held (window): closed")])
    await store.requeue("jodo", ["L2"], 0, "dialer down")
    assert await store.held("jodo") == (1, pytest.approx(time.time() - 1, abs=5))
    assert (await store.gate_counts())["jodo"] == {"held window": 1}
    assert await store.release_held("jodo", time.time()) == 1
    again = await store.claim("jodo", 10, 60)
    assert [q.key for q in again] == ["L1", "L2"]
    assert [q.attempts for q in again] == [q.attempts for q in claimed]  # not spent
    await store.complete(
        "jodo",
        [
            Completion("L1", "h1", ResultKind.DELIVERED, vendor_ref="ref-1", reply="ok"),
            Completion("L2", "h2", ResultKind.REJECTED, "bad number"),
        ],
    )
    history = await store.lead_history("L1")
    assert history["leads"][0]["state"] == "delivered"
    assert history["leads"][0]["vendor_ref"] == "ref-1"
    assert [e["kind"] for e in history["events"]] == ["gate.held", "push.delivered"]
    assert await store.delivered("jodo") == [("L1", "ref-1", lead_json_of(history))]
    assert await store.delivered_since(time.time() - 60) == 1
    assert await store.failure_reasons() == [("jodo", "bad number", 1)]
    assert await store.retry_failed("jodo", key="L2") == 1
    assert [s.key async for s in store.queued("jodo")] == ["L2"]
    assert set(await store.oldest_pending()) == {"jodo"}
    audit = [row async for row in store.audit(0, time.time() + 1)]
    assert [row["kind"] for row in audit] == ["gate.held", "push.delivered", "push.rejected"]


def lead_json_of(history: dict[str, object]) -> str:
    leads = history["leads"]
    assert isinstance(leads, list)
    return str(leads[0]["lead_json"])


async def test_outcomes_and_agents_are_versioned_and_written_back_once(
    store: SqliteStore,
) -> None:
    from datetime import UTC, datetime

    from syncd.core.model import AgentStatus, Outcome

    now = datetime.now(UTC)
    first = Outcome("jodo", "L1", now, status="busy", call_id="c1", agent="asha")
    assert await store.record_outcomes([first]) == 1
    assert await store.record_outcomes([first]) == 0  # unchanged
    later = Outcome("jodo", "L1", now, status="connected", call_id="c2", agent="asha")
    assert await store.record_outcomes([later]) == 1
    assert (await store.last_call("jodo", "L1") or {})["call_id"] == "c2"
    [dumped] = await store.outcome_dump()
    assert (dumped["version"], dumped["status"]) == (2, "connected")
    assert await store.record_agents([AgentStatus("jodo", "asha", "1", "Ready")]) == 1
    assert await store.record_agents([AgentStatus("jodo", "asha", "1", "Ready")]) == 0
    assert [a["login"] for a in await store.agent_dump()] == ["asha"]

    pending = await store.pending_writeback("crm")
    assert [(p["key"], p["version"]) for p in pending] == [("L1", 2)]
    await store.mark_written("crm", [("jodo", "L1", 2)], state="ok")
    assert await store.pending_writeback("crm") == []
    agents = await store.pending_writeback("crm", "agents")
    await store.mark_written("crm", [("jodo", "asha", agents[0]["version"])], refused="no row")
    assert await store.refused_writebacks("crm") == [("no row", 1)]
    assert await store.retry_writeback("crm", reason="no") == 1
    assert len(await store.pending_writeback("crm", "agents")) == 1
    assert await store.kv_get("writeback.state", "crm") == "ok"


async def test_a_push_s_own_batch_is_not_among_the_holders_of_its_numbers(
    store: SqliteStore,
) -> None:
    write = ChunkWrite("run1", "crm", "a.csv")
    write.leads["jodo"] = [
        LeadWrite("A", "ha", "ra", lead_json("A", "+15550001"), Action.UPSERT, "new", 2),
        LeadWrite("B", "hb", "rb", lead_json("B", "+15550002", ("+15550001",)), Action.UPSERT,
                  "new", 3),
        LeadWrite("C", "hc", "rc", lead_json("C", "+15550001"), Action.UPSERT, "new", 4),
    ]  # fmt: skip
    await store.apply_chunk(write)
    numbers = ["+15550001", "+15550002"]
    assert sorted(h.key for h in await store.number_holders("jodo", numbers)) == ["A", "B", "C"]
    besides = await store.number_holders("jodo", numbers, besides={"A", "B"})
    assert [h.key for h in besides] == ["C"]
    by_alternate = await store.number_holders("jodo", ["+15550001"], alternates=True, besides={"A"})
    assert sorted(h.key for h in by_alternate) == ["B", "C"]
    assert await store.number_holders("jodo", numbers, besides={"A", "B", "C"}) == []


async def test_do_not_call_numbers_find_leads_by_main_and_alternate_number(
    store: SqliteStore,
) -> None:
    write = ChunkWrite("run1", "crm", "a.csv")
    write.leads["jodo"] = [
        LeadWrite("A", "ha", "ra", lead_json("A", "+15550001"), Action.UPSERT, "new", 2),
        LeadWrite("B", "hb", "rb", lead_json("B", "+15550002", ("+15550009",)), Action.UPSERT,
                  "new", 3),
        LeadWrite("C", "hc", "rc", lead_json("C", "+15550003"), Action.UPSERT, "new", 4),
    ]  # fmt: skip
    await store.apply_chunk(write)
    listing = ChunkWrite("run1", "dnc", "dnc.csv")
    listing.dnc = [("dnd", "+15550001"), ("dnd", "+15550009"), ("dnd", "+15550001")]
    await store.apply_chunk(listing)
    assert await store.dnc_matches(["dnd"], ["+15550001", "+15550003"]) == {"+15550001": "dnd"}
    listed = sorted((x.key, x.number) for x in await store.listed_leads("dnd"))
    assert listed == [("A", "+15550001"), ("B", "+15550009")]
    checked = ChunkWrite("run1", "dnc", "dnd")
    checked.dnc_checked = "dnd"
    await store.apply_chunk(checked)
    assert await store.listed_leads("dnd") == []  # matched once


async def test_a_snapshot_version_is_staged_then_switched_to_in_one_commit_and_recorded(
    store: SqliteStore,
) -> None:
    first = ChunkWrite("run1", "dnc", "v1.csv")
    first.dnc_restage = "dnd"
    first.dnc_staged = [("dnd", "+15550001"), ("dnd", "+15550002")]
    first.dnc_version = DncVersion("dnd", "v1.csv", 2, 0, 1000.0, "aa" * 32, "snapshot")
    await store.apply_chunk(first)
    # The next version, staged over two chunks: the one in force is untouched meanwhile.
    part = ChunkWrite("run2", "dnc", "v2.csv")
    part.dnc_restage = "dnd"
    part.dnc_staged = [("dnd", "+15550002")]
    await store.apply_chunk(part)
    assert await store.dnc_staged_origin("dnd") == "v2.csv"
    assert await store.dnc_matches(["dnd"], ["+15550001"]) == {"+15550001": "dnd"}
    last = ChunkWrite("run2", "dnc", "v2.csv")
    last.dnc_staged = [("dnd", "+15550003")]
    last.dnc_version = DncVersion("dnd", "v2.csv", 2, 0, 2000.0, "bb" * 32, "snapshot")
    await store.apply_chunk(last)
    listed = await store.dnc_matches(["dnd"], ["+15550001", "+15550002", "+15550003"])
    assert listed == {"+15550002": "dnd", "+15550003": "dnd"}
    assert await store.dnc_staged_origin("dnd") is None
    versions = await store.dnc_versions("dnd")
    assert [(v.version, v.file, v.numbers, v.added, v.removed) for v in versions] == [
        (2, "v2.csv", 2, 1, 1),
        (1, "v1.csv", 2, 2, 0),
    ]
    assert (versions[0].sha256, versions[0].file_date, versions[0].mode) == (
        "bb" * 32,
        2000.0,
        "snapshot",
    )
    # Only the new number waits to be matched against the leads.
    assert await store.listed_leads("dnd") == []  # no lead holds any of them


async def test_leads_a_list_keeps_back_are_kept_until_unblocked(store: SqliteStore) -> None:
    keep = ChunkWrite("run1", "crm", "a.csv")
    keep.dnc_blocked = [
        BlockedLead("jodo", "A", "dnd", "ha", "ra", lead_json("A", "+15550001")),
        BlockedLead("jodo", "B", "dnd", "hb", None, lead_json("B", "+15550002")),
    ]
    await store.apply_chunk(keep)
    assert [b.key for b in await store.blocked_leads("dnd")] == ["A", "B"]
    assert await store.blocked_leads("other") == []
    drop = ChunkWrite("run2", "crm", "b.csv")
    drop.dnc_unblocked = [("jodo", "A"), ("jodo", "Z")]
    await store.apply_chunk(drop)
    kept = await store.blocked_leads("dnd")
    assert [(b.key, b.hash, b.raw_hash) for b in kept] == [("B", "hb", None)]


async def test_rejects_runs_kv_and_pruning(store: SqliteStore) -> None:
    from syncd.core.model import Reject

    write = ChunkWrite("run1", "crm", "a.csv")
    write.rejects = [("jodo", Reject("crm", "invalid phone", 3, "a.csv", ["x", "y"], "K3"))]
    await store.apply_chunk(write)
    assert await store.rejects_for_origin("crm", "a.csv") == [(3, "jodo", "invalid phone",
                                                               '["x", "y"]')]  # fmt: skip
    assert [r["key"] for r in await store.recent_rejects()] == ["K3"]
    assert [r["reason"] async for r in store.all_rejects("crm")] == ["invalid phone"]
    assert [r["line"] for r in await store.run_rejects("run1")] == [3]
    await store.start_run("r1", "once")
    await store.finish_run("r1", {"ok": True})
    last = await store.last_run()
    assert last is not None and last["summary"] == {"ok": True}
    await store.kv_set("s", "n", "v")
    assert await store.kv_get("s", "n") == "v"
    await store.kv_set("s", "n", None)
    assert await store.kv_get("s", "n") is None
    for name in ("a", "b"):
        await store.kv_set("s", name, name.upper())
    await store.kv_set("t", "c", "other scope")
    # a batch's names at once: those set, each once, whatever else it asks for
    assert await store.kv_many("s", ["a", "b", "c", "a", "zz"]) == {"a": "A", "b": "B"}
    await store.add_event("jodo", "K3", "note", "hello")
    pruned = await store.prune({"events": -3600, "rejects": -3600, "runs": -3600})
    # the last run is kept for `status`; an event or a refused row past its age is not
    assert pruned == {"events": 1, "rejects": 1, "runs": 0}
    assert await store.recent_rejects() == [] and await store.last_run() is not None
    assert await store.size_bytes() > 0 and await store.integrity_ok()


async def test_a_number_is_found_with_its_live_holders_and_a_lead_waits_behind_one(
    store: SqliteStore,
) -> None:
    write = ChunkWrite("run1", "crm", "a.csv")
    write.leads["jodo"] = [
        LeadWrite("A", "ha", "ra", lead_json("A", "+15550001"), Action.UPSERT, "new", 2),
        LeadWrite("B", "hb", "rb", lead_json("B", "+15550002", ("+15550001",)), Action.UPSERT,
                  "new", 3),
        LeadWrite("C", "hc", "rc", lead_json("C", "+15550001"), Action.UPSERT, "new", 4),
        LeadWrite("D", "hd", "rd", lead_json("D", "+15550004"), Action.UPSERT, "new", 5),
    ]  # fmt: skip
    await store.apply_chunk(write)
    by_main = await store.number_holders("jodo", ["+15550001"])
    assert sorted(h.key for h in by_main) == ["A", "C"]
    with_alternates = await store.number_holders("jodo", ["+15550001"], alternates=True)
    assert sorted(h.key for h in with_alternates) == ["A", "B", "C"]
    assert {h.key: h.alt_phones for h in with_alternates}["B"] == ("+15550001",)

    claimed = {q.key: q for q in await store.claim("jodo", 10, 60)}
    await store.complete("jodo", [Completion("A", claimed["A"].hash, ResultKind.DELIVERED)])
    reason = "held (same_number): same number as lead A"
    await store.set_aside("jodo", [("C", time.time() + 300, reason, "A")])
    [holder] = [h for h in await store.number_holders("jodo", ["+15550001"]) if h.key == "A"]
    assert holder.in_dialer and holder.state == "delivered"
    assert await store.waiting() == [
        {"sink": "jodo", "key": "C", "action": "upsert", "waits_for": "A", "reason": reason}
    ]
    assert (await store.gate_counts())["jodo"] == {"held same_number": 1}
    assert await store.release_waiting("jodo", ["D"]) == 0
    assert await store.release_waiting("jodo", ["A"]) == 1
    assert await store.waiting() == []
    assert [q.key for q in await store.claim("jodo", 10, 60)] == ["C"]


async def test_a_push_s_look_ups_over_more_keys_than_one_statement_held_find_them_all(
    store: SqliteStore,
) -> None:
    """The push's and the poll's look-ups by many keys or numbers (a batch's numbers, the
    leads waiting behind it, its leads' claims, the stored outcomes) find each one, past
    the 500 a statement once carried (PostgreSQL sends them as one array)."""
    n = 1200
    write = ChunkWrite("run1", "crm", "a.csv")
    write.leads["jodo"] = [
        LeadWrite(f"K{i:04d}", f"h{i}", "r", lead_json(f"K{i:04d}", f"+1555{i:07d}"),
                  Action.UPSERT, "new", i)
        for i in range(n)
    ]  # fmt: skip
    await store.apply_chunk(write)
    numbers = [f"+1555{i:07d}" for i in range(0, n, 2)] + ["", "+15559999999", "+15550000000"]
    holders = await store.number_holders("jodo", numbers)
    assert sorted(h.key for h in holders) == [f"K{i:04d}" for i in range(0, n, 2)]

    claimed = await store.claim("jodo", n, 60)
    assert len(claimed) == n
    keys = [q.key for q in claimed]
    claim = claimed[0].claim or ""
    assert await store.still_claimed("jodo", claim, [*keys, "NOPE"]) == set(keys)
    # the first 700 delivered in one completion, one of them as another claim's (stale)
    done = [Completion(q.key, q.hash, ResultKind.DELIVERED, claim=q.claim) for q in claimed[:700]]
    done[650] = Completion(done[650].key, done[650].pushed_hash, ResultKind.DELIVERED,
                           claim="another")  # fmt: skip
    assert await store.complete("jodo", done) == [done[650].key]
    assert await store.pending_count("jodo") == n - 699

    behind = [(f"K{i:04d}", time.time() + 300, "held (same_number)", f"K{i - 600:04d}")
              for i in range(700, n)]  # fmt: skip
    await store.set_aside("jodo", behind)
    gone = [f"K{i:04d}" for i in range(0, 600)]  # every lead the 500 waited behind
    assert await store.release_waiting("jodo", gone) == len(behind)

    seen = datetime.now(UTC)
    outcomes = [Outcome("jodo", f"K{i:04d}", seen, status="busy") for i in range(700)]
    assert await store.record_outcomes(outcomes) == 700
    assert await store.record_outcomes(outcomes) == 0  # each one found stored, unchanged
    outcomes[699] = Outcome("jodo", "K0699", seen, status="connected")
    assert await store.record_outcomes(outcomes) == 1


BLOCK_FACTS = '{"code":"dnc_crm","numbers":["+919820012346"]}'


async def test_the_audit_facts_commit_with_each_decision_and_a_removal_reads_the_earlier_ones(
    store: SqliteStore,
) -> None:
    said = '{"numbers":["+919820012345"],"policy":"v1","zones":["Asia/Calcutta"]}'
    write = ChunkWrite("run1", "crm", "a.csv")
    write.leads["jodo"] = [
        LeadWrite(
            "L1", "h1", "raw", '{"key":"L1","phone":"+919820012345"}', Action.UPSERT, "new", 2
        )
    ]
    blocked = Reject("crm", "blocked (dnc_crm): flagged", 3, "a.csv", [], "B1", BLOCK_FACTS)
    write.rejects.append(("jodo", blocked))
    write.events.append(("jodo", "L1", "gate.call_at_moved", "moved", '{"call_at_to":"x"}'))
    await store.apply_chunk(write)
    await store.claim("jodo", 10, 60)
    await store.hold("jodo", [("L1", time.time() - 1, "held (window_closed): night")], {"L1": said})
    await store.release_held("jodo", time.time())
    await store.claim("jodo", 10, 60)
    await store.complete("jodo", [Completion("L1", "h1", ResultKind.DELIVERED, facts=said)])
    gone = ChunkWrite("run2", "crm", "b.csv")
    gone.leads["jodo"] = [
        LeadWrite("L1", "h2", "raw2", '{"deleted":true,"key":"L1"}', Action.DELETE, "deleted", 2)
    ]
    await store.apply_chunk(gone)
    await store.claim("jodo", 10, 60)
    removal = '{"action":"delete","withdrawn":"dnc_crm"}'
    await store.complete("jodo", [Completion("L1", "h2", ResultKind.DELIVERED, facts=removal)])

    rows = [row async for row in store.audit(0, time.time() + 1)]
    by_kind = {(r["key"], r["kind"]): r for r in rows}
    assert by_kind[("B1", "gate.blocked")]["facts"] == BLOCK_FACTS
    assert by_kind[("L1", "gate.call_at_moved")]["facts"] == '{"call_at_to":"x"}'
    assert by_kind[("L1", "gate.held")]["facts"] == said
    delivered = [r for r in rows if r["kind"] == "push.delivered"]
    assert [r["facts"] for r in delivered] == [said, removal]
    assert delivered[1]["known"] == said  # the removal names no number: the earlier one does


async def test_a_lead_whose_window_closed_before_the_dialer_rang_it_goes_back_to_the_outbox(
    store: SqliteStore,
) -> None:
    from datetime import UTC, datetime

    from syncd.core.model import Outcome

    for key in ("QUIET", "CONNECTED", "RUNG", "OPEN"):
        await enqueue(store, key, f"h-{key}")
    await store.claim("jodo", 10, 60)
    now = time.time()
    closed, later = now - 60, now + 3600
    await store.complete(
        "jodo",
        [
            Completion(key, f"h-{key}", ResultKind.DELIVERED, dial_until=until)
            for key, until in (("QUIET", closed), ("CONNECTED", closed), ("RUNG", closed),
                               ("OPEN", later))
        ],
    )  # fmt: skip
    seen = datetime.now(UTC)
    await store.record_outcomes(
        [
            Outcome("jodo", "CONNECTED", seen, status="connected"),
            # dialled after its delivery (no answer): its chance came, it is not sent again
            Outcome("jodo", "RUNG", seen, status="no_answer", last_dialed_at=seen),
        ]
    )
    assert await store.requeue_expired("jodo", now, "expired undialled") == 1
    assert await store.requeue_expired("jodo", now, "expired undialled") == 0  # once
    [again] = await store.claim("jodo", 10, 60)
    assert (again.key, again.attempts, again.delivered_hash) == ("QUIET", 1, "h-QUIET")
    history = await store.lead_history("QUIET")
    assert "dialer.expired" in [e["kind"] for e in history["events"]]


def consented(key: str, until: str | None) -> str:
    """Return a lead's JSON as the mapper writes it, with its consent expiry if any."""
    extra = f',"consent_until":"{until}"' if until else ""
    return f'{{"key":"{key}","phone":"+1555000{key[-1]}"{extra}}}'


async def test_the_leads_a_dialer_holds_past_their_consent_are_found_earliest_first(
    store: SqliteStore,
) -> None:
    write = ChunkWrite("run1", "crm", "a.csv")
    write.leads["jodo"] = [
        LeadWrite(key, f"h{key}", "r", consented(key, until), Action.UPSERT, "new", 2)
        for key, until in [
            ("E1", "2026-11-30T10:00:00+00:00"),  # delivered, ran out: found
            ("E2", "2026-11-29T10:00:00+00:00"),  # delivered, ran out earlier: found first
            ("E3", "2026-12-30T10:00:00+00:00"),  # delivered, still valid
            ("E4", None),  # delivered, consent without an expiry
            ("E5", "2026-11-30T10:00:00+00:00"),  # ran out, but never delivered
        ]
    ]
    write.leads["ameyo"] = [
        LeadWrite("E6", "h", "r", consented("E6", "2026-11-01T00:00:00+00:00"), Action.UPSERT,
                  "new", 2)
    ]  # fmt: skip
    await store.apply_chunk(write)
    for sink in ("jodo", "ameyo"):
        batch = [q for q in await store.claim(sink, 10, 60) if q.key != "E5"]
        await store.complete(sink, [Completion(q.key, q.hash, ResultKind.DELIVERED) for q in batch])
    now = datetime(2026, 11, 30, 10, 0, tzinfo=UTC).timestamp()

    found = await store.consent_expired(["jodo"], now)

    assert [(e.sink, e.key, e.state) for e in found] == [
        ("jodo", "E2", "delivered"),
        ("jodo", "E1", "delivered"),
    ]
    assert found[0].consent_until == "2026-11-29T10:00:00+00:00" and found[0].raw_hash == "r"
    assert '"key":"E2"' in found[0].lead_json
    assert [e.key for e in await store.consent_expired(["jodo"], now - 1)] == ["E2"]
    assert [e.key for e in await store.consent_expired(["jodo", "ameyo"], now, 2)] == ["E6", "E2"]
    assert await store.consent_expired([], now) == []
    # Withdrawn (a removal queued in its place): no longer found.
    gone = ChunkWrite("run2", "crm", "consent_max_age_days")
    gone.leads["jodo"] = [
        LeadWrite("E2", "g", "r", '{"deleted":true,"key":"E2"}', Action.DELETE, "deleted", None)
    ]
    await store.apply_chunk(gone)
    assert [e.key for e in await store.consent_expired(["jodo"], now)] == ["E1"]


async def test_the_consent_recheck_reads_its_index_not_every_lead(
    sqlite_store: SqliteStore,
) -> None:
    plan = await sqlite_store.db.execute_fetchall(
        "EXPLAIN QUERY PLAN " + consent_query(2), ("2026-11-30T10:00:00+00:00", "a", "b", 10)
    )
    assert any("leads_consent" in str(row[-1]) for row in plan), plan


async def test_a_lead_withdrawn_at_its_consents_end_is_not_returned_at_the_next_opening(
    store: SqliteStore,
) -> None:
    await enqueue(store, "L1", "h-L1")
    await store.claim("jodo", 10, 60)
    ended = time.time() - 60  # its consent ran out before the opening closed
    await store.complete("jodo", [Completion("L1", "h-L1", ResultKind.DELIVERED, dial_until=ended)])
    [found] = await store.window_closed("jodo", time.time())
    marked = found.lead_json.replace('"key"', '"withdrawn":"consent_expired","key"')
    why = "blocked (consent_expired): consent ran out at 2026-11-30 19:30 UTC"
    moves = WindowMoves(
        withdraw=[("L1", marked, why, "")],
        # a refusal as the consent stage's; L9's withdrawal found no lead: none for it
        refused=[("L1", why, '{"code":"consent_expired"}'), ("L9", why, "")],
        refused_as=("run-w", "crm", "consent_max_age_days"),
    )
    assert await store.move_window("jodo", moves) == 1
    assert await store.run_rejects("run-w") == [
        {"origin": "consent_max_age_days", "line": None, "key": "L1", "reason": why, "sink": "jodo"}
    ]
    [removal] = await store.claim("jodo", 10, 60)
    assert (removal.action, removal.lead.withdrawn) == (Action.DELETE, "consent_expired")
    await store.complete("jodo", [Completion("L1", removal.hash, ResultKind.DELIVERED)])

    assert await store.window_closed("jodo", time.time() + 86400) == []  # never back
    history = await store.lead_history("L1")
    assert ("gate.withdrawn", why) in [(e["kind"], e["detail"]) for e in history["events"]]
    assert history["leads"][0]["state"] == "removed"


async def test_a_lead_is_withdrawn_at_its_window_close_and_held_for_the_next_opening(
    store: SqliteStore,
) -> None:
    for key in ("L1", "L2"):
        await enqueue(store, key, f"h-{key}")
    await store.claim("jodo", 10, 60)
    closes = time.time() - 60  # the opening they went in closed a minute ago
    await store.complete(
        "jodo",
        [Completion(k, f"h-{k}", ResultKind.DELIVERED, dial_until=closes) for k in ("L1", "L2")],
    )
    # L2 was answered after its delivery: the dialer is done with it.
    answered = Outcome("jodo", "L2", datetime.now(UTC), status="connected")
    await store.record_outcomes([answered])
    found = {w.key: w for w in await store.window_closed("jodo", time.time())}
    assert {k: (w.stage, w.dialled) for k, w in found.items()} == {
        "L1": (CLOSED, False),
        "L2": (CLOSED, True),
    }
    marked = found["L1"].lead_json.replace('"key"', '"withdrawn":"window_closed","key"')
    moves = WindowMoves(
        withdraw=[("L1", marked, "withdrawn (window_closed): x", "")], done=[("L2", "", "")]
    )
    assert await store.move_window("jodo", moves) == 1  # L1's removal joined the outbox
    [removal] = await store.claim("jodo", 10, 60)
    assert (removal.key, removal.action, removal.lead.withdrawn) == (
        "L1", Action.DELETE, "window_closed",
    )  # fmt: skip
    await store.complete("jodo", [Completion("L1", removal.hash, ResultKind.DELIVERED)])
    [landed] = await store.window_closed("jodo", time.time())
    assert (landed.key, landed.stage, landed.dialled) == ("L1", WITHDRAWN, False)
    back = [("L1", found["L1"].lead_json, time.time() + 3600, "held (window_closed): x", "")]
    assert await store.move_window("jodo", WindowMoves(back=back)) == 1
    assert await store.held("jodo") == (1, pytest.approx(time.time() + 3600, abs=5))
    assert await store.window_closed("jodo", time.time()) == []  # not due, not dialled
    # Answered before its return: it stays out of the dialer.
    await store.record_outcomes([Outcome("jodo", "L1", datetime.now(UTC), status="closed")])
    [due] = await store.window_closed("jodo", time.time() + 3600)
    assert (due.stage, due.dialled) == (RETURNING, True)
    assert await store.move_window("jodo", WindowMoves(done=[("L1", "dialled", "")])) == -1
    assert await store.held("jodo") == (0, None)
    counts = (await store.counts())["jodo"]
    assert (counts["removed"], counts["delivered"], counts["held"]) == (1, 1, 0)
    assert await store.window_closed("jodo", time.time() + 7200) == []


async def test_feed_counts_say_what_the_dialer_reached_and_still_holds(
    store: SqliteStore,
) -> None:
    import json
    from datetime import UTC, datetime, timedelta

    from syncd.core.model import Outcome

    now = time.time()
    later = (datetime.fromtimestamp(now, UTC) + timedelta(hours=2)).isoformat()
    leads = {
        "L1": None,  # reached: an outcome came back
        "L2": None,  # delivered, not reached yet
        "L3": None,  # delivered, not reached yet; then changed in the CRM
        "CB": later,  # a callback two hours on: not in the queue the dialer works now
    }
    write = ChunkWrite("run1", "crm", "a.csv")
    write.leads["jodo"] = [
        LeadWrite(k, "h1", "raw", json.dumps({"key": k, "phone": "+1", "call_at": c}),
                  Action.UPSERT, "new", 2)
        for k, c in leads.items()
    ]  # fmt: skip
    await store.apply_chunk(write)
    await store.claim("jodo", 10, 60)
    await store.complete("jodo", [Completion(k, "h1", ResultKind.DELIVERED) for k in leads])
    seen = datetime.fromtimestamp(now, UTC)
    await store.record_outcomes([Outcome("jodo", "L1", seen, status="connected")])
    await store.record_outcomes([Outcome("jodo", "OLD", seen - timedelta(hours=1))])
    await enqueue(store, "L3", "h2")  # an update of a lead the dialer holds: due now
    await enqueue(store, "NEW", "h1")  # a new lead, not delivered: not counted anywhere

    counts = await store.feed_counts(
        "jodo", reached_since=now - 900, delivered_since=now - 3600, now=now + 1
    )
    # reached L1; queued L2 and L3 (its update waits in the outbox, the dialer holds it);
    # due whatever the feed: L3's update
    assert (counts.reached, counts.queued, counts.others_due) == (1, 2, 1)
    none_since = await store.feed_counts(
        "jodo", reached_since=now + 60, delivered_since=now + 60, now=now + 1
    )
    assert (none_since.reached, none_since.queued) == (0, 0)  # outside the span and horizon
    assert (await store.feed_counts("other", reached_since=0, delivered_since=0, now=now)) == (
        FeedCounts(0, 0, 0)
    )


async def test_a_write_cancelled_while_it_waits_for_the_lock_leaves_no_transaction_open(
    sqlite_store: SqliteStore,
) -> None:
    # A `--once` cut off by its deadline cancels the push while its store call waits for
    # another process's lock. SQLite's thread still begins the transaction once the lock
    # frees; before, nobody ended it and every later write failed ("cannot start a
    # transaction within a transaction").
    other = sqlite3.connect(sqlite_store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    waiting = asyncio.create_task(enqueue(sqlite_store, "k1", "h1"))
    for _ in range(1000):  # it took the store's lock, then sent BEGIN (bounded)
        if sqlite_store._lock.locked():
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # BEGIN waits for the other connection's lock in SQLite's thread
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    other.execute("COMMIT")
    other.close()
    await enqueue(sqlite_store, "k2", "h2")
    claimed = await sqlite_store.claim("jodo", 10, 30)
    assert [q.key for q in claimed] == ["k2"]


async def test_a_postgresql_write_cancelled_while_it_waits_for_a_lock_leaves_no_transaction_open(
    tmp_path: Path,
) -> None:
    # The same cut-off on the PostgreSQL store: the write has begun its transaction and
    # waits for a lock another session holds. The cancelled write must leave neither a
    # transaction open on a pooled connection nor its half-written rows behind.
    schema = new_schema()
    async with fresh_store("postgresql", tmp_path, schema=schema) as pg_store:
        other = await asyncpg.connect(dsn_of(pg_url()))
        try:
            await other.execute("BEGIN")
            await other.execute(f'LOCK TABLE "{schema}".leads IN EXCLUSIVE MODE')
            waiting = asyncio.create_task(enqueue(pg_store, "k1", "h1"))
            deadline = time.monotonic() + 120  # bounded, on a machine however busy
            stuck = 0
            while not stuck and time.monotonic() < deadline and not waiting.done():
                await asyncio.sleep(0.01)
                stuck = await other.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE '%leads%' AND pid <> pg_backend_pid()"
                )
            if waiting.done():  # it ended instead of waiting: say how
                waiting.result()
            assert stuck, "the write never waited for the lock"
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await other.execute("COMMIT")
        finally:
            await other.close()
        for n in range(4):  # every pooled connection is lent again: none is left mid-transaction
            await enqueue(pg_store, f"k{n + 2}", "h2")
        claimed = await pg_store.claim("jodo", 10, 30)
        assert sorted(q.key for q in claimed) == ["k2", "k3", "k4", "k5"]


async def test_a_kv_scope_is_read_by_name_in_order_and_no_further(store: SqliteStore) -> None:
    for name in ("b", "a", "c"):
        await store.kv_set("numbers.left.jodo", name, f"v{name}")
    await store.kv_set("numbers.left.jodo2", "a", "other sink")
    await store.kv_set("numbers.left.jodo", "c", None)

    assert await store.kv_scan("numbers.left.jodo") == [("a", "va"), ("b", "vb")]
    assert await store.kv_scan("numbers.left.jodo", limit=1) == [("a", "va")]
    assert await store.kv_scan("numbers.left.none") == []
