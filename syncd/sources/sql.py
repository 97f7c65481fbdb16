"""SQL source: the user's SELECT, read with one streaming cursor per phase, in (cursor, key) order.

syncd wraps the configured query as a derived table and adds only identifiers from
the configuration and bound parameters::

    SELECT * FROM (<query>) AS syncd_src
    WHERE syncd_src.modified_at >= :c AND syncd_src.id IS NOT NULL
    ORDER BY syncd_src.modified_at, syncd_src.id

and reads the result through one server-side cursor (asyncpg's portal, asyncmy's
unbuffered cursor) in chunks of ``page_size`` rows: one statement, so one sort of the
result however many chunks it makes, and memory stays one chunk whatever the table size.
Each chunk carries the (cursor, key) of its last row; that is the crash checkpoint the
pipeline commits with the chunk. When the server drops the stream mid-way, it is
opened again after the last row handed out with the keyset predicate::

    WHERE (syncd_src.modified_at, syncd_src.id) > (:c, :k)

(MariaDB/MySQL get the expanded ``c > :c OR (c = :c AND k > :k)``, which their range
optimiser seeks on), so rows sharing one timestamp are neither skipped nor repeated.
A SQLite CRM is read with that predicate one ``LIMIT page_size`` page at a time instead:
a SQLite reader holds the file's lock for as long as its statement is open, and pages
there cost no network round trip.

A pull reads, in phases: rows whose cursor column is NULL (first and full pulls
only, by key), then every row from the committed position minus ``overlap_s`` (late
commits and clock skew), then rows without a key (refused with a reason).
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from typing import Any, Literal

import asyncpg
import structlog
from pydantic import Field, SecretStr, field_validator, model_validator
from sqlalchemy import text
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from syncd.config import SourceConfig
from syncd.core.model import Reject
from syncd.crm_db import async_url, bind_names, check_url, describe_db_error, make_engine
from syncd.errors import CheckFailed
from syncd.secrets import UNSET, Secret
from syncd.sources.base import Chunk
from syncd.sources.sql_trigger import CHANNEL

log = structlog.get_logger("syncd.source.sql")

RejectLoader = Callable[[str], Awaitable[list[tuple[int | None, str, str, str]]]]
ParamValue = str | int | float | bool
RESERVED_PREFIX = "syncd_"
# What asyncpg raises while a server-side cursor fetches: SQLAlchemy translates the
# statement's errors, not the cursor's, so these reach the source as they are.
DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
# Of those, the ones that mean the connection is gone (killed, server restarting; a
# termination that arrives between two fetches leaves the protocol in a state it refuses).
_DRIVER_DROPS = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.AdminShutdownError,
)
ALIAS = "syncd_src"

# ---------------------------------------------------------------------------
# configuration


_SQL_TOKENS = re.compile(
    r"""'(?:[^']|'')*'"""  # a string literal
    r'|"(?:[^"]|"")*"'  # a quoted identifier
    r"|`[^`]*`"  # a MySQL quoted identifier
    r"|--[^\n]*|/\*.*?\*/"  # comments
    r"|%\([A-Za-z_][A-Za-z0-9_]*\)s|%s"  # DB-API placeholders
    r"|[()]|[A-Za-z_][A-Za-z0-9_]*",
    re.S,
)
_PAGING = {"limit": "LIMIT", "offset": "OFFSET", "fetch": "FETCH"}
# What follows a paging keyword (a column named "offset" is followed by none of these).
_PAGING_ARG = re.compile(r"\s+(?:[0-9:(]|all\b|first\b|next\b|[A-Za-z_]\w*\s*(?:rows?\b|$))", re.I)


def query_problems(query: str) -> list[str]:
    """Return what in a source query would make syncd read less than every row.

    syncd pages the query itself (keyset on cursor and key): a LIMIT, OFFSET or FETCH
    of its own silently drops rows, and an ORDER BY is replaced. Only the top level
    counts: a subquery may limit what it likes.
    """
    problems: list[str] = []
    depth = 0
    previous = ""
    for match in _SQL_TOKENS.finditer(query):
        token = match.group(0)
        if token == "(":
            depth += 1
        elif token == ")":
            depth = max(depth - 1, 0)
        elif token.startswith("%"):
            problems.append(
                f"placeholder {token} is not supported; write :name and give its value in params"
            )
        elif depth == 0 and token[0].isalpha():
            word = token.lower()
            paging = word in _PAGING and _PAGING_ARG.match(query, match.end())
            if paging and not (word == "fetch" and previous == "for"):
                problems.append(
                    f"remove the top-level {_PAGING[word]}: syncd reads the query in pages of "
                    "its own, and a limit of yours silently drops leads"
                )
            elif word == "by" and previous == "order":
                problems.append(
                    "remove the top-level ORDER BY: syncd orders by the cursor and key columns"
                )
            previous = word
    return list(dict.fromkeys(problems))


class SqlSourceConfig(SourceConfig):
    kind: Literal["sql"] = "sql"
    url: Secret  # e.g. "env:CRM_DB_URL"; postgresql://, mysql://, mariadb://, sqlite:///
    query: str = Field(min_length=1)
    params: dict[str, ParamValue] = Field(
        default_factory=dict
    )  # values for the query's own :named parameters
    key_column: str = Field(min_length=1)
    cursor_column: str | None = None  # None: every pull reads the whole result, by key
    overlap_s: float = Field(60.0, ge=0)  # re-read window (column units for number cursors)
    page_size: int = Field(5000, ge=1, le=100_000)
    bytes_encoding: str = "utf-8"  # for BLOB/VARBINARY/bytea columns
    timeout_s: float = Field(30.0, gt=0)
    # A PostgreSQL channel the CRM's trigger NOTIFYs (`syncd sql trigger` prints it): the
    # daemon pulls at once when it fires; the schedule stays the backstop.
    listen: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        return check_url(value)

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        stripped = value.strip().rstrip(";").strip()
        if not stripped:
            raise ValueError("is empty")
        problems = query_problems(stripped)
        if problems:
            raise ValueError("; ".join(problems))
        return stripped

    @field_validator("bytes_encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        return value

    @field_validator("listen")
    @classmethod
    def _channel(cls, value: str | None) -> str | None:
        if value is not None and not CHANNEL.match(value):
            raise ValueError(
                f"{value!r} is not a channel name: lower-case letters, digits and _,"
                " starting with a letter or _, at most 63"
            )
        return value

    @model_validator(mode="after")
    def _listens_on_postgresql(self) -> SqlSourceConfig:
        url = self.url.get_secret_value()
        if self.listen and url != UNSET and async_url(url).get_backend_name() != "postgresql":
            raise ValueError(
                "listen works with a PostgreSQL CRM only (LISTEN/NOTIFY); for MySQL or"
                " MariaDB give the source a short schedule interval_s instead"
            )
        return self

    @model_validator(mode="after")
    def _parameters(self) -> SqlSourceConfig:
        used = bind_names(self.query)
        reserved = sorted(n for n in used | set(self.params) if n.startswith(RESERVED_PREFIX))
        if reserved:
            raise ValueError(
                f"parameter name(s) {', '.join(reserved)} are reserved for syncd (prefix "
                f"{RESERVED_PREFIX!r})"
            )
        missing = sorted(used - set(self.params))
        if missing:
            raise ValueError(
                "the query uses :"
                + ", :".join(missing)
                + " but params gives no value for "
                + ("it" if len(missing) == 1 else "them")
                + " (write a literal colon in the query as \\:)"
            )
        return self


# ---------------------------------------------------------------------------
# values


class Undecodable(ValueError):
    """A bytes value is not text in the configured encoding."""


def to_text(value: object, encoding: str = "utf-8") -> str:
    """Return a database value as the text a CSV export would hold."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # A phone stored as DOUBLE must not become "919820012345.0".
        if value.is_integer() and abs(value) < 1e17:
            return str(int(value))
        return repr(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.isoformat()
    if isinstance(value, date | dtime):
        return value.isoformat()
    if isinstance(value, timedelta):  # MySQL TIME
        seconds = int(value.total_seconds())
        sign = "-" if seconds < 0 else ""
        seconds = abs(seconds)
        return f"{sign}{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        if raw in (b"\x00", b"\x01"):
            return str(raw[0])  # MySQL BIT(1), a common soft-delete flag
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError as exc:
            raise Undecodable(
                f"not valid {encoding} text at byte {exc.start} (latin1 data in a binary "
                "column? set the source's bytes_encoding, or CONVERT it in the query)"
            ) from None
    if isinstance(value, list | tuple):
        # A PostgreSQL array of phones reads like a cell holding several numbers.
        return ", ".join(to_text(v, encoding) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return str(value)


def encode_value(value: object) -> list[Any]:
    """Return a JSON-ready [type, text] pair that :func:`decode_value` restores exactly."""
    if isinstance(value, datetime):
        return ["datetime", value.isoformat()]
    if isinstance(value, date):
        return ["date", value.isoformat()]
    if isinstance(value, bool):
        return ["bool", value]
    if isinstance(value, int):
        return ["int", str(value)]
    if isinstance(value, Decimal):
        return ["decimal", str(value)]
    if isinstance(value, float):
        return ["float", value]
    if isinstance(value, bytes | bytearray | memoryview):
        return ["bytes", bytes(value).hex()]
    return ["str", str(value)]


def decode_value(pair: list[Any]) -> Any:
    """Return the database value an :func:`encode_value` pair stands for."""
    kind, raw = pair
    decoders: dict[str, Callable[[Any], Any]] = {
        "datetime": datetime.fromisoformat,
        "date": date.fromisoformat,
        "bool": bool,
        "int": int,
        "decimal": Decimal,
        "float": float,
        "bytes": bytes.fromhex,
        "str": str,
    }
    return decoders[kind](raw)


def minus_overlap(value: Any, overlap_s: float) -> Any:
    """Return the cursor value ``overlap_s`` earlier (column units for numbers)."""
    if not overlap_s:
        return value
    if isinstance(value, datetime):
        return value - timedelta(seconds=overlap_s)
    if isinstance(value, date):
        return value - timedelta(days=math.ceil(overlap_s / 86400))
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value - math.ceil(overlap_s)
    if isinstance(value, Decimal):
        return value - Decimal(str(overlap_s))
    if isinstance(value, float):
        return value - overlap_s
    if isinstance(value, str):
        # SQLite keeps timestamps as text: step back and write it the same way.
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
        sep = "T" if "T" in value else " "
        spec = "seconds" if "." not in value else "microseconds"
        return (parsed - timedelta(seconds=overlap_s)).isoformat(sep=sep, timespec=spec)
    return value


# ---------------------------------------------------------------------------
# the position (the cursor the pipeline commits with each chunk)


@dataclass(frozen=True, slots=True)
class Position:
    """How far a pull has read: a phase and the last (cursor, key) of that phase."""

    phase: Literal["nulls", "main", "done"]
    cursor: Any = None
    key: Any = None

    def to_json(self) -> str:
        data: dict[str, Any] = {"v": 1, "phase": self.phase}
        if self.cursor is not None:
            data["c"] = encode_value(self.cursor)
        if self.key is not None:
            data["k"] = encode_value(self.key)
        return json.dumps(data)

    @classmethod
    def from_json(cls, raw: str | None) -> Position | None:
        if not raw:
            return None
        try:
            data = json.loads(raw)
            phase = data["phase"]
            if phase not in ("nulls", "main", "done"):
                raise ValueError(phase)
            return cls(
                phase,
                decode_value(data["c"]) if "c" in data else None,
                decode_value(data["k"]) if "k" in data else None,
            )
        except (ValueError, KeyError, TypeError):
            log.warning("source.cursor.unreadable", action="reading everything again")
            return None


# ---------------------------------------------------------------------------
# the source


@dataclass
class _Page:
    header: tuple[str, ...]
    rows: list[tuple[Any, ...]]


class HeaderProblem(Exception):
    """The query's columns do not fit the configuration."""


class SqlSource:
    """Pulls one query in keyset pages; see the module docstring."""

    def __init__(
        self,
        config: SqlSourceConfig,
        *,
        required_columns: set[str] | None = None,
        load_rejects: RejectLoader | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.required_columns = set(required_columns or ())
        self.rows_read = 0
        self._engine: AsyncEngine | None = None
        self._header_checked = False
        self._line = 0
        self._origin = ""
        self._streaming: AsyncConnection | None = None  # the open stream's connection

    # -- Source protocol ---------------------------------------------------------

    def progress_total(self) -> int | None:
        return None

    def progress_done(self) -> int:
        return self.rows_read

    async def fail_origin(self, origin: str, reason: str) -> None:
        # Nothing to set aside: the reason is in the rejects and the log.
        return None

    async def close(self) -> None:
        if self._streaming is not None and not self._streaming.invalidated:
            # A pull given up mid-way (a failed commit, a stop) leaves its generator
            # suspended with the stream open: drop the connection now, not whenever the
            # generator is collected (see _statement for why not close it).
            await self._streaming.invalidate()
        self._streaming = None
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()

    async def probe(self) -> str:
        """Raise CheckFailed unless the database answers the query's first row (LIMIT 1, no
        ORDER BY: the database stops at the first row it finds) with the columns needed."""
        try:
            async with self.engine().connect() as conn:
                try:
                    result = await conn.execute(
                        text(f"SELECT * FROM ({self.config.query}) AS {ALIAS} LIMIT 1"),
                        dict(self.config.params),
                    )
                    header = tuple(str(k) for k in result.keys())
                    result.fetchall()
                except (SQLAlchemyError, TimeoutError) as exc:
                    why = describe_db_error(exc, self.config.url)
                    raise CheckFailed(
                        f"the database refused the query: {why}", settings=("query", "params")
                    ) from None
        except CheckFailed:
            raise
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise CheckFailed(
                f"cannot connect to the database: {describe_db_error(exc, self.config.url)}",
                settings=("url",),
                action="check the URL, and that the database is up and reachable from here",
            ) from None
        try:
            self._check_header(header)
        except HeaderProblem as exc:
            raise CheckFailed(
                f"the query's columns do not fit: {exc}",
                settings=("query", "key_column", "cursor_column"),
            ) from None
        finally:
            self._header_checked = False
        return f"the database answered the query's first row ({len(header)} columns)"

    async def chunks(self, cursor: str | None, *, full: bool = False) -> AsyncIterator[Chunk]:
        """Yield chunks of ``page_size`` rows from the committed ``cursor`` (or the start)."""
        start = None if full else Position.from_json(cursor)
        # One origin per pull: line numbers rise within it, and a key read again by a
        # later pull is judged by its stored hash, not as a repeat within one file.
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self._origin = f"{self.name}@{stamp}-{uuid.uuid4().hex[:4]}"
        self._line = 0
        self._header_checked = False
        bound = log.bind(source=self.name, origin=self._origin)
        bound.debug("source.pull.started", full=full, resume=start.phase if start else None)
        # The pipeline logs a failed pull (source.origin.failed) with this reason.
        try:
            async for chunk in self._phases(start):
                yield chunk
        except HeaderProblem as exc:
            yield Chunk(self._origin, (), [], failed=str(exc))
        except (SQLAlchemyError, OSError, TimeoutError, *DRIVER_ERRORS) as exc:
            reason = f"cannot read the database: {describe_db_error(exc, self.config.url)}"
            yield Chunk(self._origin, (), [], failed=reason)
        else:
            if self._line:
                bound.info("source.pull.finished", rows=self._line)

    # -- phases ------------------------------------------------------------------

    async def _phases(self, start: Position | None) -> AsyncIterator[Chunk]:
        cfg = self.config
        if start is not None and start.phase == "done" and cfg.cursor_column is not None:
            start = None  # the source gained a cursor column: read everything once
        if cfg.cursor_column is None:
            # No change column: every pull reads everything by key, resuming a crashed pull.
            after = start.key if start and start.phase == "main" else None
            async for chunk in self._keyed(after, phase="main"):
                yield chunk
            yield Chunk(self._origin, (), [], cursor=Position("done").to_json())
            async for chunk in self._keyless(None):
                yield chunk
            return
        since = None
        if start is None or start.phase == "nulls":
            # A first or full pull (no cursor yet), or an incremental one that stopped
            # among the undated rows (it carries the main cursor it started from).
            after = start.key if start else None
            resume = start.cursor if start else None
            async for chunk in self._keyed(after, phase="nulls", cursor=resume):
                yield chunk
            if resume is not None:
                since = minus_overlap(resume, cfg.overlap_s)
        elif start.phase == "main":
            # Undated rows (a NULL or zero-date cursor) show no change time, so every pull
            # reads them again; their content decides whether anything changed.
            async for chunk in self._keyed(None, phase="nulls", cursor=start.cursor):
                yield chunk
            since = minus_overlap(start.cursor, cfg.overlap_s)
        async for chunk in self._ordered(since):
            yield chunk
        async for chunk in self._keyless(since if start is not None else None):
            yield chunk

    async def _keyed(
        self, after: Any, *, phase: Literal["nulls", "main"], cursor: Any = None
    ) -> AsyncIterator[Chunk]:
        """Yield rows in key order: the undated ones, or all when there is no cursor column.

        ``cursor`` is the main phase's position to keep in each chunk's Position, so an
        incremental pull that stops here resumes here, then goes on from that cursor.
        """
        k = self._col(self.config.key_column)
        conditions = [f"{k} IS NOT NULL"]
        if phase == "nulls":
            conditions.append(self._undated(self._col(self.config.cursor_column or "")))

        def from_key(key: Any) -> tuple[str, dict[str, Any]]:
            if key is None:
                return " AND ".join(conditions), {}
            return " AND ".join([*conditions, f"{k} > :syncd_k"]), {"syncd_k": key}

        def resume(header: tuple[str, ...], row: tuple[Any, ...]) -> tuple[str, dict[str, Any]]:
            return from_key(row[header.index(self.config.key_column)])

        async for page in self._read(from_key(after), k, resume):
            last = page.rows[-1][page.header.index(self.config.key_column)]
            yield self._chunk(page, Position(phase, cursor=cursor, key=last))

    async def _ordered(self, since: Any) -> AsyncIterator[Chunk]:
        """Yield rows in (cursor, key) order from ``since`` on."""
        cfg = self.config
        c, k = self._col(cfg.cursor_column or ""), self._col(cfg.key_column)
        if since is not None:
            first = (f"{c} >= :syncd_c AND {k} IS NOT NULL", {"syncd_c": since})
        else:
            first = (f"NOT {self._undated(c)} AND {k} IS NOT NULL", {})

        def last_of(header: tuple[str, ...], row: tuple[Any, ...]) -> tuple[Any, Any]:
            return row[header.index(cfg.cursor_column or "")], row[header.index(cfg.key_column)]

        def resume(header: tuple[str, ...], row: tuple[Any, ...]) -> tuple[str, dict[str, Any]]:
            at, key = last_of(header, row)
            # A row value with a NULL key still compares greater on its cursor alone:
            # keyless rows belong to their own phase.
            return f"{self._after(c, k)} AND {k} IS NOT NULL", {"syncd_c": at, "syncd_k": key}

        async for page in self._read(first, f"{c}, {k}", resume):
            at, key = last_of(page.header, page.rows[-1])
            yield self._chunk(page, Position("main", cursor=at, key=key))

    async def _keyless(self, since: Any) -> AsyncIterator[Chunk]:
        """Yield rows without a key (they are refused downstream), up to one page."""
        cfg = self.config
        where = f"{self._col(cfg.key_column)} IS NULL"
        params: dict[str, Any] = {}
        if since is not None and cfg.cursor_column is not None:
            where += f" AND {self._col(cfg.cursor_column)} >= :syncd_c"
            params["syncd_c"] = since
        order = self._col(cfg.cursor_column) if cfg.cursor_column else "1"
        page = await self._fetch(where, order, params, limit=cfg.page_size + 1)
        if not page.rows:
            return
        extra: list[Reject] = []
        if len(page.rows) > cfg.page_size:
            page.rows = page.rows[: cfg.page_size]
            extra.append(
                Reject(
                    self.name,
                    f"more than {cfg.page_size} rows have no value in key column "
                    f"{cfg.key_column!r}; only the first {cfg.page_size} are listed",
                    None,
                    self._origin,
                )
            )
        chunk = self._chunk(page, None)
        chunk.rejects.extend(extra)
        yield chunk

    # -- queries -------------------------------------------------------------------

    def engine(self) -> AsyncEngine:
        if self._engine is None:
            self._engine = make_engine(
                self.config.url, autocommit=True, timeout_s=self.config.timeout_s
            )
        return self._engine

    def _dialect(self) -> Dialect:
        return self.engine().dialect

    def _undated(self, c: str) -> str:
        """Return the condition of a row with no usable change time: NULL, or MySQL's and
        MariaDB's zero date (``0000-00-00``), which sorts before every real time."""
        if self._dialect().name in ("mysql", "mariadb"):
            return f"({c} IS NULL OR {c} = '0000-00-00 00:00:00' OR {c} = '0000-00-00')"
        return f"{c} IS NULL"

    def _col(self, name: str) -> str:
        return f"{ALIAS}.{self._dialect().identifier_preparer.quote(name)}"

    def _after(self, c: str, k: str) -> str:
        """Return the predicate "after (:syncd_c, :syncd_k)" that this database seeks on.

        Inside one long run of equal cursor values, only a seek on both index columns
        keeps each page's cost flat: PostgreSQL and SQLite do that for a row value,
        MariaDB/MySQL for the expanded OR (their row values scan the table).
        """
        if self._dialect().name in ("postgresql", "sqlite"):
            return f"({c}, {k}) > (:syncd_c, :syncd_k)"
        return f"({c} > :syncd_c OR ({c} = :syncd_c AND {k} > :syncd_k))"

    def page_sql(self, where: str, order: str, *, limit_param: str | None = "syncd_n") -> str:
        """Return the statement for one read: the user's query wrapped, never user data."""
        limit = f" LIMIT :{limit_param}" if limit_param else ""
        return (
            f"SELECT * FROM ({self.config.query}) AS {ALIAS} WHERE {where} ORDER BY {order}{limit}"
        )

    async def _read(
        self,
        first: tuple[str, dict[str, Any]],
        order: str,
        resume: Callable[[tuple[str, ...], tuple[Any, ...]], tuple[str, dict[str, Any]]],
    ) -> AsyncIterator[_Page]:
        """Yield one phase's rows in ``order``, ``page_size`` at a time.

        ``first`` is the phase's (WHERE, parameters); ``resume`` gives the keyset
        predicate that reads on after a row. PostgreSQL and MariaDB/MySQL: one streaming
        statement, opened again after the last row handed out when the server drops it
        (once per drop: a second drop before any new row fails the pull). SQLite: one
        statement per page (see the module docstring).
        """
        paged = self._dialect().name == "sqlite"
        where, params = first
        retried = False
        while True:
            last: _Page | None = None
            try:
                async for page in self._statement(where, order, params, paged=paged):
                    last, retried = page, False
                    yield page
            except (DBAPIError, *DRIVER_ERRORS) as exc:
                # A connection the server dropped: one fresh try from the last row read.
                if retried or not dropped(exc):
                    raise
                retried = True
                log.info("source.stream.reopened", source=self.name, after_rows=self._line)
            else:
                if not paged or last is None or len(last.rows) < self.config.page_size:
                    return
            if last is not None:
                where, params = resume(last.header, last.rows[-1])

    async def _statement(
        self, where: str, order: str, params: dict[str, Any], *, paged: bool
    ) -> AsyncIterator[_Page]:
        """Yield the rows of one statement in pages (all of them, or one when ``paged``)."""
        if paged:
            page = await self._fetch(where, order, params)
            if page.rows:
                yield page
            return
        statement = text(self.page_sql(where, order, limit_param=None))
        async with self.engine().connect() as conn:
            finished = False
            self._streaming = conn
            try:
                result = await self._stream(conn, statement, {**self.config.params, **params})
                header = tuple(str(k) for k in result.keys())
                self._check_header(header)
                wire = await _unbounded_reader(conn)
                async for rows in result.partitions(self.config.page_size):
                    if wire is not None:
                        wire.pause_reading()
                    yield _Page(header, [tuple(r) for r in rows])
                    if wire is not None:
                        wire.resume_reading()
                finished = True
            finally:
                self._streaming = None
                if not finished and not conn.invalidated:
                    # Given up mid-stream: closing an unbuffered MariaDB/MySQL result reads
                    # every row left on the wire first; dropping the connection does not.
                    await conn.invalidate()

    async def _stream(self, conn: AsyncConnection, statement: Any, values: dict[str, Any]) -> Any:
        """Open ``statement`` as a server-side cursor on ``conn``.

        How long the cursor stays open is how long the pull takes, chunk commits included
        (they go to syncd's own store, never to the CRM, so nothing here waits on this
        connection). PostgreSQL needs a transaction for a cursor: it holds the statement's
        snapshot, which delays vacuum of rows changed meanwhile, as any long report does.
        MariaDB/MySQL stream in autocommit: the statement's read view and the connection
        are held; if syncd stops reading for ``net_write_timeout`` (60 s by default) the
        server drops the stream and ``_read`` opens it again after the last row.
        """
        if conn.dialect.name == "postgresql":
            conn = await conn.execution_options(isolation_level="READ COMMITTED")
        return await conn.stream(statement, values)

    async def _fetch(
        self, where: str, order: str, params: dict[str, Any], *, limit: int | None = None
    ) -> _Page:
        statement = text(self.page_sql(where, order))
        values = {**self.config.params, **params, "syncd_n": limit or self.config.page_size}
        for attempt in (1, 2):
            try:
                async with self.engine().connect() as conn:
                    result = await conn.execute(statement, values)
                    header = tuple(str(k) for k in result.keys())
                    rows = [tuple(r) for r in result.fetchall()]
                break
            except DBAPIError as exc:
                # A connection the server dropped between pages: one fresh try.
                if attempt == 2 or not exc.connection_invalidated:
                    raise
        self._check_header(header)
        return _Page(header, rows)

    def _check_header(self, header: tuple[str, ...]) -> None:
        if self._header_checked:
            return
        problem = header_problem(
            header,
            self.required_columns,
            self.config.key_column,
            self.config.cursor_column,
        )
        if problem:
            raise HeaderProblem(problem)
        self._header_checked = True

    # -- rows ------------------------------------------------------------------------

    def _chunk(self, page: _Page, position: Position | None) -> Chunk:
        rows: list[tuple[int, list[str]]] = []
        rejects: list[Reject] = []
        key_at = page.header.index(self.config.key_column)
        for raw in page.rows:
            self._line += 1
            values, problem = self._texts(page.header, raw)
            if problem:
                rejects.append(
                    Reject(self.name, problem, self._line, self._origin, values, values[key_at])
                )
            else:
                rows.append((self._line, values))
        self.rows_read += len(page.rows)
        return Chunk(
            self._origin,
            page.header,
            rows,
            rejects=rejects,
            cursor=position.to_json() if position else None,
        )

    def _texts(self, header: tuple[str, ...], raw: tuple[Any, ...]) -> tuple[list[str], str]:
        """Return the row as text, and a reason when a mapped column cannot be text."""
        values: list[str] = []
        problem = ""
        for column, value in zip(header, raw, strict=True):
            try:
                values.append(to_text(value, self.config.bytes_encoding))
            except Undecodable as exc:
                values.append(bytes(value).decode(self.config.bytes_encoding, "replace"))
                if column in self.required_columns and not problem:
                    problem = f"column {column!r} is {exc}"
        return values, problem


async def _unbounded_reader(conn: AsyncConnection) -> Any:
    """Return the transport of an asyncmy connection, whose reader has no flow control.

    asyncmy appends whatever the server sends to one growing buffer: while the pipeline
    commits a chunk, the rest of a streamed result would pile up in memory (715 MB at a
    million rows). Pausing the transport between chunks leaves it in the socket, and TCP
    holds the server back. asyncpg fetches a cursor's rows on request: nothing to do.
    """
    if conn.dialect.name not in ("mysql", "mariadb"):
        return None
    raw = await conn.get_raw_connection()
    transport = getattr(raw.driver_connection, "_transport", None)
    return transport if hasattr(transport, "pause_reading") else None


def dropped(exc: BaseException) -> bool:
    """Return True when a read failed because its connection is gone."""
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated)
    return isinstance(exc, _DRIVER_DROPS)


def header_problem(
    header: tuple[str, ...], required: set[str], key_column: str, cursor_column: str | None
) -> str | None:
    """Return why the query's columns cannot serve the routes, or None."""
    seen: set[str] = set()
    for name in header:
        if name in seen:
            return f"the query returns column {name!r} twice; give one of them an alias (AS …)"
        seen.add(name)
    own = {"key_column": key_column}
    if cursor_column:
        own["cursor_column"] = cursor_column
    for setting, column in own.items():
        if column not in seen:
            return f"{setting} {column!r} is not a column of the query; it returns: " + ", ".join(
                header
            )
    missing = sorted(required - seen)
    if missing:
        return (
            "the query does not return column(s) "
            + ", ".join(repr(m) for m in missing)
            + " that the route mapping needs; it returns: "
            + ", ".join(header)
        )
    return None
