"""What `syncd status` and the daemon's status page show: one snapshot of the store.

Gathered here once, so the command line and the page cannot disagree.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from syncd.config import Settings
from syncd.core import latency
from syncd.core.durations import human_seconds
from syncd.core.health import stable_reason
from syncd.core.reasons import DIALER_FAILED, group_by_code, reason_code
from syncd.core.summary import rows_read
from syncd.registry import reason_coder
from syncd.run import numbers_left
from syncd.run.dnc_lists import list_states
from syncd.sources.compressed import is_drop_name
from syncd.sources.csv_drop import ignored_in
from syncd.state.base import (
    HANDED_STATS,
    HEALTH_SCOPE,
    POLLED_SCOPE,
    STATS_BUCKET_S,
    WRITEBACK_STATUS_SCOPE,
    StateStore,
    stats_hour,
)


async def collect(settings: Settings, store: StateStore) -> dict[str, Any]:
    """Return counts, sinks, the last run, failures, rejects, the gate and writebacks."""
    failures = await store.failure_reasons(500)
    return {
        "counts": await store.counts(),
        "oldest": await store.oldest_pending(),
        "last_run": await store.last_run(),
        "failures": group_reasons(failures)[:10],
        # the same by code, for the status page: no dialer's words, no CRM cell
        "failure_codes": group_by_code(failures, coders=reason_coders(settings))[:20],
        "rejects": await store.recent_rejects(10),
        "gate": await store.gate_counts(),
        "waiting": await store.waiting(20),  # held behind another lead of their number
        "withdrawals_failing": await failing_withdrawals(settings, store),
        # leads a dialer still holds under a former number too (until `syncd ack`)
        "numbers_left": [
            a.to_dict()
            for a in await numbers_left.standing_all(settings, store, numbers_left.COUNTED)
        ],
        "agents": await store.agent_dump(),
        "writebacks": await writeback_status(settings, store),
        "sinks": await sink_status(settings, store),
        "replicas": await store.replicas(),
        "schema": asdict(await store.schema_state()),
        "dnc_lists": await dnc_list_status(settings, store),
        **await history(settings, store),
    }


def reason_coders(settings: Settings) -> dict[str, Any]:
    """Return per sink its dialer's reading of its refusals as codes (syncd.core.reasons)."""
    return {cfg.name: reason_coder(cfg.kind) for cfg in settings.sinks}


HISTORY_S = 24 * 3600.0  # what the charts and "outcomes in 24 h" cover
RUNS_SHOWN = 10


async def history(settings: Settings, store: StateStore) -> dict[str, Any]:
    """Return what the page shows beyond this instant: outcomes coming back per dialer,
    each source's inbox or cursor, the last runs, and the charts' hourly figures.

    Counts and times only (and file names): the page may be read without a token.
    """
    now = store.clock.time()
    sinks = [s.name for s in settings.sinks]
    stats = await store.stats_since(now - HISTORY_S)
    return {
        "now": now,
        "outcomes": await outcome_status(settings, store, now),
        "sources": await source_status(settings, store, stats),
        "runs": [run_figures(r) for r in await store.recent_runs(RUNS_SHOWN)],
        "charts": chart_series(sinks, stats, now),
        "speed_to_lead": speed_to_lead(sinks, stats, now),
    }


async def outcome_status(
    settings: Settings, store: StateStore, now: float
) -> dict[str, dict[str, Any]]:
    """Return per dialer (not agent sinks: no outcomes) the outcomes it sent back."""
    held = await store.outcome_counts(now - HISTORY_S)
    result: dict[str, dict[str, Any]] = {}
    for cfg in settings.sinks:
        if cfg.entity == "agents":
            continue
        polled = await store.kv_get(POLLED_SCOPE, cfg.name)
        seen = held.get(cfg.name, {})
        result[cfg.name] = {
            "received": int(seen.get("received", 0)),
            "recent": int(seen.get("recent", 0)),
            "last_at": seen.get("last_at"),
            "polled_at": float(polled) if polled else None,
        }
    return result


async def source_status(
    settings: Settings, store: StateStore, stats: list[tuple[str, float, str, int, int]]
) -> list[dict[str, Any]]:
    """Return per source what it read last and when; for a drop folder, its inbox; for a
    webhook, its last POST (``read_at``) and its POSTs' figures over the history."""
    cursors = await store.cursor_times()
    found = []
    for cfg in settings.sources:
        value, at = cursors.get(cfg.name, (None, None))
        entry: dict[str, Any] = {"name": cfg.name, "kind": cfg.kind, "read_at": at}
        if cfg.kind == "csv_drop":
            entry.update(await asyncio.to_thread(inbox_counts, cfg))
            entry["last_file"] = _cursor_field(value, "file")
        elif cfg.kind == "webhook":
            entry["posts"] = handed_figures(cfg.name, stats)
        else:
            entry["position"] = sql_position(value)
        found.append(entry)
    return found


def handed_figures(source: str, stats: list[tuple[str, float, str, int, int]]) -> dict[str, int]:
    """Return a webhook source's POSTs committed and their rows accepted and refused, over
    the stats given (the history's hours: every replica's POSTs)."""
    figures = dict.fromkeys(HANDED_STATS, 0)
    for name, _at, metric, _bucket, n in stats:
        if name == source and metric in figures:
            figures[metric] += n
    return figures


def handed_line(figures: dict[str, int] | None) -> str:
    """Return a webhook source's figures as status and the page say them."""
    if not figures or not figures.get("posts"):
        return "no POST in 24 h"
    posts = figures["posts"]
    return (
        f"{posts} POST{'s' if posts != 1 else ''} in 24 h ({figures.get('accepted', 0)} leads"
        f" accepted, {figures.get('refused', 0)} refused), the last:"
    )


def inbox_counts(cfg: Any) -> dict[str, Any]:
    """Return a drop folder's files waiting, being read and set aside (failed/)."""
    inbox = Path(cfg.inbox)
    if not inbox.is_dir():
        return {"problem": f"inbox {inbox} does not exist or is not a folder"}

    def files(folder: Path, wanted: Callable[[str], bool]) -> int:
        try:
            return sum(1 for p in folder.iterdir() if wanted(p.name) and not p.is_dir())
        except OSError:  # not made yet (no file read so far), or not ours to list
            return 0

    def drop(name: str) -> bool:
        return not name.startswith(".") and not name.endswith(".part")

    return {
        "waiting": files(inbox, lambda n: drop(n) and is_drop_name(n, cfg.pattern)),
        "processing": files(inbox / "processing", drop),
        "failed": files(inbox / "failed", lambda n: drop(n) and not n.endswith(".error.txt")),
        "ignored": len(ignored_in(inbox, cfg.pattern)),
    }


def _cursor_field(value: str | None, name: str) -> Any:
    try:
        return json.loads(value).get(name) if value else None
    except (ValueError, AttributeError):
        return None


def sql_position(value: str | None) -> str | None:
    """Return where a SQL source's reading stands: its phase and cursor value, never the
    key it stopped at (a CRM's key may say who the lead is)."""
    if not value:
        return None
    try:
        data = json.loads(value)
        phase = str(data["phase"])
        cursor = data.get("c")
    except (ValueError, KeyError, TypeError):
        return "unreadable (the next pull reads everything again)"
    if phase == "done" and cursor is None:
        return "read whole (no cursor column)"
    shown = str(cursor[1]) if isinstance(cursor, list) and len(cursor) == 2 else "-"
    return f"{phase} at {shown}"


def run_figures(run: dict[str, Any]) -> dict[str, Any]:
    """Return a run's row of the history: read, new, changed, refused, delivered.

    A `run --once` summary counts its deliveries; a daemon's pull pass leaves delivery to
    the pushes, so its leads a dialer holds now are counted. None: not known.
    """
    summary = run.get("summary") or {}
    by_route = summary.get("routes") or {}
    routes = list(by_route.values())
    sinks = list((summary.get("sinks") or {}).values())

    def total(items: list[dict[str, Any]], field: str) -> int | None:
        return sum(int(i.get(field) or 0) for i in items) if items else None

    mode = str(run.get("mode") or "")
    refused = total(routes, "rejected")
    delivered = total(sinks, "delivered")
    if mode.startswith("pull"):
        delivered = int(run.get("delivered_now") or 0)
        refused = (refused or 0) + int(run.get("refused_now") or 0)
    elif sinks:
        refused = (refused or 0) + (total(sinks, "refused") or 0)
    if delivered is None and "delivered" in summary:  # the daemon's own run
        delivered = int(summary["delivered"])
    return {
        "run_id": run.get("run_id"),
        "mode": mode,
        "started_at": run.get("started_at"),
        "finished_at": run.get("finished_at"),
        # Rows, each once; the other figures count leads, per dialer.
        "read": rows_read({k: int(v.get("read") or 0) for k, v in by_route.items()})
        if routes
        else None,
        "new": total(routes, "new"),
        "changed": total(routes, "changed"),
        "refused": refused,
        "delivered": delivered,
        "files_failed": len(summary.get("files_failed") or []),
    }


def chart_series(
    sinks: list[str], rows: list[tuple[str, float, str, int, int]], now: float
) -> dict[str, Any]:
    """Return the charts' points, one per hour of the last 24 (oldest first): per sink
    leads delivered and the hour's largest backlog; over all sinks the median and 90th
    percentile of the time from read to dialer."""
    hours = [stats_hour(now) - STATS_BUCKET_S * i for i in range(23, -1, -1)]
    index = {h: i for i, h in enumerate(hours)}
    delivered = {s: [0] * len(hours) for s in sinks}
    pending: dict[str, list[int | None]] = {s: [None] * len(hours) for s in sinks}
    spread: list[dict[int, int]] = [{} for _ in hours]
    for sink, at, metric, bucket, n in rows:
        i = index.get(at)
        if i is None:
            continue
        if metric == "delivered":
            delivered.setdefault(sink, [0] * len(hours))[i] += n
        elif metric == "pending":
            pending.setdefault(sink, [None] * len(hours))[i] = n
        elif metric == "latency":
            spread[i][bucket] = spread[i].get(bucket, 0) + n
    return {
        "hours": hours,
        "delivered": delivered,
        "pending": pending,
        "latency_p50": [latency.quantile(h, 0.5) for h in spread],
        "latency_p90": [latency.quantile(h, 0.9) for h in spread],
    }


SPEED_HOURS = 2  # speed to lead over this hour and the last: an hour's worth at least


def speed_to_lead(
    sinks: list[str], rows: list[tuple[str, float, str, int, int]], now: float
) -> list[dict[str, Any]]:
    """Return per sink that delivered leads in this hour or the last how many it
    delivered and the median and 99th percentile of their time from read (a POST's
    receipt, a pull's chunk) to the dialer, in seconds; read from the stats the pushes
    of every replica add to, so `syncd status` shows it without the daemon."""
    since = stats_hour(now) - STATS_BUCKET_S * (SPEED_HOURS - 1)
    spread: dict[str, dict[int, int]] = {}
    for sink, at, metric, bucket, n in rows:
        if metric == "latency" and at >= since:
            counts = spread.setdefault(sink, {})
            counts[bucket] = counts.get(bucket, 0) + n
    found = []
    for sink in sorted(spread, key=lambda s: (s not in sinks, s)):
        counts = spread[sink]
        found.append(
            {
                "sink": sink,
                "since": since,
                "leads": sum(counts.values()),
                "p50_s": latency.quantile(counts, 0.5),
                "p99_s": latency.quantile(counts, 0.99),
            }
        )
    return found


async def dnc_list_status(settings: Settings, store: StateStore) -> list[dict[str, Any]]:
    """Return per do-not-call list its version in force, its age and why it is stale."""
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
    result: dict[str, Any] = {}
    for cfg in settings.writebacks:
        last = await store.kv_get(WRITEBACK_STATUS_SCOPE, cfg.name)
        result[cfg.name] = json.loads(last) if last else {}
        result[cfg.name]["refused_by_reason"] = await store.refused_writebacks(cfg.name)
        result[cfg.name]["alert"] = writeback_alert(
            cfg.name, result[cfg.name], time.time(), settings.health.writeback_alert_s
        )
    return result


async def writeback_alerts(settings: Settings, store: StateStore, now: float) -> list[str]:
    """Return one line per writeback that never wrote since syncd started, or has been
    failing longer than ``health.writeback_alert_s`` (codes and times, no CRM text)."""
    found = []
    for cfg in settings.writebacks:
        last = await store.kv_get(WRITEBACK_STATUS_SCOPE, cfg.name)
        said = writeback_alert(
            cfg.name, json.loads(last) if last else {}, now, settings.health.writeback_alert_s
        )
        if said is not None:
            found.append(said)
    return found


def writeback_alert(name: str, last: dict[str, Any], now: float, threshold_s: float) -> str | None:
    """Return the warning of a writeback whose last pass failed (or had every record
    refused) and that has not written since its syncd started (at once: passes with
    nothing to write do not count), or has failed for ``threshold_s``; None otherwise."""
    wrote, started = last.get("wrote_at"), last.get("started_at")
    never = wrote is None or (started is not None and wrote < started)
    refused = int(last.get("refused") or 0)
    if not last.get("error") and refused and not last.get("written") and never:
        # Each record refused on its own (marked, not retried): the pass "succeeded", and
        # the CRM has taken nothing.
        return (
            f"writeback {name}: the CRM refused every outcome of its last pass ({refused}); "
            f"nothing written since syncd started at {when(started)}; syncd status has "
            "the reasons"
        )
    if not last.get("error"):
        return None
    since = float(last.get("failing_since") or last.get("at") or now)
    action = "its outcomes wait; syncd status has the reason"
    if never:
        return (
            f"writeback {name}: nothing written since syncd started at {when(started)}, "
            f"failing since {when(since)}; {action}"
        )
    if now - since >= threshold_s:
        return (
            f"writeback {name}: failing for {human_seconds(round(now - since))} (since "
            f"{when(since)}, "
            f"last written {when(wrote)}); {action}"
        )
    return None


def when(epoch: float | None) -> str:
    """Return an epoch time as UTC text, ``-`` when unknown."""
    if not epoch:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(epoch))


def sink_state_line(seen: dict[str, Any], now: float | None = None, *, public: bool = False) -> str:
    """Return what a sink is doing, for `syncd status`: working, stopped, unreachable…

    ``public``: for the status page, the reasons as codes (never the dialer's words).
    """
    now = time.time() if now is None else now
    state = str(seen.get("state", "unknown"))
    pending = int(seen.get("pending") or 0)
    if state in ("stopped", "unavailable", "unreachable"):
        what = state
        if state == "unreachable":  # or "dialer not answering": no answer to any request
            what = str(seen.get("headline") or "dialer unreachable")
        why = seen.get("reason")
        if public:
            why = seen.get("public") or reason_code(str(why or ""), DIALER_FAILED)
        line = f"{what} since {when(seen.get('since'))} ({why})"
        action = {
            "stopped": "fix the sink's configuration; its leads stay queued",
            "unavailable": "syncd opens it again shortly",
            "unreachable": "its leads stay queued and go once it answers (the running daemon "
            "tries again by itself; with cron, the next run does)",
        }[state]
        if seen.get("reopened"):  # opened again, no request made yet: not known to work
            action = "re-opened, waiting for the dialer's answer; " + action
        line += f"; {action}"
    elif state == "working":
        due = seen.get("next_due")
        throttled = seen.get("throttled") or {}
        if seen.get("held"):
            line = "held (see the warning); leads wait without spending attempts"
        elif float(throttled.get("until") or 0) > now:  # read later, it may be over
            line = (
                f"throttled until {when(throttled['until'])} ({throttled.get('reason')}); "
                "leads wait without spending attempts"
            )
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
        failed = seen["poll_failed"]
        if public:
            failed = seen.get("poll_public") or reason_code(str(failed), DIALER_FAILED)
        line += f"; last outcome poll failed ({failed})"
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
