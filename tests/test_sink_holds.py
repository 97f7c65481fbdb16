"""What the dialer says about the sink is not a refusal of its leads (issue 24).

A campaign paused for a while holds the sink: its leads wait without spending
attempts and nobody is refused. A 413 (request too large) halves the batch for every
dialer, and later batches keep to the size that went through.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from syncd.core.mapping import lead_hash, lead_to_json
from syncd.core.model import Action, Lead, LeadWrite
from syncd.core.summary import SinkCounts
from syncd.run.push import Pusher
from syncd.simulators.ameyo.api import AmeyoSimulator, create_app
from syncd.simulators.server import running
from syncd.sinks.ameyo.replies import hold_reason
from syncd.state.base import ChunkWrite
from tests.conftest import drop_csv, run_cli
from tests.support.limits import Answering, BodyLimit
from tests.support.reliability import (
    AMEYO_PASSWORD,
    VENDORS,
    RequestCounter,
    Vendor,
    ameyo_sink,
    export,
    keys,
    vendor_env,
    write_config,
)
from tests.support.ucontact import dialled, served, sink_on, uy

UPLOADS = {  # the requests that carry leads, per dialer
    "jodo": (b"ImportProcessData",),
    "ameyo": (b"command=upload",),
    "ucontact": (b"/Dialers/upload",),
}


def events(stdout: str, stderr: str) -> list[dict[str, object]]:
    found = []
    for line in (stdout + stderr).splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


def named(log: list[dict[str, object]], event: str) -> list[dict[str, object]]:
    return [e for e in log if e.get("event") == event]


AMEYO_REPLIES = [
    # (what Ameyo said, syncd's reason, or None: not about the campaign's state)
    ("Campaign is not running", "the Ameyo campaign is not running"),
    ("CustomerManager.campaign.not.running", "the Ameyo campaign is not running"),
    ("Campaign is paused", "the Ameyo campaign is paused"),
    ("User is locked", "the Ameyo user is locked"),
    ("CustomerManager.campaign.not.found", None),  # a wrong campaign_id: stops the sink
    ("CustomerManager.lead.not.in.camp.11", None),
    ("PREPROCESSING_INVALID_LENGTH: CustomerManager.Phone.number.does.not.have.valid.length",
     None),
]  # fmt: skip


@pytest.mark.parametrize(("said", "reason"), AMEYO_REPLIES)
def test_ameyo_replies_about_the_campaigns_state_are_holds_not_refusals(
    said: str, reason: str | None
) -> None:
    assert hold_reason(said) == reason


def test_an_ameyo_campaign_that_is_not_running_for_a_while_holds_the_sink_and_refuses_no_lead(
    tmp_path: Path,
) -> None:
    sim = AmeyoSimulator(users={"syncd": AMEYO_PASSWORD}, dialing=False, not_running={1})

    def resume(n: int, when: str) -> None:
        if when == "before" and n == 4:  # the supervisor resumes it after three uploads
            sim.not_running.clear()

    counter = RequestCounter(create_app(sim), resume, only=UPLOADS["ameyo"])
    with running(counter) as url:
        config = write_config(tmp_path, [ameyo_sink(url, batch_size=20)])
        drop_csv(tmp_path / "inbox", "leads.csv", export(100))
        result = run_cli("run", "--once", "-c", str(config), env=vendor_env())

    assert result.returncode == 0, result.stderr[-3000:]
    held = Counter(str(c.data.get("crm_key")) for c in sim.customer_list())
    assert set(held) == keys(100) and set(held.values()) == {1}
    # Three refused uploads of a whole batch, then five batches: nothing was split.
    assert counter.count == 3 + 5
    log = events(result.stdout, result.stderr)
    assert not named(log, "sink.push.refused")
    assert not named(log, "sink.push.bisect")
    [began] = named(log, "sink.held")
    assert "not running" in str(began["why"])
    assert len(named(log, "sink.held.ended")) == 1


def test_a_campaign_still_not_running_at_the_deadline_leaves_leads_pending_and_status_says_held(
    tmp_path: Path,
) -> None:
    sim = AmeyoSimulator(users={"syncd": AMEYO_PASSWORD}, dialing=False, not_running={1})
    with running(create_app(sim)) as url:
        config = write_config(tmp_path, [ameyo_sink(url, batch_size=20)])
        drop_csv(tmp_path / "inbox", "leads.csv", export(30))
        result = run_cli("run", "--once", "--deadline", "3", "-c", str(config), env=vendor_env())
        status = " ".join(run_cli("status", "-c", str(config), env=vendor_env()).stdout.split())

    assert result.returncode == 1, result.stdout  # leads left undelivered
    assert sim.customer_list() == []
    log = events(result.stdout, result.stderr)
    assert not named(log, "sink.push.refused") and not named(log, "sink.push.gave_up")
    assert len(named(log, "sink.held")) == 1  # once, however often it was asked again
    assert "held" in status and "the Ameyo campaign is not running" in status
    assert "30 leads pending" in status


@pytest.mark.parametrize("vendor", VENDORS, ids=lambda v: v.name)
def test_a_413_halves_the_batch_for_every_dialer_and_later_batches_keep_the_size_that_went_through(
    vendor: Vendor, tmp_path: Path
) -> None:
    sim = vendor.simulator(None)
    limit = BodyLimit(vendor.app(sim), max_bytes=0, only=UPLOADS[vendor.name])
    with running(limit) as url:
        config = vendor.config(tmp_path, url, batch_size=40, push_concurrency=1)
        drop_csv(tmp_path / "inbox", "leads.csv", export(200))
        # The proxy in front of the dialer takes a request of about 12 leads, not 13.
        limit.max_bytes = per_lead_bytes(vendor) * 12 + 400
        result = run_cli("run", "--once", "-c", str(config), env=vendor_env())

    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    held = Counter(vendor.held(sim))
    assert set(held) == keys(200) and set(held.values()) == {1}, held
    log = events(result.stdout, result.stderr)
    assert not named(log, "sink.push.refused")
    [learned] = named(log, "sink.batch.limited")
    assert "batches are now" in str(learned["reason"])
    # Learned once, then kept: not every batch of 40 was refused and halved again.
    assert len(limit.refused) <= 4, limit.refused


def test_one_record_too_large_on_its_own_is_refused_with_that_reason_and_the_others_go(
    tmp_path: Path,
) -> None:
    from syncd.simulators.jodo.api import JodoSimulator
    from syncd.simulators.jodo.api import create_app as jodo_app
    from tests.support.reliability import jodo_sink

    sim = JodoSimulator()
    limit = BodyLimit(jodo_app(sim), max_bytes=4000, only=UPLOADS["jodo"])
    big = "x" * 5000
    with running(limit) as url:
        config = write_config(
            tmp_path,
            [jodo_sink(url, batch_size=8, push_concurrency=1)],
            source={"max_field_bytes": 10_000},
        )
        drop_csv(tmp_path / "inbox", "leads.csv", export(8).replace("L3,First3", f"L3,{big}"))
        result = run_cli("run", "--once", "-c", str(config), env=vendor_env())

    assert result.returncode == 0, result.stdout + result.stderr[-3000:]  # refused with a reason
    assert {r["leadnumber"] for r in sim.records("VoiceProcess")} == keys(8) - {"L3"}
    [refused] = named(events(result.stdout, result.stderr), "sink.push.refused")
    assert refused["key"] == "L3"
    # an info line: the reason's code (issue 29); `syncd explain` has the whole text
    assert refused["reason"] == "one record too large for the dialer (HTTP 413)"


@pytest.mark.parametrize("vendor", VENDORS, ids=lambda v: v.name)
def test_429_and_503_with_or_without_retry_after_hold_the_sink_and_refuse_no_lead(
    vendor: Vendor, tmp_path: Path
) -> None:
    sim = vendor.simulator(None)
    script = [(429, None), (503, "1"), (429, "0"), (503, None), (429, None), (503, None)]
    busy = Answering(vendor.app(sim), script, only=UPLOADS[vendor.name])
    with running(busy) as url:
        config = vendor.config(tmp_path, url, batch_size=20, push_concurrency=1)
        drop_csv(tmp_path / "inbox", "leads.csv", export(60))
        result = run_cli("run", "--once", "-c", str(config), env=vendor_env())

    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert busy.answered == [429, 503, 429, 503, 429, 503]
    held = Counter(vendor.held(sim))
    assert set(held) == keys(60) and set(held.values()) == {1}, held
    log = events(result.stdout, result.stderr)
    assert not named(log, "sink.push.refused") and not named(log, "sink.push.bisect")


def per_lead_bytes(vendor: Vendor) -> int:
    """Return about how many request bytes one test lead takes at this dialer."""
    return {"jodo": 260, "ameyo": 200, "ucontact": 120}[vendor.name]


async def test_a_ucontact_lead_waiting_for_its_call_records_says_so_and_does_not_hold_the_sink(
    tmp_path: Path,
) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path, cdr_delay_s=300.0) as sink:
            store = sink.ctx.store
            lead = Lead(key="K1", phone=uy(1), first_name="Ana")
            write = ChunkWrite("run-1", "crm", "leads.csv")
            text = lead_to_json(lead)
            write.leads["uc"] = [
                LeadWrite("K1", lead_hash(text), None, text, Action.UPSERT, "new", None)
            ]
            await store.apply_chunk(write)
            # The add reached the dialer but its answer was lost (a crash before recording it).
            await sink.push(await store.claim("uc", 10, 60))
            await store.release_inflight("uc")

            counts = SinkCounts()
            await Pusher(sink, store, counts).run_until_idle(time.time() + 3)

        assert counts.delivered == counts.refused == counts.failed == 0  # it waits
        assert counts.waiting is not None
        assert "for uContact's call records to settle (cdr_delay_s)" in counts.waiting
        assert "Retry-After" not in counts.waiting
        assert sink.guard.limits.limiter.held_for() == 0  # other leads may go meanwhile
        assert sink.guard.breaker.failures == 0
        assert sim.dial_list()[dialled(1)]["present"] == 0  # removed until the records settle
