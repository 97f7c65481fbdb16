"""`make demo` runs `syncd demo`: it must work on a fresh machine with no configuration."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.conftest import run_cli


def test_demo_pushes_to_three_dialers_and_brings_outcomes_back(tmp_path: Path) -> None:
    result = run_cli("demo", "--dir", str(tmp_path / "demo"), "--leads", "60", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "accounting: read = rejected + skipped + unchanged + new + changed + deleted: ok" in (
        result.stdout
    )
    assert "MISMATCH" not in result.stdout
    with sqlite3.connect(tmp_path / "demo" / "state" / "state.db") as db:
        delivered = dict(
            db.execute("SELECT sink, COUNT(*) FROM leads WHERE state = 'delivered' GROUP BY sink")
        )
        outcomes = dict(db.execute("SELECT sink, COUNT(*) FROM outcomes GROUP BY sink"))
    assert set(delivered) == {"jodo", "ameyo", "ucontact"}
    assert len(set(delivered.values())) == 1 and min(delivered.values()) > 40
    assert set(outcomes) == {"jodo", "ameyo", "ucontact"}
    assert (tmp_path / "demo" / "inbox" / "done" / "leads-export.csv.rejects.csv").exists()
