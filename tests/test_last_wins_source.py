"""The CSV source's read ahead for last-row-wins: each chunk of a file carries the keys
that repeat in the whole file, with the line of their last row, found by the very reader
that reads the chunks (both readers alike), from the file alone (a resumed read too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd.core.repeats import later_line
from syncd.sources.base import Chunk
from syncd.sources.csv_drop import CsvDropConfig, CsvDropSource
from tests.conftest import drop_csv

# Keys padded and repeated, a ragged row (refused by the source: no lead, so no key), a
# blank line, a row without a key, and a key whose last row is in the last chunk.
EXPORT = (
    "id,phone\n"
    "A,111\n"  # 2
    " B ,222\n"  # 3: the key is B, stripped as row_keys strips it
    "C,333,extra\n"  # 4: refused by the source
    "\n"  # 5
    ",444\n"  # 6: no key
    "D,555\n"  # 7
    "B,666\n"  # 8
    "C,777\n"  # 9: C's only row read
    "A,888\n"  # 10
    "E,999\n"  # 11
)
EXPECTED = {"A": 10, "B": 8}


def make_source(
    inbox: Path, reader: str, keys: frozenset[str] = frozenset({"id"}), **extra: object
) -> CsvDropSource:
    config = CsvDropConfig.model_validate(
        {"name": "crm", "inbox": inbox, "chunk_rows": 2, "reader": reader, **extra}
    )
    source = CsvDropSource(config, required_columns={"id", "phone"})
    source.key_columns = keys
    return source


async def read_all(source: CsvDropSource, cursor: str | None = None) -> list[Chunk]:
    chunks = []
    async for chunk in source.chunks(cursor):
        chunks.append(chunk)
        if chunk.after_commit:
            await chunk.after_commit()
    return chunks


def repeated(chunks: list[Chunk]) -> dict[str, int]:
    """Return the repeated keys as the chunks carry them, checking every chunk agrees, and
    dropping the keys kept at their only line (they supersede nothing)."""
    maps = [c.last_lines.get("id", {}) for c in chunks if c.rows]
    assert maps and all(m == maps[0] for m in maps)
    lines = {line for c in chunks for line, _ in c.rows}
    return {k: v for k, v in maps[0].items() if any(later_line(maps[0], k, n) for n in lines)}


@pytest.mark.parametrize("reader", ["lines", "rows"])
async def test_every_chunk_carries_the_files_repeated_keys_and_their_last_line(
    tmp_path: Path, reader: str
) -> None:
    drop_csv(tmp_path, "a.csv", EXPORT)
    chunks = await read_all(make_source(tmp_path, reader))
    assert len([c for c in chunks if c.rows]) >= 4  # the repeats are chunks apart
    assert repeated(chunks) == EXPECTED


@pytest.mark.parametrize("reader", ["lines", "rows"])
async def test_a_read_resumed_after_a_crash_knows_the_same_later_rows(
    tmp_path: Path, reader: str
) -> None:
    drop_csv(tmp_path, "a.csv", EXPORT)
    source = make_source(tmp_path, reader)
    first = None
    async for chunk in source.chunks(None):
        first = chunk
        break  # the process "died" after committing the first chunk (lines 2 and 3)
    assert first is not None and first.cursor is not None
    resumed = await read_all(make_source(tmp_path, reader), first.cursor)
    assert next(line for c in resumed for line, _ in c.rows) > 3  # resumed past them
    # The rows after the resume point are superseded exactly as in a whole read.
    last = resumed[0].last_lines["id"]
    for chunk in resumed:
        for line, values in chunk.rows:
            key = values[0].strip()
            assert later_line(last, key, line) == later_line(EXPECTED, key, line)


async def test_the_row_reader_reads_ahead_only_as_far_as_it_reads(tmp_path: Path) -> None:
    # A quoted cell over the field limit stops the reading there: the row of key A after it
    # is never read, so it supersedes nothing (A's first row is the one that counts).
    huge = ("x" * 1000 + "\n") * 140  # over the smallest field limit, 131072 characters
    drop_csv(tmp_path, "a.csv", f'id,phone\nA,111\nB,"{huge}"\nA,999\n')
    chunks = await read_all(make_source(tmp_path, "rows", max_field_bytes=1024))
    assert [line for c in chunks for line, _ in c.rows] == [2]
    assert any(c.failed for c in chunks)
    assert all(later_line(c.last_lines.get("id", {}), "A", 2) is None for c in chunks)


@pytest.mark.parametrize("reader", ["lines", "rows"])
async def test_without_key_columns_nothing_is_read_ahead(tmp_path: Path, reader: str) -> None:
    drop_csv(tmp_path, "a.csv", EXPORT)
    chunks = await read_all(make_source(tmp_path, reader, frozenset()))
    assert all(c.last_lines == {} for c in chunks)


async def test_each_key_column_has_its_own_repeats(tmp_path: Path) -> None:
    drop_csv(tmp_path, "a.csv", "id,phone,login\nA,1,x\nB,2,x\nA,3,y\n")
    chunks = await read_all(make_source(tmp_path, "lines", frozenset({"id", "login", "none"})))
    last = chunks[0].last_lines
    assert set(last) == {"id", "login"}
    assert later_line(last["id"], "A", 2) == 4 and later_line(last["login"], "x", 2) == 3
