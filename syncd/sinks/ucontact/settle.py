"""When a lead may go (back) into a uContact campaign: the rules, pure, no I/O.

A call that got no answer may still take effect: the server carries it out after
the client gave up waiting. An upload landing late would put a number in the dial
list a second time; a removal landing late would take out the contact added after
it. So while such a call may still land (``settle_s`` after the client gave up on
it), the lead is not added; after that, whatever the dialer may hold of it is
removed (answered ``1``) before it is added again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from syncd.sinks.ucontact.ledger import ADD, DNC, MAYBE, NO, Placed


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do before a lead is added (or deleted)."""

    wait_until: float | None = None  # not before then: a late effect may still land
    remove: bool = False  # the record's number may be in the dialer: remove it first
    record: Placed | None = None  # the record rewritten: store it before acting


def settled(placed: Placed, now: float, *, timeout_s: float, settle_s: float) -> Placed:
    """Return the record with a deadline for a call whose outcome was never written.

    Such a call was cut short by a crash. Its client gave up at the latest when its
    timeout ran out, or when the process stopped (before ``now``); its effect is
    taken to have landed ``settle_s`` after that.
    """
    if placed.late is None or placed.until is not None:
        return placed
    sent = placed.at if placed.at is not None else now
    return replace(placed, held=MAYBE, until=min(now, sent + timeout_s) + settle_s)


def plan_add(placed: Placed, now: float, *, timeout_s: float, settle_s: float) -> Plan:
    """Return the plan for (re)adding a lead the ledger has a record of."""
    record = settled(placed, now, timeout_s=timeout_s, settle_s=settle_s)
    changed = record if record is not placed else None
    if record.late is not None and record.until is not None and record.until > now:
        return Plan(wait_until=record.until, record=changed)
    return Plan(remove=_maybe_held(record), record=changed)


def plan_delete(placed: Placed, now: float, *, timeout_s: float, settle_s: float) -> Plan:
    """Return the plan for taking a lead out.

    Only a late *add* is waited for (it would land after the removal); a removal
    landing late does what a delete wants.
    """
    record = settled(placed, now, timeout_s=timeout_s, settle_s=settle_s)
    changed = record if record is not placed else None
    if record.late == ADD and record.until is not None and record.until > now:
        return Plan(wait_until=record.until, record=changed)
    return Plan(remove=_maybe_held(record), record=changed)


def _maybe_held(record: Placed) -> bool:
    # A blacklisted lead was never placed in the dial list.
    return record.mode != DNC and record.held != NO
