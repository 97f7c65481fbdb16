"""`syncd run --once --dry-run`: says what a pass would do and does none of it."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from tests.conftest import Simulated, drop_csv, run_cli
from tests.support.reliability import jodo_sink, route, write_config

HEADER = "id,first,last,phone,email,callback,gone\n"


def row(i: int, last: str | None = None, gone: str = "") -> str:
    return f"L{i},First{i},{last or f'Last{i}'},98{i:08d},,,{gone}\n"


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Return every file under ``folder``: size, mtime and content digest."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): (
            p.stat().st_size,
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def cell(stdout: str, sink: str) -> list[int]:
    """Return the numbers of the dry-run table's row for ``sink``."""
    for line in stdout.splitlines():
        parts = [p.strip() for p in line.split("│") if p.strip()]
        if parts and parts[0] == sink and len(parts) == 6 and parts[1].isdigit():
            return [int(p) for p in parts[1:]]
    raise AssertionError(f"no row for {sink} in:\n{stdout}")


def config(tmp_path: Path, url: str) -> Path:
    return write_config(tmp_path, [jodo_sink(url)], routes=[route("jodo", map={"deleted": "gone"})])


def test_a_first_dry_run_reports_everything_and_touches_nothing(
    jodo: Simulated, tmp_path: Path
) -> None:
    path = config(tmp_path, jodo.url)
    rows = [row(i) for i in range(30)] + ["B1,Bad,Phone,12345,,,\n", ",No,Key,9820099999,,,\n"]
    drop_csv(tmp_path / "inbox", "export.csv", HEADER + "".join(rows))
    inbox_before = snapshot(tmp_path / "inbox")

    result = run_cli("run", "--once", "--dry-run", "-c", str(path))

    assert result.returncode == 0, result.stderr
    assert "(dry run)" in result.stdout
    assert cell(result.stdout, "jodo") == [30, 0, 0, 0, 2]  # create update remove refuse rejected
    assert "jodo would create: L0, L1, L10, L11, L12 and 25 more" in result.stdout
    assert re.search(r"rejected: export.csv line 32 \[B1\]: invalid phone '12345'", result.stdout)
    assert "accounting: read = rejected + skipped + unchanged + new + changed + deleted: ok" in (
        result.stdout
    )
    # Nothing moved, nothing written, nobody called.
    assert snapshot(tmp_path / "inbox") == inbox_before
    assert not (tmp_path / "state").exists()
    assert jodo.sim.requests == {}


def test_a_dry_run_after_real_runs_predicts_the_next_pass_exactly(
    jodo: Simulated, tmp_path: Path
) -> None:
    path = config(tmp_path, jodo.url)
    drop_csv(tmp_path / "inbox", "day1.csv", HEADER + "".join(row(i) for i in range(20)))
    assert run_cli("run", "--once", "-c", str(path)).returncode == 0
    day2 = [row(i) for i in range(20)]
    day2[3] = row(3, last="Married")
    day2[4] = row(4, last="Moved")
    day2[5] = row(5, gone="yes")  # deleted in the CRM: Jodo cannot remove, so refused
    day2 += [row(20), row(21)]
    drop_csv(tmp_path / "inbox", "day2.csv", HEADER + "".join(day2))
    state_before = snapshot(tmp_path / "state")
    inbox_before = snapshot(tmp_path / "inbox")
    requests_before = dict(jodo.sim.requests)

    preview = run_cli("run", "--once", "--dry-run", "-c", str(path))

    assert preview.returncode == 0, preview.stderr
    assert cell(preview.stdout, "jodo") == [2, 2, 0, 1, 0]
    assert "jodo would update: L3, L4" in preview.stdout
    assert "jodo would refuse: L5" in preview.stdout
    assert snapshot(tmp_path / "state") == state_before
    assert snapshot(tmp_path / "inbox") == inbox_before
    assert jodo.sim.requests == requests_before

    real = run_cli("run", "--once", "-c", str(path))
    assert real.returncode == 0, real.stderr
    received = jodo.sim.received()
    assert {k for k, n in received.items() if n == 2} == {"L3", "L4"}
    assert {"L20", "L21"} <= set(received)
    status = run_cli("status", "-c", str(path)).stdout
    assert "Jodo cannot remove a lead" in status


def test_a_dry_run_reads_a_file_a_crash_left_in_processing_without_moving_it(
    jodo: Simulated, tmp_path: Path
) -> None:
    path = config(tmp_path, jodo.url)
    processing = tmp_path / "inbox" / "processing"
    processing.mkdir(parents=True)
    (processing / "left.csv").write_text(HEADER + "".join(row(i) for i in range(5)))
    before = snapshot(tmp_path / "inbox")

    result = run_cli("run", "--once", "--dry-run", "-c", str(path))

    assert result.returncode == 0, result.stderr
    assert cell(result.stdout, "jodo") == [5, 0, 0, 0, 0]
    assert snapshot(tmp_path / "inbox") == before
