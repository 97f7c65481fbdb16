"""Reconcile of a whole chunk: rows and stored leads in, a plan out. No store, no I/O."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.core.model import Action, StoredLead
from syncd.core.reconcile import MappedRow, Row, plan_chunk, triage

RUN, ORIGIN = "run2", "b.csv"


def row(line: int, key: str, phone: str = "98200 10001") -> Row:
    return (line, [key, phone])


def known(
    *,
    raw: str = "raw",
    hash_: str = "h",
    state: str = "delivered",
    origin: str = "a.csv",
    line: int = 2,
    run: str = "run1",
    klass: str = "new",
    delivered: bool = True,
    in_doubt: bool = False,
    attempted: str | None = None,
) -> StoredLead:
    return StoredLead(
        hash_, raw, state, origin, line, run, klass, delivered, None, in_doubt, attempted
    )


# -- triage: which rows need their phones mapped -----------------------------------------

TRIAGE_CASES = [
    # (name, rows, raw hashes, what lookup_changed returned, to map, unchanged, rejected lines)
    ("a key the lookup left out is unchanged", [row(2, "A")], {2: "r"}, {}, [], 1, []),
    ("a new key is mapped", [row(2, "A")], {2: "r"}, {"A": None}, [2], 0, []),
    (
        "a changed raw row is mapped",
        [row(2, "A")],
        {2: "new"},
        {"A": known(raw="old")},
        [2],
        0,
        [],
    ),
    (
        "an identical raw row is unchanged",
        [row(2, "A")],
        {2: "same"},
        {"A": known(raw="same")},
        [],
        1,
        [],
    ),
    (
        "a key twice in the chunk: the earlier row is refused, the later mapped",
        [row(2, "A"), row(3, "B"), row(4, "A")],
        {2: "r1", 3: "r2", 4: "r3"},
        {"A": None, "B": None},
        [3, 4],
        0,
        [2],
    ),
    (
        "a repeat of a row of an earlier chunk of the same file is always mapped",
        [row(9, "A")],
        {9: "raw"},
        {"A": known(raw="raw", origin=ORIGIN, line=3, run=RUN)},
        [9],
        0,
        [],
    ),
    ("a row without a key is mapped (and refused there)", [row(2, "")], {2: "r"}, {}, [2], 0, []),
]


@pytest.mark.parametrize(
    ("rows", "raw", "changed", "to_map", "unchanged", "rejected"),
    [c[1:] for c in TRIAGE_CASES],
    ids=[c[0] for c in TRIAGE_CASES],
)
def test_triage(
    rows: list[Row],
    raw: dict[int, str],
    changed: dict[str, StoredLead | None],
    to_map: list[int],
    unchanged: int,
    rejected: list[int],
) -> None:
    result = triage(rows, 0, raw, changed, origin=ORIGIN, run_id=RUN)
    assert [line for line, _ in result.to_map] == to_map
    assert result.unchanged == unchanged
    assert [r.line for r in result.rejects] == rejected


def test_triage_names_the_row_that_wins() -> None:
    [reject] = triage(
        [row(2, "A"), row(7, "A")], 0, {2: "a", 7: "b"}, {"A": None}, origin=ORIGIN, run_id=RUN
    ).rejects
    assert reject.reason == "duplicate key 'A': superseded by line 7 (last wins)"
    assert reject.values == ["A", "98200 10001"]


# -- plan_chunk: mapped rows and stored leads to writes, rejects and counts ---------------


def mapped(line: int, key: str, hash_: str = "h2", *, deleted: bool = False) -> MappedRow:
    return (line, key, hash_, f'{{"key":"{key}"}}', None, deleted, "")


def refused(line: int, key: str, reason: str) -> MappedRow:
    return (line, key, None, None, reason, False, "")


PLAN_CASES = [
    # (name, mapped row, stored lead, counts, written (action, klass, enqueue, state))
    ("new lead", mapped(2, "A"), None, {"new": 1}, [("upsert", "new", True, "pending")]),
    (
        "changed content",
        mapped(2, "A", "h2"),
        known(hash_="h1"),
        {"changed": 1},
        [("upsert", "changed", True, "pending")],
    ),
    (
        "raw text changed, content did not: the raw hash is refreshed, nothing is queued",
        mapped(2, "A", "h1"),
        known(hash_="h1"),
        {"unchanged": 1},
        [("upsert", "unchanged", False, "pending")],
    ),
    (
        "deleted in the CRM, the dialer holds it: a removal",
        mapped(2, "A", "hdel", deleted=True),
        known(hash_="h1"),
        {"deleted": 1},
        [("delete", "deleted", True, "pending")],
    ),
    (
        "deleted, never delivered: recorded as removed, nothing sent",
        mapped(2, "A", "hdel", deleted=True),
        known(hash_="h1", delivered=False, state="pending"),
        {"skipped": 1},
        [("delete", "skipped", True, "removed")],
    ),
    (
        "deleted and never seen: nothing at all",
        mapped(2, "A", deleted=True),
        None,
        {"skipped": 1},
        [],
    ),
    ("a bad phone is refused", refused(2, "A", "invalid phone 'x'"), None, {"rejected": 1}, []),
]


@pytest.mark.parametrize(
    ("row_", "previous", "counts", "written"),
    [c[1:] for c in PLAN_CASES],
    ids=[c[0] for c in PLAN_CASES],
)
def test_plan_chunk(
    row_: MappedRow,
    previous: StoredLead | None,
    counts: dict[str, int],
    written: list[tuple[str, str, bool, str]],
) -> None:
    line, key = row_[0], row_[1]
    plan = plan_chunk(
        [row_], {line: [key, "x"]}, {line: "raw"}, {key: previous}, origin=ORIGIN, run_id=RUN
    )
    assert plan.counts == counts
    assert [(w.action.value, w.klass, w.enqueue, w.state) for w in plan.writes] == written
    assert all(w.raw_hash == "raw" and w.line == line for w in plan.writes)


def test_the_removal_of_a_lead_sent_in_doubt_names_the_number_it_was_sent_with() -> None:
    doubt = known(hash_="h1", state="pending", delivered=False, in_doubt=True,
                  attempted="+919820000004")  # fmt: skip
    plan = plan_chunk(
        [mapped(2, "A", "hdel", deleted=True)], {2: ["A", "yes"]}, {2: "raw"}, {"A": doubt},
        origin=ORIGIN, run_id=RUN,
    )  # fmt: skip
    assert plan.counts == {"deleted": 1}
    [write] = plan.writes
    assert (write.action, write.klass, write.state, write.hash) == (
        Action.DELETE, "deleted", "pending", "hdel",
    )  # fmt: skip
    assert json.loads(write.lead_json) == {"key": "A", "phone": "+919820000004"}


def test_a_lead_sent_in_doubt_that_the_gate_now_blocks_is_withdrawn_by_that_number() -> None:
    doubt = known(hash_="h1", state="pending", delivered=False, in_doubt=True,
                  attempted="+919820000004")  # fmt: skip
    listed: MappedRow = (2, "A", "h2", '{"key":"A"}', "blocked (dnc): on the list", False, "")
    plan = plan_chunk(
        [listed], {2: ["A", "yes"]}, {2: "raw"}, {"A": doubt}, origin=ORIGIN, run_id=RUN
    )
    assert plan.counts == {"deleted": 1}  # the dialer may hold it: it gets a removal
    [write] = plan.writes
    assert (write.action, write.enqueue) == (Action.DELETE, True)
    assert json.loads(write.lead_json) == {"key": "A", "phone": "+919820000004"}
    assert [r.reason for r in plan.rejects] == [
        "blocked (dnc): on the list; its withdrawal from the dialer is queued"
    ]


def test_a_delivered_lead_s_removal_carries_no_number_its_vendor_ref_names_it() -> None:
    plan = plan_chunk(
        [mapped(2, "A", "hdel", deleted=True)], {2: ["A", "yes"]}, {2: "raw"},
        {"A": known(hash_="h1", attempted="+919820000004")}, origin=ORIGIN, run_id=RUN,
    )  # fmt: skip
    [write] = plan.writes
    assert json.loads(write.lead_json) == {"key": "A"}


def test_a_refused_row_keeps_its_reason_and_its_cells() -> None:
    plan = plan_chunk(
        [refused(4, "A", "invalid phone 'N/A'")],
        {4: ["A", "N/A"]},
        {4: "raw"},
        {},
        origin=ORIGIN,
        run_id=RUN,
    )
    [reject] = plan.rejects
    assert (reject.line, reject.key, reject.values, reject.reason) == (
        4,
        "A",
        ["A", "N/A"],
        "invalid phone 'N/A'",
    )


def test_a_repeat_from_an_earlier_chunk_moves_the_earlier_row_to_the_rejects() -> None:
    # Line 3 of this file was counted NEW in this run; line 9 repeats the key.
    earlier = known(origin=ORIGIN, line=3, run=RUN, klass="new", state="pending", delivered=False)
    plan = plan_chunk(
        [mapped(9, "A", "h9")], {9: ["A", "x"]}, {9: "r"}, {"A": earlier}, origin=ORIGIN, run_id=RUN
    )
    assert plan.counts == {"new": 0, "rejected": 1}  # -1 then +1 new: still one lead
    [reject] = plan.rejects
    assert (reject.line, reject.reason) == (
        3,
        "duplicate key 'A': superseded by line 9 (last wins)",
    )
    [write] = plan.writes
    assert (write.action, write.klass, write.line) == (Action.UPSERT, "new", 9)


def test_a_lead_left_queued_by_an_earlier_run_and_queued_again_is_not_carried() -> None:
    queued = known(hash_="h1", state="pending", run="run1", delivered=False)
    plan = plan_chunk(
        [mapped(2, "A", "h2")], {2: ["A", "x"]}, {2: "r"}, {"A": queued}, origin=ORIGIN, run_id=RUN
    )
    assert plan.carried_requeued == 1
    assert plan.counts == {"changed": 1}


# -- triage decides each row as a row-by-row reading of the chunk would --------------------


def triage_row_by_row(
    rows: list[Row], raw: dict[int, str], changed: dict[str, StoredLead | None]
) -> tuple[list[int], int, list[int]]:
    """The rule triage implements, one row at a time (what it did before it counted the
    rows the lookup left out at once): (lines to map, unchanged, rejected lines)."""
    latest = {values[0].strip(): i for i, (_, values) in enumerate(rows)}
    to_map, unchanged, rejected = [], 0, []
    for i, (line, values) in enumerate(rows):
        key = values[0].strip()
        if key and latest[key] == i and key not in changed:
            unchanged += 1
        elif key and latest[key] != i:
            rejected.append(line)
        elif (
            (previous := changed.get(key)) is not None
            and previous.origin == ORIGIN
            and (previous.line is not None and previous.line < line)
        ):
            to_map.append(line)
        elif previous is not None and previous.raw_hash == raw[line]:
            unchanged += 1
        else:
            to_map.append(line)
    return to_map, unchanged, rejected


@settings(max_examples=300, deadline=None)
@given(
    keys=st.lists(st.sampled_from(["A", "B", " B", "C", "", " ", "D"]), max_size=12),
    looked_up=st.dictionaries(
        st.sampled_from(["A", "B", "C", "", "X"]),
        st.one_of(
            st.none(),
            st.builds(
                lambda raw, origin, line: known(raw=raw, origin=origin, line=line),
                st.sampled_from(["r2", "r3", "other"]),
                st.sampled_from([ORIGIN, "a.csv"]),
                st.integers(0, 9),
            ),
        ),
    ),
)
def test_triage_is_the_row_by_row_rule(
    keys: list[str], looked_up: dict[str, StoredLead | None]
) -> None:
    rows = [row(line, key) for line, key in enumerate(keys, start=2)]
    raw = {line: f"r{line}" for line, _ in rows}
    result = triage(rows, 0, raw, looked_up, origin=ORIGIN, run_id=RUN)
    decided = (
        [line for line, _ in result.to_map],
        result.unchanged,
        [r.line for r in result.rejects],
    )
    assert decided == triage_row_by_row(rows, raw, looked_up)
    with_keys = triage(
        rows, 0, raw, looked_up, origin=ORIGIN, run_id=RUN, keys=[k.strip() for k in keys]
    )
    assert with_keys == result
