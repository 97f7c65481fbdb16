"""The stores' named statements: one file per table group, one folder per database.

``sqlite/sink_ledger.sql``, ``postgres/sink_ledger.sql``…: each statement follows a
``-- name: <name>`` line and runs as written (``?`` placeholders for SQLite, ``$n``
for PostgreSQL), so a database's spelling lives in its own file, not in a rewrite.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

DATABASES = ("sqlite", "postgres")
_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


@functools.cache
def load(database: str, group: str) -> dict[str, str]:
    """Return the statements of ``database``'s ``group``.sql by name."""
    if database not in DATABASES:
        raise ValueError(f"no statements for {database!r}")
    text = resources.files(__package__).joinpath(database, f"{group}.sql").read_text("utf-8")
    parts = _NAME.split(text)
    statements: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
        sql = "\n".join(lines).strip().rstrip(";").strip()
        if not sql or name in statements:
            raise RuntimeError(f"{database}/{group}.sql: statement {name!r} empty or named twice")
        statements[name] = sql
    return statements
