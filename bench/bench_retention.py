"""Benchmark: the state store's size, day by day, as retention prunes it (issue 28).

A daily run on a fake clock: ``--changed`` of ``--leads`` leads change and are pushed
(one event each), ``--rejects`` rows are refused, and the store is pruned with the
default ``[retention]`` (30 days of events and rejects, 90 of runs), as the daemon
does. For the first ``--bad-days`` the CRM's export is broken and ``--bad-rejects``
rows a day are refused: once those rejects are past 30 days the file must shrink back,
not keep their pages on its free list. Prints, per simulated day, the file (and -wal)
size, its pages and free pages, and the rows kept.

    python bench/bench_retention.py                     # 60 days
    python bench/bench_retention.py --days 90 --leads 100000 --changed 20000
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog

from syncd.config import RetentionConfig
from syncd.core.model import Action, LeadWrite, Reject, ResultKind
from syncd.state.base import ChunkWrite, Completion
from syncd.state.sqlite import SqliteStore
from tests.support.clock import FakeClock

DAY = 86400.0
BAD_ROW = ["x" * 120, "+91 98450 00000", "n/a"]


async def a_day(store: SqliteStore, day: int, args: argparse.Namespace) -> None:
    """One daily run: leads changed and delivered, rows refused."""
    run_id = f"run-{day}"
    await store.start_run(run_id, "once")
    first = day * args.changed % args.leads
    changed = [(first + i) % args.leads for i in range(args.changed)]
    refused = args.bad_rejects if day < args.bad_days else args.rejects
    for start in range(0, max(len(changed), refused), 5000):
        write = ChunkWrite(run_id, "crm", f"day{day}.csv", cursor=f"{day}:{start}")
        write.leads["jodo"] = [
            LeadWrite(f"L{k}", f"h{day}-{k}", None, f'{{"v":{day}}}', Action.UPSERT, "changed", k)
            for k in changed[start : start + 5000]
        ]
        write.rejects = [
            ("jodo", Reject("crm", "invalid phone 'n/a'", line, write.origin, BAD_ROW))
            for line in range(start, min(start + 5000, refused))
        ]
        await store.apply_chunk(write)
    while batch := await store.claim("jodo", 500, 300):
        done = [Completion(q.key, q.hash, ResultKind.DELIVERED, reply="ok") for q in batch]
        await store.complete("jodo", done)
    await store.finish_run(run_id, {"day": day})


def measure(path: Path) -> tuple[float, float, int, int, int, int]:
    wal = path.with_name(path.name + "-wal")
    with sqlite3.connect(path) as db:
        count = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        events = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        rejects = db.execute("SELECT COUNT(*) FROM rejects").fetchone()[0]
    size = path.stat().st_size / 1e6
    wal_size = wal.stat().st_size / 1e6 if wal.exists() else 0.0
    return size, wal_size, count, free, events, rejects


async def simulate(path: Path, args: argparse.Namespace) -> list[tuple[float, ...]]:
    clock = FakeClock(now=1_800_000_000.0)
    store = SqliteStore(path, clock=clock)
    await store.open()
    keep = RetentionConfig().keep_s()
    rows: list[tuple[float, ...]] = []
    print(f"{'day':>4} {'file MB':>8} {'-wal MB':>8} {'pages':>7} {'free':>6} "
          f"{'events':>8} {'rejects':>8}")  # fmt: skip
    try:
        for day in range(args.days):
            await a_day(store, day, args)
            await store.prune(keep)
            size, wal, count, free, events, rejects = measure(path)
            rows.append((day, size, wal, count, free))
            print(f"{day:>4} {size:>8.2f} {wal:>8.2f} {count:>7} {free:>6} "
                  f"{events:>8} {rejects:>8}", flush=True)  # fmt: skip
            clock.advance(DAY)
    finally:
        await store.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--leads", type=int, default=20_000)
    parser.add_argument("--changed", type=int, default=4_000, help="leads changed a day")
    parser.add_argument("--rejects", type=int, default=200, help="rows refused a day")
    parser.add_argument("--bad-days", type=int, default=5, help="first days of a broken export")
    parser.add_argument("--bad-rejects", type=int, default=40_000, help="rows refused then")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        rows = asyncio.run(simulate(Path(tmp) / "state.db", args))
    peak = max(rows, key=lambda r: r[1])
    last = rows[-1]
    print(f"peak {peak[1]:.2f} MB on day {peak[0]:.0f}; day {last[0]:.0f}: {last[1]:.2f} MB, "
          f"{last[4]:.0f} free pages; {time.monotonic() - started:.0f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
