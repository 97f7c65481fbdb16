"""Old numbers left dialable: a lead whose number changed, at a dialer that still holds a
record under the old one and whose sink cannot close it.

A sink says so per lead (``PushResult.left_open``: what to do, in its words). The number
may be someone else's now, and only a person at the dialer can remove that record, so
the alert stands, run after run, in `syncd status`, /readyz, the metrics and the
`--once` exit code, until someone says it was dealt with (`syncd ack`). Nothing here
tells when the dialer let the record go: no dialer's API that needs this can.

Kept in ``kv``, one row per lead (scope ``numbers.left.<sink>``, name the lead's key):
rare (a number changing at such a dialer), and read by scope in key order. No number is
kept: the key, when, and the sink's words.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from syncd.config import Settings
from syncd.core.model import PushResult
from syncd.core.reasons import shown_key
from syncd.state.base import Notes

SCOPE = "numbers.left"
SHOWN = 20  # alerts status lists per sink; the count covers all
COUNTED = 10_000  # the most the metrics count per sink
ACK = "syncd ack --sink {sink} --key KEY (or --all)"
AND = "; and "  # between the actions of one lead's several former records


def scope_of(sink: str) -> str:
    return f"{SCOPE}.{sink}"


@dataclass(frozen=True)
class NumberLeft:
    """One lead's alert: the dialer holds it under a former number as well."""

    sink: str
    key: str
    since: float  # when a sink first said so (epoch)
    at: float  # when it last said so
    action: str  # what to do, in the sink's words

    def to_dict(self) -> dict[str, Any]:
        return {
            "sink": self.sink,
            "key": self.key,
            "since": self.since,
            "at": self.at,
            "action": self.action,
        }


def left_open(results: Iterable[PushResult]) -> list[PushResult]:
    """Return the results whose lead the dialer still holds under a former number."""
    return [r for r in results if r.left_open]


async def record(store: Notes, sink: str, found: Sequence[PushResult], now: float) -> None:
    """Keep an alert for each lead of ``found``. One standing keeps its ``since`` and what
    it said to do: a lead renumbered again before the ack leaves a record per former
    number (Ameyo: a customer each), and each must be removed."""
    scope = scope_of(sink)
    for result in found:
        before = await store.kv_get(scope, result.key)
        action = result.left_open
        if before:
            standing = _read(sink, result.key, before)
            since, action = standing.since, joined(standing.action, action)
        else:
            since = now
        alert = NumberLeft(sink, result.key, since, now, action)
        await store.kv_set(scope, result.key, json.dumps(alert.to_dict()))


def joined(before: str, now: str) -> str:
    """Return what to do about a lead's former records: each action once, in order."""
    said = before.split(AND) if before else []
    return AND.join(said if now in said else [*said, now])


async def standing(store: Notes, sink: str, limit: int = SHOWN) -> list[NumberLeft]:
    """Return up to ``limit`` alerts standing for ``sink``, by key."""
    return [_read(sink, key, value) for key, value in await store.kv_scan(scope_of(sink), limit)]


async def standing_all(settings: Settings, store: Notes, limit: int = SHOWN) -> list[NumberLeft]:
    """Return up to ``limit`` alerts per configured sink."""
    found: list[NumberLeft] = []
    for cfg in settings.sinks:
        found += await standing(store, cfg.name, limit)
    return found


async def counts(store: Notes, sinks: Iterable[str]) -> dict[str, int]:
    """Return per sink how many alerts stand (for metrics and the run's exit code)."""
    return {sink: len(await store.kv_scan(scope_of(sink), COUNTED)) for sink in sinks}


async def acknowledge(store: Notes, sink: str, keys: Sequence[str] | None) -> list[str]:
    """Clear the alerts of ``keys`` (None: every one of ``sink``); return the keys cleared.

    A key may be given as /readyz and the log show it (``sha256:…`` for one that looks
    like a number or an address)."""
    scope = scope_of(sink)
    standing_keys = [key for key, _ in await store.kv_scan(scope, COUNTED)]
    if keys is None:
        keys = standing_keys
    else:
        by_shown = {shown_key(key): key for key in standing_keys}
        keys = [by_shown.get(key, key) for key in keys]
    cleared = []
    for key in keys:
        if await store.kv_get(scope, key) is not None:
            await store.kv_set(scope, key, None)
            cleared.append(key)
    return cleared


def more_line(sink: str, shown: int, total: int) -> str | None:
    """Return the line saying how many alerts of ``sink`` a list of ``shown`` left out."""
    if total <= shown:
        return None
    return (
        f"{sink}: and {total - shown} more lead(s) the dialer still holds under a former "
        "number: `syncd status --json` lists them all"
    )


def warning_line(alert: dict[str, Any]) -> str:
    """Return how /readyz says one alert: the sink, the key (hashed when it looks like a
    number or an address), what to do. No number: /readyz may be read without a token."""
    return (
        f"{alert['sink']}: the dialer still holds lead {shown_key(str(alert['key']))} under "
        f"a former number as well (it may be someone else's now): {alert['action']}; then "
        f"{ACK.format(sink=alert['sink'])}"
    )


def _read(sink: str, key: str, value: str | None) -> NumberLeft:
    try:
        said = json.loads(value or "{}")
    except ValueError:  # a row written by hand: still an alert
        said = {}
    at = float(said.get("at") or 0.0)
    return NumberLeft(
        sink,
        key,
        float(said.get("since") or at),
        at,
        str(said.get("action") or "remove the record under the old number at the dialer"),
    )
