"""A batch the dialer refuses for one bad record is split until that record stands alone.

Jodo answers a whole ImportProcessData batch with ``status 5`` when any record in it
is bad, without saying which. The bad record here is one whose CRM ``slot`` column
is mapped straight onto Jodo's ``callDateTime`` field and holds text Jodo cannot
read: syncd passes extra fields through untouched, so only the dialer can refuse it.
"""

from __future__ import annotations

import math
from pathlib import Path

from syncd.simulators.jodo.api import JodoSimulator, create_app
from syncd.simulators.server import running
from tests.conftest import Simulated, drop_csv, run_cli
from tests.support.reliability import jodo_sink, route, run_engine, settings_for, write_config

HEADER = "id,first,last,phone,email,callback,slot\n"


def export(n: int, bad: set[int]) -> str:
    rows = [f"L{i},F{i},S{i},98{i:08d},,,{'next tuesday' if i in bad else ''}\n" for i in range(n)]
    return HEADER + "".join(rows)


def config(tmp_path: Path, url: str, batch_size: int) -> Path:
    return write_config(
        tmp_path,
        [jodo_sink(url, batch_size=batch_size, push_concurrency=1)],
        routes=[route("jodo", map={"fields": {"callDateTime": "slot"}})],
    )


def test_one_bad_record_is_isolated_and_the_rest_of_its_batch_is_delivered(
    jodo: Simulated, tmp_path: Path
) -> None:
    path = config(tmp_path, jodo.url, batch_size=40)
    drop_csv(tmp_path / "inbox", "a.csv", export(40, bad={17}))

    result = run_cli("run", "--once", "-c", str(path))

    assert result.returncode == 0, result.stderr  # refused with a reason counts as done
    held = {r["leadnumber"] for r in jodo.sim.records()}
    assert held == {f"L{i}" for i in range(40)} - {"L17"}
    assert all(n == 1 for n in jodo.sim.received().values())  # nobody was sent twice
    pushes = jodo.sim.requests["ImportProcessData"]
    assert pushes <= 1 + 2 * math.ceil(math.log2(40))
    assert "sink.push.bisect" in result.stderr

    status = run_cli("status", "-c", str(path))
    assert "Invalid callDateTime" in status.stdout
    explain = run_cli("explain", "L17", "-c", str(path))
    assert "rejected" in explain.stdout and "Invalid callDateTime" in explain.stdout


async def test_several_bad_records_are_each_refused_and_only_they(tmp_path: Path) -> None:
    sim = JodoSimulator()
    bad = {3, 30, 31, 63}
    with running(create_app(sim)) as url:
        path = config(tmp_path, url, batch_size=64)
        drop_csv(tmp_path / "inbox", "a.csv", export(64, bad=bad))
        summary = await run_engine(settings_for(path), deadline_s=60)

    counts = summary.sinks["jodo"]
    assert (counts.delivered, counts.refused, counts.failed, counts.pending) == (60, 4, 0, 0)
    assert {r["leadnumber"] for r in sim.records()} == {f"L{i}" for i in range(64) if i not in bad}
    assert summary.balanced


async def test_a_batch_of_only_bad_records_costs_at_most_twice_its_size_in_requests(
    tmp_path: Path,
) -> None:
    sim = JodoSimulator()
    with running(create_app(sim)) as url:
        path = config(tmp_path, url, batch_size=16)
        drop_csv(tmp_path / "inbox", "a.csv", export(16, bad=set(range(16))))
        summary = await run_engine(settings_for(path), deadline_s=60)

    assert summary.sinks["jodo"].refused == 16
    assert sim.records() == []
    assert sim.requests["ImportProcessData"] <= 2 * 16 - 1
