"""Two `syncd run` replicas on a PostgreSQL server of the test's own, restarted mid-push:
every lead reaches the dialer once, none stays in flight, and no connection is ever
used by two tasks at once ("another operation is in progress")."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from syncd.simulators.faults import Faults
from syncd.simulators.jodo.api import JodoSimulator
from syncd.state.postgres import dsn_of
from tests.conftest import daemon_config, drop_csv
from tests.support.jodo_outcomes import serve
from tests.support.pg_instance import pg_instance

LEADS = 3000


def wait_until(what: str, check: Any, bound_s: float = 120.0, every_s: float = 0.05) -> Any:
    """Return check()'s first truthy value; fail after ``bound_s`` (a bound on waiting only)."""
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"waited {bound_s:.0f}s for {what}")


def counts(url: str) -> dict[str, int]:
    """Return the leads per state, as an operator's psql would see them ({} while down)."""

    async def read() -> dict[str, int]:
        conn = await asyncpg.connect(dsn_of(url), timeout=5)
        try:
            rows = await conn.fetch("SELECT state, count(*) FROM leads GROUP BY state")
        finally:
            await conn.close()
        return {r[0]: r[1] for r in rows}

    try:
        return asyncio.run(read())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return {}  # not migrated yet, or restarting


@pytest.mark.parametrize("mode", ["fast", "immediate"])  # a restart; a crash and recovery
def test_a_database_restart_mid_push_loses_no_lead_and_sends_none_twice(
    tmp_path: Path, start_daemon: Any, mode: str
) -> None:
    sim = JodoSimulator(faults=Faults(latency_ms=40))  # a dialer that takes its time
    with pg_instance() as pg, serve(sim) as jodo:
        config = daemon_config(tmp_path, jodo.url, interval_s=0.5, chunk_rows=500, batch_size=25)
        text = config.read_text().replace("[state]\n", f'[state]\nurl = "{pg.url}"\n', 1)
        text = text.replace("batch_size = 25\n", "batch_size = 25\npush_concurrency = 4\n")
        config.write_text(text)
        replicas = [start_daemon(config) for _ in range(2)]
        for d in replicas:
            d.wait_for("daemon.ready", timeout=60)
        rows = "".join(f"P{i:05d},98{i:08d},First{i},Last,,\n" for i in range(LEADS))
        drop_csv(tmp_path / "inbox", "leads.csv", "id,phone,first,last,email,callback\n" + rows)

        before = wait_until(
            "the push part-way, with leads in flight",
            lambda: (
                (c := counts(pg.url)).get("delivered", 0) >= 300
                and c.get("inflight", 0) > 0
                and c.get("delivered", 0) < LEADS - 1000
                and c
            ),
        )
        pg.restart(mode)  # every session ends, mid-statement, mid-transaction, mid-batch
        after = wait_until(
            "every lead delivered",
            lambda: (c := counts(pg.url)).get("delivered") == LEADS and c,
            bound_s=300,
            every_s=0.2,
        )
        for d in replicas:
            assert d.stop() == 0
        log = [json.dumps(e) for d in replicas for e in d.events]

    assert after == {"delivered": LEADS}  # none left in flight, pending or failed
    assert before.get("delivered", 0) < LEADS  # the restart came mid-push
    assert any('"store.failing"' in line or "push.results.waiting" in line for line in log)
    # asyncpg: "cannot switch to state 15; another operation (2) is in progress"
    shared = [line for line in log if re.search(r"another operation.{0,8} is in progress", line)]
    assert shared == []
    held = sim.holdings()
    keys = [r["key"] for part in ("open", "closed", "finished") for r in held[part]]
    assert sorted(keys) == [f"P{i:05d}" for i in range(LEADS)]  # each lead held once
    twice = {k: n for k, n in sim.received().items() if n > 1}
    assert twice == {}  # nobody was sent twice: results waited for the database
