"""`syncd run`: the daemon (syncd.daemon.service), on the configuration's schedule."""

from __future__ import annotations

import argparse

from syncd.cli.common import settings_of
from syncd.daemon.service import run_daemon


def cmd_daemon(args: argparse.Namespace) -> int:
    code: int = run_daemon(settings_of(args), config_path=args.config)
    return code
