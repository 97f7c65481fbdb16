"""The status page's history (issue 28, point 7): outcomes coming back, sources and their
inbox, the run history and the charts of the last 24 hours, on the page and in
`syncd status [--watch]`; the figures behind them kept in the store."""

from __future__ import annotations

import fcntl
import json
import math
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncd.cli.report import fit_sections, note_left_out
from syncd.core import latency
from syncd.core.model import Action, Lead, Outcome, QueuedLead, ResultKind
from syncd.daemon.charts import Series, chart, duration, nice_ceiling, sparkline
from syncd.daemon.status_page import PageData, render
from syncd.run.push import lead_ages
from syncd.run.status import chart_series, run_figures, speed_to_lead, sql_position
from syncd.simulators.jodo.api import DialPlan, JodoSimulator, create_app
from syncd.simulators.server import running
from syncd.state.base import ChunkWrite, Completion, LeadWrite, stats_hour
from syncd.state.sqlite import SqliteStore
from tests.conftest import ROOT, cli_env, daemon_config, drop_csv, run_cli
from tests.support.reliability import export, wait_until
from tests.support.stores import fresh_store
from tests.test_status_page import BAD_ROWS, browser, csp_refusals, rendered

# -- latency buckets --------------------------------------------------------------------

BUCKETS = [
    # (seconds, bucket)
    (0.0, latency.MIN_BUCKET), (-3.0, latency.MIN_BUCKET), (math.nan, latency.MIN_BUCKET),
    (1e-6, latency.MIN_BUCKET), (0.5, -4), (0.1, -13), (1.0, 0),
    (1.01, 1), (2.0, 4), (2.1, 5), (60.0, 24), (3600.0, 48), (1e30, latency.MAX_BUCKET),
]  # fmt: skip


@pytest.mark.parametrize(("seconds", "bucket"), BUCKETS)
def test_a_duration_falls_in_the_bucket_whose_upper_bound_holds_it(
    seconds: float, bucket: int
) -> None:
    assert latency.bucket(seconds) == bucket
    if 0 < seconds < 1e12:
        assert (
            latency.lower(bucket) < seconds <= latency.upper(bucket) * (1 + 1e-9)
            or bucket == latency.MIN_BUCKET
        )


QUANTILES = [
    # (durations, q, expected within a bucket's width)
    ([], 0.5, None),
    ([10.0] * 9 + [1000.0], 0.5, 10.0),
    ([10.0] * 9 + [1000.0], 0.9, 10.0),
    ([10.0] * 8 + [1000.0] * 2, 0.9, 1000.0),
    ([float(s) for s in range(1, 101)], 0.5, 50.0),
    ([float(s) for s in range(1, 101)], 0.9, 90.0),
    ([0.1] * 98 + [0.6] * 2, 0.5, 0.1),  # a POST pushed at once: read in tenths of a second
    ([0.1] * 98 + [0.6] * 2, 0.99, 0.6),
]


@pytest.mark.parametrize(("durations", "q", "expected"), QUANTILES)
def test_a_quantile_read_from_the_buckets_is_within_one_bucket(
    durations: list[float], q: float, expected: float | None
) -> None:
    found = latency.quantile(latency.histogram(durations), q)
    if expected is None:
        assert found is None
    else:
        assert found is not None and expected / 1.19 <= found <= expected * 1.19, found


# -- the charts ---------------------------------------------------------------------------

NICE = [(0, 1.0), (-5, 1.0), (0.3, 0.5), (1, 1.0), (1.1, 2.0), (3, 5.0), (7, 10.0), (42, 50.0),
        (100, 100.0), (101, 200.0), (99_000, 100_000.0)]  # fmt: skip


@pytest.mark.parametrize(("value", "ceiling"), NICE)
def test_the_axis_ends_at_a_round_figure(value: float, ceiling: float) -> None:
    assert nice_ceiling(value) == ceiling


SPARKS = [
    ([], ""),
    ([None, None], "  "),
    ([0, 0, 0], "▁▁▁"),
    ([0, 1, 2, 4, 8], "▁▂▃▅█"),
    ([5, None, 10], "▅ █"),
    ([0.001, 100], "▂█"),  # a small figure is not shown as none
]


@pytest.mark.parametrize(("values", "line"), SPARKS)
def test_a_sparkline_scales_to_the_largest_figure(values: list[float | None], line: str) -> None:
    assert sparkline(values) == line


DURATIONS = [(0, "0 s"), (0.5, "0.5 s"), (9.94, "9.9 s"), (45, "45 s"), (99, "99 s"),
             (600, "10 min"), (5400, "90 min"), (7200, "2.0 h")]  # fmt: skip


@pytest.mark.parametrize(("seconds", "shown"), DURATIONS)
def test_durations_on_an_axis(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown


def bar_heights(svg: str) -> list[float]:
    return [float(h) for h in re.findall(r'<rect class="bar"[^>]* height="([\d.]+)"', svg)]


def test_stacked_bars_are_as_tall_as_their_figures() -> None:
    svg = chart("d", ["a", "b", "c"], [Series("x", [1, 0, 4]), Series("y", [1, None, 1])])
    heights = bar_heights(svg)
    assert len(heights) == 4  # no bar for 0 or None
    # the axis ends at 5: a figure of 1 is a fifth of the plot, 4 four fifths
    assert heights[0] == pytest.approx(heights[1]) == pytest.approx(heights[3])
    assert heights[2] == pytest.approx(4 * heights[0], rel=0.01)
    assert 'data-value="4"' in svg and "<title>x, c: 4</title>" in svg


def test_a_chart_without_figures_says_so_and_draws_no_mark() -> None:
    svg = chart("empty", ["a", "b"], [Series("x", [None, 0])], kind="lines")
    assert "no figures yet" in svg and "<circle" not in svg and "<polyline" not in svg


def test_a_line_needs_two_points_and_every_point_is_a_dot() -> None:
    one = chart("t", ["a", "b"], [Series("x", [None, 3])], kind="lines")
    two = chart("t", ["a", "b"], [Series("x", [2, 3])], kind="lines")
    assert one.count("<circle") == 1 and "<polyline" not in one
    assert two.count("<circle") == 2 and two.count("<polyline") == 1


HOSTILE = '<script>alert("x")</script>&<img src=x onerror=alert(1)>'


def test_no_text_reaches_the_svg_unescaped() -> None:
    svg = chart(HOSTILE, [HOSTILE] * 3, [Series(HOSTILE, [1, 2, 3])], fmt=lambda v: HOSTILE)
    lines = chart(HOSTILE, [HOSTILE], [Series(HOSTILE, [1])], kind="lines", ident=HOSTILE)
    for out in (svg, lines):
        assert "<script" not in out and "<img" not in out and 'alert("x")' not in out
        assert "&lt;script&gt;" in out


def test_the_page_escapes_what_a_drop_folder_and_a_run_say() -> None:
    status = {
        "sources": [{"name": "crm", "kind": "csv_drop", "waiting": 1, "processing": 0,
                     "failed": 2, "last_file": HOSTILE + ".csv", "read_at": 1.0e9}],
        "runs": [{"run_id": "r1", "mode": HOSTILE, "started_at": 1.0e9, "finished_at": 1.0e9 + 3,
                  "read": 3, "new": 1, "changed": 1, "refused": 1, "delivered": 2,
                  "files_failed": 0}],
        "outcomes": {HOSTILE: {"received": 1, "recent": 1, "last_at": 1.0e9, "polled_at": None}},
        "charts": chart_series([HOSTILE], [(HOSTILE, stats_hour(1.0e9), "delivered", 0, 3)], 1.0e9),
    }  # fmt: skip
    page = render(PageData(status, "1.0", 0, now=1.0e9 + 10))
    assert "<script" not in page and "<img" not in page
    assert page.count("&lt;script&gt;") >= 4  # file, run, dialer, chart legend


# -- the figures: pure ------------------------------------------------------------------------

POSITIONS = [
    (None, None),
    ('{"v": 1, "phase": "done"}', "read whole (no cursor column)"),
    ('{"v": 1, "phase": "main", "c": ["datetime", "2026-05-01T10:00:00"], "k": ["str", "L7"]}',
     "main at 2026-05-01T10:00:00"),  # never the key it stopped at
    ("not json", "unreadable (the next pull reads everything again)"),
]  # fmt: skip


@pytest.mark.parametrize(("value", "shown"), POSITIONS)
def test_a_sql_sources_position_shows_its_cursor_never_its_key(
    value: str | None, shown: str | None
) -> None:
    assert sql_position(value) == shown


def summary(routes: dict[str, int], sinks: dict[str, int] | None = None) -> dict[str, Any]:
    return {"routes": {"crm->jodo": routes}, "sinks": {"jodo": sinks} if sinks else {}}


RUNS = [
    # (run as the store returns it, (read, new, changed, refused, delivered))
    ({"mode": "once", "summary": summary({"read": 10, "new": 6, "changed": 2, "rejected": 2},
                                          {"delivered": 7, "refused": 1})},
     (10, 6, 2, 3, 7)),
    ({"mode": "pull crm", "summary": summary({"read": 5, "new": 5, "changed": 0, "rejected": 1}),
      "delivered_now": 4, "refused_now": 1},
     (5, 5, 0, 2, 4)),
    # One file read for three dialers: its rows are read once (as the source's metric
    # counts them); the leads are new, refused and delivered per dialer.
    ({"mode": "pull crm", "summary": {"routes": {
        f"crm->{s}": {"read": 117, "new": 99, "changed": 0, "rejected": 18}
        for s in ("jodo", "ameyo", "uc")}}, "delivered_now": 297, "refused_now": 0},
     (117, 297, 0, 54, 297)),
    # Two sources in one `run --once`: each source's rows once.
    ({"mode": "once", "summary": {"routes": {
        "crm->jodo": {"read": 10, "new": 10}, "crm->uc": {"read": 10, "new": 9, "rejected": 1},
        "shop->jodo": {"read": 4, "new": 4}}, "sinks": {}}},
     (14, 23, 0, 1, None)),
    ({"mode": "daemon", "summary": {"mode": "daemon", "delivered": 40}},
     (None, None, None, None, 40)),
    ({"mode": "daemon", "summary": None}, (None, None, None, None, None)),  # still running
]  # fmt: skip


@pytest.mark.parametrize(("run", "figures"), RUNS)
def test_a_runs_row_in_the_history(run: dict[str, Any], figures: tuple[Any, ...]) -> None:
    row = run_figures(run)
    assert tuple(row[k] for k in ("read", "new", "changed", "refused", "delivered")) == figures


def test_the_charts_take_the_last_24_hours_one_point_an_hour() -> None:
    now = 1_800_000_000.0 + 1234
    hour = stats_hour(now)
    rows = [
        ("jodo", hour, "delivered", 0, 5),
        ("jodo", hour - 3600, "delivered", 0, 2),
        ("jodo", hour - 25 * 3600, "delivered", 0, 99),  # older than the charts
        ("jodo", hour, "pending", 0, 7),
        ("ameyo", hour, "latency", latency.bucket(10), 9),
        ("jodo", hour, "latency", latency.bucket(100), 1),
    ]
    series = chart_series(["jodo", "ameyo"], rows, now)
    assert len(series["hours"]) == 24 and series["hours"][-1] == hour
    assert series["delivered"]["jodo"][-2:] == [2, 5] and sum(series["delivered"]["jodo"]) == 7
    assert series["delivered"]["ameyo"] == [0] * 24
    assert series["pending"]["jodo"][-1] == 7 and series["pending"]["jodo"][0] is None
    assert series["latency_p50"][-1] == pytest.approx(10, rel=0.19)
    assert series["latency_p90"][-1] == pytest.approx(10, rel=0.19)
    assert series["latency_p50"][0] is None


def test_speed_to_lead_is_per_sink_over_this_hour_and_the_last() -> None:
    now = 1_800_000_000.0 + 1234
    hour = stats_hour(now)
    rows = [
        *(("jodo", hour, "latency", latency.bucket(0.1), 1) for _ in range(98)),
        ("jodo", hour - 3600, "latency", latency.bucket(0.6), 2),  # the last hour counts
        ("jodo", hour - 2 * 3600, "latency", latency.bucket(900), 50),  # older: not
        ("ameyo", hour - 5 * 3600, "latency", latency.bucket(5), 3),  # nothing recent
        ("jodo", hour, "delivered", 0, 100),
    ]
    [jodo] = speed_to_lead(["jodo", "ameyo"], rows, now)
    assert (jodo["sink"], jodo["leads"], jodo["since"]) == ("jodo", 100, hour - 3600)
    assert jodo["p50_s"] == pytest.approx(0.1, rel=0.19)
    assert jodo["p99_s"] == pytest.approx(0.6, rel=0.19)


def _queued(key: str, action: Action, source: str, read_at: float | None) -> QueuedLead:
    lead = Lead(key=key, phone="+919845012345")
    return QueuedLead("jodo", key, "h", action, lead, 1, source=source, read_at=read_at)


LEAD_AGES = [
    # (kind, action, read_at, expected ages at 100.0)
    (ResultKind.DELIVERED, Action.UPSERT, 99.5, [("form", 0.5)]),
    (ResultKind.DELIVERED, Action.UPSERT, 101.0, [("form", 0.0)]),  # a clock stepped back
    (ResultKind.DELIVERED, Action.DELETE, 99.5, []),  # a removal reaches no one
    (ResultKind.REJECTED, Action.UPSERT, 99.5, []),
    (ResultKind.RETRY, Action.UPSERT, 99.5, []),
    (ResultKind.DELIVERED, Action.UPSERT, None, []),  # read time unknown (a removal query)
]


@pytest.mark.parametrize(("kind", "action", "read_at", "ages"), LEAD_AGES)
def test_a_lead_counts_in_speed_to_lead_when_the_dialer_took_it(
    kind: ResultKind, action: Action, read_at: float | None, ages: list[tuple[str, float]]
) -> None:
    q = _queued("K1", action, "form", read_at)
    assert lead_ages([Completion("K1", "h", kind)], {"K1": q}, 100.0) == ages


# -- the figures: kept by the store ------------------------------------------------------------


def write(key: str, action: Action = Action.UPSERT) -> LeadWrite:
    return LeadWrite(key, f"h{key}", "raw", f'{{"key":"{key}"}}', action, "new", 2)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_a_claim_gives_each_lead_its_source_and_the_time_a_post_brought_it(
    kind: str, tmp_path: Path
) -> None:
    async with fresh_store(kind, tmp_path) as store:
        now = store.clock.time()
        posted = ChunkWrite("run-a", "form", "post-1", received_at=now - 5)  # queued 5 s
        posted.leads["jodo"] = [write("P1")]
        pulled = ChunkWrite("run-a", "crm", "a.csv")
        pulled.leads["jodo"] = [write("C1")]
        for chunk in (posted, pulled):
            await store.apply_chunk(chunk)
        claimed = {q.key: q for q in await store.claim("jodo", 10, 60)}
        assert claimed["P1"].source == "form" and claimed["C1"].source == "crm"
        assert claimed["P1"].read_at == pytest.approx(now - 5, abs=0.01)
        assert claimed["C1"].read_at is not None and claimed["C1"].read_at >= now
        done = [
            Completion(k, q.hash, ResultKind.DELIVERED, claim=q.claim) for k, q in claimed.items()
        ]
        ages = dict(lead_ages(done, claimed, now + 1))
        assert ages["form"] == pytest.approx(6, abs=0.05) and ages["crm"] <= 1.0


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_the_store_counts_deliveries_backlog_runs_and_outcomes(
    kind: str, tmp_path: Path
) -> None:
    async with fresh_store(kind, tmp_path) as store:
        chunk = ChunkWrite("run-a", "crm", "a.csv", cursor='{"file": "a.csv", "line": 4}')
        chunk.leads["jodo"] = [write("L1"), write("L2"), write("L3", Action.DELETE)]
        await store.apply_chunk(chunk)
        await store.record_backlog({"jodo": 3})
        claimed = await store.claim("jodo", 10, 60)
        await store.record_backlog({"jodo": 1})  # the hour keeps its largest
        await store.complete(
            "jodo",
            [
                Completion(q.key, q.hash, ResultKind.DELIVERED, claim=q.claim)
                for q in claimed
                if q.key != "L2"
            ]
            + [Completion("L2", "hL2", ResultKind.REJECTED, "bad", claim=claimed[1].claim)],
        )
        await store.record_run("run-a", "pull crm", store.clock.time() - 2, {"routes": {}})
        observed = datetime.now(UTC)
        await store.record_outcomes([Outcome("jodo", "L1", observed, "connected")])
        stats = await store.stats_since(0)
        runs = await store.recent_runs(5)
        outcomes = await store.outcome_counts(time.time() - 60)
        cursors = await store.cursor_times()
        pruned = await store.prune({"stats": 3 * 86400})
        kept = await store.stats_since(0)
    by_metric = {(m, b): n for _, _, m, b, n in stats}
    assert by_metric[("delivered", 0)] == 1  # L1: L2 was refused, L3 is a withdrawal
    assert by_metric[("pending", 0)] == 3
    assert sum(n for (m, _), n in by_metric.items() if m == "latency") == 1
    assert kept == stats and pruned["stats"] == 0  # within retention
    [run] = runs
    assert run["mode"] == "pull crm" and run["delivered_now"] == 1 and run["refused_now"] == 1
    assert outcomes["jodo"]["received"] == 1 and outcomes["jodo"]["recent"] == 1
    assert outcomes["jodo"]["last_at"] == pytest.approx(observed.timestamp())
    assert cursors["crm"][0] == '{"file": "a.csv", "line": 4}'


@dataclass
class ManualClock:
    now: float

    def time(self) -> float:
        return self.now


async def test_retention_prunes_the_stats_older_than_stats_days(tmp_path: Path) -> None:
    clock = ManualClock(1_800_000_000.0)
    store = SqliteStore(tmp_path / "state.db", clock)
    await store.open()
    try:
        await store.record_backlog({"jodo": 5})
        clock.now += 3 * 86400
        await store.record_backlog({"jodo": 2})
        pruned = await store.prune({"stats": 2 * 86400})
        kept = await store.stats_since(0)
    finally:
        await store.close()
    assert pruned["stats"] == 1
    assert kept == [("jodo", stats_hour(clock.now), "pending", 0, 2)]


# -- the page in a browser, `syncd status`, `syncd status --watch` -----------------------------

# Where the screenshot goes to be looked at after the run (default: the test's tmp dir).
SHOTS = Path(os.environ["SYNCD_TEST_SHOTS"]) if os.environ.get("SYNCD_TEST_SHOTS") else None


def dom(url: str) -> str:
    """Return the page's DOM as the browser built it (the SVG charts included)."""
    args = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    out = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def configured(tmp_path: Path, url: str) -> Path:
    config = daemon_config(tmp_path, url)
    text = config.read_text(encoding="utf-8").replace(
        'kind = "jodo"\n', 'kind = "jodo"\npoll = { interval_s = 0.5 }\n', 1
    )
    config.write_text(text, encoding="utf-8")
    return config


def test_the_page_shows_outcomes_sources_runs_and_charts_after_a_run(
    tmp_path: Path, start_daemon: Any
) -> None:
    sim = JodoSimulator(dial=DialPlan(interval_s=0, recording_delay_s=None))
    inbox = tmp_path / "inbox"
    with running(create_app(sim)) as url:
        config = configured(tmp_path, url)
        daemon = start_daemon(config)
        daemon.wait_for("daemon.ready")
        drop_csv(inbox, "leads.csv", export(6, extra_rows=BAD_ROWS))
        drop_csv(inbox, "broken.csv", "\ufeffid,phone\n".encode("utf-16"))  # not UTF-8
        base = daemon.base_url
        received = 'syncd_sink_outcomes_received_total{sink="jodo"} 6.0'
        assert wait_until(
            lambda: received in httpx.get(f"{base}/metrics").text, timeout=60, every=0.2
        ), daemon.events[-12:]
        assert wait_until(lambda: (inbox / "failed" / "broken.csv").exists(), timeout=30)

        seen: list[str] = [""]

        def drawn() -> bool:  # the page is a snapshot: wait for the pull and its backlog
            page = seen[0] = httpx.get(f"{base}/status", timeout=30).text
            backlog = re.search(r'<svg[^>]*id="chart-backlog".*?</svg>', page, re.S)
            return "pull crm" in page and backlog is not None and "circle" in backlog.group(0)

        # A slow render (both cores busy) spaces the snapshots out (5x its own time): wait
        # long, asking twice a second (a copy of the page a hundred times a second would
        # slow the daemon's loop and with it the render).
        assert wait_until(drawn, timeout=120, every=0.5), (seen[0][-6000:], daemon.events[-20:])
        shot = SHOTS / "status-history.png" if SHOTS else tmp_path / "status-history.png"
        text = rendered(f"{base}/status", screenshot=shot)
        built = dom(f"{base}/status")
        refused = csp_refusals(f"{base}/status")
        status = run_cli("status", "-c", str(config))
        as_json = run_cli("status", "--json", "-c", str(config))
        assert daemon.stop() == 0

    # outcomes per dialer: all six came back, with the last one's time and the poll's
    assert "Outcomes coming back" in text
    assert re.search(r"jodo 6 6 2\d{3}-\S+ \S+ \(\d+ s ago\) 2\d{3}-\S+ \S+ \(\d+ s ago\)", text)
    # the drop folder: nothing waiting, none being read, the unreadable one in failed/
    assert re.search(r"crm csv drop 0 0 1 file (leads|broken)\.csv 2\d{3}-", text), text
    # the run history: the pull that read the six leads and the refused rows
    bad = len(BAD_ROWS)
    assert re.search(rf"pull crm \d+ s {6 + bad} 6 0 {bad} 6 ", text), text
    # the charts, drawn by the browser from the server's SVG: six leads this hour
    assert 'id="chart-delivered"' in built and 'id="chart-backlog"' in built
    bars = re.findall(r'<rect class="bar"[^>]*data-value="(\d+)"', built)
    assert bars == ["6"], bars
    # the backlog, sampled each minute and after each pull: how much the pushes had
    # taken by then is the machine's business, that a figure is drawn is not
    backlog = re.search(r'<svg[^>]*id="chart-backlog".*?</svg>', built, re.S)
    assert backlog is not None and '<circle class="dot"' in backlog.group(0)
    assert "Time from read to dialer, per hour" in text
    assert "<script" not in built
    assert refused == []  # the charts and styles draw under the page's CSP
    # counts and times only: no lead's phone number or name in the new sections
    assert "9800000001" not in text and "First1" not in text and "Last1" not in text
    assert shot.stat().st_size > 20_000

    assert status.returncode == 0, status.stderr
    out = status.stdout
    assert "outcomes coming back" in out and re.search(r"jodo\s+│?\s*6\s+│?\s*6", out), out
    assert "sources and inbox" in out and "run history" in out
    assert re.search(r"delivered jodo\s+│?\s*▁*█", out), out
    facts = json.loads(as_json.stdout)
    assert facts["outcomes"]["jodo"]["received"] == 6
    assert sum(facts["charts"]["delivered"]["jodo"]) == 6


def test_status_watch_refreshes_on_a_terminal_and_ctrl_c_exits_0(tmp_path: Path) -> None:
    sim = JodoSimulator()
    with running(create_app(sim)) as url:
        config = configured(tmp_path, url)
        drop_csv(tmp_path / "inbox", "leads.csv", export(3))
        once = run_cli("run", "--once", "-c", str(config))
        assert once.returncode == 0, once.stderr
    # Two refreshes, then it stops on its own (the hidden --iterations, for tests).
    counted = run_cli("status", "--watch", "--every", "0.1", "--iterations", "2", "-c", str(config))
    assert counted.returncode == 0, counted.stderr
    assert "syncd status, every 0.1 s" in counted.stdout
    assert re.search(r"once\s+│?\s*3\s+│?\s*3\s+│?\s*0\s+│?\s*0\s+│?\s*3", counted.stdout)

    # On a terminal: it draws, redraws, and Ctrl-C ends it with exit 0.
    code, seen = watch_on_a_terminal(config, rows=200, cols=160)
    assert code == 0
    assert b"outcomes coming back" in seen and b"run history" in seen
    assert b"Traceback" not in seen


def watch_on_a_terminal(
    config: Path, *, rows: int, cols: int, frames: int = 2
) -> tuple[int, bytes]:
    """Run `syncd status --watch` on a pty of ``rows`` x ``cols`` until it drew ``frames``
    times, then Ctrl-C; return its exit code and every byte it wrote to the terminal."""
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "status", "--watch", "--every", "0.2", "-c", str(config)],
        stdin=secondary, stdout=secondary, stderr=secondary, env=cli_env(COLUMNS=str(cols),
        LINES=str(rows), TERM="xterm"), cwd=ROOT, close_fds=True,
    )  # fmt: skip
    os.close(secondary)
    seen = b""

    def drawn(times: int) -> bool:
        nonlocal seen
        ready, _, _ = select.select([primary], [], [], 0.2)
        if ready:
            try:
                seen += os.read(primary, 65536)
            except OSError:  # the process is gone
                return True
        return seen.count(b"syncd status, every 0.2 s") >= times

    try:
        assert wait_until(lambda: drawn(frames), timeout=30), seen[-2000:]
        proc.send_signal(signal.SIGINT)
        # a terminal keeps reading what it is sent: the watch leaves its screen on exit,
        # and a reader that stopped would hold that write (and the exit) forever
        assert wait_until(lambda: drawn(10**6) or proc.poll() is not None, timeout=15)
        code = proc.wait(5)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(primary)
    return code, seen


# Every section `syncd status` can show after a run with refused rows, by its title.
SECTIONS = [
    "leads per sink and state", "last run",
    "recent rejected rows", "outcomes coming back", "sources and inbox", "run history",
    "last 24 hours",
]  # fmt: skip


def test_status_watch_on_a_short_terminal_says_what_it_leaves_out(tmp_path: Path) -> None:
    sim = JodoSimulator()
    with running(create_app(sim)) as url:
        config = configured(tmp_path, url)
        drop_csv(tmp_path / "inbox", "leads.csv", export(3, extra_rows=BAD_ROWS))
        once = run_cli("run", "--once", "-c", str(config))
        assert once.returncode == 0, once.stderr
    full = run_cli("status", "-c", str(config)).stdout
    assert all(title in full for title in SECTIONS), full  # it has them all to show

    code, seen = watch_on_a_terminal(config, rows=24, cols=80)

    assert code == 0 and b"Traceback" not in seen
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode("utf-8", "replace"))
    # The last whole frame: Ctrl-C may cut the redraw under way, so the last frame
    # begun can be partial; frames before it were drawn whole.
    frames = ["syncd status, every" + f for f in text.split("syncd status, every")[1:]]
    frame = next((f for f in reversed(frames) if "resize or run" in f), frames[-1])
    # The note's end (it may wrap): what the watch wrote after it is not the frame.
    end = re.search(r"run\s+`syncd\s+status`", frame)
    frame = frame[: end.end()] if end else frame
    # what did not fit is named, with what to do; nothing is dropped without a word
    flat = " ".join(frame.split())  # the note wraps on 80 columns
    note = re.search(r"… (\d+) more sections?: (.*?); resize or run `syncd status`", flat)
    assert note is not None, frame
    left_out = note.group(2)
    drawn = flat[: note.start()]
    for title in SECTIONS:
        assert (title in drawn) != (title in left_out), (title, frame)
    assert int(note.group(1)) == len(left_out.split(", "))
    # the most important first: what each sink is doing, and its leads
    assert "jodo: " in drawn and "leads per sink and state" in drawn
    assert len(frame.rstrip().splitlines()) <= 24, frame  # the note itself was not cut


FITS = [
    # (sections as (title, rank, lines), room, kept, left out)
    ([("a", 0, 3), ("b", 1, 3)], 6, [0, 1], []),  # all fit: no note
    ([("a", 1, 3), ("b", 0, 3), ("c", 2, 3)], 6, [1], ["a", "c"]),  # rank first; a line for a note
    ([("big", 1, 9), ("a", 0, 2), ("small", 2, 2)], 6, [1, 2], ["big"]),  # a smaller one fills
    ([("a", 0, 10)], 6, [], ["a"]),  # taller than the screen: named, never cut silently
]  # fmt: skip


@pytest.mark.parametrize(("sections", "room", "kept", "left_out"), FITS)
def test_a_short_terminal_keeps_the_most_important_sections_and_names_the_rest(
    sections: list[tuple[str, int, int]], room: int, kept: list[int], left_out: list[str]
) -> None:
    assert fit_sections(sections, room, width=80) == (kept, left_out)


def test_the_note_of_what_was_left_out_gets_the_lines_it_wraps_to() -> None:
    sections = [("x" * 30, 0, 1), ("y" * 30, 1, 1), ("z" * 30, 2, 1), ("w", 3, 4)]
    kept, left_out = fit_sections(sections, room=4, width=40)
    shown = sum(sections[i][2] for i in kept)
    note_lines = -(-len(note_left_out(left_out)) // 40)
    assert left_out and shown + note_lines <= 4, (kept, left_out)
