"""Benchmark: the calling-window sweep of issue 25, 17 days in 5-minute steps.

The whole pipeline (a CSV drop every 3 hours, `run --once` at every step) on a fake
clock against the three dialer simulators; at every step each simulator says which of
its records it could dial now, checked against where each number really rings (a truth
written by hand: tests/support/sweep.py). Prints, per dialer, whether syncd holds it to
the window (what `syncd check` says) and the minutes in which it could have rung
someone outside the window.

    python bench/bench_window_sweep.py                 # the 17 days, 5-minute steps
    python bench/bench_window_sweep.py --step 15 --days 2
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog

from tests.support.sweep import SEGMENTS, report, sweep


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", type=int, default=5, help="minutes between steps")
    parser.add_argument("--days", type=int, help="only the first N days of the 17")
    args = parser.parse_args()
    segments = list(SEGMENTS)
    if args.days is not None:
        left, cut = args.days, []
        for first, days in segments:
            if left <= 0:
                break
            cut.append((first, min(days, left)))
            left -= days
        segments = cut
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(sweep(Path(tmp), segments, step_minutes=args.step))
    total = sum(days for _, days in segments)
    print(f"days: {total} ({', '.join(f'{d} +{n - 1}' for d, n in segments)})")
    print(report(result))
    print(f"wall time: {time.monotonic() - started:.0f} s")
    held_outside = sum(t.outside_minutes for t in result.sinks.values() if t.held)
    return 0 if held_outside == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
