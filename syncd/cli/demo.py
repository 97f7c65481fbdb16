"""`syncd demo`: a simulator, a sample CRM export and one sync, end to end (syncd.demo)."""

from __future__ import annotations

import argparse
from pathlib import Path

from syncd.cli.report import make_console
from syncd.demo import run_demo


def cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(Path(args.dir), leads=args.leads, console=make_console(), serve=args.serve)
