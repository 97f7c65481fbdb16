"""A dialer that can be emptied is held to the calling window by emptying it at the close.

syncd pushes a lead only while its calling window is open (``syncd.core.gate``), but
the lead then waits in the dialer's queue. A dialer whose API takes a start time with
a record but no end, and that can take a record back (uContact: its
``window_hold().close == "withdraw"``), is held to the close here, in three steps
over the outbox, each a lead's stage in ``Outbox.window_closed``:

1. ``closed``: the push wrote when the opening it went in closes (``dial_until``);
   once that has passed, its removal is queued like any other (tried until it lands,
   never a dead letter), carrying the lead as it was, marked ``withdrawn =
   "window_closed"`` so the sink takes it out and the audit says why (``gate.withdrawn``).
2. ``withdrawn``: once the dialer confirmed the removal, the lead is held
   (``gate.held``) until the window's next opening; then the push-time gate sends it
   again, as it would a new lead.
3. A lead dialled to a final result meanwhile (an outcome since its delivery says
   ``connected`` or ``closed``) is neither withdrawn nor sent again
   (``gate.not_returned``); checked again when its opening comes (``returning``), so a
   call record polled overnight still counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import orjson
import structlog

from syncd.core.audit import Facts, numbers_of
from syncd.core.gate import RouteWindow, Verdict, calling_decision, lead_zones, zone_info
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
    moves = WindowMoves()
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
            marked = lead_to_json(replace(lead, withdrawn=WINDOW_CODE))
            facts = _facts(ctx, lead, numbers, "delete", withdrawn=WINDOW_CODE)
            moves.withdraw.append((row.key, marked, facts))
        elif row.stage == WITHDRAWN:
            decision = calling_decision(numbers, lead.zone, ctx.windows, at)
            # Open again already (the removal landed late) or never: the push-time gate
            # decides at once, as for any lead.
            until = decision.until if decision.verdict is Verdict.HOLD else None
            zones = decision.zones or _zones(ctx, lead, numbers)
            moves.back.append(
                (
                    row.key,
                    lead_to_json(replace(lead, withdrawn="")),
                    until.timestamp() if until is not None else now,
                    _held(until, zones),
                    _facts(ctx, lead, numbers, "upsert", zones=zones),
                )
            )
    return moves


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


def _held(until: datetime | None, zones: Sequence[str]) -> str:
    """Return the hold reason of a withdrawn lead waiting for the next opening."""
    reason = f"held ({WINDOW_CODE}): withdrawn from the dialer at its calling window's close"
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
    withdrawn: str = "",
    zones: Sequence[str] = (),
) -> str:
    return Facts(
        numbers=numbers,
        zones=tuple(zones) or _zones(ctx, lead, numbers),
        code=WINDOW_CODE,
        policy=ctx.policy,
        action=action,
        withdrawn=withdrawn,
    ).to_json()
