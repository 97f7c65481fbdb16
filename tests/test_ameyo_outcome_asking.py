"""Ameyo outcome polls cost what is new, not what the store holds (issue 30).

A daemon's poll asked getContacts about every lead ever delivered, so its lag grew
with the store (14 s after half an hour of a soak). Against the simulator, on one fake
clock for the dialer and the sink: a later poll asks about far fewer customers than
were delivered (none whose call connected), a call placed later is still reported
within a bounded number of polls, and a call placed just before a lead's calling
window closes is seen by the first poll after the close, so the expired-lead check
does not send that lead again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from syncd.core.gate import RouteWindow
from syncd.core.mapping import lead_hash, lead_to_json
from syncd.core.model import Action, Lead, LeadWrite
from syncd.core.summary import SinkCounts
from syncd.core.window import CallingWindow
from syncd.errors import RetryableError
from syncd.run.push import Pusher
from syncd.simulators.ameyo.api import AmeyoSimulator, create_app
from syncd.simulators.faults import Faults
from syncd.simulators.server import running
from syncd.sinks.ameyo.asking import MAX_GAP_S, forget_kept
from syncd.sinks.ameyo.config import AmeyoSinkConfig
from syncd.sinks.ameyo.replies import validity_epoch
from syncd.sinks.ameyo.sink import AmeyoSink
from syncd.sinks.base import SinkContext
from syncd.state.base import ChunkWrite
from syncd.state.sqlite import SqliteStore
from tests.support.clock import FakeClock

INTERVAL_S = 5.0  # the sink's poll interval
# Monday 2026-11-30 14:10 UTC is 19:40 in Mumbai: the window (09:00-20:00) closes at 14:30.
START = datetime(2026, 11, 30, 14, 10, tzinfo=UTC).timestamp()
CLOSE = datetime(2026, 11, 30, 14, 30, tzinfo=UTC).timestamp()
WINDOW = CallingWindow.parse({"mon-sat": "09:00-20:00"})


@dataclass
class Rig:
    sim: AmeyoSimulator
    url: str
    store: SqliteStore
    clock: FakeClock
    sinks: list[AmeyoSink]

    async def sink(self, **overrides: Any) -> AmeyoSink:
        values: dict[str, Any] = {
            "name": "ameyo",
            "url": self.url,
            "auth": {"mode": "session", "user_id": "syncd", "password": "secret"},
            "campaign_id": 1,
            "lead_id": 1,
            "timezone": "Asia/Kolkata",  # the simulator's clock
            "poll": {"interval_s": INTERVAL_S},
            "poll_chunk": 10,
            **overrides,
        }
        context = SinkContext(store=self.store, region="IN", clock=self.clock)
        sink = AmeyoSink(AmeyoSinkConfig(**values), context)
        await sink.open()
        self.sinks.append(sink)
        return sink

    async def deliver(self, sink: AmeyoSink, *leads: Lead, window: bool = False) -> None:
        write = ChunkWrite("run-1", "crm", "leads.csv")
        write.leads["ameyo"] = [
            LeadWrite(lead.key, lead_hash(text), None, text, Action.UPSERT, "new", None)
            for lead in leads
            for text in [lead_to_json(lead)]
        ]
        await self.store.apply_chunk(write)
        windows = [RouteWindow(WINDOW, "Asia/Kolkata")] if window else []
        counts = SinkCounts()
        pusher = Pusher(sink, self.store, counts, windows=windows, clock=self.clock)
        await pusher.run_until_idle(self.clock.now + 20)
        assert counts.delivered == len(leads)

    async def poll(self, sink: AmeyoSink) -> int:
        """One poll as the daemon runs it; return how many customers it asked about."""
        before = len(self.sim.contacts_asked)
        await sink.poll_outcomes()
        return sum(self.sim.contacts_asked[before:])

    async def statuses(self) -> dict[str, str]:
        return {o["key"]: o["status"] for o in await self.store.outcome_dump()}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def sim(clock: FakeClock) -> AmeyoSimulator:
    return AmeyoSimulator(dialing=False, timezone="Asia/Kolkata", clock=clock, dials_per_tick=1000)


@pytest.fixture
def url(sim: AmeyoSimulator) -> Iterator[str]:
    with running(create_app(sim)) as base:
        yield base


@pytest.fixture
async def rig(
    sim: AmeyoSimulator, url: str, clock: FakeClock, tmp_path: Path
) -> AsyncIterator[Rig]:
    store = SqliteStore(tmp_path / "state.db")
    await store.open()
    rig = Rig(sim, url, store, clock, [])
    yield rig
    for sink in rig.sinks:
        await sink.close()
    await store.close()


def lead(n: int, **changes: Any) -> Lead:
    values: dict[str, Any] = {"key": f"L{n:03d}", "phone": f"+9198200{n:05d}", **changes}
    return Lead(**values)


async def test_later_polls_ask_about_far_fewer_customers_than_were_delivered(rig: Rig) -> None:
    sink = await rig.sink()
    # Half the customers answer (final), half do not and are not dialled again for hours.
    rig.sim.set_dialer(["CONNECTED", "NO_ANSWER"], redial_after_s=6 * 3600.0)
    await rig.deliver(sink, *(lead(n) for n in range(60)))
    # One lead's call comes later: a callback twenty minutes from now.
    later = datetime.fromtimestamp(START, UTC) + timedelta(minutes=20)
    await rig.deliver(sink, lead(99, call_at=later))
    rig.clock.advance(2)  # the dialer rings the sixty at once

    first = await rig.poll(sink)
    statuses = await rig.statuses()
    asked: list[int] = []
    reported_at = None
    while rig.clock.now < START + 40 * 60:
        rig.clock.advance(INTERVAL_S)
        asked.append(await rig.poll(sink))
        if reported_at is None and "L099" in await rig.statuses():
            reported_at = rig.clock.now

    assert first == 61  # every customer is new to the poll
    assert list(statuses.values()).count("connected") == 30
    # Each once more at the poll interval (a disposition may follow the call), at most
    # REASK_CHUNKS chunks of 10 a poll: the rest at the next
    assert asked[:2] == [40, 21]
    # From then on: never the thirty who answered, the others at growing gaps
    assert max(asked[2:]) <= 31
    assert sum(asked) < 61 * len(asked) // 20, asked
    assert sum(1 for n in asked if n == 0) > len(asked) * 3 // 4
    # The callback's call is reported within a gap of its time, however long it waited
    assert reported_at is not None
    assert reported_at - later.timestamp() <= MAX_GAP_S + INTERVAL_S
    assert (await rig.statuses())["L099"] == "connected"


async def test_a_connected_lead_is_asked_again_once_delivered_again(rig: Rig) -> None:
    sink = await rig.sink()
    rig.sim.set_dialer(["CONNECTED"])
    await rig.deliver(sink, lead(1))
    rig.clock.advance(2)
    assert await rig.poll(sink) == 1
    rig.clock.advance(INTERVAL_S)
    assert await rig.poll(sink) == 1  # connected, and said so again: final
    rig.clock.advance(4 * INTERVAL_S)
    assert await rig.poll(sink) == 0
    callback = datetime.fromtimestamp(rig.clock.now, UTC) + timedelta(hours=1)
    await rig.deliver(sink, lead(1, call_at=callback))  # the CRM asks for a callback
    rig.clock.advance(INTERVAL_S)
    assert await rig.poll(sink) == 1


async def test_a_withdrawn_lead_is_no_longer_asked_about(rig: Rig) -> None:
    sink = await rig.sink()
    await rig.deliver(sink, lead(1), lead(2))
    assert await rig.poll(sink) == 2
    gone = ChunkWrite("run-2", "crm", "leads.csv")  # the CRM deleted it: a removal queued
    text = lead_to_json(lead(2))
    gone.leads["ameyo"] = [LeadWrite("L002", lead_hash(text), None, text, Action.DELETE, "", None)]
    await rig.store.apply_chunk(gone)
    for _ in range(int(MAX_GAP_S / INTERVAL_S) + 2):
        rig.clock.advance(INTERVAL_S)
        await rig.poll(sink)
    # Only L001's customer is asked after L002 left the delivered leads
    customers = {c.customer_id: c.data["phone1"] for c in rig.sim.customer_list()}
    assert len(customers) == 2
    assert max(rig.sim.contacts_asked[1:]) == 1


@pytest.mark.parametrize("restarted", [False, True], ids=["same process", "restarted"])
async def test_a_call_just_before_the_close_is_seen_by_the_first_poll_after_it(
    rig: Rig, restarted: bool
) -> None:
    sink = await rig.sink()
    await rig.deliver(sink, lead(1), window=True)  # validityTime 20:00 IST (14:30 UTC)
    if restarted:  # a new process: it knows the lead's close only from the store
        forget_kept()
        sink = await rig.sink()
    expired = []
    while rig.clock.now < CLOSE + 120:
        if rig.clock.now == CLOSE - 1:  # 19:59:59 IST: the dialer rings her; she answers
            rig.sim.set_dialer(["CONNECTED"])
            rig.sim.snapshot()  # the dialer's floor moves to now
        started = rig.clock.now
        await sink.poll_outcomes()
        # What the engine does after a poll that went through (_send_expired_again)
        expired.append(await rig.store.requeue_expired("ameyo", started, "expired", started))
        rig.clock.advance(1 if CLOSE - 5 <= rig.clock.now < CLOSE + 5 else INTERVAL_S)

    [customer] = rig.sim.customer_list()
    assert customer.attempts == 1 and customer.status == "CONNECTED"
    assert sum(expired) == 0  # not taken for expired undialled
    assert (await rig.statuses()) == {"L001": "connected"}
    # Between its first ask and the approach of the close, it was asked at growing gaps
    assert len(rig.sim.contacts_asked) < (CLOSE - START) / INTERVAL_S / 4


async def test_a_stopped_poll_leaves_the_rest_due_for_the_next(rig: Rig) -> None:
    stopping = asyncio.Event()
    sink = await rig.sink(poll_chunk=2)
    sink.ctx.stopping = stopping
    await rig.deliver(sink, *(lead(n) for n in range(7)))
    stopping.set()
    assert await rig.poll(sink) == 2  # the chunk being read, then it ended
    stopping.clear()
    assert await rig.poll(sink) == 5  # the other five, asked at once


async def test_a_failed_chunk_is_asked_first_at_the_next_poll(rig: Rig) -> None:
    sink = await rig.sink(poll_chunk=2, retry_base_s=0.01, retry_max_s=0.05, max_attempts=2)
    rig.sim.set_dialer(["NO_ANSWER"], redial_after_s=6 * 3600.0)
    await rig.deliver(sink, *(lead(n) for n in range(4)))
    rig.clock.advance(2)
    assert await rig.poll(sink) == 4
    await rig.deliver(sink, lead(7))
    rig.sim.faults.set(Faults(error_rate=1.0))  # the dialer fails every request
    with pytest.raises(RetryableError, match="1 chunk"):
        await sink.poll_outcomes()
    rig.sim.faults.set(Faults())
    rig.clock.advance(1)  # before the others' gap: only the one left unread
    assert await rig.poll(sink) == 1
    assert await rig.statuses() == {f"L00{n}": "no_answer" for n in (0, 1, 2, 3, 7)}


@pytest.mark.parametrize(
    "text", ["2026-11-30 20:00:00 GMT+05:30", "2026-11-30 20:00:00"], ids=["zone", "plain"]
)
def test_a_stored_validity_time_reads_back_as_the_close(text: str) -> None:
    assert validity_epoch(text, "Asia/Kolkata") == CLOSE
    assert validity_epoch(None, "Asia/Kolkata") is None


async def test_a_reload_keeps_what_was_asked_and_a_restart_asks_everything_once(
    rig: Rig,
) -> None:
    sink = await rig.sink()
    rig.sim.set_dialer(["NO_ANSWER"], redial_after_s=6 * 3600.0)
    await rig.deliver(sink, *(lead(n) for n in range(30)))
    rig.clock.advance(2)
    assert await rig.poll(sink) == 30
    rig.clock.advance(1)
    reloaded = await rig.sink()  # a reload builds the sink anew, in the same process
    assert await rig.poll(reloaded) == 0
    forget_kept()  # a new process
    restarted = await rig.sink()
    assert await rig.poll(restarted) == 30
