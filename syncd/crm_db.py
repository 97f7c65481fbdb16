"""CRM databases: URLs, engines and error text shared by the SQL source and the SQL writeback.

A URL names a plain scheme (``postgresql://``, ``mysql://``, ``mariadb://``,
``sqlite:///``); syncd picks the async driver it ships with. Errors are reduced
to one line that never quotes the URL or its password.
"""

from __future__ import annotations

import math
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
from pydantic import SecretStr
from sqlalchemy import TextClause, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from syncd.secrets import UNSET

# Plain scheme names map to the async driver syncd ships with.
_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "mysql": "mysql+asyncmy",
    "mysql+asyncmy": "mysql+asyncmy",
    "mariadb": "mariadb+asyncmy",
    "mariadb+asyncmy": "mariadb+asyncmy",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


def async_url(raw: str) -> URL:
    """Return the URL with its async driver, or raise ValueError (never quoting the URL)."""
    try:
        url = make_url(raw.strip())
    except (ArgumentError, ValueError):
        raise ValueError(
            "is not a database URL (expected e.g. postgresql://user@host/db, "
            "mysql://user@host/db or sqlite:///path/crm.db)"
        ) from None
    driver = _DRIVERS.get(url.drivername)
    if driver is None:
        raise ValueError(
            f"database driver {url.drivername!r} is not supported; "
            "use postgresql, mysql, mariadb or sqlite"
        )
    url = url.set(drivername=driver)
    if url.get_backend_name() in ("mysql", "mariadb") and "charset" not in url.query:
        # Text arrives as Unicode whatever the column's charset (latin1 included).
        url = url.update_query_dict({"charset": "utf8mb4"})
    return url


def check_url(value: SecretStr) -> SecretStr:
    """Return ``value`` when it is a usable database URL; ValueError otherwise.

    A secret the command did not need to read (``UNSET``) passes: nothing connects.
    """
    if value.get_secret_value() == UNSET:
        return value
    async_url(value.get_secret_value())
    return value


def make_engine(url: SecretStr, *, autocommit: bool, timeout_s: float) -> AsyncEngine:
    """Return an async engine for a secret URL; nothing connects until first use."""
    parsed = async_url(url.get_secret_value())
    backend = parsed.get_backend_name()
    connect_args: dict[str, Any] = {}
    if backend == "postgresql":
        connect_args["timeout"] = timeout_s
    elif backend in ("mysql", "mariadb"):
        connect_args["connect_timeout"] = max(1, math.ceil(timeout_s))
    else:
        connect_args["timeout"] = timeout_s
    options: dict[str, Any] = {"pool_pre_ping": True, "connect_args": connect_args}
    if autocommit:
        # Each page in its own short transaction: no snapshot held open for the whole
        # pull (InnoDB purge, PostgreSQL's idle-in-transaction timeout).
        options["isolation_level"] = "AUTOCOMMIT"
    return create_async_engine(parsed, **options)


def describe_db_error(exc: BaseException, url: SecretStr | None = None) -> str:
    """Return a one-line, credential-free description of a database error."""
    orig = getattr(exc, "orig", None)
    source = orig if orig is not None else exc
    args: tuple[Any, ...] = tuple(getattr(source, "args", ()))
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        message = f"{args[1]} (error {args[0]})"  # MySQL: (code, message)
    else:
        message = str(source) or type(source).__name__
    message = message.strip().splitlines()[0] if message.strip() else type(source).__name__
    if url is not None:
        secret = url.get_secret_value()
        message = message.replace(secret, "<url>")
        try:
            password = make_url(secret).password
        except (ArgumentError, ValueError):
            password = None
        if password:
            message = message.replace(str(password), "***")
    return message[:500]


def bind_names(sql: str) -> set[str]:
    """Return the named parameters (``:name``) a statement uses."""
    return set(text(sql).compile().params)


# PostgreSQL (asyncpg) binds parameters with the types the server infers for the
# statement and refuses a Python value of another type ('10' for an integer key).
# So the statement is prepared once to learn those types, and values are converted.
_PG_INTEGER = {"int2", "int4", "int8"}
_PG_TEXT = {"text", "varchar", "bpchar", "name", "citext"}


async def postgres_parameter_types(conn: AsyncConnection, statement: TextClause) -> dict[str, str]:
    """Return, per named parameter of ``statement``, the type PostgreSQL infers for it.

    Empty when the statement cannot be prepared: running it then fails with the
    database's own error, which says what to fix.
    """
    compiled = statement.compile(dialect=conn.dialect)
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    try:
        prepared = await driver.prepare(compiled.string)
    except asyncpg.PostgresError:
        return {}
    names = list(compiled.positiontup or [])
    return {
        name: str(pg_type.name)
        for name, pg_type in zip(names, prepared.get_parameters(), strict=False)
    }


def to_postgres(value: Any, pg_type: str) -> Any:
    """Return ``value`` as the Python type asyncpg binds for ``pg_type``; ValueError if it
    cannot be one (the message names the value and the type)."""
    if value is None:
        return None
    try:
        if pg_type in _PG_INTEGER:
            return value if isinstance(value, int) else int(str(value).strip())
        if pg_type == "numeric":
            return Decimal(str(value).strip())
        if pg_type in ("float4", "float8"):
            return float(value)
        if pg_type == "uuid":
            return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value).strip())
        if pg_type == "bool" and not isinstance(value, bool):
            return str(value).strip().lower() in ("1", "true", "t", "yes", "y")
    except (ValueError, ArithmeticError):
        raise ValueError(f"{str(value)[:40]!r} is not a valid {pg_type}") from None
    if pg_type in _PG_TEXT and not isinstance(value, str):
        return str(value)
    return value
