"""The `syncd` command: run, run --once, check, status, rejects, audit, explain, retry,
backup, state copy, gate explain, simulate, demo, completion.

Exit codes: 0 all done; 1 leads remain failed or pending; 2 configuration error;
3 every lead delivered or refused, but an outcome poll or a writeback failed;
4 `check --online`: a secret, source, dialer, writeback or the store failed its check;
75 another syncd holds the state store (cron: try later).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import shtab
from pydantic import ValidationError

from syncd import __version__, logs, registry
from syncd.config import (
    Settings,
    SinkConfig,
    format_validation_error,
    load_settings,
    read_config,
    secret_references,
    secret_values,
    validate_settings,
)
from syncd.errors import ConfigError, StoreError, StoreLockedError, SyncdError
from syncd.run.lock import EXIT_LOCKED, store_lock

EXIT_OK, EXIT_PENDING, EXIT_CONFIG = 0, 1, 2
EXIT_ONLINE = 4  # `check --online`: the file is valid, but a part of it does not work here


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_CONFIG
    try:
        result: int = args.func(args)
        return result
    except ConfigError as exc:
        _print_config_problems(exc)
        return EXIT_CONFIG
    except StoreLockedError as exc:
        logs.fatal(f"{exc}; exiting (code {EXIT_LOCKED})", EXIT_LOCKED)
        return EXIT_LOCKED
    except SyncdError as exc:
        logs.fatal(str(exc), EXIT_PENDING)
        return EXIT_PENDING
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    # The docstring's whole first paragraph: its first line alone stopped mid-list.
    summary = " ".join(__doc__.split("\n\n")[0].split())
    p = argparse.ArgumentParser(prog="syncd", description=summary)
    p.add_argument("--version", action="version", version=f"syncd {__version__}")
    sub = p.add_subparsers(dest="command")

    def with_config(sp: argparse.ArgumentParser) -> None:
        config = sp.add_argument("-c", "--config", help="TOML config file (default: $SYNCD_CONFIG)")
        _completes(config, shtab.FILE)

    run = sub.add_parser("run", help="run the daemon, or one pass with --once")
    with_config(run)
    run.add_argument(
        "--once", action="store_true", help="pull, push until idle, print a summary, exit"
    )
    run.add_argument("--full", action="store_true", help="re-read every source from the start")
    run.add_argument("--deadline", type=float, help="seconds before --once stops pushing")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="one pass that shows what would be created, updated, removed and rejected per "
        "sink; calls no dialer, moves no file, writes no state",
    )
    run.set_defaults(func=cmd_run)

    check = sub.add_parser(
        "check",
        help="validate the configuration; with --online also try every secret, source, "
        "dialer, writeback and the state store",
    )
    with_config(check)
    check.add_argument(
        "--online",
        action="store_true",
        help="also resolve every secret, open each source, log in to each dialer (one "
        "harmless read), try each writeback's target and the state store; writes nothing "
        f"(exit {EXIT_ONLINE} when one fails)",
    )
    check.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="with --online: how long each part may take to answer (default 10)",
    )
    check.set_defaults(func=cmd_check)

    status = sub.add_parser("status", help="counts per sink and state, last run, recent rejects")
    with_config(status)
    status.add_argument("--json", action="store_true")
    status.add_argument("--watch", action="store_true", help="refresh on the terminal until Ctrl-C")
    status.add_argument(
        "--every", type=float, default=5.0, metavar="S", help="with --watch: seconds between"
    )
    # tests: stop after this many refreshes
    status.add_argument("--iterations", type=int, default=None, help=argparse.SUPPRESS)
    status.set_defaults(func=cmd_status)

    rejects = sub.add_parser(
        "rejects", help="every refused row (CSV on stdout): line, key, reason and its cells"
    )
    with_config(rejects)
    rejects.add_argument("--source", help="only rows of this source")
    rejects.set_defaults(func=cmd_rejects)

    audit = sub.add_parser(
        "audit",
        help="every safety-gate decision and push (CSV or JSON lines on stdout), in UTC and "
        "the lead's time",
    )
    with_config(audit)
    audit.add_argument(
        "--since", help="from this date or time (UTC unless it says; default: today)"
    )
    audit.add_argument("--until", help="up to this date or time (default: now)")
    audit.add_argument(
        "--format", choices=("csv", "jsonl"), default="csv", help="CSV (default) or JSON lines"
    )
    audit.set_defaults(func=cmd_audit)

    explain = sub.add_parser("explain", help="one lead's history")
    with_config(explain)
    explain.add_argument("key")
    explain.set_defaults(func=cmd_explain)

    retry = sub.add_parser(
        "retry",
        help="put failed or refused leads back in the outbox, or refused outcomes back in a "
        "writeback's queue",
    )
    with_config(retry)
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("--sink", help="leads of this sink")
    which.add_argument("--writeback", help="outcomes this writeback's CRM refused")
    retry.add_argument("--reason", help="only those whose last error contains this text")
    retry.add_argument("--key", help="only this lead (with --sink)")
    retry.set_defaults(func=cmd_retry)

    backup = sub.add_parser(
        "backup", help="copy the state store consistently, also while syncd runs"
    )
    with_config(backup)
    dest = backup.add_argument("dest", help="the file to write (never overwritten)")
    _completes(dest, shtab.FILE)
    backup.set_defaults(func=cmd_backup)

    state = sub.add_parser("state", help="move the state store: copy SQLite to PostgreSQL")
    state_sub = state.add_subparsers(dest="state_command", required=True)
    copy = state_sub.add_parser(
        "copy", help="copy the SQLite store to PostgreSQL (syncd stopped), for replicas"
    )
    with_config(copy)
    copy.add_argument(
        "--to", required=True, help="postgresql://user@host/db (or env:VAR holding it)"
    )
    copy.add_argument("--schema", help="a schema of its own in that database")
    copy.set_defaults(func=cmd_state_copy)

    sql = sub.add_parser("sql", help="what a SQL CRM installs for syncd")
    sql_sub = sql.add_subparsers(dest="sql_command", required=True)
    trigger = sql_sub.add_parser(
        "trigger",
        help="print the PostgreSQL trigger that wakes a source's pull when its table changes",
        description="Print SQL for the CRM's DBA: a statement-level trigger that NOTIFYs the "
        "source's listen channel (empty payload: no lead data). syncd changes nothing itself.",
    )
    with_config(trigger)
    trigger.add_argument("--source", required=True, help="the SQL source's name")
    trigger.add_argument(
        "--table", help="the table to watch (default: the one table the source's query reads)"
    )
    trigger.set_defaults(func=cmd_sql_trigger)

    from syncd.cli import gate_explain

    gate_explain.add_parser(sub)
    sub.choices["gate"].set_defaults(func=cmd_gate)

    sim = sub.add_parser("simulate", help="serve a dialer simulator over HTTP")
    sim.add_argument("kind", choices=sorted(registry.SIMULATORS))
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=9443)
    sim.add_argument("--faults", help='fault switches as JSON, e.g. {"error_rate":0.2,"seed":1}')
    sim.add_argument(
        "--quirks",
        help='quirks of real servers as JSON, e.g. {"bom":true,"max_records":100} '
        "(docs/simulators.md lists them and the vendors each applies to)",
    )
    sim.add_argument(
        "--timezone", help="jodo: the zone of the server's clock (default UTC), e.g. Asia/Kolkata"
    )
    sim.add_argument(
        "--clock-offset",
        type=float,
        metavar="SECONDS",
        help="jodo: run the server's clock this far ahead (negative: behind)",
    )
    sim.add_argument("--apikey", help="jodo: the apikey it accepts (default test_org)")
    sim.add_argument("--user", help="ameyo, ucontact: the login it accepts")
    sim.add_argument("--password", help="ameyo, ucontact: that login's password")
    sim.add_argument(
        "--campaign",
        action="append",
        help="the campaign it holds (jodo: a servicekey; ameyo: a number); repeatable",
    )
    sim.set_defaults(func=cmd_simulate)

    demo = sub.add_parser("demo", help="simulator + sample CRM export + one sync, end to end")
    _completes(
        demo.add_argument("--dir", default="demo-run", help="working folder (recreated)"),
        shtab.DIRECTORY,
    )
    demo.add_argument("--leads", type=int, default=300)
    demo.add_argument(
        "--serve",
        action="store_true",
        help="then keep the simulators up and run the daemon, with its status page, until Ctrl-C",
    )
    demo.set_defaults(func=cmd_demo)

    completion = sub.add_parser(
        "completion",
        help='print a shell completion script: eval "$(syncd completion bash)"',
        description="Print the completion script of a shell on stdout, for its startup file or "
        "its completions folder (docs/operating.md says where).",
    )
    completion.add_argument("shell", choices=COMPLETION_SHELLS)
    # Written from this very parser: the script never lags a subcommand or an option.
    completion.set_defaults(func=lambda args: cmd_completion(p, args.shell))
    return p


COMPLETION_SHELLS = ("bash", "zsh", "tcsh")


def _completes(action: argparse.Action, how: dict[str, Any]) -> None:
    """Have the completion script offer paths (``shtab.FILE``/``DIRECTORY``) for ``action``."""
    action.complete = how  # type: ignore[attr-defined]  # shtab reads this attribute


def cmd_completion(parser: argparse.ArgumentParser, shell: str) -> int:
    print(shtab.complete(parser, shell=shell))
    return EXIT_OK


def _print_config_problems(exc: ConfigError) -> None:
    print("syncd: configuration is invalid:", file=sys.stderr)
    for problem in exc.problems:
        print(f"  - {problem}", file=sys.stderr)


ALL_SECTIONS = ("sources", "sinks", "writebacks")


def _settings(args: argparse.Namespace, *, without_secrets: tuple[str, ...] = ()) -> Settings:
    settings = load_settings(args.config, without_secrets=without_secrets)
    logs.configure_from(settings.log)
    return settings


# -- commands ------------------------------------------------------------------


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
    from syncd.run.pull import choose_phone_backend

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
    if settings.health.enabled:
        print(_status_page_line(settings))
    if args.online:
        return _check_online(settings, raw, environ, args.timeout)
    return EXIT_OK


def _check_online(
    settings: Settings, raw: dict[str, Any], environ: dict[str, str], timeout_s: float
) -> int:
    from syncd.cli.online import online_checks, report

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
    from syncd.daemon.probes import parse_listen, status_access

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


def cmd_run(args: argparse.Namespace) -> int:
    if args.dry_run:  # reads the sources for real, but calls no dialer and no CRM writeback
        return _dry_run(_settings(args, without_secrets=("sinks", "writebacks")), full=args.full)
    settings = _settings(args)
    if not args.once:
        from syncd.daemon.service import run_daemon

        code: int = run_daemon(settings, config_path=args.config)
        return code
    from syncd.run.once import run_once

    with store_lock(settings.state):
        summary = asyncio.run(run_once(settings, full=args.full, deadline_s=args.deadline))
    from syncd.cli.report import print_summary

    print_summary(summary)
    return summary.exit_code()


def _dry_run(settings: Settings, *, full: bool) -> int:
    # No store lock: a dry run reads a copy and may run beside a working syncd.
    from syncd.cli.report import print_dry_run, print_summary
    from syncd.run.dryrun import dry_run

    result = asyncio.run(dry_run(settings, full=full))
    print_summary(result.summary)
    print_dry_run(result)
    return result.summary.exit_code()


def cmd_backup(args: argparse.Namespace) -> int:
    from syncd.state.sqlite import backup

    settings = _settings(args, without_secrets=ALL_SECTIONS)
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


def cmd_state_copy(args: argparse.Namespace) -> int:
    from syncd.config import StateConfig
    from syncd.core.scrub import register_secrets
    from syncd.state.copy import copy_to_postgres

    settings = _settings(args, without_secrets=ALL_SECTIONS)
    if settings.state.shared:
        raise ConfigError("state.url: the configured store is PostgreSQL already; copy from SQLite")
    try:
        target = StateConfig.model_validate(
            {"url": args.to, "schema_name": args.schema}, context={"environ": dict(os.environ)}
        )
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, prefix="--to")) from None
    assert target.url is not None
    register_secrets(*secret_values(target))
    with store_lock(settings.state):  # syncd must not write the store while it is copied
        copied = asyncio.run(
            copy_to_postgres(
                Path(settings.state.path), target.url.get_secret_value(), schema=args.schema
            )
        )
    rows = ", ".join(f"{n} {t}" for t, n in copied.rows.items() if n)
    print(
        f"copied {settings.state.path} to {target.shown()}"
        + (f" (schema {args.schema})" if args.schema else "")
        + f": {rows or 'nothing'}. Next: set [state] url (and schema_name) in the "
        "configuration of every replica and start them; a re-sync sends nothing new."
    )
    return EXIT_OK


def cmd_sql_trigger(args: argparse.Namespace) -> int:
    from syncd.sources.sql import SqlSourceConfig
    from syncd.sources.sql_trigger import TriggerError, default_channel, table_of, trigger_sql

    settings = _settings(args, without_secrets=(*ALL_SECTIONS, "core"))
    cfg = next((s for s in settings.sources if s.name == args.source), None)
    if not isinstance(cfg, SqlSourceConfig):
        sql_sources = [s.name for s in settings.sources if isinstance(s, SqlSourceConfig)]
        raise ConfigError(
            f"--source {args.source}: no SQL source of that name in the configuration"
            f" (SQL sources: {', '.join(sql_sources) or 'none'})"
        )
    table = args.table or table_of(cfg.query)
    if table is None:
        raise ConfigError(
            f"--source {cfg.name}: its query reads several tables (or none plainly);"
            " name the one whose changes should wake the pull with --table"
        )
    channel = cfg.listen or default_channel(cfg.name)
    try:
        print(trigger_sql(cfg.name, channel, table), end="")
    except TriggerError as exc:
        raise ConfigError(f"--table: {exc}") from None
    if not cfg.listen:
        print(
            f'note: source {cfg.name} does not listen yet: add listen = "{channel}" to it',
            file=sys.stderr,
        )
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    settings = _settings(args, without_secrets=ALL_SECTIONS)
    if args.watch:
        from syncd.cli.report import watch_status

        if args.every <= 0:
            raise ConfigError("--every: a number of seconds above 0")
        _require_store(settings)
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
        from syncd.cli.report import print_status

        print_status(status)
    return EXIT_OK


async def _collect_status(settings: Settings) -> dict[str, Any]:
    from syncd.run.status import collect
    from syncd.state import open_store

    if not settings.state.shared and not await asyncio.to_thread(Path(settings.state.path).exists):
        raise StoreError(
            f"no state store at {settings.state.path} yet: run `syncd run --once` first"
        )
    store = await open_store(settings.state)
    try:
        return await collect(settings, store)
    finally:
        await store.close()


def _require_store(settings: Settings) -> None:
    """Raise StoreError when there is no state store yet (looking must not create one)."""
    if not settings.state.shared and not Path(settings.state.path).exists():
        raise StoreError(
            f"no state store at {settings.state.path} yet: run `syncd run --once` first"
        )


def _store_exists(settings: Settings) -> bool:
    return settings.state.shared or Path(settings.state.path).exists()


def cmd_gate(args: argparse.Namespace) -> int:
    from syncd.cli.gate_explain import explain, numbers_of

    settings = _settings(args, without_secrets=ALL_SECTIONS)
    lists = sorted({n for r in settings.routes if r.policy for n in r.policy.dnc_lists})
    listed: dict[str, str] | None = None
    if lists and _store_exists(settings):

        async def lookup() -> dict[str, str]:
            from syncd.state import open_store

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


def cmd_explain(args: argparse.Namespace) -> int:
    settings = _settings(args, without_secrets=ALL_SECTIONS)
    _require_store(settings)

    async def go() -> dict[str, Any]:
        from syncd.state import open_store

        store = await open_store(settings.state)
        try:
            return await store.lead_history(args.key)
        finally:
            await store.close()

    from syncd.cli.report import print_history

    history = asyncio.run(go())
    print_history(args.key, history)
    return EXIT_OK if any(history.values()) else EXIT_PENDING  # 1: no such lead


def cmd_rejects(args: argparse.Namespace) -> int:
    """Write every refused row of the store as CSV, streamed (a SQL source's too)."""
    settings = _settings(args, without_secrets=ALL_SECTIONS)
    if args.source is not None and args.source not in {s.name for s in settings.sources}:
        raise ConfigError(f"--source: no source named {args.source!r}")
    _require_store(settings)

    async def go() -> int:
        import csv

        from syncd.core.csvsafe import neutralise
        from syncd.state import open_store

        store = await open_store(settings.state)
        writer = csv.writer(sys.stdout)
        writer.writerow(["at", "source", "sink", "origin", "line", "key", "reason", "row"])
        n = 0
        try:
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


def cmd_audit(args: argparse.Namespace) -> int:
    """Write the audit trail (CSV or JSON lines): holds, blocks, withdrawals, pushes."""
    from syncd.cli.audit import default_since, parse_day, write_audit

    settings = _settings(args, without_secrets=ALL_SECTIONS)
    since = parse_day(args.since, "--since") if args.since else default_since()
    until = parse_day(args.until, "--until") if args.until else None
    _require_store(settings)

    async def go() -> int:
        from syncd.state import open_store

        store = await open_store(settings.state)
        try:
            return await write_audit(store, settings, since, until, sys.stdout, args.format)
        finally:
            await store.close()

    n = asyncio.run(go())
    print(f"{n} event(s) from {since.isoformat()}", file=sys.stderr)
    return EXIT_OK


def cmd_retry(args: argparse.Namespace) -> int:
    settings = _settings(args, without_secrets=ALL_SECTIONS)
    if args.writeback is not None:
        if args.writeback not in {w.name for w in settings.writebacks}:
            raise ConfigError(f"--writeback: no writeback named {args.writeback!r}")
        if args.key:
            raise ConfigError("--key goes with --sink")
    elif args.sink not in {s.name for s in settings.sinks}:
        raise ConfigError(f"--sink: no sink named {args.sink!r}")
    _require_store(settings)

    async def go() -> int:
        from syncd.state import open_store

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
    from syncd.simulators.faults import Faults
    from syncd.simulators.quirks import Quirks
    from syncd.simulators.server import listening_socket, serve

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
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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


def cmd_demo(args: argparse.Namespace) -> int:
    from syncd.cli.report import make_console
    from syncd.demo import run_demo

    return run_demo(Path(args.dir), leads=args.leads, console=make_console(), serve=args.serve)
