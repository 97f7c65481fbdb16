"""Benchmark: the pull alone into a PostgreSQL store — an initial load of N rows, then
the same export again (a re-sync) — with the statements it sent and the CPU it took.

One process pulls (the leader's `Puller`, as `syncd run` runs it) into a fresh schema;
no dialer is called. Printed per pass: the wall time, the CPU of this process and of
its mapping workers, the CPU of its PostgreSQL sessions (read from /proc: the database
must run on this host), the statements sent (round trips, BEGIN and COMMIT included)
and the slowest statement kinds. CPU and statement counts hold on a busy machine;
the wall time does not.

    SYNCD_BENCH_PG_URL=postgresql://postgres@127.0.0.1:5432/test \\
        python bench/bench_pg_pull.py --leads 50000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
from asyncpg.connection import Connection

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_leads import generate
from tree_memory import cpu_of

CONFIG = """\
[state]
url = "{url}"
schema_name = "{schema}"
[log]
level = "warning"
[[sources]]
name = "crm"
kind = "csv_drop"
inbox = "{inbox}"
chunk_rows = {chunk_rows}
settle_s = 0
[[sinks]]
name = "jodo"
kind = "jodo"
url = "http://127.0.0.1:9/CustomerWebServices/handleCustomerWS"
apikey = "bench"
servicekey = "VoiceProcess"
updateparam = "crmuniquefield"
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

# (method, statement's first words) -> [count, seconds]
Counted = dict[tuple[str, str], list[float]]


def count_statements(counted: Counted) -> None:
    """Count and time every statement asyncpg sends, whichever connection sends it."""
    for name in ("fetch", "execute", "executemany", "fetchval", "fetchrow", "prepare"):
        original = getattr(Connection, name)

        def wrapped(
            original: Callable[..., Awaitable[Any]] = original, name: str = name
        ) -> Callable[..., Awaitable[Any]]:
            async def call(self: Connection, query: str, *args: Any, **kw: Any) -> Any:
                started = time.perf_counter()
                try:
                    return await original(self, query, *args, **kw)
                finally:
                    entry = counted.setdefault((name, " ".join(query.split())[:80]), [0, 0.0])
                    entry[0] += 1
                    entry[1] += time.perf_counter() - started

            return call

        setattr(Connection, name, wrapped())


def descendants_cpu() -> float:
    """Return the CPU of this process's descendants still running (the mapping workers)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    me = os.getpid()

    def below_me(pid: int) -> bool:
        while pid in parent and pid > 1:
            pid = parent[pid]
            if pid == me:
                return True
        return False

    return sum(cpu_of(pid) for pid in parent if below_me(pid))


def load_average() -> str:
    """Return the machine's load over 1, 5 and 15 minutes (/proc/loadavg)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def sessions(conn: asyncpg.Connection) -> list[int]:
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'syncd %:%'"
    )
    return [int(r[0]) for r in rows]


async def one_pass(settings: Any, store: Any, url: str, counted: Counted) -> str:
    from syncd.core.summary import RunSummary
    from syncd.run.pull import Puller

    counted.clear()
    watch = await asyncpg.connect(url)
    before = {pid: cpu_of(pid) for pid in await sessions(watch)}
    own = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    puller = Puller(settings, store, RunSummary("bench"))
    try:
        await puller.pull_all()
    finally:
        workers = descendants_cpu()
        puller.close()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    pids = set(before) | set(await sessions(watch))
    server = sum(cpu_of(pid) - before.get(pid, 0.0) for pid in pids)
    await watch.close()
    main = after.ru_utime + after.ru_stime - own.ru_utime - own.ru_stime
    statements = int(sum(n for n, _ in counted.values()))
    lines = [
        f"wall {wall:.2f}s; CPU: this process {main:.2f}s, mapping workers {workers:.2f}s,"
        f" PostgreSQL sessions {server:.2f}s; {statements} statements;"
        f" load {load_average()}"
    ]
    for (name, text), (n, seconds) in sorted(counted.items(), key=lambda kv: -kv[1][1])[:8]:
        lines.append(f"    {int(n):5d} {seconds:6.2f}s {name:8s} {text}")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    from syncd import logs
    from syncd.config import load_settings
    from syncd.state import open_store

    counted: Counted = {}
    count_statements(counted)
    schema = f"syncd_bench_{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="syncd-bench-pg-pull-"))
    (work / "inbox").mkdir()
    generate(args.leads, work / "leads.csv")
    config = work / "syncd.toml"
    config.write_text(
        CONFIG.format(
            url=args.pg_url, schema=schema, inbox=work / "inbox", chunk_rows=args.chunk_rows
        )
    )
    settings = load_settings(config)
    logs.configure_from(settings.log)
    store = await open_store(settings.state)
    try:
        for name in ("initial load", "re-sync, unchanged"):
            shutil.copy(work / "leads.csv", work / "inbox" / f"{name[:2]}.csv")
            print(f"{name}: {await one_pass(settings, store, args.pg_url, counted)}", flush=True)
    finally:
        await store.close()
        conn = await asyncpg.connect(args.pg_url)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":  # the mapping workers import this module again
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=50_000)
    parser.add_argument("--chunk-rows", type=int, default=5000)
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("SYNCD_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    asyncio.run(main(parser.parse_args()))
