"""`syncd sql trigger`: the PostgreSQL trigger a SQL source's CRM installs to wake its pull."""

from __future__ import annotations

import argparse
import sys

from syncd.cli.common import ALL_SECTIONS, settings_of
from syncd.cli.exits import EXIT_OK
from syncd.errors import ConfigError
from syncd.sources.sql import SqlSourceConfig
from syncd.sources.sql_trigger import TriggerError, default_channel, table_of, trigger_sql


def cmd_sql_trigger(args: argparse.Namespace) -> int:
    settings = settings_of(args, without_secrets=(*ALL_SECTIONS, "core"))
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
