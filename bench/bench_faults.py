"""The big sync through every fault at once, beside the same sync without faults.

For each dialer simulator: a CRM export of N leads, `syncd run --once` as a real
process, once fault-free and once under the fault mix of the fault suite (20 % 5xx,
timeouts, resets, 429 with Retry-After, invalid sessions, empty/null/HTML bodies),
seeded. Prints, per run: leads the dialer holds, leads held twice, leads sent more
than once (harmless upserts), requests (all / the ones delivering leads), wall time
and syncd's exit code.

    python bench/bench_faults.py                      # 100,000 leads, every dialer
    python bench/bench_faults.py --leads 20000 --vendors jodo,ameyo
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from syncd.simulators.faults import Faults  # noqa: E402
from syncd.simulators.server import running  # noqa: E402
from tests.conftest import drop_csv, run_cli  # noqa: E402
from tests.support.reliability import (  # noqa: E402
    FAULT_MIX,
    VENDORS,
    RequestCounter,
    Vendor,
    export,
    keys,
    vendor_env,
)


@dataclass
class Run:
    vendor: str
    mode: str
    leads: int
    held: int
    twice: int
    resent: int | None
    requests: int
    pushing: int
    seconds: float
    exit_code: int
    injected: dict[str, int]


def resent(sim: Any) -> int | None:
    """Return how many leads were sent more than once, where the simulator counts it."""
    received = getattr(sim, "received", None)
    if received is None:
        return None
    counts: dict[str, int] = received()
    return sum(1 for n in counts.values() if n > 1)


def one_run(vendor: Vendor, leads: int, faults: Faults, mode: str, batch_size: int) -> Run:
    work = Path(tempfile.mkdtemp(prefix=f"syncd-bench-faults-{vendor.name}-"))
    try:
        sim = vendor.simulator(faults)
        counter = RequestCounter(vendor.app(sim), only=vendor.push_markers)
        with running(counter) as url:
            config = vendor.config(
                work, url, batch_size=batch_size, push_concurrency=4, timeout_s=1.0
            )
            drop_csv(work / "inbox", "leads.csv", export(leads))
            started = time.monotonic()
            result = run_cli("run", "--once", "-c", str(config), env=vendor_env(), timeout=7200)
            seconds = time.monotonic() - started
            held = Counter(vendor.held(sim))
        return Run(
            vendor.name,
            mode,
            leads,
            len(set(held) & keys(leads)),
            sum(1 for n in held.values() if n > 1),
            resent(sim),
            counter.total,
            counter.count,
            seconds,
            result.returncode,
            dict(sim.faults.injected),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--vendors", default=",".join(v.name for v in VENDORS))
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args(argv)
    wanted = args.vendors.split(",")
    runs: list[Run] = []
    print(
        f"{'dialer':9} {'faults':7} {'held':>8} {'twice':>6} {'resent':>7} "
        f"{'requests':>9} {'pushing':>8} {'seconds':>8} exit",
        flush=True,
    )
    for vendor in (v for v in VENDORS if v.name in wanted):
        for mode, faults in (("none", Faults()), ("mix", Faults.from_dict(FAULT_MIX))):
            run = one_run(vendor, args.leads, faults, mode, args.batch_size)
            runs.append(run)
            print(
                f"{run.vendor:9} {run.mode:7} {run.held:>8} {run.twice:>6} "
                f"{'-' if run.resent is None else run.resent:>7} {run.requests:>9} "
                f"{run.pushing:>8} {run.seconds:>8.1f} {run.exit_code}",
                flush=True,
            )
        clean, faulty = runs[-2], runs[-1]
        ratio = faulty.requests / clean.requests if clean.requests else float("nan")
        pushing = faulty.pushing / clean.pushing if clean.pushing else float("nan")
        print(
            f"          injected: {faulty.injected}; requests x{ratio:.2f}, pushing x{pushing:.2f}",
            flush=True,
        )
    ok = all(r.held == r.leads and r.twice == 0 and r.exit_code == 0 for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
