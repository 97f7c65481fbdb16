"""Reconcile decisions, without I/O."""

from __future__ import annotations

import pytest

from syncd.core.model import StoredLead
from syncd.core.reconcile import (
    Decision,
    decide,
    decide_repeat,
    raw_unchanged,
    replaces_queued,
    superseded_by,
)


def stored(
    hash_: str = "h1",
    *,
    delivered: bool = True,
    raw: str = "r1",
    origin: str = "a.csv",
    line: int = 5,
    run: str = "run1",
    klass: str = "new",
    state: str = "delivered",
    in_doubt: bool = False,
) -> StoredLead:
    return StoredLead(hash_, raw, state, origin, line, run, klass, delivered, in_doubt=in_doubt)


def test_unknown_key_is_new() -> None:
    assert decide(None, "h1", deleted=False) is Decision.NEW


def test_same_content_is_unchanged_and_different_content_changed() -> None:
    assert decide(stored("h1"), "h1", deleted=False) is Decision.UNCHANGED
    assert decide(stored("h1"), "h2", deleted=False) is Decision.CHANGED


def test_delete_of_a_lead_the_dialer_holds_is_deleted() -> None:
    assert decide(stored("h1"), "hdel", deleted=True) is Decision.DELETED


def test_delete_of_an_unknown_or_never_delivered_lead_is_skipped() -> None:
    assert decide(None, "hdel", deleted=True) is Decision.SKIPPED
    assert decide(stored("h1", delivered=False), "hdel", deleted=True) is Decision.SKIPPED


DOUBT_CASES = [
    # (name, stored lead, decision of its deletion in the CRM)
    ("never sent", stored("h1", delivered=False, state="pending"), Decision.SKIPPED),
    ("refused by the dialer", stored("h1", delivered=False, state="rejected"), Decision.SKIPPED),
    (
        "sent, the answer lost: the dialer may hold it",
        stored("h1", delivered=False, state="pending", in_doubt=True),
        Decision.DELETED,
    ),
    (
        "sent in doubt until attempts ran out (a dead letter)",
        stored("h1", delivered=False, state="failed", in_doubt=True),
        Decision.DELETED,
    ),
    ("delivered", stored("h1", state="delivered"), Decision.DELETED),
    (
        # its request may land: the removal waits for the push's completion, counted as
        # enqueued (it was skipped, and the removal sent after it counted as delivered)
        "in flight",
        stored("h1", delivered=False, state="inflight"),
        Decision.DELETED,
    ),
    (
        "its removal already queued: the same deletion again",
        stored("hdel", delivered=False, state="pending", in_doubt=True),
        Decision.UNCHANGED,
    ),
]


@pytest.mark.parametrize(
    ("previous", "expected"), [c[1:] for c in DOUBT_CASES], ids=[c[0] for c in DOUBT_CASES]
)
def test_a_lead_sent_in_doubt_counts_as_possibly_delivered_when_deleted(
    previous: StoredLead, expected: Decision
) -> None:
    assert decide(previous, "hdel", deleted=True) is expected


def test_repeated_delete_is_unchanged() -> None:
    assert decide(stored("hdel"), "hdel", deleted=True) is Decision.UNCHANGED


def test_identical_raw_row_skips_normalization() -> None:
    assert raw_unchanged(stored(raw="r1"), "r1")
    assert not raw_unchanged(stored(raw="r1"), "r2")
    assert not raw_unchanged(None, "r1")


def test_a_key_repeated_later_in_the_same_file_supersedes_the_earlier_row() -> None:
    earlier = stored(origin="a.csv", line=5, run="run1", klass="new")
    repeat = superseded_by(earlier, "a.csv", "run1", 900)
    assert repeat is not None and repeat.line == 5 and repeat.counted_as == "new"
    assert superseded_by(earlier, "b.csv", "run1", 900) is None
    assert superseded_by(earlier, "a.csv", "run2", 900).counted_as is None  # type: ignore[union-attr]


def test_a_repeat_of_a_new_key_stays_new() -> None:
    assert decide_repeat("new", stored("h1"), "h2", deleted=False) is Decision.NEW
    assert decide_repeat("changed", stored("h2"), "h2", deleted=False) is Decision.CHANGED
    assert decide_repeat(None, stored("h1"), "h1", deleted=False) is Decision.UNCHANGED


@pytest.mark.parametrize(
    ("state", "origin", "run", "line", "replaces"),
    [
        ("pending", "b.csv", "run2", 3, True),  # queued by another file: that version leaves
        ("held", "b.csv", "run2", 3, True),  # held by the gate, unsent: leaves too
        ("inflight", "b.csv", "run2", 3, False),  # on its way: it completes, then this goes
        ("delivered", "b.csv", "run2", 3, False),  # the dialer has it: nothing left unsent
        ("pending", "a.csv", "run1", 900, False),  # an earlier row of this file and run
        ("pending", "a.csv", "run2", 900, True),  # the same file read again in a later run
    ],
)
def test_a_row_supersedes_a_version_only_when_it_takes_it_off_the_outbox_unsent(
    state: str, origin: str, run: str, line: int, replaces: bool
) -> None:
    previous = stored(origin="a.csv", line=5, run="run1", state=state)
    assert replaces_queued(previous, origin, run, line) is replaces
    assert replaces_queued(None, origin, run, line) is False
