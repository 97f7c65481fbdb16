"""The `syncd` command: run, run --once, check, status, rejects, audit, explain, retry,
ack, backup, state copy, sql trigger, gate explain, simulate, demo, completion.

Exit codes: 0 all done; 1 leads remain failed or pending, or a number stays dialable that
should not (a withdrawal refused, an old number left: `syncd status`); 2 configuration error;
3 every lead delivered or refused, but an outcome poll or a writeback failed;
4 `check --online`: a secret, source, dialer, writeback or the store failed its check;
75 another syncd holds the state store (cron: try later); 141 the reader of its output
left early (`syncd rejects | head`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import shtab

from syncd import __version__
from syncd.cli.exits import (
    EXIT_CONFIG,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_ONLINE,
    EXIT_PENDING,
    EXIT_READER_GONE,
)
from syncd.errors import ConfigError, StoreLockedError, SyncdError
from syncd.registry import SIMULATORS


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_CONFIG
    if args.command == "completion":
        return cmd_completion(parser, args.shell)
    # The one place the command line imports lazily: a command's module, and with it
    # what that command needs, loads once the arguments name it. `syncd --help` loads
    # none, `syncd status` neither the dialers' clients nor the daemon
    # (tests/test_cli_imports.py keeps it so); every command configures logging.
    from syncd import logs

    command = _command(_handler(args))
    try:
        return command(args)
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
    except BrokenPipeError:
        # The reader left (`syncd rejects | head`): the export ends there, as any Unix
        # writer's does, with the shell's code for it. Standard output is pointed at
        # /dev/null so that Python's own flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_READER_GONE


def _handler(args: argparse.Namespace) -> str:
    """Return the ``module:function`` (in syncd.cli) that runs the command ``args`` name."""
    if args.command == "run" and not (args.once or args.dry_run):
        return "daemon:cmd_daemon"  # the daemon's web server and scheduler: its own module
    return str(args.handler)


def _command(handler: str) -> Callable[[argparse.Namespace], int]:
    module, _, name = handler.partition(":")
    found: Callable[[argparse.Namespace], int] = getattr(
        importlib.import_module(f"syncd.cli.{module}"), name
    )
    return found


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
    run.set_defaults(handler="once:cmd_run")  # the daemon: _handler

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
    check.set_defaults(handler="check:cmd_check")

    status = sub.add_parser("status", help="counts per sink and state, last run, recent rejects")
    with_config(status)
    status.add_argument("--json", action="store_true")
    status.add_argument("--watch", action="store_true", help="refresh on the terminal until Ctrl-C")
    status.add_argument(
        "--every", type=float, default=5.0, metavar="S", help="with --watch: seconds between"
    )
    # tests: stop after this many refreshes
    status.add_argument("--iterations", type=int, default=None, help=argparse.SUPPRESS)
    status.set_defaults(handler="store:cmd_status")

    rejects = sub.add_parser(
        "rejects", help="every refused row (CSV on stdout): line, key, reason and its cells"
    )
    with_config(rejects)
    rejects.add_argument("--source", help="only rows of this source")
    rejects.set_defaults(handler="store:cmd_rejects")

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
    audit.set_defaults(handler="audit:cmd_audit")

    explain = sub.add_parser("explain", help="one lead's history")
    with_config(explain)
    explain.add_argument("key")
    explain.set_defaults(handler="store:cmd_explain")

    retry = sub.add_parser(
        "retry",
        help="put failed or refused leads back in the outbox (and send withdrawals waiting for "
        "their hourly try now), or refused outcomes back in a writeback's queue",
    )
    with_config(retry)
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("--sink", help="leads of this sink")
    which.add_argument("--writeback", help="outcomes this writeback's CRM refused")
    retry.add_argument("--reason", help="only those whose last error contains this text")
    retry.add_argument("--key", help="only this lead (with --sink)")
    retry.set_defaults(handler="store:cmd_retry")

    ack = sub.add_parser(
        "ack",
        help="acknowledge an alert dealt with by hand: a record the dialer kept under a "
        "lead's former number was removed there",
        description="Clear the alert `syncd status` shows for leads a dialer still held "
        "under a former number (ALERT: old numbers still dialable), once that record was "
        "removed in the dialer's own screens. syncd cannot see that it was: until then the "
        "alert stands and `run --once` exits 1.",
    )
    with_config(ack)
    ack.add_argument("--sink", required=True, help="the sink the alert names")
    acked = ack.add_mutually_exclusive_group(required=True)
    acked.add_argument("--key", action="append", help="the lead's key (repeatable)")
    acked.add_argument("--all", action="store_true", help="every alert of the sink")
    ack.set_defaults(handler="store:cmd_ack")

    backup = sub.add_parser(
        "backup", help="copy the state store consistently, also while syncd runs"
    )
    with_config(backup)
    dest = backup.add_argument("dest", help="the file to write (never overwritten)")
    _completes(dest, shtab.FILE)
    backup.set_defaults(handler="store:cmd_backup")

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
    copy.set_defaults(handler="state_copy:cmd_state_copy")

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
    trigger.set_defaults(handler="sql_trigger:cmd_sql_trigger")

    gate = sub.add_parser("gate", help="the safety gate: explain a number's zones and window")
    gate_sub = gate.add_subparsers(dest="gate_command", required=True)
    gate_explain = gate_sub.add_parser(
        "explain", help="a number's zones, the window in each, and the decision now"
    )
    gate_explain.add_argument("-c", "--config", help="TOML config file (default: $SYNCD_CONFIG)")
    gate_explain.add_argument(
        "numbers",
        nargs="+",
        metavar="NUMBER",
        help="the lead's main number, then its alternates (national numbers in --region)",
    )
    gate_explain.add_argument("--tz", default="", help="the lead's time-zone column (IANA name)")
    gate_explain.add_argument("--region", help="region of a national number (default: the route's)")
    gate_explain.add_argument(
        "--at", help="decide at this time (ISO 8601; UTC unless it has an offset) instead of now"
    )
    gate_explain.set_defaults(handler="gate_explain:cmd_gate")

    sim = sub.add_parser("simulate", help="serve a dialer simulator over HTTP")
    sim.add_argument("kind", choices=sorted(SIMULATORS))
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
    sim.set_defaults(handler="simulate:cmd_simulate")

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
    demo.set_defaults(handler="demo:cmd_demo")

    completion = sub.add_parser(
        "completion",
        help='print a shell completion script: eval "$(syncd completion bash)"',
        description="Print the completion script of a shell on stdout, for its startup file or "
        "its completions folder (docs/operating.md says where).",
    )
    completion.add_argument("shell", choices=COMPLETION_SHELLS)
    return p


COMPLETION_SHELLS = ("bash", "zsh", "tcsh")


def _completes(action: argparse.Action, how: dict[str, Any]) -> None:
    """Have the completion script offer paths (``shtab.FILE``/``DIRECTORY``) for ``action``."""
    action.complete = how  # type: ignore[attr-defined]  # shtab reads this attribute


def cmd_completion(parser: argparse.ArgumentParser, shell: str) -> int:
    # Written from this very parser: the script never lags a subcommand or an option.
    print(shtab.complete(parser, shell=shell))
    return EXIT_OK


def _print_config_problems(exc: ConfigError) -> None:
    print("syncd: configuration is invalid:", file=sys.stderr)
    for problem in exc.problems:
        print(f"  - {problem}", file=sys.stderr)
