"""Benchmark: initial `run --once` of N leads and a re-sync with 1% changed, 0.5% new.

Runs the Jodo simulator and syncd as separate processes over loopback HTTP, the way
they run in production, and prints leads/s, wall time and peak RSS of syncd.

    python bench/bench_sync.py --leads 1000000
"""

from __future__ import annotations

import argparse
import compileall
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
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_leads import generate
from tree_memory import measured_child

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


@dataclass
class Measured:
    wall: float  # seconds
    rss_mb: float  # peak resident set of syncd (its biggest process)
    rc: int
    cpu: float  # syncd's user + sys seconds, its phone-validation processes included
    sim_cpu: float  # the simulator's user + sys seconds over the same run
    stages: str
    tree_pss_mb: float = 0.0  # peak PSS of the whole process tree (workers included)
    processes: int = 0  # the most processes the tree held at once

    def line(self, label: str, n: int, unit: str) -> str:
        return (
            f"{label:<13}: {n:>9,} {unit}  {self.wall:7.1f}s  {n / self.wall:9,.0f} {unit}/s  "
            f"cpu {self.cpu:6.1f}s (simulator {self.sim_cpu:5.1f}s)  "
            f"peak RSS {self.rss_mb:6.0f} MB, tree PSS {self.tree_pss_mb:6.0f} MB "
            f"({self.processes} processes)  exit {self.rc}"
            + (f"\n    stages: {self.stages}" if self.stages else "")
        )


def cpu_seconds(pid: int) -> float:
    """Return user + sys CPU seconds a live process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(cmd: list[str], env: dict[str, str], sim_pid: int) -> Measured:
    """Return what a command run in a fresh child cost, and what the simulator spent meanwhile."""
    sim_before = cpu_seconds(sim_pid)
    child = measured_child(cmd, env)
    sim_cpu = cpu_seconds(sim_pid) - sim_before
    for line in child.stdout.splitlines():
        if line.startswith(("accounting", "refused before")) or "crm->" in line or "jodo " in line:
            print("   ", line.rstrip())
    phases = [json.loads(line) for line in child.stderr.splitlines() if '"run.phase"' in line]
    took: dict[str, float] = {}  # a stage logged twice (a push while pulling, then after)
    for p in phases:
        took[p["phase"]] = took.get(p["phase"], 0.0) + p["seconds"]
    stages = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in took.items())
    return Measured(
        child.wall,
        child.rss_mb,
        child.rc,
        child.cpu,
        sim_cpu,
        stages,
        child.pss_mb,
        child.processes,
    )


def prototype(csv_path: Path, state: Path, port: int, args: argparse.Namespace) -> Measured:
    """Run the minimal prototype (bench/prototype_csv.py) on an export, measured alike."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve().parent / "prototype_csv.py"),
        *("--csv", str(csv_path), "--state", str(state), "--port", str(port)),
        *("--batch-size", str(args.batch_size), "--concurrency", str(args.concurrency)),
    ]
    return measured(cmd, dict(os.environ), os.getpid())


def ratios(syncd: dict[str, Measured], proto: dict[str, Measured]) -> list[str]:
    """Return issue 27's side-by-side lines: syncd's wall time over the prototype's."""
    targets = {"initial": 0.8, "re-sync": 1.0}
    lines = []
    for name, target in targets.items():
        if name not in syncd or name not in proto:
            continue
        x = syncd[name].wall / proto[name].wall
        lines.append(
            f"syncd/prototype {name}: {x:.2f}× (syncd {syncd[name].wall:.1f}s, prototype "
            f"{proto[name].wall:.1f}s; target ≤ {target}×: {'met' if x <= target else 'NOT met'})"
        )
    return lines


def median(runs: list[Measured]) -> Measured:
    """Return the run of median wall time (the upper one of an even count)."""
    return sorted(runs, key=lambda r: r.wall)[len(runs) // 2]


def latency_bound(run: Measured, n: int, args: argparse.Namespace) -> str:
    """Return the push stage beside its floor: requests × latency ÷ concurrency."""
    requests = -(-n // args.batch_size)
    floor = requests * args.latency_ms / 1000 / args.concurrency
    push = next(
        (float(p.split()[1][:-1]) for p in run.stages.split(", ") if p.startswith("push")), 0.0
    )
    return (
        f"    push stage {push:.1f}s against the bound {floor:.1f}s "
        f"({requests:,} requests × {args.latency_ms:.0f} ms ÷ {args.concurrency}): "
        f"{push / floor:.2f}× the bound"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--chunk-rows", type=int, default=20_000)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="the simulator answers each request this much later (a dialer far away)",
    )
    parser.add_argument("--gate", action="store_true", help="with the safety gate's checks on")
    parser.add_argument(
        "--scattered-keys",
        action="store_true",
        help="keys not in the exports' order (e-mail or UUID keys, an export by date)",
    )
    parser.add_argument(
        "--invalid",
        type=float,
        default=0.02,
        help="share of rows with an unreadable number (refused; a re-sync refuses them again)",
    )
    parser.add_argument(
        "--profile", type=Path, help="write cProfile stats of each run into this folder"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the re-sync this many times, each on a copy of the store as the initial sync "
        "left it (and the prototype's, interleaved), and print the medians",
    )
    parser.add_argument(
        "--against-prototype",
        action="store_true",
        help="run the minimal prototype (bench/prototype_csv.py) on the same exports in the same "
        "sitting, against a simulator of its own, and print the ratios issue 27 sets targets for",
    )
    args = parser.parse_args()
    # syncd's bytecode, as an installed package has it: a checkout run with
    # PYTHONDONTWRITEBYTECODE (set on some machines) compiles ~90 modules in every run
    # measured, 0.1-0.2 s of CPU a wheel's install paid once.
    compileall.compile_dir(Path(__file__).resolve().parents[1] / "syncd", quiet=1)
    work = Path(tempfile.mkdtemp(prefix="syncd-bench-"))
    (work / "inbox").mkdir()
    port = free_port()
    env = {**os.environ, "BENCH_JODO_APIKEY": "test_org"}
    syncd = [sys.executable, "-m", "syncd"]
    faults = ["--faults", json.dumps({"latency_ms": args.latency_ms})] if args.latency_ms else []
    sim = subprocess.Popen(
        [*syncd, "simulate", "jodo", "--port", str(port), *faults],
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
        scattered = args.scattered_keys
        generate(n, work / "day1.csv", invalid=args.invalid, scattered=scattered)
        generate(
            n, work / "day2.csv", change=0.01, new=0.005, invalid=args.invalid, scattered=scattered
        )
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
            print(measured(run("dnc"), env, sim.pid).line("do-not-call", n, "numbers"))
        if args.against_prototype:
            (work / "proto").mkdir()
            for day in ("day1.csv", "day2.csv"):
                shutil.copy(work / day, work / "proto" / day)
            proto_port = free_port()
            proto_sim = subprocess.Popen(
                [*syncd, "simulate", "jodo", "--port", str(proto_port), *faults],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_http(f"http://127.0.0.1:{proto_port}/_sim/state")
        ours: dict[str, Measured] = {}
        theirs: dict[str, Measured] = {}
        shutil.move(str(work / "day1.csv"), work / "inbox" / "day1.csv")
        initial = ours["initial"] = measured(run("initial"), env, sim.pid)
        print(initial.line("initial sync", n, "leads"))
        if args.latency_ms:
            print(latency_bound(initial, n, args))
        proto_state = work / "proto" / "state.db"
        if args.against_prototype:
            theirs["initial"] = prototype(
                work / "proto" / "day1.csv", proto_state, proto_port, args
            )
            print(theirs["initial"].line("prototype", n, "leads"))
        # What the initial sync left, to run each round of the re-sync from
        shutil.copytree(work / "state", work / "state.initial")
        shutil.copytree(work / "inbox", work / "inbox.initial")
        if args.against_prototype:
            shutil.copy(proto_state, work / "proto" / "state.initial.db")
        rounds: dict[str, list[Measured]] = {"re-sync": [], "prototype": []}
        for i in range(args.rounds):
            if i:  # back to the store and inbox the initial sync left
                for name in ("state", "inbox"):
                    shutil.rmtree(work / name)
                    shutil.copytree(work / f"{name}.initial", work / name)
            shutil.copy(work / "day2.csv", work / "inbox" / "day2.csv")
            rounds["re-sync"].append(measured(run("resync"), env, sim.pid))
            print(rounds["re-sync"][-1].line("re-sync", n, "rows") + "  (1% changed, 0.5% new)")
            if args.against_prototype:
                shutil.copy(work / "proto" / "state.initial.db", proto_state)
                rounds["prototype"].append(
                    prototype(work / "proto" / "day2.csv", proto_state, proto_port, args)
                )
                print(rounds["prototype"][-1].line("prototype", n, "rows"))
        ours["re-sync"] = median(rounds["re-sync"])
        if args.rounds > 1:
            walls = " ".join(f"{r.wall:.2f}" for r in rounds["re-sync"])
            print(f"re-sync wall of each round: {walls} s; median {ours['re-sync'].wall:.2f} s")
        if args.against_prototype:
            theirs["re-sync"] = median(rounds["prototype"])
            if args.rounds > 1:
                walls = " ".join(f"{r.wall:.2f}" for r in rounds["prototype"])
                middle = theirs["re-sync"].wall
                print(f"prototype wall of each round: {walls} s; median {middle:.2f} s")
            proto_sim.terminate()
            proto_sim.wait(10)
            for line in ratios(ours, theirs):
                print(line)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sim/state") as resp:
            state = json.load(resp)["processes"]["VoiceProcess"]
        received = state["received"]
        again = sum(1 for v in received.values() if v > 1 + args.rounds)  # a round re-sends
        print(
            f"simulator holds {len(state['records']):,} records; "
            f"records pushed more than once a run: {again}"
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
