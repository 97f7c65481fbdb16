"""SQL writeback: the user's statement(s) with named parameters, a batch per transaction.

Each batch runs every configured statement (e.g. ``UPDATE leads SET …`` and an
``INSERT`` into a call log) with one parameter set per record, inside one
transaction. A crash can re-run the batch in flight, so make the statements
idempotent: an UPDATE, or an INSERT keyed on ``(sink, key, version)`` with
``ON CONFLICT DO NOTHING`` (PostgreSQL, SQLite) or ``INSERT IGNORE`` (MariaDB/MySQL).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import asyncpg
import structlog
from pydantic import Field, SecretStr, field_validator, model_validator
from sqlalchemy import TextClause, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from syncd.config import TimeZoneName
from syncd.crm_db import (
    bind_names,
    check_url,
    describe_db_error,
    make_engine,
    postgres_parameter_types,
    to_postgres,
)
from syncd.errors import CheckFailed, RetryableError
from syncd.net.retry import RetryPolicy, with_retries
from syncd.secrets import Secret
from syncd.writeback.base import (
    BaseWritebackConfig,
    Item,
    ItemsRefused,
    StatelessWriteback,
    WritebackStopped,
    local_time,
)

log = structlog.get_logger("syncd.writeback.sql")

# SQLSTATE classes (PostgreSQL, and MySQL/MariaDB where the server gives one).
_RETRY_CLASSES = {"08", "40", "53", "57", "58"}  # connection, deadlock, resources
_REFUSE_CLASSES = {"22", "23"}  # data exception, integrity constraint: the record's fault
# MySQL error numbers, many of which come with the catch-all SQLSTATE HY000.
_MYSQL_RETRY = {1040, 1205, 1213, 2002, 2003, 2006, 2013, 2055}
_MYSQL_REFUSE = {1048, 1062, 1216, 1217, 1264, 1265, 1292, 1364, 1366, 1406, 1451, 1452}


class SqlWritebackConfig(BaseWritebackConfig):
    kind: Literal["sql"] = "sql"
    url: Secret
    statement: str | list[str]
    timezone: TimeZoneName = "UTC"  # times are bound as naive datetimes in this zone
    timeout_s: float = Field(30.0, gt=0)
    attempts: int = Field(4, ge=1, le=50)  # for deadlocks and dropped connections

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        return check_url(value)

    @field_validator("statement")
    @classmethod
    def _statement(cls, value: str | list[str]) -> str | list[str]:
        items = [value] if isinstance(value, str) else value
        if not items or not all(s.strip() for s in items):
            raise ValueError("must be a statement or a list of statements, none empty")
        return value

    @model_validator(mode="after")
    def _parameters(self) -> SqlWritebackConfig:
        for sql in self.statements:
            self.check_names(sorted(bind_names(sql)), "the statement")
        return self

    @property
    def statements(self) -> list[str]:
        items = [self.statement] if isinstance(self.statement, str) else self.statement
        return [s.strip().rstrip(";").strip() for s in items]


def classify(exc: BaseException, url: SecretStr) -> Exception:
    """Return the writeback error a database error stands for."""
    reason = describe_db_error(exc, url)
    orig = getattr(exc, "orig", None)
    state = str(getattr(orig, "sqlstate", "") or "")
    args = getattr(orig, "args", ())
    code = args[0] if args and isinstance(args[0], int) else None
    if isinstance(exc, OSError | TimeoutError) or code in _MYSQL_RETRY:
        return RetryableError(reason, vendor="crm database")
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return RetryableError(reason, vendor="crm database")
    if code in _MYSQL_REFUSE or state[:2] in _REFUSE_CLASSES:
        return ItemsRefused(reason, vendor="crm database", code=state)
    if state[:2] in _RETRY_CLASSES:
        return RetryableError(reason, vendor="crm database", code=state)
    if not state and type(exc).__name__ in ("IntegrityError", "DataError"):
        return ItemsRefused(reason, vendor="crm database")
    if not state and type(exc).__name__ in ("OperationalError", "InterfaceError"):
        return RetryableError(reason, vendor="crm database")
    # Syntax, unknown table or column, permissions, authentication: the statement or
    # the account needs fixing; retrying the same batch cannot help.
    return WritebackStopped(f"the CRM database refused the statement: {reason}")


class SqlWriteback(StatelessWriteback):
    """Runs the configured statements for each batch of records."""

    def __init__(self, config: SqlWritebackConfig) -> None:
        self.name = config.name
        self.config = config
        self._engine: AsyncEngine | None = None
        self._statements: list[TextClause] = [text(s) for s in config.statements]
        self._types: dict[int, dict[str, str]] = {}  # statement -> parameter types (PostgreSQL)
        self._policy = RetryPolicy(
            attempts=config.attempts,
            timeout_s=max(config.timeout_s * config.attempts, 30.0),
            wait_initial_s=0.2,
            wait_max_s=5.0,
        )

    async def open(self, state: str | None) -> None:
        self._engine = make_engine(
            self.config.url, autocommit=False, timeout_s=self.config.timeout_s
        )

    async def probe(self) -> str:
        """Connect and have the database compile each statement against its tables without
        running it: PostgreSQL prepares it, SQLite and MariaDB/MySQL EXPLAIN it (parameters
        NULL). The transaction is rolled back; nothing is written."""
        engine = make_engine(self.config.url, autocommit=False, timeout_s=self.config.timeout_s)
        url = self.config.url
        try:
            async with engine.connect() as conn:
                statements = self.config.statements
                for n, sql in enumerate(statements):
                    where = "the statement" if len(statements) == 1 else f"statement[{n}]"
                    try:
                        await _compile(conn, sql)
                    except (SQLAlchemyError, asyncpg.PostgresError) as exc:
                        raise CheckFailed(
                            f"the database refused {where}: {describe_db_error(exc, url)}",
                            settings=("statement",),
                            action="check its table and column names, and the account's rights",
                        ) from None
        except CheckFailed:
            raise
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise CheckFailed(
                f"cannot connect to the database: {describe_db_error(exc, url)}",
                settings=("url",),
                action="check the URL, and that the database is up and reachable from here",
            ) from None
        finally:
            await engine.dispose()
        return f"the database compiled {len(self.config.statements)} statement(s); none was run"

    def params(self, item: Item) -> dict[str, Any]:
        """Return the named parameters of one record, times as naive local datetimes."""
        values = dict(item.values)
        for name, value in values.items():
            if isinstance(value, datetime):
                local = local_time(value, self.config.timezone)
                values[name] = local.replace(tzinfo=None) if local else None
        values["raw"] = json.dumps(values.get("raw") or {}, default=str, sort_keys=True)
        return values

    async def write(self, items: Sequence[Item]) -> None:
        if self._engine is None:
            raise WritebackStopped("the SQL writeback is not open")
        engine = self._engine
        params = [self.params(i) for i in items]

        async def attempt() -> None:
            try:
                async with engine.begin() as conn:
                    for n, statement in enumerate(self._statements):
                        bound = await self._typed(conn, n, statement, items, params)
                        await conn.execute(statement, bound)
            except (SQLAlchemyError, OSError, TimeoutError) as exc:
                raise classify(exc, self.config.url) from exc

        await with_retries(attempt, self._policy, vendor="crm database", what=self.name)

    async def _typed(
        self,
        conn: AsyncConnection,
        n: int,
        statement: TextClause,
        items: Sequence[Item],
        params: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        """Return ``params`` converted to the types statement ``n`` binds (PostgreSQL only)."""
        if conn.dialect.name != "postgresql":
            return params  # MariaDB/MySQL and SQLite convert text on the server
        types = self._types.get(n)
        if types is None:
            types = self._types[n] = await postgres_parameter_types(conn, statement)
        converted = []
        for item, values in zip(items, params, strict=True):
            try:
                converted.append({k: to_postgres(v, types.get(k, "")) for k, v in values.items()})
            except ValueError as exc:
                raise ItemsRefused(
                    f"{item.sink}/{item.key}: {exc}, as the statement needs", vendor="crm database"
                ) from None
        return converted

    async def close(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()


async def _compile(conn: AsyncConnection, sql: str) -> None:
    """Have the database check ``sql`` against its schema without running it."""
    if conn.dialect.name == "postgresql":
        compiled = text(sql).compile(dialect=conn.dialect)
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        await driver.prepare(compiled.string)
        return
    await conn.execute(text(f"EXPLAIN {sql}"), dict.fromkeys(bind_names(sql)))
