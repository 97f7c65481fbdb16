"""Feed, don't flood: the pure decision of how many new leads a sink may still send."""

from __future__ import annotations

import pytest

from syncd.core.feed import FeedCounts, feed, pace_span_s


@pytest.mark.parametrize(
    ("ahead", "start", "reached", "queued", "allowance", "target"),
    [
        # no call reported yet: the start allowance, less what already waits
        (10, 50, 0, 0, 50, 50),
        (10, 50, 0, 30, 20, 50),
        (10, 50, 0, 80, 0, 50),  # a dialer that reaches nobody gets no more
        # 150 reached in 15 min: 10 a minute, 10 minutes ahead = 100 waiting at most
        (10, 50, 150, 0, 100, 100),
        (10, 50, 150, 60, 40, 100),
        (10, 50, 150, 100, 0, 100),
        (10, 50, 150, 250, 0, 100),  # more waits than its pace: none, never negative
        # slower than the start: the start stays the floor (never stuck)
        (10, 50, 15, 0, 50, 50),
        # 60 minutes ahead: the pace is measured over 60 minutes, not 15
        (60, 10, 120, 0, 120, 120),
        # a fraction of a lead rounds up: 20 reached in 15 min, 10 min ahead = 13.3 → 14
        (10, 1, 20, 0, 14, 14),
    ],
)
def test_a_sink_may_send_its_pace_times_the_minutes_ahead_less_what_waits(
    ahead: float, start: int, reached: int, queued: int, allowance: int, target: int
) -> None:
    decided = feed(ahead, start, FeedCounts(reached=reached, queued=queued))
    assert (decided.allowance, decided.target) == (allowance, target)


def test_the_pace_span_is_never_shorter_than_fifteen_minutes() -> None:
    assert pace_span_s(5) == 900
    assert pace_span_s(30) == 1800


def test_the_reason_says_how_much_waits_and_at_what_pace() -> None:
    paced = feed(10, 50, FeedCounts(reached=150, queued=120)).reason()
    assert paced == (
        "feeding the dialer: 120 queued ≈ 12 min of its pace (10 a minute); "
        "next leads when it reaches them"
    )
    unpaced = feed(10, 50, FeedCounts(reached=0, queued=50)).reason()
    assert "50 queued no call reported yet, 50 let in to start" in unpaced


def test_status_says_a_working_sink_is_feeding_its_dialer() -> None:
    from syncd.run.status import sink_state_line

    reason = feed(10, 50, FeedCounts(reached=150, queued=120)).reason()
    seen = {"state": "working", "pending": 300, "next_due": 0, "feeding": reason}
    assert sink_state_line(seen, now=1.0) == f"working; {reason}; 300 leads pending"
