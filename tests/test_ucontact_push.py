"""Pushing to uContact: the upload file, schedules, tasks, removals, DNC, no double dialling."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs

from syncd.core.model import Action
from tests.support.ucontact import (
    CAMPAIGN,
    dialled,
    push_until_done,
    queued,
    served,
    sink_on,
    uy,
)


def kinds(results: list) -> dict[str, str]:  # type: ignore[type-arg]
    return {r.key: r.kind.value for r in results}


async def test_leads_go_out_in_one_file_exactly_as_the_document_specifies(tmp_path: Path) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path, priority=9999) as sink:
            results = await sink.push(
                [
                    queued(
                        "K1",
                        uy(1),
                        alt_phones=(uy(2), uy(3)),
                        first_name="Ana",
                        fields={"city": "Montevideo"},
                        agent="1001",
                    ),
                    queued("K2", uy(4)),
                ]
            )
        assert kinds(results) == {"K1": "delivered", "K2": "delivered"}
        [upload] = sim.uploads_made()
        assert upload["text"] == (
            f"{CAMPAIGN};{dialled(1)};crmkey=K1:first_name=Ana:city=Montevideo;"
            f"{dialled(2)}:{dialled(3)};9999;1001\n"
            f"{CAMPAIGN};{dialled(4)};crmkey=K2;;9999\n"
        )
        assert upload["cant"] == "2"
        assert upload["campaign"] == CAMPAIGN
        assert upload["username"] == "api"
        assert upload["filename"].startswith("syncd-uc-") and upload["filename"].endswith(".txt")
        assert upload["accepted"] == 2 and upload["ignored"] == []
        assert results[0].vendor_ref == dialled(1)


async def test_a_sink_with_a_timezone_uses_uploadbasewithtimezone(tmp_path: Path) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path, timezone="America/Montevideo", upload_user="loader") as s:
            await s.push([queued("K1", uy(1))])
        [upload] = sim.uploads_made()
        assert upload["timezone"] == "America/Montevideo"
        assert upload["username"] == "loader"
        assert sim.snapshot()["requests"]["Dialers/uploadbasewithtimezone"] == 1


async def test_separators_in_values_are_cleaned_so_no_line_is_lost(tmp_path: Path) -> None:
    note = "call at 10:30; ask for extension=12\nthen email"
    with served() as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            results = await sink.push(
                [queued("K:1", uy(1), fields={"note": note}), queued("K2", uy(2))]
            )
        assert kinds(results) == {"K:1": "delivered", "K2": "delivered"}
        [upload] = sim.uploads_made()
        assert upload["ignored"] == [] and upload["accepted"] == 2
        first_line = upload["text"].splitlines()[0]
        assert first_line == (
            f"{CAMPAIGN};{dialled(1)};"
            "crmkey=K.1:note=call at 10.30, ask for extension-12 then email;"
        )


async def test_in_reject_mode_a_value_with_a_separator_refuses_only_its_lead(
    tmp_path: Path,
) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path, clean="reject") as sink:
            results = await sink.push(
                [queued("K1", uy(1), fields={"note": "a;b"}), queued("K2", uy(2))]
            )
        assert kinds(results) == {"K1": "rejected", "K2": "delivered"}
        assert "field 'note' contains ';'" in results[0].reason
        assert list(sim.dial_list()) == [dialled(2)]


async def test_a_lead_with_call_at_becomes_a_scheduled_call_in_server_time(
    tmp_path: Path,
) -> None:
    when = datetime(2031, 5, 4, 15, 0, tzinfo=UTC)
    with served(timezone="America/Montevideo") as (sim, url):
        async with sink_on(url, tmp_path, server_timezone="America/Montevideo") as sink:
            results = await sink.push(
                [queued("K1", uy(1), call_at=when, alt_phones=(uy(2),), agent="1001")]
            )
        assert kinds(results) == {"K1": "delivered"}
        assert sim.uploads_made() == []
        body = json.loads(_form_value(sim.last_body["Dialers/ScheduleDialerCall"], "callschedule"))
        assert body == {
            "calldate": "2031-05-04 12:00:00",
            "campaign": CAMPAIGN,
            "destination": dialled(1),
            "alternatives": dialled(2),
            "agentphone": "1001",
            "data": "crmkey=K1",
        }
        [scheduled] = sim.scheduled()
        assert scheduled["calldate"] == "2031-05-04 12:00:00"


async def test_dialertask_mode_sends_every_key_of_the_call_object(tmp_path: Path) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path, immediate="dialertask") as sink:
            results = await sink.push([queued("K1", uy(1))])
        assert kinds(results) == {"K1": "delivered"}
        body = json.loads(_form_value(sim.last_body["Dialers/DialerTask"], "call"))
        assert set(body) == {
            "calldate",
            "campaign",
            "destination",
            "alternatives",
            "agent",
            "data",
            "source",
            "bulk",
            "automatic",
        }
        assert body["calldate"] is None and body["source"] == "syncd"
        assert sim.dial_list()[dialled(1)]["present"] == 1


async def test_a_deleted_lead_is_removed_from_the_dial_list(tmp_path: Path) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            [pushed] = await sink.push([queued("K1", uy(1))])
            results = await sink.push(
                [
                    queued(
                        "K1",
                        action=Action.DELETE,
                        vendor_ref=pushed.vendor_ref,
                        delivered_hash="h-K1",
                    )
                ]
            )
        assert kinds(results) == {"K1": "delivered"}
        assert sim.dial_list()[dialled(1)]["present"] == 0
        assert "number=" + dialled(1) in sim.last_body["Dialers/RemoveContact"]


async def test_a_deleted_scheduled_lead_has_its_schedule_removed(tmp_path: Path) -> None:
    when = datetime(2031, 5, 4, 15, 0, tzinfo=UTC)
    with served() as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            await sink.push([queued("K1", uy(1), call_at=when)])
            assert len(sim.scheduled()) == 1
            await sink.push([queued("K1", action=Action.DELETE, delivered_hash="h-K1")])
        assert sim.scheduled() == []
        assert sim.snapshot()["requests"]["Dialers/RemoveScheduleDialerCall"] == 1


async def test_a_retried_lead_not_yet_dialled_is_removed_before_it_is_sent_again(
    tmp_path: Path,
) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            await sink.push([queued("K1", uy(1))])
            # The first answer was lost: the outbox hands the same version over again.
            rounds = await push_until_done(sink, [queued("K1", uy(1), attempts=2)])
        # Removed, then re-sent once no call record showed it had been dialled.
        assert [kinds(r) for r in rounds] == [{"K1": "retry"}, {"K1": "delivered"}]
        assert "cdr_delay_s" in rounds[0][0].reason
        assert sim.dial_list()[dialled(1)] == {"present": 1, "added": 2, "peak": 1, "dialed": 0}


async def test_a_retried_lead_already_dialled_is_delivered_without_a_second_upload(
    tmp_path: Path,
) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            await sink.push([queued("K1", uy(1))])
            sim.dial_now()  # the dialer called it: the number has left the dial list
            # The first answer was lost: the outbox hands the same version over again.
            results = await sink.push([queued("K1", uy(1), attempts=2)])
            history = await sink.ctx.store.lead_history("K1")  # type: ignore[attr-defined]
        assert kinds(results) == {"K1": "delivered"}
        assert sim.dial_list()[dialled(1)] == {"present": 0, "added": 1, "peak": 1, "dialed": 1}
        requests = sim.snapshot()["requests"]
        assert requests["Dialers/uploadbase"] == 1
        assert "Dialers/RemoveContact" not in requests  # the dialer's own retries are left alone
        (event,) = [e for e in history["events"] if e["kind"] == "ucontact.already_dialled"]
        assert "was dialled" in event["detail"] and "not sent again" in event["detail"]


async def test_a_call_record_from_before_the_upload_does_not_count_as_its_call(
    tmp_path: Path,
) -> None:
    with served() as (sim, url):
        earlier = datetime.now(UTC) - timedelta(minutes=10)
        sim.add_record(dialled(1), calldate=earlier.strftime("%Y-%m-%d %H:%M:%S"))
        async with sink_on(url, tmp_path) as sink:
            await sink.push([queued("K1", uy(1))])
            rounds = await push_until_done(sink, [queued("K1", uy(1), attempts=2)])
        assert kinds(rounds[-1]) == {"K1": "delivered"}
        assert sim.dial_list()[dialled(1)] == {"present": 1, "added": 2, "peak": 1, "dialed": 0}


async def test_a_call_made_just_before_the_removal_is_found_once_its_record_appears(
    tmp_path: Path,
) -> None:
    # Records are written when a call ends: the re-send waits cdr_delay_s after the removal.
    with served() as (sim, url):
        async with sink_on(url, tmp_path, cdr_delay_s=0.5) as sink:
            await sink.push([queued("K1", uy(1))])
            first = await sink.push([queued("K1", uy(1), attempts=2)])
            assert kinds(first) == {"K1": "retry"}  # removed; no record yet
            now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
            sim.add_record(dialled(1), calldate=now, status="ANSWERED")  # a call, written late
            await asyncio.sleep(first[0].retry_after or 0)
            second = await sink.push([queued("K1", uy(1), attempts=3)])
        assert kinds(second) == {"K1": "delivered"}
        assert sim.snapshot()["requests"]["Dialers/uploadbase"] == 1


async def test_a_changed_number_replaces_the_old_one_in_the_dial_list(tmp_path: Path) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            await sink.push([queued("K1", uy(1))])
            await sink.push([queued("K1", uy(2), delivered_hash="h-old")])
        listed = sim.dial_list()
        assert listed[dialled(1)]["present"] == 0
        assert listed[dialled(2)]["present"] == 1


async def test_a_read_timeout_after_the_server_took_the_upload_does_not_dial_twice(
    tmp_path: Path,
) -> None:
    with served(upload_answer_delay_s=1.0) as (sim, url):
        async with sink_on(url, tmp_path, timeout_s=0.4, settle_s=0.3) as sink:
            first = await sink.push([queued("K1", uy(1)), queued("K2", uy(2))])
            assert kinds(first) == {"K1": "retry", "K2": "retry"}
            assert sim.dial_list()[dialled(1)]["present"] == 1  # the server has them anyway
            sim.apply_settings({"upload_answer_delay_s": 0.0})
            await asyncio.sleep(first[0].retry_after or 0)
            rounds = await push_until_done(
                sink, [queued("K1", uy(1), attempts=2), queued("K2", uy(2), attempts=2)]
            )
        assert kinds(rounds[-1]) == {"K1": "delivered", "K2": "delivered"}
        assert sim.snapshot()["requests"]["Dialers/RemoveContact"] == 2
        # Per check (before the removal, and once more cdr_delay_s after it), one read of
        # the campaign's few records since the upload serves both leads in doubt.
        assert sim.snapshot()["requests"]["Cdr/getrecords"] == 2
        sim.dial_now()
        for n in (1, 2):
            assert sim.dial_list()[dialled(n)] == {
                "present": 0,
                "added": 2,
                "peak": 1,
                "dialed": 1,
            }


async def test_one_number_shared_by_two_leads_is_held_once(tmp_path: Path) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            same = await sink.push([queued("K1", uy(1)), queued("K2", uy(1))])
            later = await sink.push([queued("K3", uy(1))])
        assert kinds(same) == {"K1": "delivered", "K2": "delivered"}
        assert kinds(later) == {"K3": "delivered"}
        assert sim.uploads_made()[0]["accepted"] == 1
        assert sim.dial_list()[dialled(1)]["peak"] == 1


async def test_a_changed_lead_whose_number_another_lead_took_is_still_held_once(
    tmp_path: Path,
) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            await sink.push([queued("K1", uy(1))])
            await sink.push([queued("K2", uy(1))])  # K2 takes the number
            results = await sink.push([queued("K1", uy(1), first_name="Ana", delivered_hash="h")])
        assert kinds(results) == {"K1": "delivered"}
        assert sim.dial_list()[dialled(1)] == {"present": 1, "added": 3, "peak": 1, "dialed": 0}
        assert "first_name=Ana" in sim.uploads_made()[-1]["text"]


async def test_a_dnc_lead_is_blacklisted_and_never_uploaded(tmp_path: Path) -> None:
    dnc = {"field": "dnc", "values": ["yes"], "campaign": "*"}
    with served() as (sim, url):
        async with sink_on(url, tmp_path, dnc=dnc) as sink:
            results = await sink.push(
                [
                    queued("K1", uy(1), alt_phones=(uy(2),), fields={"dnc": "YES"}),
                    queued("K2", uy(3), fields={"dnc": "no"}),
                ]
            )
            again = await sink.push(
                [queued("K1", uy(1), alt_phones=(uy(2),), fields={"dnc": "yes"}, attempts=2)]
            )
            history = await sink.ctx.store.lead_history("K1")  # type: ignore[attr-defined]
        assert kinds(results) == {"K1": "delivered", "K2": "delivered"}
        assert kinds(again) == {"K1": "delivered"}  # "already exists" is a success
        assert sim.snapshot()["campaigns"][CAMPAIGN]["blacklist"] == [dialled(1), dialled(2)]
        assert list(sim.dial_list()) == [dialled(3)]
        assert "dnc=" not in sim.uploads_made()[0]["text"]
        assert any(e["kind"] == "ucontact.dnc" for e in history["events"])


async def test_an_uploaded_lead_flagged_dnc_later_is_taken_out_of_the_dial_list(
    tmp_path: Path,
) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path, dnc={"field": "dnc"}) as sink:
            await sink.push([queued("K1", uy(1), fields={"dnc": ""})])
            await sink.push([queued("K1", uy(1), fields={"dnc": "1"}, delivered_hash="h")])
        sim.dial_now()
        assert sim.dial_list()[dialled(1)]["present"] == 0
        assert sim.dial_list()[dialled(1)]["dialed"] == 0
        assert sim.snapshot()["campaigns"][CAMPAIGN]["blacklist"] == [dialled(1)]


def _form_value(body: str, name: str) -> str:
    return parse_qs(body)[name][0]


async def test_the_unconfirmed_leads_of_a_push_share_one_read_of_a_quiet_campaign(
    tmp_path: Path,
) -> None:
    when = datetime(2031, 5, 4, 15, 0, tzinfo=UTC)
    with served() as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            batch = [
                queued("K1", uy(1), call_at=when),
                queued("K2", uy(2), call_at=when),
                queued("K3", uy(3)),
            ]
            started = datetime.now(UTC) - timedelta(minutes=1, seconds=1)  # clock skew
            await sink.push(batch)
            # Every answer was lost: the same versions come back, scheduled and uploaded.
            again = await sink.push([replace(q, attempts=2) for q in batch])
        assert kinds(again) == {"K1": "retry", "K2": "retry", "K3": "retry"}
        assert sim.snapshot()["requests"]["Cdr/getrecords"] == 1  # one small read for all
        flt = json.loads(_form_value(sim.last_body["Cdr/getrecords"], "filter"))
        assert flt["campaign"] == CAMPAIGN and flt["destination"] == ""
        # From the earliest send in doubt (less the clocks' skew) on.
        assert flt["calldatei"] >= started.strftime("%Y-%m-%d %H:%M:%S")


async def test_a_files_leads_are_written_to_the_ledger_together_before_and_after_the_upload(
    tmp_path: Path,
) -> None:
    """Before a file goes, syncd notes each lead as being sent (a crash then knows what
    may be at the dialer), after it the answer: one transaction each for the whole file,
    not two a lead on the push path."""
    from tests.support.stores import traced

    with served() as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            leads = [queued(f"K{i}", uy(i)) for i in range(1, 41)]
            async with traced(sink.ctx.store) as sent:  # type: ignore[arg-type]
                results = await sink.push(leads)
            placed = [await sink.ledger.placed(f"K{i}") for i in range(1, 41)]

    assert set(kinds(results).values()) == {"delivered"}
    assert len(sim.uploads_made()) == 1
    assert all(p is not None and p.destination == dialled(i) for i, p in enumerate(placed, 1))
    begun = [s for s in sent if s.startswith("BEGIN")]
    assert len(begun) <= 2, len(begun)
