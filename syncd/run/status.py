"""What `syncd status` and the daemon's status page show: one snapshot of the store.

Gathered here once, so the command line and the page cannot disagree.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

from syncd.config import Settings
from syncd.state.base import StateStore


async def collect(settings: Settings, store: StateStore) -> dict[str, Any]:
    """Return counts, sinks, the last run, failures, rejects, the gate and writebacks."""
    return {
        "counts": await store.counts(),
        "oldest": await store.oldest_pending(),
        "last_run": await store.last_run(),
        "failures": group_reasons(await store.failure_reasons(500))[:10],
        "rejects": await store.recent_rejects(10),
        "gate": await store.gate_counts(),
        "waiting": await store.waiting(20),  # held behind another lead of their number
        "withdrawals_failing": await failing_withdrawals(settings, store),
        "agents": await store.agent_dump(),
        "writebacks": await writeback_status(settings, store),
        "sinks": await sink_status(settings, store),
        "replicas": await store.replicas(),
        "schema": asdict(await store.schema_state()),
        "dnc_lists": await dnc_list_status(settings, store),
    }


async def dnc_list_status(settings: Settings, store: StateStore) -> list[dict[str, Any]]:
    """Return per do-not-call list its version in force, its age and why it is stale."""
    from dataclasses import asdict

    from syncd.run.dnc_lists import list_states

    return [
        {**asdict(state), "version": asdict(state.version) if state.version else None}
        for state in await list_states(settings, store, store.clock.time())
    ]


def schema_lines(schema: dict[str, Any], replicas: list[dict[str, Any]]) -> list[str]:
    """Return what `syncd status` says of the store's schema: its version, steps edited
    after release, and replicas built for an older schema than the store's."""
    lines = [f"store schema {schema['at']} (this syncd knows {schema['knows']})"]
    lines += [f"warning: {edited}" for edited in schema["edited"]]
    for r in replicas:
        if r.get("knows_schema") is not None and r["knows_schema"] < schema["at"]:
            lines.append(
                f"warning: replica {r['replica']} runs syncd {r['version']}, built for schema "
                f"{r['knows_schema']}: it would refuse to start again; upgrade it"
            )
    return lines


def dnc_list_line(state: dict[str, Any]) -> str:
    """Return what `syncd status` says of a do-not-call list."""
    v = state.get("version")
    if not v:
        line = f"do-not-call list {state['name']} ({state['mode']}): no version loaded"
    else:
        line = (
            f"do-not-call list {state['name']} ({state['mode']}): version {v['version']} "
            f"{v['file']}, {v['numbers']:,} numbers (+{v['added']:,} -{v['removed']:,}), "
            f"dated {when(v['file_date'])[:10]}, {(state['age_s'] or 0) / 86400:.1f} days old, "
            f"loaded {when(v['loaded_at'])}, sha256 {v['sha256'][:12] or '-'}"
        )
    if state.get("stale"):
        line += f"; warning: {state['stale']}"
        if state.get("strict"):
            line += "; strict: its routes' leads are held"
    return line


async def sink_status(settings: Settings, store: StateStore) -> dict[str, Any]:
    """Return per sink what the last run or the daemon saw, and when its next lead is due."""
    from syncd.run.engine import HEALTH_SCOPE

    result: dict[str, Any] = {}
    for cfg in settings.sinks:
        seen = await store.kv_get(HEALTH_SCOPE, cfg.name)
        entry: dict[str, Any] = json.loads(seen) if seen else {"state": "not run yet"}
        entry["pending"] = await store.pending_count(cfg.name)
        entry["next_due"] = await store.next_due(cfg.name)
        result[cfg.name] = entry
    return result


async def writeback_status(settings: Settings, store: StateStore) -> dict[str, Any]:
    """Return per writeback its last pass and its refusals by reason."""
    from syncd.writeback.runner import STATUS_SCOPE

    result: dict[str, Any] = {}
    for cfg in settings.writebacks:
        last = await store.kv_get(STATUS_SCOPE, cfg.name)
        result[cfg.name] = json.loads(last) if last else {}
        result[cfg.name]["refused_by_reason"] = await store.refused_writebacks(cfg.name)
    return result


def when(epoch: float | None) -> str:
    """Return an epoch time as UTC text, ``-`` when unknown."""
    if not epoch:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(epoch))


def sink_state_line(seen: dict[str, Any], now: float | None = None) -> str:
    """Return what a sink is doing, for `syncd status`: working, stopped, unreachable…"""
    now = time.time() if now is None else now
    state = str(seen.get("state", "unknown"))
    pending = int(seen.get("pending") or 0)
    if state in ("stopped", "unavailable", "unreachable"):
        what = "dialer unreachable" if state == "unreachable" else state
        line = f"{what} since {when(seen.get('since'))} ({seen.get('reason')})"
        action = {
            "stopped": "fix the sink's configuration; its leads stay queued",
            "unavailable": "syncd opens it again shortly",
            "unreachable": "syncd keeps trying; nothing is lost",
        }[state]
        line += f"; {action}"
    elif state == "working":
        due = seen.get("next_due")
        if seen.get("held"):
            line = "held (see the warning); leads wait without spending attempts"
        elif pending and isinstance(due, int | float) and due > now:
            line = f"working, backing off until {when(due)}"
        elif seen.get("feeding"):
            line = f"working; {seen['feeding']}"
        else:
            line = "working"
    else:
        line = state
    if pending:
        line += f"; {pending} lead{'s' if pending != 1 else ''} pending"
    if seen.get("poll_failed"):
        line += f"; last outcome poll failed ({seen['poll_failed']})"
    for warning in seen.get("warnings") or ():
        line += f"; warning: {warning}"
    for q in seen.get("queues") or ():
        line += (
            f"; queue {q['queue']}: {q['logged_in']} agent(s) logged in, "
            f"{q['available']} available, {q['callers_waiting']} caller(s) waiting"
        )
    if seen.get("updated_at"):
        line += f" (as of {when(seen['updated_at'])})"
    return line


def group_reasons(rows: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """Return (sink, reason, count) with reasons that differ only in ids or numbers merged
    (``session 3f9a… expired`` once, not once per session), largest first."""
    from syncd.core.health import stable_reason

    merged: dict[tuple[str, str], tuple[str, int]] = {}
    for sink, reason, n in rows:
        shown, total = merged.get((sink, stable_reason(reason)), (reason, 0))
        merged[(sink, stable_reason(reason))] = (shown, total + n)
    return sorted(
        ((sink, shown, n) for (sink, _), (shown, n) in merged.items()), key=lambda r: -r[2]
    )


async def failing_withdrawals(settings: Settings, store: StateStore) -> list[dict[str, Any]]:
    """Return removals a dialer keeps refusing past the sink's max_attempts (an alert)."""
    limits = {s.name: s.max_attempts for s in settings.sinks}
    if not limits:
        return []
    found = await store.failing_withdrawals(min(limits.values()), 50)
    return [w for w in found if alerting(w, limits.get(w["sink"], 0))][:20]


def alerting(withdrawal: dict[str, Any], max_attempts: int) -> bool:
    """Return True when a queued removal is an alert: the dialer refused it (the number
    stays dialable), or it failed ``max_attempts`` times."""
    return bool(withdrawal.get("refused")) or withdrawal["attempts"] >= max_attempts
