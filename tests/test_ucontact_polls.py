"""uContact reads cost what is new: incremental outcome polls, narrow in-doubt checks.

Counted at the simulator: the pages (``requests``) and call records (``records_served``)
``Cdr/getrecords`` answered with, per poll or per check.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from syncd.core.model import Outcome
from syncd.simulators.server import running
from syncd.simulators.ucontact.api import UContactSimulator, create_app
from syncd.sinks.ucontact.sink import UContactSink
from tests.support.ucontact import dialled, push_until_done, queued, served, sink_on, uy

LEADS = 40


def seconds_ago(n: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=n)).strftime("%Y-%m-%d %H:%M:%S")


def served_so_far(sim: UContactSimulator) -> tuple[int, int]:
    """Return (pages, records) getrecords has answered with so far."""
    snapshot = sim.snapshot()
    return snapshot["requests"].get("Cdr/getrecords", 0), snapshot["records_served"]


async def outcomes(sink: UContactSink) -> dict[str, dict[str, Any]]:
    rows = await sink.ctx.store.outcome_dump()  # type: ignore[attr-defined]
    return {r["key"]: r for r in rows}


async def test_each_poll_reads_what_is_new_not_the_window_again(tmp_path: Path) -> None:
    with served() as (sim, url):
        # Records may be written up to 60 s late: the overlap is that plus the clocks' skew.
        async with sink_on(url, tmp_path, cdr_delay_s=60) as sink:
            await sink.push([queued(f"K{n}", uy(n)) for n in range(LEADS)])
            # A backlog: 1,200 calls between 14 and 4 minutes ago.
            for i in range(1200):
                sim.add_record(dialled(i % LEADS), calldate=seconds_ago(840 - i / 2))
            await sink.poll_outcomes()
            per_poll = []
            for _ in range(5):
                before = served_so_far(sim)
                for n in range(5):  # five new calls a poll
                    sim.add_record(dialled(n), calldate=seconds_ago(0))
                await sink.poll_outcomes()
                after = served_so_far(sim)
                per_poll.append((after[0] - before[0], after[1] - before[1]))
            found = await outcomes(sink)
        # One page a poll: the new calls, those of the overlap (the new calls of the polls
        # before) and the newest second's again; never the backlog.
        assert all(pages == 1 for pages, _ in per_poll), per_poll
        assert all(records <= 5 * (n + 1) + 2 for n, (_, records) in enumerate(per_poll)), per_poll
        # Every call counted once.
        assert sum(o["attempts"] for o in found.values()) == 1200 + 25


async def test_records_written_late_within_the_overlap_are_recorded_once(tmp_path: Path) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path, cdr_delay_s=300) as sink:
            await sink.push([queued(f"K{n}", uy(n)) for n in (1, 2, 3)])
            sim.add_record(dialled(1), calldate=seconds_ago(60), status="BUSY")
            # A long call: its record is written when it ends, after newer ones.
            sim.add_record(dialled(2), calldate=seconds_ago(240), status="ANSWERED", visible=False)
            sim.add_record(dialled(3), calldate=seconds_ago(5), status="NO ANSWER")
            assert await sink.poll_outcomes() == 2
            sim.reveal()
            assert await sink.poll_outcomes() == 1
            assert await sink.poll_outcomes() == 0
            found = await outcomes(sink)
        assert {k: (o["status"], o["attempts"]) for k, o in found.items()} == {
            "K1": ("busy", 1),
            "K2": ("connected", 1),
            "K3": ("no_answer", 1),
        }


async def test_polls_ask_for_big_pages_and_read_to_the_end_when_the_server_caps_them(
    tmp_path: Path,
) -> None:
    with served(max_page=100) as (sim, url):  # the server serves 100 a page, whatever asked
        async with sink_on(url, tmp_path) as sink:
            await sink.push([queued(f"K{n}", uy(n)) for n in range(LEADS)])
            for i in range(250):
                sim.add_record(dialled(i % LEADS), calldate=seconds_ago(600 - i))
            await sink.poll_outcomes()
            found = await outcomes(sink)
        assert parse_qs(sim.last_body["Cdr/getrecords"])["searchLimit"] == ["500"]
        assert sum(o["attempts"] for o in found.values()) == 250
        assert served_so_far(sim) == (3, 250)  # 100, 100 and 50: nothing read twice


async def test_a_poll_records_outcomes_page_by_page(tmp_path: Path) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path, cdr_page_size=10) as sink:
            await sink.push([queued(f"K{n}", uy(n)) for n in range(LEADS)])
            for i in range(200):
                sim.add_record(dialled(i % LEADS), calldate=seconds_ago(600 - i))
            store = sink.ctx.store
            batches: list[int] = []
            record = store.record_outcomes

            async def spy(items: Any) -> int:
                listed: list[Outcome] = list(items)
                batches.append(len(listed))
                return await record(listed)

            store.record_outcomes = spy  # type: ignore[method-assign]
            await sink.poll_outcomes()
            found = await outcomes(sink)
        # What is held at once is a page, not the window: memory stays flat under a backlog.
        assert batches and max(batches) <= 10, batches
        assert sum(o["attempts"] for o in found.values()) == 200
        assert len(found) == LEADS


async def test_the_in_doubt_check_reads_only_the_records_of_the_leads_in_doubt(
    tmp_path: Path,
) -> None:
    with served(upload_answer_delay_s=1.0) as (sim, url):
        async with sink_on(url, tmp_path, timeout_s=0.4, settle_s=0.3) as sink:
            first = await sink.push([queued("K1", uy(1)), queued("K2", uy(2))])
            assert {r.kind.value for r in first} == {"retry"}
            sim.apply_settings({"upload_answer_delay_s": 0.0})
            sim.dial_now()  # the upload landed and K1, K2 were dialled ...
            for i in range(1000):  # ... among a thousand calls of other numbers
                sim.add_record(dialled(100 + i % 300), calldate=seconds_ago(0))
            await asyncio.sleep(first[0].retry_after or 0)
            before = served_so_far(sim)
            rounds = await push_until_done(
                sink, [queued("K1", uy(1), attempts=2), queued("K2", uy(2), attempts=2)]
            )
            after = served_so_far(sim)
        assert {r.key: r.kind.value for r in rounds[-1]} == {"K1": "delivered", "K2": "delivered"}
        assert sim.snapshot()["requests"]["Dialers/uploadbase"] == 1  # nobody dialled twice
        # Their own calls and at most a page (the document's 50) of the campaign's, which
        # a check reads only while that costs no more than looking their numbers up.
        assert after[1] - before[1] <= 4 + 50, (before, after)


async def test_a_server_ignoring_the_destination_filter_is_read_for_the_campaign_instead(
    tmp_path: Path,
) -> None:
    with served(upload_answer_delay_s=1.0, filters_destination=False) as (sim, url):
        async with sink_on(url, tmp_path, timeout_s=0.4, settle_s=0.3) as sink:
            first = await sink.push([queued("K1", uy(1)), queued("K2", uy(2))])
            sim.apply_settings({"upload_answer_delay_s": 0.0})
            for i in range(30):  # other numbers' calls come first
                sim.add_record(dialled(100 + i), calldate=seconds_ago(0))
            sim.dial_now()
            await asyncio.sleep(first[0].retry_after or 0)
            rounds = await push_until_done(
                sink, [queued("K1", uy(1), attempts=2), queued("K2", uy(2), attempts=2)]
            )
        # Nobody is dialled twice: the campaign's records since the upload found both calls.
        assert {r.key: r.kind.value for r in rounds[-1]} == {"K1": "delivered", "K2": "delivered"}
        assert sim.snapshot()["requests"]["Dialers/uploadbase"] == 1


async def test_an_older_call_written_late_does_not_replace_the_newer_calls_outcome(
    tmp_path: Path,
) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path, cdr_delay_s=300) as sink:
            await sink.push([queued("K1", uy(1))])
            newer = sim.add_record(dialled(1), calldate=seconds_ago(10), status="BUSY")
            sim.add_record(dialled(1), calldate=seconds_ago(200), status="ANSWERED", visible=False)
            await sink.poll_outcomes()
            sim.reveal()  # the longer, older call is written after the newer one
            await sink.poll_outcomes()
            found = (await outcomes(sink))["K1"]
        assert (found["status"], found["call_id"]) == ("busy", newer["guid"])


async def recheck_lost_upload(
    sim: UContactSimulator, sink: UContactSink, calls: Callable[[], None]
) -> tuple[list[str], int, int]:
    """Push LEADS leads whose upload lands but whose answer is lost, let ``calls`` add the
    call records made meanwhile, push them again until done; return the numbers uploaded
    again and the pages and records getrecords answered with from the second push on."""
    batch = [queued(f"K{n}", uy(n)) for n in range(LEADS)]
    first = await sink.push(batch)
    assert {r.kind.value for r in first} == {"retry"}
    sim.apply_settings({"upload_answer_delay_s": 0.0})
    calls()
    await asyncio.sleep(first[0].retry_after or 0)
    before = served_so_far(sim)
    rounds = await push_until_done(sink, [replace(q, attempts=2) for q in batch])
    after = served_so_far(sim)
    assert {r.kind.value for r in rounds[-1]} == {"delivered"}
    [_, again] = sim.uploads_made()
    resent = [line.split(";")[1] for line in again["text"].splitlines()]
    return resent, after[0] - before[0], after[1] - before[1]


async def test_a_batch_in_doubt_is_checked_with_one_read_of_a_quiet_campaign(
    tmp_path: Path,
) -> None:
    called = range(0, LEADS, 4)  # a quarter of them were dialled meanwhile

    def calls() -> None:
        for n in called:
            sim.add_record(dialled(n), calldate=seconds_ago(0))

    with served(upload_answer_delay_s=1.0) as (sim, url):
        async with sink_on(url, tmp_path, timeout_s=0.4, settle_s=0.3) as sink:
            resent, pages, _ = await recheck_lost_upload(sim, sink, calls)
    # The dialled ones are not sent again; the others are, once.
    assert sorted(resent) == sorted(dialled(n) for n in range(LEADS) if n not in called)
    # Two checks (before the removal, and cdr_delay_s after it): one request each for
    # the whole batch, not one per lead.
    assert pages <= 2, pages


async def test_a_batch_in_doubt_in_a_busy_campaign_reads_its_own_numbers_not_the_campaign(
    tmp_path: Path,
) -> None:
    called = range(0, LEADS, 4)

    def calls() -> None:
        for i in range(3000):  # the campaign's other calls since the upload, and theirs
            sim.add_record(dialled(1000 + i % 700), calldate=seconds_ago(0))
            if i % 300 == 0:
                sim.add_record(dialled(called[i // 300]), calldate=seconds_ago(0))

    with served(upload_answer_delay_s=1.0) as (sim, url):
        async with sink_on(url, tmp_path, timeout_s=0.4, settle_s=0.3) as sink:
            resent, pages, records = await recheck_lost_upload(sim, sink, calls)
    assert sorted(resent) == sorted(dialled(n) for n in range(LEADS) if n not in called)
    # Two checks, each bounded by what looking the numbers up costs (a request and
    # ten records a number in doubt): never the campaign's 3,000 records.
    assert pages <= 2 * 2 * LEADS, pages
    assert records <= 2 * (10 * LEADS + len(called)), records


class IgnoresLastrow:
    """A server that answers every getrecords with its first page (ignores ``lastrow``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).endswith("Cdr/getrecords"):
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        body = re.sub(rb"lastrow=\d+", b"lastrow=0", body)
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def test_a_server_ignoring_lastrow_and_the_destination_ends_the_check(
    tmp_path: Path,
) -> None:
    sim = UContactSimulator(
        dial_delay_s=3600.0, cdr_delay_s=0.0, upload_answer_delay_s=1.0, filters_destination=False
    )
    with running(IgnoresLastrow(create_app(sim))) as url:
        async with sink_on(url, tmp_path, timeout_s=0.4, settle_s=0.3) as sink:
            first = await sink.push([queued("K1", uy(1)), queued("K2", uy(2))])
            sim.apply_settings({"upload_answer_delay_s": 0.0})
            sim.dial_now()
            for i in range(120):  # more than a page of 50, fewer than one of 500
                sim.add_record(dialled(100 + i), calldate=seconds_ago(0))
            await asyncio.sleep(first[0].retry_after or 0)
            again = [queued("K1", uy(1), attempts=2), queued("K2", uy(2), attempts=2)]
            rounds = await asyncio.wait_for(push_until_done(sink, again), 60)
    # The page it keeps answering holds both calls: nobody is dialled twice.
    assert {r.key: r.kind.value for r in rounds[-1]} == {"K1": "delivered", "K2": "delivered"}
    assert sim.snapshot()["requests"]["Dialers/uploadbase"] == 1
