"""`syncd gate explain NUMBER [ALTERNATE…] [--tz ZONE]`: what the safety gate decides
now for a lead with these numbers — for each route with a policy: each number's screens
(placeholder, number type, do-not-call lists), the zones it rings in, the window in
each, and the decision.

The same decisions the pull and the push make (``core.gate.screen``,
``calling_decision``), so "allowed" here means the gate would let it through."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime, timedelta

from syncd.cli.common import ALL_SECTIONS, settings_of, store_exists
from syncd.cli.exits import EXIT_OK
from syncd.config import RouteConfig, Settings
from syncd.core.gate import (
    CallingWindow,
    GateDecision,
    RouteWindow,
    Verdict,
    calling_decision,
    lead_zones,
    screen,
    zone_info,
)
from syncd.core.mapping import screening_of
from syncd.core.phones import PhoneError, to_e164
from syncd.core.zones import ZoneError, check_zone, zone_table
from syncd.errors import ConfigError
from syncd.state import open_store


def numbers_of(settings: Settings, args: argparse.Namespace) -> set[str]:
    """Return every E.164 number the arguments stand for, over the routes' regions (for
    the do-not-call look-up before ``explain``)."""
    found: set[str] = set()
    for route in settings.routes:
        for text in args.numbers:
            try:
                found.add(to_e164(text, args.region or route.default_region))
            except PhoneError:
                continue
    return found


def explain(
    settings: Settings, args: argparse.Namespace, listed: dict[str, str] | None = None
) -> list[str]:
    """Return the lines `syncd gate explain` prints; ValueError for a bad argument.

    ``listed``: number -> the do-not-call list holding it (from the store), if known.
    """
    now = _moment(args.at)
    if args.tz:
        try:
            check_zone(args.tz)
        except ZoneError as exc:
            raise ValueError(f"--tz: {exc}") from None
    routes = [r for r in settings.routes if r.policy is not None]
    if not routes:
        return ["no route has a [policy]: every number is allowed, at any time"]
    lines: list[str] = []
    for route in routes:
        lines += _route_lines(route, args, now, listed or {})
    return lines


def _route_lines(
    route: RouteConfig, args: argparse.Namespace, now: datetime, listed: dict[str, str]
) -> list[str]:
    policy = route.policy
    assert policy is not None
    region = args.region or route.default_region
    lines = [f"route {route.name}:"]
    usable: list[str] = []
    refusal: GateDecision | None = None
    for n, text in enumerate(args.numbers):
        role = "main" if n == 0 else "alternate"
        try:
            number = to_e164(text, region)
        except PhoneError as exc:
            lines.append(f"  {role} {text!r}: not a number in {region}: {exc}")
            continue
        decided = _screened(number, route, listed, now)
        lines.append(
            f"  {role} {number}: {'passes the screens' if decided is None else decided.text}"
        )
        if decided is None:
            usable.append(number)
        elif refusal is None:
            refusal = decided
    if not usable:
        why = refusal.text if refusal is not None else "no number to call"
        return [*lines, f"  decision: {why}"]
    if usable[0] != to_e164_or_none(args.numbers[0], region):
        lines.append(f"  the main number is refused: the lead is called on {usable[0]}")
    if not policy.windows:
        return [*lines, "  no calling window: allowed at any time"]
    table = zone_table((o.prefix, o.zones) for o in policy.zone_overrides)
    window = CallingWindow.parse(policy.windows, policy.holidays)
    margin = timedelta(minutes=policy.min_minutes_left)
    zones = lead_zones(usable, args.tz, route.timezone, table)
    own = sorted({z for number in usable for z in table.zones_of(number)})
    known = ", ".join(own) or f"none known (the route zone {route.timezone})"
    lines.append(f"  the numbers' zones: {known}")
    if args.tz:
        how = "narrows them" if args.tz in own else "is not among them: both are kept"
        lines.append(f"  the CRM's zone {args.tz} {how}")
    spec = ", ".join(f"{day} {hours}" for day, hours in policy.windows.items())
    lines.append(f"  window: {spec}; min_minutes_left {policy.min_minutes_left:g}")
    for name in zones:
        local = now.astimezone(zone_info(name))
        inside = window.open_through(zone_info(name), now, margin)
        lines.append(
            f"    {name}: {local.strftime('%a %Y-%m-%d %H:%M %Z')} "
            + ("open" if inside else "closed")
        )
    decision = calling_decision(
        usable, args.tz, [RouteWindow(window, route.timezone, margin, table)], now
    )
    lines.append(f"  decision at {now.strftime('%Y-%m-%d %H:%M UTC')}: {decision.text}")
    return lines


def to_e164_or_none(text: str, region: str) -> str | None:
    try:
        return to_e164(text, region)
    except PhoneError:
        return None


def _screened(
    number: str, route: RouteConfig, listed: dict[str, str], now: datetime
) -> GateDecision | None:
    """Return why the gate refuses ``number`` on ``route``, or None when it passes."""
    decided = screen(number, screening_of(route), dnc=None, consent=None, now=now)
    if decided.verdict is Verdict.BLOCK:
        return decided
    policy = route.policy
    name = listed.get(number)
    if policy is not None and name is not None and name in policy.dnc_lists:
        return GateDecision(
            Verdict.BLOCK, f"dnc_list:{name}", f"{number} is on the do-not-call list {name}"
        )
    return None


def _moment(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--at: {text!r} is not an ISO 8601 time") from None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def cmd_gate(args: argparse.Namespace) -> int:
    settings = settings_of(args, without_secrets=ALL_SECTIONS)
    lists = sorted({n for r in settings.routes if r.policy for n in r.policy.dnc_lists})
    listed: dict[str, str] | None = None
    if lists and store_exists(settings):

        async def lookup() -> dict[str, str]:
            store = await open_store(settings.state)
            try:
                return await store.dnc_matches(lists, sorted(numbers_of(settings, args)))
            finally:
                await store.close()

        listed = asyncio.run(lookup())
    try:
        lines = explain(settings, args, listed)
        if lists and listed is None:
            lines.append("(no state store yet: the do-not-call lists were not looked up)")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    print("\n".join(lines))
    return EXIT_OK
