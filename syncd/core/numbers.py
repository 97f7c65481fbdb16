"""One dialer record per number, and removals that close only the lead removed (pure).

Two CRM leads often share a number (a household, an office switchboard). A dialer
rings numbers, not CRM keys, so:

- **duplicates**: with a sink's ``duplicates = "one_per_number"`` (the default), at
  most one live record per main number goes to that dialer; the others are *set
  aside* (held, reason code ``same_number``) and take over when the holder leaves.
- **removals by number**: where a vendor closes a number rather than a record (Jodo's
  ``saveDisposition`` names a ``contactvalue``), a removal whose number another live
  lead still holds (as main or alternate number) *waits* (held, reason code
  ``removal_waits``) instead of closing that lead too; it goes out once the last
  holder leaves.

Both decisions read the same facts — who else on the sink holds a number — and are
made here without I/O; ``run/push.py`` applies them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

DuplicatePolicy = Literal["one_per_number", "allow"]

SAME_NUMBER = "same_number"
REMOVAL_WAITS = "removal_waits"


@dataclass(frozen=True, slots=True)
class Holder:
    """Another lead of the same sink that holds a number."""

    key: str
    state: str  # pending | inflight | held | delivered
    in_dialer: bool  # the dialer holds some version of it (delivered once)
    phone: str
    alt_phones: tuple[str, ...] = ()

    def numbers(self) -> tuple[str, ...]:
        return (self.phone, *self.alt_phones) if self.phone else self.alt_phones


@dataclass(frozen=True, slots=True)
class Wait:
    """A lead that must not go now: who it waits for, and why (a ``held (code)`` text)."""

    key: str
    waits_for: str
    reason: str


@dataclass(frozen=True, slots=True)
class Candidate:
    """A lead of the batch being pushed, as these decisions see it."""

    key: str
    phone: str
    in_dialer: bool  # the dialer already holds a version (an update, not a new record)


def holds_live(holder: Holder, key: str) -> bool:
    """Return whether ``holder`` counts as the dialer's record of its number against ``key``.

    A lead the dialer holds counts. A lead not yet delivered counts while it is queued
    or being sent, and then only against a later key: whoever claims them, and in
    whatever order (two replicas claim apart), the earlier key of a number goes and the
    later waits — and two leads never set each other aside.
    """
    if holder.in_dialer:
        return True
    return holder.state in ("pending", "inflight") and holder.key < key


def set_aside(
    batch: Sequence[Candidate], holders: Sequence[Holder], *, sink: str
) -> dict[str, Wait]:
    """Return the leads of ``batch`` to set aside because another lead holds their number.

    ``holders`` are the sink's other leads holding the batch's numbers (none of the
    batch). A lead the dialer already holds is never set aside (the update is
    harmless); among the batch's new leads, the first with a number takes it.
    """
    taken: dict[str, str] = {}  # number -> the batch's lead that takes it
    waits: dict[str, Wait] = {}
    # By number, in their order: a batch's leads each scanned every holder, and where many
    # leads share numbers (a CRM's placeholder number, a call center's switchboard) a
    # push of 500 leads against thousands of holders spent most of its time here.
    by_phone: dict[str, list[Holder]] = {}
    for h in holders:
        by_phone.setdefault(h.phone, []).append(h)
    for lead in batch:
        if not lead.phone:
            continue
        holder_key = next(
            (
                h.key
                for h in by_phone.get(lead.phone, ())
                if h.key != lead.key and holds_live(h, lead.key)
            ),
            None,
        )
        if holder_key is None:
            holder_key = taken.get(lead.phone)
        if holder_key is None or lead.in_dialer:
            taken.setdefault(lead.phone, lead.key)
            continue
        waits[lead.key] = Wait(
            lead.key,
            holder_key,
            f"held ({SAME_NUMBER}): same number as lead {holder_key}, which {sink} holds or "
            "is being sent first; it takes over when that lead leaves",
        )
    return waits


def removal_waits(
    key: str, numbers: Sequence[str], holders: Sequence[Holder], *, sink: str
) -> Wait | None:
    """Return why the removal of ``key`` must wait, None when it may close its number(s).

    ``numbers`` are the E.164 numbers the vendor's removal would close; any other lead
    the dialer holds (or is being sent) under one of them, as main or alternate
    number, would be closed with it.
    """
    wanted = set(numbers)
    for holder in holders:
        if holder.key == key or not (holder.in_dialer or holder.state == "inflight"):
            continue
        if wanted.intersection(holder.numbers()):
            return Wait(
                key,
                holder.key,
                f"held ({REMOVAL_WAITS}): not withdrawn from {sink}: the number is also lead "
                f"{holder.key}'s, still live; the removal goes out when that lead leaves",
            )
    return None
