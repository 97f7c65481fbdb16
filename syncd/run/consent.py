"""Consent that runs out while a dialer holds the lead: the lead is withdrawn.

Consent is checked when a row is read (``core.gate.screen``) and again right before a
push (``core.gate.consent_at_push``). A lead delivered with a month of consent left
sits in the dialer's queue, redialled, after that month: this stage finds the leads a
dialer holds whose ``consent_until`` has passed and queues their withdrawal, the way
a lead listed on a do-not-call list after delivery is withdrawn (``run.pull.DncPuller``):
a removal in the outbox, a refusal with its reason, a ``gate.withdrawn`` event with the
audit's facts, in one transaction. Vendor-neutral: each sink withdraws as it can.

Only the sinks fed by a route whose policy sets ``consent_max_age_days`` are looked at:
an expiry computed under a rule since removed from the configuration does not count.
"""

from __future__ import annotations

import json
from datetime import datetime

import structlog

from syncd.config import Settings
from syncd.core.audit import Facts, numbers_of, sink_policy_version
from syncd.core.gate import CONSENT_EXPIRED, consent_withdrawal, lead_zones
from syncd.core.mapping import withdrawal
from syncd.core.model import Action, LeadWrite, Reject
from syncd.core.summary import RunSummary
from syncd.state.base import ChunkWrite, ExpiredLead, StateStore

log = structlog.get_logger("syncd.consent")

CODE = CONSENT_EXPIRED
CONSENT_RECHECK_S = 60.0  # how often the daemon looks for consent run out in a dialer
BATCH = 1000  # leads withdrawn per transaction
ORIGIN = "consent_max_age_days"  # the refusal's origin: the rule, not a file
QUEUED = ("pending", "inflight", "held")


def consent_sinks(settings: Settings) -> list[str]:
    """Return the sinks a route with ``consent_max_age_days`` feeds."""
    found = {
        r.sink
        for r in settings.routes
        if r.policy is not None and r.policy.consent_max_age_days is not None
    }
    return sorted(found)


async def withdraw_expired(
    settings: Settings, store: StateStore, summary: RunSummary, now: float
) -> int:
    """Queue the withdrawal of every lead a dialer holds whose consent ran out by ``now``;
    return how many."""
    sinks = consent_sinks(settings)
    done = 0
    while sinks:
        found = await store.consent_expired(sinks, now, BATCH)
        if not found:
            break
        for sink in sorted({lead.sink for lead in found}):
            await _withdraw(settings, store, summary, [e for e in found if e.sink == sink])
        done += len(found)
        if len(found) < BATCH:
            break
    if done:
        log.warning("gate.withdrawn", reason=CODE, leads=done)
    return done


async def _withdraw(
    settings: Settings, store: StateStore, summary: RunSummary, found: list[ExpiredLead]
) -> None:
    """Queue the removals of one sink's leads, with their refusals and audit facts."""
    sink = found[0].sink
    routes = [r for r in settings.routes if r.sink == sink]
    source, fallback = routes[0].source, routes[0].timezone
    policy = sink_policy_version(settings.routes, sink)
    write = ChunkWrite(summary.run_id, source, ORIGIN)
    counts = summary.sink(sink)
    for lead in found:
        data = json.loads(lead.lead_json)
        numbers = numbers_of(data.get("phone", ""), data.get("alt_phones") or ())
        why = consent_withdrawal(datetime.fromisoformat(lead.consent_until))
        if lead.state not in QUEUED:
            counts.carried += 1  # a removal queued outside this run's pull
        gone_hash, gone_json = withdrawal(lead.key, CODE)
        facts = Facts(
            numbers=numbers,
            zones=lead_zones(list(numbers), data.get("zone", ""), fallback),
            code=CODE,
            policy=policy,
        ).to_json()
        write.leads.setdefault(sink, []).append(
            LeadWrite(lead.key, gone_hash, lead.raw_hash, gone_json, Action.DELETE, "deleted",
                      None, state="pending")
        )  # fmt: skip
        write.rejects.append((sink, Reject(source, why, None, ORIGIN, [], lead.key, facts)))
        write.events.append((sink, lead.key, "gate.withdrawn", why, facts))
    await store.apply_chunk(write)
