"""Call outcomes from getProcessData rows: which fields mean what, and what a status means.

Pure functions, no I/O: the poller (``poller.py``) feeds rows in and stores what
comes out. The rows follow the process's form template, so the field names come
from the sink's ``outcomes.fields`` setting.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from syncd.core.model import CallStatus, Outcome
from syncd.sinks.jodo.client import from_jodo_time
from syncd.sinks.jodo.config import OutcomeSettings

# Raw statuses seen on Jodo processes (compared lower-case, trimmed). A sink's
# ``outcomes.status_map`` adds to and overrides these.
DEFAULT_STATUS_MAP: dict[str, CallStatus] = {
    "new": CallStatus.PENDING,
    "fresh": CallStatus.PENDING,
    "fresh call": CallStatus.PENDING,
    "pending": CallStatus.PENDING,
    "queued": CallStatus.PENDING,
    "1001": CallStatus.PENDING,  # the document's "Fresh Call"
    "connected": CallStatus.CONNECTED,
    "answered": CallStatus.CONNECTED,
    "success": CallStatus.CONNECTED,
    "no answer": CallStatus.NO_ANSWER,
    "noanswer": CallStatus.NO_ANSWER,
    "not answered": CallStatus.NO_ANSWER,
    "na": CallStatus.NO_ANSWER,
    "system sent na": CallStatus.NO_ANSWER,
    "busy": CallStatus.BUSY,
    "failed": CallStatus.FAILED,
    "invalid number": CallStatus.FAILED,
    "congestion": CallStatus.FAILED,
    "network error": CallStatus.FAILED,
    "dropped": CallStatus.DROPPED,
    "abandoned": CallStatus.DROPPED,
    "callback": CallStatus.SCHEDULED,
    "call back": CallStatus.SCHEDULED,
    "scheduled": CallStatus.SCHEDULED,
    "closed": CallStatus.CLOSED,
    "completed": CallStatus.CLOSED,
    "disposed": CallStatus.CLOSED,
    "dnc": CallStatus.CLOSED,
}


class StatusMapper:
    """Maps a raw Jodo status onto CallStatus: the sink's table over the built-in one."""

    def __init__(self, extra: dict[str, CallStatus]) -> None:
        self.table = dict(DEFAULT_STATUS_MAP)
        self.table.update({_norm(k): v for k, v in extra.items()})

    def __call__(self, raw: str) -> CallStatus:
        """Return the CallStatus for ``raw``; UNKNOWN when nobody said what it means."""
        return self.table.get(_norm(raw), CallStatus.UNKNOWN)


def _norm(text: str) -> str:
    return " ".join(str(text).lower().split())


def _text(row: dict[str, Any], name: str) -> str:
    value = row.get(name)
    return "" if value is None else str(value).strip()


def _int(text: str) -> int | None:
    try:
        return int(float(text)) if text else None
    except ValueError:
        return None


def worked(row: dict[str, Any], settings: OutcomeSettings) -> bool:
    """Return True when a row may report an outcome: any of its outcome fields holds text.

    A record stored but not dialled yet has none. A poll's window holds every record
    stored in it (a whole import, for the width of the overlap), so these are dropped
    before they are matched to leads; :func:`build_outcome` still decides for the rest.
    """
    f = settings.fields
    if _int(_text(row, f.attempts)):  # "0" attempts, as some servers write it: not yet
        return True
    return any(_text(row, name) for name in (f.status, f.disposition, f.call_id, f.last_call))


def build_outcome(
    row: dict[str, Any],
    *,
    sink: str,
    key: str,
    settings: OutcomeSettings,
    mapper: StatusMapper,
    zone: str,
    observed_at: datetime,
) -> Outcome | None:
    """Return the Outcome a row reports, or None when the dialer has not worked it yet."""
    f = settings.fields
    raw_status = _text(row, f.status)
    disposition = _text(row, f.disposition)
    attempts = _int(_text(row, f.attempts))
    call_id = _text(row, f.call_id)
    last = from_jodo_time(row.get(f.last_call), zone, [settings.last_call_format])
    if not (raw_status or disposition or attempts or call_id or last):
        return None  # stored but never dialled: nothing to report
    if raw_status:
        status = mapper(raw_status)
    else:
        status = CallStatus.UNKNOWN
    return Outcome(
        sink=sink,
        key=key,
        observed_at=observed_at,
        status=status.value,
        raw_status=raw_status,
        disposition=disposition,
        attempts=attempts,
        last_dialed_at=last,
        agent=_text(row, f.agent),
        call_id=call_id,
        raw=dict(row),
    )


def outcome_to_json(o: Outcome) -> dict[str, Any]:
    """Return an Outcome as JSON-ready data (kept while its recording is awaited)."""
    return {
        "key": o.key,
        "status": o.status,
        "raw_status": o.raw_status,
        "disposition": o.disposition,
        "attempts": o.attempts,
        "last_dialed_at": o.last_dialed_at.isoformat() if o.last_dialed_at else None,
        "agent": o.agent,
        "call_id": o.call_id,
        "raw": o.raw,
    }


def outcome_from_json(sink: str, data: dict[str, Any], observed_at: datetime) -> Outcome:
    """Return the Outcome :func:`outcome_to_json` produced, observed again now."""
    last = data.get("last_dialed_at")
    return Outcome(
        sink=sink,
        key=str(data["key"]),
        observed_at=observed_at,
        status=str(data.get("status", CallStatus.UNKNOWN.value)),
        raw_status=str(data.get("raw_status", "")),
        disposition=str(data.get("disposition", "")),
        attempts=data.get("attempts"),
        last_dialed_at=datetime.fromisoformat(last) if last else None,
        agent=str(data.get("agent", "")),
        call_id=str(data.get("call_id", "")),
        raw=dict(data.get("raw") or {}),
    )
