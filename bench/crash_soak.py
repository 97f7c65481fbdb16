"""kill -9 syncd at random points of a pass, restart it, and check nothing was lost or doubled.

Each kill point is a fresh world: a CRM export of valid and invalid rows in a CSV
drop folder, a dialer simulator (Jodo, Ameyo or uContact) that dials whatever it
holds (so there are outcomes), and a CSV writeback. `syncd run --once` runs as a
real process and is killed with SIGKILL at one point of one stage:

- ``pull``: just after the k-th chunk committed, plus a random few milliseconds
  (so inside reading, mapping, reconciling or committing the next chunk);
- ``push`` / ``poll``: on the k-th push or outcome-poll request, either ``before``
  the dialer handled it or ``after`` it did but before its answer reached syncd
  (the dialer has the batch, syncd does not know);
- ``writeback``: a random few milliseconds into the writeback stage;
- ``time``: a random moment of the pass.

Then syncd is run again until a pass ends cleanly, and the world is checked: the
dialer holds every valid lead exactly once, every invalid row is refused once
(in the store and in the rejects file), every outcome version is written back
exactly once, the store is intact and every finished pass's accounting balanced.

    python bench/crash_soak.py --count 200 [--seed 7] [--leads 120] [--dialer ameyo]

The test suite (tests/test_crash_suite.py) runs 20 such points.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from syncd.simulators.server import running  # noqa: E402
from tests.support.files import settled  # noqa: E402
from tests.support.reliability import (  # noqa: E402
    AMEYO_PASSWORD,
    UCONTACT_PASSWORD,
    RequestCounter,
    ameyo_sink,
    export,
    jodo_sink,
    keys,
    ucontact_sink,
    vendor_env,
    write_config,
)

STAGES = ("pull", "push", "poll", "writeback", "time")
BAD_ROWS = ["B1,Bad,Phone,12345,,", ",No,Key,9820099999,,", "B2,Bad,Date,9820088888,,someday"]


@dataclass(frozen=True)
class Dialer:
    """One dialer the soak can run against: a simulator that dials what it holds."""

    name: str
    simulator: Callable[[], Any]
    app: Callable[[Any], Any]
    sink: Callable[..., dict[str, Any]]
    push: bytes  # a marker of the requests that deliver leads
    poll: bytes  # a marker of the requests that read outcomes
    held: Callable[[Any], Counter[str]]  # key -> times held (or called) at once
    describe: Callable[[Any, list[str]], str] | None = None  # the dialer's view of some keys


def _jodo() -> Dialer:
    from syncd.simulators.jodo.api import JodoSimulator, create_app
    from syncd.simulators.jodo.dialing import DialPlan

    return Dialer(
        "jodo",
        lambda: JodoSimulator(dial=DialPlan(interval_s=0, retry_s=3600, recording_delay_s=0)),
        create_app,
        jodo_sink,
        b"ImportProcessData",
        b"getProcessData",
        lambda sim: Counter(str(r.get("leadnumber")) for r in sim.records()),
    )


def _ameyo() -> Dialer:
    from syncd.simulators.ameyo.api import AmeyoSimulator, create_app

    return Dialer(
        "ameyo",
        lambda: AmeyoSimulator(
            users={"syncd": AMEYO_PASSWORD}, dial_every_s=0.01, dials_per_tick=1000
        ),
        create_app,
        ameyo_sink,
        b"command=upload",
        b"command=getContacts",
        lambda sim: Counter(str(c.data.get("crm_key")) for c in sim.customer_list()),
    )


def _ucontact_held(sim: Any) -> Counter[str]:
    # Numbers, not records: L{i} dials 0091 98{i:08d}. A number counts twice if it was
    # in the dial list twice at once or was dialled twice.
    listed = sim.snapshot()["campaigns"]["Ventas->"]["dial_list"]
    held: Counter[str] = Counter()
    for number, seen in listed.items():
        times = max(seen["peak"], seen["dialed"], 1 if seen["present"] else 0)
        if times:
            held[f"L{int(number[-8:])}" if number.startswith("0091") else number] = times
    return held


def _ucontact() -> Dialer:
    from syncd.simulators.ucontact.api import UContactSimulator, create_app

    return Dialer(
        "ucontact",
        lambda: UContactSimulator(
            users={"api": UCONTACT_PASSWORD}, dial_delay_s=0.2, cdr_delay_s=0
        ),
        create_app,
        ucontact_sink,
        b"/Dialers/uploadbase",
        b"/Cdr/getrecords",
        _ucontact_held,
        _ucontact_describe,
    )


def _ucontact_describe(sim: Any, lead_keys: list[str]) -> str:
    listed = sim.snapshot()["campaigns"]["Ventas->"]["dial_list"]
    numbers = {k: f"009198{int(k[1:]):08d}" for k in lead_keys if k[1:].isdigit()}
    return "; ".join(f"{k}: {listed.get(n, 'never listed')}" for k, n in numbers.items())


DIALERS = {"jodo": _jodo, "ameyo": _ameyo, "ucontact": _ucontact}


@dataclass(frozen=True)
class KillPoint:
    """Where to kill: a stage, which occurrence in it, before/after, and a jitter."""

    stage: str
    nth: int = 1
    when: str = "before"  # push/poll: before or after the dialer handled the request
    delay_s: float = 0.0  # pull/writeback/time: how long after the trigger

    def __str__(self) -> str:
        if self.stage in ("push", "poll"):
            return f"{self.stage} #{self.nth} {self.when}"
        if self.stage == "time":
            return f"time +{self.delay_s * 1000:.0f}ms"
        return f"{self.stage} #{self.nth} +{self.delay_s * 1000:.0f}ms"


@dataclass
class PointResult:
    point: KillPoint
    killed: bool  # False: the pass ended before the point was reached
    runs: int  # passes needed after the kill
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


def plan(count: int, seed: int, *, leads: int, chunk_rows: int, batch_size: int) -> list[KillPoint]:
    """Return ``count`` kill points spread over every stage, drawn from ``seed``."""
    rng = random.Random(seed)
    chunks = max(1, -(-leads // chunk_rows))
    pushes = max(1, -(-leads // batch_size))
    points: list[KillPoint] = []
    for i in range(count):
        stage = STAGES[i % len(STAGES)]
        if stage == "pull":
            points.append(KillPoint("pull", rng.randint(1, chunks), delay_s=rng.uniform(0, 0.03)))
        elif stage in ("push", "poll"):
            nth = rng.randint(1, pushes) if stage == "push" else 1  # one poll request a pass
            when = ("before", "after")[(i // len(STAGES)) % 2]  # both, whatever the seed
            points.append(KillPoint(stage, nth, when))
        elif stage == "writeback":
            points.append(KillPoint("writeback", 1, delay_s=rng.uniform(0, 0.08)))
        else:
            points.append(KillPoint("time", delay_s=rng.uniform(0.2, 1.0)))
    return points


class Target:
    """The syncd process under test, and the means to kill it once."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.killed = threading.Event()
        self.lines: list[str] = []

    def kill(self) -> None:
        if self.proc is not None and not self.killed.is_set() and self.proc.poll() is None:
            self.killed.set()
            os.kill(self.proc.pid, signal.SIGKILL)


def run_once(config: Path, target: Target | None = None, point: KillPoint | None = None) -> int:
    """Run one `syncd run --once`; with a point, kill it there. Return its exit code."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "run", "--once", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=vendor_env(),
        cwd=ROOT,
    )
    target = target or Target()
    target.proc = proc
    timer: threading.Timer | None = None
    if point is not None and point.stage == "time":
        timer = threading.Timer(point.delay_s, target.kill)
        timer.start()
    chunks = 0
    assert proc.stderr is not None
    for line in proc.stderr:
        target.lines.append(line)
        if point is None or target.killed.is_set():
            continue
        if point.stage == "pull" and '"source.chunk.committed"' in line:
            chunks += 1
            if chunks == point.nth:
                _later(point.delay_s, target.kill)
        elif point.stage == "writeback" and '"run.phase"' in line and '"poll"' in line:
            _later(point.delay_s, target.kill)
    proc.stderr.close()
    code = proc.wait(60)
    if timer is not None:
        timer.cancel()
    return code


def _later(delay: float, action: Any) -> None:
    if delay <= 0:
        action()
    else:
        threading.Timer(delay, action).start()


def kill_point(
    point: KillPoint,
    work: Path,
    *,
    dialer: str = "jodo",
    leads: int = 120,
    chunk_rows: int = 20,
    batch_size: int = 10,
) -> PointResult:
    """Run one kill point in ``work`` against ``dialer``; return what was found afterwards."""
    started = time.monotonic()
    target = Target()
    spec = DIALERS[dialer]()
    markers = {"push": spec.push, "poll": spec.poll}

    def hook(n: int, when: str) -> None:
        if point.stage in markers and n == point.nth and when == point.when:
            target.kill()

    sim = spec.simulator()
    counter = RequestCounter(spec.app(sim), hook=hook, only=markers.get(point.stage, spec.push))
    with running(counter) as url:
        config = write_config(
            work,
            [spec.sink(url, batch_size=batch_size, push_concurrency=2, max_attempts=50)],
            writebacks=[
                {
                    "name": "crm-files",
                    "kind": "csv",
                    "outbox": str(work / "outbox"),
                    "batch_size": 25,
                    "rotate_s": 0,
                }
            ],
            chunk_rows=chunk_rows,
            log_level="debug",
        )
        inbox = work / "inbox"
        (inbox / "leads.csv.part").write_text(export(leads, extra_rows=BAD_ROWS))
        (inbox / "leads.csv.part").rename(inbox / "leads.csv")
        settled(inbox / "leads.csv")  # finished a while ago: claimed at once

        run_once(config, target, point)
        killed = target.killed.is_set()
        runs, code = 0, -1
        while runs < 4:
            runs += 1
            code = run_once(config)
            if code == 0 and _writeback_caught_up(work):
                break
        problems = [] if code == 0 else [f"the pass after the kill exited {code}"]
        held = spec.held(sim)
        problems += check(work, held, leads)
        odd = sorted(k for k, n in held.items() if n > 1)[:10]
        if odd and spec.describe is not None:
            problems.append(f"the dialer's view: {spec.describe(sim, odd)}")
    return PointResult(point, killed, runs, problems, time.monotonic() - started)


def _db(work: Path) -> sqlite3.Connection:
    return sqlite3.connect(work / "state" / "state.db")


def _writeback_caught_up(work: Path) -> bool:
    """Return True once there are outcomes and every one of them is written back."""
    with _db(work) as conn:
        (seen,) = conn.execute("SELECT COUNT(*) FROM outcomes").fetchone()
        (behind,) = conn.execute(
            "SELECT COUNT(*) FROM outcomes o LEFT JOIN writeback_marks m"
            " ON m.writeback = 'crm-files' AND m.sink = o.sink AND m.key = o.key"
            " WHERE m.version IS NULL OR m.version < o.version"
        ).fetchone()
    return int(seen) > 0 and int(behind) == 0


def check(work: Path, held: Counter[str], leads: int) -> list[str]:
    """Return every broken promise found in ``work`` and the dialer's ``held`` keys."""
    problems: list[str] = []
    valid = keys(leads)
    if set(held) != valid:
        lost, extra = sorted(valid - set(held)), sorted(set(held) - valid)
        problems.append(f"dialer holds the wrong leads: lost {lost[:10]}, extra {extra[:10]}")
    twice = sorted(k for k, n in held.items() if n > 1)
    if twice:
        problems.append(f"dialer holds leads twice: {twice[:10]}")
    with _db(work) as conn:
        if conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            problems.append("state store integrity check failed")
        states = dict(conn.execute("SELECT state, COUNT(*) FROM leads GROUP BY state").fetchall())
        if states != {"delivered": leads}:
            problems.append(f"lead states are {states}, not all {leads} delivered")
        rejects = conn.execute("SELECT line FROM rejects").fetchall()
        if sorted(line for (line,) in rejects) != [leads + 2, leads + 3, leads + 4]:
            problems.append(f"rejected rows stored {sorted(r for (r,) in rejects)}")
        summaries = [
            json.loads(s)
            for (s,) in conn.execute("SELECT summary_json FROM runs WHERE finished_at IS NOT NULL")
        ]
        outcomes = {(k, v) for k, v in conn.execute("SELECT key, version FROM outcomes").fetchall()}
    if not all(s.get("balanced") for s in summaries):
        problems.append("a finished pass's accounting did not balance")
    rejects_file = work / "inbox" / "done" / "leads.csv.rejects.csv"
    if not rejects_file.exists():
        problems.append("no rejects file beside the processed export")
    else:
        with rejects_file.open(encoding="utf-8") as fh:
            lines = [row["line"] for row in csv.DictReader(fh)]
        if sorted(lines) != sorted(str(n) for n in (leads + 2, leads + 3, leads + 4)):
            problems.append(f"rejects file lists lines {lines}")
    if list((work / "inbox").glob("*.csv")) or any((work / "inbox" / "processing").iterdir()):
        problems.append("the export was not filed away")
    written = Counter(_published(work / "outbox"))
    doubled = sorted(kv for kv, n in written.items() if n > 1)
    if doubled:
        problems.append(f"outcome versions written back twice: {doubled[:10]}")
    if not outcomes:
        problems.append("no outcomes were recorded (is the simulator dialing?)")
    if not outcomes <= set(written):
        missing = sorted(outcomes - set(written))
        problems.append(f"outcome versions never written back: {missing[:10]}")
    return problems


def _published(outbox: Path) -> list[tuple[str, int]]:
    rows: list[tuple[str, int]] = []
    for path in sorted(outbox.glob("*.csv")):
        for row in csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))):
            rows.append((row["key"], int(row["version"])))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20, help="kill points to run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--leads", type=int, default=120)
    parser.add_argument("--dialer", choices=sorted(DIALERS), default="jodo")
    parser.add_argument("--keep", action="store_true", help="keep the work folders")
    args = parser.parse_args(argv)
    points = plan(args.count, args.seed, leads=args.leads, chunk_rows=20, batch_size=10)
    failures = 0
    killed = 0
    started = time.monotonic()
    for i, point in enumerate(points, 1):
        work = Path(tempfile.mkdtemp(prefix=f"syncd-crash-{i:04d}-"))
        result = kill_point(point, work, dialer=args.dialer, leads=args.leads)
        killed += result.killed
        mark = "ok  " if result.ok else "FAIL"
        print(
            f"{mark} {i:4d}/{len(points)} {point!s:28} killed={result.killed!s:5} "
            f"reruns={result.runs} {result.seconds:.1f}s",
            flush=True,
        )
        for problem in result.problems:
            print(f"       {problem}", flush=True)
        if result.ok and not args.keep:
            _remove(work)
        elif not result.ok:
            failures += 1
            print(f"       kept {work}", flush=True)
    print(
        f"{len(points)} kill points ({killed} landed, {len(points) - killed} after the pass "
        f"ended), {failures} failed, {time.monotonic() - started:.0f}s"
    )
    return 1 if failures else 0


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
