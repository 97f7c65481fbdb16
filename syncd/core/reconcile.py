"""Reconcile: a pure decision per candidate lead against what the store holds.

No I/O here (hishel's rule): the engine feeds in stored state and applies the
decisions; tests check every case without fixtures.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from syncd.state.base import StoredLead


class Decision(enum.StrEnum):
    NEW = "new"  # never seen: push
    CHANGED = "changed"  # content differs from what we hold: push again
    UNCHANGED = "unchanged"  # same content: nothing to do
    DELETED = "deleted"  # deleted in the CRM (or left the filter) and the dialer has it: remove
    SKIPPED = "skipped"  # deleted, but the dialer never had it: nothing to remove


ACTIVE_STATES = {"pending", "inflight"}


def decide(stored: StoredLead | None, content_hash: str, deleted: bool) -> Decision:
    """Return what to do with a candidate lead given the stored (sink, key) record."""
    if deleted:
        if stored is None or stored.hash == content_hash:
            return Decision.SKIPPED if stored is None else Decision.UNCHANGED
        return Decision.DELETED if stored.delivered else Decision.SKIPPED
    if stored is None:
        return Decision.NEW
    if stored.hash == content_hash:
        return Decision.UNCHANGED
    return Decision.CHANGED


def raw_unchanged(stored: StoredLead | None, raw_hash: str) -> bool:
    """Return True when the raw row is byte-identical to the one that produced the stored lead.

    Such rows skip phone validation entirely: the costliest step of a re-sync.
    """
    return stored is not None and stored.raw_hash == raw_hash


@dataclass(frozen=True, slots=True)
class Superseded:
    """An earlier row of the same file that a later row with the same key replaces."""

    line: int | None
    counted_as: str | None  # the class it was counted under in this run, if any


def superseded_by(
    stored: StoredLead | None, origin: str, run_id: str, line: int
) -> Superseded | None:
    """Return the earlier row this one replaces when the key repeats within one file."""
    if stored is None or stored.origin != origin or stored.line is None or stored.line >= line:
        return None
    counted = stored.klass if stored.run_id == run_id else None
    return Superseded(stored.line, counted)


def decide_repeat(
    previous: str | None, stored: StoredLead, content_hash: str, deleted: bool
) -> Decision:
    """Return the decision for a repeated key: it inherits what the earlier row started.

    A key that was NEW in this file stays NEW however often it repeats: it is one lead.
    """
    if previous == Decision.NEW.value and not deleted:
        return Decision.NEW
    decision = decide(stored, content_hash, deleted)
    if decision is Decision.UNCHANGED and previous in (
        Decision.CHANGED.value,
        Decision.DELETED.value,
    ):
        return Decision(previous)
    return decision
