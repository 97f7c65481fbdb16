"""One `syncd run --once` as cron runs it, and what it leaves for an operator to read."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from tests.conftest import run_cli

BALANCED = "accounting: read = rejected + skipped + unchanged + new + changed + deleted: ok"


def finished(stderr: str) -> dict[str, int]:
    """Return the counts of the run's `run.finished` log line."""
    for line in stderr.splitlines():
        if '"run.finished"' in line:
            return dict(json.loads(line))
    raise AssertionError(f"no run.finished line in:\n{stderr}")


def once(config: Path, says: str = "") -> dict[str, int]:
    """Run `syncd run --once`; it must exit 0 with balanced accounts and say ``says``."""
    result = run_cli("run", "--once", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert BALANCED in result.stdout
    assert says in result.stdout
    return finished(result.stderr)


def rejects_file(tmp_path: Path, name: str) -> dict[str, str]:
    """Return the rejects file filed beside a processed export: key -> reason."""
    with (tmp_path / "inbox" / "done" / f"{name}.rejects.csv").open(encoding="utf-8") as fh:
        return {row["id"]: row["reason"] for row in csv.DictReader(fh)}
