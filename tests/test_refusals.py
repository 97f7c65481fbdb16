"""Which refusals a re-sync takes as settled, as tables (the pure rule of core/refusals.py)."""

from __future__ import annotations

import pytest

from syncd.core.refusals import Refusal, fingerprint, recall, recalled, rememberable

BLOCK = "blocked ({code}): why"


@pytest.mark.parametrize(
    ("key", "reason", "blocked", "kept"),
    [
        # mapping refusals: the row under its route (and the fingerprint) decides them
        ("L1", "invalid phone '12345' in column 'phone'", False, True),
        ("L1", "missing phone (column 'phone' is empty)", False, True),
        ("L1", "invalid date 'next tuesday' in column 'callback'", False, True),
        ("L1", "unknown time zone 'Mars/Base' in column 'tz'", False, True),
        # the gate's blocks that read only the row and the rules
        ("L1", BLOCK.format(code="dnc_crm"), True, True),
        ("L1", BLOCK.format(code="placeholder_number"), True, True),
        ("L1", BLOCK.format(code="no_consent"), True, True),
        ("L1", BLOCK.format(code="number_type:premium_rate"), True, True),
        # the clock, an outside list, the calling window: screened again every time
        ("L1", BLOCK.format(code="consent_expired"), True, False),
        ("L1", BLOCK.format(code="dnc_list:ndnc"), True, False),
        ("L1", BLOCK.format(code="window_never_open"), True, False),
        ("L1", BLOCK.format(code="window_closed"), True, False),
        ("L1", BLOCK.format(code="call_at_outside_window"), True, False),
        ("L1", "blocked: no code", True, False),  # a block that names no rule: not known pure
        # keys that cannot be kept as text as they are: mapped again, as before
        ("", "missing key (column 'id' is empty)", False, False),
        ("x" * 129, "key longer than 128 characters in column 'id'", False, False),
        ("x" * 128, "invalid phone '1' in column 'phone'", False, True),
        ("L\x001", "key in column 'id' holds control characters (U+0000)", False, False),
        ("L\udcff", "column 'id' is not valid text in the file's encoding", False, False),
    ],
)
def test_only_refusals_decided_by_the_row_and_the_config_are_remembered(
    key: str, reason: str, blocked: bool, kept: bool
) -> None:
    assert rememberable(key, reason, blocked) is kept


MEMORY = Refusal("L1", "raw-a", "fp-1", "invalid phone '12345' in column 'phone'")
MEMORY_BLOCKED = Refusal("L1", "raw-a", "fp-1", BLOCK.format(code="dnc_crm"), "{}", True)


@pytest.mark.parametrize(
    ("memory", "raw", "fp", "stored", "settled"),
    [
        (None, "raw-a", "fp-1", False, False),  # never refused
        (MEMORY, "raw-a", "fp-1", False, True),  # the same row, the same fingerprint
        (MEMORY_BLOCKED, "raw-a", "fp-1", False, True),
        (MEMORY, "raw-b", "fp-1", False, False),  # the row changed in the CRM
        (MEMORY, "raw-a", "fp-2", False, False),  # the header, syncd or a library changed
        (MEMORY, "raw-a", "fp-1", True, False),  # the store holds a lead of the key
        (MEMORY_BLOCKED, "raw-a", "fp-1", True, False),  # a block may take it back
    ],
)
def test_a_remembered_refusal_settles_only_the_same_row_under_the_same_fingerprint(
    memory: Refusal | None, raw: str, fp: str, stored: bool, settled: bool
) -> None:
    found = recalled(memory, raw, fp, stored=stored)
    assert found is (memory if settled else None)


def test_the_fingerprint_changes_with_any_part_and_their_order() -> None:
    base = fingerprint(["1.0", "phonenumbers 9.0", "id,phone"])
    assert base == fingerprint(["1.0", "phonenumbers 9.0", "id,phone"])
    assert base != fingerprint(["1.0", "phonenumbers 9.1", "id,phone"])
    assert base != fingerprint(["1.0", "phonenumbers 9.0", "phone,id"])
    assert fingerprint(["a", "bc"]) != fingerprint(["ab", "c"])


def test_recall_splits_a_chunk_into_rows_to_map_and_rows_refused_before() -> None:
    rows = [
        (2, ["L1", "12345"]),  # refused before, unchanged
        (3, ["L2", "99999"]),  # refused before, changed since
        (4, ["L3", "9820000003"]),  # never refused
        (5, [" L4 ", "1"]),  # refused before; the key cell as the pull reads it: stripped
        (6, ["L5", "1"]),  # refused before, but the store holds a lead of L5 now
    ]
    raw = {2: "a1", 3: "b2-new", 4: "c3", 5: "d4", 6: "e5"}
    memory = {
        "L1": Refusal("L1", "a1", "fp", "invalid phone '12345'"),
        "L2": Refusal("L2", "b2-old", "fp", "invalid phone '9999'"),
        "L4": Refusal("L4", "d4", "fp", "invalid phone '1'"),
        "L5": Refusal("L5", "e5", "fp", "invalid phone '1'"),
    }
    to_map, settled = recall(rows, 0, raw, memory, "fp", {"L5": object()})
    assert [line for line, _ in to_map] == [3, 4, 6]
    assert [(row[0], r.key) for row, r in settled] == [(2, "L1"), (5, "L4")]
    assert recall(rows, 0, raw, {}, "fp", {}) == (rows, [])
