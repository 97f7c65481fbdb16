"""The commands that read the state store or mend it: status, explain, rejects, retry,
ack, backup. They load what reading needs, not the dialers' clients nor the daemon."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from syncd.cli.common import ALL_SECTIONS, require_store, settings_of
from syncd.cli.exits import EXIT_OK, EXIT_PENDING
from syncd.cli.report import print_history, print_status, watch_status
from syncd.config import Settings
from syncd.core.csvsafe import neutralise
from syncd.errors import ConfigError, StoreError
from syncd.run import numbers_left
from syncd.run.status import collect
from syncd.state import open_store
from syncd.state.sqlite import backup


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_of(args, without_secrets=ALL_SECTIONS)
    if args.watch:
        if args.every <= 0:
            raise ConfigError("--every: a number of seconds above 0")
        require_store(settings)
        try:
            watch_status(
                lambda: _collect_status(settings), every_s=args.every, iterations=args.iterations
            )
        except KeyboardInterrupt:  # how a watch ends
            pass
        return EXIT_OK
    status = asyncio.run(_collect_status(settings))
    if args.json:
        print(json.dumps(status, indent=2, default=str))
    else:
        print_status(status)
    return EXIT_OK


async def _collect_status(settings: Settings) -> dict[str, Any]:
    if not settings.state.shared and not await asyncio.to_thread(Path(settings.state.path).exists):
        raise StoreError(
            f"no state store at {settings.state.path} yet: run `syncd run --once` first"
        )
    store = await open_store(settings.state)
    try:
        return await collect(settings, store)
    finally:
        await store.close()


def cmd_explain(args: argparse.Namespace) -> int:
    settings = settings_of(args, without_secrets=ALL_SECTIONS)
    require_store(settings)

    async def go() -> dict[str, Any]:
        store = await open_store(settings.state)
        try:
            return await store.lead_history(args.key)
        finally:
            await store.close()

    history = asyncio.run(go())
    print_history(args.key, history)
    return EXIT_OK if any(history.values()) else EXIT_PENDING  # 1: no such lead


def cmd_rejects(args: argparse.Namespace) -> int:
    """Write every refused row of the store as CSV, streamed (a SQL source's too)."""
    settings = settings_of(args, without_secrets=ALL_SECTIONS)
    if args.source is not None and args.source not in {s.name for s in settings.sources}:
        raise ConfigError(f"--source: no source named {args.source!r}")
    require_store(settings)

    async def go() -> int:
        store = await open_store(settings.state)
        writer = csv.writer(sys.stdout)
        n = 0
        try:  # the store is closed whatever stops the writing (a reader gone: a broken pipe)
            writer.writerow(["at", "source", "sink", "origin", "line", "key", "reason", "row"])
            async for r in store.all_rejects(args.source):
                # Every text cell defused: a file named =HYPERLINK(…).csv or a key like
                # -1+cmd|' /C calc'!A0 is the CRM's (or a visitor's) text, not a formula.
                at = datetime.fromtimestamp(float(r["at"]), UTC).isoformat(timespec="seconds")
                cells = [r["source"], r["sink"], r["origin"], r["line"], r["key"], r["reason"]]
                writer.writerow([at, *(neutralise(c) for c in cells), neutralise(r["row"] or "")])
                n += 1
        finally:
            await store.close()
        return n

    n = asyncio.run(go())
    print(f"{n} refused row(s)", file=sys.stderr)
    return EXIT_OK


def cmd_retry(args: argparse.Namespace) -> int:
    settings = settings_of(args, without_secrets=ALL_SECTIONS)
    if args.writeback is not None:
        if args.writeback not in {w.name for w in settings.writebacks}:
            raise ConfigError(f"--writeback: no writeback named {args.writeback!r}")
        if args.key:
            raise ConfigError("--key goes with --sink")
    elif args.sink not in {s.name for s in settings.sinks}:
        raise ConfigError(f"--sink: no sink named {args.sink!r}")
    require_store(settings)

    async def go() -> int:
        store = await open_store(settings.state)
        try:
            if args.writeback is not None:
                return await store.retry_writeback(args.writeback, reason=args.reason)
            return await store.retry_failed(args.sink, reason=args.reason, key=args.key)
        finally:
            await store.close()

    n = asyncio.run(go())
    if args.writeback is not None:
        print(f"{n} refused outcome(s) of {args.writeback} will be written again at its next pass")
    else:
        print(f"{n} lead(s) of {args.sink} back in the outbox")
    return EXIT_OK


def cmd_ack(args: argparse.Namespace) -> int:
    """Clear the alerts of leads a dialer held under a former number, removed by hand."""
    settings = settings_of(args, without_secrets=ALL_SECTIONS)
    if args.sink not in {s.name for s in settings.sinks}:
        raise ConfigError(f"--sink: no sink named {args.sink!r}")
    require_store(settings)

    async def go() -> list[str]:
        store = await open_store(settings.state)
        try:
            return await numbers_left.acknowledge(store, args.sink, None if args.all else args.key)
        finally:
            await store.close()

    cleared = asyncio.run(go())
    if not cleared:
        which = "any lead" if args.all else ", ".join(args.key)
        print(f"no alert of {args.sink} for {which}: nothing cleared")
        return EXIT_PENDING
    print(f"{len(cleared)} alert(s) of {args.sink} cleared: {', '.join(cleared)}")
    return EXIT_OK


def cmd_backup(args: argparse.Namespace) -> int:
    settings = settings_of(args, without_secrets=ALL_SECTIONS)
    if settings.state.shared:
        raise ConfigError(
            "state.url: a PostgreSQL store is backed up with the database's own tools "
            "(pg_dump --schema, or the database's backups); `syncd backup` copies SQLite"
        )
    copy = backup(Path(settings.state.path), Path(args.dest))
    print(
        f"backed up {settings.state.path} to {copy.path}: schema {copy.schema}, "
        f"{copy.leads} lead row(s), {copy.size / 1e6:.1f} MB. "
        "To restore: stop syncd, put the file in place of the store "
        "(and delete its -wal and -shm files), start syncd."
    )
    return EXIT_OK
