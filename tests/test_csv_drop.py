"""The CSV drop folder: claiming, streaming, filing away, and every odd file a CRM produces."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from syncd.sources.base import Chunk
from syncd.sources.csv_drop import CsvDropConfig, CsvDropSource
from tests.conftest import drop_csv


def make_source(inbox: Path, **extra: object) -> CsvDropSource:
    config = CsvDropConfig.model_validate({"name": "crm", "inbox": inbox, "chunk_rows": 2, **extra})
    return CsvDropSource(config, required_columns={"id", "phone"})


async def read_all(source: CsvDropSource, cursor: str | None = None) -> list[Chunk]:
    chunks = []
    async for chunk in source.chunks(cursor):
        chunks.append(chunk)
        if chunk.after_commit:
            await chunk.after_commit()
    return chunks


def rows_of(chunks: list[Chunk]) -> list[tuple[int, list[str]]]:
    return [r for c in chunks for r in c.rows]


async def test_file_is_streamed_in_chunks_and_moved_to_done(tmp_path: Path) -> None:
    drop_csv(tmp_path, "a.csv", "id,phone\n1,111\n2,222\n3,333\n")
    chunks = await read_all(make_source(tmp_path))
    assert [len(c.rows) for c in chunks] == [2, 1]
    assert rows_of(chunks) == [(2, ["1", "111"]), (3, ["2", "222"]), (4, ["3", "333"])]
    assert (tmp_path / "done" / "a.csv").exists()
    assert not (tmp_path / "a.csv").exists() and not list((tmp_path / "processing").iterdir())


async def test_part_files_and_other_patterns_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "b.csv.part").write_text("id,phone\n1,1\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    assert await read_all(make_source(tmp_path)) == []
    assert (tmp_path / "b.csv.part").exists() and (tmp_path / "notes.txt").exists()


async def test_bom_quoted_newlines_and_semicolons(tmp_path: Path) -> None:
    text = '\ufeffid;phone;note\n1;111;"two\nlines; with ;"\n2;222;x\n'
    drop_csv(tmp_path, "a.csv", text)
    source = make_source(tmp_path, delimiter=";")
    chunks = await read_all(source)
    assert chunks[0].header == ("id", "phone", "note")
    # The second record starts on physical line 4: the quoted newline is inside record 1.
    assert rows_of(chunks) == [(2, ["1", "111", "two\nlines; with ;"]), (4, ["2", "222", "x"])]


async def test_configured_encoding_reads_latin1(tmp_path: Path) -> None:
    drop_csv(tmp_path, "a.csv", "id,phone,name\n1,111,José Müller\n", encoding="latin-1")
    chunks = await read_all(make_source(tmp_path, encoding="latin-1"))
    assert rows_of(chunks) == [(2, ["1", "111", "José Müller"])]


async def test_ragged_rows_are_rejected_with_a_reason_and_the_rest_goes_on(tmp_path: Path) -> None:
    drop_csv(tmp_path, "a.csv", "id,phone\n1,111\n2,222,extra\n3\n4,444,\n")
    chunks = await read_all(make_source(tmp_path))
    assert rows_of(chunks) == [(2, ["1", "111"]), (5, ["4", "444"])]
    rejects = [r for c in chunks for r in c.rejects]
    assert [(r.line, r.reason) for r in rejects] == [
        (3, "row has 3 fields, the header has 2"),
        (4, "row has 1 fields, the header has 2"),
    ]


async def test_empty_file_is_done_with_nothing_read(tmp_path: Path) -> None:
    drop_csv(tmp_path, "empty.csv", "")
    drop_csv(tmp_path, "header-only.csv", "id,phone\n")
    chunks = await read_all(make_source(tmp_path))
    assert rows_of(chunks) == []
    assert (tmp_path / "done" / "empty.csv").exists()
    assert (tmp_path / "done" / "header-only.csv").exists()


async def test_unreadable_files_go_to_failed_with_an_error_file(tmp_path: Path) -> None:
    drop_csv(tmp_path, "binary.csv", "id,phone\n\x00\x01\x02\x00")
    drop_csv(tmp_path, "latin.csv", "id,phone,name\n1,2,Jos\xe9\n", encoding="latin-1")
    drop_csv(tmp_path, "noheader.csv", ",\n1,2\n")
    drop_csv(tmp_path, "nophone.csv", "id,mobile\n1,2\n")
    chunks = await read_all(make_source(tmp_path))
    failed = {c.origin: c.failed for c in chunks if c.failed}
    assert set(failed) == {"binary.csv", "latin.csv", "noheader.csv", "nophone.csv"}
    assert "binary" in (failed["binary.csv"] or "")
    assert "not valid utf-8" in (failed["latin.csv"] or "")
    assert "missing column(s) 'phone'" in (failed["nophone.csv"] or "")
    for name in failed:
        assert (tmp_path / "failed" / name).exists()
        assert "failed" not in name
        assert (tmp_path / "failed" / f"{name}.error.txt").read_text(encoding="utf-8").strip()


async def test_resume_skips_rows_committed_before_a_crash(tmp_path: Path) -> None:
    drop_csv(tmp_path, "a.csv", "id,phone\n1,111\n2,222\n3,333\n")
    source = make_source(tmp_path)
    first = None
    async for chunk in source.chunks(None):
        first = chunk
        break  # the process "died" after committing the first chunk
    assert first is not None and first.cursor is not None
    assert (tmp_path / "processing" / "a.csv").exists()
    chunks = await read_all(make_source(tmp_path), first.cursor)
    assert rows_of(chunks) == [(4, ["3", "333"])]
    assert (tmp_path / "done" / "a.csv").exists()


async def test_same_name_dropped_twice_keeps_both_files(tmp_path: Path) -> None:
    drop_csv(tmp_path, "daily.csv", "id,phone\n1,111\n")
    await read_all(make_source(tmp_path))
    drop_csv(tmp_path, "daily.csv", "id,phone\n2,222\n")
    chunks = await read_all(make_source(tmp_path))
    assert rows_of(chunks) == [(2, ["2", "222"])]
    assert len(list((tmp_path / "done").glob("daily*.csv"))) == 2


async def test_rejects_file_lists_line_reason_and_original_row_safely(tmp_path: Path) -> None:
    drop_csv(tmp_path, "a.csv", "id,phone\n1,111\n=cmd|' /C calc'!A0,x\n")
    config = CsvDropConfig.model_validate({"name": "crm", "inbox": tmp_path})

    async def load_rejects(origin: str) -> list[tuple[int | None, str, str, str]]:
        return [(3, "jodo", "invalid phone 'x'", json.dumps(["=cmd|' /C calc'!A0", "x"]))]

    source = CsvDropSource(config, required_columns={"id"}, load_rejects=load_rejects)
    await read_all(source)
    with (tmp_path / "done" / "a.csv.rejects.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows == [
        ["line", "reason", "id", "phone"],
        ["3", "[jodo] invalid phone 'x'", "'=cmd|' /C calc'!A0", "x"],
    ]


# -- a store restored from a copy: files read after it are read again ------------------


def last_cursor(chunks: list[Chunk]) -> str:
    cursors = [c.cursor for c in chunks if c.cursor is not None]
    assert cursors
    return cursors[-1]


async def test_a_file_in_done_the_cursor_does_not_name_is_read_again_before_new_drops(
    tmp_path: Path,
) -> None:
    drop_csv(tmp_path, "a.csv", "id,phone\n1,111\n")
    copy = last_cursor(await read_all(make_source(tmp_path)))  # the backup's cursor
    assert json.loads(copy)["seen"] == {"a.csv": len("id,phone\n1,111\n")}
    drop_csv(tmp_path, "b.csv", "id,phone\n2,222\n3,333\n4,444\n")
    await read_all(make_source(tmp_path), copy)
    drop_csv(tmp_path, "c.csv", "id,phone\n5,555\n")

    # The store is restored: its cursor is the copy's, which never saw b.csv.
    chunks = await read_all(make_source(tmp_path), copy)
    assert [(c.origin, [v[0] for _, v in c.rows]) for c in chunks] == [
        ("b.csv", ["2", "3"]),
        ("b.csv", ["4"]),
        ("c.csv", ["5"]),
    ]
    assert sorted(p.name for p in (tmp_path / "done").iterdir()) == ["a.csv", "b.csv", "c.csv"]
    now = last_cursor(chunks)
    assert sorted(json.loads(now)["seen"]) == ["a.csv", "b.csv", "c.csv"]
    assert await read_all(make_source(tmp_path), now) == []  # read again once


async def test_a_restored_cursor_inside_a_file_resumes_that_file_where_it_stood(
    tmp_path: Path,
) -> None:
    drop_csv(tmp_path, "a.csv", "id,phone\n1,111\n2,222\n3,333\n")
    source = make_source(tmp_path)
    copy = None
    async for chunk in source.chunks(None):  # the copy is taken after the first chunk
        copy = chunk.cursor
        break
    assert copy is not None
    await read_all(make_source(tmp_path), copy)
    assert (tmp_path / "done" / "a.csv").exists()
    chunks = await read_all(make_source(tmp_path), copy)
    assert rows_of(chunks) == [(4, ["3", "333"])]


async def test_files_in_done_before_the_cursor_named_them_are_not_read_again(
    tmp_path: Path,
) -> None:
    # A store from before the cursor kept the list: done/ is what it had read.
    done = tmp_path / "done"
    done.mkdir()
    (done / "old.csv").write_text("id,phone\n1,111\n", encoding="utf-8")
    (done / "old.csv.rejects.csv").write_text("line,reason,id,phone\n", encoding="utf-8")
    old_cursor = json.dumps({"file": "old.csv", "line": 2, "done": True})
    assert await read_all(make_source(tmp_path), old_cursor) == []
    drop_csv(tmp_path, "new.csv", "id,phone\n2,222\n")
    chunks = await read_all(make_source(tmp_path), old_cursor)
    assert rows_of(chunks) == [(2, ["2", "222"])]
    assert sorted(json.loads(last_cursor(chunks))["seen"]) == ["new.csv", "old.csv"]


async def test_a_file_of_a_name_the_cursor_knows_but_another_size_is_read_again(
    tmp_path: Path,
) -> None:
    # daily.csv was read, pruned from done/ later, and a new daily.csv took its name.
    done = tmp_path / "done"
    done.mkdir()
    (done / "daily.csv").write_text("id,phone\n7,777\n8,888\n", encoding="utf-8")
    cursor = json.dumps({"file": "daily.csv", "line": 2, "done": True, "seen": {"daily.csv": 15}})
    chunks = await read_all(make_source(tmp_path), cursor)
    assert rows_of(chunks) == [(2, ["7", "777"]), (3, ["8", "888"])]
