"""Benchmark: the push stage alone, N leads queued for a Jodo dialer (issue 27, the push).

One store is filled once by the pull (the leader's `Puller`, in this process; no dialer
is called): an export of N leads mapped and queued, with the gate's settings when
``--gate`` (a calling window open all day, a do-not-call column, consent). Then, ``--runs``
times, a copy of that store is pushed by `syncd run --once` as a real process with an
empty inbox against the Jodo simulator (a process of its own), and one line a run says
the push stage's wall time (its `run.phase` log line), syncd's CPU seconds (user + sys)
and the simulator's, and the CPU per delivered lead:

    push 97,980 leads  stage 6.21s  cpu 6.90s (simulator 1.71s)  70.4 µs/lead  exit 0

``--syncd-path`` runs another checkout's syncd on the same store copies, its runs
alternating with this one's (A B A B…): the A/B of a change in one sitting. (That
checkout's schema must open this one's store: the store is filled by the older of the
two, ``--fill-with``.) ``--py-spy FILE`` records each run with py-spy (collapsed stacks
by thread, one file a run: FILE.this.1, FILE.other.1…).

    python bench/bench_push.py --leads 100000 --runs 3
    python bench/bench_push.py --leads 100000 --syncd-path /tmp/base --fill-with /tmp/base
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sync import CONFIG, cpu_seconds, free_port, wait_http
from gen_leads import generate
from tree_memory import measured_child

# The gate's screens on: a window open all day (every lead's zones looked up and held to
# it), a do-not-call column and consent read from a column; no do-not-call list.
GATE = """\
[routes.policy]
windows = { all = "00:00-24:00" }
dnc_column = "product"
dnc_values = ["never-a-product"]
consent_column = "callback_at"
"""

FILL = """\
import asyncio, sys
from syncd import logs
from syncd.config import load_settings
from syncd.core.summary import RunSummary
from syncd.run.pull import Puller
from syncd.state import open_store


async def fill(config):
    settings = load_settings(config)
    logs.configure_from(settings.log)
    store = await open_store(settings.state)
    puller = Puller(settings, store, RunSummary("bench"))
    try:
        await puller.pull_all()
    finally:
        puller.close()
        await store.close()


if __name__ == "__main__":
    asyncio.run(fill(sys.argv[1]))
"""


def push_seconds(stderr: str) -> float:
    """Return the push stage's seconds from a run's JSON log (0 when it logged none)."""
    took = 0.0
    for line in stderr.splitlines():
        if '"run.phase"' in line:
            phase = json.loads(line)
            if phase.get("phase") == "push":
                took += float(phase["seconds"])
    return took


def delivered(stdout: str) -> int:
    """Return the leads the run's summary says the jodo sink delivered."""
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("│") if c.strip()]
        if len(cells) > 2 and cells[0] == "jodo":
            return int(cells[2].replace(",", ""))
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--gate", action="store_true", help="with the gate's screens on")
    parser.add_argument("--syncd-path", type=Path, help="another checkout to run beside this one")
    parser.add_argument("--fill-with", type=Path, help="the checkout whose pull fills the store")
    parser.add_argument("--py-spy", type=Path, help="record each run with py-spy")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1]
    work = Path(tempfile.mkdtemp(prefix="syncd-bench-push-"))
    (work / "inbox").mkdir()
    port = free_port()
    env = {**os.environ, "BENCH_JODO_APIKEY": "test_org"}
    sim = subprocess.Popen(
        [sys.executable, "-m", "syncd", "simulate", "jodo", "--port", str(port)],
        env=env,
        cwd=here,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/_sim/state")
        config = work / "syncd.toml"
        text = CONFIG.format(
            port=port, batch_size=args.batch_size, concurrency=args.concurrency, chunk_rows=20_000
        )
        config.write_text(text + (GATE if args.gate else ""), encoding="utf-8")
        generate(args.leads, work / "inbox" / "leads.csv", invalid=0.02)
        (work / "fill.py").write_text(FILL, encoding="utf-8")
        filler = args.fill_with or here
        subprocess.run(
            [sys.executable, str(work / "fill.py"), str(config)],
            env={**env, "PYTHONPATH": str(filler)},
            cwd=filler,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        template = work / "filled.db"
        shutil.copy(work / "state" / "state.db", template)
        trees = [("this", here)] + ([("other", args.syncd_path)] if args.syncd_path else [])
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in trees}
        for run in range(1, args.runs + 1):
            for name, tree in trees:
                for stale in (work / "state").glob("state.db*"):
                    stale.unlink()
                shutil.copy(template, work / "state" / "state.db")
                cmd = [sys.executable, "-m", "syncd", "run", "--once", "-c", str(config)]
                if args.py_spy:
                    out = f"{args.py_spy}.{name}.{run}"
                    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                    record = ["record", "-r", "250", "--threads", "-f", "raw", "-o", out]
                    cmd = [spy, *record, "--", *cmd]
                sim_before = cpu_seconds(sim.pid)
                here_env = {**env, "PYTHONPATH": str(tree)}
                cwd = os.getcwd()
                os.chdir(tree)  # python -m imports syncd from the current folder first
                try:
                    child = measured_child(cmd, here_env)
                finally:
                    os.chdir(cwd)
                sim_cpu = cpu_seconds(sim.pid) - sim_before
                stage = push_seconds(child.stderr)
                n = delivered(child.stdout) or 1
                figures[name].append((stage, child.cpu))
                print(
                    f"{name:5} run {run}: push {n:,} leads  stage {stage:5.2f}s  "
                    f"cpu {child.cpu:5.2f}s (simulator {sim_cpu:4.2f}s)  "
                    f"{child.cpu / n * 1e6:5.1f} µs/lead  exit {child.rc}  "
                    f"load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
        for name, rows in figures.items():
            stages, cpus = zip(*rows, strict=True)
            print(
                f"{name:5} median: stage {statistics.median(stages):.2f}s, "
                f"cpu {statistics.median(cpus):.2f}s"
            )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sim/state") as resp:
            held = len(json.load(resp)["processes"]["VoiceProcess"]["records"])
        print(f"simulator holds {held:,} records")
    finally:
        sim.terminate()
        sim.wait(10)
        if args.keep:
            print(f"work folder: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
