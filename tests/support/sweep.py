"""The calling-window sweep: the whole pipeline on a controlled clock, asking each dialer
who it would ring at every step, against where the people called really are.

Issue 25's check, as a compliance officer runs it: days that include the daylight-saving
change days, a step of a few minutes, numbering plans whose zones are wide or wrong in
the phone library's data, alternates in another zone than the main number, a CRM
time-zone column that contradicts the number. At every step the clock moves, syncd runs
once (`run --once`: pull, push, withdrawals, polls), and each simulator is asked which
of its open records it could dial now (``syncd.simulators.ringing.would_ring``). A
record that could be dialled while the window is closed where one of its numbers really
rings counts that step as a minute outside the window.

The truth here is written by hand from the numbering plans, not from syncd's zone
table, so a wrong table shows up as minutes outside. ``bench/bench_window_sweep.py``
runs the 17 days; ``tests/test_window_sweep.py`` a short slice of them.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from syncd.core.gate import CallingWindow
from syncd.simulators.ameyo.api import AmeyoSimulator
from syncd.simulators.ameyo.api import create_app as ameyo_app
from syncd.simulators.jodo.api import JodoSimulator
from syncd.simulators.jodo.api import create_app as jodo_app
from syncd.simulators.ringing import would_ring
from syncd.simulators.server import running
from syncd.simulators.ucontact.api import UContactSimulator
from syncd.simulators.ucontact.api import create_app as ucontact_app
from tests.conftest import drop_csv
from tests.support.clock import FakeClock
from tests.support.reliability import (
    AMEYO_PASSWORD,
    UCONTACT_PASSWORD,
    ameyo_sink,
    jodo_sink,
    route,
    run_engine,
    settings_for,
    ucontact_sink,
    write_config,
)

WINDOW = {"mon-sat": "09:00-20:00"}
CALLING = CallingWindow.parse(WINDOW)

# Where a number under each prefix may really ring (longest prefix wins). Mobiles of a
# country spanning zones may be anywhere in it; Honolulu numbers are in Honolulu whatever
# the CRM says.
TRUTH: dict[str, tuple[str, ...]] = {
    "+1212": ("America/New_York",),
    "+1808": ("Pacific/Honolulu",),
    "+1208": ("America/Boise", "America/Los_Angeles"),
    "+1310": ("America/Los_Angeles",),
    "+44": ("Europe/London",),
    "+33": ("Europe/Paris",),
    "+612": ("Australia/Sydney",),
    "+614": (
        "Australia/Perth",
        "Australia/Darwin",
        "Australia/Adelaide",
        "Australia/Brisbane",
        "Australia/Sydney",
    ),
    "+628": ("Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura"),
    "+5581": ("America/Recife",),
    "+52614": ("America/Chihuahua",),
    "+74012": ("Europe/Kaliningrad",),
    "+91": ("Asia/Kolkata",),
}


@dataclass(frozen=True)
class Person:
    """One kind of lead the sweep keeps sending: its numbers and its CRM zone column."""

    code: str
    phone: str  # a template: {n} is replaced by a 2-digit drop counter
    alt: str = ""
    tz: str = ""


PEOPLE: tuple[Person, ...] = (
    Person("NY", "+121255501{n}"),
    Person("HI", "+180855501{n}", tz="America/New_York"),  # the CRM's zone is wrong
    Person("NYALT", "+121255502{n}", alt="+180855502{n}"),  # a Hawaii alternate
    Person("ID", "+120855501{n}"),  # Idaho's 208: Boise or the Pacific panhandle
    Person("GB", "+4420712345{n}"),
    Person("FR", "+3314268530{n}"),
    Person("SYD", "+6121234560{n}"),
    Person("AUMOB", "+6141234560{n}"),
    Person("IDMOB", "+62812345678{n}"),
    Person("REC", "+55819123456{n}"),
    Person("CHI", "+5261412345{n}"),
    Person("KGD", "+7401212345{n}"),
    Person("IN", "+9198200123{n}"),
    Person("NOMAIN", "", alt="+121255503{n}"),  # main number empty, a usable alternate
)

# 17 days: the spring change in the US (Mar 8), Australia's spring (Oct 4), Europe's
# autumn (Oct 25) and the US autumn (Nov 1), each with the days around it.
SEGMENTS: tuple[tuple[date, int], ...] = (
    (date(2026, 3, 7), 3),
    (date(2026, 10, 2), 4),
    (date(2026, 10, 23), 5),
    (date(2026, 10, 30), 5),
)


def truth_zones(number: str) -> tuple[str, ...]:
    """Return where ``number`` (E.164) may really ring, by the longest prefix in TRUTH."""
    for size in range(len(number), 1, -1):
        zones = TRUTH.get(number[:size])
        if zones is not None:
            return zones
    raise KeyError(f"the sweep has no truth for {number}")


def e164(dialled: str) -> str:
    """Return a dialler's number as E.164 (the sweep's sinks dial in E.164 or 00 form)."""
    text = "".join(c for c in dialled if c.isdigit() or c == "+")
    if text.startswith("00"):
        return "+" + text[2:]
    return text if text.startswith("+") else "+" + text


def open_everywhere(numbers: Sequence[str], at: datetime) -> bool:
    """Return True when the window is open at ``at`` wherever any of ``numbers`` rings."""
    return all(
        CALLING.open_at(ZoneInfo(zone), at) for n in numbers for zone in truth_zones(e164(n))
    )


@dataclass
class SinkTally:
    """What the sweep saw of one dialer."""

    held: bool  # syncd check says the window is held at this dialer
    outside_minutes: float = 0.0  # steps in which some record was ringable outside
    ringable_steps: int = 0  # (record, step) pairs ringable inside the window
    keys_outside: set[str] = field(default_factory=set)
    first_outside: str = ""  # "<when>: <key> <numbers>", the first offence


@dataclass
class SweepResult:
    steps: int
    step_minutes: int
    leads: int
    sinks: dict[str, SinkTally]


@contextlib.contextmanager
def dialers(clock: FakeClock) -> Iterator[tuple[dict[str, Any], dict[str, str]]]:
    """Start the three simulators on ``clock``; yield (name -> simulator, name -> url)."""
    sims: dict[str, Any] = {
        "jodo": JodoSimulator(clock=clock),
        "ameyo": AmeyoSimulator(users={"syncd": AMEYO_PASSWORD}, dialing=False, clock=clock),
        "ucontact": UContactSimulator(
            users={"api": UCONTACT_PASSWORD}, dial_delay_s=10**9, clock=clock
        ),
    }
    apps = {"jodo": jodo_app, "ameyo": ameyo_app, "ucontact": ucontact_app}
    with contextlib.ExitStack() as stack:
        urls = {name: stack.enter_context(running(apps[name](sim))) for name, sim in sims.items()}
        yield sims, urls


def sweep_config(tmp_path: Path, urls: dict[str, str]) -> Path:
    policy = {"windows": WINDOW, "timezone_column": "tz"}
    common = {"dial_format": "e164", "duplicates": "allow"}
    sinks = [
        jodo_sink(urls["jodo"], **common),
        ameyo_sink(urls["ameyo"], **common),
        ucontact_sink(urls["ucontact"], **common),
    ]
    routes = [
        route(s["name"], default_region="US", policy=policy, map={"alt_phones": ["alt"]})
        for s in sinks
    ]
    for r in routes:
        r["map"].pop("email", None)
        r["map"].pop("call_at", None)
    return write_config(tmp_path, sinks, routes=routes, log_level="warning")


def export(drop: int) -> str:
    """Return drop number ``drop``'s CSV: one new lead of every kind."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "first", "last", "phone", "alt", "tz"])
    n = f"{drop % 100:02d}"
    for p in PEOPLE:
        writer.writerow(
            [f"{p.code}-{drop}", "F", "L", p.phone.format(n=n), p.alt.format(n=n), p.tz]
        )
    return out.getvalue()


def moments(segments: Sequence[tuple[date, int]], step: timedelta) -> Iterator[datetime]:
    for first, days in segments:
        t = datetime(first.year, first.month, first.day, tzinfo=UTC)
        end = t + timedelta(days=days)
        while t < end:
            yield t
            t += step


async def sweep(
    tmp_path: Path,
    segments: Sequence[tuple[date, int]] = SEGMENTS,
    *,
    step_minutes: int = 5,
    drop_every: timedelta = timedelta(hours=3),
) -> SweepResult:
    """Run the sweep (see module doc) and return what each dialer would have rung."""
    clock = FakeClock()
    with dialers(clock) as (sims, urls):
        path = sweep_config(tmp_path, urls)
        settings = settings_for(path)
        holds = {s.name: s.window_hold().held for s in settings.sinks}
        tallies = {name: SinkTally(held=holds[name]) for name in sims}
        steps = drops = 0
        next_drop: datetime | None = None
        for now in moments(segments, timedelta(minutes=step_minutes)):
            clock.now = now.timestamp()
            if next_drop is None or now >= next_drop or now < next_drop - drop_every * 2:
                drop_csv(tmp_path / "inbox", f"drop-{drops:04d}.csv", export(drops))
                drops += 1
                next_drop = now + drop_every
            await run_engine(settings, deadline_s=30, clock=clock)
            steps += 1
            for name, sim in sims.items():
                _tally(tallies[name], sim.holdings(), now, step_minutes)
        return SweepResult(steps, step_minutes, drops * len(PEOPLE), tallies)


def _tally(tally: SinkTally, holdings: dict[str, Any], now: datetime, step: int) -> None:
    outside = False
    for row in holdings["open"]:
        if not would_ring(row, now):
            continue
        if open_everywhere(row["numbers"], now):
            tally.ringable_steps += 1
            continue
        outside = True
        tally.keys_outside.add(row["key"])
        if not tally.first_outside:
            tally.first_outside = f"{now.isoformat()}: {row['key']} {row['numbers']}"
    if outside:
        tally.outside_minutes += step


def report(result: SweepResult) -> str:
    """Return the sweep's figures as a table a person reads."""
    lines = [
        f"{result.steps} steps of {result.step_minutes} min, {result.leads} leads per dialer",
        "dialer    held  minutes-outside  leads-outside  ringable-inside  first offence",
    ]
    for name, t in result.sinks.items():
        lines.append(
            f"{name:<9} {'yes' if t.held else 'no':<5} {t.outside_minutes:>15.0f}"
            f"  {len(t.keys_outside):>13}  {t.ringable_steps:>15}  {t.first_outside}"
        )
    return "\n".join(lines)
