"""How old each do-not-call list is, and what a stale one does.

A list's date is its newest file's (a date in the file name, else the file's
modification time), not when syncd read it: the US safe harbour asks for a copy of the
register no older than 31 days. Past ``max_age_days`` the list is stale: a warning in
`syncd status`, /readyz and the metrics, and with ``strict`` every lead of a route using
it is held at the push (``held (dnc_list_stale): …``) until a fresh copy loads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from syncd.config import DncListConfig, Settings
from syncd.state.base import DncVersion, PullLedger

DAY_S = 86400.0
STALE_CODE = "dnc_list_stale"
STALE_RECHECK_S = 900.0  # a held lead is looked at again this often (a fresh copy frees it)


@dataclass(frozen=True, slots=True)
class ListState:
    """A do-not-call list's version in force and whether it is too old to rely on."""

    name: str
    mode: str
    strict: bool
    max_age_days: float
    version: DncVersion | None  # the newest file loaded; None before any
    age_s: float | None  # now minus the file's date
    stale: str | None  # why the list counts as stale; None while fresh


def list_state(listing: DncListConfig, latest: DncVersion | None, now: float) -> ListState:
    """Return the state of one list given its newest version (pure)."""
    limit = listing.max_age_days
    if latest is None:
        why: str | None = (
            f"do-not-call list {listing.name} has no version loaded yet: drop a copy of the "
            f"register in its source {listing.source!r}"
        )
        age = None
    else:
        age = max(now - latest.file_date, 0.0)
        day = time.strftime("%Y-%m-%d", time.gmtime(latest.file_date))
        why = (
            f"do-not-call list {listing.name} is {age / DAY_S:.0f} days old ({latest.file}, "
            f"dated {day}; max_age_days = {limit:g}): load a fresh copy of the register"
            if age > limit * DAY_S
            else None
        )
    return ListState(listing.name, listing.mode, listing.strict, limit, latest, age, why)


async def list_states(settings: Settings, store: PullLedger, now: float) -> list[ListState]:
    """Return the state of every configured list."""
    found = []
    for listing in settings.dnc_lists:
        versions = await store.dnc_versions(listing.name, 1)
        found.append(list_state(listing, versions[0] if versions else None, now))
    return found


def strict_hold(settings: Settings, states: list[ListState], sink: str) -> str | None:
    """Return the hold reason of every lead of ``sink`` while a strict list its routes use
    is stale; None when none is."""
    used = {
        name
        for r in settings.routes
        if r.sink == sink and r.policy is not None
        for name in r.policy.dnc_lists
    }
    for state in states:
        if state.name in used and state.strict and state.stale is not None:
            return (
                f"held ({STALE_CODE}): {state.stale}; strict: the leads of its routes wait "
                "for a fresh copy"
            )
    return None


def version_label(v: DncVersion) -> str:
    """Return how the audit names a list's version: number, the copy's date, file, checksum."""
    day = time.strftime("%Y-%m-%d", time.gmtime(v.file_date))
    return f"v{v.version} of {day} ({v.file}, sha256 {v.sha256[:12]})"


async def version_labels(store: PullLedger, names: set[str]) -> dict[str, str]:
    """Return the label of the version in force of each named list (none yet: left out)."""
    labels: dict[str, str] = {}
    for name in sorted(names):
        found = await store.dnc_versions(name, 1)
        if found:
            labels[name] = version_label(found[0])
    return labels
