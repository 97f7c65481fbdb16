"""Three `syncd run` replicas on one PostgreSQL store: kill -9 the one leading the pull
mid-pull, then another mid-push; every lead reaches the dialer, once, and nothing is lost."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from syncd.simulators.faults import Faults
from syncd.simulators.jodo.api import JodoSimulator
from syncd.state.postgres import dsn_of
from tests.conftest import daemon_config, drop_csv, run_cli
from tests.support.jodo_outcomes import serve
from tests.support.stores import drop_schema, new_schema, pg_url

LEADS = 10_000  # a pull of 100 chunks: long enough to kill its leader mid-way
LEADER_TTL_S = 6.0
LEASE_S = 5.0
THREE_DIALER_LEADS = 3000


def replica_config(tmp_path: Path, url: str, schema: str) -> Path:
    config = daemon_config(tmp_path, url, interval_s=0.5, chunk_rows=100, batch_size=100)
    state = (
        f'[state]\nurl = "{pg_url()}"\nschema_name = "{schema}"\n'
        f"leader_ttl_s = {LEADER_TTL_S}\nlease_s = {LEASE_S}\n"
    )
    text = config.read_text().replace("[state]\n", state, 1)
    config.write_text(text)
    return config


class Store:
    """Reads the shared store the way an operator's psql would."""

    def __init__(self, schema: str) -> None:
        self.schema = schema

    async def value(self, sql: str, *args: Any) -> Any:
        conn = await asyncpg.connect(dsn_of(pg_url()), server_settings={"search_path": self.schema})
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    def get(self, sql: str, *args: Any) -> Any:
        try:
            return asyncio.run(self.value(sql, *args))
        except asyncpg.UndefinedTableError:
            return None  # not migrated yet

    async def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(dsn_of(pg_url()), server_settings={"search_path": self.schema})
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    def get_rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        try:
            return asyncio.run(self.rows(sql, *args))
        except asyncpg.UndefinedTableError:
            return []  # not migrated yet


def wait_until(what: str, check: Any, bound_s: float = 120.0, every_s: float = 0.02) -> Any:
    """Return check()'s first truthy value; fail after ``bound_s`` (a bound on waiting only)."""
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"waited {bound_s:.0f}s for {what}")


def pid_of(holder: str) -> int:
    return int(holder.split(":")[-2])


def pushing_replica(store: Store, other_than: str) -> str:
    """Return a live replica (not ``other_than``) holding leads in flight, once there is one."""
    return str(
        wait_until(
            "a live replica to hold leads in flight",
            lambda: store.get(
                "SELECT lease_holder FROM leads WHERE state = 'inflight'"
                " AND lease_holder != $1 LIMIT 1",
                other_than,
            ),
        )
    )


def start_replicas(
    start_daemon: Any, config: Path, env: dict[str, str] | None = None
) -> dict[int, Any]:
    """Return three `syncd run` replicas of ``config``, ready, by process id."""
    daemons = [start_daemon(config, env=env) for _ in range(3)]
    for d in daemons:
        d.wait_for("daemon.ready", timeout=60)
    return {d.proc.pid: d for d in daemons}


def drop_leads(tmp_path: Path, prefix: str, n: int) -> None:
    """Drop an export of ``n`` valid leads ``<prefix>0…`` into the shared inbox."""
    rows = "".join(f"{prefix}{i:05d},98{i:08d},First{i},Last,,\n" for i in range(n))
    drop_csv(tmp_path / "inbox", "leads.csv", "id,phone,first,last,email,callback\n" + rows)


def test_replicas_survive_kill_9_of_the_pull_leader_and_of_a_pusher(
    tmp_path: Path, start_daemon: Any
) -> None:
    schema = new_schema()
    sim = JodoSimulator(faults=Faults(latency_ms=50))  # a dialer that takes its time
    store = Store(schema)
    try:
        with serve(sim) as jodo:
            config = replica_config(tmp_path, jodo.url, schema)
            by_pid = start_replicas(start_daemon, config)
            drop_leads(tmp_path, "K", LEADS)

            # 1. kill -9 the replica leading the pull, mid-pull
            leader = wait_until(
                "a replica to pull half-way",
                lambda: store.get(
                    "SELECT l.holder FROM leaders l WHERE l.job = 'pull:crm'"
                    " AND (SELECT count(*) FROM leads) BETWEEN 1 AND $1",
                    LEADS - 2000,
                ),
            )
            by_pid[pid_of(leader)].proc.send_signal(signal.SIGKILL)
            killed = {pid_of(leader)}
            successor = wait_until(
                "another replica to take the pull over",
                lambda: store.get(
                    "SELECT holder FROM leaders WHERE job = 'pull:crm' AND holder != $1",
                    leader,
                ),
            )
            assert pid_of(successor) not in killed

            # 2. kill -9 a replica holding leads mid-push
            pusher = pushing_replica(store, other_than=leader)
            in_doubt = store.get(
                "SELECT count(*) FROM leads WHERE state = 'inflight' AND lease_holder = $1",
                pusher,
            )
            by_pid[pid_of(pusher)].proc.send_signal(signal.SIGKILL)
            killed.add(pid_of(pusher))

            # 3. the survivor finishes the pull and every push, the dead pusher's included
            wait_until(
                "every lead delivered",
                lambda: store.get("SELECT count(*) FROM leads WHERE state = 'delivered'") == LEADS,
                bound_s=300,
                every_s=0.2,
            )
            survivor = next(d for pid, d in by_pid.items() if pid not in killed)
            status = run_cli("status", "-c", str(config))
            assert survivor.stop() == 0
    finally:
        asyncio.run(drop_schema(schema))

    records = sim.records()
    keys = [r["leadnumber"] for r in records]
    assert len(keys) == LEADS and len(set(keys)) == LEADS  # each lead held once
    received = sim.received()
    twice = [k for k, n in received.items() if n > 1]
    # Only a push in doubt (sent, its answer lost with the killed replica) is repeated,
    # and the upsert by leadnumber keeps one record; nobody else was sent twice.
    assert len(twice) <= max(in_doubt or 0, 0) + 200
    assert status.returncode == 0, status.stderr
    assert "replicas on the shared store" in status.stdout


RATE = 10.0  # requests a second the dialer allows, for all replicas together
WINDOW_S = 5.0


def busiest_window(times: list[float], window_s: float) -> int:
    """Return the most requests the simulator received within any ``window_s``."""
    times = sorted(times)
    most, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] > window_s:
            start += 1
        most = max(most, end - start + 1)
    return most


def test_three_replicas_together_keep_to_the_dialers_rate_limit(
    tmp_path: Path, start_daemon: Any
) -> None:
    schema = new_schema()
    sim = JodoSimulator()
    try:
        with serve(sim) as jodo:
            config = replica_config(tmp_path, jodo.url, schema)
            text = config.read_text().replace(
                "batch_size = 100\n", f"batch_size = 10\nrate_limit_per_s = {RATE}\n", 1
            )
            config.write_text(text)
            daemons = [start_daemon(config) for _ in range(3)]
            for d in daemons:  # each has seen the other two and taken a third of the rate
                d.wait_for("sink.limits.shared", timeout=60, replicas=3)
            rows = "".join(f"R{i:04d},98{i:08d},F,L,,\n" for i in range(600))
            drop_csv(tmp_path / "inbox", "leads.csv", "id,phone,first,last,email,callback\n" + rows)
            store = Store(schema)
            wait_until(
                "every lead delivered",
                lambda: store.get("SELECT count(*) FROM leads WHERE state = 'delivered'") == 600,
                bound_s=300,
                every_s=0.2,
            )
            metrics = httpx.get(daemons[0].base_url + "/metrics").text
            for d in daemons:
                assert d.stop() == 0
    finally:
        asyncio.run(drop_schema(schema))

    assert "syncd_replicas_live 3.0" in metrics
    assert 'syncd_leader_lease_seconds_left{job="pull:crm"}' in metrics
    pushes = [t for t, method in sim.request_times if method == "ImportProcessData"]
    assert len(pushes) >= 60  # batches of 10, never more
    everything = [t for t, _method in sim.request_times]
    # The limit holds over a window for all three together (a little slack for requests
    # bunched in transit); three replicas each at the full rate would send three times it.
    assert busiest_window(everything, WINDOW_S) <= RATE * WINDOW_S * 1.2 + 3


def test_a_sqlite_store_copied_to_postgresql_resyncs_without_sending_anything(
    tmp_path: Path,
) -> None:
    from tests.conftest import jodo_config

    schema = new_schema()
    sim = JodoSimulator()
    rows = "".join(f"C{i:03d},98{i:08d},F{i},L,,\n" for i in range(300))
    export = "id,phone,first,last,email,callback\n" + rows + "BAD,12,X,Y,,\n"
    try:
        with serve(sim) as jodo:
            config = jodo_config(tmp_path, jodo.url)
            drop_csv(tmp_path / "inbox", "day1.csv", export)
            first = run_cli("run", "--once", "-c", str(config))
            assert first.returncode == 0, first.stderr
            pushed = sim.requests["ImportProcessData"]

            copied = run_cli("state", "copy", "--to", pg_url(), "--schema", schema,
                             "-c", str(config))  # fmt: skip
            assert copied.returncode == 0, copied.stderr
            assert "300 leads" in copied.stdout and "1 rejects" in copied.stdout
            again = run_cli("state", "copy", "--to", pg_url(), "--schema", schema,
                            "-c", str(config))  # fmt: skip
            assert again.returncode != 0 and "already holds leads" in again.stderr

            text = config.read_text().replace(
                "[state]\n", f'[state]\nurl = "{pg_url()}"\nschema_name = "{schema}"\n', 1
            )
            config.write_text(text)
            drop_csv(tmp_path / "inbox", "day2.csv", export)  # the same export again
            resync = run_cli("run", "--once", "-c", str(config))
            status = run_cli("status", "-c", str(config))
    finally:
        asyncio.run(drop_schema(schema))
    assert resync.returncode == 0, resync.stderr
    assert sim.requests["ImportProcessData"] == pushed  # nothing sent again
    assert "unchanged" in resync.stdout
    # the refused row's memory came along: it is refused again without being mapped
    assert "refused before on crm->jodo: 1 of the rejected rows" in resync.stdout
    assert status.returncode == 0 and "300" in status.stdout


def test_a_replica_that_loses_its_database_is_not_ready_and_recovers(
    tmp_path: Path, start_daemon: Any
) -> None:
    from urllib.parse import urlsplit

    import httpx

    from tests.support.tcp_proxy import TcpProxy

    schema = new_schema()
    where = urlsplit(dsn_of(pg_url()))
    proxy = TcpProxy(where.hostname or "127.0.0.1", where.port or 5432)
    url = pg_url().replace(f"{where.hostname}:{where.port or 5432}", f"127.0.0.1:{proxy.port}")
    try:
        with serve(JodoSimulator()) as jodo:
            config = replica_config(tmp_path, jodo.url, schema)
            config.write_text(config.read_text().replace(pg_url(), url))
            daemon = start_daemon(config)
            daemon.wait_for("daemon.ready", timeout=60)
            ready = daemon.base_url + "/readyz"
            assert httpx.get(ready).status_code == 200
            proxy.cut()  # the database host is gone
            lost = wait_until(
                "/readyz to say the store is gone",
                lambda: (r := httpx.get(ready, timeout=10)).status_code == 503 and r,
                bound_s=60,
                every_s=0.2,
            )
            proxy.restore()
            wait_until(
                "/readyz to recover",
                lambda: httpx.get(ready, timeout=10).status_code == 200,
                bound_s=60,
                every_s=0.2,
            )
            assert daemon.stop() == 0
    finally:
        proxy.close()
        asyncio.run(drop_schema(schema))
    assert "state store" in lost.text


def published_rows(outbox: Path) -> list[dict[str, str]]:
    import csv

    rows: list[dict[str, str]] = []
    for path in sorted(outbox.glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as fh:
            rows += list(csv.DictReader(fh))
    return rows


def test_outcomes_are_written_back_once_when_the_writeback_leader_is_killed(
    tmp_path: Path, start_daemon: Any
) -> None:
    from syncd.simulators.jodo.api import DialPlan, DialResult

    n = 2000
    schema = new_schema()
    # 400 calls a second: outcomes come in over seconds, the writeback writes them in waves
    plan = DialPlan(
        interval_s=0.0025, retry_s=3600, recording_delay_s=None, results=(DialResult("Busy"),)
    )
    sim = JodoSimulator(dial=plan)
    outbox = tmp_path / "crm-out"
    store = Store(schema)
    try:
        with serve(sim) as jodo:
            config = replica_config(tmp_path, jodo.url, schema)
            text = config.read_text().replace(
                "batch_size = 100\n", "batch_size = 100\npoll = { interval_s = 1 }\n", 1
            )
            text += (
                f'\n[[writebacks]]\nname = "crm-files"\nkind = "csv"\noutbox = "{outbox}"\n'
                "rotate_s = 0\nschedule = { interval_s = 0.5 }\n"
            )
            config.write_text(text)
            by_pid = start_replicas(start_daemon, config)
            drop_leads(tmp_path, "W", n)

            leader = wait_until(
                "the writeback to publish a first file, with outcomes still to come",
                lambda: (
                    list(outbox.glob("*.csv"))
                    and store.get(
                        "SELECT holder FROM leaders WHERE job = 'writeback:crm-files'"
                        " AND (SELECT count(*) FROM outcomes WHERE status = 'busy') < $1",
                        n - 200,
                    )
                ),
            )
            by_pid[pid_of(leader)].proc.send_signal(signal.SIGKILL)
            wait_until(
                "another replica to lead the writeback",
                lambda: store.get(
                    "SELECT holder FROM leaders WHERE job = 'writeback:crm-files' AND holder != $1",
                    leader,
                ),
            )
            pending = (
                "SELECT (SELECT count(*) FROM outcomes WHERE status = 'busy') = $1 AND"
                " NOT EXISTS (SELECT 1 FROM outcomes o LEFT JOIN writeback_marks m"
                " ON m.writeback = 'crm-files' AND m.sink = o.sink AND m.key = o.key"
                " WHERE m.version IS NULL OR m.version < o.version)"
            )
            wait_until("every outcome written back", lambda: store.get(pending, n), bound_s=300,
                       every_s=0.2)  # fmt: skip
            for pid, d in by_pid.items():
                if pid != pid_of(leader):
                    assert d.stop() == 0
    finally:
        asyncio.run(drop_schema(schema))

    written = published_rows(outbox)
    versions = [(r["key"], r["version"]) for r in written]
    assert len(versions) == len(set(versions))  # no version twice, though its writer died
    latest = {r["key"]: r for r in written}
    assert len(latest) == n and all(r["status"] == "busy" for r in latest.values())
    calls = sim.snapshot()["calls"]
    assert calls == n  # nobody dialled twice


def test_three_dialers_each_hold_every_lead_once_after_kill_9_of_two_replicas(
    tmp_path: Path, start_daemon: Any
) -> None:
    from contextlib import ExitStack

    from syncd.simulators.server import running
    from tests.support.reliability import VENDORS, export, keys, vendor_env, write_config

    n = THREE_DIALER_LEADS
    schema = new_schema()
    store = Store(schema)
    sims = {v.name: v.simulator(Faults(latency_ms=20)) for v in VENDORS}
    try:
        with ExitStack() as stack:
            urls = {v.name: stack.enter_context(running(v.app(sims[v.name]))) for v in VENDORS}
            config = write_config(
                tmp_path, [v.sink(urls[v.name]) for v in VENDORS], chunk_rows=100,
                source={"schedule": {"interval_s": 0.5}},
            )  # fmt: skip
            state = (
                f'[state]\nurl = "{pg_url()}"\nschema_name = "{schema}"\n'
                f"leader_ttl_s = {LEADER_TTL_S}\nlease_s = {LEASE_S}\n"
            )
            text = config.read_text()
            text = text[text.index("[log]") :]  # the SQLite [state] table gives way
            config.write_text(f'{state}\n[health]\nlisten = "127.0.0.1:0"\n\n{text}')
            by_pid = start_replicas(start_daemon, config, vendor_env())
            drop_csv(tmp_path / "inbox", "leads.csv", export(n))

            leader = wait_until(
                "a replica to pull part-way",
                lambda: store.get(
                    "SELECT holder FROM leaders WHERE job = 'pull:crm'"
                    " AND (SELECT count(DISTINCT key) FROM leads) BETWEEN 1 AND $1",
                    n - 300,
                ),
            )
            by_pid[pid_of(leader)].proc.send_signal(signal.SIGKILL)
            pusher = pushing_replica(store, other_than=leader)
            by_pid[pid_of(pusher)].proc.send_signal(signal.SIGKILL)
            wait_until(
                "every lead delivered to every dialer",
                lambda: (
                    store.get("SELECT count(*) FROM leads WHERE state = 'delivered'")
                    == n * len(VENDORS)
                ),
                bound_s=300,
                every_s=0.2,
            )
            survivor = next(
                d for pid, d in by_pid.items() if pid not in (pid_of(leader), pid_of(pusher))
            )
            assert survivor.stop() == 0
    finally:
        asyncio.run(drop_schema(schema))

    for vendor in VENDORS:
        held = vendor.held(sims[vendor.name])
        assert sorted(held) == sorted(keys(n)), f"{vendor.name} does not hold each lead once"
