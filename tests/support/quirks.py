"""The quirk catalogue's rig: a vendor's simulator with quirks, a CRM export, syncd, a verdict.

One :class:`Vendor` per dialer knows how to start its simulator and write a
CSV-drop config for it; :func:`crm_leads` makes the CRM (non-ASCII names,
households sharing a number, alternate numbers); :func:`play` runs syncd through
the CLI as a user would (a drop, a run, a second drop deleting leads, a run, and
one more run after the quirk's window when it has one); :func:`verdict` holds
what the dialer holds against what the CRM still has and what syncd says is left.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from syncd.config import load_settings
from syncd.run.status import collect
from syncd.simulators.ameyo.api import AmeyoSimulator
from syncd.simulators.ameyo.api import create_app as ameyo_app
from syncd.simulators.jodo.api import JodoSimulator
from syncd.simulators.jodo.api import create_app as jodo_app
from syncd.simulators.quirks import Quirks
from syncd.simulators.server import running
from syncd.simulators.ucontact.api import UContactSimulator
from syncd.simulators.ucontact.api import create_app as ucontact_app
from syncd.state import open_store
from tests.conftest import cli_env, drop_csv, run_cli

SINK = "dialer"
TIMEOUT_S = 1.0  # the sinks' read timeout: a "slow" answer takes longer
DEADLINE_S = 4.0  # each run's --deadline: a row whose quirk lasts longer waits it out

COMMON = """\
[state]
path = "{state}"

[log]
level = "info"
format = "json"

[[sources]]
name = "crm"
kind = "csv_drop"
inbox = "{inbox}"

[[sinks]]
name = "dialer"
dial_format = "e164"
batch_size = 50
retry_base_s = 0.05
retry_max_s = 0.2
timeout_s = {timeout_s}
{sink}
[[routes]]
source = "crm"
sink = "dialer"
default_region = "IN"
[routes.map]
key = "id"
phone = "phone"
alt_phones = ["alt"]
first_name = "first"
last_name = "last"
deleted = "gone"
"""

JODO_SINK = """\
kind = "jodo"
url = "{url}/CustomerWebServices/handleCustomerWS"
apikey = "env:TEST_JODO_APIKEY"
servicekey = "VoiceProcess"
media = 12
updateparam = "crmuniquefield"
alt_phone_fields = ["alternatenumber1"]
[sinks.dispositions]
login = "supervisor"
[sinks.dispositions.on_delete]
dispomasterid = 3
disporeasonid = 9
remarks = "Removed from the CRM"
"""

AMEYO_SINK = """\
kind = "ameyo"
url = "{url}"
auth = {{ mode = "session", user_id = "syncd", password = "env:TEST_AMEYO_PASSWORD" }}
campaign_id = 1
lead_id = 1
key_column = "crm_key"
"""

UCONTACT_SINK = """\
kind = "ucontact"
url = "{url}"
user = "api"
password = "env:TEST_UCONTACT_PASSWORD"
campaign = "Ventas->"
settle_s = 0.2
cdr_delay_s = 0.0
backup_records_url = "{url}/backup"
"""


class ShiftedClock:
    """Wall-clock time plus what the test skipped: a quirk's window ends without a sleep."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def skip(self, seconds: float) -> None:
        self.offset += seconds


@dataclass(frozen=True)
class Vendor:
    """How the catalogue drives one dialer."""

    name: str
    sink: str  # the [[sinks]] body
    start: Callable[[Quirks, ShiftedClock], Any]  # -> the simulator
    app: Callable[[Any], Any]
    can_remove: bool  # a lead the CRM deletes leaves the dialer
    allows_duplicates: bool = False  # two open records may share a number


def _jodo(quirks: Quirks, clock: ShiftedClock) -> JodoSimulator:
    # No dialing plan: every record stays open until disposed, so holdings are exact.
    return JodoSimulator(quirks=quirks, clock=clock, agents={"supervisor": 1})


def _ameyo(quirks: Quirks, clock: ShiftedClock) -> AmeyoSimulator:
    return AmeyoSimulator(quirks=quirks, clock=clock, dialing=False)


def _ucontact(quirks: Quirks, clock: ShiftedClock) -> UContactSimulator:
    return UContactSimulator(quirks=quirks, clock=clock, dial_delay_s=3600.0, cdr_delay_s=0.0)


VENDORS = {
    "jodo": Vendor("jodo", JODO_SINK, _jodo, jodo_app, can_remove=True),
    "ameyo": Vendor("ameyo", AMEYO_SINK, _ameyo, ameyo_app, can_remove=False),
    "ucontact": Vendor("ucontact", UCONTACT_SINK, _ucontact, ucontact_app, can_remove=True),
}


# -- the CRM -----------------------------------------------------------------------

NAMES = (
    ("José", "Müller"),
    ("Zoë", "Ñúñez"),
    ("Łukasz", "Dvořák"),
    ("Ana-María", "Peña"),
    ("Şükrü", "Öztürk"),
    ("Asha", "Rao"),
    ("Ravi", "Iyer"),
    ("François", "Lefèvre"),
    ("Meena", "Das"),
    ("Björn", "Ångström"),
)


@dataclass(frozen=True)
class CrmLead:
    key: str
    phone: str  # E.164, as the sinks dial it (dial_format e164)
    alt: str
    first: str
    last: str

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"

    def row(self, gone: bool = False) -> str:
        return (
            f"{self.key},{self.phone},{self.alt},{self.first},{self.last},{'yes' if gone else ''}"
        )


def crm_leads(count: int, households: int = 0) -> list[CrmLead]:
    """Return ``count`` leads; the last ``households`` share their number with the lead before.

    Every seventh lead has an alternate number; names cycle through NAMES
    (most of them non-ASCII).
    """
    leads = []
    for n in range(count):
        first, last = NAMES[n % len(NAMES)]
        phone = f"+9198200{n:05d}"
        if households and n >= count - 2 * households and (n - count) % 2 == 1:
            phone = leads[-1].phone  # the second member of a household
        alt = f"+9198300{n:05d}" if n % 7 == 3 else ""
        leads.append(CrmLead(f"L{n:04d}", phone, alt, first, last))
    return leads


HEADER = "id,phone,alt,first,last,gone\n"


def export(leads: list[CrmLead], gone: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    return HEADER + "".join(lead.row(lead.key in gone) + "\n" for lead in leads)


# -- syncd as a user runs it ---------------------------------------------------------


@dataclass
class Played:
    """What one catalogue row left behind."""

    vendor: Vendor
    sim: Any
    crm: list[CrmLead]
    deleted: set[str]
    quirks: dict[str, Any]
    may_refuse: bool = False  # a live lead refused with a reason counts as accounted for
    runs: list[subprocess.CompletedProcess[str]] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)  # key -> syncd's state for the sink


def write_config(tmp_path: Path, vendor: Vendor, url: str, timeout_s: float = TIMEOUT_S) -> Path:
    (tmp_path / "inbox").mkdir(exist_ok=True)
    path = tmp_path / "syncd.toml"
    path.write_text(
        COMMON.format(
            state=tmp_path / "state" / "state.db",
            inbox=tmp_path / "inbox",
            timeout_s=timeout_s,
            sink=vendor.sink.format(url=url),
        ),
        encoding="utf-8",
    )
    return path


def env() -> dict[str, str]:
    return cli_env(TEST_AMEYO_PASSWORD="secret", TEST_UCONTACT_PASSWORD="secret")


@contextmanager
def served(vendor: Vendor, quirks: dict[str, Any]) -> Iterator[tuple[Any, str, ShiftedClock]]:
    clock = ShiftedClock()
    sim = vendor.start(Quirks.from_dict(quirks, vendor.name), clock)
    with running(vendor.app(sim)) as url:
        yield sim, url, clock


def play(
    tmp_path: Path,
    vendor: Vendor,
    quirks: dict[str, Any],
    *,
    leads: int = 200,
    households: int = 0,
    delete_every: int = 9,
    window_s: float = 0.0,
    may_refuse: bool = False,
    timeout_s: float = TIMEOUT_S,
    deadline_s: float = DEADLINE_S,
) -> Played:
    """Run one row: drop, run, drop deletions, run; after a quirk window, run once more.

    ``timeout_s``: the sinks' read timeout; one longer than a run's deadline has the
    deadline, not the timeout, cut a slow request. ``deadline_s``: each run's
    ``--deadline``.
    """
    crm = crm_leads(leads, households)
    deleted = {lead.key for i, lead in enumerate(crm) if i % delete_every == 4}
    with served(vendor, quirks) as (sim, url, clock):
        config = write_config(tmp_path, vendor, url, timeout_s)
        inbox = tmp_path / "inbox"
        played = Played(vendor, sim, crm, deleted, quirks, may_refuse)
        drop_csv(inbox, "monday.csv", export(crm))
        played.runs.append(once(config, deadline_s))
        drop_csv(inbox, "tuesday.csv", export([c for c in crm if c.key in deleted], deleted))
        played.runs.append(once(config, deadline_s))
        if window_s:
            clock.skip(window_s)  # the quirk's window is over on the dialer's clock
            played.runs.append(once(config, deadline_s))
        played.status, played.states = asyncio.run(_what_syncd_says(config, [c.key for c in crm]))
    return played


# Jodo upserting by number (not by the CRM key): a changed number is a second record
JODO_BY_NUMBER = replace(
    VENDORS["jodo"],
    sink=JODO_SINK.replace('updateparam = "crmuniquefield"', 'updateparam = "mobilenumber"'),
)
# ...and without dispositions.on_delete: syncd cannot close the record under an old number
JODO_BY_NUMBER_UNCLOSED = replace(
    JODO_BY_NUMBER,
    sink=JODO_BY_NUMBER.sink.split("[sinks.dispositions]")[0],
    can_remove=False,
)


def play_renumbered(
    tmp_path: Path, vendor: Vendor, *, leads: int = 40, every: int = 5
) -> tuple[Played, dict[str, str]]:
    """Run a CRM export, then one where every ``every``-th lead has a new number; return
    what was played and the old number of each renumbered lead (by key)."""
    crm = crm_leads(leads)
    old = {c.key: c.phone for i, c in enumerate(crm) if i % every == 2}
    later = [replace(c, phone=f"+9198400{i:05d}") if c.key in old else c for i, c in
             enumerate(crm)]  # fmt: skip
    with served(vendor, {}) as (sim, url, _clock):
        config = write_config(tmp_path, vendor, url, TIMEOUT_S)
        inbox = tmp_path / "inbox"
        played = Played(vendor, sim, later, set(), {})
        drop_csv(inbox, "monday.csv", export(crm))
        played.runs.append(once(config))
        drop_csv(inbox, "tuesday.csv", export(later))
        played.runs.append(once(config))
        played.status, played.states = asyncio.run(_what_syncd_says(config, [c.key for c in crm]))
    return played, old


def left_open_under(played: Played, numbers: dict[str, str]) -> list[str]:
    """Return the keys the dialer still holds open under the given (old) numbers."""
    held = played.sim.holdings()["open"]
    return sorted({r["key"] for r in held if r["key"] in numbers
                   and any(n.endswith(numbers[r["key"]][1:]) for n in r["numbers"])})  # fmt: skip


def once(config: Path, deadline_s: float = DEADLINE_S) -> subprocess.CompletedProcess[str]:
    args = ("run", "--once", "--deadline", f"{deadline_s:g}", "-c", str(config))
    return run_cli(*args, env=env(), timeout=60)


async def _what_syncd_says(config: Path, keys: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Return what `syncd status --json` shows (the same `collect`), and each lead's state."""
    settings = load_settings(config, env())
    store = await open_store(settings.state)
    try:
        status = await collect(settings, store)
        found = await store.lookup(SINK, keys)
        states = {k: s.state for k, s in found.items()}
        # Held behind another lead of the same number (duplicates = "one_per_number"):
        # accounted for while that lead is open in the dialer, see verdict().
        for w in await store.waiting(len(keys) + 1):
            if w["sink"] == SINK and w["key"] in states:
                states[w["key"]] = f"waiting:{w['waits_for']}"
        return status, states
    finally:
        await store.close()


# -- the verdict -----------------------------------------------------------------------

LEFT = ("pending", "inflight", "held", "failed")


def verdict(row: str, played: Played, *, removals_stay: bool = False) -> list[str]:
    """Return every way the dialer, or what syncd says, differs from the CRM (empty: none)."""
    holdings = played.sim.holdings()
    open_by_key: dict[str, list[dict[str, Any]]] = {}
    for record in holdings["open"]:
        open_by_key.setdefault(record["key"], []).append(record)
    closed = {r["key"] for r in holdings["closed"]}
    live = [c for c in played.crm if c.key not in played.deleted]
    refused = {k for k, s in played.states.items() if s == "rejected"}
    left = {k for k, s in played.states.items() if s in LEFT}
    problems: list[str] = []
    if removals_stay:  # the dialer cannot remove: removals wait, raised as an alert
        stay = {k for k in left if k in played.deleted}
        if stay and not played.status.get("withdrawals_failing"):
            problems.append(f"{row}: {len(stay)} removals stay queued without an alert")
        left -= stay

    def report(what: str, keys: list[str]) -> None:
        if keys:
            problems.append(f"{row}: {len(keys)} {what} (e.g. {', '.join(sorted(keys)[:3])})")

    missing = [c.key for c in live if c.key not in open_by_key]
    behind = {k: s.split(":", 1)[1] for k, s in played.states.items() if s.startswith("waiting:")}
    report(
        "live leads set aside behind a lead the dialer does not hold open",
        [k for k in missing if k in behind and behind[k] not in open_by_key],
    )
    missing = [k for k in missing if k not in behind]
    if played.may_refuse:  # refused with a reason (status, `syncd rejects`): accounted for
        missing = [k for k in missing if k not in refused]
    else:
        report(
            "live leads refused by syncd though the dialer could take them",
            [k for k in missing if k in refused and k not in closed],
        )
    report(
        "live leads counted delivered but not in the dialer",
        [k for k in missing if k not in left and k not in closed and k not in refused],
    )
    report(
        "live leads not in the dialer, left pending or failed", [k for k in missing if k in left]
    )
    report(
        "live leads closed in the dialer though the CRM still has them",
        [k for k in missing if k in closed],
    )
    report("live leads held more than once", [k for k, rs in open_by_key.items() if len(rs) > 1])
    garbled = [
        c.key
        for c in live
        if c.key in open_by_key and open_by_key[c.key][0].get("name") not in ("", c.name)
    ]
    report("names garbled in the dialer", garbled)
    # A removal refused with a reason, or left (an alert), is accounted for; one settled
    # as removed while the dialer holds the lead open is not, whether or not the dialer
    # can remove (Ameyo's removals are refused with a reason, never settled).
    report(
        "leads the CRM deleted counted removed but still open in the dialer",
        [k for k in played.deleted if k in open_by_key and played.states.get(k) == "removed"],
    )
    if not played.vendor.allows_duplicates:
        twice = [n for n, count in holdings["open_per_number"].items() if count > 1]
        if twice:
            problems.append(
                f"{row}: {len(twice)} numbers held by more than one open record "
                "(the person is rung twice)"
            )
    problems += _exit_and_status(row, played, left, removals_stay)
    if played.quirks and not played.sim.quirks.applied:
        problems.append(f"{row}: the quirk never changed an answer: this row proves nothing")
    return problems


def _exit_and_status(
    row: str, played: Played, left: set[str], removals_stay: bool = False
) -> list[str]:
    """The last run's exit code and `syncd status` must say what is left."""
    last = played.runs[-1]
    counts = played.status.get("counts", {}).get(SINK, {})
    waiting = sum(1 for s in played.states.values() if s.startswith("waiting:"))
    shown = sum(int(counts.get(state, 0)) for state in LEFT) - waiting
    problems = []
    if removals_stay:
        stay = sum(1 for k in played.deleted if played.states.get(k) in LEFT)
        shown -= stay
        if stay and last.returncode != 1:
            problems.append(f"{row}: {stay} removals left queued, but exit {last.returncode}")
        if stay and last.returncode == 1 and not (left or shown):
            return problems  # exit 1: the removals are what is left, and status says so
    if played.status.get("numbers_left") and last.returncode == 1 and not (left or shown):
        return problems  # exit 1: an old number left dialable, an alert status names
    if last.returncode not in (0, 1):
        problems.append(f"{row}: the last run exited {last.returncode}: {last.stderr[-400:]}")
    elif last.returncode == 0 and (left or shown):
        problems.append(f"{row}: exit 0 but {max(len(left), shown)} leads are left: {counts}")
    elif last.returncode == 1 and not (left or shown):
        problems.append(f"{row}: exit 1 though status shows nothing left: {counts}")
    elif last.returncode == 1:
        problems.append(f"{row}: exit 1, {len(left)} leads left after the quirk ended: {counts}")
    return problems
