"""The in-doubt check's pure decisions: when a page ends a stretch, what a view covers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from syncd.sinks.ucontact.dialled import CampaignView, Stretch, page_ends

T0 = 1_800_000_000.0


@pytest.mark.parametrize(
    ("rows", "ask", "served", "ends"),
    [
        (0, 10, None, True),  # nothing more
        (9, 10, None, True),  # short of a small page: every server serves 50
        (10, 10, None, False),  # full: the next page tells
        (49, 500, None, True),  # short of the document's 50
        (120, 500, None, False),  # the end, or the server's own limit of 120
        (119, 120, 120, True),  # short of what it has shown it serves
        (120, 120, 120, False),
    ],
)
def test_a_page_ends_its_stretch_only_when_surely_short(
    rows: int, ask: int, served: int | None, ends: bool
) -> None:
    assert page_ends(rows, ask, served) is ends


def view(since: float, as_of: float, done: bool = True) -> CampaignView:
    v = CampaignView(since=since, end=datetime.fromtimestamp(as_of + 60, UTC), as_of=as_of)
    v.stretches.append(Stretch(datetime.fromtimestamp(since, UTC), v.end, done=done))
    return v


@pytest.mark.parametrize(
    ("floor", "check_at", "done", "covers"),
    [
        (T0, None, True, True),
        (T0 + 5, None, True, True),  # a later upload: within the view
        (T0 - 5, None, True, False),  # an earlier one: not read from there
        (T0, None, False, False),  # not read to the end
        (T0, T0 + 10, True, True),  # its removal's records were due before the read
        (T0, T0 + 30, True, False),  # they were due after it: read again
    ],
)
def test_a_view_answers_no_call_only_for_what_it_read_whole_and_late_enough(
    floor: float, check_at: float | None, done: bool, covers: bool
) -> None:
    assert view(T0, T0 + 20, done).covers(floor, check_at) is covers


def test_an_earlier_upload_adds_the_stretch_up_to_where_the_view_starts() -> None:
    v = view(T0, T0 + 20)
    v.reach_back(T0 - 300)
    assert v.since == T0 - 300 and not v.complete
    added = v.stretches[-1]
    assert added.start.timestamp() <= T0 - 300 and added.end.timestamp() >= T0
    v.reach_back(T0 - 100)  # already within
    assert len(v.stretches) == 2
