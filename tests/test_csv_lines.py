"""The CSV line reader (issue 27) gives what the row reader gives: rows, rejects, cursors,
raw hashes, and through the CLI byte-identical leads and the same reject reasons."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.core.mapping import row_hashes
from syncd.core.raw_rows import RawRows
from syncd.core.reconcile import row_keys
from syncd.simulators.jodo.api import JodoSimulator, create_app
from syncd.simulators.server import running
from syncd.sources.base import Chunk
from syncd.sources.csv_drop import CsvDropConfig, CsvDropSource
from syncd.sources.csv_lines import scan
from tests.conftest import Simulated, cli_env, drop_csv, jodo_config, run_cli

HEADER = b"id,phone,first,last,email,callback"


def hostile(newline: bytes = b"\n") -> bytes:
    """A quote-free export with every oddity the line reader must read as the row reader
    does: a BOM, blank and blank-looking lines, rows short and long (trailing empty cells
    and not), control characters, formulas, keys padded, repeated, empty or too long,
    undecodable bytes past the first 64 KiB, no line end on the last line."""
    rows = [b"\xef\xbb\xbf" + HEADER]
    rows += [b"N%05d,+91 98200 %05d,Asha,Rao,a%d@x.in," % (i, i, i) for i in range(3000)]
    rows += [
        b"",
        b"   ",
        b"K1 , 09820012345 ,Ravi,Das,r@x.in,2026-12-01 10:00",
        b"K2,9820012346,Meera",  # short
        b"K3,9820012347,Arjun,Iyer,a@x.in,,,  ,",  # trailing empty cells
        b"K4,9820012348,Priya,Khan,p@x.in,,x,",  # a cell past the header's width
        b"K5,9820012349,=HYPERLINK(1),@SUM(1),+cmd,",
        b"K6,9820012350,Vik\x1bram,Ne\x07ha,\x0b\x0c\x1c\x1d\x1e,",
        b"K7,9820012351,Un\x1fit,Sep\xc2\x85ar,line\xe2\x80\xa8sep,",
        b"\xc2\xa0K8\xc2\xa0,9820012352,Nbsp,Pad,n@x.in,",
        b"K9,9820012353,Bad\xff\xfebytes,Cut\xe2\x82,b@x.in,",
        b",9820012354,No,Key,,",
        b"K" + b"9" * 200 + b",9820012355,Long,Key,,",
        b"K1,9820012356,Ravi,Again,r@x.in,",  # the key again: last row wins
        b"K10,n/a,Bad,Number,,",
        b"K11,9820012357,Tab\there,\tlead,t@x.in,",
        b"K12,9820012358,Emoji\xf0\x9f\x98\x80,Sm\xc3\xaflie,e@x.in,",
        b"",
        b"K13,9820012359,Last,Line,l@x.in,",
    ]
    return newline.join(rows)  # the last line without a line end


def make_source(inbox: Path, reader: str, chunk_rows: int) -> CsvDropSource:
    config = CsvDropConfig.model_validate(
        {"name": "crm", "inbox": inbox, "chunk_rows": chunk_rows, "settle_s": 0, "reader": reader}
    )
    return CsvDropSource(config, required_columns={"id", "phone"})


def seen(chunk: Chunk) -> tuple[object, ...]:
    """What a chunk hands the pull, rows built (RawRows or not)."""
    return (
        chunk.origin,
        chunk.header,
        list(chunk.rows),
        [(r.line, r.reason, r.row, r.origin, r.source) for r in chunk.rejects],
        chunk.cursor,
        chunk.failed,
        chunk.after_commit is not None,
    )


async def read_with(folder: Path, data: bytes, reader: str, chunk_rows: int) -> list[Chunk]:
    inbox = folder / reader
    drop_csv(inbox, "export.csv", data)  # type: ignore[arg-type]
    chunks = []
    async for chunk in make_source(inbox, reader, chunk_rows).chunks(None):
        chunks.append(chunk)
        if chunk.after_commit:
            await chunk.after_commit()
    return chunks


@pytest.mark.parametrize("chunk_rows", [1, 7, 1000, 100_000])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
async def test_the_line_reader_reads_a_hostile_export_as_the_row_reader_does(
    tmp_path: Path, chunk_rows: int, newline: bytes
) -> None:
    data = hostile(newline)
    by_rows = await read_with(tmp_path, data, "rows", chunk_rows)
    by_lines = await read_with(tmp_path, data, "lines", chunk_rows)

    assert [seen(c) for c in by_lines] == [seen(c) for c in by_rows]
    assert all(isinstance(c.rows, RawRows) for c in by_lines if c.rows)  # the line reader's
    assert not any(isinstance(c.rows, RawRows) for c in by_rows)
    fingerprint = b"a route's fingerprint"
    for lines, rows in zip(by_lines, by_rows, strict=True):
        assert row_hashes(fingerprint, lines.rows) == row_hashes(fingerprint, list(rows.rows))
        for column in range(len(rows.header)):
            assert row_keys(lines.rows, column) == row_keys(list(rows.rows), column)
    rejects = [r.reason for c in by_lines for r in c.rejects]
    assert rejects == [
        "row has 1 fields, the header has 6",
        "row has 3 fields, the header has 6",
        "row has 8 fields, the header has 6",
    ]


async def test_a_resumed_file_is_read_on_from_its_cursor_alike(tmp_path: Path) -> None:
    """A crash after a few chunks: the next run reads on from the committed line."""
    data = hostile()
    results = []
    for reader in ("rows", "lines"):
        inbox = tmp_path / reader
        drop_csv(inbox, "export.csv", data)  # type: ignore[arg-type]
        source = make_source(inbox, reader, 400)
        reading = source.chunks(None)
        cursor = None
        for _ in range(3):  # committed, then the process died (the file stays claimed)
            cursor = (await anext(reading)).cursor
        await reading.aclose()
        results.append([seen(c) async for c in make_source(inbox, reader, 400).chunks(cursor)])
    assert results[0] == results[1]
    assert sum(len(c[2]) for c in results[0]) > 0  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (HEADER + b'\n1,"98200 12345",a,b,c,\n', "a quote character"),
        (HEADER + b"\n1,9820012345,a,b,c,\n" * 2000 + b"1,9820012345,a\x00,b,c,\n", "a NUL byte"),
        (HEADER + b"\n1,9820012345,a\rb,c,d,\n", "carriage returns"),
        (HEADER + b"\r\n1,9820012345,a,b,c,\n", "carriage returns"),
        (HEADER + b"\n1,9820012345," + b"x" * 1_100_000 + b",b,c,\n", "a line longer than"),
    ],
)
async def test_a_file_the_line_reader_cannot_take_whole_is_read_by_rows_and_said(
    tmp_path: Path, data: bytes, why: str
) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(data)
    found = scan(path, encoding="utf-8", delimiter=",", quotechar='"', field_limit=1_000_000)
    assert found.why is not None and found.why.startswith(why)
    with structlog.testing.capture_logs() as logs:
        chunks = await read_with(tmp_path, data, "lines", 1000)
    assert not any(isinstance(c.rows, RawRows) for c in chunks)
    assert [e["reason"] for e in logs if e["event"] == "source.reader.rows"] == [found.why]
    assert [seen(c) for c in chunks] == [
        seen(c) for c in await read_with(tmp_path, data, "rows", 1000)
    ]


def test_other_encodings_and_compressed_files_are_left_to_the_row_reader(tmp_path: Path) -> None:
    import gzip

    plain = tmp_path / "a.csv"
    plain.write_bytes(HEADER + b"\n1,2,3,4,5,6\n")
    packed = tmp_path / "a.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    options = {"delimiter": ",", "quotechar": '"', "field_limit": 131072}
    assert scan(plain, encoding="utf-8", **options).why is None  # type: ignore[arg-type]
    assert scan(plain, encoding="latin-1", **options).why == (  # type: ignore[arg-type]
        "encoding latin-1 (the line reader reads UTF-8)"
    )
    assert scan(packed, encoding="utf-8", **options).why == "a compressed file"  # type: ignore[arg-type]


cell = st.text(
    alphabet=st.characters(blacklist_characters='"\r\n\x00,', blacklist_categories=("Cs",)),
    max_size=6,
)
line = st.lists(cell, min_size=0, max_size=9).map(",".join)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(line, max_size=30), chunk_rows=st.integers(1, 12), crlf=st.booleans())
async def test_any_quote_free_export_reads_alike(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str], chunk_rows: int, crlf: bool
) -> None:
    folder = tmp_path_factory.mktemp("alike")
    newline = "\r\n" if crlf else "\n"
    data = newline.join(["id,phone,name", *lines]).encode("utf-8")
    by_rows = await read_with(folder, data, "rows", chunk_rows)
    by_lines = await read_with(folder, data, "lines", chunk_rows)
    assert [seen(c) for c in by_lines] == [seen(c) for c in by_rows]
    fingerprint = b"fp"
    for a, b in zip(by_lines, by_rows, strict=True):
        assert row_hashes(fingerprint, a.rows) == row_hashes(fingerprint, list(b.rows))


def stored(tmp_path: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    with sqlite3.connect(tmp_path / "state" / "state.db") as db:
        leads = db.execute(
            "SELECT sink, key, hash, raw_hash, lead_json, state FROM leads ORDER BY sink, key"
        ).fetchall()
        rejects = db.execute(
            "SELECT sink, origin, line, reason, row_json FROM rejects ORDER BY line, sink, reason"
        ).fetchall()
    return leads, rejects


def test_through_the_cli_both_readers_store_byte_identical_leads_and_rejects(
    tmp_path: Path, jodo: Simulated
) -> None:
    outcome = {}
    for reader in ("rows", "lines"):
        folder = tmp_path / reader
        folder.mkdir()
        config = jodo_config(folder, jodo.url, chunk_rows=97)
        drop_csv(folder / "inbox", "export.csv", hostile(b"\r\n"))  # type: ignore[arg-type]
        result = run_cli(
            "run", "--once", "-c", str(config), env=cli_env(SYNCD_SOURCES__0__READER=reader)
        )
        assert result.returncode in (0, 1), result.stderr[-2000:]
        assert ("source.reader.rows" in result.stderr) is False
        rejects_file = folder / "inbox" / "done" / "export.csv.rejects.csv"
        outcome[reader] = (*stored(folder), rejects_file.read_bytes(), result.returncode)
    assert outcome["lines"] == outcome["rows"]
    leads, rejects, _, _ = outcome["lines"]
    assert len(leads) > 3000 and len(rejects) >= 3  # type: ignore[arg-type]


def finished(stderr: str) -> dict[str, object]:
    """Return the run's counts (run.finished), without its id and time."""
    event = next(json.loads(line) for line in stderr.splitlines() if '"run.finished"' in line)
    return {k: v for k, v in event.items() if k not in ("run_id", "timestamp")}


def test_a_store_the_row_reader_wrote_finds_every_row_unchanged_and_pushes_nothing(
    tmp_path: Path,
) -> None:
    """Upgrading to the line reader: the raw hashes are the row reader's, so the first
    re-sync after the upgrade maps and sends what a re-sync without it would: nothing
    but the rows never remembered (keys no refusal is kept for)."""
    runs = {}
    for reader in ("rows", "lines"):  # the re-sync's reader; the store is the row reader's
        sim = JodoSimulator()
        with running(create_app(sim)) as url:
            folder = tmp_path / reader
            folder.mkdir()
            config = jodo_config(folder, url, chunk_rows=500)
            drop_csv(folder / "inbox", "day1.csv", hostile())  # type: ignore[arg-type]
            rows = cli_env(SYNCD_SOURCES__0__READER="rows")
            before = run_cli("run", "--once", "-c", str(config), env=rows)
            assert before.returncode in (0, 1), before.stderr[-2000:]
            sent = sim.received()
            drop_csv(folder / "inbox", "day2.csv", hostile())  # type: ignore[arg-type]
            after = run_cli(
                "run", "--once", "-c", str(config), env=cli_env(SYNCD_SOURCES__0__READER=reader)
            )
            assert after.returncode in (0, 1), after.stderr[-2000:]
            assert sim.received() == sent  # none sent again
            assert len(sim.records()) == len(sent) > 3000  # each record held once
            runs[reader] = finished(after.stderr)
    assert runs["lines"] == runs["rows"]
    assert runs["lines"]["new"] == runs["lines"]["changed"] == runs["lines"]["delivered"] == 0
    assert runs["lines"]["unchanged"] > 3000  # type: ignore[operator]


def test_raw_rows_sent_to_the_mapping_workers_in_parts_map_as_the_whole_chunk_does() -> None:
    from syncd.config import RouteConfig
    from syncd.core import phones
    from syncd.core.mapping import normalize_rows
    from syncd.run.workers import mapping_pool

    lines = [
        b"N%05d,%s,\xd0\x90\xd0\xbd\xd0\xb0 \xff,Rao,a%d@x.in," % (i, phone, i)
        for i, phone in enumerate([b"+91 98200 %05d" % n for n in range(3000)] + [b"12", b"N/A"])
    ]  # a name in Cyrillic then a byte that is no UTF-8, two numbers refused
    rows = RawRows(list(range(2, len(lines) + 2)), lines, ",")
    route = RouteConfig.model_validate(
        {
            "source": "crm",
            "sink": "jodo",
            "default_region": "IN",
            "map": {"key": "id", "phone": "phone", "first_name": "first", "email": "email"},
        }
    ).model_dump_json()
    header = tuple(HEADER.decode().split(","))
    whole = normalize_rows(route, header, rows, 0.0)
    pool = mapping_pool(2, phones.use_backend, ("phonenumbers",))
    try:
        half = len(rows) // 2
        parts = [pool.submit(normalize_rows, route, header, part, 0.0) for part in
                 (rows.part(0, half), rows.part(half, len(rows)))]  # fmt: skip
        assert [row for p in parts for row in p.result(timeout=120)] == whole
    finally:
        pool.shutdown(wait=True)
    assert len(whole) == len(rows) and any(r[4] is not None for r in whole)  # some refused
