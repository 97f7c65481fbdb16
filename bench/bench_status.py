"""How long `syncd status` takes on a big store: a million leads across three dialers.

Builds a store (SQLite, and PostgreSQL when a URL is given) through the store's
own schema, fills it with SQL in the shape a long-running daemon leaves (most
leads delivered, some pending, held, failed or refused; outcomes and writeback
marks for half of them; refused rows, runs, hourly stats), then times
`syncd status -c CONFIG` as a whole process, the median of ``--repeat`` runs, one
line per store, beside the same on the empty store (what start-up, imports and
printing cost whatever the store holds). ``--profile`` adds the time of each part
`collect` gathers.

    python bench/bench_status.py --leads 1000000
    python bench/bench_status.py --leads 1000000 \\
        --pg postgresql+asyncpg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from syncd.state import open_store  # noqa: E402
from syncd.state.base import StateStore  # noqa: E402
from tests.support.reliability import (  # noqa: E402
    ameyo_sink,
    jodo_sink,
    ucontact_sink,
    vendor_env,
    write_config,
)

SINKS = ("jodo", "ameyo", "ucontact")
# A daemon's store after weeks: most leads at the dialer, a backlog, a few stuck.
STATES = [
    ("delivered", 0.90),
    ("pending", 0.04),
    ("inflight", 0.002),
    ("held", 0.01),
    ("rejected", 0.02),
    ("failed", 0.008),
    ("removed", 0.02),
]
REASONS = ["HTTP 400: bad number", "duplicate lead", "blocked (dnc) on list crm", "no phone"]
LEADS_PER_RUN = 5000
NOW = time.time()


def config(work: Path, pg_url: str | None, schema: str) -> Path:
    sinks = [jodo_sink("http://127.0.0.1:9"), ameyo_sink("http://127.0.0.1:9")]
    sinks.append(ucontact_sink("http://127.0.0.1:9"))
    writeback = {"name": "crm-files", "kind": "csv", "outbox": str(work / "out")}
    path = write_config(work, sinks, writebacks=[writeback])
    if pg_url:
        text = path.read_text(encoding="utf-8")
        state = f'[state]\nurl = "{pg_url}"\nschema_name = "{schema}"\n'
        start = text.index("[state]")
        end = text.index("\n\n", start)
        path.write_text(text[:start] + state + text[end:], encoding="utf-8")
    return path


def state_of(i: int, rng: random.Random) -> str:
    x = rng.random()
    for state, share in STATES:
        if x < share:
            return state
        x -= share
    return "delivered"


def lead_rows(n: int) -> Iterator[tuple[Any, ...]]:
    """Yield leads rows: (sink, key, hash, lead_json, action, state, attempts, next_at,
    last_error, vendor_ref, delivered_hash, run_id, created_at, updated_at, delivered_at)."""
    rng = random.Random(7)
    for i in range(n):
        sink = SINKS[i % len(SINKS)]
        state = state_of(i, rng)
        phone = f"+5989{i:07d}"
        lead = f'{{"key":"L{i}","phone":"{phone}","first_name":"Ana","fields":{{}}}}'
        error = None
        if state in ("rejected", "failed"):
            error = rng.choice(REASONS)
        elif state == "held":
            error = "held (window) outside the calling window until 09:00"
        at = NOW - (n - i) * 2.0
        delivered = state in ("delivered", "removed")
        yield (
            sink,
            f"L{i}",
            f"h{i}",
            lead,
            "delete" if state == "removed" else "upsert",
            state,
            rng.randint(0, 3),
            at + 60,
            error,
            phone if delivered else None,
            f"h{i}" if delivered else None,
            f"run-{i // LEADS_PER_RUN:05d}",
            at,
            at,
            at if delivered else None,
        )


def outcome_rows(n: int) -> Iterator[tuple[Any, ...]]:
    for i in range(0, n, 2):
        at = NOW - (n - i) * 2.0 + 600
        yield (SINKS[i % 3], f"L{i}", 1, at, "no_answer", "NO ANSWER", None, 1, at, None, f"c{i}")


def mark_rows(n: int) -> Iterator[tuple[Any, ...]]:
    for i in range(0, n, 2):
        refused = "CRM refused: unknown key" if i % 997 == 0 else None
        yield ("crm-files", SINKS[i % 3], f"L{i}", 1, NOW - (n - i) * 2.0 + 900, refused)


LEAD_COLS = (
    "sink, key, hash, lead_json, action, state, attempts, next_at, last_error, vendor_ref,"
    " delivered_hash, run_id, created_at, updated_at, delivered_at"
)
OUTCOME_COLS = (
    "sink, key, version, observed_at, status, raw_status, disposition, attempts,"
    " last_dialed_at, agent, call_id, content_hash"
)
MARK_COLS = "writeback, sink, key, version, written_at, refused"
REJECT_COLS = "run_id, source, sink, origin, line, key, reason, created_at"
RUN_COLS = "run_id, mode, started_at, finished_at, summary_json"


def reject_rows(n: int) -> Iterator[tuple[Any, ...]]:
    for i in range(n // 50):  # refused rows, a quarter of them the gate's
        yield ("run-0", "crm", SINKS[i % 3], "f.csv", i, f"R{i}", REASONS[i % 4], NOW - i)


def run_rows(n: int) -> Iterator[tuple[Any, ...]]:
    for r in range(n // LEADS_PER_RUN + 1):
        yield (f"run-{r:05d}", "once", NOW - 1e5 + r, NOW - 1e5 + r + 1, "{}")


def fill_sqlite(path: Path, n: int) -> None:
    db = sqlite3.connect(path)
    try:
        with db:
            db.executemany(f"INSERT INTO leads ({LEAD_COLS}) VALUES ({q(15)})", lead_rows(n))
            db.executemany(
                f"INSERT INTO outcomes ({OUTCOME_COLS}) VALUES ({q(11)}, 'h')", outcome_rows(n)
            )
            db.executemany(
                f"INSERT INTO writeback_marks ({MARK_COLS}) VALUES ({q(6)})", mark_rows(n)
            )
            db.executemany(f"INSERT INTO rejects ({REJECT_COLS}) VALUES ({q(8)})", reject_rows(n))
            db.executemany(f"INSERT INTO runs ({RUN_COLS}) VALUES ({q(5)})", run_rows(n))
        # No ANALYZE: the SQLite store never runs it, so its plans are made without statistics.
    finally:
        db.close()


def q(n: int) -> str:
    return ", ".join("?" * n)


async def fill_postgres(url: str, schema: str, n: int) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(f"SET search_path TO {schema}")
        await conn.copy_records_to_table(
            "leads", records=lead_rows(n), columns=[c.strip() for c in LEAD_COLS.split(",")]
        )
        await conn.copy_records_to_table(
            "outcomes",
            records=((*r, "h") for r in outcome_rows(n)),
            columns=[c.strip() for c in OUTCOME_COLS.split(",")],
        )
        await conn.copy_records_to_table(
            "writeback_marks",
            records=mark_rows(n),
            columns=[c.strip() for c in MARK_COLS.split(",")],
        )
        for table, rows, cols in (
            ("rejects", reject_rows(n), REJECT_COLS),
            ("runs", run_rows(n), RUN_COLS),
        ):
            await conn.copy_records_to_table(
                table, records=rows, columns=[c.strip() for c in cols.split(",")]
            )
        # As autovacuum leaves a settled store: statistics, and the visibility map that
        # lets PostgreSQL answer from an index without reading the rows.
        await conn.execute("VACUUM ANALYZE leads, outcomes, writeback_marks, rejects, runs")
    finally:
        await conn.close()


async def create(where: Any) -> None:
    store = await open_store(where)
    await store.close()


def time_status(cfg: Path, repeat: int) -> tuple[float, int]:
    took = []
    code = 0
    for _ in range(repeat):
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "syncd", "status", "-c", str(cfg)],
            capture_output=True,
            text=True,
            env=vendor_env(),
            cwd=ROOT,
            timeout=600,
        )
        took.append(time.monotonic() - started)
        code = code or done.returncode
        if done.returncode:
            print(done.stderr[-2000:], file=sys.stderr)
    return statistics.median(took), code


async def profile(cfg: Path) -> None:
    """Print how long each part of `collect` takes, slowest first."""
    from syncd.config import load_settings
    from syncd.run import status

    settings = load_settings(cfg, environ=vendor_env())
    store: StateStore = await open_store(settings.state)
    timings: list[tuple[float, str]] = []
    try:
        for name in dir(store):
            method = getattr(type(store), name, None)
            if name.startswith("_") or not asyncio.iscoroutinefunction(method):
                continue
            original = getattr(store, name)

            def timed(original: Any = original, name: str = name) -> Any:
                async def call(*a: Any, **k: Any) -> Any:
                    started = time.perf_counter()
                    try:
                        return await original(*a, **k)
                    finally:
                        timings.append((time.perf_counter() - started, name))

                return call

            setattr(store, name, timed())
        started = time.perf_counter()
        await status.collect(settings, store)
        total = time.perf_counter() - started
    finally:
        await store.close()
    by_name: dict[str, float] = {}
    for took, name in timings:
        by_name[name] = by_name.get(name, 0.0) + took
    print(f"  collect {total:.3f}s; slowest store calls:")
    for name, took in sorted(by_name.items(), key=lambda kv: -kv[1])[:8]:
        print(f"    {took:7.3f}s  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pg", default=os.environ.get("SYNCD_TEST_PG_URL"), help="PostgreSQL URL")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the stores; print where")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="syncd-bench-status-"))
    schema = f"bench_status_{os.getpid()}"
    ok = True
    try:
        stores = [] if args.no_sqlite else [None]
        stores += [args.pg] if args.pg else []
        for pg in stores:
            here = work / ("pg" if pg else "sqlite")
            here.mkdir()
            cfg = config(here, pg, schema)
            from syncd.config import load_settings

            state = load_settings(cfg, environ=vendor_env()).state
            asyncio.run(create(state))
            empty, _ = time_status(cfg, args.repeat)  # the floor: start-up, imports, output
            started = time.monotonic()
            if pg:
                asyncio.run(fill_postgres(pg, schema, args.leads))
            else:
                fill_sqlite(Path(state.path), args.leads)
            filled = time.monotonic() - started
            took, code = time_status(cfg, args.repeat)
            ok = ok and code == 0
            load = os.getloadavg()[0]
            print(
                f"{'postgresql' if pg else 'sqlite':10} leads {args.leads:>9,}  "
                f"syncd status {took:6.2f}s (median of {args.repeat}, exit {code}; "
                f"empty store {empty:.2f}s)  filled in {filled:.0f}s  load {load:.1f}",
                flush=True,
            )
            if args.profile:
                asyncio.run(profile(cfg))
    finally:
        if args.keep:
            print(f"kept: {work} (PostgreSQL schema {schema})")
        else:
            if args.pg:
                asyncio.run(drop_schema(args.pg, schema))
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


async def drop_schema(url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main())
