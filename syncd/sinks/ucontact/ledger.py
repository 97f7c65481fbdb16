"""What syncd put in a uContact campaign, kept in the store's sink ledger.

uContact gives a dialled contact no id of its own: a contact is a number in a
campaign. So the sink remembers, per lead key, the number (and schedule) it last
placed, and whether the dialer holds it: yes (a ``1`` answered the add), no (never
added, refused, or removed with a ``1``), or maybe; also which version of the lead
that add carried and when it went out, so that a re-send of the same version can
first look for the call the add may already have caused (see ``dialled``). Each
add or removal is written *before* its call (``late`` = what the call may still
do, ``at`` = when it went out) and its outcome after, so a crash mid-call leaves a
record that says so. A retry can then remove exactly what the dialer may hold
before sending again, and a removal knows which number to take out even though a
deleted lead carries no phone. A number -> key index lets call records find their
lead; per lead, the call ids counted and the call date its outcome is from (so an
older call written late does not replace a newer call's outcome).

The store keeps these in typed columns, one row per lead that goes with the lead
(:mod:`syncd.state.ledger`); this module gives the columns their meaning. The
sink's own few values (the poll's position, health, agents) stay in ``kv``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import phonenumbers

from syncd.sinks.ucontact.wire import phone_digits
from syncd.state.ledger import Placement, SinkLedger

BASE, TASK, SCHEDULE, DNC = "base", "task", "schedule", "dnc"
YES, NO, MAYBE = "yes", "no", "maybe"  # does the dialer hold the lead's number?
ADD, REMOVE = "add", "remove"  # a call whose effect may land late


@dataclass(slots=True)
class Placed:
    """One lead as the dialer may hold it."""

    destination: str  # the dial string sent
    alternatives: list[str] = field(default_factory=list)
    mode: str = BASE  # base | task | schedule | dnc (blacklisted, never placed)
    calldate: str | None = None  # server-local, for a schedule
    held: str = MAYBE  # yes | no | maybe; records from before this field: maybe
    late: str | None = None  # add | remove: a call that may still take effect
    at: float | None = None  # when that call went out (epoch seconds)
    until: float | None = None  # when its effect is taken to have landed; None: unknown
    hash: str | None = None  # the lead version the last add carried
    added_at: float | None = None  # when that add went out; kept once it is answered
    check_at: float | None = None  # removed to re-send: look for its call records from then

    def to_placement(self) -> Placement:
        return Placement(
            number=self.destination,
            alternatives=tuple(self.alternatives),
            mode=self.mode,
            schedule=self.calldate,
            held=self.held,
            late=self.late,
            late_at=self.at,
            late_until=self.until,
            sent_hash=self.hash,
            sent_at=self.added_at,
            check_at=self.check_at,
        )

    @classmethod
    def from_placement(cls, p: Placement) -> Placed:
        """Return the record the store kept; a value it does not know reads as unknown."""
        held = p.held or MAYBE  # records from before the held field: maybe
        return cls(
            destination=p.number,
            alternatives=list(p.alternatives),
            mode=p.mode or BASE,
            calldate=p.schedule,
            held=held if held in (YES, NO, MAYBE) else MAYBE,
            late=p.late if p.late in (ADD, REMOVE) else None,
            at=p.late_at,
            until=p.late_until,
            hash=p.sent_hash or None,
            added_at=p.sent_at,
            check_at=p.check_at,
        )


def match_forms(*numbers: str) -> list[str]:
    """Return the forms under which a number is indexed: digits, and the national number."""
    forms: list[str] = []
    for number in numbers:
        digits = phone_digits(number)
        if digits:
            forms.append(digits)
        if number.startswith("+"):
            try:
                national = str(phonenumbers.parse(number, None).national_number)
            except phonenumbers.NumberParseException:
                continue
            forms.append(national)
    return list(dict.fromkeys(f for f in forms if f))


class LedgerStore(SinkLedger, Protocol):
    """What the ledger needs of the store: its ledger of leads, and ``kv`` for the
    sink's own few values (not one per lead)."""

    async def kv_get(self, scope: str, name: str) -> str | None: ...
    async def kv_set(self, scope: str, name: str, value: str | None) -> None: ...


class Ledger:
    """One sink's records of its leads, its number index, and its own state."""

    def __init__(self, store: LedgerStore, sink: str) -> None:
        self.store = store
        self.sink = sink
        self._state = f"ucontact.{sink}"  # kv: the poll's position, health, agents

    async def placed(self, key: str) -> Placed | None:
        """Return what was last placed (or attempted) for ``key``."""
        row = await self.store.ledger_get(self.sink, key)
        if row is None or row.placement is None:
            return None
        return Placed.from_placement(row.placement)

    async def place(self, key: str, placed: Placed, numbers: list[str]) -> None:
        """Record ``placed`` for ``key`` and point every form of ``numbers`` at it."""
        forms = match_forms(*numbers)
        await self.store.ledger_place(self.sink, key, placed.to_placement(), forms)

    async def place_many(self, placements: Sequence[tuple[str, Placed, list[str]]]) -> None:
        """Record each (key, placed, numbers) as :meth:`place` does, in one transaction."""
        await self.store.ledger_place_many(
            self.sink, [(key, p.to_placement(), match_forms(*ns)) for key, p, ns in placements]
        )

    async def mark_many(self, marks: Sequence[tuple[str, Placed]]) -> None:
        """Record each (key, placed) as :meth:`mark` does, in one transaction."""
        await self.store.ledger_place_many(
            self.sink, [(key, p.to_placement(), ()) for key, p in marks]
        )

    async def mark(self, key: str, placed: Placed) -> None:
        """Record ``placed`` for ``key``, leaving the number index as it is."""
        await self.store.ledger_place(self.sink, key, placed.to_placement())

    async def forget(self, key: str, placed: Placed | None, numbers: list[str]) -> None:
        """Drop ``key``'s record and the index entries it still owns."""
        forms = match_forms(*numbers)
        if placed is not None:
            forms += match_forms(placed.destination, *placed.alternatives)
        await self.store.ledger_forget(self.sink, key, list(dict.fromkeys(forms)))

    async def owner(self, number: str) -> str | None:
        """Return the key that last placed ``number``, if any."""
        digits = phone_digits(number)
        return await self.store.ledger_owner(self.sink, digits) if digits else None

    async def calls(self, key: str) -> list[str]:
        """Return the call ids (guids) already counted for ``key``."""
        row = await self.store.ledger_get(self.sink, key)
        return list(row.calls) if row else []

    async def set_calls(self, key: str, guids: list[str]) -> None:
        await self.store.ledger_set_calls(self.sink, key, guids)

    async def newest_call(self, key: str) -> datetime | None:
        """Return the call date of the record ``key``'s outcome was last taken from."""
        row = await self.store.ledger_get(self.sink, key)
        if row is None or row.newest_call is None:
            return None
        return datetime.fromtimestamp(row.newest_call, UTC)

    async def set_newest_call(self, key: str, when: datetime) -> None:
        await self.store.ledger_set_newest_call(self.sink, key, when.timestamp())

    async def disposition(self, key: str) -> str | None:
        """Return the digest of the disposition last accepted for ``key``."""
        row = await self.store.ledger_get(self.sink, key)
        return row.disposition if row else None

    async def set_disposition(self, key: str, digest: str) -> None:
        await self.store.ledger_set_disposition(self.sink, key, digest)

    async def get_state(self, name: str) -> dict[str, Any]:
        text = await self.store.kv_get(self._state, name)
        if not text:
            return {}
        try:
            value = json.loads(text)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    async def set_state(self, name: str, value: dict[str, Any]) -> None:
        await self.store.kv_set(self._state, name, json.dumps(value, default=str))
