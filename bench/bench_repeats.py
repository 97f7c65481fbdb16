"""Benchmark: the CSV source's read ahead for last-row-wins (a file's repeated keys).

Reads a file of N leads through the CSV source twice, each in a fresh process: once
without key columns (no read ahead, the source as it reads chunks) and once with the
route's key column (each file read once ahead, ``CsvDropSource._last_lines``), and
prints each one's wall time and peak RSS. ``--repeat`` adds, at the end of the file, a
second row for that share of the keys (an export that lists a changed lead again): the
repeated keys are what the read ahead keeps.

    python bench/bench_repeats.py --rows 1000000
    python bench/bench_repeats.py --rows 1000000 --repeat 0.2 --reader rows
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_leads import generate


def write_export(path: Path, rows: int, repeat: float) -> None:
    """Write ``rows`` leads, then again every ``1/repeat``-th of them with another name."""
    generate(rows, path)
    if repeat <= 0:
        return
    step = max(round(1 / repeat), 1)
    with path.open("a", encoding="utf-8", newline="") as fh:
        for i in range(0, rows, step):  # CRLF as gen_leads' csv.writer ends its lines
            fh.write(f"L{i:08d},Again,Later,9{(i * 7919 + 1234567) % 10**9:09d},,,,,P1\r\n")


def child(inbox: str, reader: str, keyed: bool, chunk_rows: int) -> None:
    """Read every chunk of the inbox's file (not filed away: it is read again next time)."""
    from syncd.sources.csv_drop import CsvDropConfig, CsvDropSource

    config = CsvDropConfig.model_validate(
        {"name": "crm", "inbox": inbox, "chunk_rows": chunk_rows, "reader": reader, "settle_s": 0}
    )
    source = CsvDropSource(config, required_columns={"lead_id", "mobile"})
    if keyed:
        source.key_columns = frozenset({"lead_id"})

    async def read() -> tuple[int, int]:
        rows, repeated = 0, 0
        async for chunk in source.chunks(None):
            rows += len(chunk.rows)
            repeated = len(chunk.last_lines.get("lead_id", {}))
        return rows, repeated

    t = time.perf_counter()
    rows, repeated = asyncio.run(read())
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": rows, "repeated": repeated, "wall": wall, "peak_mb": peak}))


def measure(inbox: Path, reader: str, keyed: bool, chunk_rows: int) -> dict[str, float]:
    args = [str(inbox), reader, "1" if keyed else "", str(chunk_rows)]
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        inbox, reader, keyed, chunk_rows = sys.argv[2:6]
        child(inbox, reader, bool(keyed), int(chunk_rows))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=float, default=0.0, help="share of keys listed again")
    parser.add_argument("--reader", choices=["lines", "rows"], default="lines")
    parser.add_argument("--chunk-rows", type=int, default=20_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="syncd-repeats-"))
    try:
        inbox = work / "inbox"
        (inbox / "processing").mkdir(parents=True)
        export = inbox / "processing" / "leads.csv"  # claimed already: read in place each time
        write_export(export, args.rows, args.repeat)
        size = export.stat().st_size / 1e6
        print(
            f"{args.rows:,} leads (+{args.repeat:.0%} listed again), {size:.0f} MB, {args.reader}"
        )
        for keyed in (False, True):
            m = measure(inbox, args.reader, keyed, args.chunk_rows)
            what = "with the read ahead   " if keyed else "without (chunks only) "
            print(
                f"  {what} {m['wall']:6.2f}s  peak RSS {m['peak_mb']:6.0f} MB  "
                f"rows {m['rows']:,}  repeated keys kept {m['repeated']:,}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
