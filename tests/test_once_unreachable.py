"""`syncd run --once` from cron against a dialer that is down: the run gives up on it once
its breaker has opened and the probe after the pause failed too, instead of probing until
its deadline (an hour by default). Exit 1, the leads pending in the store, the log and the
summary say so; the next run, the dialer up, delivers each lead once."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from syncd.core.summary import EXIT_OK, EXIT_UNDELIVERED
from syncd.simulators.faults import Faults
from syncd.simulators.jodo.api import JodoSimulator, create_app
from syncd.simulators.server import running
from syncd.state.sqlite import SqliteStore
from tests.conftest import drop_csv, run_cli
from tests.support.reliability import (
    RequestCounter,
    export,
    jodo_sink,
    keys,
    vendor_env,
    write_config,
)

PUSH = b"ImportProcessData"
# Far past what giving up takes; without it the run would probe until this deadline.
DEADLINE = "90"


def events(stderr: str) -> Iterator[dict[str, Any]]:
    for line in stderr.splitlines():
        if line.startswith("{"):
            yield json.loads(line)


def pending(tmp_path: Path) -> int:
    async def count() -> int:
        store = SqliteStore(tmp_path / "state" / "state.db")
        await store.open()
        try:
            return await store.pending_count("jodo")
        finally:
            await store.close()

    return asyncio.run(count())


def down_config(tmp_path: Path, url: str) -> Path:
    # Two failed pushes open the breaker; its probe goes 1 s later (the doubling is
    # capped at 1 s by retry_max_s): well inside the deadline, again and again.
    sink = jodo_sink(url, batch_size=5, push_concurrency=1, breaker_failures=2, breaker_reset_s=1)
    config = write_config(tmp_path, [sink])
    drop_csv(tmp_path / "inbox", "a.csv", export(20))
    return config


def test_a_cron_run_gives_up_on_a_failing_dialer_after_its_probe_and_the_next_run_delivers(
    tmp_path: Path,
) -> None:
    sim = JodoSimulator(faults=Faults(error_rate=1.0))
    counter = RequestCounter(create_app(sim), only=PUSH)
    with running(counter) as url:
        config = down_config(tmp_path, url)
        down = run_cli("run", "--once", "-c", str(config), "--deadline", DEADLINE, env=vendor_env())
        pushes_while_down = counter.count
        left = pending(tmp_path)
        sim.faults.set(Faults())
        up = run_cli("run", "--once", "-c", str(config), env=vendor_env())
        held = sim.received()

    assert down.returncode == EXIT_UNDELIVERED, down.stderr[-3000:]
    # Two pushes and the probe, each with its in-call retries: then it gave up.
    assert pushes_while_down == 3 * 4
    gave_up = [e for e in events(down.stderr) if e["event"] == "sink.push.unreachable"]
    assert len(gave_up) == 1 and gave_up[0]["sink"] == "jodo"
    assert "leads wait for the next run" in gave_up[0]["action"]
    assert "gave up for this run" in " ".join(down.stdout.split())
    # The outcome poll does not retry the dialer the push just gave up on.
    assert "not polled this run" in " ".join(down.stdout.split())
    assert not [e for e in events(down.stderr) if e["event"].startswith("sink.poll")]
    assert "next probe" not in down.stdout  # the next try is the next run, not this process
    assert left == 20
    assert up.returncode == EXIT_OK, up.stdout + up.stderr[-3000:]
    assert held == {key: 1 for key in keys(20)}
    assert pending(tmp_path) == 0


def test_a_cron_run_gives_up_on_a_dialer_that_refuses_connections(tmp_path: Path) -> None:
    with socket.socket() as closed:  # bound, never listening: every connection is refused
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        config = down_config(tmp_path, url)
        down = run_cli("run", "--once", "-c", str(config), "--deadline", DEADLINE, env=vendor_env())

    assert down.returncode == EXIT_UNDELIVERED, down.stderr[-3000:]
    assert [e["sink"] for e in events(down.stderr) if e["event"] == "sink.push.unreachable"] == [
        "jodo"
    ]
    assert not [e for e in events(down.stderr) if e["event"] == "run.cut_off"]  # not the deadline
    assert pending(tmp_path) == 20
