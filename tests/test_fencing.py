"""Fencing: each claim carries a token, and only the claim that holds a lead now may
write its result, give it back, hold it or have its lease renewed. A replica that froze
past its lease finds its leads taken over: it does not send them, and a result it still
writes is dropped, the other replica's standing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from syncd.core.model import QueuedLead, ResultKind
from syncd.errors import ClaimLost
from syncd.run.claims import ClaimFence, stamp
from syncd.state.base import Completion
from syncd.state.postgres import PostgresStore
from tests.support.clock import FakeClock
from tests.support.stores import KINDS, drop_schema, fresh_store, new_schema, pg_url
from tests.test_postgres_store import expire_leases, fill


@pytest.fixture
async def pair() -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two replicas' stores on one schema: the one that froze, the one that took over."""
    schema = new_schema()
    stores = (
        PostgresStore(pg_url(), schema=schema, lease_s=30),
        PostgresStore(pg_url(), schema=schema, lease_s=30),
    )
    await asyncio.gather(*(s.open() for s in stores))
    yield stores
    for s in stores:
        await s.close()
    await drop_schema(schema)


def delivered(batch: list, ref: str) -> list[Completion]:
    return [
        Completion(q.key, q.hash, ResultKind.DELIVERED, vendor_ref=ref, claim=q.claim)
        for q in batch
    ]


async def claimed_then_frozen(frozen: PostgresStore, n: int) -> list[QueuedLead]:
    """Return ``n`` leads ``frozen`` claimed before it froze past their lease."""
    await fill(frozen, n)
    old = await frozen.claim("jodo", n, 300)
    await expire_leases(frozen, frozen.holder)
    return old


async def state_of(store: PostgresStore, key: str) -> tuple[str, str | None]:
    async with store._lock:
        [(state, ref)] = await store.db.execute_fetchall(
            "SELECT state, vendor_ref FROM leads WHERE key = ?", (key,)
        )
    return str(state), ref


async def test_a_result_of_a_claim_taken_over_is_dropped_and_the_new_claims_stands(
    pair: tuple[PostgresStore, PostgresStore],
) -> None:
    frozen, other = pair
    old = await claimed_then_frozen(frozen, 3)
    new = await other.claim("jodo", 3, 300)
    assert [q.key for q in new] == [q.key for q in old]
    assert {q.claim for q in new}.isdisjoint({q.claim for q in old})

    assert await other.complete("jodo", delivered(new, "B")) == []
    stale = await frozen.complete("jodo", delivered(old, "A"))  # it wakes up late
    assert stale == [q.key for q in old]
    assert await state_of(other, old[0].key) == ("delivered", "B")


async def test_a_late_result_stands_while_nobody_claimed_the_lead_again(
    pair: tuple[PostgresStore, PostgresStore],
) -> None:
    frozen, other = pair
    old = await claimed_then_frozen(frozen, 2)
    assert await other.claim("jodo", 0, 300) == []  # its sweep gives the leads back
    # The dialer took them before the freeze: the answer is still the only one.
    assert await frozen.complete("jodo", delivered(old, "A")) == []
    assert await state_of(other, old[0].key) == ("delivered", "A")
    assert await other.claim("jodo", 2, 300) == []  # nothing is sent again


async def test_a_stale_claim_cannot_give_back_or_hold_the_leads_another_took(
    pair: tuple[PostgresStore, PostgresStore],
) -> None:
    frozen, other = pair
    old = await claimed_then_frozen(frozen, 2)
    new = await other.claim("jodo", 2, 300)
    keys = [q.key for q in old]
    await frozen.requeue("jodo", keys, 0, "the sink was held", claim=old[0].claim)
    await frozen.hold("jodo", [(keys[1], 9e9, "outside the window")], claim=old[0].claim)
    assert [await state_of(other, k) for k in keys] == [("inflight", None)] * 2
    assert await other.still_claimed("jodo", new[0].claim or "", keys) == set(keys)
    assert await frozen.still_claimed("jodo", old[0].claim or "", keys) == set()


async def test_the_heartbeat_renews_only_the_claims_of_pushes_still_running(
    pair: tuple[PostgresStore, PostgresStore],
) -> None:
    replica, other = pair
    await fill(replica, 4)
    running = await replica.claim("jodo", 2, 300)
    given_up = await replica.claim("jodo", 2, 300)  # its results could not be written
    replica.settle(given_up[0].claim)
    await expire_leases(replica, replica.holder)
    await replica.heartbeat()
    taken = await other.claim("jodo", 4, 300)
    assert sorted(q.key for q in taken) == sorted(q.key for q in given_up)
    assert await replica.still_claimed(
        "jodo", running[0].claim or "", [q.key for q in running]
    ) == {q.key for q in running}


async def test_the_heartbeat_does_not_wait_for_leads_a_completion_is_writing(
    pair: tuple[PostgresStore, PostgresStore],
) -> None:
    """A completion holds its leads' rows until it commits; the heartbeat renewing the same
    claim on another connection waited for them while the completion waited for rows the
    heartbeat held (a deadlock PostgreSQL broke after a second, failing one of them: seen
    in bench_replicas). A lead being written needs no renewal: the heartbeat skips it."""
    replica, other = pair
    await fill(replica, 4)
    batch = await replica.claim("jodo", 4, 300)
    await expire_leases(replica, replica.holder)
    writing = await replica._raw_connection()  # a completion of batch[0], not committed yet
    try:
        tx = writing.transaction()
        await tx.start()
        await writing.execute("UPDATE leads SET attempts = attempts WHERE key = $1", batch[0].key)
        # bounded only so that a heartbeat waiting for the row fails the test, not hangs it
        await asyncio.wait_for(replica.heartbeat(), 30)
        await tx.rollback()  # the completion failed: its lead was not renewed, the rest were
    finally:
        await writing.close()
    assert [q.key for q in await other.claim("jodo", 4, 300)] == [batch[0].key]


async def test_a_claim_is_checked_before_it_is_sent_only_once_it_is_old(
    pair: tuple[PostgresStore, PostgresStore],
) -> None:
    frozen, other = pair
    clock = FakeClock()
    await fill(frozen, 2)
    old = await frozen.claim("jodo", 2, 300)
    fence = ClaimFence(frozen, "jodo", old, stamp(clock), lease_s=30, clock=clock)
    await fence()  # fresh: not asked
    clock.advance(11)  # past a third of the lease: asked, and still held
    await fence()
    assert fence.confirmed == stamp(clock)

    await expire_leases(frozen, frozen.holder)
    await other.claim("jodo", 1, 300)
    clock.advance(60)  # it froze; the other replica took one lead over
    with pytest.raises(ClaimLost) as lost:
        await fence()
    # the other ran out with the lease: it is back in the outbox, not this push's
    assert lost.value.keys == [q.key for q in old]


@pytest.mark.parametrize("kind", KINDS)
async def test_on_either_store_only_the_claim_holding_a_lead_completes_it(
    kind: str, tmp_path: Path
) -> None:
    async with fresh_store(kind, tmp_path) as store:
        await fill(store, 2)  # type: ignore[arg-type]
        first = await store.claim("jodo", 2, 300)
        await store.release_inflight()  # a cut-off run gave them back
        second = await store.claim("jodo", 2, 300)
        assert await store.still_claimed("jodo", first[0].claim or "", ["L0000"]) == set()
        assert await store.still_claimed("jodo", second[0].claim or "", ["L0000"]) == {"L0000"}
        assert await store.complete("jodo", delivered(first, "old")) == ["L0000", "L0001"]
        assert await store.complete("jodo", delivered(second, "new")) == []
        # a result without a claim (a tool, an older caller) goes by key, as before
        untokened = [Completion("L0000", second[0].hash, ResultKind.DELIVERED, vendor_ref="x")]
        assert await store.complete("jodo", untokened) == []
        counts = await store.counts()
    assert counts["jodo"]["delivered"] == 2
