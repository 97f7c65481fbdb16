"""Last row wins across the whole file, through `syncd run --once` and a Jodo simulator.

A CSV drop may hold one key on several rows: the last is the truth, and no earlier row
of that key may ever reach the dialer. The pull reads a file in chunks and the push of
a `--once` pass starts on each chunk's commit while the pull still reads
(``run/once.py:_EarlyPush``): an earlier row queued in its own chunk could be sent
before the chunk holding the key's last row is read. Here the repeats sit at the two
ends of a file of many small chunks, so the push runs in between, and the dialer is
asked what it ever received.
"""

from __future__ import annotations

import csv
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from syncd.simulators.jodo.api import JodoSimulator, create_app
from syncd.simulators.server import running
from tests.conftest import ROOT, drop_csv, run_cli
from tests.support.reliability import jodo_sink, route, vendor_env, write_config

HEADER = "id,first,last,phone,email,callback,deleted,dnc\n"
FILLERS = 1500  # 150 chunks of 10 rows between a key's first row and its last
CHUNK_ROWS = 10


def filler(i: int) -> str:
    return f"L{i},First{i},Last{i},98{i:08d},,,,\n"


def repeated_export() -> tuple[str, dict[str, int]]:
    """Return a file where three keys come first in chunk 1 and again in its last chunk,
    and the line of each key's last row."""
    first = [
        "GONE,Early,Version,9820099901,,,,\n",  # later deleted in the CRM
        "STOP,Early,Version,9820099902,,,,\n",  # later flagged do-not-call
        "MOVED,Early,Version,9820099903,,,,\n",  # later another number
        "TWICE,Same,Twice,9820099904,,,,\n",  # later the same row again
    ]
    later = [
        "GONE,Early,Version,9820099901,,,yes,\n",
        "STOP,Early,Version,9820099902,,,,yes\n",
        "MOVED,Late,Version,9820099913,,,,\n",
        "TWICE,Same,Twice,9820099904,,,,\n",
    ]
    rows = [*first, *(filler(i) for i in range(FILLERS)), *later]
    lines = {row.split(",")[0]: 2 + len(first) + FILLERS + i for i, row in enumerate(later)}
    return HEADER + "".join(rows), lines


def config(tmp_path: Path, url: str, reader: str, chunk_rows: int = CHUNK_ROWS) -> Path:
    # Jodo cannot delete a record: a removal is disposed (on_delete), so a deletion that
    # reached it would show in its dispositions as well as in what it received.
    sink = jodo_sink(
        url,
        dispositions={"login": "supervisor", "on_delete": {"dispomasterid": 7, "disporeasonid": 3}},
    )
    lead_route = route(
        "jodo",
        map={"deleted": "deleted", "fields": {"dnc": "dnc"}},
        policy={"dnc_column": "dnc"},
    )
    return write_config(
        tmp_path, [sink], routes=[lead_route], chunk_rows=chunk_rows, source={"reader": reader}
    )


def finished(stderr: str) -> dict[str, Any]:
    """Return the run's totals (its run.finished line)."""
    return dict(json.loads(next(line for line in stderr.splitlines() if '"run.finished"' in line)))


def rejects_of(inbox: Path, name: str) -> dict[str, dict[str, Any]]:
    with (inbox / "done" / f"{name}.rejects.csv").open(encoding="utf-8") as fh:
        return {row["line"]: row for row in csv.DictReader(fh)}


@pytest.mark.parametrize("reader", ["lines", "rows"])
def test_no_earlier_row_of_a_repeated_key_ever_reaches_the_dialer(
    tmp_path: Path, reader: str
) -> None:
    sim = JodoSimulator(agents={"supervisor": 1})
    text, last_line = repeated_export()
    with running(create_app(sim)) as url:
        path = config(tmp_path, url, reader)
        drop_csv(tmp_path / "inbox", "export.csv", text)
        result = run_cli("run", "--once", "-c", str(path), env=vendor_env())

    assert result.returncode == 0, result.stderr
    received = sim.received()
    # The deleted and the do-not-call key: their superseded rows never went, nor anything else.
    assert "GONE" not in received and "STOP" not in received
    assert not sim.dispositions  # nothing to take back: nothing of theirs was sent
    # A key whose last row is an ordinary lead: exactly that version, once.
    records = {str(r["leadnumber"]): r for r in sim.records()}
    assert received["MOVED"] == 1 and received["TWICE"] == 1
    assert str(records["MOVED"]["mobilenumber"]).endswith("9820099913")
    assert records["MOVED"]["fname"] == "Late"
    assert set(records) == {f"L{i}" for i in range(FILLERS)} | {"MOVED", "TWICE"}
    assert all(n == 1 for n in received.values())
    rejects = rejects_of(tmp_path / "inbox", "export.csv")
    for line, key in enumerate(("GONE", "STOP", "MOVED", "TWICE"), start=2):
        assert rejects[str(line)]["id"] == key  # the superseded row itself, as it was
        assert rejects[str(line)]["reason"] == (
            f"[jodo] duplicate key '{key}': superseded by line {last_line[key]} (last wins)"
        )
    assert "blocked (dnc_crm)" in rejects[str(last_line["STOP"])]["reason"]
    # Superseded rows count as rejected, as within a chunk; no version was queued and left
    # unsent (superseded 0); GONE's deletion of a lead no dialer had is skipped.
    totals = finished(result.stderr)
    assert (totals["read"], totals["rejected"], totals["skipped"]) == (FILLERS + 8, 5, 1)
    assert (totals["new"], totals["superseded"], totals["delivered"]) == (
        FILLERS + 2,
        0,
        FILLERS + 2,
    )
    assert (
        "accounting: read = rejected + skipped + unchanged + new + changed + deleted: ok"
        in result.stdout
    )


def committed_line(state: Path) -> int:
    """Return the line the store's cursor says the pull committed up to (0: none yet)."""
    try:
        with sqlite3.connect(state, timeout=1) as conn:
            found = conn.execute("SELECT value FROM cursors WHERE source = 'crm'").fetchone()
    except sqlite3.Error:
        return 0
    return int(json.loads(found[0]).get("line", 0)) if found else 0


def test_a_pull_resumed_after_kill_9_supersedes_as_the_first_would(tmp_path: Path) -> None:
    # GONE and MOVED come first in chunk 1 (read before the kill), LATE first comes well
    # after the kill (read by the resumed run only); all three again in the last chunk.
    fillers = [filler(i) for i in range(30000)]
    rows = [
        "GONE,Early,Version,9820099901,,,,\n",
        "MOVED,Early,Version,9820099903,,,,\n",
        *fillers[:25000],
        "LATE,Early,Version,9820099905,,,,\n",
        *fillers[25000:],
        "GONE,Early,Version,9820099901,,,yes,\n",
        "MOVED,Late,Version,9820099913,,,,\n",
        "LATE,Early,Version,9820099905,,,yes,\n",
    ]
    late_first = 2 + 2 + 25000
    sim = JodoSimulator(agents={"supervisor": 1})
    with running(create_app(sim)) as url:
        path = config(tmp_path, url, "lines", chunk_rows=500)
        drop_csv(tmp_path / "inbox", "big.csv", HEADER + "".join(rows))
        state = tmp_path / "state" / "state.db"
        proc = subprocess.Popen(
            [sys.executable, "-m", "syncd", "run", "--once", "-c", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=vendor_env(),
            cwd=ROOT,
        )
        try:
            deadline = time.monotonic() + 60
            while committed_line(state) < 2000 and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        killed_at = committed_line(state)
        result = run_cli("run", "--once", "-c", str(path), env=vendor_env(), timeout=300)

    # The kill came after chunk 1 and before LATE's first row: both runs decided.
    assert 3 < killed_at < late_first, killed_at
    assert result.returncode == 0, result.stderr
    received = sim.received()
    assert "GONE" not in received and "LATE" not in received
    assert not sim.dispositions
    assert received["MOVED"] == 1
    moved = next(r for r in sim.records() if r["leadnumber"] == "MOVED")
    assert str(moved["mobilenumber"]).endswith("9820099913")
    rejects = rejects_of(tmp_path / "inbox", "big.csv")
    last = 2 + len(rows) - 3
    assert "superseded by line " + str(last) in rejects["2"]["reason"]
    assert "superseded by line " + str(last + 1) in rejects["3"]["reason"]
    assert "superseded by line " + str(last + 2) in rejects[str(late_first)]["reason"]
