"""`syncd audit`: every safety-gate decision and every push, in UTC and the lead's time.

What a compliance officer asks for after a complaint: when was this person sent to
which dialer, held, blocked, withdrawn, and what time was it where they live.
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from syncd.config import Settings
from syncd.core.csvsafe import neutralise
from syncd.core.gate import lead_zones, zone_info
from syncd.errors import ConfigError

COLUMNS = ["at_utc", "at_local", "zone", "sink", "key", "event", "detail"]


def parse_day(text: str, option: str) -> datetime:
    """Return ``2026-11-30`` or ``2026-11-30T09:00`` (UTC unless it says) as a UTC datetime."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option}: {text!r} is not a date like 2026-11-30") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def fallback_zones(settings: Settings) -> dict[str, str]:
    """Return, per sink, the zone of its first route: for leads whose number says none."""
    zones: dict[str, str] = {}
    for route in settings.routes:
        zones.setdefault(route.sink, route.timezone)
    return zones


def audit_rows(
    rows: AsyncIterator[dict[str, Any]], fallback: dict[str, str]
) -> AsyncIterator[list[str]]:
    """Yield the audit's lines: the event, with its time in UTC and where the lead lives."""

    async def lines() -> AsyncIterator[list[str]]:
        async for row in rows:
            lead = json.loads(row["lead_json"]) if row["lead_json"] else {}
            numbers = [lead.get("phone", ""), *(lead.get("alt_phones") or ())]
            zones = lead_zones(numbers, lead.get("zone", ""), fallback.get(row["sink"], "UTC"))
            at = datetime.fromtimestamp(row["at"], UTC)
            local = at.astimezone(zone_info(zones[0]))
            where = zones[0] + (f" (+{len(zones) - 1} more)" if len(zones) > 1 else "")
            yield [
                at.strftime("%Y-%m-%d %H:%M:%S UTC"),
                local.strftime("%Y-%m-%d %H:%M:%S %Z"),
                where,
                row["sink"],
                row["key"],
                row["kind"],
                row["detail"] or "",
            ]

    return lines()


async def write_audit(
    store: Any, settings: Settings, since: datetime, until: datetime | None, out: TextIO
) -> int:
    """Write the audit from ``since`` (to ``until``, or now) as CSV; return the lines written."""
    end = until or datetime.now(UTC) + timedelta(seconds=1)
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    n = 0
    rows = store.audit(since.timestamp(), end.timestamp())
    async for line in audit_rows(rows, fallback_zones(settings)):
        writer.writerow([neutralise(cell) for cell in line])
        n += 1
    return n


def default_since() -> datetime:
    """Return the start of today (UTC): `syncd audit` without --since."""
    today = datetime.now(UTC).date()
    return datetime(today.year, today.month, today.day, tzinfo=UTC)
