"""Benchmark: N leads against a dialer with latency, 1 and 2 replicas on PostgreSQL, and
the single-host SQLite store beside them.

Each replica is a `syncd run` daemon; the Jodo simulator is a process of its own. A
PostgreSQL run starts its replicas on a fresh schema, drops the export into the
shared inbox and times it until the store holds every lead delivered; the SQLite
figure is one `syncd run --once`. Printed: the wall time from the drop, the push
rate (delivered leads a second from the first delivery to the last), requests
the simulator received, and the failover of the pull's leader when `--kill-leader`.

The SQLite push rate is measured the same way, from its first delivery to its last
(the store's `delivered_at`): a `--once` pushes while it pulls, as a PostgreSQL
replica's pushes start with the first chunk the pull commits (on the same cores).
Then the ratios issue 26 sets targets for: the SQLite rate over one replica's
(at most 1.25) and two replicas' over one's (at least 1.6). With `--repeat`, each
configuration runs that many times (interleaved) and the ratios take the medians.

    SYNCD_BENCH_PG_URL=postgresql://postgres@127.0.0.1:5432/test \\
        python bench/bench_replicas.py --leads 50000 --latency-ms 50 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sync import free_port, wait_http
from gen_leads import generate
from tree_memory import cpu_of

CONFIG = """\
[state]
{state}
[log]
level = "info"
format = "json"
[health]
listen = "127.0.0.1:0"
[[sources]]
name = "crm"
kind = "csv_drop"
inbox = "{inbox}"
chunk_rows = {chunk_rows}
settle_s = 0
schedule = {{ interval_s = 1 }}
[[sinks]]
name = "jodo"
kind = "jodo"
url = "http://127.0.0.1:{port}/CustomerWebServices/handleCustomerWS"
apikey = "env:BENCH_JODO_APIKEY"
servicekey = "VoiceProcess"
updateparam = "crmuniquefield"
dial_format = "00"
batch_size = {batch_size}
push_concurrency = {concurrency}
outcomes = {{ enabled = false }}
agents = {{ enabled = false }}
[[routes]]
source = "crm"
sink = "jodo"
default_region = "IN"
[routes.map]
key = "lead_id"
phone = "mobile"
first_name = "first_name"
last_name = "last_name"
"""


class CpuMeter:
    """The CPU a run took, by part: the daemons with their mapping workers, their PostgreSQL
    sessions and the simulator. Sampled at each poll (a process keeps its highest reading,
    so one that exited still counts); CPU holds on a machine others keep busy, where the
    rates do not.

    A daemon's sessions are the server processes whose client port is a TCP socket the
    daemon holds (/proc/net/tcp and the daemon's descriptors): the database must run on
    this host, else their part reads 0.
    """

    def __init__(self, daemons: list[int], simulator: int) -> None:
        self.daemons, self.simulator = daemons, simulator
        self.seen: dict[tuple[str, int], float] = {}

    def sample(self, sessions: dict[int, int]) -> None:
        """Read each process's CPU; ``sessions`` maps the server pids to their client ports."""
        parent = _parents()
        for pid in parent:
            if _below(pid, self.daemons, parent):
                self._keep("daemons", pid)
        self._keep("simulator", self.simulator)
        ports = _ports_of(self.daemons)
        for pid, port in sessions.items():
            if port in ports:
                self._keep("database", pid)

    def _keep(self, part: str, pid: int) -> None:
        cpu = cpu_of(pid)
        self.seen[(part, pid)] = max(self.seen.get((part, pid), 0.0), cpu)

    def report(self) -> str:
        parts = {"daemons": 0.0, "database": 0.0, "simulator": 0.0}
        for (part, _pid), cpu in self.seen.items():
            parts[part] += cpu
        return ", ".join(f"{name} {cpu:.1f}s" for name, cpu in parts.items())


def _parents() -> dict[int, int]:
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parent


def _below(pid: int, roots: list[int], parent: dict[int, int]) -> bool:
    """Return True when ``pid`` is one of ``roots`` or runs under one."""
    while pid > 1:
        if pid in roots:
            return True
        pid = parent.get(pid, 1)
    return False


def _ports_of(pids: list[int]) -> set[int]:
    """Return the local TCP ports of the sockets the processes ``pids`` hold."""
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


class Watch:
    """What the store says of a run, through one connection kept open for the whole run.

    Polled five times a second on the cores the replicas run on: a connection per poll
    and counts over the whole table cost PostgreSQL about 36 ms a poll at 50,000
    leads (a sixth of a core), which only the PostgreSQL runs paid. A poll asks
    whether anything was delivered and whether anything waits (a probe of the outbox
    index each); the counts are read once, at the end.
    """

    def __init__(self, url: str, schema: str) -> None:
        self.url, self.schema = url, schema
        self.loop = asyncio.new_event_loop()
        self.conn: asyncpg.Connection | None = None

    def _run(self, query: str, *args: object) -> Any:
        async def fetch() -> Any:
            if self.conn is None:
                self.conn = await asyncpg.connect(
                    dsn(self.url), server_settings={"search_path": self.schema}
                )
            try:
                return await self.conn.fetchrow(query, *args)
            except asyncpg.UndefinedTableError:
                return None  # the first replica has not made the tables yet

        return self.loop.run_until_complete(fetch())

    def progress(self) -> tuple[bool, bool, bool]:
        """Return (a lead was delivered, the export read whole and nothing waiting, the
        export read whole)."""
        row = self._run(
            "SELECT EXISTS (SELECT 1 FROM leads WHERE sink = 'jodo' AND state = 'delivered'),"
            " EXISTS (SELECT 1 FROM leads WHERE sink = 'jodo'"
            "   AND state IN ('pending', 'inflight', 'held')),"
            " EXISTS (SELECT 1 FROM leads),"
            " (SELECT value FROM cursors WHERE source = 'crm')"
        )
        if row is None:
            return False, False, False
        delivered, waiting, known, cursor = row
        read = bool(cursor) and json.loads(cursor).get("done") is True
        return bool(delivered), read and known and not waiting, read

    def counts(self) -> tuple[int, int]:
        """Return (leads delivered, leads known)."""
        row = self._run("SELECT count(*) FILTER (WHERE state = 'delivered'), count(*) FROM leads")
        return (int(row[0]), int(row[1])) if row is not None else (0, 0)

    def sessions(self) -> dict[int, int]:
        """Return the server pid and client port of each session of the database."""

        async def fetch() -> Any:
            assert self.conn is not None
            return await self.conn.fetch(
                "SELECT pid, client_port FROM pg_stat_activity WHERE client_port IS NOT NULL"
            )

        if self.conn is None:
            return {}
        return {int(r[0]): int(r[1]) for r in self.loop.run_until_complete(fetch())}

    def leader_of(self, job: str) -> str | None:
        row = self._run("SELECT holder FROM leaders WHERE job = $1", job)
        return str(row[0]) if row is not None and row[0] else None

    def close(self) -> None:
        if self.conn is not None:
            self.loop.run_until_complete(self.conn.close())
        self.loop.close()


async def drop(url: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn(url))
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


class Simulator:
    def __init__(self, env: dict[str, str], latency_ms: float) -> None:
        self.port = free_port()
        faults = ["--faults", json.dumps({"latency_ms": latency_ms})] if latency_ms else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "syncd", "simulate", "jodo", "--port", str(self.port), *faults],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_http(f"http://127.0.0.1:{self.port}/_sim/state")

    def requests(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_sim/state") as resp:
            return int(json.load(resp)["requests"].get("ImportProcessData", 0))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def write_config(folder: Path, state: str, port: int, args: argparse.Namespace) -> Path:
    config = folder / "syncd.toml"
    config.write_text(
        CONFIG.format(
            state=state,
            inbox=folder / "inbox",
            port=port,
            chunk_rows=args.chunk_rows,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
        )
    )
    return config


# issue 26, point 8
SQLITE_OVER_PG1_MAX = 1.25
PG2_OVER_PG1_MIN = 1.6


def delivered_in(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(
            conn.execute("SELECT count(*) FROM leads WHERE state = 'delivered'").fetchone()[0]
        )


def delivery_span(db: Path) -> float:
    """Return the seconds from the first delivery to the last (the store's delivered_at)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        first, last = conn.execute(
            "SELECT min(delivered_at), max(delivered_at) FROM leads WHERE state = 'delivered'"
        ).fetchone()
    return float(last - first) if first is not None else float("nan")


def sqlite_run(
    args: argparse.Namespace, work: Path, env: dict[str, str], run: int
) -> tuple[str, float]:
    sim = Simulator(env, args.latency_ms)
    try:
        folder = work / f"sqlite-{run}"
        (folder / "inbox").mkdir(parents=True)
        config = write_config(folder, f'path = "{folder / "state.db"}"', sim.port, args)
        shutil.copy(work / "leads.csv", folder / "inbox" / "leads.csv")
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "syncd", "run", "--once", "-c", str(config)],
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        (folder / "once.log").write_text(done.stderr)
        # From the first delivery to the last, as a replica's: a --once pushes while it
        # pulls, so its push stage alone holds only the part after the pull.
        push = delivery_span(folder / "state.db")
        requests = sim.requests()
        delivered = delivered_in(folder / "state.db")
        rate = delivered / push if push > 0 else float("nan")
        line = (
            f"SQLite, --once   : {wall:7.1f}s wall, pushing {push:6.1f}s "
            f"= {rate:8,.0f} leads/s, {delivered:,} delivered, {requests:,} requests, "
            f"exit {done.returncode}"
        )
        return line, rate
    finally:
        sim.stop()


def postgres_run(
    args: argparse.Namespace, work: Path, env: dict[str, str], replicas: int, run: int
) -> tuple[str, float]:
    url = args.pg_url
    schema = f"syncd_bench_{uuid.uuid4().hex[:8]}"
    sim = Simulator(env, args.latency_ms)
    folder = work / f"pg{replicas}-{run}"
    (folder / "inbox").mkdir(parents=True)
    state = f'url = "{url}"\nschema_name = "{schema}"\nleader_ttl_s = {args.leader_ttl_s}'
    config = write_config(folder, state, sim.port, args)
    daemons: list[subprocess.Popen[str]] = []
    watch = Watch(url, schema)
    try:
        for i in range(replicas):
            with (folder / f"replica-{i}.log").open("w") as logged:  # with --keep
                daemons.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "syncd", "run", "-c", str(config)],
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=logged,
                        text=True,
                    )
                )
        time.sleep(3)  # a benchmark may wait: let every replica start and see the others
        meter = CpuMeter([d.pid for d in daemons], sim.proc.pid)
        meter.sample(watch.sessions())
        at_start = dict(meter.seen)  # what starting took is not the run's
        shutil.copy(work / "leads.csv", folder / "inbox" / "leads.csv.part")
        os.rename(folder / "inbox" / "leads.csv.part", folder / "inbox" / "leads.csv")
        started = time.perf_counter()
        first = failover = pulled = None
        timeline: list[tuple[float, int, int]] = []  # (seconds, delivered, read) with --timeline
        killed_at: float | None = None
        dead: str | None = None
        while True:
            any_delivered, finished, read = watch.progress()
            now = time.perf_counter()
            if any_delivered and first is None:
                first = now
            if read and pulled is None:
                pulled = now
            if args.kill_leader and dead is None and watch.counts()[1] >= args.leads // 4:
                dead = watch.leader_of("pull:crm")
                if dead is not None:
                    pid = int(dead.split(":")[-2])
                    os.kill(pid, signal.SIGKILL)
                    killed_at = now
            if dead is not None and failover is None and killed_at is not None:
                holder = watch.leader_of("pull:crm")
                if holder not in (None, dead):
                    failover = now - killed_at
            meter.sample(watch.sessions())
            if args.timeline:
                timeline.append((now - started, *watch.counts()))
            if finished:
                break
            if now - started > args.timeout_s:
                delivered = watch.counts()[0]
                raise RuntimeError(f"{replicas} replica(s): {delivered:,} delivered after timeout")
            time.sleep(0.2)
        wall = time.perf_counter() - started
        delivered = watch.counts()[0]
        push_s = wall - ((first or started) - started)
        line = (
            f"PostgreSQL, {replicas} rep.: {wall:7.1f}s wall, pushing {push_s:6.1f}s "
            f"= {delivered / push_s:8,.0f} leads/s, {delivered:,} delivered, "
            f"{sim.requests():,} requests, export read whole after "
            f"{(pulled or now) - started:.1f}s"
        )
        if failover is not None:
            line += f"; pull leader killed, another led after {failover:.1f}s"
        for seen, before in at_start.items():
            meter.seen[seen] -= before
        line += f"\n    CPU: {meter.report()} (load {load_average()})"
        if timeline:  # the pull's progress beside the pushes': which of them paced the run
            line += "\n    read/delivered: " + " ".join(
                f"{at:.1f}s {read // 1000}k/{sent // 1000}k" for at, sent, read in timeline[::2]
            )
        return line, delivered / push_s
    finally:
        for d in daemons:
            if d.poll() is None:
                d.send_signal(signal.SIGTERM)
        for d in daemons:
            try:
                d.wait(30)
            except subprocess.TimeoutExpired:
                d.kill()
        sim.stop()
        watch.close()
        asyncio.run(drop(url, schema))


def load_average() -> str:
    """Return the machine's load over 1, 5 and 15 minutes (/proc/loadavg)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:,.0f}/s"
    return (
        f"median {statistics.median(values):,.0f}/s "
        f"(min {min(values):,.0f}, max {max(values):,.0f}, n={len(values)})"
    )


def report(rates: dict[str, list[float]]) -> str:
    """Return the push rates and the ratios issue 26 sets targets for."""
    lines = [f"{name:>6} push rate: {spread(values)}" for name, values in rates.items()]
    median = {name: statistics.median(values) for name, values in rates.items()}
    if "sqlite" in median and "pg1" in median:
        x = median["sqlite"] / median["pg1"]
        ok = "met" if x <= SQLITE_OVER_PG1_MAX else "NOT met"
        lines.append(f"sqlite/pg1 = {x:.2f} (target <= {SQLITE_OVER_PG1_MAX}: {ok})")
    if "pg1" in median and "pg2" in median:
        y = median["pg2"] / median["pg1"]
        ok = "met" if y >= PG2_OVER_PG1_MIN else "NOT met"
        lines.append(f"pg2/pg1 = {y:.2f} (target >= {PG2_OVER_PG1_MIN}: {ok})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--chunk-rows", type=int, default=5000)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=1, help="runs of each configuration")
    parser.add_argument("--leader-ttl-s", type=float, default=20.0)
    parser.add_argument("--kill-leader", action="store_true", help="kill -9 the pull's leader")
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="print, every 0.4 s of a PostgreSQL run, the leads read and delivered so far",
    )
    parser.add_argument("--timeout-s", type=float, default=1800.0)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, stores)")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("SYNCD_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="syncd-bench-replicas-"))
    env = {**os.environ, "BENCH_JODO_APIKEY": "test_org"}
    try:
        generate(args.leads, work / "leads.csv")
        floor = args.leads / args.batch_size * args.latency_ms / 1000 / args.concurrency
        shown = {**vars(args), "pg_url": re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", args.pg_url)}
        print("args:", " ".join(f"--{k.replace('_', '-')} {v}" for k, v in shown.items()))
        print(
            f"{args.leads:,} rows, dialer latency {args.latency_ms:.0f} ms, batches of "
            f"{args.batch_size}, {args.concurrency} pushes at a time per replica; "
            f"latency floor for one replica {floor:.1f}s",
            flush=True,
        )
        rates: dict[str, list[float]] = {}
        for run in range(args.repeat):
            line, rate = sqlite_run(args, work, env, run)
            rates.setdefault("sqlite", []).append(rate)
            print(line, flush=True)
            for n in args.replicas:
                line, rate = postgres_run(args, work, env, n, run)
                rates.setdefault(f"pg{n}", []).append(rate)
                print(line, flush=True)
        print(report(rates))
    finally:
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
