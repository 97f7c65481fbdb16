"""Last row wins across a whole file, the pure part: which keys repeat (core.repeats) and
how a chunk's triage supersedes a row whose key comes again in a chunk not read yet."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.core.raw_rows import RawRows
from syncd.core.reconcile import Row, triage
from syncd.core.repeats import MAX_BITS, MIN_BITS, RepeatFinder, bitmap_bits, later_line

RUN, ORIGIN = "run1", "a.csv"


def found(keys: list[str], lines: list[int], bits: int = 1 << 16) -> dict[str, int]:
    finder = RepeatFinder(bits)
    finder.add(keys, lines)
    return finder.result()


# -- which keys repeat ------------------------------------------------------------------

FINDER_CASES = [
    # (name, keys in file order, lines, the repeated keys with their last line)
    ("no key twice: nothing kept", ["A", "B", "C"], [2, 3, 4], {}),
    ("a key twice: its last line", ["A", "B", "A"], [2, 3, 4], {"A": 4}),
    ("a key thrice: the last of them", ["A", "A", "B", "A"], [2, 3, 5, 9], {"A": 9}),
    ("rows without a key are no lead", ["", "A", ""], [2, 3, 4], {}),
    ("keys are compared as given (stripped by row_keys)", ["A", "a", "A "], [2, 3, 4], {}),
]


@pytest.mark.parametrize(
    ("keys", "lines", "expected"),
    [c[1:] for c in FINDER_CASES],
    ids=[c[0] for c in FINDER_CASES],
)
def test_repeat_finder(keys: list[str], lines: list[int], expected: dict[str, int]) -> None:
    assert found(keys, lines) == expected


def test_rows_fed_a_chunk_at_a_time_find_what_one_pass_finds() -> None:
    finder = RepeatFinder(1 << 16)
    finder.add(["A", "B"], [2, 3])
    finder.add(["C", "B"], [4, 5])
    finder.add(["A"], [6])
    assert finder.result() == {"A": 6, "B": 5}


@settings(max_examples=300, deadline=None)
@given(
    keys=st.lists(st.sampled_from(["", "A", "B", "C", "D", "E", "F", "G", "H"]), max_size=40),
    bits=st.sampled_from([8, 16, 64, 1 << 16]),
)
def test_a_later_row_is_found_exactly_even_when_keys_share_bits(keys: list[str], bits: int) -> None:
    # With 8 bits nearly every key shares a bit with another: the answer stays exact.
    lines = list(range(2, 2 + len(keys)))
    last_lines = found(keys, lines, bits)
    for i, key in enumerate(keys):
        if not key:
            continue
        later = [line for line, k in zip(lines[i + 1 :], keys[i + 1 :], strict=True) if k == key]
        assert later_line(last_lines, key, lines[i]) == (later[-1] if later else None)


@pytest.mark.parametrize(
    ("file_bytes", "bits"),
    [(0, MIN_BITS), (MIN_BITS, MIN_BITS), (MIN_BITS + 1, 2 * MIN_BITS), (10**12, MAX_BITS)],
)
def test_the_bitmap_is_about_a_bit_a_byte_of_the_file_within_bounds(
    file_bytes: int, bits: int
) -> None:
    assert bitmap_bits(file_bytes) == bits


@pytest.mark.parametrize("bits", [0, 4, 12, 1000])
def test_a_bitmap_of_another_size_is_refused(bits: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        RepeatFinder(bits)


# -- triage with the file's repeated keys -----------------------------------------------


def row(line: int, key: str, phone: str = "98200 10001") -> Row:
    return (line, [key, phone])


TRIAGE_CASES = [
    # (name, rows, the file's last lines, what lookup_changed returned,
    #  to map, unchanged, (rejected line, superseded by line))
    (
        "the last row of a key in the chunk, repeated in a later chunk: superseded here",
        [row(2, "A"), row(3, "B")],
        {"A": 40},
        {"A": None, "B": None},
        [3],
        0,
        [(2, 40)],
    ),
    (
        "every earlier row names the file's last row, not the chunk's",
        [row(2, "A"), row(3, "A"), row(4, "B")],
        {"A": 40},
        {"A": None, "B": None},
        [4],
        0,
        [(2, 40), (3, 40)],
    ),
    (
        "the key's last row of the file is mapped as any row",
        [row(40, "A")],
        {"A": 40},
        {"A": None},
        [40],
        0,
        [],
    ),
    (
        "a row unchanged since the last run is superseded all the same (a file dropped again)",
        [row(2, "A")],
        {"A": 40},
        {},
        [],
        0,
        [(2, 40)],
    ),
    (
        "a key kept at its only line (it shared a bit) supersedes nothing",
        [row(7, "A")],
        {"A": 7},
        {"A": None},
        [7],
        0,
        [],
    ),
    (
        "keys the file does not repeat are decided as without the map",
        [row(2, "A"), row(3, "B"), row(4, "A")],
        {"C": 90},
        {"A": None},
        [4],
        1,
        [(2, 4)],
    ),
    (
        "a resumed read: rows before the resume point are not in the chunk, the map still is",
        [row(30, "A"), row(31, "C")],
        {"A": 40, "B": 35},
        {"A": None, "C": None},
        [31],
        0,
        [(30, 40)],
    ),
]


def check_triage(
    rows: list[Row] | RawRows,
    last_lines: dict[str, int],
    changed: dict[str, None],
    to_map: list[int],
    unchanged: int,
    rejected: list[tuple[int, int]],
) -> None:
    raw = {line: f"r{line}" for line, _ in rows}
    result = triage(rows, 0, raw, changed, origin=ORIGIN, run_id=RUN, last_lines=last_lines)
    assert [line for line, _ in result.to_map] == to_map
    assert result.unchanged == unchanged
    assert [r.line for r in result.rejects] == [line for line, _ in rejected]
    for reject, (_, later) in zip(result.rejects, rejected, strict=True):
        key = reject.key
        assert reject.reason == f"duplicate key {key!r}: superseded by line {later} (last wins)"
        assert reject.values[0] == key  # the row itself, for the rejects file


@pytest.mark.parametrize("as_lines", [False, True], ids=["row reader", "line reader"])
@pytest.mark.parametrize(
    ("rows", "last_lines", "changed", "to_map", "unchanged", "rejected"),
    [c[1:] for c in TRIAGE_CASES],
    ids=[c[0] for c in TRIAGE_CASES],
)
def test_triage_with_the_files_last_lines_decides_alike_for_either_reader(
    rows: list[Row],
    last_lines: dict[str, int],
    changed: dict[str, None],
    to_map: list[int],
    unchanged: int,
    rejected: list[tuple[int, int]],
    as_lines: bool,
) -> None:
    if as_lines:  # the line reader's rows: kept as the bytes of their lines
        raw = RawRows([line for line, _ in rows], [",".join(v).encode() for _, v in rows], ",")
        check_triage(raw, last_lines, changed, to_map, unchanged, rejected)
    else:
        check_triage(rows, last_lines, changed, to_map, unchanged, rejected)
