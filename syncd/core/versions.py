"""Which version of a lead wins: the CRM's change time against the one syncd holds.

A CRM that retries a POST late, a CSV export dropped again, a SQL source re-reading an
old row: each can bring a version of a lead older than the one syncd already took.
With the route's ``map.updated_at`` set, every lead carries the CRM's change time of
its row (``Lead.version_at``, kept in the stored lead's JSON); a row older than the
version held is not applied but listed as superseded. Equal or newer is applied as
any row is; a row or a stored lead without a time decides nothing.

Pure (no I/O), tested with tables of cases (tests/test_version_guard.py).
"""

from __future__ import annotations

from datetime import datetime

import orjson

from syncd.core.model import version_text

OLDER_VERSION = "superseded: an older version than the one syncd holds"


def is_older(given: datetime | None, held: datetime | None) -> bool:
    """Return True when a row's version time is before the one held for its lead.

    Both must be known and aware (any zone): a row without a time, or a lead stored
    without one, is applied as before; an equal time is applied (the CRM wrote it
    again, or a retry of the same version).
    """
    return given is not None and held is not None and given < held


def read_version(text: str | None) -> datetime | None:
    """Return a stored version time; None when there is none, or it is not one (a store
    edited by hand decides nothing rather than blocking the lead)."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def version_of(lead_json: str) -> datetime | None:
    """Return the version time a lead's JSON carries (None: none, or not a lead)."""
    if '"version_at"' not in lead_json:  # most leads: no parse
        return None
    try:
        data = orjson.loads(lead_json)
    except orjson.JSONDecodeError:
        return None
    value = data.get("version_at") if isinstance(data, dict) else None
    return read_version(value) if isinstance(value, str) else None


def older_reason(column: str, given: datetime, held: datetime) -> str:
    """Return the reject reason of a row older than the version held (both times UTC)."""
    return (
        f"{OLDER_VERSION} (column {column!r}: {version_text(given)} is before {version_text(held)})"
    )


def is_older_reason(reason: str) -> bool:
    """Return True for the reason of a row not applied as an older version."""
    return reason.startswith(OLDER_VERSION)
