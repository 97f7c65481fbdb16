"""`syncd run --once` (one pass until idle, under the store's lock) and
`syncd run --dry-run` (what a pass would do, on a copy of the store)."""

from __future__ import annotations

import argparse
import asyncio

from syncd.cli.common import settings_of
from syncd.cli.report import print_dry_run, print_summary
from syncd.config import Settings
from syncd.run.dryrun import dry_run
from syncd.run.lock import store_lock
from syncd.run.once import run_once


def cmd_run(args: argparse.Namespace) -> int:
    if args.dry_run:  # reads the sources for real, but calls no dialer and no CRM writeback
        return _dry_run(settings_of(args, without_secrets=("sinks", "writebacks")), full=args.full)
    settings = settings_of(args)
    with store_lock(settings.state):
        summary = asyncio.run(run_once(settings, full=args.full, deadline_s=args.deadline))
    print_summary(summary)
    return summary.exit_code()


def _dry_run(settings: Settings, *, full: bool) -> int:
    # No store lock: a dry run reads a copy and may run beside a working syncd.
    result = asyncio.run(dry_run(settings, full=full))
    print_summary(result.summary)
    print_dry_run(result)
    return result.summary.exit_code()
