"""What syncd put in a uContact campaign, kept in the state store's kv table.

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
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import phonenumbers

from syncd.sinks.ucontact.wire import phone_digits
from syncd.state.base import StateStore

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

    def to_text(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_text(cls, text: str) -> Placed | None:
        try:
            data = json.loads(text)
            held = str(data.get("held") or MAYBE)
            late = data.get("late")
            return cls(
                destination=str(data["destination"]),
                alternatives=[str(a) for a in data.get("alternatives") or []],
                mode=str(data.get("mode") or BASE),
                calldate=data.get("calldate"),
                held=held if held in (YES, NO, MAYBE) else MAYBE,
                late=str(late) if late in (ADD, REMOVE) else None,
                at=_number(data.get("at")),
                until=_number(data.get("until")),
                hash=str(data["hash"]) if data.get("hash") else None,
                added_at=_number(data.get("added_at")),
                check_at=_number(data.get("check_at")),
            )
        except (ValueError, KeyError, TypeError):
            return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


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


class Ledger:
    """Per-sink kv scopes: placed leads, the number index, call ids per lead, poll state."""

    def __init__(self, store: StateStore, sink: str) -> None:
        self.store = store
        self._leads = f"ucontact.{sink}.lead"
        self._phones = f"ucontact.{sink}.phone"
        self._calls = f"ucontact.{sink}.calls"
        self._newest = f"ucontact.{sink}.newest"  # key -> the call date its outcome is from
        self._state = f"ucontact.{sink}"

    async def placed(self, key: str) -> Placed | None:
        """Return what was last placed (or attempted) for ``key``."""
        text = await self.store.kv_get(self._leads, key)
        return Placed.from_text(text) if text else None

    async def place(self, key: str, placed: Placed, numbers: list[str]) -> None:
        """Record ``placed`` for ``key`` and point every form of ``numbers`` at it."""
        await self.store.kv_set(self._leads, key, placed.to_text())
        for form in match_forms(*numbers):
            await self.store.kv_set(self._phones, form, key)

    async def mark(self, key: str, placed: Placed) -> None:
        """Record ``placed`` for ``key``, leaving the number index as it is."""
        await self.store.kv_set(self._leads, key, placed.to_text())

    async def forget(self, key: str, placed: Placed | None, numbers: list[str]) -> None:
        """Drop ``key``'s record and the index entries it still owns."""
        await self.store.kv_set(self._leads, key, None)
        forms = match_forms(*numbers)
        if placed is not None:
            forms += match_forms(placed.destination, *placed.alternatives)
        for form in dict.fromkeys(forms):
            if await self.store.kv_get(self._phones, form) == key:
                await self.store.kv_set(self._phones, form, None)

    async def owner(self, number: str) -> str | None:
        """Return the key that last placed ``number``, if any."""
        digits = phone_digits(number)
        return await self.store.kv_get(self._phones, digits) if digits else None

    async def calls(self, key: str) -> list[str]:
        """Return the call ids (guids) already counted for ``key``."""
        text = await self.store.kv_get(self._calls, key)
        if not text:
            return []
        try:
            value = json.loads(text)
        except ValueError:
            return []
        return [str(v) for v in value] if isinstance(value, list) else []

    async def set_calls(self, key: str, guids: list[str]) -> None:
        await self.store.kv_set(self._calls, key, json.dumps(guids))

    async def newest_call(self, key: str) -> datetime | None:
        """Return the call date of the record ``key``'s outcome was last taken from."""
        text = await self.store.kv_get(self._newest, key)
        try:
            return datetime.fromisoformat(text) if text else None
        except ValueError:
            return None

    async def set_newest_call(self, key: str, when: datetime) -> None:
        await self.store.kv_set(self._newest, key, when.isoformat())

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
