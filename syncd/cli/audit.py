"""`syncd audit`: every safety-gate decision and every push, in UTC and the lead's time.

What a compliance officer asks for after a complaint: when was this number sent to
which dialer, held, blocked, withdrawn (and what the dialer answered), under which
rule and which version of the gate's settings, and what time it was where the
person lives. CSV (spreadsheet formulas defused) or JSON lines.

The rows hold phone numbers: the audit is for an operator with access to the store.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import re
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from syncd.cli.common import ALL_SECTIONS, require_store, settings_of
from syncd.cli.exits import EXIT_OK
from syncd.config import Settings
from syncd.core.audit import Facts, list_of
from syncd.core.csvsafe import neutralise
from syncd.core.gate import lead_zones, zone_info
from syncd.core.reconcile import block_code
from syncd.errors import ConfigError
from syncd.state import open_store

COLUMNS = [
    "at_utc",
    "at_local",
    "zones",
    "sink",
    "key",
    "numbers",
    "decision",
    "event",
    "rule",
    "reason",
    "policy_version",
    "dnc_list",
    "list_version",
    "call_at_from",
    "call_at_to",
    "dialer_answer",
]
FORMATS = ("csv", "jsonl")
_NUMBERS = re.compile(r"^\+[0-9]+( \+[0-9]+)*$")  # E.164 numbers: nothing a sheet runs
_GATE_WORD = re.compile(r"^(blocked|held) \(")


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


def decision_of(kind: str, facts: Facts) -> str:
    """Return what an event means for the person: pushed, held, blocked, withdrawn…"""
    removal = facts.action == "delete"
    if kind == "push.delivered" and removal:
        return "withdrawn" if facts.withdrawn else "removed"
    if kind == "push.waits":
        return "removal_waiting" if removal else "set_aside"
    if kind == "push.rejected" and facts.code:
        return "blocked"  # the gate refused it at push time (a window that never opens)
    return {
        "gate.held": "held",
        "gate.blocked": "blocked",
        "gate.withdrawn": "withdrawal_queued",
        "gate.not_returned": "not_returned",
        "gate.released": "released",
        "gate.call_at_moved": "call_at_moved",
        "push.delivered": "pushed",
        "push.rejected": "refused_by_dialer",
        "push.retry": "retry",
        "push.failed": "failed",
        "push.cancelled": "cancelled",
    }.get(kind, kind)


def audit_record(row: dict[str, Any], fallback: dict[str, str]) -> dict[str, Any]:
    """Return one audit record (the COLUMNS, numbers and zones as lists) of a stored event.

    The facts written with the decision come first; an event written before facts
    existed (or a removal, whose record names no number) reads the lead's earlier
    facts, then what the store holds of the lead.
    """
    facts = Facts.from_json(row.get("facts"))
    known = Facts.from_json(row.get("known"))
    lead = json.loads(row["lead_json"]) if row.get("lead_json") else {}
    numbers = facts.numbers or known.numbers
    zones = facts.zones or (known.zones if not facts.numbers else ())
    if not numbers:
        numbers = tuple(n for n in (lead.get("phone", ""), *(lead.get("alt_phones") or ())) if n)
    if not zones:
        zones = lead_zones(list(numbers), lead.get("zone", ""), fallback.get(row["sink"], "UTC"))
    at = datetime.fromtimestamp(row["at"], UTC)
    detail = row["detail"] or ""
    rule = facts.code or facts.withdrawn
    if not rule and _GATE_WORD.match(detail):
        rule = block_code(detail.replace("held (", "blocked (", 1))
    return {
        "at_utc": at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "at_local": [at.astimezone(zone_info(z)).strftime("%Y-%m-%d %H:%M:%S %Z") for z in zones],
        "zones": list(zones),
        "sink": row["sink"],
        "key": row["key"],
        "numbers": list(numbers),
        "decision": decision_of(row["kind"], facts),
        "event": row["kind"],
        "rule": rule,
        "reason": detail,
        "policy_version": facts.policy,
        "dnc_list": facts.dnc_list or list_of(rule),
        "list_version": facts.list_version,
        "call_at_from": facts.call_at_from,
        "call_at_to": facts.call_at_to,
        "dialer_answer": facts.reply,
    }


async def audit_records(
    rows: AsyncIterator[dict[str, Any]], fallback: dict[str, str]
) -> AsyncIterator[dict[str, Any]]:
    async for row in rows:
        yield audit_record(row, fallback)


def csv_cells(record: dict[str, Any]) -> list[str]:
    """Return a record as CSV cells: lists joined, formulas defused (numbers left readable)."""
    cells = []
    for name in COLUMNS:
        value = record[name]
        if isinstance(value, list):
            value = ("; " if name == "at_local" else " ").join(value)
        text = str(value)
        cells.append(text if name == "numbers" and _NUMBERS.match(text) else neutralise(text))
    return cells


async def write_audit(
    store: Any,
    settings: Settings,
    since: datetime,
    until: datetime | None,
    out: TextIO,
    fmt: str = "csv",
) -> int:
    """Write the audit from ``since`` (to ``until``, or now) as CSV or JSON lines; return
    the records written."""
    end = until or datetime.now(UTC) + timedelta(seconds=1)
    writer = csv.writer(out) if fmt == "csv" else None
    if writer is not None:
        writer.writerow(COLUMNS)
    n = 0
    # Closed here, before the store is, whatever stops the writing (a reader gone).
    async with contextlib.aclosing(store.audit(since.timestamp(), end.timestamp())) as rows:
        async for record in audit_records(rows, fallback_zones(settings)):
            if writer is not None:
                writer.writerow(csv_cells(record))
            else:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n


def default_since() -> datetime:
    """Return the start of today (UTC): `syncd audit` without --since."""
    today = datetime.now(UTC).date()
    return datetime(today.year, today.month, today.day, tzinfo=UTC)


def cmd_audit(args: argparse.Namespace) -> int:
    """Write the audit trail (CSV or JSON lines): holds, blocks, withdrawals, pushes."""
    settings = settings_of(args, without_secrets=ALL_SECTIONS)
    since = parse_day(args.since, "--since") if args.since else default_since()
    until = parse_day(args.until, "--until") if args.until else None
    require_store(settings)

    async def go() -> int:
        store = await open_store(settings.state)
        try:
            return await write_audit(store, settings, since, until, sys.stdout, args.format)
        finally:
            await store.close()

    n = asyncio.run(go())
    print(f"{n} event(s) from {since.isoformat()}", file=sys.stderr)
    return EXIT_OK
