"""Benchmark: initial `run --once` of N leads and a re-sync with 1% changed, 0.5% new.

Runs the Jodo simulator and syncd as separate processes over loopback HTTP, the way
they run in production, and prints leads/s, wall time and peak RSS of syncd.

    python bench/bench_sync.py --leads 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_leads import generate

CONFIG = """\
[state]
path = "state/state.db"
[log]
level = "info"
format = "json"
[[sources]]
name = "crm"
kind = "csv_drop"
inbox = "inbox"
chunk_rows = {chunk_rows}
settle_s = 0  # the benchmark writes its exports whole, then runs at once
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
# The benchmark times the sync; outcome polling is measured separately.
outcomes = {{ enabled = false }}
agents = {{ enabled = false }}
[[routes]]
source = "crm"
sink = "jodo"
default_region = "IN"
[routes.map]
key = "lead_id"
phone = "mobile"
alt_phones = ["alt_mobile"]
first_name = "first_name"
last_name = "last_name"
email = "email"
call_at = "callback_at"
[routes.map.fields]
city = "city"
product = "product"
"""

# --gate: the safety gate on, every check that reads the lead, and a do-not-call list
# of as many numbers as leads (none of them a lead's: nothing is held or blocked).
GATE = """\
[routes.policy]
windows = {{ all = "00:00-24:00" }}
dnc_column = "product"
dnc_values = ["never-a-product"]
consent_column = "callback_at"
dnc_lists = ["register"]

[[sources]]
name = "register"
kind = "csv_drop"
inbox = "dnc"
settle_s = 0
chunk_rows = {chunk_rows}

[[dnc_lists]]
name = "register"
source = "register"
column = "number"
default_region = "IN"
"""


def write_dnc_list(n: int, path: Path) -> None:
    """Write n Indian mobile numbers no generated lead has (theirs start with 9)."""
    with path.open("w", encoding="utf-8") as fh:
        fh.write("number\n")
        fh.writelines(f"+918{(i * 7919 + 7654321) % 10**9:09d}\n" for i in range(n))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def measured(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Return (wall seconds, peak RSS MB, exit code) of a command run in a fresh child."""
    probe = (
        "import resource, subprocess, sys, time;"
        "t = time.perf_counter(); rc = subprocess.call(sys.argv[1:]);"
        "w = time.perf_counter() - t;"
        "print(w, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, *cmd], env=env, check=True, capture_output=True, text=True
    )
    for line in result.stdout.splitlines()[:-1]:
        if line.startswith("accounting") or "crm->" in line or "jodo " in line:
            print("   ", line.rstrip())
    phases = [json.loads(line) for line in result.stderr.splitlines() if '"run.phase"' in line]
    print("    stages:", ", ".join(f"{p['phase']} {p['seconds']:.1f}s" for p in phases))
    out = result.stdout.splitlines()[-1].split()
    return float(out[0]), int(out[1]) / 1024, int(out[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--chunk-rows", type=int, default=20_000)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--gate", action="store_true", help="with the safety gate's checks on")
    parser.add_argument(
        "--profile", type=Path, help="write cProfile stats of each run into this folder"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="syncd-bench-"))
    (work / "inbox").mkdir()
    port = free_port()
    env = {**os.environ, "BENCH_JODO_APIKEY": "test_org"}
    syncd = [sys.executable, "-m", "syncd"]
    sim = subprocess.Popen(
        [*syncd, "simulate", "jodo", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/_sim/state")
        config = work / "syncd.toml"
        config.write_text(
            CONFIG.format(
                port=port,
                batch_size=args.batch_size,
                concurrency=args.concurrency,
                chunk_rows=args.chunk_rows,
            )
            + (GATE.format(chunk_rows=args.chunk_rows) if args.gate else ""),
            encoding="utf-8",
        )
        n = args.leads
        t = time.perf_counter()
        generate(n, work / "day1.csv")
        generate(n, work / "day2.csv", change=0.01, new=0.005)
        print(
            f"generated {n:,} leads (+ a re-export) in {time.perf_counter() - t:.1f}s; "
            f"{(work / 'day2.csv').stat().st_size / 1e6:.0f} MB per file"
        )

        def run(name: str) -> list[str]:
            if args.profile is None:
                return [*syncd, "run", "--once", "-c", str(config)]
            args.profile.mkdir(parents=True, exist_ok=True)
            stats = str(args.profile / f"{name}.prof")
            profiled = [sys.executable, "-m", "cProfile", "-o", stats, "-m", "syncd"]
            return [*profiled, "run", "--once", "-c", str(config)]

        if args.gate:  # the list is in the store before the leads arrive
            (work / "dnc").mkdir()
            write_dnc_list(n, work / "dnc" / "register.csv")
            wall, rss, rc = measured(run("dnc"), env)
            print(f"do-not-call list: {n:>9,} numbers {wall:7.1f}s  peak RSS {rss:6.0f} MB")
        shutil.move(str(work / "day1.csv"), work / "inbox" / "day1.csv")
        wall, rss, rc = measured(run("initial"), env)
        print(
            f"initial sync : {n:>9,} leads  {wall:7.1f}s  {n / wall:9,.0f} leads/s  "
            f"peak RSS {rss:6.0f} MB  exit {rc}"
        )
        shutil.move(str(work / "day2.csv"), work / "inbox" / "day2.csv")
        wall, rss, rc = measured(run("resync"), env)
        print(
            f"re-sync      : {n:>9,} rows   {wall:7.1f}s  {n / wall:9,.0f} rows/s   "
            f"peak RSS {rss:6.0f} MB  exit {rc}  (1% changed, 0.5% new)"
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sim/state") as resp:
            import json

            state = json.load(resp)["processes"]["VoiceProcess"]
        received = state["received"]
        print(
            f"simulator holds {len(state['records']):,} records; "
            f"records pushed more than once: {sum(1 for v in received.values() if v > 2)}"
        )
    finally:
        sim.terminate()
        sim.wait(10)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work folder: {work}")


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE))
    main()
