"""When a simulated dialer would ring a record it holds (issue 25's window sweep asks).

Every simulator's ``holdings()`` rows (``open``) carry the same three fields, so a test
or the sweep bench asks all vendors alike whether a record could be dialled at a moment:

- ``ring_from``: ISO UTC time before which the dialer does not dial it (a callback or
  start time sent with the record); None: from the moment it is stored.
- ``ring_until``: ISO UTC time after which it does not (a validity or expiry time);
  None: no end.
- ``hours_zone``: the zone in which the campaign's own calling hours (``hours``, a
  ``{"mon-fri": "09:00-20:00"}`` spec) apply to it; None: the dialer's hours do not
  apply (the simulator models a campaign dialling around the clock).

A record a removal closed, or one dialled to the end, is not in ``open`` at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from syncd.core.gate import CallingWindow


@dataclass(frozen=True, slots=True)
class RingTimes:
    """What a dialer holds about when it may dial one record (see module doc)."""

    ring_from: datetime | None = None
    ring_until: datetime | None = None
    hours_zone: str | None = None

    def fields(self) -> dict[str, Any]:
        """Return the holdings row's fields for these times."""
        return {
            "ring_from": _iso(self.ring_from),
            "ring_until": _iso(self.ring_until),
            "hours_zone": self.hours_zone,
        }


def _iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).isoformat() if when is not None else None


def would_ring(
    row: Mapping[str, Any], at: datetime, hours: Mapping[str, str] | None = None
) -> bool:
    """Return True when the dialer could dial the open holdings ``row`` at ``at``.

    ``hours``: the campaign's calling hours, applied in the row's ``hours_zone``.
    """
    start, end = row.get("ring_from"), row.get("ring_until")
    if start is not None and at < datetime.fromisoformat(start):
        return False
    if end is not None and at >= datetime.fromisoformat(end):
        return False
    zone = row.get("hours_zone")
    if zone and hours:
        return CallingWindow.parse(dict(hours)).open_at(ZoneInfo(zone), at)
    return True
