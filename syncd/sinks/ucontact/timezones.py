"""Which time zone a lead is uploaded with (``Dialers/uploadbasewithtimezone``), pure.

The seed says the ``timezone`` values are in "uContact Timezones"; syncd sends IANA
names (``America/Montevideo``), the names the gate decides calling windows in.

A lead whose numbers lie in several zones had its window checked in all of them
(``QueuedLead.dial_zones``) and went only while it was open in every one; uContact
takes one zone per upload, in which it applies the campaign's own calling hours.
With the same hours everywhere, the window closes first where the clock is furthest
ahead: that zone is sent, so the campaign stops dialling the lead no later than
syncd withdraws it (``syncd.run.window``). Equal offsets: the first name in
alphabetical order, so a lead always goes with the same zone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def upload_zone(
    zones: Sequence[str], fallback: str | None, at: datetime | None = None
) -> str | None:
    """Return the zone to upload a lead with: of ``zones``, the one closing first at ``at``
    (see module doc); ``fallback`` (the sink's ``timezone``) when it has none."""
    when = at or datetime.now(UTC)
    offsets = [(offset, zone) for zone in zones if (offset := _offset(zone, when)) is not None]
    if not offsets:
        return fallback
    return min(offsets, key=lambda pair: (-pair[0], pair[1]))[1]


def _offset(zone: str, at: datetime) -> timedelta | None:
    try:
        return at.astimezone(ZoneInfo(zone)).utcoffset()
    except (ZoneInfoNotFoundError, ValueError):
        return None
