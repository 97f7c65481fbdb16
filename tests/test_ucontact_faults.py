"""uContact under faults: answered failures are resent as they are; unanswered ones settle first.

The simulator scripts each call's fate: refused with an error status (not carried
out), carried out late (after the client gave up), or carried out with its answer
garbled or cut. The dial list must end with each number exactly once.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from syncd.core.model import Action, ResultKind
from syncd.simulators.ucontact.api import UContactSimulator
from tests.support.ucontact import dialled, push_until_done, queued, served, sink_on, uy

# The client gives up (timeout_s) before a "late" call lands (LATE_S); settle_s covers it.
FAST: dict[str, Any] = {"timeout_s": 0.25, "settle_s": 0.6}
LATE_S = 0.5


async def wait_carried_out(sim: UContactSimulator, resource: str, count: int) -> None:
    """Wait until the simulator has carried out ``count`` calls of ``resource``."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if sim.snapshot()["carried_out"].get(resource, 0) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{resource} not carried out {count} times")


async def test_an_upload_answered_5xx_or_429_is_sent_again_without_removing_anything(
    tmp_path: Path,
) -> None:
    answers = {"Dialers/uploadbase": ["503", "429", "500"]}
    with served(answers=answers) as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            [result] = await sink.push([queued("K1", uy(1))])
        assert result.kind is ResultKind.DELIVERED
        assert sim.snapshot()["requests"]["Dialers/uploadbase"] == 1  # carried out once
        assert "Dialers/RemoveContact" not in sim.snapshot()["requests"]
        assert sim.dial_list()[dialled(1)] == {"present": 1, "added": 1, "peak": 1, "dialed": 0}


async def test_a_lead_whose_upload_kept_failing_with_5xx_is_resent_later_without_removal(
    tmp_path: Path,
) -> None:
    answers = {"Dialers/uploadbase": ["500", "502", "503", "500"]}  # every try of the call
    with served(answers=answers) as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            rounds = await push_until_done(sink, [queued("K1", uy(1)), queued("K2", uy(2))])
        assert [r.kind for r in rounds[0]] == [ResultKind.RETRY] * 2
        assert [r.kind for r in rounds[1]] == [ResultKind.DELIVERED] * 2
        assert "Dialers/RemoveContact" not in sim.snapshot()["requests"]
        for n in (1, 2):
            assert sim.dial_list()[dialled(n)] == {
                "present": 1,
                "added": 1,
                "peak": 1,
                "dialed": 0,
            }


async def test_a_timed_out_upload_landing_late_is_settled_removed_and_sent_once_more(
    tmp_path: Path,
) -> None:
    with served(answers={"Dialers/uploadbase": ["late"]}, late_s=LATE_S) as (sim, url):
        async with sink_on(url, tmp_path, **FAST) as sink:
            first = await sink.push([queued("K1", uy(1))])
            # Asked again at once, the sink sends nothing: the upload may still land.
            early = await sink.push([queued("K1", uy(1), attempts=2)])
            assert sim.snapshot()["requests"].get("Dialers/RemoveContact", 0) == 0
            rounds = await push_until_done(sink, [queued("K1", uy(1), attempts=3)])
        assert [r.kind for r in rounds[-1]] == [ResultKind.DELIVERED]
        await asyncio.sleep(LATE_S)  # whatever was on its way has landed
        assert sim.dial_list()[dialled(1)] == {"present": 1, "added": 2, "peak": 1, "dialed": 0}
        requests = sim.snapshot()["requests"]
        assert requests["Dialers/uploadbase"] == 2  # the late one and one re-upload
        assert requests["Dialers/RemoveContact"] == 1  # answered, before the re-upload
        assert first[0].kind is ResultKind.RETRY and first[0].retry_after == 0.6
        assert early[0].kind is ResultKind.RETRY and "settle_s" in early[0].reason


async def test_a_removal_landing_late_does_not_take_out_the_re_uploaded_number(
    tmp_path: Path,
) -> None:
    with served(late_s=LATE_S) as (sim, url):
        async with sink_on(url, tmp_path, **FAST) as sink:
            await sink.push([queued("K1", uy(1))])
            # The lead changed: its number must come out before the new version goes in.
            # The first removal is carried out after the client gave up; its repeat is
            # answered at once.
            sim.apply_settings({"answers": {"Dialers/RemoveContact": ["late"]}})
            changed = queued("K1", uy(1), first_name="Ana", delivered_hash="h-old")
            rounds = await push_until_done(sink, [changed])
        assert rounds[0][0].kind is ResultKind.RETRY  # removed, but waiting for the late one
        assert [r.kind for r in rounds[-1]] == [ResultKind.DELIVERED]
        await wait_carried_out(sim, "Dialers/RemoveContact", 2)
        await asyncio.sleep(LATE_S)  # nothing else is on its way
        requests = sim.snapshot()["requests"]
        assert requests["Dialers/RemoveContact"] == 2
        assert requests["Dialers/uploadbase"] == 2
        assert sim.dial_list()[dialled(1)] == {"present": 1, "added": 2, "peak": 1, "dialed": 0}
        assert "first_name=Ana" in sim.uploads_made()[-1]["text"]


async def test_a_removal_that_never_gets_an_answer_holds_the_lead_back_until_one_does(
    tmp_path: Path,
) -> None:
    with served(late_s=LATE_S) as (sim, url):
        async with sink_on(url, tmp_path, **FAST) as sink:
            await sink.push([queued("K1", uy(1))])
            sim.apply_settings({"answers": {"Dialers/RemoveContact": ["late"] * 4}})
            changed = queued("K1", uy(1), first_name="Ana", delivered_hash="h-old")
            rounds = await push_until_done(sink, [changed])
        assert rounds[0][0].kind is ResultKind.RETRY
        assert "RemoveContact" in rounds[0][0].reason
        assert [r.kind for r in rounds[-1]] == [ResultKind.DELIVERED]
        await wait_carried_out(sim, "Dialers/RemoveContact", 5)
        await asyncio.sleep(LATE_S)
        assert sim.snapshot()["requests"]["Dialers/uploadbase"] == 2
        assert sim.dial_list()[dialled(1)] == {"present": 1, "added": 2, "peak": 1, "dialed": 0}


async def test_a_garbled_or_cut_answer_to_an_upload_counts_as_no_answer(tmp_path: Path) -> None:
    # The server took the file and then failed to say so: it must not be sent twice.
    for n, fate in enumerate(("garbled", "reset"), start=1):
        with served(answers={"Dialers/uploadbase": [fate]}) as (sim, url):
            async with sink_on(url, tmp_path / fate, **FAST) as sink:
                rounds = await push_until_done(sink, [queued(f"K{n}", uy(n))])
            assert rounds[0][0].kind is ResultKind.RETRY, fate
            assert [r.kind for r in rounds[-1]] == [ResultKind.DELIVERED], fate
            assert sim.snapshot()["requests"]["Dialers/RemoveContact"] == 1, fate
            assert sim.dial_list()[dialled(n)] == {
                "present": 1,
                "added": 2,
                "peak": 1,
                "dialed": 0,
            }, fate


async def test_a_late_scheduled_call_is_settled_removed_and_scheduled_once_more(
    tmp_path: Path,
) -> None:
    when = datetime(2031, 5, 4, 15, 0, tzinfo=UTC)
    answers = {"Dialers/ScheduleDialerCall": ["late"]}
    with served(answers=answers, late_s=LATE_S) as (sim, url):
        async with sink_on(url, tmp_path, **FAST) as sink:
            rounds = await push_until_done(sink, [queued("K1", uy(1), call_at=when)])
        assert [r.kind for r in rounds[-1]] == [ResultKind.DELIVERED]
        assert sim.snapshot()["requests"]["Dialers/RemoveScheduleDialerCall"] == 1
        assert [s["phone"] for s in sim.scheduled()] == [dialled(1)]


async def test_a_delete_waits_for_a_late_upload_before_removing(tmp_path: Path) -> None:
    with served(answers={"Dialers/uploadbase": ["late"]}, late_s=LATE_S) as (sim, url):
        async with sink_on(url, tmp_path, **FAST) as sink:
            await sink.push([queued("K1", uy(1))])
            gone = queued("K1", action=Action.DELETE, attempts=1)
            rounds = await push_until_done(sink, [gone])
        assert rounds[0][0].kind is ResultKind.RETRY  # the upload may still land
        assert [r.kind for r in rounds[-1]] == [ResultKind.DELIVERED]
        assert sim.dial_list()[dialled(1)]["present"] == 0
