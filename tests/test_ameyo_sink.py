"""The Ameyo sink through the real outbox: records, callbacks, results by order, outcomes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from syncd.core.mapping import lead_hash, lead_to_json
from syncd.core.model import Action, Lead, LeadWrite, Outcome
from syncd.core.summary import SinkCounts
from syncd.run.push import Pusher
from syncd.simulators.ameyo.api import AmeyoSimulator, create_app
from syncd.simulators.ameyo.dialing import DISPOSITIONS
from syncd.simulators.faults import Faults
from syncd.simulators.server import running
from syncd.sinks.ameyo.config import AmeyoSinkConfig
from syncd.sinks.ameyo.sink import AmeyoSink
from syncd.sinks.base import SinkContext
from syncd.state.base import ChunkWrite
from syncd.state.sqlite import SqliteStore
from tests.support.clock import FakeClock

CALL_AT = datetime(2030, 1, 2, 4, 30, tzinfo=UTC)  # 10:00 in Asia/Kolkata


@dataclass
class Rig:
    sim: AmeyoSimulator
    url: str
    store: SqliteStore
    sinks: list[AmeyoSink]

    async def sink(
        self,
        stopping: asyncio.Event | None = None,
        clock: FakeClock | None = None,
        **overrides: Any,
    ) -> AmeyoSink:
        values: dict[str, Any] = {
            "name": "ameyo",
            "url": self.url,
            "auth": {"mode": "session", "user_id": "syncd", "password": "secret"},
            "campaign_id": 1,
            "lead_id": 1,
            "retry_base_s": 0.1,
            "retry_max_s": 0.5,
            "timezone": "Asia/Kolkata",  # the simulator's clock
            **overrides,
        }
        context = SinkContext(store=self.store, region="IN", stopping=stopping)
        if clock is not None:  # the sink's: when each lead is asked about again
            context = replace(context, clock=clock)
        sink = AmeyoSink(AmeyoSinkConfig(**values), context)
        await sink.open()
        self.sinks.append(sink)
        return sink

    async def enqueue(self, *leads: Lead, action: Action = Action.UPSERT) -> None:
        write = ChunkWrite("run-1", "crm", "leads.csv")
        write.leads["ameyo"] = [
            LeadWrite(lead.key, lead_hash(text), None, text, action, "new", None)
            for lead in leads
            for text in [lead_to_json(lead)]
        ]
        await self.store.apply_chunk(write)

    async def push(self, sink: AmeyoSink) -> tuple[SinkCounts, Pusher]:
        counts = SinkCounts()
        pusher = Pusher(sink, self.store, counts)
        await pusher.run_until_idle(time.time() + 20)
        return counts, pusher

    async def lead_row(self, key: str) -> dict[str, Any]:
        [row] = (await self.store.lead_history(key))["leads"]
        return row


@pytest.fixture
def sim() -> AmeyoSimulator:
    return AmeyoSimulator(dialing=False, timezone="Asia/Kolkata")


@pytest.fixture
def url(sim: AmeyoSimulator) -> Iterator[str]:
    with running(create_app(sim)) as base:
        yield base


@pytest.fixture
async def rig(sim: AmeyoSimulator, url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    store = SqliteStore(tmp_path / "state.db")
    await store.open()
    rig = Rig(sim, url, store, [])
    yield rig
    for sink in rig.sinks:
        await sink.close()
    await store.close()


def lead(n: int, **changes: Any) -> Lead:
    values: dict[str, Any] = {
        "key": f"L{n:03d}",
        "phone": f"+9198200{n:05d}",
        "first_name": "Asha",
        "last_name": f"Rao{n}",
        "email": f"asha{n}@example.com",
        **changes,
    }
    return Lead(**values)


async def test_a_lead_becomes_a_customer_with_phones_name_email_key_and_columns(
    rig: Rig,
) -> None:
    sink = await rig.sink(
        dial_format="00",
        key_column="crm_id",
        columns={"city": "city", "owner": "agent"},
        max_phones=3,
    )
    alternates = ("+919820000002", "+919820000003", "+919820000004")
    await rig.enqueue(lead(1, alt_phones=alternates, agent="agent7", fields={"city": "Pune"}))
    counts, _ = await rig.push(sink)
    [customer] = rig.sim.customer_list()
    assert customer.data == {
        "phone1": "00919820000001",
        "phone2": "00919820000002",
        "phone3": "00919820000003",
        "name": "Asha Rao1",
        "email": "asha1@example.com",
        "crm_id": "L001",
        "city": "Pune",
        "owner": "agent7",
    }
    assert counts.delivered == 1
    assert (await rig.lead_row("L001"))["vendor_ref"] == str(customer.customer_id)


async def test_a_lead_with_call_at_is_uploaded_with_a_callback_on_the_servers_clock(
    rig: Rig,
) -> None:
    sink = await rig.sink(self_callback=True)
    await rig.enqueue(lead(1, call_at=CALL_AT, agent="agent7"), lead(2))
    await rig.push(sink)
    [callback] = rig.sim.callbacks
    [with_callback] = [c for c in rig.sim.customer_list() if c.customer_id == callback.customer_id]
    assert with_callback.data["phone1"] == "+919820000001"
    assert callback.at == CALL_AT.timestamp()
    assert (callback.user_id, callback.self_callback) == ("agent7", True)
    assert rig.sim.requests["uploadContactAndAddCallback"] == 1


async def test_without_callbacks_the_sink_uploads_contacts_only(rig: Rig) -> None:
    sink = await rig.sink(callbacks=False)
    await rig.enqueue(lead(1, call_at=CALL_AT), lead(2))
    counts, _ = await rig.push(sink)
    assert counts.delivered == 2
    assert rig.sim.requests["uploadContacts"] == 1
    assert "uploadContactAndAddCallback" not in rig.sim.requests
    assert rig.sim.callbacks == []


async def test_a_changed_call_at_alone_becomes_one_add_callback_for_the_stored_customer(
    rig: Rig,
) -> None:
    sink = await rig.sink()
    await rig.enqueue(lead(1, call_at=CALL_AT))
    await rig.push(sink)
    later = CALL_AT + timedelta(days=1)
    await rig.enqueue(lead(1, call_at=later))
    counts, _ = await rig.push(sink)
    assert counts.delivered == 1
    assert rig.sim.requests["addCallback"] == 1
    assert rig.sim.uploads() == {"+919820000001": 1}
    [customer] = rig.sim.customer_list()
    assert [(cb.customer_id, cb.at) for cb in rig.sim.callbacks] == [
        (customer.customer_id, CALL_AT.timestamp()),
        (customer.customer_id, later.timestamp()),
    ]


async def test_a_changed_record_is_uploaded_again_without_repeating_its_callback(
    rig: Rig,
) -> None:
    sink = await rig.sink()
    await rig.enqueue(lead(1, call_at=CALL_AT))
    await rig.push(sink)
    await rig.enqueue(lead(1, call_at=CALL_AT, last_name="Iyer"))
    await rig.push(sink)
    await rig.enqueue(lead(1, call_at=CALL_AT, last_name="Iyer", fields={"unmapped": "x"}))
    counts, _ = await rig.push(sink)
    assert counts.delivered == 1  # nothing Ameyo holds changed: no request at all
    assert rig.sim.requests["uploadContactAndAddCallback"] == 2
    assert rig.sim.uploads() == {"+919820000001": 2}
    assert len(rig.sim.callbacks) == 1
    assert rig.sim.customer_list()[0].data["name"] == "Asha Iyer"


async def test_a_record_refused_by_ameyo_keeps_the_reason_and_the_rest_go_through(
    rig: Rig,
) -> None:
    rig.sim.max_phone_length = 13
    sink = await rig.sink(dial_format="national")
    await rig.enqueue(lead(1), lead(2, phone="+442071838750"), lead(3))
    counts, _ = await rig.push(sink)
    assert (counts.delivered, counts.refused) == (2, 1)
    row = await rig.lead_row("L002")
    assert row["state"] == "rejected"
    assert row["last_error"] == (
        "PREPROCESSING_INVALID_LENGTH: CustomerManager.Phone.number.does.not.have.valid.length (14)"
    )
    assert sorted(rig.sim.uploads()) == ["09820000001", "09820000003"]


async def test_invalid_configuration_for_a_record_is_a_refusal(rig: Rig) -> None:
    rig.sim.force_result("+919820000001", "INVALID_CONFIGURATION", times=None)
    sink = await rig.sink()
    await rig.enqueue(lead(1))
    counts, _ = await rig.push(sink)
    assert counts.refused == 1
    assert (await rig.lead_row("L001"))["last_error"].startswith("INVALID_CONFIGURATION")


async def test_add_failed_is_retried_and_then_delivered(rig: Rig) -> None:
    rig.sim.force_result("+919820000001", "ADD_FAILED", times=2)
    sink = await rig.sink(max_attempts=5)
    await rig.enqueue(lead(1), lead(2))
    counts, _ = await rig.push(sink)
    assert (counts.delivered, counts.failed) == (2, 0)
    assert rig.sim.requests["uploadContactAndAddCallback"] == 3
    assert rig.sim.uploads() == {"+919820000001": 1, "+919820000002": 1}


async def test_add_failed_every_time_fails_the_lead_after_max_attempts_with_the_reason(
    rig: Rig,
) -> None:
    rig.sim.force_result("+919820000001", "UPDATE_FAILED", times=None)
    sink = await rig.sink(max_attempts=2)
    await rig.enqueue(lead(1))
    counts, _ = await rig.push(sink)
    assert counts.failed == 1
    row = await rig.lead_row("L001")
    assert row["state"] == "failed"
    assert row["last_error"].startswith("UPDATE_FAILED: CustomerManager.simulated.update_failed")
    assert row["last_error"].endswith("(gave up after 2 attempts)")


async def test_a_removal_is_refused_with_a_reason(rig: Rig) -> None:
    sink = await rig.sink()
    await rig.enqueue(lead(1))
    await rig.push(sink)  # the dialer holds it: a removal has something to take back
    await rig.enqueue(replace(lead(1), deleted=True), action=Action.DELETE)
    counts, _ = await rig.push(sink)
    assert counts.refused == 1
    assert "cannot remove" in (await rig.lead_row("L001"))["last_error"]


async def test_a_lead_removed_from_the_campaign_mid_run_stops_the_sink_and_leads_stay_queued(
    rig: Rig,
) -> None:
    sink = await rig.sink()
    with rig.sim.lock:
        del rig.sim.campaigns[1][1]
    await rig.enqueue(lead(1), lead(2))
    _, pusher = await rig.push(sink)
    assert pusher.stopped_by is not None
    assert "lead.not.in.camp" in str(pusher.stopped_by)
    assert await rig.store.pending_count("ameyo") == 2


async def test_two_leads_with_one_phone_share_one_customer_when_duplicates_are_allowed(
    rig: Rig,
) -> None:
    sink = await rig.sink(duplicates="allow")
    await rig.enqueue(lead(1), lead(2, phone="+919820000001"))
    counts, _ = await rig.push(sink)
    assert counts.delivered == 2
    refs = {(await rig.lead_row(key))["vendor_ref"] for key in ("L001", "L002")}
    assert len(refs) == 1
    assert rig.sim.uploads() == {"+919820000001": 2}


async def test_by_default_the_second_lead_of_a_number_waits_instead_of_overwriting(
    rig: Rig,
) -> None:
    sink = await rig.sink()
    await rig.enqueue(lead(1), lead(2, phone="+919820000001"))
    counts, _ = await rig.push(sink)
    assert counts.delivered == 1
    assert rig.sim.uploads() == {"+919820000001": 1}
    [waiting] = await rig.store.waiting()
    assert (waiting["key"], waiting["waits_for"]) == ("L002", "L001")


async def wait_for(check: Any) -> None:
    async with asyncio.timeout(5):
        while not check():  # noqa: ASYNC110 - the simulator dials on its own clock
            await asyncio.sleep(0.02)


async def test_polling_records_what_the_dialer_did(rig: Rig) -> None:
    rig.sim.set_dialer(["BUSY", "CONNECTED"], redial_after_s=0.02, dial_every_s=0.01)
    sink = await rig.sink()
    await rig.enqueue(lead(1), lead(2), lead(3))
    await rig.push(sink)
    await wait_for(lambda: all(c.status == "CONNECTED" for c in rig.sim.customer_list()))
    assert await sink.poll_outcomes() == 3
    assert await sink.poll_outcomes() == 0  # nothing changed since
    customers = {str(c.customer_id): c for c in rig.sim.customer_list()}
    outcomes = await rig.store.outcome_dump()
    assert sorted(o["key"] for o in outcomes) == ["L001", "L002", "L003"]
    for outcome in outcomes:
        customer = customers[(await rig.lead_row(outcome["key"]))["vendor_ref"]]
        assert (outcome["status"], outcome["attempts"]) == ("connected", customer.attempts)
        assert outcome["agent"] == customer.last_user_id
        assert outcome["disposition"] == customer.disposition
        assert outcome["disposition"] in DISPOSITIONS
    async with rig.store.db.execute("SELECT raw_status, last_dialed_at FROM outcomes") as cur:
        rows = await cur.fetchall()
    assert {r[0] for r in rows} == {"CONNECTED"}
    dialled = {int(c.last_dialed or 0) for c in customers.values()}
    assert {int(r[1]) for r in rows} == dialled  # server time (IST) read back as UTC


async def test_each_change_the_dialer_makes_is_recorded_once(rig: Rig) -> None:
    clock = FakeClock(time.time())
    rig.sim.clock = clock
    rig.sim.set_dialer(["BUSY", "NO_ANSWER", "CONNECTED"], redial_after_s=60)
    sink = await rig.sink(clock=clock)
    await rig.enqueue(lead(1))
    await rig.push(sink)
    assert await sink.poll_outcomes() == 1  # dialled once at upload time: BUSY
    assert await sink.poll_outcomes() == 0
    clock.now += 61
    assert await sink.poll_outcomes() == 1  # the redial: NO_ANSWER
    [outcome] = await rig.store.outcome_dump()
    assert (outcome["version"], outcome["status"], outcome["attempts"]) == (2, "no_answer", 2)


async def test_nothing_is_recorded_for_customers_not_dialled_yet(rig: Rig) -> None:
    sink = await rig.sink()
    await rig.enqueue(lead(1))
    await rig.push(sink)
    assert await sink.poll_outcomes() == 0
    assert rig.sim.requests["getContacts"] == 1


async def test_polling_asks_for_customers_in_chunks(rig: Rig) -> None:
    sink = await rig.sink(poll_chunk=2)
    await rig.enqueue(*(lead(n) for n in range(5)))
    await rig.push(sink)
    await sink.poll_outcomes()
    assert rig.sim.requests["getContacts"] == 3


async def test_a_stop_ends_a_poll_after_its_chunk_keeping_what_it_read(rig: Rig) -> None:
    stopping = asyncio.Event()
    sink = await rig.sink(stopping=stopping, poll_chunk=2)
    await rig.enqueue(*(lead(n) for n in range(7)))
    await rig.push(sink)
    stopping.set()  # a reload asked while the poll walks the delivered leads
    with capture_logs() as logs:
        await sink.poll_outcomes()
    asked_before_stop = rig.sim.requests["getContacts"]
    stopping.clear()
    after_reload = await rig.sink(stopping=stopping, poll_chunk=2)  # a new sink object
    await after_reload.poll_outcomes()

    assert asked_before_stop == 1  # the chunk being read, then it ended
    assert [e for e in logs if e["event"] == "sink.poll.stopped"]
    # The sink built anew by the reload asks about the five the stop left (3 chunks of 2)
    assert rig.sim.requests["getContacts"] - asked_before_stop == 3


async def test_health_reports_the_session_and_its_keepalive(rig: Rig) -> None:
    sink = await rig.sink()
    health = sink.health()
    assert health.session == "valid"
    assert health.details["logins"] == 1
    assert health.details["keepalive_interval_s"] == 20.0


async def test_a_new_phone_makes_a_new_customer_and_the_callback_follows_it(rig: Rig) -> None:
    sink = await rig.sink()
    await rig.enqueue(lead(1, call_at=CALL_AT))
    await rig.push(sink)
    await rig.enqueue(lead(1, phone="+919820000099", call_at=CALL_AT))
    await rig.push(sink)
    customers = {c.data["phone1"]: c.customer_id for c in rig.sim.customer_list()}
    old, new = customers["+919820000001"], customers["+919820000099"]
    assert [cb.customer_id for cb in rig.sim.callbacks] == [old, new]
    assert (await rig.lead_row("L001"))["vendor_ref"] == str(new)


async def test_under_injected_faults_every_lead_arrives_exactly_once(rig: Rig) -> None:
    sink = await rig.sink(batch_size=10, max_attempts=20)
    rig.sim.faults.set(
        Faults(
            seed=11,
            error_rate=0.15,
            rate_429=0.1,
            retry_after="0",
            malformed_rate=0.1,
            reset_rate=0.05,
            invalid_session_rate=0.1,
        )
    )
    await rig.enqueue(*(lead(n, call_at=CALL_AT if n % 3 == 0 else None) for n in range(40)))
    counts, _ = await rig.push(sink)
    rig.sim.faults.set(Faults())
    assert counts.delivered == 40
    assert set(rig.sim.uploads().values()) == {1}
    assert len(rig.sim.callbacks) == 14
    injected = rig.sim.faults.injected
    assert injected.get("5xx") and injected.get("malformed") and injected.get("invalid_session")


async def test_a_poll_never_overwrites_a_newer_observation(rig: Rig) -> None:
    clock = FakeClock(time.time())
    rig.sim.clock = clock
    rig.sim.set_dialer(["BUSY", "NO_ANSWER"], redial_after_s=60)
    sink = await rig.sink(clock=clock)
    await rig.enqueue(lead(1))
    await rig.push(sink)
    assert await sink.poll_outcomes() == 1
    newer = Outcome("ameyo", "L001", datetime.now(UTC) + timedelta(hours=1), status="connected")
    assert await rig.store.record_outcomes([newer]) == 1
    clock.now += 61
    assert await sink.poll_outcomes() == 0  # the dialer's NO_ANSWER was observed earlier
    [outcome] = await rig.store.outcome_dump()
    assert (outcome["version"], outcome["status"]) == (2, "connected")


async def test_a_sink_stopped_by_another_job_mid_pass_sends_no_more_batches(rig: Rig) -> None:
    # The fresh-eyes run: a poll found the lead list disabled and stopped the sink, while
    # the push pass went on uploading thousands of leads into it.
    sink = await rig.sink(batch_size=2, push_concurrency=1)
    await rig.enqueue(*(lead(n) for n in range(10)))
    counts = SinkCounts()

    def working() -> bool:
        return len(rig.sim.floor.customers) < 4  # stopped once two batches are in

    await Pusher(sink, rig.store, counts, working=working).run_until_idle(time.time() + 20)
    assert len(rig.sim.floor.customers) == 4
    assert counts.delivered == 4 and await rig.store.pending_count("ameyo") == 6


async def test_a_batch_the_dialer_did_not_answer_goes_back_together_not_in_scattered_bits(
    rig: Rig,
) -> None:
    sink = await rig.sink(batch_size=10, max_attempts=20, retry_base_s=5, retry_max_s=60)
    await rig.enqueue(*(lead(n) for n in range(10)))
    rig.sim.faults.set(Faults(error_rate=1.0))  # every answer a 5xx: the batch is retried
    pusher = Pusher(sink, rig.store, SinkCounts())
    await pusher.run_until_idle(time.time() + 0.2)  # the first try, nothing after
    async with rig.store.db.execute("SELECT next_at FROM leads WHERE state = 'pending'") as cur:
        retry_at = {row[0] async for row in cur}

    # One wait for the whole batch: jitter spreads batches apart, not the leads of one
    # batch (scattered, they went back to a dialer that was down in many small requests).
    assert len(retry_at) == 1


async def test_a_batchs_deliveries_are_noted_in_the_ledger_in_one_transaction(rig: Rig) -> None:
    """What Ameyo holds of each lead (its customer, the record sent) is noted for the
    batch at once, not a transaction a lead on the push path; a second push of the same
    leads then finds them held and sends nothing."""
    from tests.support.stores import traced

    sink = await rig.sink(callbacks=False)
    await rig.enqueue(*[lead(n) for n in range(1, 31)])
    async with traced(rig.store) as sent:
        counts, _ = await rig.push(sink)
    assert counts.delivered == 30
    noted = [s for s in sent if s.lstrip().startswith("INSERT INTO sink_ledger ")]
    begun_with_notes = sum(1 for s in sent if s.startswith("BEGIN"))
    assert len(noted) == 30 and begun_with_notes <= 3, begun_with_notes
    held = [await sink.ledger.delivered(f"L{n:03d}") for n in range(1, 31)]
    assert all(h is not None and h.customer for h in held)
