"""`syncd check --online` on the state store: can it be opened, without opening it for work.

Opening a store for work creates, migrates and locks it; the check does none of
that. A SQLite file is opened read-only (a running daemon is not disturbed) and a
missing one must be creatable; PostgreSQL is connected to and its schema version read.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import asyncpg

from syncd.config import StateConfig
from syncd.core.private import folder_problem
from syncd.errors import CheckFailed
from syncd.state import migrations


async def probe_store(cfg: StateConfig, timeout_s: float) -> str:
    """Return what the check found; raise CheckFailed naming the ``state`` setting to fix."""
    if cfg.kind == "postgresql" and cfg.url is not None:
        return await _probe_postgres(cfg.url.get_secret_value(), cfg.schema_name, timeout_s)
    if cfg.kind == "sqlite":
        return await asyncio.to_thread(_probe_sqlite, Path(cfg.path))
    return f"{cfg.kind}: no online check for this kind of store"


def _probe_sqlite(path: Path) -> str:
    if not path.exists():
        problem = folder_problem(path.parent, may_create=True)
        if problem is not None:
            raise CheckFailed(
                f"the store {path} does not exist yet and cannot be made: {problem}",
                settings=("path",),
                action="give the user syncd runs as write access to its folder",
            )
        return f"{path} does not exist yet; syncd creates it on its first run"
    # WAL keeps -wal and -shm files beside the store: its folder must be writable too.
    problem = folder_problem(path.parent, may_create=False)
    if problem is not None:
        raise CheckFailed(
            f"the store's folder: {problem}",
            settings=("path",),
            action="give the user syncd runs as write access to the folder (it keeps "
            "the store's -wal and -shm files there)",
        )
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            has_log = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'migrations'"
            ).fetchone()
            if has_log:
                top = db.execute("SELECT MAX(number) FROM migrations").fetchone()[0]
                version = max(version, int(top or 0))
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise CheckFailed(
            f"cannot read the store {path}: {exc}",
            settings=("path",),
            action="point it at syncd's store, or restore the store from a backup",
        ) from None
    return _schema_said(str(path), version, len(migrations.load("sqlite")))


async def _probe_postgres(url: str, schema: str | None, timeout_s: float) -> str:
    from syncd.state.postgres import _reason, _shown, dsn_of

    shown = _shown(url)
    try:
        conn = await asyncpg.connect(dsn_of(url), timeout=timeout_s)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise CheckFailed(
            f"cannot connect to the store {shown}: {_reason(exc)}",
            settings=("url",),
            action="check the URL and that the database is up and reachable from here",
        ) from None
    try:
        where = schema or "public"
        table = await conn.fetchval("SELECT to_regclass($1)", f'"{where}".migrations')
        if table is None:
            return f"{shown} answered; schema {where} has no store yet (syncd makes it)"
        version = await conn.fetchval(f'SELECT MAX(number) FROM "{where}".migrations')
    except asyncpg.PostgresError as exc:
        raise CheckFailed(
            f"the store {shown} answered but cannot be read: {_reason(exc)}",
            settings=("url", "schema_name"),
            action="check the account's rights on the schema",
        ) from None
    finally:
        await conn.close(timeout=5)
    return _schema_said(shown, int(version or 0), len(migrations.load("postgres")))


def _schema_said(where: str, at: int, knows: int) -> str:
    problem = migrations.too_old(where, knows, at)
    if problem is not None:
        raise CheckFailed(problem, action="upgrade syncd")
    return f"{where} opens (schema {at}; this syncd knows {knows})"
