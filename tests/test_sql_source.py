"""The SQL source against a real SQLite file: keyset paging, overlap, resume, messy rows."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from syncd.config import validate_settings
from syncd.errors import ConfigError
from syncd.sources.sql import Position, SqlSource, SqlSourceConfig, minus_overlap, to_text
from tests.conftest import run_cli

QUERY = "SELECT id, phone, name, modified_at FROM leads"


@dataclass
class Pulled:
    rows: list[dict[str, str]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    rejects: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)
    cursors: list[str] = field(default_factory=list)
    failed: str | None = None
    origins: set[str] = field(default_factory=set)

    @property
    def keys(self) -> list[str]:
        return [r["id"] for r in self.rows]

    @property
    def cursor(self) -> str | None:
        return self.cursors[-1] if self.cursors else None


async def pull(source: SqlSource, cursor: str | None = None, *, full: bool = False) -> Pulled:
    out = Pulled()
    try:
        async for chunk in source.chunks(cursor, full=full):
            if chunk.failed:
                out.failed = chunk.failed
                continue
            out.origins.add(chunk.origin)
            for line, values in chunk.rows:
                out.rows.append(dict(zip(chunk.header, values, strict=True)))
                out.lines.append(line)
            out.rejects += [(r.key, r.reason) for r in chunk.rejects]
            if chunk.cursor is not None:
                out.cursors.append(chunk.cursor)
    finally:
        await source.close()
    return out


def make_db(path: Path, rows: list[tuple[Any, ...]]) -> None:
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE leads (id INTEGER, phone TEXT, name BLOB, modified_at TEXT,"
            " deleted INTEGER DEFAULT 0)"
        )
        db.execute("CREATE INDEX leads_sync ON leads (modified_at, id)")
        db.executemany("INSERT INTO leads (id, phone, name, modified_at) VALUES (?, ?, ?, ?)", rows)


def source(path: Path, **overrides: Any) -> SqlSource:
    settings: dict[str, Any] = {
        "name": "crm",
        "url": f"sqlite:///{path}",
        "query": QUERY,
        "key_column": "id",
        "cursor_column": "modified_at",
        "page_size": 7,
        "overlap_s": 60,
        **overrides,
    }
    return SqlSource(SqlSourceConfig(**settings), required_columns={"id", "phone"})


def stamp(minutes_ago: float) -> str:
    when = datetime(2026, 11, 22, 12, 0, 0) - timedelta(minutes=minutes_ago)
    return when.strftime("%Y-%m-%d %H:%M:%S")


async def test_rows_sharing_one_timestamp_arrive_exactly_once_across_pages(
    tmp_path: Path,
) -> None:
    db = tmp_path / "crm.db"
    # 500 rows over only 4 distinct timestamps: every page boundary falls inside a tie.
    make_db(db, [(i, f"98200{i:05d}", b"x", stamp(60 * (i % 4))) for i in range(1, 501)])

    got = await pull(source(db))

    assert got.failed is None
    assert sorted(int(k) for k in got.keys) == list(range(1, 501))
    assert got.lines == sorted(got.lines) and len(set(got.lines)) == 500
    assert len(got.origins) == 1


async def test_a_later_pull_reads_changes_and_the_overlap_window_only(tmp_path: Path) -> None:
    db = tmp_path / "crm.db"
    # Row i changed i minutes before 10:00: row 1 is the newest, at 09:59.
    make_db(db, [(i, f"98200{i:05d}", b"x", stamp(600 + i)) for i in range(1, 101)])
    first = await pull(source(db))
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE leads SET phone = '9820099999', modified_at = ? WHERE id = 5", (stamp(0),)
        )
        conn.execute(
            "INSERT INTO leads (id, phone, modified_at) VALUES (101, '9820000101', ?)",
            (stamp(0),),
        )
        # Committed late: stamped 30 s before the first pull's high-water mark.
        conn.execute(
            "INSERT INTO leads (id, phone, modified_at) VALUES (102, '9820000102', ?)",
            (stamp(601.5),),
        )

    second = await pull(source(db), first.cursor)

    # 1 and 2 lie in the 60 s overlap window; 5 and 101 changed; 102 committed late.
    assert sorted(second.keys, key=int) == ["1", "2", "5", "101", "102"]
    assert next(r for r in second.rows if r["id"] == "5")["phone"] == "9820099999"
    assert second.origins.isdisjoint(first.origins)


async def test_the_first_pull_of_an_unchanged_table_then_rereads_just_the_window(
    tmp_path: Path,
) -> None:
    db = tmp_path / "crm.db"
    make_db(db, [(i, f"98200{i:05d}", b"x", stamp(i)) for i in range(1, 201)])
    first = await pull(source(db))

    again = await pull(source(db), first.cursor)

    # stamp(1) is the newest; the 60 s overlap reaches back to stamp(2).
    assert sorted(again.keys, key=int) == ["1", "2"]


async def test_a_crashed_pull_resumes_at_the_last_committed_page(tmp_path: Path) -> None:
    db = tmp_path / "crm.db"
    make_db(db, [(i, f"98200{i:05d}", b"x", stamp(i % 3 * 10)) for i in range(1, 101)])
    complete = await pull(source(db, overlap_s=0))
    committed = complete.cursors[4]  # the pipeline committed five pages, then the process died
    seen = complete.keys[: 5 * 7]

    resumed = await pull(source(db, overlap_s=0), committed)

    assert {*seen, *resumed.keys} == {str(i) for i in range(1, 101)}
    # Rows stamped exactly at the committed position are read again: another
    # transaction may still commit rows with that same time.
    at = Position.from_json(committed)
    assert at is not None
    again = [r for r in resumed.rows if r["id"] in seen]
    assert again and all(r["modified_at"] == at.cursor for r in again)


async def test_rows_with_no_change_time_are_read_by_every_pull_once(tmp_path: Path) -> None:
    # A row without a change time cannot say it changed: every pull reads it (once), and
    # reconcile's content hash decides. Before, incremental pulls never saw a new one.
    db = tmp_path / "crm.db"
    rows = [(i, f"98200{i:05d}", b"x", stamp(100)) for i in range(1, 21)]
    rows += [(i, f"98200{i:05d}", b"x", None) for i in range(21, 41)]
    make_db(db, rows)

    first = await pull(source(db))
    with sqlite3.connect(db) as conn:  # a lead added later, still without a change time
        conn.execute("INSERT INTO leads (id, phone, name) VALUES (41, '9820000041', 'x')")
    incremental = await pull(source(db), first.cursor)
    full = await pull(source(db), first.cursor, full=True)

    undated = [str(i) for i in range(21, 42)]
    assert sorted(first.keys, key=int) == [str(i) for i in range(1, 41)]
    assert incremental.keys[: len(undated)] == undated  # each once, the new one included
    dated = incremental.keys[len(undated) :]
    assert dated == [str(i) for i in range(1, 21)][-len(dated) :]  # the overlap window
    assert sorted(full.keys, key=int) == [str(i) for i in range(1, 42)]
    assert len(full.keys) == len(set(full.keys))


async def test_a_pull_that_stopped_among_the_null_rows_reads_every_dated_row_next(
    tmp_path: Path,
) -> None:
    db = tmp_path / "crm.db"
    rows = [(i, f"98200{i:05d}", b"x", None) for i in range(1, 16)]
    rows += [(i, f"98200{i:05d}", b"x", stamp(5)) for i in range(16, 31)]
    make_db(db, rows)
    first = await pull(source(db))
    assert Position.from_json(first.cursors[0]) == Position("nulls", key=7)

    resumed = await pull(source(db), first.cursors[0])

    assert sorted(resumed.keys, key=int) == [str(i) for i in range(8, 31)]


async def test_rows_without_a_key_are_delivered_with_an_empty_key_to_be_refused(
    tmp_path: Path,
) -> None:
    db = tmp_path / "crm.db"
    make_db(db, [(1, "9820000001", b"x", stamp(1)), (None, "9820000002", b"x", stamp(1))])

    got = await pull(source(db))

    assert sorted(r["id"] for r in got.rows) == ["", "1"]
    assert got.cursor is not None and Position.from_json(got.cursor) == Position(
        "main", cursor=stamp(1), key=1
    )


async def test_mapped_bytes_that_are_not_text_are_refused_with_the_reason(
    tmp_path: Path,
) -> None:
    db = tmp_path / "crm.db"
    make_db(db, [(1, "9820000001", "José".encode("latin-1"), stamp(1))])

    refused = await pull(SqlSource(source(db).config, required_columns={"id", "phone", "name"}))
    unmapped = await pull(source(db))
    decoded = await pull(
        SqlSource(source(db, bytes_encoding="cp1252").config, required_columns={"name"})
    )

    assert refused.rows == [] and len(refused.rejects) == 1
    key, reason = refused.rejects[0]
    assert key == "1" and "column 'name'" in reason and "not valid utf-8" in reason
    assert unmapped.rows[0]["name"] == "Jos\ufffd"  # not mapped: no reason to refuse the lead
    assert decoded.rows[0]["name"] == "José"


async def test_without_a_cursor_column_every_pull_reads_the_whole_result(tmp_path: Path) -> None:
    db = tmp_path / "crm.db"
    make_db(db, [(i, f"98200{i:05d}", b"x", None) for i in range(1, 31)])

    first = await pull(source(db, cursor_column=None))
    second = await pull(source(db, cursor_column=None), first.cursor)
    crashed = await pull(source(db, cursor_column=None), first.cursors[1])

    assert sorted(first.keys, key=int) == [str(i) for i in range(1, 31)]
    assert Position.from_json(first.cursor) == Position("done")
    assert sorted(second.keys, key=int) == [str(i) for i in range(1, 31)]
    assert sorted(crashed.keys, key=int) == [str(i) for i in range(15, 31)]


async def test_a_query_the_database_refuses_fails_the_pull_with_its_reason(
    tmp_path: Path,
) -> None:
    db = tmp_path / "crm.db"
    make_db(db, [(1, "9820000001", b"x", stamp(1))])

    got = await pull(source(db, query="SELECT id, phone, modified_at, nosuch FROM leads"))

    assert got.failed is not None
    assert got.failed.startswith("cannot read the database:")
    assert "nosuch" in got.failed


async def test_a_query_missing_a_mapped_column_fails_the_pull_naming_it(tmp_path: Path) -> None:
    db = tmp_path / "crm.db"
    make_db(db, [])

    got = await pull(source(db, query="SELECT id, modified_at FROM leads"))

    assert got.failed is not None and "'phone'" in got.failed and "route mapping" in got.failed


async def test_an_unreachable_database_fails_the_pull_without_showing_the_password(
    tmp_path: Path,
) -> None:
    cfg = SqlSourceConfig(
        name="crm",
        url="postgresql://crm:s3cr3t-pw@127.0.0.1:1/crm",
        query=QUERY,
        key_column="id",
        cursor_column="modified_at",
        timeout_s=2,
    )

    got = await pull(SqlSource(cfg))

    assert got.failed is not None and "s3cr3t-pw" not in got.failed


async def test_query_parameters_come_from_the_config(tmp_path: Path) -> None:
    db = tmp_path / "crm.db"
    make_db(db, [(i, f"98200{i:05d}", b"x", stamp(1)) for i in range(1, 11)])

    got = await pull(source(db, query=QUERY + " WHERE id > :floor;", params={"floor": 8}))

    assert sorted(got.keys) == ["10", "9"]


def _config_problems(**source: Any) -> list[str]:
    raw = {
        "sources": [
            {
                "name": "crm",
                "kind": "sql",
                "query": QUERY,
                "key_column": "id",
                "url": "sqlite:///crm.db",
                **source,
            }
        ]
    }
    with pytest.raises(ConfigError) as info:
        validate_settings(raw)
    return info.value.problems


def test_config_names_parameters_the_query_uses_but_params_lacks() -> None:
    problems = _config_problems(query=QUERY + " WHERE owner = :owner")
    assert any(":owner" in p and p.startswith("sources[0]") for p in problems)


def test_config_keeps_the_syncd_parameter_names_for_itself() -> None:
    problems = _config_problems(query=QUERY + " WHERE id > :syncd_c", params={"syncd_c": 1})
    assert any("reserved" in p for p in problems)


def test_config_refuses_a_bad_url_without_repeating_it() -> None:
    problems = _config_problems(url="oracle://scott:tiger-pw@db/orcl")
    assert any("sources[0].url" in p and "not supported" in p for p in problems)
    assert not any("tiger-pw" in p for p in problems)
    problems = _config_problems(url="not a url tiger-pw")
    assert any("not a database URL" in p for p in problems)
    assert not any("tiger-pw" in p for p in problems)


def test_database_values_become_the_text_a_csv_export_would_hold() -> None:
    assert to_text(None) == ""
    assert to_text(919820012345.0) == "919820012345"
    assert to_text(Decimal("919820012345")) == "919820012345"
    assert to_text(True) == "true" and to_text(0) == "0"
    assert to_text(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05"
    aware = datetime(2026, 1, 2, 8, 34, 5, tzinfo=UTC).astimezone()
    assert to_text(aware) == "2026-01-02T08:34:05+00:00"
    assert to_text(timedelta(hours=10, minutes=20, seconds=30)) == "10:20:30"
    assert to_text(b"Jos\xc3\xa9") == "José"
    assert to_text({"b": 1, "a": "é"}) == '{"a": "é", "b": 1}'
    assert to_text(["9820012345", "02223456789"]) == "9820012345, 02223456789"
    assert to_text(b"\x01") == "1" and to_text(b"\x00") == "0"  # BIT(1)
    assert to_text("0000-00-00 00:00:00") == "0000-00-00 00:00:00"


def test_the_overlap_steps_back_in_the_cursor_columns_own_units() -> None:
    assert minus_overlap(datetime(2026, 1, 1, 0, 1), 60) == datetime(2026, 1, 1)
    assert minus_overlap(1000, 10) == 990
    assert minus_overlap("2026-01-01 00:01:00", 60) == "2026-01-01 00:00:00"
    assert minus_overlap("2026-01-01T00:01:00.5", 60) == "2026-01-01T00:00:00.500000"
    assert minus_overlap("0000-00-00 00:00:00", 60) == "0000-00-00 00:00:00"


def test_a_position_survives_its_json_text() -> None:
    for pos in (
        Position("main", datetime(2026, 1, 1, 1, 2, 3, 456), 12),
        Position("main", datetime(2026, 1, 1, tzinfo=UTC), "K-1"),
        Position("main", Decimal("12.5"), 3),
        Position("nulls", key="abc"),
        Position("done"),
    ):
        assert Position.from_json(pos.to_json()) == pos
    assert Position.from_json("not json") is None


# -- a query that would read less than every row -----------------------------------------

SQL_CONFIG = """\
[state]
path = "{state}"

[[sources]]
name = "crm"
kind = "sql"
url = "sqlite:///{db}"
query = "{query}"
key_column = "id"
cursor_column = "modified_at"

[[sinks]]
name = "jodo"
kind = "jodo"
url = "http://127.0.0.1:9/CustomerWebServices/handleCustomerWS"
apikey = "env:TEST_JODO_APIKEY"
servicekey = "VoiceProcess"
updateparam = "crmuniquefield"

[[routes]]
source = "crm"
sink = "jodo"
default_region = "IN"
[routes.map]
key = "id"
phone = "phone"
"""


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("SELECT id, phone, modified_at FROM leads LIMIT 1000", "LIMIT"),
        ("SELECT id, phone, modified_at FROM leads ORDER BY id", "ORDER BY"),
        ("SELECT * FROM leads OFFSET 10 ROWS FETCH NEXT 1000 ROWS ONLY", "OFFSET"),
        ("SELECT * FROM leads WHERE owner = %(owner)s", "%(owner)s"),
    ],
)
def test_check_refuses_a_query_that_would_silently_drop_leads(
    tmp_path: Path, query: str, named: str
) -> None:
    config = tmp_path / "syncd.toml"
    config.write_text(
        SQL_CONFIG.format(state=tmp_path / "state.db", db=tmp_path / "crm.db", query=query),
        encoding="utf-8",
    )
    checked = run_cli("check", "-c", str(config))
    assert checked.returncode == 2
    assert "sources[0].query" in checked.stderr and named in checked.stderr, checked.stderr
    ran = run_cli("run", "--once", "-c", str(config))
    assert ran.returncode == 2  # refused before any pull
    assert not (tmp_path / "state.db").exists()


def test_a_limit_inside_a_subquery_is_the_users_business(tmp_path: Path) -> None:
    query = "SELECT * FROM (SELECT * FROM leads ORDER BY modified_at DESC LIMIT 10) AS recent"
    config = tmp_path / "syncd.toml"
    config.write_text(
        SQL_CONFIG.format(state=tmp_path / "state.db", db=tmp_path / "crm.db", query=query),
        encoding="utf-8",
    )
    assert run_cli("check", "-c", str(config)).returncode == 0
