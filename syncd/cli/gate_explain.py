"""`syncd gate explain NUMBER [--tz ZONE]`: the zones a number rings in, the window in
each, and what the safety gate decides now — for each route with a calling window."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

from syncd.config import RouteConfig, Settings
from syncd.core.gate import CallingWindow, RouteWindow, calling_decision, lead_zones, zone_info
from syncd.core.phones import PhoneError, to_e164
from syncd.core.zones import ZoneError, check_zone, zone_table


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gate = sub.add_parser("gate", help="the safety gate: explain a number's zones and window")
    gate_sub = gate.add_subparsers(dest="gate_command", required=True)
    explain = gate_sub.add_parser(
        "explain", help="a number's zones, the window in each, and the decision now"
    )
    explain.add_argument("-c", "--config", help="TOML config file (default: $SYNCD_CONFIG)")
    explain.add_argument("number", help="a phone number (national numbers in --region)")
    explain.add_argument("--tz", default="", help="the lead's time-zone column (IANA name)")
    explain.add_argument("--region", help="region of a national number (default: the route's)")
    explain.add_argument("--at", help="decide at this UTC time (ISO 8601) instead of now")


def explain(settings: Settings, args: argparse.Namespace) -> list[str]:
    """Return the lines `syncd gate explain` prints; ValueError for a bad argument."""
    now = _moment(args.at)
    if args.tz:
        try:
            check_zone(args.tz)
        except ZoneError as exc:
            raise ValueError(f"--tz: {exc}") from None
    routes = [r for r in settings.routes if r.policy is not None and r.policy.windows]
    if not routes:
        return ["no route has a calling window ([policy] windows): any time is allowed"]
    lines: list[str] = []
    for route in routes:
        lines += _route_lines(route, args, now)
    return lines


def _route_lines(route: RouteConfig, args: argparse.Namespace, now: datetime) -> list[str]:
    policy = route.policy
    assert policy is not None
    region = args.region or route.default_region
    try:
        number = to_e164(args.number, region)
    except PhoneError as exc:
        return [f"route {route.name}: {args.number!r} is not a number in {region}: {exc}"]
    table = zone_table((o.prefix, o.zones) for o in policy.zone_overrides)
    window = CallingWindow.parse(policy.windows, policy.holidays)
    margin = timedelta(minutes=policy.min_minutes_left)
    zones = lead_zones(number, args.tz, route.timezone, table)
    own = table.zones_of(number)
    known = ", ".join(own) or f"none known (the route zone {route.timezone})"
    lines = [f"route {route.name}: {number}", f"  the number's zones: {known}"]
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
        number, args.tz, [RouteWindow(window, route.timezone, margin, table)], now
    )
    lines.append(f"  decision at {now.strftime('%Y-%m-%d %H:%M UTC')}: {decision.text}")
    return lines


def _moment(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--at: {text!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
