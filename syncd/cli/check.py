"""`syncd check`: the configuration validated and what it means (the phone library, each
sink's calling window and feed, the status page); with --online every part tried."""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from syncd import logs
from syncd.cli.common import ALL_SECTIONS
from syncd.cli.exits import EXIT_OK, EXIT_ONLINE
from syncd.cli.online import online_checks, report
from syncd.config import Settings, SinkConfig, read_config, secret_references, validate_settings
from syncd.daemon.access import parse_listen, status_access
from syncd.run.pull import choose_phone_backend


def cmd_check(args: argparse.Namespace) -> int:
    environ = dict(os.environ)
    raw = read_config(args.config, environ)
    # --online tries the secrets one by one, each named: an unreadable one must not stop
    # the file's check, nor the other parts' (so the load is lenient then).
    lenient = (*ALL_SECTIONS, "core") if args.online else ()
    settings = validate_settings(raw, environ=environ, without_secrets=lenient)
    # stdout is the report alone (scripts read it); what the checks log goes to stderr,
    # and only what needs attention: the report already says what info lines would.
    logs.configure("error" if settings.log.level == "error" else "warning", settings.log.format)
    dialers = [s for s in settings.sinks if s.entity == "leads"]
    agents = f" (+{len(settings.agent_routes)} of agents)" if settings.agent_routes else ""
    print(
        f"configuration ok: {len(settings.sources)} source(s), {len(dialers)} sink(s), "
        f"{len(settings.routes)} route(s){agents}, {len(settings.writebacks)} writeback(s); "
        f"state store {settings.state.shown()}"
    )
    phones = choose_phone_backend(settings)
    print(f"phone numbers validated by {phones.name} ({phones.why})")
    for sink in dialers:
        hold = sink.window_hold()
        mark = "" if hold.held else "WARNING: "
        print(
            f"{mark}sink {sink.name} ({sink.kind}): calling window {hold.describe()}"
            f"{_feed_note(sink)}"
        )
        if (gap := sink.cannot_withdraw()) is not None:
            print(f"WARNING: sink {sink.name} ({sink.kind}): withdrawals: {gap}")
        for line in _deletions_kept(settings, sink):
            print(f"WARNING: sink {sink.name} ({sink.kind}): {line}")
    if settings.health.enabled:
        print(_status_page_line(settings))
    if args.online:
        return _check_online(settings, raw, environ, args.timeout)
    return EXIT_OK


def _check_online(
    settings: Settings, raw: dict[str, Any], environ: dict[str, str], timeout_s: float
) -> int:
    results = asyncio.run(
        online_checks(settings, secret_references(raw), environ, timeout_s=timeout_s)
    )
    lines, failed = report(results)
    print(f"online checks (each part given {timeout_s:g} s; nothing is written):")
    for line in lines:
        print(line)
    if failed:
        print(f"online: {failed} of {len(results)} check(s) failed (exit {EXIT_ONLINE})")
        return EXIT_ONLINE
    print(f"online: all {len(results)} check(s) passed")
    return EXIT_OK


def _deletions_kept(settings: Settings, sink: SinkConfig) -> list[str]:
    """Return, per route that carries the CRM's deletions to ``sink`` (a ``map.deleted``
    column), what becomes of a deleted lead when the dialer cannot remove it."""
    gap = sink.cannot_delete()
    if gap is None:
        return []
    return [
        f"route {r.name} carries the CRM's deletions (source {r.source}, column "
        f"{r.map.deleted!r}): {gap}"
        for r in settings.routes
        if r.sink == sink.name and r.map.deleted
    ]


def _feed_note(sink: SinkConfig) -> str:
    """Return what ``queue_ahead_minutes`` does for a sink, for `syncd check`."""
    ahead = sink.queue_ahead_minutes
    if ahead is None:
        return "; queue_ahead_minutes not set: every due lead is sent at once"
    start = sink.queue_start or sink.batch_size
    return (
        f"; fed, not flooded: about {ahead:g} min of the dialer's pace waits in it"
        f" ({start} before a pace is measured)"
    )


def _status_page_line(settings: Settings) -> str:
    """Return where the status page is and who may read it."""
    host, port = parse_listen(settings.health.listen)
    access = status_access(settings.health)
    if access.loopback:
        return f"status page: http://{host}:{port}/status (loopback only: no token needed)"
    if access.token is not None:
        return (
            f"status page: /status on {host}:{port} needs Authorization: Bearer "
            "<health.status_token>; in a browser, sign in with the token at /login"
        )
    return (
        f"status page: refused on {host}:{port}: set health.status_token (env:/file:) "
        "to open it beyond loopback"
    )
