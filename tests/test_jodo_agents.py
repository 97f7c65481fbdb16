"""Jodo agents: userStatus kept in the store, and reallocatedata for absent agents' leads."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from syncd.simulators.jodo.api import DialPlan, DialResult, JodoSimulator
from syncd.sinks.jodo.sink import AGENT_LOGINS_REFRESH_S
from syncd.state.sqlite import SqliteStore
from tests.support.clock import FakeClock
from tests.support.jodo_outcomes import (
    canned,
    dialled,
    lead,
    make_sink,
    push,
    records_by_phone,
    serve,
)
from tests.support.stores import traced

LOGGED_OUT, READY = 0, 1
HOUR = 3600.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "state.db")
    await s.open()
    yield s
    await s.close()


def floor(zone: str = "UTC", clock: FakeClock | None = None, **agents: int) -> JodoSimulator:
    """Return a dialling simulator with these agents (login=status), none reached on a call."""
    busy = (DialResult("Busy"),)
    plan = DialPlan(interval_s=0, retry_s=HOUR, recording_delay_s=None, results=busy)
    return JodoSimulator(dial=plan, agents=agents, timezone=zone, clock=clock or time.time)


async def agents_of(store: SqliteStore) -> dict[str, dict[str, Any]]:
    return {a["login"]: a for a in await store.agent_dump()}


async def events(store: SqliteStore, key: str, kind: str) -> list[str]:
    history = await store.lead_history(key)
    return [e["detail"] for e in history["events"] if e["kind"] == kind]


REALLOCATE = {"fallback": ["bob", "carol"], "after_s": 600}


# -- userStatus ------------------------------------------------------------------------


async def test_configured_agents_status_description_duration_and_change_time_are_kept(
    store: SqliteStore,
) -> None:
    sim = floor("Asia/Kolkata", alice=READY)
    an_hour_ago = int(time.time() - HOUR)
    sim.set_agent_status("bob", LOGGED_OUT, since=an_hour_ago)
    with serve(sim) as jodo:
        sink = make_sink(
            jodo.url, store, timezone="Asia/Kolkata", agents={"logins": ["alice", "bob", "ghost"]}
        )
        await sink.poll_outcomes()
        await sink.close()
    got = await agents_of(store)
    assert (got["alice"]["status"], got["alice"]["description"]) == ("1", "Ready")
    assert (got["bob"]["status"], got["bob"]["description"]) == ("0", "Logged Out")
    assert got["bob"]["changed_at"] == an_hour_ago  # "22-Nov-26 11:59:59 PM" in IST, read as UTC
    assert HOUR - 5 <= got["bob"]["duration_s"] <= HOUR + 5
    assert got["ghost"]["status"] == "missing"  # a login the dialer does not know


async def test_agents_that_leads_are_assigned_to_are_polled_when_none_are_configured(
    store: SqliteStore,
) -> None:
    sim = floor(alice=READY, bob=READY)
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store)
        await push(sink, store, [lead(1, agent="bob"), lead(2, agent="alice"), lead(3)])
        await sink.poll_outcomes()
        await sink.close()
    assert sim.last_body["userStatus"]["loginids"] == ["alice", "bob"]
    assert set(await agents_of(store)) == {"alice", "bob"}


async def test_the_agents_leads_are_assigned_to_are_looked_for_again_every_few_minutes(
    store: SqliteStore,
) -> None:
    # Finding them reads every delivered lead: at a poll every 5 s that grew with the
    # store (0.3-0.5 s a poll at 20,000 leads) and held the outcomes back.
    clock = FakeClock(time.time())
    sim = floor(alice=READY, bob=READY)
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store, clock)
        await push(sink, store, [lead(1, agent="alice")])
        scans = counting(store, "delivered")
        await sink.poll_outcomes()
        await push(sink, store, [lead(2, agent="bob")])
        clock.advance(60)
        await sink.poll_outcomes()
        asked_within = sim.last_body["userStatus"]["loginids"]
        clock.advance(AGENT_LOGINS_REFRESH_S)
        await sink.poll_outcomes()
        await sink.close()
    assert asked_within == ["alice"]  # bob's lead is newer than the last look
    assert sim.last_body["userStatus"]["loginids"] == ["alice", "bob"]
    assert scans() == 2  # at the first poll and after the refresh, not at every poll


def counting(store: SqliteStore, method: str) -> Any:
    """Count the first-page calls of ``store.method`` (a scan starts with after_key='')."""
    calls: list[str] = []
    original = getattr(store, method)

    async def counted(*args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("after_key"):
            calls.append(method)
        return await original(*args, **kwargs)

    setattr(store, method, counted)
    return lambda: len(calls)


async def test_an_agents_status_change_over_time_is_recorded(store: SqliteStore) -> None:
    clock = FakeClock(time.time())
    sim = floor(clock=clock, alice=READY)
    sim.schedule_agent("alice", 0.3, LOGGED_OUT)
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store, clock, agents={"logins": ["alice"]})
        await sink.poll_outcomes()
        assert (await agents_of(store))["alice"]["description"] == "Ready"
        clock.advance(0.4)
        await sink.poll_outcomes()
        await sink.close()
    assert (await agents_of(store))["alice"]["description"] == "Logged Out"


async def test_no_agents_means_no_user_status_request(store: SqliteStore) -> None:
    sim = floor()
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store)
        await push(sink, store, [lead(1)])
        await sink.poll_outcomes()
        await sink.close()
    assert "userStatus" not in sim.requests


DOC_USER_STATUS = """{ "statusdata":[
{"duration":100,"currentstatus":1,
"currentstatusdesc":"Ready",
"statuschangetime":"07-Mar-19 11:59:59 PM", "login":"user1","statusdesc":"Success","status":3}
{"duration":11,"currentstatus":11,
"currentstatusdesc":"System Sent NA",
"statuschangetime":"07-Mar-19 11:59:59 PM", "login":"user10","statusdesc":"Success","status":3}
],
 "method":"userStatus",
 "timestamp":"2019-03-08 11:53:02"
 }"""


async def test_the_documents_user_status_sample_is_read_despite_its_missing_comma(
    store: SqliteStore,
) -> None:
    with canned({"userStatus": DOC_USER_STATUS}) as url:
        sink = make_sink(url, store, timezone="Asia/Kolkata")
        got = await sink.agents.poll(["user1", "user10"], datetime.now(UTC))
        await sink.close()
    assert got["user10"].description == "System Sent NA" and got["user10"].duration_s == 11
    assert got["user1"].changed_at == datetime(2019, 3, 7, 18, 29, 59, tzinfo=UTC)


# -- reallocatedata ---------------------------------------------------------------------


async def test_leads_of_an_agent_absent_too_long_move_once_to_the_least_assigned_fallback(
    store: SqliteStore,
) -> None:
    sim = floor(bob=READY, carol=READY)
    sim.set_agent_status("alice", LOGGED_OUT, since=time.time() - HOUR)
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store, reallocation=REALLOCATE)
        alices = [lead(n, agent="alice") for n in (1, 2, 3, 4)]
        await push(sink, store, [*alices, lead(5, agent="bob")])
        await sink.poll_outcomes()
        await sink.poll_outcomes()  # alice is still away: nothing moves twice
        sim.advance()
        await push(sink, store, [lead(1, agent="alice", last_name="Changed")])
        await sink.close()
    held = records_by_phone(sim)
    # bob starts with one lead of his own, carol with none: they take turns from there
    assert {n: held[dialled(n)]["userlogin"] for n in (1, 2, 3, 4, 5)} == {
        1: "carol",
        2: "bob",
        3: "carol",
        4: "bob",
        5: "bob",
    }
    assert sim.requests["reallocatedata"] == 4
    assert held[dialled(2)]["agentlogin"] == "bob"  # now dialled by its new agent
    assert held[dialled(1)]["lname"] == "Changed"  # a later push keeps the move
    moves = await events(store, "L1", "jodo.reallocated")
    assert len(moves) == 1 and moves[0].startswith("alice -> carol (alice Logged Out for 360")


async def test_a_batch_reads_the_moves_syncd_made_in_one_statement_not_one_per_lead(
    store: SqliteStore,
) -> None:
    """Each push keeps the moves syncd made (a lead's fallback agent): read for the whole
    batch at once, not a store round trip per lead on the push path."""
    sim = floor(bob=READY, carol=READY)
    sim.set_agent_status("alice", LOGGED_OUT, since=time.time() - HOUR)
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store, reallocation=REALLOCATE)
        await push(sink, store, [lead(n, agent="alice") for n in range(1, 41)])
        await sink.poll_outcomes()  # alice is away: her leads move to bob and carol
        sim.advance()
        async with traced(store) as sent:
            await push(sink, store, [lead(n, agent="alice", last_name="Changed") for n in
                                     range(1, 41)])  # fmt: skip
        await sink.close()
    held = records_by_phone(sim)
    assert {held[dialled(n)]["userlogin"] for n in range(1, 41)} == {"bob", "carol"}
    marks = [s for s in sent if "FROM kv" in s and ":realloc'" in s]
    assert len(marks) == 1, marks


async def test_an_agent_absent_for_less_than_the_configured_time_keeps_their_leads(
    store: SqliteStore,
) -> None:
    sim = floor(bob=READY, carol=READY)
    sim.set_agent_status("alice", LOGGED_OUT, since=time.time() - 60)
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store, reallocation=REALLOCATE)
        await push(sink, store, [lead(1, agent="alice")])
        await sink.poll_outcomes()
        await sink.close()
    assert "reallocatedata" not in sim.requests
    assert records_by_phone(sim)[dialled(1)]["userlogin"] == "alice"


async def test_a_fallback_agent_who_is_away_is_not_chosen(store: SqliteStore) -> None:
    sim = floor(bob=READY)
    sim.set_agent_status("alice", LOGGED_OUT, since=time.time() - HOUR)
    sim.set_agent_status("carol", LOGGED_OUT, since=time.time() - HOUR)
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store, reallocation=REALLOCATE)
        await push(sink, store, [lead(1, agent="alice"), lead(2, agent="alice")])
        await sink.poll_outcomes()
        await sink.close()
    held = records_by_phone(sim)
    assert [held[dialled(n)]["userlogin"] for n in (1, 2)] == ["bob", "bob"]


async def test_leads_of_an_agent_the_dialer_no_longer_knows_are_moved(
    store: SqliteStore,
) -> None:
    sim = floor(bob=READY, carol=READY)  # "dave" has left the organisation
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store, reallocation={**REALLOCATE, "after_s": 0})
        await push(sink, store, [lead(1, agent="dave")])
        await sink.poll_outcomes()
        await sink.close()
    assert records_by_phone(sim)[dialled(1)]["userlogin"] == "bob"  # a tie: the first listed
    assert await events(store, "L1", "jodo.reallocated") == [
        "dave -> bob (dave User not found for 0s)"
    ]


async def test_a_move_the_dialer_refuses_is_retried_then_given_up_with_a_reason(
    store: SqliteStore,
) -> None:
    sim = floor(bob=READY, carol=READY)
    sim.set_agent_status("alice", LOGGED_OUT, since=time.time() - HOUR)
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store, reallocation={**REALLOCATE, "max_attempts": 2})
        await push(sink, store, [lead(1, agent="alice")])
        with sim.lock:  # an operator deleted the record at the dialer
            sim.processes["VoiceProcess"].records.clear()
        for _ in range(3):
            await sink.poll_outcomes()
        await sink.close()
    assert sim.requests["reallocatedata"] == 2
    failed = await events(store, "L1", "jodo.reallocate.failed")
    assert len(failed) == 1 and "customer data not found" in failed[0].lower()


async def test_leads_the_crm_closed_are_not_reallocated(store: SqliteStore) -> None:
    sim = floor(bob=READY, carol=READY)
    sim.set_agent_status("alice", LOGGED_OUT, since=time.time() - HOUR)
    rules = [{"field": "crm_status", "values": ["DNC"], "dispomasterid": 1, "disporeasonid": 1}]
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store, reallocation=REALLOCATE, dispositions={"rules": rules})
        await push(sink, store, [lead(1, agent="alice", fields={"crm_status": "open"})])
        await push(sink, store, [lead(1, agent="alice", fields={"crm_status": "dnc"})])
        await sink.poll_outcomes()
        await sink.close()
    assert "reallocatedata" not in sim.requests


DOC_IMPORT_OK = """{"method":"ImportProcessData","resdatetime":"2018-11-12 14:00:05",
"statuscode":"001","statusdesc":"success"}"""
ALICE_AWAY = """{"statusdata":[
{"duration":99999,"currentstatus":0,"currentstatusdesc":"Logged Out",
"statuschangetime":"07-Mar-19 11:59:59 PM","login":"alice","statusdesc":"Success","status":3},
{"duration":10,"currentstatus":1,"currentstatusdesc":"Ready",
"statuschangetime":"07-Mar-19 11:59:59 PM","login":"bob","statusdesc":"Success","status":3}],
"method":"userStatus","timestamp":"2019-03-08 11:53:02"}"""
DOC_REALLOCATE_OK = """{
"method":"reallocatedata",
"statuscode":"001",
"resdatetime":"2018-11-12 14:00:05",
"statusdesc":"Success"
}"""
DOC_REALLOCATE_FAIL = """{
"method":”reallocatedata”,
"revisionno":"1",
"status":5,
"statusdesc":"fail",
"resdatetime":"2018-11-12 14:00:05"
}"""


@pytest.mark.parametrize(
    ("reply", "event"),
    [(DOC_REALLOCATE_OK, "jodo.reallocated"), (DOC_REALLOCATE_FAIL, "jodo.reallocate.failed")],
)
async def test_the_documents_reallocatedata_replies_are_read(
    store: SqliteStore, reply: str, event: str
) -> None:
    replies = {
        "ImportProcessData": DOC_IMPORT_OK,
        "userStatus": ALICE_AWAY,
        "reallocatedata": reply,
    }
    with canned(replies) as url:
        sink = make_sink(url, store, reallocation={"fallback": ["bob"], "max_attempts": 1})
        await push(sink, store, [lead(1, agent="alice")])
        await sink.poll_agents()
        await sink.close()
    details = await events(store, "L1", event)
    assert len(details) == 1 and details[0].startswith("alice -> bob")


BASE = {"apikey": "test_org", "servicekey": "VoiceProcess", "reqdatetime": "2026-01-01 10:00:00"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"method": "userStatus", "loginids": []}, {"status": 5}),
        (
            {"method": "userStatus", "loginids": ["nobody"]},
            {"statusdata": [{"login": "nobody", "statusdesc": "User not found", "status": 5}]},
        ),
        (
            {"method": "reallocatedata", "contactnumber": "00919820000001", "login": "nobody"},
            {"status": 5, "statusdesc": "Invalid login"},
        ),
        (
            {"method": "reallocatedata", "contactnumber": "0000", "login": "alice"},
            {"status": 14, "statusdesc": "Customer data not found"},
        ),
        (
            {
                "method": "reallocatedata",
                "contactnumber": "00919820000001",
                "login": "alice",
                "calldatetime": "tomorrow",
            },
            {"status": 5, "statusdesc": "Invalid calldatetime"},
        ),
        ({"method": "saveDisposition", "login": "nobody"}, {"status": 4, "reasonid": 31}),
        (
            {
                "method": "saveDisposition",
                "login": "alice",
                "dispomasterid": "x",
                "disporeasonid": 1,
            },
            {"status": 4, "reasonid": 32},
        ),
        (
            {
                "method": "saveDisposition",
                "login": "alice",
                "dispomasterid": 1,
                "disporeasonid": 1,
                "media": "Carrier pigeon",
            },
            {"status": 4, "reasonid": 33},
        ),
        (
            {
                "method": "saveDisposition",
                "login": "alice",
                "dispomasterid": 1,
                "disporeasonid": 1,
                "media": "Voice Out",
                "contactvalue": "0000",
            },
            {"status": 4, "reasonid": 34, "method": "savedisposition"},
        ),
        ({"method": "customer_recording"}, {"status": 5}),
        (
            {"method": "customer_recording", "systemcallid": "123"},
            {"status": 67, "statusdesc": "Data not found"},
        ),
        ({"method": "customer_multiple_recordings", "systemcallids": "123"}, {"status": 5}),
        ({"method": "getProcessData", "searchparam": "everything"}, {"status": 5}),
        (
            {"method": "getProcessData", "searchparam": "customercode", "customercode": "nope"},
            {"status": 14},
        ),
    ],
)
def test_the_simulator_answers_bad_requests_in_the_documents_failure_shapes(
    body: dict[str, Any], expected: dict[str, Any]
) -> None:
    sim = floor(alice=READY)
    reply = sim.handle({**BASE, **body})
    assert {k: reply.get(k) for k in expected} == expected
