"""`syncd simulate`: a dialer simulator served over HTTP (syncd.simulators)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from syncd import logs, registry
from syncd.cli.exits import EXIT_OK
from syncd.errors import ConfigError
from syncd.simulators.faults import Faults
from syncd.simulators.quirks import Quirks
from syncd.simulators.server import listening_socket, serve


def _simulator_logins(args: argparse.Namespace) -> dict[str, Any]:
    """Return the simulator settings for --apikey, --user/--password and --campaign."""
    kind, out = args.kind, {}
    if args.apikey is not None:
        if kind != "jodo":
            raise ConfigError("--apikey is a switch of the jodo simulator only")
        out["apikey"] = args.apikey
    if (args.user is None) != (args.password is None):
        raise ConfigError("--user and --password go together")
    if args.user is not None:
        if kind == "jodo":
            raise ConfigError("jodo has no login: use --apikey")
        out["users"] = {args.user: args.password}
    if args.campaign:
        if kind == "jodo":
            out["servicekeys"] = tuple(args.campaign)
        elif kind == "ameyo":
            try:
                out["campaigns"] = {int(c): {1: True} for c in args.campaign}
            except ValueError:
                raise ConfigError("--campaign: ameyo names campaigns by number") from None
        else:
            out["campaigns"] = tuple(args.campaign)
    return out


def cmd_simulate(args: argparse.Namespace) -> int:
    logs.configure("info", "auto")
    kwargs: dict[str, Any] = {}
    if args.faults:
        try:
            kwargs["faults"] = Faults.from_dict(json.loads(args.faults))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"--faults: {exc}") from None
    if args.quirks:
        try:
            kwargs["quirks"] = Quirks.from_dict(json.loads(args.quirks), args.kind)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"--quirks: {exc}") from None
    for option, name, value in (
        ("--timezone", "timezone", args.timezone),
        ("--clock-offset", "clock_offset_s", args.clock_offset),
    ):
        if value is None:
            continue
        if args.kind != "jodo":
            raise ConfigError(f"{option} is a switch of the jodo simulator only")
        kwargs[name] = value
    if args.timezone is not None:
        try:
            ZoneInfo(args.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"--timezone: unknown time zone {args.timezone!r}") from None
    kwargs.update(_simulator_logins(args))
    app = registry.load_simulator(args.kind)(**kwargs)
    # Bound before the banner: with --port 0 it names the port the system picked.
    sock = listening_socket(args.host, args.port)
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{sock.getsockname()[1]}"
    print(f"{args.kind} simulator on {url}; it accepts:", file=sys.stderr)
    print(app.state.sim.describe(url), file=sys.stderr, flush=True)
    if "quirks" in kwargs:
        on = {k: v for k, v in kwargs["quirks"].to_dict().items() if v != Quirks().to_dict()[k]}
        print(f"  quirks      {json.dumps(on)}  (POST {url}/_sim/quirks)", file=sys.stderr)
    serve(app, sock)
    return EXIT_OK
