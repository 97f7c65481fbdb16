"""Outcomes from uContact's call records: paging, late records, dedup, recordings."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from syncd.core.model import CallStatus
from syncd.sinks.ucontact.sink import UContactSink
from tests.support.ucontact import CAMPAIGN, dialled, queued, served, sink_on, uy


def minutes_ago(n: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=n)).strftime("%Y-%m-%d %H:%M:%S")


async def outcomes(sink: UContactSink) -> dict[str, dict[str, Any]]:
    rows = await sink.ctx.store.outcome_dump()  # type: ignore[attr-defined]
    return {r["key"]: r for r in rows}


async def test_dialled_leads_become_outcomes_with_status_disposition_and_recording(
    tmp_path: Path,
) -> None:
    with served(outcomes={"ANSWERED": 1.0}, recording_places=("telephony_day",)) as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            await sink.push([queued("K1", uy(1)), queued("K2", uy(2))])
            assert sim.dial_now() == 2
            assert await sink.poll_outcomes() == 2
            found = await outcomes(sink)
        records = {r["destination"]: r for r in sim.records()}
        first = found["K1"]
        record = records[dialled(1)]
        assert first["status"] == CallStatus.CONNECTED.value
        assert first["call_id"] == record["guid"]
        assert first["agent"] == "agent1"
        assert first["attempts"] == 1
        assert first["disposition"] == " / ".join(
            level for level in (record["l1"], record["l2"], record["l3"]) if level
        )
        day = record["calldate"][:10].replace("-", "")
        assert first["recording_url"] == f"{url}/records/{day}/{record['guid']}.mp3"


async def test_records_are_read_page_by_page_and_late_ones_are_caught_later(
    tmp_path: Path,
) -> None:
    with served() as (sim, url):
        # Records may be written up to 10 minutes late: the overlap covers that.
        async with sink_on(url, tmp_path, cdr_page_size=3, cdr_delay_s=600) as sink:
            await sink.push([queued(f"K{n}", uy(n)) for n in range(1, 9)])
            for n in range(1, 9):
                status = "BUSY" if n % 2 else "NO ANSWER"
                # Two calls are written to the records late, with their original time.
                sim.add_record(
                    dialled(n), calldate=minutes_ago(10 - n), status=status, visible=n not in (2, 5)
                )
            sim.add_record("0059800000000", calldate=minutes_ago(3))  # not one of ours
            assert await sink.poll_outcomes() == 6
            first_pages = sim.snapshot()["requests"]["Cdr/getrecords"]
            sim.reveal()
            assert await sink.poll_outcomes() == 2
            assert await sink.poll_outcomes() == 0  # every guid already counted
            found = await outcomes(sink)
        assert first_pages == 3  # 7 visible records, pages of 3: 3 + 3 + 1
        assert sorted(found) == [f"K{n}" for n in range(1, 9)]
        assert found["K1"]["status"] == "busy"
        assert found["K2"]["status"] == "no_answer"
        assert all(o["attempts"] == 1 for o in found.values())


async def test_a_lead_called_again_counts_its_attempts(tmp_path: Path) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            await sink.push([queued("K1", uy(1))])
            sim.add_record(dialled(1), calldate=minutes_ago(5), status="NO ANSWER")
            await sink.poll_outcomes()
            sim.add_record(
                dialled(1), calldate=minutes_ago(1), status="ANSWERED", l1="Venta", billsec=30
            )
            assert await sink.poll_outcomes() == 1
            found = (await outcomes(sink))["K1"]
        assert found["attempts"] == 2
        assert found["status"] == "connected"
        assert found["disposition"] == "Venta"
        assert found["version"] == 2


async def test_a_call_to_an_alternative_number_belongs_to_its_lead(tmp_path: Path) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            await sink.push([queued("K1", uy(1), alt_phones=(uy(2),))])
            sim.add_record(uy(2)[1:], calldate=minutes_ago(1), status="BUSY")  # 598…, no 00
            assert await sink.poll_outcomes() == 1
            assert (await outcomes(sink))["K1"]["status"] == "busy"


async def test_recordings_are_found_on_the_backup_host_and_gsm_ones_converted(
    tmp_path: Path,
) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path, convert_gsm=True) as sink:
            await sink.push([queued("K1", uy(1)), queued("K2", uy(2)), queued("K3", uy(3))])
            when = minutes_ago(2)
            day = when[:10].replace("-", "")
            kept = {"status": "ANSWERED", "billsec": 40, "calldate": when}
            sim.add_record(dialled(1), guid="g-backup", recording="backup", **kept)
            sim.add_record(dialled(2), guid="g-gsm", recording="gsm", **kept)
            sim.add_record(dialled(3), guid="g-none", **kept)
            await sink.poll_outcomes()
            found = await outcomes(sink)
            assert found["K3"]["recording_url"] == ""
            sim.add_record("", calldate=when, guid="x")  # noise
            sim.files.add(f"records/{day}/g-none.mp3")  # the recording shows up later
            await sink.poll_outcomes()
            later = await outcomes(sink)
        assert found["K1"]["recording_url"] == f"{url}/backup/records/g-backup.mp3"
        assert found["K2"]["recording_url"] == f"{url}/records/{day}/g-gsm.mp3"
        assert sim.converted == ["g-gsm"]
        assert later["K3"]["recording_url"] == f"{url}/records/{day}/g-none.mp3"
        assert later["K3"]["attempts"] == 1


async def test_without_convert_a_gsm_recording_is_linked_as_it_is(tmp_path: Path) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            await sink.push([queued("K1", uy(1))])
            when = minutes_ago(1)
            sim.add_record(dialled(1), guid="g1", recording="gsm", status="ANSWERED", calldate=when)
            await sink.poll_outcomes()
            found = await outcomes(sink)
        assert found["K1"]["recording_url"] == f"{url}/records/{when[:10].replace('-', '')}/g1.gsm"
        assert sim.converted == []


async def test_a_custom_status_map_overrides_the_built_in_one(tmp_path: Path) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path, status_map={"VOICEMAIL": "no_answer"}) as sink:
            await sink.push([queued("K1", uy(1))])
            sim.add_record(dialled(1), calldate=minutes_ago(1), status="VOICEMAIL")
            await sink.poll_outcomes()
            found = (await outcomes(sink))["K1"]
        assert found["status"] == "no_answer"


async def test_the_filter_asks_for_the_campaign_and_a_window_ending_now(tmp_path: Path) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            await sink.poll_outcomes()
        form = parse_qs(sim.last_body["Cdr/getrecords"])
        assert form["lastrow"] == ["0"] and form["searchLimit"] == ["500"]  # big pages
        assert form["Random"] == ["1"]
        flt = json.loads(form["filter"][0])
        assert flt["campaign"] == CAMPAIGN and flt["type"] == "record"
        assert flt["calldatei"] < minutes_ago(60 * 23) < flt["calldatef"]
