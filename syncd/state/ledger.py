"""A sink's ledger: what it remembers of each lead at its dialer, one row per lead.

Some dialers give a contact no id of their own (uContact: a contact is a number in a
campaign), so their sink remembers what it put there: the number and its form, how
it went out, whether an add or a removal may still land, the call ids it counted.
Others give one (Ameyo: a customer id) but their sink must still know what it sent
(a digest of the record, the callback time, until when the dialer may dial it).
The store keeps these in typed columns keyed by (sink, lead key), and a number ->
lead index; a lead's ledger goes with the lead. What each field means is the sink's
(``syncd/sinks/ucontact/ledger.py``, ``syncd/sinks/ameyo/ledger.py``): the store
only keeps them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Placement:
    """What a sink last put (or tried to put) in its dialer for one lead."""

    number: str  # the dial string sent
    alternatives: tuple[str, ...] = ()
    mode: str | None = None
    schedule: str | None = None  # when the call was scheduled for, in the sink's words
    held: str | None = None  # does the dialer hold it, in the sink's words
    late: str | None = None  # a call whose effect may still land
    late_at: float | None = None  # when that call went out (epoch seconds)
    late_until: float | None = None  # when its effect is taken to have landed
    sent_hash: str | None = None  # what the last add carried: a lead version, a digest
    sent_at: float | None = None  # when that add went out
    check_at: float | None = None  # when the dialer's records may be trusted about it
    ref: str | None = None  # the dialer's own id for what it holds (a customer id)
    valid_until: str | None = None  # until when it may be dialled, in the dialer's words


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One lead's ledger: its placement (None: nothing placed) and the calls counted."""

    placement: Placement | None
    calls: tuple[str, ...] = ()  # the call ids already counted for the lead
    newest_call: float | None = None  # the call time the lead's outcome is from (epoch)
    disposition: str | None = None  # a digest of the disposition last sent


class SinkLedger(Protocol):
    """The store's ledger of sinks' leads (implemented by the SQLite and PostgreSQL stores)."""

    async def ledger_get(self, sink: str, key: str) -> LedgerRow | None: ...

    async def ledger_place(
        self, sink: str, key: str, placement: Placement, numbers: Sequence[str] = ()
    ) -> None:
        """Record ``placement`` for the lead and point each of ``numbers`` at it."""
        ...

    async def ledger_place_many(
        self, sink: str, placements: Sequence[tuple[str, Placement, Sequence[str]]]
    ) -> None:
        """Record each (key, placement, numbers) as ``ledger_place`` does, in order (the
        last lead placed under a number owns it), in one transaction: a whole upload's."""
        ...

    async def ledger_forget(self, sink: str, key: str, numbers: Sequence[str]) -> None:
        """Drop the lead's placement and those of ``numbers`` that still point at it."""
        ...

    async def ledger_owner(self, sink: str, number: str) -> str | None:
        """Return the key of the lead ``number`` points at, if any."""
        ...

    async def ledger_set_calls(self, sink: str, key: str, calls: Sequence[str]) -> None: ...

    async def ledger_set_newest_call(self, sink: str, key: str, at: float) -> None: ...

    async def ledger_set_disposition(self, sink: str, key: str, digest: str) -> None: ...


def placement_row(p: Placement) -> tuple[Any, ...]:
    """Return the placement's columns, in the order of the statement ``ledger_place``."""
    alternatives = json.dumps(list(p.alternatives)) if p.alternatives else None
    return (
        p.number, alternatives, p.mode, p.schedule, p.held, p.late, p.late_at,
        p.late_until, p.sent_hash, p.sent_at, p.check_at, p.ref, p.valid_until,
    )  # fmt: skip


def ledger_row(row: Sequence[Any]) -> LedgerRow:
    """Return a row of the statement ``ledger_get`` as a :class:`LedgerRow`."""
    number, alternatives, mode, schedule, held, late, late_at, late_until = row[:8]
    sent_hash, sent_at, check_at, calls, newest_call, disposition, ref, valid_until = row[8:16]
    placement = (
        Placement(
            number=str(number),
            alternatives=tuple(_texts(alternatives)),
            mode=mode,
            schedule=schedule,
            held=held,
            late=late,
            late_at=_float(late_at),
            late_until=_float(late_until),
            sent_hash=sent_hash,
            sent_at=_float(sent_at),
            check_at=_float(check_at),
            ref=ref,
            valid_until=valid_until,
        )
        if number is not None
        else None
    )
    return LedgerRow(placement, tuple(_texts(calls)), _float(newest_call), disposition)


def _texts(text: str | None) -> list[str]:
    """Return a JSON list of texts (None, or a value that is none: empty)."""
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None
