"""Whether ``server_timezone`` is the uContact server's own clock, pure.

The server reads the dates syncd sends (a window's ``calldatei``/``calldatef``, a
callback's ``calldate``) and writes those of its call records in its local time,
which syncd converts with ``server_timezone``. Set to another zone, every date is
that many hours off: a window of 09:00 to 18:00 reaches the dialer as 03:30 to
12:30, and a call just placed reads as hours before its lead was sent (taken for
not dialled, the lead is sent again). ``Supervisor/queuesummary`` dates its answer
(``dateReceived``, ``Nov 2, 2018 11:31:42 AM``) in that local time: against the time
the answer came, it shows the server's offset from UTC now.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

DATE_RECEIVED = "%b %d, %Y %I:%M:%S %p"
# Two clocks kept by NTP differ by seconds; zones differ by 15 minutes at least
# (Kathmandu's +05:45 against Kolkata's +05:30). More apart than this, the dates syncd
# sends would be rung that far off: another zone, or the server's clock is wrong.
TOLERANCE = timedelta(minutes=7)
QUARTER = 15 * 60
# An offset this close to a quarter hour is a zone's (clocks a little apart); further
# from every one, it is a clock that is wrong.
DRIFT = timedelta(minutes=3)


def date_received(body: Any) -> datetime | None:
    """Return the first ``dateReceived`` of a queuesummary answer, naive (the server's
    local time); None when it has none that reads as a date."""
    items: Iterable[Any] = body if isinstance(body, list) else [body]
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("dateReceived"), str):
            try:
                return datetime.strptime(item["dateReceived"].strip(), DATE_RECEIVED)
            except ValueError:
                continue
    return None


def read_clock(body: Any, zone: str, now: datetime) -> tuple[bool, str | None]:
    """Return whether a queuesummary answer is dated, and why ``zone`` is not the clock
    of the server that gave it at ``now`` (None when it is, or when it is undated)."""
    local = date_received(body)
    if local is None:
        return False, None
    return True, zone_mismatch(local, now, zone)


def offset_text(offset: timedelta) -> str:
    """Return an offset from UTC as ``UTC+05:30``."""
    minutes = round(offset.total_seconds() / 60)
    sign = "-" if minutes < 0 else "+"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def zone_mismatch(local: datetime, now: datetime, zone: str) -> str | None:
    """Return why ``zone`` is not the clock of a server whose local time read ``local``
    at ``now`` (aware), None when it is."""
    seen = local - now.astimezone(UTC).replace(tzinfo=None)
    expected = now.astimezone(ZoneInfo(zone)).utcoffset() or timedelta()
    if abs(seen - expected) <= TOLERANCE:
        return None
    shown = timedelta(seconds=round(seen.total_seconds() / QUARTER) * QUARTER)
    if shown == expected or abs(seen - shown) > DRIFT:  # no zone's offset: a clock is off
        way = "ahead of" if seen > expected else "behind"
        return (
            f"the dialer's clock is {_span(seen - expected)} {way} this host's: the dates "
            "syncd sends and reads would be that far off (a window would ring outside its "
            "hours); fix the server's clock (NTP), or this host's"
        )
    return (
        f"the dialer's clock reads {offset_text(shown)} but server_timezone = {zone!r} is "
        f"{offset_text(expected)} now: the dates syncd sends and reads would be "
        f"{_span(shown - expected)} off (a window would ring outside its hours); "
        "set server_timezone to the server's zone (or fix the server's clock)"
    )


def _span(delta: timedelta) -> str:
    """Return a duration as ``5 h 30 min``, ``2 h`` or ``45 min``."""
    minutes = abs(round(delta.total_seconds() / 60))
    hours, rest = divmod(minutes, 60)
    if not hours:
        return f"{rest} min"
    return f"{hours} h {rest:02d} min" if rest else f"{hours} h"
