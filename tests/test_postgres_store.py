"""The PostgreSQL store's part in replicas: claims no two replicas share, leases of a dead
replica that come back, one leader per job and its failover, migrations started together."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest
import structlog.testing

from syncd.core.model import Action, LeadWrite, ResultKind
from syncd.core.refusals import Refusal
from syncd.state import postgres, queries
from syncd.state.base import ChunkWrite, Completion
from syncd.state.postgres import PostgresStore, to_postgres
from syncd.state.sqlite import consent_query
from tests.support.stores import drop_schema, new_schema, pg_url, store_at_schema


@pytest.fixture
async def replicas() -> AsyncIterator[list[PostgresStore]]:
    """Three replicas' stores on one PostgreSQL schema."""
    schema = new_schema()
    stores = [PostgresStore(pg_url(), schema=schema, lease_s=30) for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))  # they migrate at the same time
    yield stores
    for s in stores:
        await s.close()
    await drop_schema(schema)


async def fill(store: PostgresStore, n: int) -> None:
    write = ChunkWrite("run", "crm", "a.csv")
    write.leads["jodo"] = [
        LeadWrite(f"L{i:04d}", "h", None, f'{{"key":"L{i:04d}","phone":"+1"}}', Action.UPSERT,
                  "new", i)
        for i in range(n)
    ]  # fmt: skip
    await store.apply_chunk(write)


async def expire_leases(store: PostgresStore, holder: str) -> None:
    """Age a replica's leases past their end, as time does once it died (no waiting)."""
    async with store._tx() as db:
        await db.execute("UPDATE leads SET lease_until = 0 WHERE lease_holder = ?", (holder,))
        await db.execute("UPDATE leaders SET until = 0 WHERE holder = ?", (holder,))


async def test_replicas_claiming_together_never_share_a_lead(
    replicas: list[PostgresStore],
) -> None:
    await fill(replicas[0], 600)

    async def drain(store: PostgresStore) -> list[str]:
        got: list[str] = []
        while batch := await store.claim("jodo", 25, 60):
            assert len(batch) <= 25  # never more than asked (a subquery re-run would)
            got += [q.key for q in batch]
        return got

    claimed = await asyncio.gather(*(drain(s) for s in replicas))
    everything = [k for part in claimed for k in part]
    assert len(everything) == 600 and len(set(everything)) == 600
    assert all(part for part in claimed)  # SKIP LOCKED: each replica got work


async def test_a_dead_replicas_claims_come_back_and_a_live_ones_stay(
    replicas: list[PostgresStore],
) -> None:
    alive, dead, starting = replicas
    await fill(alive, 10)
    mine = await alive.claim("jodo", 5, 300)
    lost = await dead.claim("jodo", 5, 300)
    assert await starting.release_inflight() == 0  # both leases are live
    assert await starting.claim("jodo", 10, 300) == []
    await expire_leases(dead, dead.holder)  # `dead` was killed; its lease ran out
    again = await starting.claim("jodo", 10, 300)
    assert sorted(q.key for q in again) == sorted(q.key for q in lost)
    assert all(q.attempts == 2 for q in again)  # the push in doubt counts as an attempt
    assert await alive.release_inflight() == len(mine)  # a replica gives back its own


async def test_a_live_replica_keeps_its_claims_with_its_heartbeat(
    replicas: list[PostgresStore],
) -> None:
    slow, other, _ = replicas
    await fill(slow, 4)
    mine = await slow.claim("jodo", 4, 300)
    await expire_leases(slow, slow.holder)  # a push that outlasts its lease...
    await slow.heartbeat()  # ...is kept alive by the replica's heartbeat
    assert await other.claim("jodo", 4, 300) == []
    assert len(mine) == 4


async def test_the_pull_does_not_wait_for_the_statistics_it_keeps(
    replicas: list[PostgresStore],
) -> None:
    """The store analyzes the leads once a pull wrote enough of them (the pushes' plans need
    the statistics), beside the pull: its next chunk does not wait for the ANALYZE (0.1 to
    0.4 s of the leader's pull each, its time the bound of every replica's pushes)."""
    store = replicas[0]
    blocker = await store._raw_connection()
    try:
        tx = blocker.transaction()
        await tx.start()
        # conflicts with ANALYZE, not with the pull's inserts
        await blocker.execute("LOCK TABLE leads IN SHARE UPDATE EXCLUSIVE MODE")
        # bounded only so that a pull waiting for the ANALYZE fails the test, not hangs it
        await asyncio.wait_for(fill(store, postgres.ANALYZE_AFTER_ROWS), 30)
        await tx.rollback()
    finally:
        await blocker.close()

    async def analyzed() -> float:
        async with store._lock:
            [(tuples,)] = await store.db.execute_fetchall(
                "SELECT reltuples FROM pg_class WHERE oid = CAST('leads' AS regclass)"
            )
        return float(tuples)

    assert store._analyzing is not None  # the ANALYZE, waiting for the lock meanwhile
    await asyncio.wait_for(store._analyzing, 30)  # it ends once the lock is gone
    assert await analyzed() >= postgres.ANALYZE_AFTER_ROWS


async def test_the_pulls_statistics_are_of_the_columns_the_plans_read(
    replicas: list[PostgresStore],
) -> None:
    """The pull's ANALYZE reads the columns the store's statements select and join on,
    not the leads' JSON (half its cost); a column named wrong would fail it whole."""
    store = replicas[0]
    await fill(store, postgres.ANALYZE_AFTER_ROWS)
    assert store._analyzing is not None
    await asyncio.wait_for(store._analyzing, 30)
    async with store._lock:
        rows = await store.db.execute_fetchall(
            "SELECT attname FROM pg_stats WHERE tablename = 'leads'"
            " AND schemaname = current_schema()"
        )
    counted = {str(r[0]) for r in rows}
    assert set(postgres.PLANNED_COLUMNS) <= counted
    assert "lead_json" not in counted


async def test_one_leader_per_job_and_another_takes_over_when_it_dies(
    replicas: list[PostgresStore],
) -> None:
    a, b, c = replicas
    assert await a.lead("pull:crm", 20)
    assert not await b.lead("pull:crm", 20) and not await c.lead("pull:crm", 20)
    assert await a.lead("pull:crm", 20)  # renewed
    assert await b.lead("poll:jodo", 20)  # another job, another leader
    await expire_leases(a, a.holder)  # a was killed: its lease runs out
    won = [await b.lead("pull:crm", 20), await c.lead("pull:crm", 20)]
    assert won == [True, False]
    assert not await a.lead("pull:crm", 20)  # back from the dead: it follows now
    for replica in replicas:
        await replica.heartbeat()
    seen = {r["replica"]: r for r in await c.replicas()}
    assert set(seen) == {a.holder, b.holder, c.holder}
    assert sorted(j["job"] for j in seen[b.holder]["leads"]) == ["poll:jodo", "pull:crm"]
    await b.resign()
    assert await c.lead("pull:crm", 20)  # a clean stop hands over at once


async def stall_inside_a_chunk(store: PostgresStore, jobs: list[str]) -> asyncpg.Connection:
    """Open a session of ``store``'s replica that stops mid-statement inside a chunk's
    transaction, which holds its leads of ``jobs`` (a VM paused, SIGSTOP, half-way through
    writing a statement's messages): PostgreSQL shows it ``active``, waiting to read, and
    no idle timeout ends it."""
    raw = await store._raw_connection()
    await raw.execute("SET idle_in_transaction_session_timeout = 0")
    await raw.execute("BEGIN")
    held = await raw.fetchval(
        "SELECT count(*) FROM (SELECT 1 FROM leaders WHERE job = ANY($1) AND holder = $2"
        " FOR SHARE) held",
        jobs,
        store.holder,
    )
    assert held == len(jobs)
    # a Parse message with no Sync after it: the server waits for the rest
    query = b"SELECT 1\0"
    raw._transport.write(
        b"P" + (4 + 1 + len(query) + 2).to_bytes(4, "big") + b"\0" + query + b"\0\0"
    )
    return raw


async def in_transaction(conn: asyncpg.Connection, name: str) -> list[str]:
    """Return the states of the sessions named ``name`` that are inside a transaction."""
    rows = await conn.fetch(
        "SELECT state FROM pg_stat_activity WHERE application_name = $1 AND xact_start IS NOT NULL",
        name,
    )
    return [r["state"] for r in rows]


async def test_a_replica_stalled_mid_statement_past_its_lead_is_ended_by_its_successor(
    replicas: list[PostgresStore],
) -> None:
    a, b, _ = replicas
    assert await a.lead("pull:crm", 1) and await a.lead("poll:jodo", 600)
    stalled = await stall_inside_a_chunk(a, ["pull:crm", "poll:jodo"])
    watcher = await asyncpg.connect(postgres.dsn_of(pg_url()))
    try:
        name = a.session_name
        for _ in range(50):
            if await in_transaction(watcher, name) == ["active"]:
                break
            await asyncio.sleep(0.05)
        assert await in_transaction(watcher, name) == ["active"]
        # while a's lease runs, a contender neither waits for it nor ends anything
        assert not await asyncio.wait_for(b.lead("poll:jodo", 20), 10)
        assert await in_transaction(watcher, name) == ["active"]

        ran_out = (
            "SELECT until < extract(epoch from clock_timestamp())"
            f' FROM "{a.schema}".leaders WHERE job = $1'
        )
        for _ in range(400):  # its lease runs out while it stands still
            if await watcher.fetchval(ran_out, "pull:crm"):
                break
            await asyncio.sleep(0.05)
        with structlog.testing.capture_logs() as logs:
            taken = [await asyncio.wait_for(b.lead("pull:crm", 20), 30) for _ in range(3)]
        assert taken == [False, True, True]  # the first waits, then ends the stalled one
        fenced = [e for e in logs if e["event"] == "leader.fenced"]
        assert [(e["job"], e["holder"], e["ended"]) for e in fenced] == [("pull:crm", a.holder, 1)]
        assert await in_transaction(watcher, name) == []  # its stuck transaction is over
        assert not await a.lead("pull:crm", 20)  # woken, it follows
    finally:
        stalled.terminate()
        await watcher.close()


async def test_a_lost_database_is_a_store_error_and_the_store_reconnects(
    tmp_path: Path,
) -> None:
    from syncd.errors import StoreError

    schema = new_schema()
    store = PostgresStore(pg_url(), schema=schema)
    await store.open()
    try:
        await fill(store, 2)
        async with store._lock:
            await store.db.raw.close()  # the connection is gone (a database restart)
        assert await store.pending_count("jodo") == 2  # reads reconnect
        async with store._lock:
            await store.db.raw.close()
        await fill(store, 3)  # so do writes
        assert await store.pending_count("jodo") == 3
        bad = PostgresStore("postgresql://nobody@127.0.0.1:1/none", schema=schema)
        with pytest.raises(StoreError, match="cannot open state store"):
            await bad.open()
    finally:
        await store.close()
        await drop_schema(schema)


async def test_leads_queued_by_one_replica_wake_the_pushers_of_the_others(
    replicas: list[PostgresStore],
) -> None:
    puller, pusher, _ = replicas
    woken: asyncio.Queue[str] = asyncio.Queue()
    await pusher.listen(woken.put_nowait)
    own: list[str] = []
    await puller.listen(own.append)
    await fill(puller, 3)
    assert await asyncio.wait_for(woken.get(), timeout=30) == "jodo"
    assert own == []  # a replica's own pull wakes its pushers itself


async def test_the_consent_recheck_reads_its_index_not_every_lead() -> None:
    schema = new_schema()
    store = PostgresStore(pg_url(), schema=schema)
    await store.open()
    try:
        await fill(store, 50)
        async with store._lock, store.db.raw.transaction():  # one connection of its pool
            raw = store.db.raw
            # a small table: make the plan show the index (for this transaction only)
            await raw.execute("SET LOCAL enable_seqscan = off")
            plan = await raw.fetch(
                "EXPLAIN " + to_postgres(consent_query(1)), "2026-11-30T10:00:00+00:00", "jodo", 10
            )
        assert any("leads_consent" in row[0] for row in plan), plan
        assert await store.consent_expired(["jodo"], 2e9) == []  # no lead has an expiry
    finally:
        await store.close()
        await drop_schema(schema)


async def test_the_queued_removals_read_their_index_not_every_queued_lead() -> None:
    schema = new_schema()
    store = PostgresStore(pg_url(), schema=schema)
    await store.open()
    try:
        await fill(store, 50)
        async with store._lock, store.db.raw.transaction():  # one connection of its pool
            raw = store.db.raw
            # a small table: make the plan show the index (for this transaction only)
            await raw.execute("SET LOCAL enable_seqscan = off")
            query = to_postgres(store.queued_removals_query)
            plan = await raw.fetch("EXPLAIN " + query, "jodo", 10)
        assert any("leads_removals" in row[0] for row in plan), plan
        assert await store.queued_removals("jodo") == []
    finally:
        await store.close()
        await drop_schema(schema)


async def test_tasks_at_once_each_borrow_a_connection_of_their_own(
    replicas: list[PostgresStore],
) -> None:
    store = replicas[0]
    inside: list[int] = []
    all_in = asyncio.Event()

    async def hold() -> int:
        async with store._lock:
            pid = store.db.raw.get_server_pid()
            inside.append(pid)
            if len(inside) == 4:
                all_in.set()
            await all_in.wait()  # four tasks hold a connection at the same time
            async with store._lock:  # nested in one task: the same connection
                assert store.db.raw.get_server_pid() == pid
            return int(pid)

    # one shared connection would keep the others waiting for ever: bounded
    pids = await asyncio.wait_for(asyncio.gather(*(hold() for _ in range(4))), 30)
    assert len(set(pids)) == 4


async def test_a_batchs_completions_run_as_one_statement_each_with_the_same_outcome(
    replicas: list[PostgresStore],
) -> None:
    store = replicas[0]
    await fill(store, 4)
    batch = await store.claim("jodo", 4, 60)
    changed = ChunkWrite("run", "crm", "b.csv")  # L0001 changes while in flight
    changed.leads["jodo"] = [
        LeadWrite("L0001", "h2", None, '{"key":"L0001","phone":"+1"}', Action.UPSERT, "new", 1)
    ]
    await store.apply_chunk(changed)
    done = [Completion(q.key, q.hash, ResultKind.DELIVERED, "", f"ref-{q.key}") for q in batch]
    await store.complete("jodo", [*done[:3], replace(done[3], kind=ResultKind.REJECTED)])
    async with store._lock:
        rows = await store.db.execute_fetchall(
            "SELECT key, state, vendor_ref FROM leads ORDER BY key"
        )
        events = await store.db.execute_fetchall("SELECT key FROM events ORDER BY id")
    assert rows == [
        ("L0000", "delivered", "ref-L0000"),
        ("L0001", "pending", "ref-L0001"),  # the newer content goes again
        ("L0002", "delivered", "ref-L0002"),
        ("L0003", "rejected", None),
    ]
    assert [k for (k,) in events] == ["L0000", "L0001", "L0002", "L0003"]  # the rows' order
    one = [v.sql for v in postgres._SET_BASED.values() if v is not None]
    assert any("delivered_hash = r.p" in sql for sql in one), one  # the delivered leads'
    assert any(sql.startswith("INSERT INTO events") for sql in one), one


async def test_a_value_the_same_in_every_row_goes_once_with_the_same_rows_written(
    replicas: list[PostgresStore],
) -> None:
    """A set-based statement sends a parameter that is the same in every row as one value
    (not an array of repeats); what it writes is what row by row would."""
    store = replicas[0]
    await fill(store, 3)
    insert = "INSERT INTO events (at, sink, key, kind, detail) VALUES (?, ?, ?, ?, ?)"
    update = "UPDATE leads SET attempts = attempts + ?, last_error = ? WHERE sink = ? AND key = ?"
    async with store._tx() as db:
        await db.executemany(insert, [(5.0, "jodo", f"L{i:04d}", "k", None) for i in range(3)])
        await db.executemany(insert, [(6.0, "jodo", "same", "k", "d")] * 3)  # every one alike
        await db.executemany(insert, [(7, "jodo", "L0000", "k", None), (7.0, "jodo", "L0001",
                                                                          "k", None)])  # fmt: skip
        await db.executemany(update, [(2, "why", "jodo", f"L{i:04d}") for i in range(3)])
        events = await db.execute_fetchall("SELECT at, sink, key, kind, detail FROM events")
        leads = await db.execute_fetchall("SELECT key, attempts, last_error FROM leads")
    assert sorted(events) == sorted(
        [(5.0, "jodo", f"L{i:04d}", "k", None) for i in range(3)]
        + [(6.0, "jodo", "same", "k", "d")] * 3
        + [(7.0, "jodo", "L0000", "k", None), (7.0, "jodo", "L0001", "k", None)]
    )
    assert sorted(leads) == [(f"L{i:04d}", 2, "why") for i in range(3)]
    text = postgres._SET_BASED[postgres.to_postgres(insert)]
    assert text is not None
    assert frozenset({0, 1, 3, 4}) in text._by_fixed  # only the keys went as an array
    assert frozenset({1, 2, 3, 4}) in text._by_fixed  # all alike: one array numbers the rows


async def test_rows_naming_one_lead_twice_run_one_by_one(replicas: list[PostgresStore]) -> None:
    store = replicas[0]
    await fill(store, 1)
    async with store._tx() as db:
        # as one statement, only one of the two rows would apply
        await db.executemany(
            "UPDATE leads SET attempts = attempts + ? WHERE sink = ? AND key = ?",
            [(1, "jodo", "L0000"), (2, "jodo", "L0000")],
        )
        rows = await db.execute_fetchall("SELECT attempts FROM leads")
    assert rows == [(3,)]


def test_only_updates_by_key_and_plain_inserts_become_one_statement() -> None:
    text = to_postgres
    assert postgres._shape_of(text("UPDATE leads SET a = ? WHERE sink = ? AND key = ?"))
    assert postgres._shape_of(text("INSERT INTO events (at, key) VALUES (?, ?)"))
    upsert = "INSERT INTO leads (sink, key, n) VALUES (?, ?, 0) ON CONFLICT (sink, key) DO"
    assert postgres._shape_of(text(upsert + " UPDATE SET n = excluded.n"))
    for other in (
        "UPDATE leads SET a = ? WHERE sink = ? AND waits_for = ?",  # not one lead a row
        "UPDATE leads SET a = (SELECT 1) WHERE sink = ? AND key = ?",
        "INSERT INTO dnc_numbers (list, number) VALUES (?, ?) ON CONFLICT DO NOTHING",
        upsert + " UPDATE SET n = ?",  # a parameter the rows' arrays would not reach
        "INSERT INTO leads (sink, key) VALUES (?, lower(?)) ON CONFLICT (sink, key) DO NOTHING",
        "DELETE FROM dnc_blocked WHERE sink = ? AND key = ?",
    ):
        assert postgres._shape_of(text(other)) is None, other


async def test_a_chunk_naming_one_lead_twice_is_written_one_row_after_the_other(
    replicas: list[PostgresStore],
) -> None:
    store = replicas[0]
    write = ChunkWrite("run", "crm", "a.csv")
    write.leads["jodo"] = [
        LeadWrite(key, h, None, f'{{"key":"{key}","phone":"+1"}}', Action.UPSERT, "new", line)
        for line, (key, h) in enumerate([("L1", "h1"), ("L2", "h2"), ("L1", "h3")])
    ]
    # as one statement, PostgreSQL would refuse to change L1 twice
    await store.apply_chunk(write)
    write.leads["jodo"] = write.leads["jodo"][:2]  # then once each: one statement
    await store.apply_chunk(write)
    async with store._lock:
        rows = await store.db.execute_fetchall("SELECT key, hash FROM leads ORDER BY key")
    assert rows == [("L1", "h1"), ("L2", "h2")]
    upserts = [v.sql for v in postgres._SET_BASED.values() if v is not None and v.key]
    assert any("INSERT INTO leads" in sql and "ON CONFLICT (sink, key)" in sql for sql in upserts)


async def test_a_chunks_look_ups_are_one_statement_each_however_many_keys(
    replicas: list[PostgresStore],
) -> None:
    store = replicas[0]
    n = 1200  # more keys than one statement took as a list of parameters (400, 500)
    await fill(store, n)
    keys = [f"L{i:04d}" for i in range(n)]
    refused = ChunkWrite("run", "crm", "a.csv")
    refused.refused = [("jodo", Refusal(k, "raw", "fp", "missing phone")) for k in keys[::2]]
    await store.apply_chunk(refused)
    statements: list[str] = []
    async with store._lock:  # the calls below borrow this task's connection
        store.db.raw.add_query_logger(lambda record: statements.append(record.query))
        changed = await store.lookup_changed(
            "jodo", [(k, "raw-new" if k == "L0777" else "") for k in keys] + [("NEW", "")], "b"
        )
        found = await store.lookup("jodo", [*keys, "NEW"])
        remembered = await store.refusals("jodo", [*keys, keys[0]])  # a key twice: once
        listed = await store.dnc_matches(["dnc"], [f"+1555{i:07d}" for i in range(n)])
    # fill stores no raw hash: every key differs from what the lookup names, but one
    assert set(changed) == {*keys, "NEW"} and changed["NEW"] is None
    assert set(found) == set(keys)
    assert sorted(remembered) == keys[::2]
    assert listed == {}
    assert len(statements) == 4, statements


async def test_no_index_of_the_leads_parses_their_json(replicas: list[PostgresStore]) -> None:
    """A claim and a completion change indexed columns (state, next_at): PostgreSQL then
    writes an entry into every index of the lead, and an index over an expression of
    ``lead_json`` parses the lead's JSON for it. The phone and the consent expiry are
    columns of their own, so a push never parses a lead's JSON."""
    async with replicas[0]._lock:
        indexes = await replicas[0].db.execute_fetchall(
            "SELECT indexname, indexdef FROM pg_indexes"
            " WHERE tablename = 'leads' AND schemaname = current_schema()"
        )
    assert {name for name, _ in indexes} >= {"leads_phone", "leads_consent"}
    assert [name for name, sql in indexes if "lead_json" in sql] == []


async def test_the_phone_and_consent_columns_follow_every_write_of_the_lead(
    replicas: list[PostgresStore],
) -> None:
    store = replicas[0]
    first = ChunkWrite("run", "crm", "a.csv")
    first.leads["jodo"] = [
        LeadWrite("A", "h1", "r1", '{"key":"A","phone":"+911"}', Action.UPSERT, "new", 1),
        LeadWrite("B", "h1", "r1", '{"key":"B","phone":"+912"}', Action.UPSERT, "new", 2),
        LeadWrite("C", "h1", "r1", '{"key":"C","phone":"+913","consent_until":'
                  '"2026-12-31T00:00:00+00:00"}', Action.UPSERT, "new", 3),
    ]  # fmt: skip
    await store.apply_chunk(first)
    batch = await store.claim("jodo", 3, 60)
    assert {q.key for q in batch} == {"A", "B", "C"}
    # B's upload goes unanswered (in doubt), then the CRM deletes it: its removal is
    # queued with no number of its own, and the retry names the number sent
    await store.complete(
        "jodo",
        [Completion(q.key, q.hash, ResultKind.DELIVERED, claim=q.claim) for q in batch
         if q.key != "B"],
    )  # fmt: skip
    gone = ChunkWrite("run", "crm", "b.csv")
    gone.leads["jodo"] = [
        LeadWrite("A", "h2", "r2", '{"key":"A","phone":"+919","consent_until":'
                  '"2027-01-01T00:00:00+00:00"}', Action.UPSERT, "changed", 1),
        LeadWrite("B", "h3", "r3", '{"key":"B"}', Action.DELETE, "deleted", 2),
        LeadWrite("C", "h1", "r4", "{}", Action.UPSERT, "unchanged", 3, enqueue=False,
                  version_at="2026-12-05T10:00:00+00:00"),
    ]  # fmt: skip
    await store.apply_chunk(gone)
    b = next(q for q in batch if q.key == "B")
    await store.complete(
        "jodo",
        [Completion("B", b.hash, ResultKind.RETRY, "timeout", next_at=0, claim=b.claim,
                    attempted="+912")],
    )  # fmt: skip
    async with store._lock:
        rows = await store.db.execute_fetchall(
            "SELECT key, phone, consent_until, lead_json::jsonb ->> 'phone',"
            " lead_json::jsonb ->> 'consent_until' FROM leads ORDER BY key"
        )
    assert [(k, p, c) for k, p, c, _, _ in rows] == [
        ("A", "+919", "2027-01-01T00:00:00+00:00"),
        ("B", "+912", None),  # the number its removal names
        ("C", "+913", "2026-12-31T00:00:00+00:00"),
    ]
    assert all(p == jp and c == jc for _, p, c, jp, jc in rows), rows


async def test_a_batchs_number_holders_are_read_through_the_phone_index() -> None:
    schema = new_schema()
    store = PostgresStore(pg_url(), schema=schema)
    await store.open()
    try:
        write = ChunkWrite("run", "crm", "a.csv")
        write.leads["jodo"] = [
            LeadWrite(f"L{i:04d}", "h", None, f'{{"key":"L{i:04d}","phone":"+9198{i:08d}"}}',
                      Action.UPSERT, "new", i)
            for i in range(2000)
        ]  # fmt: skip
        await store.apply_chunk(write)
        async with store._lock, store.db.raw.transaction():  # one connection of its pool
            raw = store.db.raw
            await raw.execute("ANALYZE leads")
            query, params = store.number_holders_query(["+919800000007", "+919800000011"])
            plan = await raw.fetch("EXPLAIN " + to_postgres(query), *params, "jodo")
        assert any("leads_phone" in row[0] for row in plan), plan
        holders = await store.number_holders("jodo", ["+919800000007", "+919800000011"])
        assert sorted(h.key for h in holders) == ["L0007", "L0011"]
    finally:
        await store.close()
        await drop_schema(schema)


async def test_an_upgraded_store_finds_its_leads_by_number_as_before(tmp_path: Path) -> None:
    old = [
        "INSERT INTO leads (sink, key, hash, lead_json, action, state, attempts, next_at,"
        f" delivered_hash, created_at, updated_at) VALUES ('jodo', 'L{i}', 'h',"
        f' \'{{"phone": "+91980000000{i}",'
        f' "consent_until": "2026-12-0{i}T00:00:00+00:00"}}\','
        " 'upsert', 'delivered', 1, 0, 'h', 0, 0)"
        for i in (1, 2)
    ]
    async with store_at_schema("postgresql", tmp_path, 17, [], old) as store:
        holders = await store.number_holders("jodo", ["+919800000001", "+919800000002"])
        expired = await store.consent_expired(["jodo"], 1764806400.0)  # 2025-12-04: none
        later = await store.consent_expired(["jodo"], 1796342400.0)  # 2026-12-03
    assert sorted(h.key for h in holders) == ["L1", "L2"]
    assert expired == []
    assert [e.key for e in later] == ["L1", "L2"]


async def test_a_completion_finds_its_leads_by_key_whatever_the_statistics_say(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The statistics a first pull leaves were taken before any claim: no lead had a claim
    token. A completion that compared the token as a constant was planned as if no lead
    held it: a scan of every lead, and the batch's rows compared with each of those found
    (500 x 500), 60-70 ms a batch where finding each lead by its key takes 15."""
    schema = new_schema()
    store = PostgresStore(pg_url(), schema=schema)
    await store.open()
    sent: list[tuple[str, tuple[object, ...]]] = []
    execute = asyncpg.Connection.execute

    async def recording(self: asyncpg.Connection, query: str, *args: object) -> str:
        if query.startswith("UPDATE leads SET state = CASE WHEN hash"):
            sent.append((query, args))
        return await execute(self, query, *args)

    try:
        await fill(store, 20000)
        async with store._lock:
            await store.db.raw.execute("ANALYZE leads")  # as the pull leaves it
        batch = await store.claim("jodo", 500, 60)
        monkeypatch.setattr(asyncpg.Connection, "execute", recording)
        await store.complete("jodo", [Completion(q.key, q.hash, ResultKind.DELIVERED, "", q.key,
                                                 claim=q.claim) for q in batch])  # fmt: skip
        monkeypatch.undo()
        (query, args), *_ = sent
        async with store._lock:  # run again with these values as the completion was, undone
            raw = store.db.raw
            undone = raw.transaction()
            await undone.start()
            await raw.execute(  # claimed again, as the completion found them
                "UPDATE leads SET state = 'inflight', claim_token = $1 WHERE state = 'delivered'",
                batch[0].claim,
            )
            explained = await raw.fetch("EXPLAIN ANALYZE " + query, *args)
            await undone.rollback()
        plan = "\n".join(r[0] for r in explained)
        assert "rows=500 loops=1" in plan, plan  # it did find the batch's leads
        assert "Rows Removed by Join Filter" not in plan, plan  # and compared no others
        async with store._lock:
            rows = await store.db.execute_fetchall(
                "SELECT state, COUNT(*) FROM leads GROUP BY state ORDER BY state"
            )
        assert rows == [("delivered", 500), ("pending", 19500)]
    finally:
        await store.close()
        await drop_schema(schema)


async def leads_indexes_holding(store: PostgresStore, key: str) -> set[str]:
    """Return the leads table's indexes holding an entry for lead ``key``: those whose
    predicate its row matches (each write of the row adds one to each of them)."""
    async with store._lock:
        indexes = await store.db.execute_fetchall(
            "SELECT c.relname, pg_get_expr(i.indpred, i.indrelid) FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'leads'::regclass"
        )
        holding = set()
        for name, predicate in indexes:
            rows = await store.db.execute_fetchall(
                f"SELECT 1 FROM leads WHERE key = ? AND ({predicate or 'true'})", (key,)
            )
            if rows:
                holding.add(str(name))
    return holding


async def test_a_lead_on_its_way_to_the_dialer_is_written_into_four_indexes(
    replicas: list[PostgresStore],
) -> None:
    """A pull's insert, a claim and a completion each write a new version of the lead,
    never a HOT update (its state is indexed): an entry into every index whose predicate
    it matches. Queued or in flight, a lead is in the primary key, the outbox, the index
    of numbers and the queued leads; delivered, in the run history's index instead. None
    is in an index of keys alone, of lease holders, or of runs while it is on its way
    (migration 19)."""
    store = replicas[0]
    await fill(store, 3)
    [sent] = await store.claim("jodo", 1, 60)
    await store.complete("jodo", [Completion(sent.key, sent.hash, ResultKind.DELIVERED,
                                             claim=sent.claim)])  # fmt: skip
    [claimed] = await store.claim("jodo", 1, 60)
    queued = ({"L0000", "L0001", "L0002"} - {sent.key, claimed.key}).pop()

    on_the_way = {"leads_pkey", "leads_outbox", "leads_phone", "leads_queued"}
    assert await leads_indexes_holding(store, queued) == on_the_way
    assert await leads_indexes_holding(store, claimed.key) == on_the_way
    assert await leads_indexes_holding(store, sent.key) == {
        "leads_pkey", "leads_outbox", "leads_phone", "leads_run_counted"
    }  # fmt: skip


SCHEMA_18_LEADS = [
    "INSERT INTO runs (run_id, mode, started_at) VALUES ('run-1', 'pull crm', 0)",
    *(
        "INSERT INTO leads (sink, key, hash, lead_json, action, state, attempts, next_at,"
        f" run_id, delivered_hash, created_at, updated_at) VALUES ('{sink}', '{key}', 'h',"
        f' \'{{"key": "{key}", "phone": "+9198000000{n}"}}\', \'upsert\', \'{state}\', 0, 0,'
        f" 'run-1', {done},"
        " 0, 0)"
        for n, (sink, key, state, done) in enumerate(
            [
                ("jodo", "L1", "pending", "NULL"),
                ("jodo", "L2", "pending", "NULL"),
                ("ameyo", "L1", "delivered", "'h'"),
                ("ucontact", "L1", "rejected", "NULL"),
            ]
        )
    ),
]


async def test_an_upgraded_store_renews_releases_and_finds_its_leads_as_before(
    tmp_path: Path,
) -> None:
    """Migration 19 drops the indexes of keys alone and of lease holders: the heartbeat's
    renewal, the release of claims and a lead's history read by sink instead, and find
    the same rows on a store made before it."""
    async with store_at_schema("postgresql", tmp_path, 18, [], SCHEMA_18_LEADS,
                               lease_s=30) as store:  # fmt: skip
        assert isinstance(store, PostgresStore)
        claimed = await store.claim("jodo", 5, 300)
        await expire_leases(store, store.holder)  # a push that outlasts its lease...
        await store.heartbeat()  # ...is renewed
        assert await store.claim("jodo", 5, 300) == []
        history = await store.lead_history("L1")
        [run] = await store.recent_runs()
        released = await store.release_inflight()
    assert sorted(q.key for q in claimed) == ["L1", "L2"]
    assert sorted((lead["sink"], lead["state"]) for lead in history["leads"]) == [
        ("ameyo", "delivered"), ("jodo", "inflight"), ("ucontact", "rejected")
    ]  # fmt: skip
    assert (run["delivered_now"], run["refused_now"]) == (1, 1)
    assert released == 2


async def plan_of(store: PostgresStore, query: str, *params: object) -> str:
    """Return the plan of ``query`` (a statement that writes is planned, not run)."""
    async with store._lock, store.db.raw.transaction():  # one connection of its pool
        rows = await store.db.raw.fetch("EXPLAIN " + to_postgres(query), *params)
    return "\n".join(r[0] for r in rows)


async def test_the_statements_the_dropped_indexes_served_read_the_leads_by_sink() -> None:
    """On a store of 20,000 leads (their statistics kept), each reads an index range:
    the renewal and the release of claims the leads in flight of their sinks, a lead's
    history the primary key once per sink (the run history: test_status_plans.py)."""
    schema = new_schema()
    store = PostgresStore(pg_url(), schema=schema, lease_s=30)
    await store.open()
    try:
        await fill(store, 20000)
        await store.claim("jodo", 500, 60)
        async with store._lock:
            await store.db.raw.execute("ANALYZE leads")
        renewal = await plan_of(store, postgres.RENEWAL, ["jodo"], store.holder, ["t"], 30.0)
        released = []
        for sink in ("jodo", None):
            statement, params = postgres.release_statement(sink, store.holder)
            released.append(await plan_of(store, statement, *params))
        history = await plan_of(store, queries.load("postgres", "history")["lead_history"], "L1")
    finally:
        await store.close()
        await drop_schema(schema)
    for plan in (renewal, *released):
        assert re.search(
            r"Index Cond: \(\(sink = (ANY \(.+\)|'jodo'::text)\) AND \(state = 'inflight'", plan
        ), plan
    assert re.search(r"leads_pkey on leads\s.*\n\s+Index Cond: \(\(sink = ANY", history), history
    assert "Seq Scan on leads" not in "".join([renewal, *released, history])
