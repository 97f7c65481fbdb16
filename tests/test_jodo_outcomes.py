"""Jodo outcomes: getProcessData polling and recording links, against the simulator."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from syncd.core.model import CallStatus
from syncd.errors import RetryableError, VendorError
from syncd.simulators.jodo.api import DialPlan, DialResult, JodoSimulator
from syncd.sinks.jodo.client import jodo_time
from syncd.sinks.jodo.config import OutcomeSettings, RecordingSettings
from syncd.sinks.jodo.outcome_rows import StatusMapper, build_outcome
from syncd.sinks.jodo.recordings import RECORDING_ASK_MAX_S
from syncd.state.sqlite import SqliteStore
from tests.support.clock import FakeClock
from tests.support.jodo_outcomes import (
    canned,
    dialled,
    lead,
    make_sink,
    outcomes,
    push,
    records_by_phone,
    serve,
)

CONNECTED = DialResult("Connected", "Interested", final=True)
BUSY = DialResult("Busy")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "state.db")
    await s.open()
    yield s
    await s.close()


def dialling(
    recording_delay_s: float | None = None, clock: FakeClock | None = None
) -> JodoSimulator:
    """Return a simulator that dials every due record on the next request, agent alice."""
    plan = DialPlan(interval_s=0, retry_s=3600, recording_delay_s=recording_delay_s)
    return JodoSimulator(dial=plan, agents={"alice": 1}, clock=clock or time.time)


# -- rows to outcomes (no I/O) ---------------------------------------------------------


def test_raw_statuses_map_onto_call_statuses_and_the_sink_can_add_its_own() -> None:
    mapper = StatusMapper({"Sale Done": CallStatus.CLOSED, "busy": CallStatus.FAILED})
    assert mapper("Connected") is CallStatus.CONNECTED
    assert mapper("  NO   answer ") is CallStatus.NO_ANSWER
    assert mapper("sale done") is CallStatus.CLOSED
    assert mapper("Busy") is CallStatus.FAILED  # the sink's table wins
    assert mapper("Something new") is CallStatus.UNKNOWN


def test_a_row_the_dialer_has_not_worked_reports_nothing() -> None:
    row = {"leadnumber": "L1", "mobilenumber": "0091982", "storedatetime": "2026-01-01 10:00:00"}
    settings = OutcomeSettings()
    now = datetime.now(UTC)
    got = build_outcome(
        row,
        sink="j",
        key="L1",
        settings=settings,
        mapper=StatusMapper({}),
        zone="UTC",
        observed_at=now,
    )
    assert got is None


def test_outcome_fields_follow_the_configured_form_template_and_server_clock() -> None:
    settings = OutcomeSettings.model_validate(
        {"fields": {"status": "dialstatus", "call_id": "callid", "agent": "user"}}
    )
    row = {
        "dialstatus": "Busy",
        "disposition": "Call later",
        "attempts": "2",
        "lastcalldatetime": "2026-03-07 23:59:59",
        "user": "alice",
        "callid": "140912183554281005",
    }
    got = build_outcome(
        row,
        sink="j",
        key="L1",
        settings=settings,
        mapper=StatusMapper({}),
        zone="Asia/Kolkata",
        observed_at=datetime.now(UTC),
    )
    assert got is not None
    assert (got.status, got.raw_status, got.disposition) == ("busy", "Busy", "Call later")
    assert (got.attempts, got.agent, got.call_id) == (2, "alice", "140912183554281005")
    assert got.last_dialed_at == datetime(2026, 3, 7, 18, 29, 59, tzinfo=UTC)
    assert got.raw == row


# -- getProcessData polling --------------------------------------------------------------


async def test_dialled_records_become_outcomes_matched_to_their_leads(
    store: SqliteStore,
) -> None:
    sim = dialling()
    sim.script(dialled(1), CONNECTED)
    sim.script(dialled(2), BUSY)
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store)
        await push(sink, store, [lead(1), lead(2)])
        assert await sink.poll_outcomes() == 2
        assert await sink.poll_outcomes() == 0  # nothing changed at the dialer
        await sink.close()
    got = await outcomes(store)
    held = records_by_phone(sim)
    assert got["L1"]["status"] == "connected" and got["L1"]["disposition"] == "Interested"
    assert got["L2"]["status"] == "busy" and got["L2"]["disposition"] == ""
    for key, n in (("L1", 1), ("L2", 2)):
        record = held[dialled(n)]
        assert got[key]["call_id"] == record["systemcallid"] != ""
        assert got[key]["agent"] == record["agentlogin"] == "alice"
        assert got[key]["attempts"] == 1
        assert got[key]["version"] == 1


async def test_records_not_dialled_yet_give_no_outcome(store: SqliteStore) -> None:
    sim = JodoSimulator()  # the dialing engine is off
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store)
        await push(sink, store, [lead(1)])
        assert await sink.poll_outcomes() == 0
        await sink.close()
    assert await outcomes(store) == {}
    # One read of its clock before the first import (callDateTime on its clock), one poll
    assert sim.requests["getProcessData"] == 2


async def test_a_poll_over_a_large_import_not_dialled_yet_costs_no_store_look_up(
    store: SqliteStore,
) -> None:
    # A 20,000-lead import is in every poll's window for the whole overlap: records the
    # dialer has not worked yet report nothing, and are dropped before they are matched
    # to leads (a store look-up of every record of the window, every few seconds).
    sim = JodoSimulator()  # the dialing engine is off
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store)
        await push(sink, store, [lead(i) for i in range(1, 301)])
        looked_up: list[int] = []
        real_lookup = store.lookup

        async def counting(sink_name: str, keys: list[str]) -> object:
            looked_up.append(len(keys))
            return await real_lookup(sink_name, keys)

        store.lookup = counting  # type: ignore[method-assign]
        assert await sink.poll_outcomes() == 0
        await sink.close()
    assert sum(looked_up) == 0, looked_up


async def test_no_customer_data_status_14_is_an_empty_result(store: SqliteStore) -> None:
    sim = JodoSimulator()
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store)
        assert await sink.poll_outcomes() == 0
        await sink.close()
    assert sim.requests["getProcessData"] == 1


async def test_each_window_starts_the_overlap_before_the_previous_one_ended(
    store: SqliteStore,
) -> None:
    sim = JodoSimulator(timezone="Asia/Kolkata")
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store, timezone="Asia/Kolkata", outcomes={"overlap_s": 300})
        before = datetime.now(UTC)
        await sink.poll_outcomes()
        first = sim.last_body["getProcessData"]
        end = datetime.fromisoformat(str(await store.kv_get("jodo:jodo", "outcomes.window_end")))
        await sink.poll_outcomes()
        second = sim.last_body["getProcessData"]
        await sink.close()
    assert first["searchparam"] == "daterange"
    assert first["fromdate"] == jodo_time(end - timedelta(days=1), "Asia/Kolkata")  # lookback
    assert first["todate"] == jodo_time(end, "Asia/Kolkata")
    assert before <= end <= datetime.now(UTC)
    assert second["fromdate"] == jodo_time(end - timedelta(seconds=300), "Asia/Kolkata")


@pytest.mark.parametrize(("overlap_s", "read"), [(600, True), (0, False)])
async def test_an_update_stamped_late_is_read_again_within_the_overlap(
    store: SqliteStore, overlap_s: float, read: bool
) -> None:
    # The dialer's clock is 90 s behind ours (within the sink's clock tolerance): its
    # second call is stamped before the end of the window we already read.
    ours = FakeClock(time.time())
    theirs = FakeClock(ours.now - 90)
    sim = JodoSimulator(
        dial=DialPlan(interval_s=0, retry_s=0, recording_delay_s=None, max_attempts=5),
        clock=theirs,
    )
    sim.script(dialled(1), BUSY, BUSY)
    with serve(sim) as jodo:
        sink = make_sink(
            jodo.url,
            store,
            ours,
            outcomes={"overlap_s": overlap_s},
            recordings={"enabled": False},
        )
        await push(sink, store, [lead(1)])
        await sink.poll_outcomes()
        assert (await outcomes(store))["L1"]["attempts"] == 1
        for clock in (ours, theirs):
            clock.advance(1.1)  # stamps have whole seconds: the next one is a later second
        await sink.poll_outcomes()
        await sink.close()
    assert records_by_phone(sim)[dialled(1)]["attempts"] == "2"
    assert (await outcomes(store))["L1"]["attempts"] == (2 if read else 1)


def serving_counted(sim: JodoSimulator) -> list[int]:
    """Return a list the simulator appends to: the rows of each getProcessData it answers."""
    served: list[int] = []
    answer = sim.get_process_data

    def counted(process: Any, body: dict[str, Any]) -> dict[str, Any]:
        reply = answer(process, body)
        served.append(len(reply.get("data") or []))
        return reply

    sim.get_process_data = counted  # type: ignore[method-assign]
    return served


@pytest.mark.parametrize("skew_s", [0, -90])
async def test_polls_after_a_large_import_read_what_is_new_not_the_whole_import_again(
    store: SqliteStore, skew_s: float
) -> None:
    # A 1,000-record import lands at once; the dialer then works one record a second,
    # some busy and dialled again later. Each poll must cost what changed since the last
    # (plus a few seconds, and the part of the dialer's clock lag within the tolerance
    # that polls do not follow), not the whole import for the 600 s of overlap_s; and
    # every outcome, the later calls stamped by a clock 90 s behind ours too, is read.
    ours = FakeClock(time.time())
    plan = DialPlan(interval_s=1, retry_s=30, max_attempts=3, recording_delay_s=None)
    sim = JodoSimulator(dial=plan, agents={"alice": 1}, clock=ours, clock_offset_s=skew_s)
    served = serving_counted(sim)
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store, ours, recordings={"enabled": False})
        await push(sink, store, [lead(n) for n in range(1, 1001)])
        per_poll: list[int] = []
        for _ in range(24):  # two minutes of polls, five seconds apart
            ours.advance(5)
            before = sum(served)
            await sink.poll_outcomes()
            per_poll.append(sum(served) - before)
        await sink.close()
    assert per_poll[0] >= 1000  # the import, read once as it is new
    # Re-read only while it is within the margin: a few seconds, plus the clock lag.
    margin_polls = 2 + math.ceil(abs(skew_s) / 5)
    assert sum(1 for n in per_poll if n >= 1000) <= margin_polls, per_poll
    # After that, a poll reads what was dialled since the last (5 calls) plus its margin.
    bound = 5 * (2 + math.ceil(abs(skew_s) / 5)) + 5
    assert max(per_poll[margin_polls:]) <= bound, per_poll
    dialled_records = [r for r in sim.records() if r.get("attempts")]
    assert len(dialled_records) >= 50 and any(r["attempts"] != "1" for r in dialled_records)
    got = await outcomes(store)
    for record in dialled_records:  # the latest call of each, re-dials included
        assert got[record["leadnumber"]]["attempts"] == int(record["attempts"]), record


async def test_a_change_readable_only_after_its_window_was_read_is_still_read(
    store: SqliteStore,
) -> None:
    # A dialer whose write becomes readable a minute after the storedatetime it carries:
    # the polls over that second have passed. The change is read still (by the time it
    # is ten minutes old, the default), without every poll re-reading those ten minutes.
    ours = FakeClock(time.time())
    sim = JodoSimulator(clock=ours)  # the dialing engine is off: the test writes the call
    served = serving_counted(sim)
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store, ours, recordings={"enabled": False})
        await push(sink, store, [lead(n) for n in range(1, 201)])
        await sink.poll_outcomes()
        ours.advance(5)
        stamped = jodo_time(datetime.fromtimestamp(ours.now, UTC), "UTC")
        per_poll: list[int] = []
        found_at: int | None = None
        for n in range(140):  # 700 s of polls, five seconds apart
            ours.advance(5)
            if n == 12:  # 65 s after its stamp, the call's write becomes readable
                record = records_by_phone(sim)[dialled(7)]
                with sim.lock:
                    record.update(
                        {"callstatus": "Connected", "attempts": "1", "storedatetime": stamped}
                    )
            before = sum(served)
            await sink.poll_outcomes()
            per_poll.append(sum(served) - before)
            if found_at is None and "L7" in await outcomes(store):
                found_at = n
        await sink.close()
    assert found_at is not None and 12 <= found_at <= 12 + 600 // 5, found_at
    assert (await outcomes(store))["L7"]["status"] == "connected"
    # The import (200 records) was read again once, as it passed that age; not every poll.
    assert sum(1 for n in per_poll if n >= 200) <= 2, per_poll


async def test_a_long_gap_is_read_in_slices_no_wider_than_max_window(
    store: SqliteStore,
) -> None:
    sim = JodoSimulator()
    three_hours_ago = datetime.now(UTC) - timedelta(hours=3)
    await store.kv_set("jodo:jodo", "outcomes.window_end", three_hours_ago.isoformat())
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store, outcomes={"overlap_s": 600, "max_window_s": 3600})
        await sink.poll_outcomes()
        await sink.close()
    assert sim.requests["getProcessData"] == 4  # 3 h 10 min in slices of 1 h
    end = datetime.fromisoformat(str(await store.kv_get("jodo:jodo", "outcomes.window_end")))
    assert datetime.now(UTC) - end < timedelta(seconds=30)


async def test_a_stop_ends_a_long_poll_after_the_slice_it_reads_and_the_next_poll_goes_on(
    store: SqliteStore,
) -> None:
    sim = JodoSimulator()
    three_hours_ago = datetime.now(UTC) - timedelta(hours=3)
    await store.kv_set("jodo:jodo", "outcomes.window_end", three_hours_ago.isoformat())
    stopping = asyncio.Event()
    stopping.set()  # a SIGTERM came while the poll was due
    with serve(sim) as jodo, capture_logs() as logs:
        settings = {"overlap_s": 600, "max_window_s": 3600}
        sink = make_sink(jodo.url, store, stopping=stopping, outcomes=settings)
        await sink.poll_outcomes()
        read_before_stop = sim.requests["getProcessData"]
        kept = datetime.fromisoformat(str(await store.kv_get("jodo:jodo", "outcomes.window_end")))
        await sink.close()
        stopping.clear()  # the next start
        sink = make_sink(jodo.url, store, stopping=stopping, outcomes=settings)
        await sink.poll_outcomes()
        await sink.close()

    assert read_before_stop == 1  # the slice being read, then it ended
    assert kept - three_hours_ago < timedelta(hours=1)  # the window moved by that slice only
    assert [e for e in logs if e["event"] == "sink.poll.stopped"]
    assert sim.requests["getProcessData"] == 4  # the rest of the gap, not the whole again
    end = datetime.fromisoformat(str(await store.kv_get("jodo:jodo", "outcomes.window_end")))
    assert datetime.now(UTC) - end < timedelta(seconds=30)


async def test_a_date_range_the_dialer_finds_improper_fails_loudly(store: SqliteStore) -> None:
    sim = JodoSimulator()
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store)
        with pytest.raises(VendorError) as backwards:
            await sink.outcomes.search(
                {
                    "searchparam": "daterange",
                    "fromdate": "2026-01-02 00:00:00",
                    "todate": "2026-01-01 00:00:00",
                }
            )
        with pytest.raises(VendorError) as badly_written:
            await sink.outcomes.search(
                {"searchparam": "daterange", "fromdate": "2026-01-01", "todate": "tomorrow"}
            )
        await sink.close()
    assert backwards.value.code == "15" and "bug in syncd" in str(backwards.value)
    assert badly_written.value.code == "16"
    assert not isinstance(backwards.value, RetryableError)
    assert sim.requests["getProcessData"] == 2  # not retried: repeating a bug does not help


@pytest.mark.parametrize("updateparam", ["mobilenumber", "customercode", "crmuniquefield"])
async def test_specific_leads_are_searched_by_the_sinks_update_key(
    store: SqliteStore, updateparam: str
) -> None:
    sim = dialling()
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store, updateparam=updateparam)
        leads = [lead(1), lead(2), lead(3)]
        await push(sink, store, leads)
        rows = await sink.outcomes.rows_for([(x.key, x) for x in leads[:2]])
        asked = sim.last_body["getProcessData"]
        await sink.close()
    assert sorted(r["leadnumber"] for r in rows) == ["L1", "L2"]
    assert asked["searchparam"] == updateparam
    if updateparam == "mobilenumber":
        assert sorted(asked["mobilenumber"]) == [dialled(1), dialled(2)]  # one request, a list
    else:
        assert asked[updateparam] == "L2"  # one request per lead


@pytest.mark.parametrize("updateparam", ["mobilenumber", "customercode", "crmuniquefield"])
async def test_rechecked_leads_outcomes_are_matched_by_the_update_key(
    store: SqliteStore, updateparam: str
) -> None:
    sim = dialling()
    with serve(sim) as jodo:
        sink = make_sink(
            jodo.url,
            store,
            updateparam=updateparam,
            # a window that sees nothing: only the by-lead recheck can find the outcomes
            outcomes={"recheck_per_poll": 10, "lookback_s": 1, "overlap_s": 0},
        )
        await push(sink, store, [lead(1), lead(2)])
        await store.kv_set(
            "jodo:jodo", "outcomes.window_end", (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        )
        for record in sim.processes["VoiceProcess"].records:
            record.pop("leadnumber" if updateparam != "crmuniquefield" else "none", None)
        sim.advance()
        assert await sink.poll_outcomes() == 2
        await sink.close()
    got = await outcomes(store)
    held = records_by_phone(sim)
    assert got["L1"]["call_id"] == held[dialled(1)]["systemcallid"]
    assert got["L2"]["call_id"] == held[dialled(2)]["systemcallid"]


async def test_rows_of_leads_syncd_never_pushed_are_ignored(store: SqliteStore) -> None:
    sim = dialling()
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store)
        await push(sink, store, [lead(1)])
        pushed_by_someone_else = {
            "method": "ImportProcessData",
            "apikey": "test_org",
            "servicekey": "VoiceProcess",
            "reqdatetime": "2026-01-01 10:00:00",
            "media": "12",
            "updateparam": "crmuniquefield",
            "data": [{"leadnumber": "X9", "mobilenumber": dialled(9)}],
        }
        assert sim.handle(pushed_by_someone_else)["statuscode"] == "001"
        assert await sink.poll_outcomes() == 1
        await sink.close()
    assert list(await outcomes(store)) == ["L1"]


# -- recordings ----------------------------------------------------------------------


async def test_recording_links_arrive_on_a_later_poll_after_data_not_found(
    store: SqliteStore,
) -> None:
    clock = FakeClock(time.time())
    sim = dialling(clock=clock)  # recordings appear only when published
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store, clock)
        await push(sink, store, [lead(1), lead(2)])
        assert await sink.poll_outcomes() == 2
        assert all(o["recording_url"] == "" for o in (await outcomes(store)).values())
        assert sim.requests["customer_multiple_recordings"] == 1  # both asked at once: 67
        sim.publish_recordings()
        clock.advance(RecordingSettings().ask_again_s)
        assert await sink.poll_outcomes() == 2
        assert await sink.poll_outcomes() == 0  # the link stays with the unchanged row
        await sink.close()
    got = await outcomes(store)
    for key in ("L1", "L2"):
        assert got[key]["recording_url"] == sim.recording_path(got[key]["call_id"]) != ""
        assert got[key]["version"] == 2
    assert await store.kv_get("jodo:jodo", "recordings.pending") is None


async def test_a_recording_link_is_kept_with_the_leads_outcome_not_per_lead_in_kv(
    store: SqliteStore,
) -> None:
    sim = dialling(recording_delay_s=0)
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store)
        await push(sink, store, [lead(1), lead(2)])
        assert await sink.poll_outcomes() == 2
        assert await sink.poll_outcomes() == 0  # the link is known: the row is unchanged
        await sink.close()
    assert all(o["recording_url"] for o in (await outcomes(store)).values())
    per_lead = await store.db.execute_fetchall("SELECT scope FROM kv WHERE name IN ('L1', 'L2')")
    assert per_lead == []  # nothing of a lead outlives it in kv (issue 30, point 7)


async def test_a_single_awaited_recording_is_asked_with_customer_recording(
    store: SqliteStore,
) -> None:
    sim = dialling(recording_delay_s=0)
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store)
        await push(sink, store, [lead(1)])
        assert await sink.poll_outcomes() == 1
        await sink.close()
    assert sim.requests.get("customer_recording") == 1
    assert "customer_multiple_recordings" not in sim.requests
    got = (await outcomes(store))["L1"]
    assert got["recording_url"] == sim.recording_path(got["call_id"]) and got["version"] == 1


async def test_a_recording_not_there_yet_is_asked_for_less_often_as_it_ages(
    store: SqliteStore,
) -> None:
    # A dialer that never publishes them (recording off at the dialer): asking for every
    # awaited one at each 5 s poll grew to 200 requests a poll (10,000 awaited).
    clock = FakeClock(time.time())
    sim = dialling(clock=clock)
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store, clock)
        await push(sink, store, [lead(1)])
        asked_at = []
        for second in range(0, 1200, 5):  # 20 minutes of polls
            clock.advance(5)
            before = sim.requests.get("customer_recording", 0)
            await sink.poll_outcomes()
            if sim.requests.get("customer_recording", 0) > before:
                asked_at.append(second)
        await sink.close()
    gaps = [b - a for a, b in itertools.pairwise(asked_at)]
    assert asked_at[0] == 0 and gaps == sorted(gaps)  # at once, then further apart
    assert max(gaps) <= RECORDING_ASK_MAX_S + 5 and len(asked_at) <= 12


async def test_a_recording_that_never_appears_is_given_up_after_max_age(
    store: SqliteStore,
) -> None:
    clock = FakeClock(time.time())
    sim = dialling(clock=clock)
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store, clock, recordings={"max_age_s": 0.3})
        await push(sink, store, [lead(1)])
        await sink.poll_outcomes()
        assert await store.kv_get("jodo:jodo", "recordings.pending") is not None
        asked = sim.requests["customer_recording"]
        clock.advance(0.4)
        await sink.poll_outcomes()
        await sink.close()
    assert await store.kv_get("jodo:jodo", "recordings.pending") is None
    assert sim.requests["customer_recording"] == asked  # not asked again


async def test_recordings_can_be_switched_off(store: SqliteStore) -> None:
    sim = dialling(recording_delay_s=0)
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store, recordings={"enabled": False})
        await push(sink, store, [lead(1)])
        assert await sink.poll_outcomes() == 1
        await sink.close()
    assert "customer_recording" not in sim.requests
    assert (await outcomes(store))["L1"]["recording_url"] == ""


# -- the document's own reply samples --------------------------------------------------

DOC_GET_PROCESS_DATA = """{
"method":"getProcessData",
"resdatetime":"2016-01-19 12:00:00",
"statuscode":"001",
"statusdesc":"success",
"data":
[
{"leadnumber":"1","name":"Avhan Technologies","mobilenumber":"1234567890",
"emailid":"v@avhan.com","callDateTime":"2013-06-20 09:07:00","extrafield1":"1"},
{"leadnumber":"2","name":"Avhan Technologies 1","mobilenumber":"1234567891",
"emailid":"v1@avhan.com","callDateTime":"2013-06-20 09:07:00","extrafield1":"11"}
]
}"""

DOC_RECORDING = r"""{
"method":"customer_recording",
"recordingfilepath":"http:\/\/192.168.2.127\/recordings\/\/1\/1\/2014\/09\/12\/18\/140912183554281005_0000.MP3",
"revisionno":1,
"statusdesc":"success",
"status":3,
"resdatetime":"2018-11-12 14:00:05"
}"""

DOC_RECORDING_FAIL = """{
"method":”customer_recording”,
"revisionno":"1",
"status":5,
"statusdesc":"fail",
"resdatetime":"2018-11-12 14:00:05"
}"""

DOC_MULTIPLE = """{ "method":"customer_multiple_recordings",
"resdatetime":"2018-12-18 12:39:05",

"statusdata":[
{"systemcallid":"180717171728015031",
"statusdesc":"success",
"status":3,
"recordingfilepath":
"http://192.168.2.127/recordings/1/1/2018/07/17/17/180717171728015031_1001.MP3"
},
{
 "systemcallid":"180719161420031002",
 "statusdesc":"Data not found",
"status":67,
"recordingfilepath":"" }
 ]
}"""


async def test_the_documents_get_process_data_sample_is_read(store: SqliteStore) -> None:
    with canned({"getProcessData": DOC_GET_PROCESS_DATA}) as url:
        sink = make_sink(url, store)
        rows = await sink.outcomes.search({"searchparam": "customercode", "customercode": "1"})
        await sink.close()
    assert [r["leadnumber"] for r in rows] == ["1", "2"]


async def test_the_documents_recording_samples_are_read(store: SqliteStore) -> None:
    replies = {"customer_recording": DOC_RECORDING, "customer_multiple_recordings": DOC_MULTIPLE}
    with canned(replies) as url:
        sink = make_sink(url, store)
        assert sink.outcomes.recordings is not None
        api = sink.outcomes.recordings.api
        one = await api.links(["140912183554281005"])
        many = await api.links(["180717171728015031", "180719161420031002"])
        await sink.close()
    assert one == {
        "140912183554281005": "http://192.168.2.127/recordings//1/1/2014/09/12/18/"
        "140912183554281005_0000.MP3"
    }
    assert many == {
        "180717171728015031": "http://192.168.2.127/recordings/1/1/2018/07/17/17/"
        "180717171728015031_1001.MP3"
    }


async def test_the_documents_recording_failure_means_not_yet(store: SqliteStore) -> None:
    with canned({"customer_recording": DOC_RECORDING_FAIL}) as url:
        sink = make_sink(url, store)
        assert sink.outcomes.recordings is not None
        assert await sink.outcomes.recordings.api.links(["1"]) == {}
        await sink.close()


# -- the simulator's dialing engine ------------------------------------------------------


async def test_the_simulators_dialer_works_through_records_at_the_configured_pace(
    store: SqliteStore,
) -> None:
    now = [time.time()]
    sim = JodoSimulator(
        dial=DialPlan(interval_s=10, retry_s=3600, recording_delay_s=None),
        clock=lambda: now[0],
    )
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store)
        await push(sink, store, [lead(n) for n in range(1, 6)])
        await sink.close()
    calls = []
    for step in (0, 25, 5, 100):
        now[0] += step
        calls.append(sim.advance())
    assert calls == [0, 2, 1, 2]  # one call per 10 s; five records in all
    assert all(r["attempts"] == "1" for r in sim.records())
