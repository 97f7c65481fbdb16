"""The CSV writeback: an outbox a CRM importer can read at any moment, even across kill -9."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from syncd.errors import StoreError
from syncd.writeback.base import DEFAULT_COLUMNS
from syncd.writeback.runner import run_writebacks
from tests.conftest import ROOT, cli_env, run_cli
from tests.support.writeback import (
    change,
    cli_config,
    keys,
    outcome,
    settings,
    status,
    store_with,
)

HEADER = ",".join(DEFAULT_COLUMNS["outcomes"])


def outbox_csv(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "crm-files",
        "kind": "csv",
        "outbox": "outbox",
        "batch_size": 50,
        "rotate_bytes": 4096,
        "rotate_s": 0,
        **overrides,
    }


def read_published(outbox: Path) -> list[dict[str, str]]:
    """Return every row of every published file, checking each file is whole."""
    rows: list[dict[str, str]] = []
    for path in sorted(outbox.glob("*.csv")):
        rows += whole_file_rows(path.read_bytes(), path.name)
    return rows


def whole_file_rows(data: bytes, name: str) -> list[dict[str, str]]:
    text = data.decode("utf-8")
    assert text.startswith(HEADER + "\r\n"), f"{name} does not start with the header"
    assert text.endswith("\r\n"), f"{name} ends in the middle of a row"
    assert text.count(HEADER) == 1, f"{name} holds the header twice"
    parsed = list(csv.DictReader(io.StringIO(text)))
    for row in parsed:
        assert None not in row and all(v is not None for v in row.values()), f"{name}: {row}"
        assert row["recording_url"].endswith(f"/{row['key']}.mp3"), f"{name}: torn row {row}"
    return parsed


async def test_rotated_files_hold_one_header_and_every_outcome_once(tmp_path: Path) -> None:
    store = await store_with(tmp_path / "state.db", [outcome(k) for k in keys(400)])
    cfg = outbox_csv(outbox=str(tmp_path / "outbox"))
    try:
        written = await run_writebacks(settings(tmp_path, cfg), store)
        again = await run_writebacks(settings(tmp_path, cfg), store)
    finally:
        await store.close()

    files = sorted((tmp_path / "outbox").iterdir())
    rows = read_published(tmp_path / "outbox")
    assert written == {"crm-files": 400} and again == {"crm-files": 0}
    assert len(files) > 3 and all(f.suffix == ".csv" for f in files)
    assert sorted(r["key"] for r in rows) == keys(400)
    assert rows[0]["last_dialed_at"] == "2026-11-22T09:30:00+00:00"
    assert rows[0]["attempts"] == "1" and rows[0]["version"] == "1"


async def test_a_file_stays_a_part_until_it_is_due(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    slow = outbox_csv(outbox=str(outbox), rotate_bytes=10_000_000, rotate_s=3600)
    store = await store_with(tmp_path / "state.db", [outcome(k) for k in keys(20)])
    try:
        await run_writebacks(settings(tmp_path, slow), store)
        waiting = sorted(p.name for p in outbox.iterdir())
        await change(store, "L00003", disposition="Sale")
        await run_writebacks(settings(tmp_path, slow), store)
        due = outbox_csv(outbox=str(outbox), rotate_bytes=10_000_000, rotate_s=0)
        await run_writebacks(settings(tmp_path, due), store)
    finally:
        await store.close()

    assert len(waiting) == 1 and waiting[0].endswith(".csv.part")
    rows = read_published(outbox)
    assert [p.suffix for p in outbox.iterdir()] == [".csv"]
    assert [r["key"] for r in rows] == [*keys(20), "L00003"]  # one file, appended across passes
    assert rows[-1]["disposition"] == "Sale" and rows[-1]["version"] == "2"


async def test_cells_a_spreadsheet_would_run_are_neutralised(tmp_path: Path) -> None:
    hostile = outcome("L1", disposition='=HYPERLINK("http://evil","x")', agent="@SUM(1)")
    store = await store_with(tmp_path / "state.db", [hostile, outcome("L2", agent="-2+3")])
    try:
        await run_writebacks(settings(tmp_path, outbox_csv(outbox=str(tmp_path / "o"))), store)
    finally:
        await store.close()

    first, second = read_published(tmp_path / "o")
    assert first["disposition"] == '\'=HYPERLINK("http://evil","x")'
    assert first["agent"] == "'@SUM(1)"
    assert second["agent"] == "'-2+3"


async def test_chosen_columns_and_time_zone(tmp_path: Path) -> None:
    cfg = outbox_csv(
        outbox=str(tmp_path / "o"),
        columns=["key", "last_dialed_at", "status"],
        timezone="Asia/Kolkata",
        delimiter=";",
    )
    store = await store_with(tmp_path / "state.db", [outcome("L1")])
    try:
        await run_writebacks(settings(tmp_path, cfg), store)
    finally:
        await store.close()

    (path,) = (tmp_path / "o").glob("*.csv")
    assert path.read_bytes() == (
        b"key;last_dialed_at;status\r\nL1;2026-11-22T15:00:00+05:30;connected\r\n"
    )


async def test_an_outbox_that_cannot_be_written_keeps_outcomes_pending(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x", encoding="utf-8")
    store = await store_with(tmp_path / "state.db", [outcome("L1")])
    try:
        written = await run_writebacks(settings(tmp_path, outbox_csv(outbox=str(blocker))), store)
        last = await status(store, "crm-files")
        pending = await store.pending_writeback("crm-files")
    finally:
        await store.close()

    assert written == {"crm-files": 0} and len(pending) == 1
    assert "cannot use the outbox" in last["error"]


async def test_rows_a_crash_left_unmarked_are_cut_off_and_written_once(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    slow = outbox_csv(outbox=str(outbox), rotate_bytes=10_000_000, rotate_s=3600)
    store = await store_with(tmp_path / "state.db", [outcome(k) for k in keys(10)])
    try:
        await run_writebacks(settings(tmp_path, slow), store)
        (part,) = outbox.glob("*.csv.part")
        # What kill -9 leaves behind: a batch appended (half of it) but never marked,
        # and a new part file whose first batch was never marked either.
        with part.open("ab") as fh:
            fh.write(b"L00011,jodo,connected,Interest")
        orphan = outbox / "crm-files-20260101T000000Z-1.csv.part"
        orphan.write_bytes(HEADER.encode() + b"\r\nL00012,jodo\r\n")
        for key in ("L00011", "L00012"):
            await change(store, key)
        await run_writebacks(settings(tmp_path, outbox_csv(outbox=str(outbox))), store)
    finally:
        await store.close()

    assert not orphan.exists()
    assert sorted(r["key"] for r in read_published(outbox)) == keys(12)


async def test_rows_whose_marks_could_not_be_saved_are_written_once_after_a_restart(
    tmp_path: Path,
) -> None:
    outbox = tmp_path / "outbox"
    slow = outbox_csv(outbox=str(outbox), batch_size=5, rotate_bytes=10_000_000, rotate_s=3600)
    store = await store_with(tmp_path / "state.db", [outcome(k) for k in keys(20)])
    real_mark = store.mark_written
    calls = 0

    async def mark_fails_once(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:  # the store hiccups: the second batch is in the file, not marked
            raise StoreError("database is locked")
        return await real_mark(*args, **kwargs)

    store.mark_written = mark_fails_once  # type: ignore[method-assign]
    try:
        with pytest.raises(StoreError):
            await run_writebacks(settings(tmp_path, slow), store)
        store.mark_written = real_mark  # type: ignore[method-assign]
        # The next start: the outbox's state as saved, the rows not marked still pending.
        due = outbox_csv(outbox=str(outbox), batch_size=5, rotate_bytes=10_000_000, rotate_s=0)
        await run_writebacks(settings(tmp_path, due), store)
    finally:
        await store.close()

    assert sorted(r["key"] for r in read_published(outbox)) == keys(20)  # each once


class Importer(threading.Thread):
    """A CRM importer polling the outbox: every *.csv it can see must be whole."""

    def __init__(self, outbox: Path) -> None:
        super().__init__(daemon=True)
        self.outbox = outbox
        self.stop = threading.Event()
        self.published: set[str] = set()
        self.problems: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            for path in list(self.outbox.glob("*.csv")) if self.outbox.is_dir() else []:
                if path.name in self.published:
                    continue
                try:
                    whole_file_rows(path.read_bytes(), path.name)
                except AssertionError as exc:
                    self.problems.append(str(exc))
                self.published.add(path.name)
            time.sleep(0.005)


def test_kill_9_mid_write_never_exposes_a_partial_file_and_writes_each_outcome_once(
    tmp_path: Path,
) -> None:
    import asyncio

    total = 8_000
    outbox = tmp_path / "outbox"
    config = cli_config(tmp_path, outbox_csv(batch_size=50, rotate_bytes=8_192))

    async def seed() -> None:
        store = await store_with(tmp_path / "state" / "state.db", [outcome(k) for k in keys(total)])
        await store.close()

    asyncio.run(seed())
    importer = Importer(outbox)
    importer.start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "run", "--once", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=cli_env(),
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while len(importer.published) < 3 and time.monotonic() < deadline:
            assert proc.poll() is None, "the run finished before it could be killed"
            time.sleep(0.005)
        proc.kill()  # SIGKILL: no cleanup of any kind
        assert proc.wait(10) == -9
        killed_at = len(importer.published)
        restarted = run_cli("run", "--once", "-c", str(config))
        time.sleep(0.05)  # let the importer see the last file
    finally:
        importer.stop.set()
        importer.join(5)
        if proc.poll() is None:
            proc.kill()

    assert restarted.returncode == 0, restarted.stderr[-2000:]
    assert importer.problems == []
    assert 3 <= killed_at < len(importer.published)
    rows = read_published(outbox)
    assert sorted(r["key"] for r in rows) == keys(total)  # each outcome exactly once
    assert not list(outbox.glob("*.part"))


@pytest.mark.parametrize(("setting", "mode"), [({}, 0o600), ({"file_mode": "0640"}, 0o640)])
async def test_outbox_files_hold_phone_numbers_and_are_private_unless_configured(
    tmp_path: Path, setting: dict[str, str], mode: int
) -> None:
    import stat

    store = await store_with(tmp_path / "state.db", [outcome(k) for k in keys(5)])
    cfg = outbox_csv(outbox=str(tmp_path / "outbox"), rotate_s=0, **setting)
    try:
        assert await run_writebacks(settings(tmp_path, cfg), store) == {"crm-files": 5}
    finally:
        await store.close()
    [published] = (tmp_path / "outbox").glob("*.csv")
    assert stat.S_IMODE(published.stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "outbox").stat().st_mode) == 0o700
