"""A dialer that can be emptied is held to the calling window by emptying it at the close.

syncd pushes a lead only while its calling window is open (``syncd.core.gate``), but
the lead then waits in the dialer's queue. A dialer whose API takes a start time with
a record but no end, and that can take a record back (uContact: its
``window_hold().close == "withdraw"``), is held to the close here, in three steps
over the outbox, each a lead's stage in ``Outbox.window_closed``:

1. ``closed``: the push wrote until when the dialer may ring it (``dial_until``): when
   the opening it went in closes, or its consent runs out if that comes first. Once
   that has passed, its removal is queued like any other (tried until it lands, never a
   dead letter), carrying the lead as it was, marked ``withdrawn = "window_closed"`` so
   the sink takes it out and the audit says why (``gate.withdrawn``). When it was its
   consent that ran out, the mark and the reason are the consent stage's
   (``consent_expired``, ``syncd.run.consent``): a removal for good, never returned.
2. ``withdrawn``: once the dialer confirmed the removal, the lead is held
   (``gate.held``) until the window's next opening; then the push-time gate sends it
   again, as it would a new lead. One whose consent runs out before that opening is
   not held for nothing: it goes to the push-time gate at once, which refuses it
   (``consent_expired``).
3. A lead dialled to a final result meanwhile (an outcome since its delivery says
   ``connected`` or ``closed``) is neither withdrawn nor sent again
   (``gate.not_returned``); checked again when its opening comes (``returning``), so a
   call record polled overnight still counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import orjson
import structlog

from syncd.core.audit import Facts, numbers_of
from syncd.core.gate import (
    CONSENT_EXPIRED,
    RouteWindow,
    Verdict,
    calling_decision,
    consent_at_push,
    consent_withdrawal,
    lead_zones,
    zone_info,
)
from syncd.core.mapping import lead_to_json
from syncd.core.model import Lead
from syncd.core.window_hold import WINDOW_CODE
from syncd.state.base import CLOSED, WITHDRAWN, Outbox, WindowLead, WindowMoves

log = structlog.get_logger("syncd.window")
LIMIT = 500  # leads read at once
ROUNDS = 20  # reads per push: a backlog past LIMIT x ROUNDS goes on at the next push
NOT_RETURNED = (
    f"not returned ({WINDOW_CODE}): dialled to a final result after its delivery; "
    "the CRM's next change of the lead sends it again"
)
WITHDRAWING = (
    f"withdrawn ({WINDOW_CODE}): its calling window closed while the dialer held it;"
    " it comes back at the next opening"
)


@dataclass(slots=True)
class WindowCounts:
    """What one pass did: removals queued, leads held for the next opening, dialled ones."""

    withdrawn: int = 0
    returning: int = 0
    dialled: int = 0
    queued: int = 0  # leads that joined the outbox (withdrawals, returns), less those that left


@dataclass(frozen=True, slots=True)
class WindowContext:
    """The gate settings of one sink: its routes' windows, policy version and fallback zone."""

    windows: Sequence[RouteWindow]
    policy: str = ""
    fallback_zone: str = "UTC"
    # A route of the sink sets consent_max_age_days: a lead's consent_until counts (as
    # at push: an expiry computed under a rule since removed does not).
    consent: bool = False
    # (run id, source, origin) a withdrawal for consent is refused under (`syncd rejects`)
    refused_as: tuple[str, str, str] = ("", "", "")

    @property
    def margin(self) -> timedelta:
        """Return the time the dialer needs to place a call (as the push's gate counts it)."""
        return max((w.margin for w in self.windows), default=timedelta(0))


async def close_windows(store: Outbox, sink: str, ctx: WindowContext, now: float) -> WindowCounts:
    """Withdraw ``sink``'s leads whose opening closed and hold the withdrawn ones for the
    next; return the counts (logged as ``window.withdrawn`` when anything moved)."""
    counts = WindowCounts()
    for _ in range(ROUNDS):
        rows = await store.window_closed(sink, now, LIMIT)
        moves = plan_moves(rows, ctx, now)
        counts.queued += await store.move_window(sink, moves)
        counts.withdrawn += len(moves.withdraw)
        counts.returning += len(moves.back)
        counts.dialled += len(moves.done)
        if len(rows) < LIMIT:
            break
    if counts.withdrawn or counts.returning or counts.dialled:
        log.info(
            "window.withdrawn",
            sink=sink,
            withdrawn=counts.withdrawn,
            returning=counts.returning,
            dialled=counts.dialled,
        )
    return counts


def plan_moves(rows: Sequence[WindowLead], ctx: WindowContext, now: float) -> WindowMoves:
    """Return what to do with each lead the window's close concerns (pure)."""
    moves = WindowMoves(refused_as=ctx.refused_as)
    at = datetime.fromtimestamp(now, UTC)
    for row in rows:
        lead = Lead.from_json(orjson.loads(row.lead_json))
        numbers = numbers_of(lead.phone, lead.alt_phones)
        if row.dialled:
            # Withdrawn or held for its return: said in the audit; still delivered: the
            # dialer is done with it, nothing to say.
            reason = "" if row.stage == CLOSED else NOT_RETURNED
            moves.done.append((row.key, reason, _facts(ctx, lead, numbers, "")))
        elif row.stage == CLOSED:
            code, why = withdrawal_of(lead, ctx, at)
            marked = lead_to_json(replace(lead, withdrawn=code))
            facts = _facts(ctx, lead, numbers, "delete", code=code, withdrawn=code)
            moves.withdraw.append((row.key, marked, why, facts))
            if code == CONSENT_EXPIRED:
                moves.refused.append((row.key, why, facts))
        elif row.stage == WITHDRAWN:
            decision = calling_decision(numbers, lead.zone, ctx.windows, at)
            if ctx.consent:
                decision = consent_at_push(decision, lead.consent_until, at, ctx.margin)
            # Open again already (the removal landed late), never, or its consent runs out
            # first: the push-time gate decides at once, as for any lead.
            until = decision.until if decision.verdict is Verdict.HOLD else None
            zones = decision.zones or _zones(ctx, lead, numbers)
            refused = decision.text if decision.code == CONSENT_EXPIRED else ""
            moves.back.append(
                (
                    row.key,
                    lead_to_json(replace(lead, withdrawn="")),
                    until.timestamp() if until is not None else now,
                    _held(until, zones, refused),
                    _facts(ctx, lead, numbers, "upsert", zones=zones),
                )
            )
    return moves


def withdrawal_of(lead: Lead, ctx: WindowContext, at: datetime) -> tuple[str, str]:
    """Return the code and reason of the removal of a lead whose ``dial_until`` passed.

    ``dial_until`` is the earlier of the opening's close and the lead's consent's end
    (``Pusher._dial_until``): consent run out by ``at`` withdraws it for good, with the
    consent stage's code and reason; else the window's close did, and it comes back.
    """
    until = lead.consent_until
    if ctx.consent and until is not None and until <= at:
        return CONSENT_EXPIRED, consent_withdrawal(until)
    return WINDOW_CODE, WITHDRAWING


def unmarked(lead_json: str) -> str | None:
    """Return a window withdrawal's lead as it was (its JSON without the mark); None when
    ``lead_json`` is not one."""
    try:
        lead = Lead.from_json(orjson.loads(lead_json))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if lead.withdrawn != WINDOW_CODE or lead.deleted:
        return None
    return lead_to_json(replace(lead, withdrawn=""))


def _held(until: datetime | None, zones: Sequence[str], refused: str = "") -> str:
    """Return the hold reason of a withdrawn lead waiting for the next opening, or sent
    to the push-time gate now (``refused``: its consent runs out before that opening)."""
    reason = f"held ({WINDOW_CODE}): withdrawn from the dialer at its calling window's close"
    if refused:
        return f"{reason}; not held for the next opening: {refused}"
    if until is None or not zones:
        return f"{reason}; sent again now"
    local = until.astimezone(zone_info(zones[0])).strftime("%Y-%m-%d %H:%M %Z")
    return f"{reason}; back at the next opening, {local}"


def _zones(ctx: WindowContext, lead: Lead, numbers: Sequence[str]) -> tuple[str, ...]:
    return lead_zones(list(numbers), lead.zone, ctx.fallback_zone)


def _facts(
    ctx: WindowContext,
    lead: Lead,
    numbers: tuple[str, ...],
    action: str,
    *,
    code: str = WINDOW_CODE,
    withdrawn: str = "",
    zones: Sequence[str] = (),
) -> str:
    return Facts(
        numbers=numbers,
        zones=tuple(zones) or _zones(ctx, lead, numbers),
        code=code,
        policy=ctx.policy,
        action=action,
        withdrawn=withdrawn,
    ).to_json()
