"""Ameyo's reply vocabulary, read without I/O: session errors, result types, call statuses.

Ameyo answers errors with HTTP 200 in several shapes, and the same field with
varying case (``inserted`` / ``Inserted``). Everything that knows those shapes
lives here so the client and the sink stay plain.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from syncd.core.model import CallStatus

SESSION_MARKERS = ("invalid session", "invalid.sessionid", "session expired", "session.expired")

# Whole-request refusals about the campaign's or the user's state, not the records: the
# sink waits and asks again (a supervisor paused the campaign for 20 s, an admin locked
# the user). Compared with dots, dashes and underscores read as spaces.
HOLD_MARKERS: tuple[tuple[str, str], ...] = (
    ("campaign is not running", "the Ameyo campaign is not running"),
    ("campaign not running", "the Ameyo campaign is not running"),
    ("campaign is paused", "the Ameyo campaign is paused"),
    ("campaign paused", "the Ameyo campaign is paused"),
    ("campaign is stopped", "the Ameyo campaign is stopped"),
    ("campaign is not started", "the Ameyo campaign is not started"),
    ("user is locked", "the Ameyo user is locked"),
    ("user locked", "the Ameyo user is locked"),
    ("account is locked", "the Ameyo user is locked"),
)


class Verdict(enum.Enum):
    """What to do with one record's upload result."""

    DELIVERED = "delivered"
    REJECTED = "rejected"
    RETRY = "retry"


RESULT_TYPES: dict[str, Verdict] = {
    "ADDED": Verdict.DELIVERED,
    "UPDATED": Verdict.DELIVERED,
    "MIGRATED": Verdict.DELIVERED,
    "UPDATED_AND_MIGRATED": Verdict.DELIVERED,
    "DUPLICATE_NOT_ADDED": Verdict.DELIVERED,
    "PREPROCESSING_INVALID_LENGTH": Verdict.REJECTED,
    "PREPROCESSOR_NOT_NULLABLE_COLUMN_GIVEN_NULL": Verdict.REJECTED,
    "INVALID_RECORD_FAILED": Verdict.REJECTED,
    "INVALID_CONFIGURATION": Verdict.REJECTED,
    # The customer lives in another lead and migrate.customer is off: it would be
    # dialled there, not in the configured lead, so the user has to decide.
    "NOT_MIGRATED": Verdict.REJECTED,
    "ADD_FAILED": Verdict.RETRY,
    "UPDATE_FAILED": Verdict.RETRY,
    "MIGRATE_FAILED": Verdict.RETRY,
    "UPDATE_AND_MIGRATE_FAILED": Verdict.RETRY,
}

STATUSES: dict[str, CallStatus] = {
    "NOT_TRIED": CallStatus.PENDING,
    "CONNECTED": CallStatus.CONNECTED,
    "TRANSFERRED_TO_CAMPAIGN": CallStatus.CONNECTED,
    "NO_ANSWER": CallStatus.NO_ANSWER,
    "AMD": CallStatus.NO_ANSWER,
    "BUSY": CallStatus.BUSY,
    "CALL_DROP": CallStatus.DROPPED,
    "CALL_HANGUP": CallStatus.DROPPED,
    "CALL_NOT_PICKED": CallStatus.DROPPED,
    "ATTEMPT_FAILED": CallStatus.FAILED,
    "NUMBER_FAILURE": CallStatus.FAILED,
    "NUMBER_TEMP_FAILURE": CallStatus.FAILED,
    "PROVIDER_FAILURE": CallStatus.FAILED,
    "PROVIDER_TEMP_FAILURE": CallStatus.FAILED,
    "SYSTEM_ERROR": CallStatus.FAILED,
    "FAILED": CallStatus.FAILED,
    "SIT_INTERCEPT": CallStatus.FAILED,
    "SIT_VACANT": CallStatus.FAILED,
    "SIT_NOCIRCUIT": CallStatus.FAILED,
    "SIT_REORDER": CallStatus.FAILED,
}


def call_status(raw: str, overrides: Mapping[str, str] | None = None) -> str:
    """Return the vendor-neutral CallStatus value for an Ameyo status."""
    key = raw.strip().upper()
    if overrides and key in overrides:
        return overrides[key]
    return STATUSES.get(key, CallStatus.UNKNOWN).value


def lower_keys(record: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``record`` with lower-cased keys (Ameyo mixes ``inserted`` and ``Inserted``)."""
    return {str(k).lower(): v for k, v in record.items()}


def _texts(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [t for item in value for t in _texts(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _texts(item)]
    return [str(value)]


def error_text(body: Any) -> str | None:
    """Return the error an Ameyo reply carries, or None when it is not an error shape."""
    if not isinstance(body, dict):
        return None
    low = lower_keys(body)
    if str(low.get("status", "")).lower() == "error":
        return str(low.get("reason") or low.get("details") or "error")
    if str(low.get("result", "")).lower().startswith("failed"):
        return exception_text(low.get("comment")) or "Failed."
    if "exception" in str(low.get("type", "")).lower() and "message" in low:
        return str(low["message"])
    return None


def is_session_error(text: str) -> bool:
    """Return True when an error text says the session is gone."""
    flat = text.lower()
    return any(marker in flat for marker in SESSION_MARKERS)


def hold_reason(text: str) -> str | None:
    """Return syncd's words for a refusal about the campaign's or user's state, else None."""
    flat = " ".join(re.sub(r"[._\-]+", " ", text.lower()).split())
    for marker, public in HOLD_MARKERS:
        if marker in flat:
            return public
    return None


def looks_like_login_page(text: str) -> bool:
    """Return True for the HTML login form Ameyo serves when a session has lapsed."""
    flat = text.lower()
    return "password" in flat or "login" in flat or "sign in" in flat


def exception_text(value: Any) -> str:
    """Return ``["CustomerManager.Phone.number.does.not.have.valid.length",13]`` as text."""
    parts = [re.sub(r'[\\"]+$', "", t).strip() for t in _texts(value)]
    parts = [p for p in parts if p]
    if not parts:
        return ""
    head, rest = parts[0], parts[1:]
    return f"{head} ({', '.join(rest)})" if rest else head


def result_reason(record: Mapping[str, Any]) -> str:
    """Return the human reason of one upload result: its type and exception text."""
    low = lower_keys(record)
    result = str(low.get("resulttypestring") or "no result type")
    detail = exception_text(low.get("exception")) or str(low.get("message") or "")
    return f"{result}: {detail}" if detail else result


def result_list(body: Any) -> list[dict[str, Any]] | None:
    """Return the per-record results of an upload reply (a bare list or ``beanResponse``)."""
    if isinstance(body, dict):
        low = lower_keys(body)
        body = low.get("beanresponse")
    if not isinstance(body, list):
        return None
    return [item if isinstance(item, dict) else {} for item in body]


_FORMATS = (
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%b %d, %Y %I:%M:%S %p",
    "%Y-%m-%d %H:%M",
)


def parse_time(value: Any, zone: str) -> datetime | None:
    """Return an Ameyo time (epoch ms, ``2015-03-03 11:29:34.0``, ``Mar 3, 2015 …``) in UTC."""
    if value in (None, ""):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if value > 10**11 else value
        return datetime.fromtimestamp(seconds, UTC)
    text = str(value).strip()
    if text.isdigit():
        return parse_time(int(text), zone)
    text = re.sub(r"\s+[A-Z]{2,5}$", "", text)  # "… IST": the configured zone says which
    for fmt in _FORMATS:
        try:
            naive = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return naive.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(zone))
    return parsed.astimezone(UTC)


def ameyo_time(when: datetime, zone: str) -> str:
    """Return ``when`` as Ameyo's ``YYYY-MM-DD hh:mm:ss`` on the server's clock."""
    return when.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")


def ameyo_validity(when: datetime, zone: str, *, offset: bool = True) -> str:
    """Return ``when`` as a validityTime on the server's clock, with its offset.

    The document shows ``2010-04-13 22:30:00 IST``; a zone abbreviation is ambiguous (IST
    is also Irish and Israeli time, Java reads BST as Bangladesh), ``GMT+05:30`` is not,
    and Java's ``yyyy-MM-dd HH:mm:ss z`` reads both. A server reading no zone reads the
    wall time, which is already its own.
    """
    local = when.astimezone(ZoneInfo(zone))
    text = local.strftime("%Y-%m-%d %H:%M:%S")
    if not offset:
        return text
    minutes = int((local.utcoffset() or timedelta(0)).total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return f"{text} GMT{sign}{hours:02d}:{rest:02d}"


_OFFSET = re.compile(r"^(.*\S)\s+GMT([+-])(\d{2}):(\d{2})$")


def validity_epoch(text: str | None, zone: str) -> float | None:
    """Return a validityTime as ``ameyo_validity`` wrote it (with or without its offset)
    as epoch seconds; None for none or one it cannot read."""
    if not text:
        return None
    found = _OFFSET.match(text.strip())
    if found is None:
        parsed = parse_time(text, zone)
        return parsed.timestamp() if parsed is not None else None
    wall, sign, hours, minutes = found.groups()
    try:
        naive = datetime.strptime(wall, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    offset = timedelta(hours=int(hours), minutes=int(minutes)) * (-1 if sign == "-" else 1)
    return (naive.replace(tzinfo=UTC) - offset).timestamp()
