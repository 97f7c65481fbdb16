"""What an operator lives with: versions, progress lines, dashboards and alerts that match
the metrics, backups, retention, and simulators that say what they accept."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from syncd import __version__
from syncd.config import RetentionConfig
from syncd.core.model import Action, LeadWrite, Reject, ResultKind
from syncd.run.progress import PushProgress
from syncd.simulators.jodo.api import JodoSimulator, create_app
from syncd.simulators.server import running
from syncd.state.base import ChunkWrite, Completion
from syncd.state.sqlite import SqliteStore
from tests.conftest import ROOT, cli_env, daemon_config, drop_csv, promtool, run_cli
from tests.support.clock import FakeClock
from tests.support.logs import events
from tests.support.reliability import (
    RequestCounter,
    export,
    jodo_sink,
    keys,
    vendor_env,
    wait_until,
    write_config,
)

DEPLOY = ROOT / "deploy"
DAY = 86400.0

# -- versions ------------------------------------------------------------------------


def test_version_is_printed_by_the_cli() -> None:
    out = run_cli("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"syncd {__version__}" and __version__ != "0+unknown"


# -- dashboards and alerts -----------------------------------------------------------


def queries() -> list[tuple[str, str]]:
    """Return (file, PromQL expression) for every panel and alert rule shipped in deploy/."""
    found = []
    dashboard = json.loads((DEPLOY / "grafana" / "syncd-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        found += [("dashboard", t["expr"]) for t in panel["targets"]]
    rules = (DEPLOY / "prometheus" / "syncd-alerts.yml").read_text()
    found += [("alerts", m) for m in re.findall(r"^\s+expr: (.+)$", rules, flags=re.M)]
    return found


def test_every_metric_the_dashboard_and_alerts_name_is_served_with_those_labels(
    tmp_path: Path, start_daemon: Any
) -> None:
    sim = JodoSimulator()
    with running(create_app(sim)) as url:
        config = daemon_config(tmp_path, url)
        config.write_text(
            config.read_text(encoding="utf-8")
            + '\n[[writebacks]]\nname = "crm-files"\nkind = "csv"\n'
            + f'outbox = "{tmp_path / "out"}"\n',
            encoding="utf-8",
        )
        daemon = start_daemon(config)
        daemon.wait_for("daemon.ready")
        drop_csv(tmp_path / "inbox", "leads.csv", export(5))
        wait_until(lambda: len(sim.records()) == 5)
        text = httpx.get(f"{daemon.base_url}/metrics").text
        assert daemon.stop() == 0

    families = {f.name: f for f in text_string_to_metric_families(text)}
    served: dict[str, set[str]] = {}
    for family in families.values():
        for sample in family.samples:
            served.setdefault(sample.name, set()).update(sample.labels)
        served.setdefault(family.name, set())
    assert served["syncd_build_info"] == {"version", "python"}
    assert 'syncd_build_info{python="' in text and f'version="{__version__}"' in text
    for where, expr in queries():
        names = set(re.findall(r"\bsyncd_[a-z_]+", expr))
        # Only the alert on syncd itself may name no metric of syncd's: Prometheus's `up`.
        assert names or (where == "alerts" and 'up{job="syncd"}' in expr), (where, expr)
        for name in names:
            base = re.sub(r"_(total|bucket|count|sum)$", "", name)
            assert name in served or base in served, f"{where}: {name} is not on /metrics"
        wanted = {
            label.strip()
            for group in re.findall(r"by \(([^)]*)\)", expr)
            for label in group.split(",")
        } - {"le"}
        have = set().union(*(served.get(n, set()) for n in names))
        unlabelled = all(not served.get(n) for n in names)  # no series yet: nothing to check
        assert unlabelled or wanted <= have, f"{where}: {expr} groups by {wanted - have}"


def test_the_alert_rules_pass_promtool() -> None:
    out = subprocess.run(
        [promtool(), "check", "rules", str(DEPLOY / "prometheus" / "syncd-alerts.yml")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


# -- progress ------------------------------------------------------------------------

PROGRESS_CASES = [
    # (every_s, [(seconds later, delivered in the batch)], which batches log a line)
    (5.0, [(1, 500), (1, 500), (3, 500), (1, 500)], [False, False, True, False]),
    (5.0, [(6, 0), (1, 500)], [False, True]),  # a batch with nothing delivered says nothing
    (0.0, [(0, 10), (0, 10)], [True, True]),
]


@pytest.mark.parametrize(("every_s", "batches", "expected"), PROGRESS_CASES)
def test_a_push_pass_reports_at_most_every_few_seconds(
    every_s: float, batches: list[tuple[float, int]], expected: list[bool]
) -> None:
    clock = FakeClock()
    progress = PushProgress(clock, every_s)
    said = []
    for seconds, delivered in batches:
        clock.advance(seconds)
        said.append(progress.add(delivered))
    assert said == expected


def test_the_progress_line_gives_the_rate_and_what_remains() -> None:
    clock = FakeClock()
    progress = PushProgress(clock, 5.0)
    clock.advance(10)
    progress.add(2000)
    assert progress.report(remaining=6000) == {
        "delivered": 2000,
        "remaining": 6000,
        "rate_per_s": 200.0,
        "eta_s": 30,
    }


def test_a_big_push_logs_how_far_it_got(tmp_path: Path) -> None:
    sim = JodoSimulator()
    with running(create_app(sim)) as url:
        config = write_config(
            tmp_path, [jodo_sink(url, progress_every_s=0, batch_size=50, push_concurrency=1)]
        )
        drop_csv(tmp_path / "inbox", "leads.csv", export(200))
        out = run_cli("run", "--once", "-c", str(config), env=vendor_env())
    assert out.returncode == 0, out.stderr
    lines = events(out.stderr, "push.progress")
    assert [e["delivered"] for e in lines] == [50, 100, 150, 200]
    assert [e["remaining"] for e in lines] == [150, 100, 50, 0]
    assert all(e["level"] == "info" and e["rate_per_s"] > 0 for e in lines)


# -- backup ----------------------------------------------------------------------------


def test_a_backup_taken_during_a_push_restores_to_a_store_that_loses_nothing(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state" / "state.db"
    copy = tmp_path / "backups" / "state-copy.db"
    config_box: list[Path] = []
    taken: list[subprocess.CompletedProcess[str]] = []

    def back_up(n: int, when: str) -> None:
        if n == 3 and when == "before":  # two batches delivered, the third in flight
            taken.append(run_cli("backup", str(copy), "-c", str(config_box[0])))

    sim = JodoSimulator()
    with running(RequestCounter(create_app(sim), hook=back_up, only=b"ImportProcessData")) as url:
        config = write_config(tmp_path, [jodo_sink(url, batch_size=50)])
        config_box.append(config)
        drop_csv(tmp_path / "inbox", "leads.csv", export(300))
        first = run_cli("run", "--once", "-c", str(config), env=vendor_env())
        assert first.returncode == 0, first.stderr
        assert taken and taken[0].returncode == 0, taken and taken[0].stderr
        assert f"backed up {state} to {copy}: schema" in taken[0].stdout
        assert oct(copy.stat().st_mode & 0o777) == "0o600"

        # The host is lost; the store comes back from the copy, as docs/operating.md says.
        for stale in state.parent.glob("state.db*"):
            stale.unlink()
        shutil.copyfile(copy, state)
        again = run_cli("run", "--once", "-c", str(config), env=vendor_env())
        assert again.returncode == 0, again.stderr
        held = [r["leadnumber"] for r in sim.records()]
    assert sorted(held) == sorted(keys(300))  # nothing lost, each held once
    with sqlite3.connect(state) as db:
        states = dict(db.execute("SELECT state, COUNT(*) FROM leads GROUP BY state").fetchall())
    assert states == {"delivered": 300}
    refused = run_cli("backup", str(copy), "-c", str(config))
    assert refused.returncode != 0 and "never overwrites" in refused.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def restore(copy: Path, state: Path) -> None:
    """Restore as docs/operating.md says: the store stopped, its -wal and -shm gone."""
    for stale in state.parent.glob("state.db*"):
        stale.unlink()
    shutil.copyfile(copy, state)
    state.chmod(0o600)


def test_files_read_after_a_backup_are_read_again_after_its_restore(tmp_path: Path) -> None:
    state = tmp_path / "state" / "state.db"
    copy = tmp_path / "backups" / "state.db"
    inbox = tmp_path / "inbox"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # A dialer down waits ten minutes between tries: the run ends with the leads pending.
    sink = jodo_sink(url, retry_base_s=600, retry_max_s=600)
    config = write_config(tmp_path, [sink], run={"deadline_s": 5})
    sim = JodoSimulator()
    with running(create_app(sim), port=port):
        drop_csv(inbox, "monday.csv", export(50))
        first = run_cli("run", "--once", "-c", str(config), env=vendor_env())
        assert first.returncode == 0, first.stderr
    taken = run_cli("backup", str(copy), "-c", str(config))
    assert taken.returncode == 0, taken.stderr

    # The dialer is down: Tuesday's file is read and filed in done/, its leads wait.
    drop_csv(inbox, "tuesday.csv", export(100, start=50))
    down = run_cli("run", "--once", "-c", str(config), env=vendor_env())
    assert "tuesday.csv" in os.listdir(inbox / "done")
    with sqlite3.connect(state) as db:
        waiting = db.execute("SELECT COUNT(*) FROM leads WHERE state = 'pending'").fetchone()[0]
    assert waiting == 100, down.stderr

    restore(copy, state)
    lost = run_cli("explain", "L120", "-c", str(config))
    assert "no record of lead" in lost.stdout + lost.stderr  # what the copy knows: Monday

    with running(create_app(sim), port=port):
        again = run_cli("run", "--once", "-c", str(config), env=vendor_env())
        assert again.returncode == 0, again.stderr
        received = sim.received()
    assert set(received) == keys(150)  # Tuesday's leads were not lost with the store
    assert set(received.values()) == {1}  # and nobody was sent twice
    reread = events(again.stderr, "source.origin.reread")
    assert [e["origin"] for e in reread] == ["tuesday.csv"], again.stderr
    assert sorted(os.listdir(inbox / "done")) == ["monday.csv", "tuesday.csv"]
    with sqlite3.connect(state) as db:
        states = dict(db.execute("SELECT state, COUNT(*) FROM leads GROUP BY state").fetchall())
    assert states == {"delivered": 150}

    # Read again once: the next run finds nothing new to read.
    with running(create_app(sim), port=port):
        quiet = run_cli("run", "--once", "-c", str(config), env=vendor_env())
    assert quiet.returncode == 0 and not events(quiet.stderr, "source.origin.reread")
    assert set(sim.received().values()) == {1}


SQL_SOURCE = """
[[sources]]
name = "crm"
kind = "sql"
url = "sqlite:///{db}"
query = "SELECT id, first, last, phone, email, callback, modified_at FROM leads"
key_column = "id"
cursor_column = "modified_at"
"""


def crm_rows(db: Path, n: int, start: int, at: str) -> None:
    """Add leads L{start}… to a CRM table, changed at ``at``."""
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS leads (id TEXT PRIMARY KEY, first TEXT, last TEXT,"
            " phone TEXT, email TEXT, callback TEXT, modified_at TEXT NOT NULL)"
        )
        conn.executemany(
            "INSERT INTO leads VALUES (?, ?, ?, ?, ?, '', ?)",
            [(f"L{i}", f"F{i}", f"S{i}", f"98200{i:05d}", f"l{i}@x.in", at)
             for i in range(start, start + n)],
        )  # fmt: skip


def test_rows_changed_after_a_backup_are_read_again_from_its_older_sql_cursor(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state" / "state.db"
    copy = tmp_path / "backups" / "state.db"
    crm = tmp_path / "crm.db"
    port = free_port()
    sink = jodo_sink(f"http://127.0.0.1:{port}", retry_base_s=600, retry_max_s=600)
    config = write_config(tmp_path, [sink], run={"deadline_s": 5})
    # The same config, its source a CRM table instead of the inbox.
    text = config.read_text(encoding="utf-8")
    start = text.index("[[sources]]")
    end = text.index("[[sinks]]")
    config.write_text(
        text[:start] + SQL_SOURCE.format(db=crm).strip() + "\n\n" + text[end:], encoding="utf-8"
    )
    sim = JodoSimulator()
    crm_rows(crm, 50, 0, "2026-11-02 09:00:00")
    with running(create_app(sim), port=port):
        first = run_cli("run", "--once", "-c", str(config), env=vendor_env())
        assert first.returncode == 0, first.stderr
    assert run_cli("backup", str(copy), "-c", str(config)).returncode == 0

    crm_rows(crm, 100, 50, "2026-11-02 10:00:00")  # read while the dialer is down
    run_cli("run", "--once", "-c", str(config), env=vendor_env())
    with sqlite3.connect(state) as db:
        waiting = db.execute("SELECT COUNT(*) FROM leads WHERE state = 'pending'").fetchone()[0]
    assert waiting == 100

    restore(copy, state)
    with running(create_app(sim), port=port):
        again = run_cli("run", "--once", "-c", str(config), env=vendor_env())
        assert again.returncode == 0, again.stderr
        received = sim.received()
    assert set(received) == keys(150) and set(received.values()) == {1}
    finished = events(again.stderr, "run.finished")[0]
    assert (finished["new"], finished["delivered"]) == (100, 100), finished


# -- retention -------------------------------------------------------------------------


async def test_a_daily_resync_for_months_keeps_the_store_at_a_steady_size(
    tmp_path: Path,
) -> None:
    clock = FakeClock(now=1_800_000_000.0)
    path = tmp_path / "state.db"
    store = SqliteStore(path, clock=clock)
    await store.open()
    keep = RetentionConfig()
    sizes, events_kept = [], []
    try:
        for day in range(300):
            await a_day_of_changes(store, day)
            await store.prune(keep.keep_s())
            clock.advance(DAY)
            if day % 50 == 49:
                sizes.append(await store.size_bytes())
                with sqlite3.connect(path) as db:
                    events_kept.append(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    finally:
        await store.close()
    assert max(events_kept) <= 31 * 200  # a month of pushes, no more
    assert sizes[-1] <= sizes[1] * 1.15, sizes  # flat after the first month
    with sqlite3.connect(path) as db:
        runs = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        rejects = db.execute("SELECT COUNT(*) FROM rejects").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
    assert runs <= 91 and rejects <= 31 * 20
    assert free <= 8  # what pruning freed went back to the file system (a page or so stays)


def pages(path: Path) -> tuple[int, int]:
    """Return the store's (page_count, freelist_count), read as the sqlite3 shell would."""
    with sqlite3.connect(path) as db:
        count = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
    return int(count), int(free)


async def test_a_prune_run_by_the_cli_gives_the_freed_pages_back_and_the_file_shrinks(
    tmp_path: Path,
) -> None:
    # Two months ago a bad export was refused row by row: 40,000 rejects, some 12 MB.
    state = tmp_path / "state" / "state.db"
    state.parent.mkdir()
    store = SqliteStore(state, clock=FakeClock(now=time.time() - 60 * DAY))
    await store.open()
    try:
        row = ["x" * 200, "+91 98450 00000", "n/a"]
        for part in range(20):
            write = ChunkWrite("old-run", "crm", f"bad-{part}.csv")
            write.rejects = [
                ("jodo", Reject("crm", "invalid phone 'n'", i, write.origin, row))
                for i in range(2000)
            ]
            await store.apply_chunk(write)
    finally:
        await store.close()
    before, _ = pages(state)
    size_before = state.stat().st_size

    sim = JodoSimulator()
    with running(create_app(sim)) as url:
        config = write_config(tmp_path, [jodo_sink(url)])
        drop_csv(tmp_path / "inbox", "today.csv", export(3))
        out = run_cli("run", "--once", "-c", str(config), env=vendor_env())
    assert out.returncode == 0, out.stderr
    # Every refused row older than rejects_days goes, the newest too: nothing reads it
    # (the page's "recent rejected rows" are recent ones), and a month-old refusal kept
    # forever is the personal data retention promises to drop.
    assert events(out.stderr, "state.pruned")[0]["rejects"] == 40_000
    listed = run_cli("rejects", "-c", str(config), env=vendor_env())
    assert listed.returncode == 0, listed.stderr
    assert "0 refused row(s)" in listed.stderr and "bad-" not in listed.stdout
    after, free = pages(state)
    # Before the fix the prune freed one page and 3,000 stayed on the free list.
    assert free <= 8, (before, after, free)
    assert after < before / 4, (before, after)
    assert state.stat().st_size < size_before / 4
    wal = state.with_name("state.db-wal")
    assert not wal.exists() or wal.stat().st_size < size_before / 4  # not moved into the -wal


async def test_a_store_made_without_auto_vacuum_is_rebuilt_once_and_then_shrinks(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:  # what an older syncd left: WAL, auto_vacuum NONE
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE filler (x TEXT)")
        db.executemany("INSERT INTO filler VALUES (?)", [("x" * 500,) for _ in range(4000)])
    clock = FakeClock(now=1_800_000_000.0)
    store = SqliteStore(path, clock=clock)
    await store.open()
    try:
        for day in range(5):
            await a_day_of_changes(store, day)
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
            db.execute("DROP TABLE filler")
        clock.advance(40 * DAY)
        await store.prune(RetentionConfig().keep_s())
    finally:
        await store.close()
    count, free = pages(path)
    # what the five days kept, and the schema: a page per table and index at least
    # (migration 14's indexes for `syncd status` added 9, migration 15's sink ledger 3,
    # migration 18's index of the leads' keys and of their raw hashes 13)
    assert free <= 8 and count * 4096 < 510_000, (count, free)


async def a_day_of_changes(store: SqliteStore, day: int) -> None:
    """One daily run: 200 of 1,000 leads changed and pushed, 20 rows refused."""
    run_id = f"run-{day}"
    await store.start_run(run_id, "once")
    write = ChunkWrite(run_id, "crm", f"day{day}.csv", cursor=str(day))
    first = day * 200 % 1000
    write.leads["jodo"] = [
        LeadWrite(
            f"L{k}", f"h{day}-{k}", None, f'{{"key":"L{k}","v":{day}}}', Action.UPSERT, "changed", k
        )
        for k in range(first, first + 200)
    ]
    write.rejects = [
        ("jodo", Reject("crm", "invalid phone 'x'", i, write.origin)) for i in range(20)
    ]
    await store.apply_chunk(write)
    while batch := await store.claim("jodo", 100, 300):
        done = [Completion(q.key, q.hash, ResultKind.DELIVERED, reply="ok") for q in batch]
        await store.complete("jodo", done)
    await store.finish_run(run_id, {"day": day})


def test_old_exports_in_done_are_deleted_after_keep_done_days(tmp_path: Path) -> None:
    sim = JodoSimulator()
    with running(create_app(sim)) as url:
        config = write_config(tmp_path, [jodo_sink(url)], source={"keep_done_days": 14})
        done = tmp_path / "inbox" / "done"
        done.mkdir(parents=True)
        old, recent = done / "old.csv", done / "recent.csv"
        for path, days in ((old, 20), (recent, 3)):
            path.write_text(export(1), encoding="utf-8")
            at = time.time() - days * DAY
            os.utime(path, (at, at))
        drop_csv(tmp_path / "inbox", "today.csv", export(2))
        out = run_cli("run", "--once", "-c", str(config), env=vendor_env())
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in done.iterdir()) == ["recent.csv", "today.csv"]
    assert events(out.stderr, "source.done.pruned")[0]["files"] == 1


# -- simulators ------------------------------------------------------------------------


def test_a_simulator_says_what_it_accepts_and_takes_the_documents_login() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "simulate", "ucontact", "--port", str(port),
         "--user", "user1", "--password", "myPassword", "--campaign", "Sales->"],
        stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        banner = "".join(proc.stderr.readline() for _ in range(6))
        base = f"http://127.0.0.1:{port}/Integra/resources"
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/_sim/state"))
        token = httpx.post(
            f"{base}/auth/getUserToken", data={"user": "user1", "password": "myPassword"}
        )
        refused = httpx.post(f"{base}/auth/getUserToken", data={"user": "api", "password": "x"})
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
    assert "login       user1 / myPassword" in banner
    assert "campaigns   Sales->" in banner and "/_sim/state" in banner
    assert token.status_code == 200 and token.json()[0] == "user1"
    assert refused.text == "0"


def _answers(url: str) -> bool:
    try:
        return httpx.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_demo_can_stay_up_with_its_status_page(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "demo", "--serve", "--dir", str(tmp_path / "demo"),
         "--leads", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=cli_env(), cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        for line in proc.stdout:
            lines.append(line)
            if "status page:" in line:
                break
        url = re.search(r"status page: (\S+)", "".join(lines))
        assert url is not None, "".join(lines)
        wait_until(lambda: _answers(url.group(1)), timeout=30)
        page = httpx.get(url.group(1)).text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert "syncd status" in page and "jodo" in page and "ucontact" in page


@pytest.mark.parametrize("command", [["rejects"], ["audit", "--format", "jsonl"], ["audit"]])
def test_a_reader_that_stops_early_ends_the_export_at_once_without_a_traceback(
    tmp_path: Path, command: list[str]
) -> None:
    # `syncd rejects | head -1` in a script: the reader closes the pipe. The export must
    # end there (with the shell's code for it, 141, and nothing on stderr), not print a
    # traceback and hang on the store's open connection for ever.
    sim = JodoSimulator()
    with running(create_app(sim)) as url:
        config = write_config(tmp_path, [jodo_sink(url)])
        rows = [f"BAD{i},X,Y,not-a-number,x@example.in," for i in range(2000)]
        drop_csv(tmp_path / "inbox", "today.csv", export(3, extra_rows=rows))
        assert run_cli("run", "--once", "-c", str(config), env=vendor_env()).returncode == 0
    reader_gone = os.pipe()
    os.close(reader_gone[0])  # the reader has stopped before the first line
    proc = subprocess.run(
        [sys.executable, "-m", "syncd", *command, "-c", str(config)],
        stdout=reader_gone[1],
        stderr=subprocess.PIPE,
        text=True,
        env=vendor_env(),
        cwd=ROOT,
        timeout=60,  # a hang fails here, not the suite's whole timeout
    )
    os.close(reader_gone[1])
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
