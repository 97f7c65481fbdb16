"""kill -9 at 20 points of a pass (pull, reconcile, push, poll, writeback), then restart.

Each point: a fresh CRM export, Jodo simulator and CSV writeback; `syncd run --once`
(a real process) is killed with SIGKILL there and run again. Afterwards the dialer
holds every valid lead exactly once, every refused row is refused once, every
outcome version is written back exactly once, the store is intact and every
finished pass balanced. ``bench/crash_soak.py --count N`` runs a longer soak.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from bench.crash_soak import KillPoint, check, kill_point, plan

LEADS, CHUNK_ROWS, BATCH = 120, 20, 10
POINTS = plan(20, seed=20261122, leads=LEADS, chunk_rows=CHUNK_ROWS, batch_size=BATCH)
# Every stage once more against each of the other dialers.
OTHERS = plan(5, seed=7, leads=LEADS, chunk_rows=CHUNK_ROWS, batch_size=BATCH)
CASES = [("jodo", p) for p in POINTS] + [(d, p) for d in ("ameyo", "ucontact") for p in OTHERS]


def test_the_plan_covers_every_stage() -> None:
    stages = {p.stage for p in POINTS}
    assert stages == {"pull", "push", "poll", "writeback", "time"}
    assert {p.when for p in POINTS if p.stage == "push"} == {"before", "after"}


@pytest.mark.slow
@pytest.mark.parametrize(("dialer", "point"), CASES, ids=lambda v: str(v))
def test_after_kill_9_and_a_restart_nothing_is_lost_or_doubled(
    dialer: str, point: KillPoint, tmp_path: Path
) -> None:
    result = kill_point(
        point, tmp_path, dialer=dialer, leads=LEADS, chunk_rows=CHUNK_ROWS, batch_size=BATCH
    )

    assert result.ok, "\n".join(result.problems)
    if point.stage in ("pull", "push", "poll"):
        assert result.killed, "the kill point was never reached"


def test_the_checks_notice_a_lost_lead_and_a_doubled_outcome(tmp_path: Path) -> None:
    # The checker must not pass vacuously: break a finished world and it must say so.
    from collections import Counter

    result = kill_point(KillPoint("time", delay_s=60), tmp_path, leads=20)
    assert result.ok and not result.killed
    published = sorted((tmp_path / "outbox").glob("*.csv"))
    assert published
    with published[0].open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    with published[0].open("a", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerow(rows[1])

    problems = check(tmp_path, Counter({f"L{i}": 1 for i in range(1, 20)}), 20)

    assert any("holds the wrong leads" in p and "L0" in p for p in problems)
    assert any("written back twice" in p for p in problems)
