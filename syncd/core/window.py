"""Calling windows: the hours per weekday (local time) a route's leads may be called,
and the holidays with none. Pure; parsed from the config's ``windows`` (which validates
them with it) and read by the safety gate (``core.gate``) in each lead's zones."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")


@dataclass(frozen=True, slots=True)
class CallingWindow:
    """Calling hours per weekday (local time, end exclusive) and holidays with no calls."""

    hours: tuple[tuple[tuple[int, int], ...], ...]  # 7 weekdays of (start, end) seconds
    holidays: frozenset[date] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, spec: Mapping[str, str], holidays: Iterable[date] = ()) -> CallingWindow:
        """Return the window of ``{"mon-fri": "09:00-20:00", "sat": "10:00-14:00"}``.

        Raise ValueError naming the bad entry. A day not named has no calling hours.
        """
        days: list[list[tuple[int, int]]] = [[] for _ in WEEKDAYS]
        for names, ranges in spec.items():
            for day in _days(names):
                for text in str(ranges).split(","):
                    days[day].append(_seconds_range(text.strip(), names))
        return cls(tuple(tuple(sorted(d)) for d in days), frozenset(holidays))

    def open_at(self, zone: ZoneInfo, at: datetime) -> bool:
        """Return True when ``at`` falls inside the window on the local clock of ``zone``."""
        local = at.astimezone(zone)
        if local.date() in self.holidays:
            return False
        second = local.hour * 3600 + local.minute * 60 + local.second
        return any(start <= second < end for start, end in self.hours[local.weekday()])

    def open_through(self, zone: ZoneInfo, at: datetime, span: timedelta) -> bool:
        """Return True when the whole span from ``at`` to ``at + span`` lies in one opening.

        Checking only both ends would let 11:55 through with 15 minutes asked of a
        09:00-12:00, 12:05-20:00 window: the call would be placed in the gap.
        """
        local = at.astimezone(zone)
        if local.date() in self.holidays:
            return False
        second = local.hour * 3600 + local.minute * 60 + local.second
        for start, end in self.hours[local.weekday()]:
            if start <= second < end:
                # Wall-clock arithmetic, then the offset of that wall time: a window that
                # ends at 20:00 ends at 20:00 local on a daylight-saving change day too.
                midnight = datetime(local.year, local.month, local.day, tzinfo=zone)
                closes = (midnight + timedelta(seconds=end)).astimezone(UTC)
                return at + span <= closes
        return False

    def closes_at(self, zone: ZoneInfo, at: datetime) -> datetime | None:
        """Return (UTC) when the opening ``at`` falls in ends in ``zone`` (None: not open)."""
        local = at.astimezone(zone)
        if local.date() in self.holidays:
            return None
        second = local.hour * 3600 + local.minute * 60 + local.second
        for start, end in self.hours[local.weekday()]:
            if start <= second < end:
                midnight = datetime(local.year, local.month, local.day, tzinfo=zone)
                return (midnight + timedelta(seconds=end)).astimezone(UTC)
        return None

    def openings(self, zone: ZoneInfo, after: datetime, days: int) -> Iterator[datetime]:
        """Yield (UTC) the moments the window opens in ``zone``, from the day of ``after`` on."""
        first = after.astimezone(zone).date() - timedelta(days=1)
        for n in range(days + 2):
            day = first + timedelta(days=n)
            if day in self.holidays:
                continue
            for start, _ in self.hours[day.weekday()]:
                h, rest = divmod(start, 3600)
                local = datetime(day.year, day.month, day.day, h, rest // 60, tzinfo=zone)
                yield local.astimezone(UTC)


def _days(names: str) -> list[int]:
    text = names.strip().lower()
    if text in ("all", "every day", "daily"):
        return list(range(7))
    first, dash, last = text.partition("-")
    if first not in WEEKDAYS or (dash and last not in WEEKDAYS):
        raise ValueError(f"windows: {names!r} is not a weekday or range like mon-fri")
    a = WEEKDAYS.index(first)
    b = WEEKDAYS.index(last) if dash else a
    return [(a + i) % 7 for i in range((b - a) % 7 + 1)]


def _seconds_range(text: str, names: str) -> tuple[int, int]:
    m = _RANGE.match(text)
    if m is None:
        raise ValueError(f"windows.{names}: {text!r} is not a range like 09:00-20:00")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    start, end = h1 * 3600 + m1 * 60, h2 * 3600 + m2 * 60
    if m1 > 59 or m2 > 59 or not 0 <= start < end <= 24 * 3600:
        raise ValueError(f"windows.{names}: {text!r} must start before it ends, within a day")
    return start, end
