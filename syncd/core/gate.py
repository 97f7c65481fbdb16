"""The safety gate: whether, and when, a lead may be called. Pure decisions, no I/O.

Checks at the moments they can be made:

- ``screen`` when a row becomes a lead: a do-not-call flag, consent, placeholder
  numbers and excluded number types. A block is final for that content: the row
  is refused with a reason code and, if the dialer already has the lead, withdrawn.
  A consent date that is still valid gives the lead its expiry (``consent_expiry``).
- ``window_decision`` right before a push: the calling window in the lead's local
  time. Outside it the lead is held until the window opens, never refused.
- ``consent_at_push`` right before a push too: consent that ran out since the row was
  read (or would run out while the window holds the lead) refuses it.

Reason codes (``GateDecision.code``): ``window_closed``, ``window_never_open``,
``dnc_crm``, ``no_consent``, ``consent_expired``, ``placeholder_number``,
``number_type:<type>``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from syncd.core.phones import is_placeholder, number_kind
from syncd.core.window import CallingWindow as CallingWindow
from syncd.core.zones import DEFAULT_TABLE, ZoneTable, possible_zones

HORIZON_DAYS = 15  # a window that opens in none of the number's zones within this: never
TRUTHY = frozenset({"1", "true", "yes", "y", "x", "on"})
FALSY = frozenset({"", "0", "false", "no", "n", "off"})


class Verdict(enum.StrEnum):
    ALLOW = "allow"
    HOLD = "hold"  # not now: ``until`` says when
    BLOCK = "block"  # not for this content of the lead


@dataclass(frozen=True, slots=True)
class GateDecision:
    """What the gate decided for one lead, and why (``code`` for counting, ``reason`` to read)."""

    verdict: Verdict
    code: str = ""
    reason: str = ""
    until: datetime | None = None  # HOLD: when the window opens (UTC)
    closes: datetime | None = None  # ALLOW: when the opening it allows in ends (UTC)
    zones: tuple[str, ...] = ()  # the zones the decision was made in

    @property
    def text(self) -> str:
        """Return ``blocked (dnc_crm): …`` / ``held (window_closed): …``: what a person reads."""
        word = {Verdict.BLOCK: "blocked", Verdict.HOLD: "held"}.get(self.verdict, "allowed")
        return f"{word} ({self.code}): {self.reason}" if self.code else word


ALLOWED = GateDecision(Verdict.ALLOW)


# -- calling windows: core.window (CallingWindow), read here in each zone -----------


@lru_cache(maxsize=256)
def zone_info(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def lead_zones(
    numbers: str | Sequence[str], hint: str, fallback: str, table: ZoneTable = DEFAULT_TABLE
) -> tuple[str, ...]:
    """Return the zones to respect for a lead: every zone any of its numbers may ring in,
    narrowed (never replaced) by its mapped zone; ``fallback`` when nothing places it.

    A prefix that spans several zones (a US area code on a boundary, an Australian or
    Russian mobile) gives them all: the window must be open in every one. See
    ``syncd.core.zones``.
    """
    return possible_zones(numbers, hint, fallback, table)


def next_opening(
    window: CallingWindow,
    zones: tuple[str, ...],
    now: datetime,
    margin: timedelta = timedelta(0),
) -> datetime | None:
    """Return the first moment from ``now`` on that is inside the window in every zone,
    and still is ``margin`` later (time for the dialer to place the call)."""
    infos = [zone_info(z) for z in zones]

    def inside(t: datetime) -> bool:
        return all(window.open_through(z, t, margin) for z in infos)

    if inside(now):
        return now
    # Where the windows of several zones overlap, the overlap opens when one of them does.
    openings = {t for z in infos for t in window.openings(z, now, HORIZON_DAYS) if t > now}
    return next((t for t in sorted(openings) if inside(t)), None)


def open_until(window: CallingWindow, zones: tuple[str, ...], now: datetime) -> datetime | None:
    """Return when the opening ``now`` is in ends: the first close among ``zones``."""
    closes = [c for z in zones if (c := window.closes_at(zone_info(z), now)) is not None]
    return min(closes) if closes else None


def window_decision(
    window: CallingWindow | None,
    zones: tuple[str, ...],
    now: datetime,
    margin: timedelta = timedelta(0),
) -> GateDecision:
    """Return ALLOW inside the window, HOLD until it opens, BLOCK if it never opens.

    With ``margin``, a window that closes sooner than that counts as closed: a lead
    pushed at 19:58 would be dialled after 20:00.
    """
    if window is None:
        return ALLOWED
    opening = next_opening(window, zones, now, margin)
    where = ", ".join(zones)
    if opening == now:
        return GateDecision(Verdict.ALLOW, zones=zones, closes=open_until(window, zones, now))
    if opening is None:
        return GateDecision(
            Verdict.BLOCK,
            "window_never_open",
            f"no time in the next {HORIZON_DAYS} days is inside the calling window in all of "
            f"{where}; map a time-zone column for such numbers",
            zones=zones,
        )
    local = opening.astimezone(zone_info(zones[0])).strftime("%Y-%m-%d %H:%M %Z")
    return GateDecision(
        Verdict.HOLD,
        "window_closed",
        f"outside the calling window in {where}; held until {local}",
        until=opening,
        zones=zones,
    )


@dataclass(frozen=True, slots=True)
class RouteWindow:
    """One route's calling window and the zone for numbers that name none."""

    window: CallingWindow
    fallback_zone: str
    margin: timedelta = timedelta(0)  # how long the window must stay open after the push
    zones: ZoneTable = DEFAULT_TABLE  # number prefixes -> zones (corrections, overrides)


def calling_decision(
    numbers: str | Sequence[str],
    zone_hint: str,
    windows: Sequence[RouteWindow],
    now: datetime,
    memo: dict[tuple[tuple[str, ...], ...], GateDecision] | None = None,
) -> GateDecision:
    """Return the decision of every window a sink's routes set: open only where all are.

    BLOCK if any never opens; else HOLD until the latest opening; else ALLOW. ``memo``
    keeps the decisions of one moment by zones: a batch mostly shares a few.
    """
    zone_sets = tuple(lead_zones(numbers, zone_hint, w.fallback_zone, w.zones) for w in windows)
    if memo is not None and (known := memo.get(zone_sets)) is not None:
        return known
    decisions = [
        window_decision(w.window, zones, now, w.margin)
        for w, zones in zip(windows, zone_sets, strict=True)
    ]
    decision = _combined(decisions, now)
    if memo is not None:
        memo[zone_sets] = decision
    return decision


def callback_close(
    numbers: str | Sequence[str],
    zone_hint: str,
    windows: Sequence[RouteWindow],
    call_at: datetime,
) -> datetime | None:
    """Return (UTC) when the opening ``call_at`` falls in closes, in every route's window.

    A lead pushed today with a callback tomorrow is dialled in tomorrow's opening: the
    dialer must keep it until that one closes, not today's. None: ``call_at`` is in no
    opening of some window (the dialer must not ring it then anyway).
    """
    closes = []
    for w in windows:
        zones = lead_zones(numbers, zone_hint, w.fallback_zone, w.zones)
        close = open_until(w.window, zones, call_at) if zones else None
        if close is None:
            return None
        closes.append(close)
    return min(closes) if closes else None


def _combined(decisions: list[GateDecision], now: datetime) -> GateDecision:
    """Return the one decision several windows make together (see ``calling_decision``)."""
    blocked = [d for d in decisions if d.verdict is Verdict.BLOCK]
    if blocked:
        return blocked[0]
    held = [d for d in decisions if d.verdict is Verdict.HOLD]
    if held:
        return max(held, key=lambda d: d.until or now)  # rechecked then: the others may differ
    if not decisions:
        return ALLOWED
    closes = [d.closes for d in decisions if d.closes is not None]
    if len(decisions) > 1 and closes:  # open in every route's window: until the first closes
        return replace(decisions[0], closes=min(closes))
    return decisions[0]


# -- screening a lead's content ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Screening:
    """What the screen checks, from the route's policy (see ``PolicyConfig``)."""

    dnc_values: frozenset[str] = frozenset()
    require_consent: bool = False
    consent_max_age: timedelta | None = None
    block_placeholders: bool = True  # one digit repeated, or a run
    placeholders: frozenset[str] = frozenset()  # E.164 numbers refused besides the patterns
    block_types: frozenset[str] = frozenset()


def screen(
    phone: str,
    rules: Screening,
    *,
    dnc: str | None,
    consent: str | None,
    now: datetime,
) -> GateDecision:
    """Return BLOCK with the first rule the lead breaks, else ALLOW.

    ``dnc`` / ``consent`` are the cells of the mapped columns (None: no such column).
    """
    if dnc is not None and dnc.strip().lower() in rules.dnc_values:
        return GateDecision(Verdict.BLOCK, "dnc_crm", f"the CRM marks it do-not-call ({dnc!r})")
    if phone in rules.placeholders or (rules.block_placeholders and is_placeholder(phone)):
        return GateDecision(
            Verdict.BLOCK, "placeholder_number", f"{phone} is a placeholder, not a person's number"
        )
    if rules.block_types:
        kind = number_kind(phone)
        if kind in rules.block_types:
            return GateDecision(Verdict.BLOCK, f"number_type:{kind}", f"{phone} is a {kind} number")
    if consent is not None:
        decided = _consent(consent, rules, now)
        if decided is not None:
            return decided
    return ALLOWED


def _consent_date(value: str) -> datetime | None:
    """Return a consent cell's date (aware; a naive one is UTC), None when it holds none."""
    text = value.strip()
    if text.lower() in TRUTHY or text.lower() in FALSY:
        return None
    try:
        given = datetime.fromisoformat(text)
    except ValueError:
        return None
    return given if given.tzinfo is not None else given.replace(tzinfo=UTC)


def consent_expiry(value: str | None, rules: Screening) -> datetime | None:
    """Return when the consent of a cell runs out (UTC): its date plus the policy's
    maximum age. None without a maximum age, or for a cell that is not a date."""
    if value is None or rules.consent_max_age is None:
        return None
    given = _consent_date(value)
    return None if given is None else (given + rules.consent_max_age).astimezone(UTC)


CONSENT_EXPIRED = "consent_expired"


def consent_withdrawal(consent_until: datetime) -> str:
    """Return the reason of a lead taken out of a dialer because its consent ran out (the
    consent stage's, and the window stage's when consent ends before the window does)."""
    expiry = consent_until.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    return (
        f"blocked ({CONSENT_EXPIRED}): consent ran out at {expiry} UTC"
        " (consent_max_age_days); its withdrawal from the dialer is queued"
    )


def consent_at_push(
    decision: GateDecision,
    consent_until: datetime | None,
    now: datetime,
    margin: timedelta = timedelta(0),
) -> GateDecision:
    """Return the push-time ``decision`` (the window's) of a lead whose consent runs out
    at ``consent_until``.

    Consent was checked when the row was read; a lead read with a day of consent left
    may wait in the outbox, or be held by its window, past that day. BLOCK
    ``consent_expired`` once consent has run out (or runs out within ``margin``, the
    time the dialer needs to place the call), and when a HOLD would release the lead
    only after it runs out: not held for nothing. An ALLOW dials no later than it.
    """
    if consent_until is None or decision.verdict is Verdict.BLOCK:
        return decision
    expiry = consent_until.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if now + margin >= consent_until:
        return GateDecision(
            Verdict.BLOCK,
            "consent_expired",
            f"consent ran out at {expiry} (consent_max_age_days)",
            zones=decision.zones,
        )
    if decision.verdict is Verdict.HOLD and decision.until is not None:
        if decision.until + margin >= consent_until:
            opens = decision.until.strftime("%Y-%m-%d %H:%M UTC")
            return GateDecision(
                Verdict.BLOCK,
                "consent_expired",
                f"consent runs out at {expiry}, before the calling window opens ({opens})",
                zones=decision.zones,
            )
        return decision
    if decision.closes is None or consent_until < decision.closes:
        return replace(decision, closes=consent_until)
    return decision


def _consent(value: str, rules: Screening, now: datetime) -> GateDecision | None:
    text = value.strip()
    if text.lower() in TRUTHY:
        return None
    if text.lower() in FALSY:
        if rules.require_consent:
            return GateDecision(Verdict.BLOCK, "no_consent", "no consent recorded")
        return None
    try:
        given = datetime.fromisoformat(text)
    except ValueError:
        if rules.require_consent:
            return GateDecision(
                Verdict.BLOCK, "no_consent", f"consent {text!r} is neither yes/no nor a date"
            )
        return None
    if given.tzinfo is None:
        given = given.replace(tzinfo=UTC)
    if rules.consent_max_age is not None and now - given > rules.consent_max_age:
        days = rules.consent_max_age.days
        return GateDecision(
            Verdict.BLOCK,
            "consent_expired",
            f"consent given {given.date().isoformat()} is older than {days} days",
        )
    return None
