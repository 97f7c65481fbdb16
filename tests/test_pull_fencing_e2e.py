"""Two `syncd run` replicas on one PostgreSQL store; the one leading the pull freezes
(SIGSTOP: a VM pause, a long stall) half-way through an export, past its lead. The other
takes the pull over, reads the export to its end and then a second one. The frozen one,
woken, writes nothing more: its next chunk finds the lead gone and its pull stops. The
source's read position is not moved back, no export is read again or failed, and every
lead reaches the dialer."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

from syncd.simulators.jodo.api import JodoSimulator
from tests.conftest import drop_csv
from tests.support.jodo_outcomes import serve
from tests.support.stores import drop_schema, new_schema
from tests.test_replicas_e2e import Store, pid_of, replica_config, wait_until

LEADS = 6000  # 60 chunks of 100: a pull long enough to freeze its leader mid-way
MORE = 300  # a second export, read while the first leader is frozen


def export(prefix: str, n: int, numbers: str) -> str:
    rows = "".join(f"{prefix}{i:05d},{numbers}{i:08d},First{i},Last,,\n" for i in range(n))
    return "id,phone,first,last,email,callback\n" + rows


def sessions(store: Store) -> list[tuple[object, ...]]:
    """Return the store's sessions as pg_stat_activity shows them (for a failure's message)."""
    return store.get_rows(
        "SELECT pid, state, wait_event_type, wait_event, pg_blocking_pids(pid),"
        " now() - state_change, left(query, 90) FROM pg_stat_activity"
        " WHERE application_name LIKE 'syncd %:%'"
    )


def test_a_pull_leader_frozen_past_its_lead_writes_nothing_once_it_wakes(
    tmp_path: Path, start_daemon: Any
) -> None:
    schema = new_schema()
    sim = JodoSimulator()
    store = Store(schema)
    inbox = tmp_path / "inbox"
    daemons: list[Any] = []
    try:
        with serve(sim) as jodo:
            config = replica_config(tmp_path, jodo.url, schema)
            daemons += [start_daemon(config) for _ in range(2)]
            for d in daemons:
                d.wait_for("daemon.ready", timeout=60)
            by_pid = {d.proc.pid: d for d in daemons}
            drop_csv(inbox, "first.csv", export("A", LEADS, "98"))

            leader = wait_until(
                "a replica to pull part of the export",
                lambda: store.get(
                    "SELECT l.holder FROM leaders l WHERE l.job = 'pull:crm'"
                    " AND (SELECT count(*) FROM leads) BETWEEN 1 AND $1",
                    LEADS // 2,
                ),
            )
            frozen = by_pid[pid_of(leader)]
            other = next(d for d in daemons if d is not frozen)
            frozen.proc.send_signal(signal.SIGSTOP)
            try:
                try:
                    wait_until(
                        "the other replica to take the pull over",
                        lambda: store.get(
                            "SELECT holder FROM leaders WHERE job = 'pull:crm' AND holder != $1",
                            leader,
                        ),
                    )
                except AssertionError as exc:
                    raise AssertionError(f"{exc}; sessions {sessions(store)}") from None
                wait_until(
                    "the export read to its end",
                    lambda: any((inbox / "done").glob("first*.csv")),
                    bound_s=300,
                    every_s=0.1,
                )
                drop_csv(inbox, "second.csv", export("B", MORE, "97"))
                wait_until(
                    "the second export read",
                    lambda: any((inbox / "done").glob("second*.csv")),
                    bound_s=300,
                    every_s=0.1,
                )
            finally:
                frozen.proc.send_signal(signal.SIGCONT)

            lost = wait_until(
                "the woken replica to find its lead gone",
                lambda: next(
                    (e for e in list(frozen.events) if e["event"] == "pull.lead.lost"), None
                ),
                bound_s=120,
                every_s=0.1,
            )
            try:
                wait_until(
                    "every lead delivered",
                    lambda: (
                        store.get("SELECT count(*) FROM leads WHERE state = 'delivered'")
                        == LEADS + MORE
                    ),
                    bound_s=300,
                    every_s=0.2,
                )
            except AssertionError as exc:
                states = store.get_rows("SELECT state, count(*) FROM leads GROUP BY state")
                tail = [
                    (e["event"], e.get("reason", "")) for d in daemons for e in list(d.events)[-12:]
                ]
                raise AssertionError(
                    f"{exc}; leads by state {states}; last events {tail}"
                ) from None
            for d in daemons:
                assert d.stop() == 0
            events = [e for d in daemons for e in d.events]
    finally:
        for d in daemons:
            d.proc.kill()  # (stopped already, unless the test failed) before the schema goes
            d.proc.wait(10)
        asyncio.run(drop_schema(schema))

    assert lost["job"] == "pull:crm", lost
    assert [e for e in events if e["event"] == "source.origin.reread"] == []
    assert [e for e in frozen.events if e["event"] == "job.failed"] == []
    assert sorted(p.name for p in (inbox / "failed").glob("*")) == []
    records = sorted(r["leadnumber"] for r in sim.records())
    assert records == sorted(
        [f"A{i:05d}" for i in range(LEADS)] + [f"B{i:05d}" for i in range(MORE)]
    )
    assert other.proc.returncode == 0
