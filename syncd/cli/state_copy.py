"""`syncd state copy`: the SQLite store copied to PostgreSQL (syncd stopped), for replicas."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from pydantic import ValidationError

from syncd.cli.common import ALL_SECTIONS, settings_of
from syncd.cli.exits import EXIT_OK
from syncd.config import StateConfig, format_validation_error, secret_values
from syncd.core.scrub import register_secrets
from syncd.errors import ConfigError
from syncd.run.lock import store_lock
from syncd.state.copy import copy_to_postgres


def cmd_state_copy(args: argparse.Namespace) -> int:
    settings = settings_of(args, without_secrets=ALL_SECTIONS)
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
