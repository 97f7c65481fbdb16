"""Benchmark: load a do-not-call list of N numbers with `syncd run --once`.

Writes a list file (E.164 numbers, one a line under a header, or national numbers with
``--national``), runs syncd with the list's source and an idle route, and prints the wall
time and the peak RSS of the whole process tree (syncd and any worker it starts).

    python bench/bench_dnc.py --numbers 1000000
    python bench/bench_dnc.py --numbers 1000000 --snapshot   # then a second version
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """\
[state]
path = "state/state.db"
[log]
level = "warning"
format = "json"
[[sources]]
name = "crm"
kind = "csv_drop"
inbox = "inbox"
settle_s = 0
[[sources]]
name = "register"
kind = "csv_drop"
inbox = "dnc"
settle_s = 0
chunk_rows = {chunk_rows}
[[sinks]]
name = "jodo"
kind = "jodo"
url = "http://127.0.0.1:9/CustomerWebServices/handleCustomerWS"
apikey = "env:BENCH_JODO_APIKEY"
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
[routes.policy]
dnc_lists = ["register"]
[[dnc_lists]]
name = "register"
source = "register"
column = "number"
default_region = "IN"
{mode_line}
"""


def write_list(n: int, path: Path, *, national: bool, shift: int = 0) -> None:
    """Write n Indian mobile numbers; ``shift`` replaces that many with others (a new version)."""
    with path.open("w", encoding="utf-8") as fh:
        fh.write("number\n")
        for i in range(shift, n + shift):
            digits = f"8{(i * 7919 + 7654321) % 10**9:09d}"
            fh.write(f"0{digits}\n" if national else f"+91{digits}\n")


def tree_rss_kb(pid: int) -> int:
    """Return the resident set (kB) of a process and all its descendants, from /proc."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return total


def measured(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, int]:
    """Return (wall seconds, peak RSS MB of the process tree sampled every 50 ms, exit code)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss_kb(proc.pid))
        time.sleep(0.05)
    return time.perf_counter() - t, peak / 1024, proc.returncode


def seed_leads(work: Path, cmd: list[str], env: dict[str, str], n: int) -> None:
    """Put n delivered leads in the store (none on the list; a third with an alternate
    number), so the load also pays for matching the list against them."""
    subprocess.run(cmd, env=env, cwd=work, check=True, stdout=subprocess.DEVNULL)
    now = time.time()
    with sqlite3.connect(work / "state" / "state.db") as conn:
        conn.executemany(
            "INSERT INTO leads (sink, key, hash, raw_hash, lead_json, action, state,"
            " delivered_hash, created_at, updated_at) VALUES"
            " ('jodo', ?, 'h', 'r', ?, 'upsert', 'done', 'h', ?, ?)",
            (
                (
                    f"L{i}",
                    json.dumps(
                        {"key": f"L{i}", "phone": f"+919{i:09d}"}
                        | ({"alt_phones": [f"+917{i:09d}"]} if i % 3 == 0 else {})
                    ),
                    now,
                    now,
                )
                for i in range(n)
            ),
        )
    print(f"seeded {n:,} delivered leads")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--national", action="store_true", help="numbers without +91")
    parser.add_argument("--snapshot", action="store_true", help="mode snapshot, two versions")
    parser.add_argument("--leads", type=int, default=0, help="delivered leads in the store")
    parser.add_argument("--profile", type=Path, help="write cProfile stats to this file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="syncd-bench-dnc-"))
    for d in ("inbox", "dnc", "state"):
        (work / d).mkdir()
    mode = "snapshot" if args.snapshot else "append"
    (work / "syncd.toml").write_text(
        CONFIG.format(
            chunk_rows=args.chunk_rows, mode_line=f'mode = "{mode}"' if args.snapshot else ""
        )
    )
    env = {**os.environ, "BENCH_JODO_APIKEY": "test_org"}
    cmd = [sys.executable, "-m", "syncd", "run", "--once", "-c", "syncd.toml"]
    if args.profile:
        cmd[1:1] = ["-m", "cProfile", "-o", str(args.profile.resolve())]
    if args.leads:
        seed_leads(work, cmd, env, args.leads)
    n = args.numbers
    write_list(n, work / "dnc" / "register.csv", national=args.national)
    wall, rss, rc = measured(cmd, env, work)
    print(
        f"load {n:,} numbers ({mode}): {wall:6.1f}s  {n / wall:9,.0f} numbers/s  "
        f"peak RSS {rss:5.0f} MB  exit {rc}"
    )
    if args.snapshot:
        write_list(n, work / "dnc" / "register-v2.csv", national=args.national, shift=n // 100)
        wall, rss, rc = measured(cmd, env, work)
        print(f"next version (1% replaced): {wall:6.1f}s  peak RSS {rss:5.0f} MB  exit {rc}")
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
