"""Human-facing output: the run summary, `status`, `explain` (rich tables, plain when piped)."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from syncd.core.summary import RunSummary
from syncd.run.numbers_left import ACK, SHOWN, more_line
from syncd.run.status import dnc_list_line, handed_line, schema_lines, sink_state_line, when

if TYPE_CHECKING:
    from syncd.run.dryrun import DryRun


def make_console() -> Console:
    """Return a console for stdout; piped output gets wide lines instead of truncated cells."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=200, no_color=True)


def print_summary(summary: RunSummary, console: Console | None = None) -> None:
    """Print what a run read, decided and delivered, and whether the numbers add up."""
    out = console or make_console()
    title = f"syncd run {summary.run_id}" + (" (dry run)" if summary.dry_run else "")
    routes = Table(title=title, title_justify="left")
    cols = ["read", "rejected", "skipped", "unchanged", "new", "changed", "deleted"]
    routes.add_column("route")
    for c in cols:
        routes.add_column(c, justify="right")
    for name, rc in summary.routes.items():
        routes.add_row(name, *(str(getattr(rc, c)) for c in cols))
    out.print(routes)
    if not summary.dry_run:
        sinks = Table(title_justify="left")
        scols = ["carried", "delivered", "refused", "failed", "pending", "held"]
        sinks.add_column("sink")
        for c in scols:
            sinks.add_column(c, justify="right")
        sinks.add_column("note")
        for name, sc in summary.sinks.items():
            note = f"stopped: {sc.stopped}" if sc.stopped else (sc.waiting or "")
            if sc.held and not note:
                note = (
                    "held: its calling window, a lead of the same number, a stale strict"
                    " do-not-call list or a window withdrawal (syncd status says which);"
                    f" next look {when(sc.released_at)}"
                )
            sinks.add_row(name, *(str(getattr(sc, c)) for c in scols), note)
        out.print(sinks)
    mark = "ok" if all(r.balanced for r in summary.routes.values()) else "MISMATCH"
    out.print(
        f"accounting: read = rejected + skipped + unchanged + new + changed + deleted: {mark}"
    )
    if not summary.dry_run:
        mark = "ok" if all(summary.sink_balanced(s) for s in summary.sinks) else "MISMATCH"
        out.print(
            "accounting: new + changed + deleted + carried = "
            f"delivered + refused + failed + pending + held: {mark}"
        )
    for name, rc in summary.routes.items():
        if rc.refused_before:
            out.print(
                f"refused before on {name}: {rc.refused_before} of the rejected rows, unchanged "
                f"since, refused again without mapping ({rc.mapped} rows mapped)"
            )
        if rc.blocked:
            codes = ", ".join(f"{code} {n}" for code, n in sorted(rc.blocked.items()))
            out.print(f"blocked by the safety gate on {name}: {codes} (see syncd rejects)")
    for sink, n in summary.outcomes.items():
        out.print(f"outcomes from {sink}: {n} new or changed")
    if summary.deadline:
        out.print(f"[red]cut off[/red]: {escape(summary.deadline)}", markup=True, highlight=False)
    for sink, reason in summary.poll_failed.items():
        out.print(
            f"[red]outcome poll of {sink} failed[/red]: {escape(reason)}",
            markup=True,
            highlight=False,
        )
    for name, reason in summary.writeback_failed.items():
        out.print(
            f"[red]writeback {name} failed[/red]: {escape(reason)}",
            markup=True,
            highlight=False,
        )
    for sink, n in summary.numbers_left.items():
        out.print(
            f"[red]ALERT, {sink}[/red]: the dialer still holds {n} lead(s) under a former "
            "number too (it may be someone else's now); remove those records by hand, then "
            f"{escape(ACK.format(sink=sink))}: `syncd status` names the leads",
            markup=True,
            highlight=False,
        )
    for sink, said in summary.warnings.items():
        for warning in said:
            out.print(
                f"[yellow]warning, {sink}[/yellow]: {escape(warning)}",
                markup=True,
                highlight=False,
            )
    for name, n in summary.written.items():
        out.print(f"written back through {name}: {n}")
    for failed in summary.files_failed:
        out.print(f"[red]set aside, unreadable[/red]: {failed}", markup=True, highlight=False)
    for waiting in summary.files_waiting:
        out.print(f"[yellow]not read yet[/yellow]: {escape(waiting)}", markup=True, highlight=False)


@dataclass(frozen=True)
class Section:
    """One part of `syncd status`: its title, how much it matters on a short terminal
    (``rank``: 0 first) and how it is drawn."""

    title: str
    rank: int
    draw: Callable[[Console], None]


def print_status(status: dict[str, Any], console: Console | None = None) -> None:
    out = console or make_console()
    for section in status_sections(status):
        section.draw(out)


def status_sections(status: dict[str, Any]) -> list[Section]:
    """Return the sections `syncd status` shows, in the order it prints them.

    Their ranks say what `--watch` keeps on a terminal too short for all of them: what
    each sink is doing and what alarms first, history and charts last.
    """
    sections: list[Section] = []

    def section(title: str, rank: int) -> Callable[[Callable[[Console], None]], None]:
        def add(draw: Callable[[Console], None]) -> None:
            sections.append(Section(title, rank, draw))

        return add

    @section("leads per sink and state", 1)
    def counts(out: Console) -> None:
        table = Table(title="leads per sink and state", title_justify="left")
        states = ["pending", "inflight", "held", "delivered", "rejected", "failed", "removed"]
        table.add_column("sink")
        for s in states:
            table.add_column(s, justify="right")
        table.add_column("oldest pending")
        for sink, counts in sorted(status["counts"].items()):
            oldest = status["oldest"].get(sink)
            table.add_row(
                sink,
                *(str(counts.get(s, 0)) for s in states),
                f"{time.time() - oldest:.0f}s ago" if oldest else "-",
            )
        out.print(table)

    if status.get("sinks"):

        @section("sinks", 0)
        def sinks(out: Console) -> None:
            for sink, seen in sorted(status["sinks"].items()):
                out.print(f"{sink}: {sink_state_line(seen)}", highlight=False, markup=False)

    if status.get("schema"):

        @section("store schema", 4)
        def schema(out: Console) -> None:
            for line in schema_lines(status["schema"], status.get("replicas") or []):
                style = "yellow" if line.startswith("warning") else None
                out.print(line, style=style, highlight=False, markup=False)

    if status.get("dnc_lists"):

        @section("do-not-call lists", 2)
        def dnc_lists(out: Console) -> None:
            for state in status["dnc_lists"]:
                out.print(dnc_list_line(state), highlight=False, markup=False)

    if status.get("gate"):

        @section("safety gate", 3)
        def gate(out: Console) -> None:
            for sink, decisions in sorted(status["gate"].items()):
                said = ", ".join(f"{what} {n}" for what, n in sorted(decisions.items()))
                out.print(f"{sink}: safety gate: {said}", highlight=False, markup=False)

    if status.get("withdrawals_failing"):

        @section("ALERT: withdrawals refused", 0)
        def withdrawals(out: Console) -> None:
            table = Table(
                title="ALERT: withdrawals the dialer keeps refusing (the numbers stay dialable)",
                title_justify="left",
            )
            for c in ("sink", "key", "tries", "last reason"):
                table.add_column(c)
            for w in status["withdrawals_failing"]:
                table.add_row(w["sink"], w["key"], str(w["attempts"]), w["reason"] or "")
            out.print(table)

    if status.get("numbers_left"):

        @section("ALERT: old numbers still dialable", 0)
        def numbers_left(out: Console) -> None:
            table = Table(
                title="ALERT: the dialer still holds these leads under a former number too "
                "(it may be someone else's now); syncd cannot close those records",
                title_justify="left",
            )
            for c in ("sink", "key", "since", "what to do"):
                table.add_column(c)
            by_sink: dict[str, list[dict[str, Any]]] = {}
            for a in status["numbers_left"]:
                by_sink.setdefault(a["sink"], []).append(a)
            for alerts in by_sink.values():
                for a in alerts[:SHOWN]:
                    table.add_row(a["sink"], a["key"], when(a["since"]), a["action"])
            out.print(table)
            for sink, alerts in sorted(by_sink.items()):
                if (more := more_line(sink, SHOWN, len(alerts))) is not None:
                    out.print(more, highlight=False, markup=False)
            for sink in sorted(by_sink):
                out.print(
                    f"once done by hand at {sink}: {ACK.format(sink=sink)}",
                    highlight=False,
                    markup=False,
                )

    if status.get("waiting"):

        @section("waiting for another lead", 5)
        def waiting(out: Console) -> None:
            table = Table(
                title="waiting for another lead of the same number (first 20)",
                title_justify="left",
            )
            for c in ("sink", "key", "what", "waits for", "reason"):
                table.add_column(c)
            for w in status["waiting"]:
                what = "removal" if w["action"] == "delete" else "set aside"
                table.add_row(w["sink"], w["key"], what, w["waits_for"], w["reason"] or "")
            out.print(table)

    @section("last run", 2)
    def last_run(out: Console) -> None:
        run = status.get("last_run")
        if not run:
            out.print("last run: none yet")
            return
        line = f"last run: {run['run_id']} ({run['mode']}) started {when(run['started_at'])}"
        line += f", finished {when(run['finished_at'])}" if run["finished_at"] else ", not finished"
        out.print(line)

    if status["failures"]:

        @section("refused and failed leads", 3)
        def failures(out: Console) -> None:
            table = Table(title="refused and failed leads by reason", title_justify="left")
            for c in ("sink", "count", "reason"):
                table.add_column(c)
            for sink, reason, n in status["failures"]:
                table.add_row(sink, str(n), reason)
            out.print(table)

    if status["rejects"]:

        @section("recent rejected rows", 6)
        def rejects(out: Console) -> None:
            table = Table(
                title="recent rejected rows (all of them: syncd rejects [--source NAME])",
                title_justify="left",
            )
            for c in ("at", "source", "dialer", "origin", "line", "key", "reason"):
                table.add_column(c)
            for r in status["rejects"]:
                table.add_row(
                    when(r["at"]),
                    r["source"],
                    r.get("sink") or "",  # a row refused for each dialer it was meant for
                    r["origin"] or "",
                    str(r["line"] or ""),
                    r["key"] or "",
                    r["reason"],
                )
            out.print(table)

    if status.get("agents"):

        @section("agents", 7)
        def agents(out: Console) -> None:
            table = Table(title="agents at the dialers", title_justify="left")
            for c in ("sink", "login", "status", "description", "since", "duration", "seen"):
                table.add_column(c)
            for a in status["agents"]:
                duration = a.get("duration_s")
                table.add_row(
                    a["sink"],
                    a["login"],
                    str(a.get("status") or ""),
                    a.get("description") or "",
                    when(a.get("changed_at")),
                    f"{duration}s" if duration is not None else "-",
                    when(a.get("observed_at")),
                )
            out.print(table)

    if status.get("replicas"):

        @section("replicas", 4)
        def replicas(out: Console) -> None:
            table = Table(title="replicas on the shared store", title_justify="left")
            for c in ("replica", "syncd", "schema", "seen", "leads (lease left)"):
                table.add_column(c)
            for r in status["replicas"]:
                leads = ", ".join(f"{j['job']} ({j['lease_left_s']:.0f}s)" for j in r["leads"])
                table.add_row(
                    r["replica"],
                    r.get("version") or "unknown",  # started before replicas recorded it
                    str(r["knows_schema"]) if r.get("knows_schema") is not None else "-",
                    f"{r['seen_s_ago']:.0f}s ago",
                    leads or "-",
                )
            out.print(table)

    if status.get("writebacks"):

        @section("writebacks", 3)
        def writebacks(out: Console) -> None:
            table = Table(title="writebacks (last pass)", title_justify="left")
            for c in ("writeback", "written", "refused", "error"):
                table.add_column(c)
            for name, last in sorted(status["writebacks"].items()):
                table.add_row(
                    name,
                    str(last.get("written", "-")),
                    str(last.get("refused", "-")),
                    str(last.get("error") or ""),
                )
            out.print(table)
            for name, last in sorted(status["writebacks"].items()):
                if last.get("alert"):
                    out.print(f"warning: {last['alert']}", highlight=False, markup=False)
                for reason, n in last.get("refused_by_reason") or []:
                    out.print(
                        f"{name}: {n} outcome(s) refused by the CRM, not written: {reason} — "
                        f"once fixed, `syncd retry --writeback {name}` writes them again",
                        highlight=False,
                        markup=False,
                    )

    sections.extend(recent_sections(status))
    for n, extra in enumerate(status.get("extra", [])):
        sections.append(Section(f"extra {n + 1}", 8, partial(_print, extra)))
    return sections


def _print(renderable: Any, out: Console) -> None:
    out.print(renderable)


def recent_sections(status: dict[str, Any]) -> list[Section]:
    """Return what the status page shows beyond this instant: outcomes coming back, the
    sources and their inbox, the last runs, and the last 24 hours as sparklines."""
    from syncd.daemon.charts import count, duration, lead_time, sparkline

    now = float(status.get("now") or time.time())
    sections: list[Section] = []

    def ago(at: float | None) -> str:
        return f"{when(at)} ({max(now - at, 0):.0f}s ago)" if at else "-"

    def outcomes(out: Console) -> None:
        table = Table(title="outcomes coming back", title_justify="left")
        for c in ("dialer", "held", "in 24 h", "last outcome", "last poll that went through"):
            table.add_column(c, justify="right" if c in ("held", "in 24 h") else "left")
        for sink, seen in sorted(status["outcomes"].items()):
            table.add_row(
                escape(sink),
                str(seen["received"]),
                str(seen["recent"]),
                ago(seen.get("last_at")),
                ago(seen.get("polled_at")),
            )
        out.print(table)

    def speed(out: Console) -> None:
        for s in status["speed_to_lead"]:
            out.print(
                f"{s['sink']}: speed to lead {lead_time(s['p50_s'])} p50,"
                f" {lead_time(s['p99_s'])} p99 over {s['leads']} leads since"
                f" {when(s['since'])} (read to the dialer's yes)",
                highlight=False,
                markup=False,
            )

    def sources(out: Console) -> None:
        table = Table(title="sources and inbox", title_justify="left")
        figures_of = ("waiting", "being read", "failed/", "ignored")
        for c in ("source", "kind", *figures_of, "last read", "at"):
            table.add_column(c, justify="right" if c in figures_of else "left")
        for src in status["sources"]:
            if src["kind"] == "csv_drop":
                kinds = ("waiting", "processing", "failed", "ignored")
                figures = [str(src.get(k, "-")) for k in kinds]
                last = src.get("problem") or f"file {src.get('last_file') or '-'}"
            elif src["kind"] == "webhook":  # its "at" is the last POST's commit
                figures = ["-", "-", "-", "-"]
                last = handed_line(src.get("posts"))
            else:
                figures = ["-", "-", "-", "-"]
                last = f"cursor {src.get('position') or 'none yet'}"
            table.add_row(
                escape(src["name"]), src["kind"], *figures, escape(last), ago(src.get("read_at"))
            )
        out.print(table)

    def runs(out: Console) -> None:
        table = Table(title="run history (newest first)", title_justify="left")
        cols = ("read", "new", "changed", "refused", "delivered")
        for c in ("started", "what", *cols, "files failed"):
            table.add_column(c, justify="left" if c in ("started", "what") else "right")
        for r in status["runs"]:
            table.add_row(
                when(r["started_at"]),
                escape(r["mode"]),
                *("-" if r[c] is None else str(r[c]) for c in cols),
                str(r["files_failed"] or ""),
            )
        out.print(table)

    charts = status.get("charts") or {}

    def last_day(out: Console) -> None:
        first = time.strftime("%H:00Z", time.gmtime(charts["hours"][0]))
        table = Table(title=f"last 24 hours, hourly from {first}", title_justify="left")
        for c in ("figure", "24 h", "largest"):
            table.add_column(c)
        rows: list[tuple[str, list[float | None], Any]] = [
            *((f"delivered {s}", list(v), count) for s, v in sorted(charts["delivered"].items())),
            *((f"backlog {s}", list(v), count) for s, v in sorted(charts["pending"].items())),
            ("read to dialer, median", charts["latency_p50"], duration),
            ("read to dialer, p90", charts["latency_p90"], duration),
        ]
        for name, values, fmt in rows:
            top = max((v for v in values if v is not None), default=None)
            table.add_row(escape(name), sparkline(values), "-" if top is None else fmt(top))
        out.print(table)

    if status.get("speed_to_lead"):
        sections.append(Section("speed to lead", 2, speed))
    if status.get("outcomes"):
        sections.append(Section("outcomes coming back", 2, outcomes))
    if status.get("sources"):
        sections.append(Section("sources and inbox", 5, sources))
    if status.get("runs"):
        sections.append(Section("run history", 6, runs))
    if charts.get("hours"):
        sections.append(Section("last 24 hours", 7, last_day))
    return sections


def note_left_out(titles: list[str]) -> str:
    """Return the line that names the sections a short terminal could not show."""
    n = len(titles)
    return (
        f"… {n} more section{'s' if n != 1 else ''}: {', '.join(titles)}; "
        "resize or run `syncd status`"
    )


def fit_sections(
    sections: list[tuple[str, int, int]], room: int, width: int
) -> tuple[list[int], list[str]]:
    """Return which sections (title, rank, lines) fit ``room`` lines, by their index in
    the order given, and the titles of those left out.

    All of them when they fit; else the lowest ranks first, each that fits, with room
    kept for the note naming the others (as long as it wraps at ``width``).
    """
    if sum(lines for _, _, lines in sections) <= room:
        return list(range(len(sections))), []
    by_rank = sorted(range(len(sections)), key=lambda i: (sections[i][1], i))
    reserve = 1
    while True:
        kept: list[int] = []
        used = 0
        for i in by_rank:
            if used + sections[i][2] <= room - reserve:
                kept.append(i)
                used += sections[i][2]
        left_out = [sections[i][0] for i in range(len(sections)) if i not in kept]
        needed = -(-len(note_left_out(left_out)) // max(width, 1))  # lines it wraps to
        if needed <= reserve or reserve >= room:
            return sorted(kept), left_out
        reserve = needed


def watch_status(
    collect: Callable[[], Awaitable[dict[str, Any]]],
    *,
    every_s: float,
    iterations: int | None = None,
    console: Console | None = None,
) -> None:
    """Show `syncd status` and refresh it every ``every_s`` until Ctrl-C (or ``iterations``
    refreshes: tests). On a terminal it redraws in place, like watch(1)."""
    import asyncio

    from rich.live import Live
    from rich.text import Text

    out = console or make_console()

    def drawn(draw: Callable[[Console], None]) -> str:
        # On a console of its own: a capture of ``out`` would hold Live's own display too.
        scratch = Console(
            file=io.StringIO(),
            width=out.size.width,
            height=out.size.height,
            force_terminal=out.is_terminal,
            # its colours are read back (Text.from_ansi) and drawn by ``out`` in its own
            color_system="truecolor" if out.color_system else None,
        )
        with scratch.capture() as captured:
            draw(scratch)
        return captured.get()

    def view(status: dict[str, Any]) -> Text:
        said = f"syncd status, every {every_s:g} s (Ctrl-C to stop) · {when(time.time())}\n"
        sections = [(s, drawn(s.draw)) for s in status_sections(status)]
        if not out.is_terminal:  # piped: nothing cuts it
            return Text(said, style="bold") + Text.from_ansi("".join(t for _, t in sections))
        # The alternate screen shows its height and drops the rest without a word: keep
        # what matters most, and name what did not fit.
        width, room = out.size.width, out.size.height - 1  # the header's line
        kept, left_out = fit_sections(
            [(s.title, s.rank, text.count("\n")) for s, text in sections], room, width
        )
        body = Text.from_ansi("".join(sections[i][1] for i in kept))
        if left_out:
            body += Text(note_left_out(left_out), style="yellow")
        return Text(said, style="bold") + body

    async def loop(live: Live) -> None:
        shown = 0
        while iterations is None or shown < iterations:
            if shown:
                await asyncio.sleep(every_s)
            live.update(view(await collect()), refresh=True)
            shown += 1

    with Live(console=out, screen=out.is_terminal, auto_refresh=False) as live:
        asyncio.run(loop(live))


def print_history(key: str, history: dict[str, Any], console: Console | None = None) -> None:
    out = console or make_console()
    if not any(history.values()):
        out.print(f"no record of lead {key!r}")
        return
    for lead in history["leads"]:
        out.print(
            f"[bold]{lead['sink']}[/bold]: {lead['state']} (attempts {lead['attempts']}, "
            f"hash {lead['hash'][:12]}, from {lead['origin']} line {lead['line']}, "
            f"dialer ref {lead['vendor_ref'] or '-'})"
        )
        if lead["last_error"]:
            out.print(f"  last error: {lead['last_error']}")
        out.print(f"  lead: {lead['lead_json']}")
    rows = [
        (r["at"], r["source"], "read.rejected", f"{r['origin']} line {r['line']}: {r['reason']}")
        for r in history["rejects"]
    ]
    rows += [(e["at"], e["sink"], e["kind"], e["detail"] or "") for e in history["events"]]
    # One line per event, never folded: a phone number or an id split over two lines
    # cannot be searched for or copied.
    out.print("history:", highlight=False)
    for at, sink, kind, detail in sorted(rows, key=lambda r: r[0]):
        out.print(
            f"  {when(at)}  {sink}  {kind}  {detail}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    delivered = {lead["sink"]: lead["delivered_at"] for lead in history["leads"]}
    for o in history["outcomes"]:
        out.print(
            f"outcome at {o['sink']} (v{o['version']}, seen {when(o['observed_at'])}, "
            f"{_record_of(o['observed_at'], delivered.get(o['sink']))}): "
            f"{o['status']} {o['disposition'] or ''} attempts={o['attempts']} "
            f"agent={o['agent'] or '-'} recording={o['recording_url'] or '-'}"
        )


def _record_of(observed_at: float | None, delivered_at: float | None) -> str:
    """Return whether an outcome was seen for the record the dialer holds now."""
    if observed_at and delivered_at and observed_at < delivered_at:
        return f"for an earlier record: the lead was sent again at {when(delivered_at)}"
    return "for the current record"


def print_dry_run(result: DryRun, console: Console | None = None) -> None:
    """Print, per sink, what would be created, updated, removed and refused."""
    out = console or make_console()
    table = Table(
        title="dry run: what a real pass would send (nothing was sent or written)",
        title_justify="left",
    )
    cols = ("create", "update", "remove", "refuse", "rejected_rows")
    table.add_column("sink")
    for c in cols:
        table.add_column(c.replace("_", " "), justify="right")
    for name, preview in result.sinks.items():
        table.add_row(name, *(str(getattr(preview, c)) for c in cols))
    out.print(table)
    for name, preview in result.sinks.items():
        for kind in ("create", "update", "remove", "refuse"):
            keys = preview.samples.get(kind)
            if keys:
                more = getattr(preview, kind) - len(keys)
                tail = f" and {more} more" if more > 0 else ""
                out.print(f"{name} would {kind}: {', '.join(keys)}{tail}", highlight=False)
    for r in result.rejects:
        where = f"{r['origin'] or '?'} line {r['line']}" if r["line"] else (r["origin"] or "?")
        key = f" [{r['key']}]" if r["key"] else ""
        out.print(f"rejected: {where}{key}: {r['reason']}", highlight=False, markup=False)
