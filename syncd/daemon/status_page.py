"""The daemon's status page (`GET /status`): one HTML page, no external assets.

It shows what `syncd status` shows, for a person at a browser: each sink's state
with its reason, leads by state, today's deliveries, the oldest pending lead, how
far behind the outcome poll and the writebacks are, the safety gate's holds and
blocks, and the last refused rows. Reasons are shown as codes and counts
(:mod:`syncd.core.reasons`), never a dialer's words or a CRM cell; phone numbers in
keys are masked: the page is for watching the flow, not for reading the CRM
(`syncd status` and `syncd explain` have the whole reasons).
"""

from __future__ import annotations

import html
import re
import time
from dataclasses import dataclass, field
from typing import Any

from syncd.core.reasons import (
    KEY_NOT_SHOWN,
    REFUSED_ROW,
    looks_personal,
    reason_code,
    shown_key,
)
from syncd.daemon.charts import Series, chart, count, duration, lead_time
from syncd.run.status import handed_line, sink_state_line, when

REFRESH_S = 10
STATES = ("pending", "inflight", "held", "delivered", "rejected", "failed", "removed")
# A run of digits as a phone number is written, not a date (2026-12-01 16:00).
_PHONE = re.compile(r"(?<![\d\-])\+?\(?\d[\d\s().\-/]{5,}\d")
_DATE = re.compile(r"\d{4}-\d\d-\d\d")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")  # a cell quoted in a reason: may be a name


@dataclass
class PageData:
    """Everything the page shows; gathered by the daemon, rendered here."""

    status: dict[str, Any]  # syncd.run.status.collect()
    version: str
    delivered_today: int
    poll_lag_s: dict[str, float] = field(default_factory=dict)  # sink -> since last good poll
    problems: list[str] = field(default_factory=list)  # /readyz reasons
    warnings: list[str] = field(default_factory=list)
    now: float = field(default_factory=time.time)


def mask(text: str, *, quoted: bool = True) -> str:
    """Return ``text`` with phone numbers cut to their last two digits, quoted cells hidden.

    ``invalid phone '98200 12345'`` → ``invalid phone '…'``; ``+919820012345 is on the
    list`` → ``•••45 is on the list``. A row's reason quotes its cell (a name, a
    number): hidden. A sink's reason quotes settings: ``quoted=False`` keeps them.
    """
    if quoted:
        text = _QUOTED.sub(lambda m: m.group(0)[0] + "…" + m.group(0)[-1], text)
    return _PHONE.sub(_masked_number, text)


def _masked_number(match: re.Match[str]) -> str:
    found = match.group(0)
    digits = re.sub(r"\D", "", found)
    if len(digits) < 7 or _DATE.search(found):  # a count, a date: not a phone number
        return found
    return "•••" + digits[-2:]


def _key(key: str) -> str:
    """Return how the page names a lead: its key, or the hash the logs use for a key that
    is an e-mail address or a phone number (a CRM keyed by mobile number)."""
    return shown_key(key) if looks_personal(key) else mask(_short(key), quoted=False)


def _short(text: str, limit: int = 64) -> str:
    """Return ``text`` cut to ``limit`` characters: a refused key may be any length."""
    return text if len(text) <= limit else text[:limit] + "…"


def render(data: PageData) -> str:
    """Return the whole page as HTML text."""
    s = data.status
    parts = [
        _head(data),
        _banner(data),
        _section("Dialers", _sinks(s.get("sinks") or {}, data.now)),
        _section("Leads by state", _counts(s.get("counts") or {}, s.get("oldest") or {}, data)),
        _section("Speed to lead (this hour and the last)", _speed(s.get("speed_to_lead") or [])),
        _section("Outcomes coming back", _outcomes(s.get("outcomes") or {}, data.now)),
        _section("Sources and inbox", _sources(s.get("sources") or [], data.now)),
        _section("Last 24 hours (UTC)", _charts(s.get("charts") or {})),
        _section("Run history", _runs(s.get("runs") or [])),
        _section("Behind", _lags(data)),
        _section("Safety gate: held and blocked", _gate(s.get("gate") or {})),
        _section("Refused and failed leads by reason", _failures(s.get("failure_codes") or [])),
        _section("Last refused rows", _rejects(s.get("rejects") or [])),
        f"<footer>syncd {_e(data.version)} · as of {_e(when(data.now))} · "
        f"refreshes every {REFRESH_S} s</footer></body></html>",
    ]
    return "\n".join(parts)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _head(data: PageData) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_S}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>syncd {_e(data.version)} status</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.4em; margin: 0 0 .3em; }} h2 {{ font-size: 1.1em; margin: 1.2em 0 .4em; }}
table {{ border-collapse: collapse; }} td, th {{ padding: .2em .7em; border-bottom: 1px solid #ddd;
text-align: left; vertical-align: top; }} td.n {{ text-align: right; }}
.ok {{ color: #17692a; }} .bad {{ color: #a31515; font-weight: 600; }} .warn {{ color: #8a5a00; }}
.banner {{ padding: .5em .8em; border-radius: 4px; margin: .5em 0; }}
.banner.bad {{ background: #fde8e8; }} .banner.ok {{ background: #e6f4ea; }}
footer {{ margin-top: 2em; color: #777; font-size: .9em; }}
svg.chart {{ display: block; margin: .3em 0 .8em; max-width: 100%; height: auto; }}
svg.chart text {{ font: 11px system-ui, sans-serif; fill: #444; }}
svg.chart text.t {{ font-weight: 600; fill: #222; }} svg.chart text.y {{ text-anchor: end; }}
svg.chart text.x, svg.chart text.none {{ text-anchor: middle; }}
svg.chart line.g {{ stroke: #e3e3e3; }}
</style></head><body>
<h1>syncd status</h1>"""


def _banner(data: PageData) -> str:
    if data.problems:
        items = "".join(f"<li>{_e(mask(p, quoted=False))}</li>" for p in data.problems)
        head = '<div class="banner bad" id="health">Leads are not flowing:<ul>'
        body = head + items + "</ul></div>"
    else:
        body = '<div class="banner ok" id="health">Ready: leads are flowing.</div>'
    if data.warnings:
        items = "".join(f"<li>{_e(mask(w, quoted=False))}</li>" for w in data.warnings)
        body += f'<div class="warn" id="warnings">Warnings:<ul>{items}</ul></div>'
    return body


def _section(title: str, body: str) -> str:
    return f"<h2>{_e(title)}</h2>\n{body}"


def _table(header: list[str], rows: list[list[str]], ident: str) -> str:
    if not rows:
        return '<p class="ok">none</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(rows_cells) + "</tr>" for rows_cells in rows)
    return f'<table id="{ident}"><tr>{head}</tr>{body}</table>'


def _td(value: Any, cls: str = "") -> str:
    return f'<td class="{cls}">{_e(value)}</td>' if cls else f"<td>{_e(value)}</td>"


def _sinks(sinks: dict[str, Any], now: float) -> str:
    rows = []
    for name, seen in sorted(sinks.items()):
        state = str(seen.get("state", "unknown"))
        cls = "ok" if state == "working" else "bad"
        rows.append(
            [
                _td(name),
                _td(state, cls),
                _td(mask(sink_state_line(seen, now, public=True), quoted=False)),
            ]
        )
    return _table(["sink", "state", "what it is doing"], rows, "sinks")


def _counts(counts: dict[str, dict[str, int]], oldest: dict[str, float], data: PageData) -> str:
    rows = []
    for sink, by_state in sorted(counts.items()):
        since = oldest.get(sink)
        age = f"{data.now - since:.0f} s" if since else "-"
        rows.append([_td(sink), *(_td(by_state.get(s, 0), "n") for s in STATES), _td(age)])
    table = _table(["sink", *STATES, "oldest pending"], rows, "counts")
    return f'<p id="today">Delivered today: <b>{data.delivered_today}</b></p>{table}'


def _lags(data: PageData) -> str:
    rows = [
        [_td(f"outcome poll of {sink}"), _td(f"{lag:.0f} s since it last succeeded", "n")]
        for sink, lag in sorted(data.poll_lag_s.items())
    ]
    rows += [
        [_td(f"writeback {name}"), _td(_written(last, data.now), "n")]
        for name, last in sorted((data.status.get("writebacks") or {}).items())
    ]
    return _table(["what", "lag"], rows, "lags")


def _written(last: dict[str, Any], now: float) -> str:
    """Return how far behind a writeback is, from its last pass's record (shared by the
    replicas: the one leading it wrote it)."""
    ok, wrote, started = last.get("ok_at"), last.get("wrote_at"), last.get("started_at")
    if last.get("error") and (wrote is None or (started is not None and wrote < started)):
        return f"nothing written since syncd started ({when(started)}); failing"
    if ok is not None:
        return f"{now - float(ok):.0f} s since its last full pass"
    return "no full pass yet"


def _gate(gate: dict[str, dict[str, int]]) -> str:
    rows = [
        [_td(sink), _td(what), _td(n, "n")]
        for sink, decisions in sorted(gate.items())
        for what, n in sorted(decisions.items())
    ]
    return _table(["sink", "decision (reason)", "leads"], rows, "gate")


def _failures(failures: list[Any]) -> str:
    """Leads refused or failed, counted by reason code (`syncd status` has the reasons)."""
    rows = [[_td(sink), _td(n, "n"), _td(code)] for sink, code, n in failures]
    return _table(["sink", "leads", "reason (code)"], rows, "failures")


def _rejects(rejects: list[dict[str, Any]]) -> str:
    rows = []
    for r in rejects:
        code = reason_code(str(r.get("reason") or ""), REFUSED_ROW)
        key = "(not shown)" if code in KEY_NOT_SHOWN else _key(str(r.get("key") or ""))
        rows.append(
            [
                _td(when(r.get("at"))),
                _td(r.get("source") or ""),
                _td(r.get("sink") or ""),  # a row refused for each of three dialers: 3 rows
                _td(r.get("origin") or ""),
                _td(r.get("line") or "", "n"),
                _td(key),
                _td(code),
            ]
        )
    return _table(["at", "source", "dialer", "file", "line", "key", "reason"], rows, "rejects")


def _ago(now: float, at: float | None) -> str:
    return f"{when(at)} ({max(now - at, 0):.0f} s ago)" if at else "-"


def _speed(speeds: list[dict[str, Any]]) -> str:
    """Per dialer: leads delivered and their time from read to the dialer's yes."""
    if not speeds:
        return "<p>No lead delivered in this hour or the last.</p>"
    rows = [
        [
            _td(s.get("sink")),
            _td(s.get("leads", 0), "n"),
            _td(lead_time(s.get("p50_s")), "n"),
            _td(lead_time(s.get("p99_s")), "n"),
        ]
        for s in speeds
    ]
    return _table(["dialer", "leads delivered", "p50", "p99"], rows, "speed")


def _outcomes(outcomes: dict[str, dict[str, Any]], now: float) -> str:
    rows = [
        [
            _td(sink),
            _td(seen.get("received", 0), "n"),
            _td(seen.get("recent", 0), "n"),
            _td(_ago(now, seen.get("last_at"))),
            _td(_ago(now, seen.get("polled_at"))),
        ]
        for sink, seen in sorted(outcomes.items())
    ]
    return _table(
        ["dialer", "outcomes held", "seen in 24 h", "last outcome", "last poll that went through"],
        rows,
        "outcomes",
    )


def _sources(sources: list[dict[str, Any]], now: float) -> str:
    rows = []
    for src in sources:
        if src.get("kind") == "csv_drop":
            problem = src.get("problem")
            failed = int(src.get("failed") or 0)
            rows.append(
                [
                    _td(src.get("name")),
                    _td("csv drop"),
                    _td(src.get("waiting", "-"), "n"),
                    _td(src.get("processing", "-"), "n"),
                    _td(failed if problem is None else "-", "bad n" if failed else "n"),
                    _td(problem or f"file {src.get('last_file') or '-'}", "bad" if problem else ""),
                    _td(_ago(now, src.get("read_at"))),
                ]
            )
        else:
            last = (
                handed_line(src.get("posts"))  # its "at" is the last POST's commit
                if src.get("kind") == "webhook"
                else f"cursor {src.get('position') or 'none yet'}"
            )
            rows.append(
                [
                    _td(src.get("name")),
                    _td(src.get("kind")),
                    *(_td("-", "n") for _ in range(3)),
                    _td(last),
                    _td(_ago(now, src.get("read_at"))),
                ]
            )
    return _table(
        ["source", "kind", "files waiting", "being read", "failed/", "last read", "at"],
        rows,
        "sources",
    )


def _hour_labels(hours: list[float]) -> list[str]:
    return [time.strftime("%H:00", time.gmtime(h)) for h in hours]


def _charts(charts: dict[str, Any]) -> str:
    hours = list(charts.get("hours") or [])
    if not hours:
        return '<p class="ok">none</p>'
    labels = _hour_labels(hours)
    delivered = [Series(k, v) for k, v in sorted((charts.get("delivered") or {}).items())]
    pending = [Series(k, v) for k, v in sorted((charts.get("pending") or {}).items())]
    spread = [
        Series("median", charts.get("latency_p50") or []),
        Series("90th percentile", charts.get("latency_p90") or []),
    ]
    return "\n".join(
        [
            chart("Leads delivered per hour", labels, delivered, ident="chart-delivered"),
            chart(
                "Backlog: leads waiting per sink (the hour's largest)",
                labels,
                pending,
                kind="lines",
                ident="chart-backlog",
            ),
            chart(
                "Time from read to dialer, per hour",
                labels,
                spread,
                kind="lines",
                fmt=duration,
                ident="chart-latency",
            ),
        ]
    )


def _figure(value: Any) -> str:
    return "-" if value is None else count(float(value))


def _runs(runs: list[dict[str, Any]]) -> str:
    rows = []
    for r in runs:
        took = (
            f"{r['finished_at'] - r['started_at']:.0f} s"
            if r.get("finished_at") and r.get("started_at")
            else "running"
        )
        rows.append(
            [
                _td(when(r.get("started_at"))),
                _td(r.get("mode") or ""),
                _td(took, "n"),
                *(
                    _td(_figure(r.get(k)), "n")
                    for k in ("read", "new", "changed", "refused", "delivered")
                ),
                _td(r.get("files_failed") or "", "bad n" if r.get("files_failed") else "n"),
            ]
        )
    table = _table(
        [
            "started",
            "what",
            "took",
            "read",
            "new",
            "changed",
            "refused",
            "delivered",
            "files failed",
        ],
        rows,
        "runs",
    )
    note = (
        '<p class="note">Read counts the source&#39;s rows, each once; new, changed, '
        "refused and delivered count leads per dialer (a row read for three dialers is "
        "three leads). A daemon&#39;s pull counts its leads a dialer holds now; "
        "a <code>run --once</code> counts what it delivered.</p>"
    )
    return table + note if rows else table
