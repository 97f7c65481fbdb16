"""Soak the daemon: all three dialers with faults, CSV drops all along, an outage, reloads.

The daemon (`syncd run`, a real process) feeds a Jodo, an Ameyo and a uContact
simulator that dial what they hold (so outcomes come back) at a contact center's pace
(``--calls-per-minute``, 300 by default: a 20,000-row file is dialled over an hour, not
in seconds; 0 lets each simulator dial as fast as it can), each answering 3% of
requests with a 5xx and dropping 2% of connections. CSV exports are dropped every
10–20 s, with two large files; the Jodo dialer goes away for two minutes in the
middle; the daemon is reloaded twice; retention runs every minute. Every
``--report-every`` seconds it prints one line:

    t=300s rss=151MB pss=139MB fds=19 store=24.1MB lag jodo=4s ameyo=6s ucontact=9s
      (worst since the last line ameyo=9s jodo=11s ucontact=12s) load=1.2 delivered=8123

RSS and PSS are of the whole process tree (the daemon and its workers), ``lag`` is
``syncd_sink_outcome_poll_lag_seconds`` from /metrics, read every 5 s: its value now
and its worst since the last line (Jodo's while it is away counts apart). Before the
stop, a line gives each dialer's worst lag over the run and how many readings passed
two poll intervals (the target: none, at ~300 calls a minute per dialer). At the end the daemon is
stopped with SIGTERM and the world is checked:

    soak: 30.0 min, 24,511 leads dropped, lost 0, doubled 0, stuck 0,
          duplicate writebacks 0, unpublished 0, stop 1.2 s (exit 0)

``lost``: valid leads a dialer does not hold that syncd no longer has queued;
``doubled``: leads a dialer holds twice; ``stuck``: leads still queued (pending, in
flight or held) at the end, though the drops ended a quarter of the run before;
``duplicate writebacks``: outcome versions written to the CRM's files more than once;
``unpublished``: ``.part`` files left after the stop.

    python bench/soak.py --minutes 30 [--report-every 300] [--seed 7] [--calls-per-minute 300]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from syncd.simulators.ameyo.api import AmeyoSimulator  # noqa: E402
from syncd.simulators.ameyo.api import create_app as ameyo_app  # noqa: E402
from syncd.simulators.faults import Faults  # noqa: E402
from syncd.simulators.jodo.api import DialPlan, JodoSimulator  # noqa: E402
from syncd.simulators.jodo.api import create_app as jodo_app  # noqa: E402
from syncd.simulators.server import running  # noqa: E402
from syncd.simulators.ucontact.api import UContactSimulator  # noqa: E402
from syncd.simulators.ucontact.api import create_app as ucontact_app  # noqa: E402
from tests.support.files import settled  # noqa: E402
from tests.support.reliability import (  # noqa: E402
    AMEYO_PASSWORD,
    UCONTACT_PASSWORD,
    ameyo_sink,
    export,
    jodo_sink,
    ucontact_sink,
    vendor_env,
    write_config,
)

SETTLE_S = 120.0  # after the last drop, how long leads may take before they count as stuck


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the process tree -------------------------------------------------------------------


def tree(pid: int) -> list[int]:
    """Return ``pid`` and every descendant still alive."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def memory_mb(pids: list[int]) -> tuple[float, float]:
    """Return (RSS, PSS) of the processes, in MB."""
    rss = pss = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                name, _, value = line.partition(":")
                if name in ("Rss", "Pss"):
                    kb = int(value.split()[0])
                    rss += kb if name == "Rss" else 0
                    pss += kb if name == "Pss" else 0
    return rss / 1024, pss / 1024


def fds(pid: int) -> int:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return -1


def store_mb(db: Path) -> float:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file()) / 1e6


def poll_lags(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            text = reply.read(4 << 20).decode()
    except OSError:
        return {}
    lags = {}
    for m in re.finditer(r'syncd_sink_outcome_poll_lag_seconds\{sink="([^"]+)"\} (\S+)', text):
        lags[m.group(1)] = float(m.group(2))
    return lags


POLL_S = 5.0  # every sink's outcome poll interval in the soak's config
LAG_EVERY_S = 5.0  # how often the lag is read between reports


class LagWatch:
    """The outcome poll lag read every few seconds, not only at a report: its worst per
    report and over the run, and how many readings passed two poll intervals. Jodo's
    readings while it is away (and one interval after) count apart: no poll can succeed.
    """

    def __init__(self) -> None:
        self.worst: dict[str, float] = {}  # since the last report
        self.run_worst: dict[str, float] = {}
        self.readings = 0
        self.over: Counter[str] = Counter()  # readings over two poll intervals
        self.away_worst = 0.0

    def read(self, lags: dict[str, float], jodo_away: bool) -> None:
        self.readings += 1
        for sink, lag in lags.items():
            if sink == "jodo" and jodo_away:
                self.away_worst = max(self.away_worst, lag)
                continue
            self.worst[sink] = max(self.worst.get(sink, 0.0), lag)
            self.run_worst[sink] = max(self.run_worst.get(sink, 0.0), lag)
            if lag > 2 * POLL_S:
                self.over[sink] += 1

    def take(self) -> dict[str, float]:
        worst, self.worst = self.worst, {}
        return worst

    def summary(self) -> str:
        worst = " ".join(f"{k}={v:.0f}s" for k, v in sorted(self.run_worst.items()))
        over = " ".join(f"{k}={self.over[k]}" for k in sorted(self.run_worst))
        return (
            f"lag worst {worst or '-'} (jodo while away: {self.away_worst:.0f}s); readings over "
            f"two poll intervals ({2 * POLL_S:.0f} s), of {self.readings}: {over or '-'}"
        )


def delivered(db: Path) -> int:
    with contextlib.suppress(sqlite3.Error):
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as c:
            return int(
                c.execute("SELECT COUNT(*) FROM leads WHERE state = 'delivered'").fetchone()[0]
            )
    return -1


# -- the world --------------------------------------------------------------------------


class Dialers:
    """The three simulators, each on its own port; Jodo's can go away and come back."""

    def __init__(self, faults: Faults, calls_per_minute: float) -> None:
        # Each dialer rings at calls_per_minute (0: as fast as it can: Jodo 1,200 a
        # minute, Ameyo 2,400, uContact every contact two seconds after its upload).
        pace = calls_per_minute
        self.jodo = JodoSimulator(
            faults=faults,
            dial=DialPlan(interval_s=60.0 / pace if pace else 0.05, recording_delay_s=None),
            agents={"a": 1},
        )
        self.ameyo = AmeyoSimulator(
            users={"syncd": AMEYO_PASSWORD},
            faults=faults,
            dial_every_s=1.0 if pace else 0.5,
            dials_per_tick=max(1, round(pace / 60)) if pace else 20,
        )
        self.ucontact = UContactSimulator(
            users={"api": UCONTACT_PASSWORD},
            faults=faults,
            dial_delay_s=2.0,
            cdr_delay_s=0.5,
            calls_per_minute=pace or None,
        )
        self.jodo_port = free_port()
        self._stack = contextlib.ExitStack()
        self._jodo: contextlib.ExitStack | None = None

    def __enter__(self) -> Dialers:
        self.ameyo_url = self._stack.enter_context(running(ameyo_app(self.ameyo)))
        self.ucontact_url = self._stack.enter_context(running(ucontact_app(self.ucontact)))
        self.jodo_up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.jodo_down()
        self._stack.close()

    @property
    def jodo_url(self) -> str:
        return f"http://127.0.0.1:{self.jodo_port}"

    def jodo_up(self) -> None:
        self._jodo = contextlib.ExitStack()
        self._jodo.enter_context(running(jodo_app(self.jodo), port=self.jodo_port))

    def jodo_down(self) -> None:
        if self._jodo is not None:
            self._jodo.close()
            self._jodo = None

    def held(self) -> dict[str, Counter[str]]:
        """Return, per dialer, how many records it holds for each lead key."""
        jodo = Counter(str(r.get("leadnumber")) for r in self.jodo.records("VoiceProcess"))
        ameyo = Counter(str(c.data.get("crm_key")) for c in self.ameyo.customer_list())
        listed = self.ucontact.snapshot()["campaigns"]["Ventas->"]["dial_list"]
        ucontact: Counter[str] = Counter()
        for number, seen in listed.items():
            ucontact[f"L{int(number[-8:])}"] += int(seen["added"])  # uploads of its number
        return {"jodo": jodo, "ameyo": ameyo, "ucontact": ucontact}


def config(work: Path, dialers: Dialers, health_port: int) -> Path:
    sinks = [
        jodo_sink(dialers.jodo_url, poll={"interval_s": POLL_S}),
        ameyo_sink(dialers.ameyo_url, poll={"interval_s": POLL_S}),
        ucontact_sink(dialers.ucontact_url, poll={"interval_s": POLL_S}),
    ]
    writeback = {
        "name": "crm-files",
        "kind": "csv",
        "outbox": str(work / "crm-outcomes"),
        "rotate_s": 60,
        "schedule": {"interval_s": 5},
    }
    extra = (
        f'[health]\nlisten = "127.0.0.1:{health_port}"\n\n'
        "[retention]\nevents_days = 0.0007\nrejects_days = 0.0007\nevery_s = 60\n"
    )
    return write_config(work, sinks, writebacks=[writeback], extra_toml=extra)


def drop(inbox: Path, name: str, start: int, n: int, bad: int) -> None:
    rows = [f"BAD{start + i},X,Y,not-a-number,x@example.in," for i in range(bad)]
    part = inbox / f"{name}.part"
    part.write_text(export(n, start=start, extra_rows=rows), encoding="utf-8")
    part.rename(inbox / name)
    settled(inbox / name)


# -- the run ----------------------------------------------------------------------------


def soak(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    faults = Faults(seed=args.seed, error_rate=args.error_rate, reset_rate=args.reset_rate)
    total_s = args.minutes * 60
    pace = args.calls_per_minute
    with tempfile.TemporaryDirectory(prefix="syncd-soak-") as tmp, Dialers(faults, pace) as dialers:
        work = Path(tmp)
        port = free_port()
        path = config(work, dialers, port)
        db = work / "state" / "state.db"
        env = vendor_env()
        daemon = subprocess.Popen(
            [sys.executable, "-m", "syncd", "run", "-c", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=open(work / "daemon.log", "w"),  # closed with the process
            env=env,
            cwd=ROOT,
        )
        began = time.monotonic()
        dropped, next_drop, next_report, n = 0, began + 5, began + args.report_every, 0
        big = {began + total_s * 0.2, began + total_s * 0.55}
        outage = (began + total_s * 0.4, began + total_s * 0.4 + args.outage_s)
        reloads = {began + total_s * 0.3, began + total_s * 0.7}
        drops_end = began + min(total_s - SETTLE_S, total_s * 0.75)
        jodo_is_down = False
        watch, next_lag, jodo_back = LagWatch(), began + LAG_EVERY_S, 0.0
        try:
            while (now := time.monotonic()) < began + total_s:
                if daemon.poll() is not None:
                    print(f"soak: the daemon exited early ({daemon.returncode})", flush=True)
                    return 2
                if now >= next_drop and now < drops_end:
                    size = args.big_rows if any(now >= b for b in big) else rng.randint(50, 300)
                    big = {b for b in big if now < b}
                    drop(work / "inbox", f"drop-{n:04d}.csv", dropped, size, rng.randint(0, 3))
                    dropped, n = dropped + size, n + 1
                    next_drop = now + rng.uniform(10, 20)
                if not jodo_is_down and outage[0] <= now < outage[1]:
                    dialers.jodo_down()
                    jodo_is_down = True
                elif jodo_is_down and now >= outage[1]:
                    dialers.jodo_up()
                    jodo_is_down = False
                    jodo_back = now
                if now >= next_lag:
                    watch.read(poll_lags(port), jodo_is_down or now < jodo_back + POLL_S)
                    next_lag = now + LAG_EVERY_S
                for at in [r for r in reloads if now >= r]:
                    daemon.send_signal(signal.SIGHUP)
                    reloads.discard(at)
                if now >= next_report:
                    report(now - began, daemon.pid, db, port, watch.take())
                    next_report += args.report_every
                time.sleep(0.5)
            if jodo_is_down:
                dialers.jodo_up()
            report(time.monotonic() - began, daemon.pid, db, port, watch.take())
            print(f"soak: {watch.summary()}", flush=True)
            stop_began = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(120)
            stop_s = time.monotonic() - stop_began
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait(30)
        return verdict(args, work, db, dialers, dropped, code, stop_s)


def report(t: float, pid: int, db: Path, port: int, worst: dict[str, float]) -> None:
    rss, pss = memory_mb(tree(pid))
    lags = " ".join(f"{k}={v:.0f}s" for k, v in sorted(poll_lags(port).items()))
    peaks = " ".join(f"{k}={v:.0f}s" for k, v in sorted(worst.items()))
    print(
        f"t={t:.0f}s rss={rss:.0f}MB pss={pss:.0f}MB fds={fds(pid)} store={store_mb(db):.1f}MB "
        f"lag {lags or '-'} (worst since the last line {peaks or '-'}) "
        f"load={os.getloadavg()[0]:.1f} delivered={delivered(db)}",
        flush=True,
    )


def verdict(
    args: argparse.Namespace,
    work: Path,
    db: Path,
    dialers: Dialers,
    dropped: int,
    code: int,
    stop_s: float,
) -> int:
    wanted = {f"L{i}" for i in range(dropped)}
    held = dialers.held()
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        waiting = {
            (sink, key): (state, error or "")
            for sink, key, state, error in conn.execute(
                "SELECT sink, key, state, last_error FROM leads"
                " WHERE state IN ('pending', 'inflight', 'held')"
            )
        }
    # Lost: a valid lead a dialer does not hold and syncd does not still have queued.
    lost = sum(
        1 for sink, h in held.items() for key in wanted - set(h) if (sink, key) not in waiting
    )
    doubled = sum(sum(1 for k, c in h.items() if c > 1) for h in held.values())
    stuck = len(waiting)
    for sink in sorted({s for s, _ in waiting}):
        mine = [v for (s, _), v in waiting.items() if s == sink]
        states = Counter(state for state, _ in mine)
        reason, n = Counter(error[:120] for _, error in mine).most_common(1)[0]
        print(f"soak: {sink} still queued {dict(states)}; most: {n} × {reason or '(no error)'}")
    outbox = work / "crm-outcomes"
    versions: Counter[tuple[str, str, str]] = Counter()
    for path in sorted(outbox.glob("*.csv")):
        with path.open(encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                versions[(row["sink"], row["key"], row["version"])] += 1
    duplicates = sum(1 for c in versions.values() if c > 1)
    unpublished = len(list(outbox.glob("*.part")))
    summary = {
        "minutes": args.minutes,
        "dropped": dropped,
        "lost": lost,
        "doubled": doubled,
        "stuck": stuck,
        "duplicate_writebacks": duplicates,
        "unpublished": unpublished,
        "outcome_rows": sum(versions.values()),
        "exit_code": code,
        "stop_s": round(stop_s, 1),
    }
    print(
        f"soak: {args.minutes:.1f} min, {dropped:,} leads dropped, lost {lost}, doubled "
        f"{doubled}, stuck {stuck}, duplicate writebacks {duplicates}, unpublished "
        f"{unpublished}, stop {stop_s:.1f} s (exit {code})",
        flush=True,
    )
    print("soak.json " + json.dumps(summary), flush=True)
    return 0 if lost == doubled == stuck == duplicates == unpublished == code == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--report-every", type=float, default=300.0, help="seconds")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--error-rate", type=float, default=0.03)
    parser.add_argument("--reset-rate", type=float, default=0.02)
    parser.add_argument("--outage-s", type=float, default=120.0, help="Jodo away this long")
    parser.add_argument("--big-rows", type=int, default=20_000, help="rows of the two big files")
    parser.add_argument(
        "--calls-per-minute",
        type=float,
        default=300.0,
        help="each dialer's pace (the issue's 300); 0: as fast as each simulator dials",
    )
    return soak(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
