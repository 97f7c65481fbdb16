"""Replicas whose own clocks are off stamp and compare stored times on the database's:
``delivered_at``, events, a retry's ``next_at`` and the claim's "is it due"."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from syncd.core.clock import DatabaseClock
from syncd.core.model import ResultKind
from syncd.run.engine import Engine
from syncd.simulators.jodo.api import JodoSimulator
from syncd.state.base import Completion
from syncd.state.postgres import NOW, PostgresStore, dsn_of
from tests.conftest import drop_csv, jodo_config
from tests.support.clock import FakeClock
from tests.support.jodo_outcomes import serve
from tests.support.reliability import settings_for
from tests.support.stores import drop_schema, new_schema, pg_url
from tests.test_postgres_store import fill

SKEW_S = 300.0  # five minutes: the replica
CLOSE_S = 5.0  # how near the database's clock a stamp must be (the test's own round trips)


class HostClock:
    """A host's clocks: a wall clock that may be stepped, a monotonic one that is not."""

    def __init__(self, wall: float, mono: float) -> None:
        self.wall, self.mono = wall, mono

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono


def test_the_database_clock_moves_on_with_the_monotonic_clock_from_its_reading() -> None:
    host = HostClock(wall=1_000.0, mono=50.0)
    clock = DatabaseClock(host)
    assert clock.time() == 1_000.0  # not read yet: the host's wall clock
    clock.anchor(9_000.0, asked=50.0, answered=50.2)  # read half-way through: at 50.1
    assert clock.time() == pytest.approx(8_999.9)
    host.mono += 10
    host.wall += 3_600  # NTP steps the wall clock: the database's does not move with it
    assert clock.time() == pytest.approx(9_009.9)
    assert clock.monotonic() == 60.0  # intervals stay local


async def database_now() -> float:
    conn = await asyncpg.connect(dsn_of(pg_url()))
    try:
        return float(await conn.fetchval(f"SELECT {NOW}"))
    finally:
        await conn.close()


async def stored(schema: str, sql: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(dsn_of(pg_url()), server_settings={"search_path": schema})
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


@pytest.fixture
async def skewed() -> AsyncIterator[tuple[PostgresStore, PostgresStore, FakeClock]]:
    """Two replicas on one schema: one whose clock is 5 minutes ahead, one 5 behind."""
    schema = new_schema()
    ahead = FakeClock(time.time() + SKEW_S)
    fast = PostgresStore(pg_url(), ahead, schema=schema, lease_s=30)
    slow = PostgresStore(pg_url(), FakeClock(time.time() - SKEW_S), schema=schema, lease_s=30)
    await fast.open()
    await slow.open()
    yield fast, slow, ahead
    await fast.close()
    await slow.close()
    await drop_schema(schema)


async def test_a_replica_ahead_stamps_deliveries_and_events_with_the_databases_time(
    skewed: tuple[PostgresStore, PostgresStore, FakeClock],
) -> None:
    fast, _slow, _ahead = skewed
    await fill(fast, 2)
    [first, second] = await fast.claim("jodo", 2, 60)
    await fast.complete(
        "jodo",
        [
            Completion(first.key, first.hash, ResultKind.DELIVERED),
            Completion(second.key, second.hash, ResultKind.REJECTED, "refused"),
        ],
    )
    now = await database_now()
    schema = str(fast.schema)
    [(delivered_at, created_at)] = await stored(
        schema, f"SELECT delivered_at, created_at FROM leads WHERE key = '{first.key}'"
    )
    events = [at for (at,) in await stored(schema, "SELECT at FROM events")]
    assert len(events) == 2
    for at in (delivered_at, created_at, *events):
        assert abs(float(at) - now) < CLOSE_S, (at, now)  # not 5 minutes ahead


async def test_a_retry_is_due_on_the_databases_clock_for_every_replica(
    skewed: tuple[PostgresStore, PostgresStore, FakeClock],
) -> None:
    fast, slow, ahead = skewed
    await fill(fast, 2)
    [later, now_due] = await fast.claim("jodo", 2, 60)
    # what the pusher writes: its clock (the store's) plus the backoff
    await fast.complete(
        "jodo",
        [
            Completion(
                later.key, later.hash, ResultKind.RETRY, "busy", next_at=fast.clock.time() + 60
            ),
            Completion(
                now_due.key, now_due.hash, ResultKind.RETRY, "busy", next_at=slow.clock.time()
            ),
        ],
    )
    [(next_at,)] = await stored(
        str(fast.schema), f"SELECT next_at FROM leads WHERE key = '{later.key}'"
    )
    assert abs(float(next_at) - (await database_now() + 60)) < CLOSE_S
    # The replica 5 minutes behind takes the lead due now (its own clock: not for 5 minutes)
    assert [q.key for q in await slow.claim("jodo", 5, 60)] == [now_due.key]
    # …and the one 5 minutes ahead does not take the retry a minute early (its own: overdue)
    assert await fast.claim("jodo", 5, 60) == []
    ahead.advance(61)  # a minute passes for the fast replica
    assert [q.key for q in await fast.claim("jodo", 5, 60)] == [later.key]


def test_an_engine_on_a_shared_store_pushes_and_stamps_on_the_databases_clock(
    tmp_path: Path,
) -> None:
    import asyncio

    from syncd.run.once import run_until_idle

    schema = new_schema()
    sim = JodoSimulator()

    async def run(config: Path) -> tuple[float, float]:
        store = PostgresStore(pg_url(), FakeClock(time.time() + SKEW_S), schema=schema)
        await store.open()
        engine = Engine(settings_for(config), store)  # no clock given: the store's
        try:
            summary = await run_until_idle(engine, deadline_s=60)
        finally:
            await engine.close()
            await store.close()
        assert summary.to_dict()["sinks"]["jodo"]["delivered"] == 3
        return engine.clock.time(), await database_now()

    try:
        with serve(sim) as jodo:
            config = jodo_config(tmp_path, jodo.url)
            config.write_text(
                config.read_text().replace(
                    "[state]\n", f'[state]\nurl = "{pg_url()}"\nschema_name = "{schema}"\n', 1
                )
            )
            rows = "".join(f"E{i},98{i:08d},F,L,,\n" for i in range(3))
            drop_csv(tmp_path / "inbox", "a.csv", "id,phone,first,last,email,callback\n" + rows)
            engine_now, now = asyncio.run(run(config))
        stamps = asyncio.run(
            stored(schema, "SELECT delivered_at FROM leads UNION ALL SELECT at FROM events")
        )
    finally:
        asyncio.run(drop_schema(schema))
    assert abs(engine_now - now) < CLOSE_S  # the engine reads the database's clock
    assert len(stamps) >= 6 and all(abs(float(at) - now) < CLOSE_S for (at,) in stamps)
    assert len(sim.records()) == 3
