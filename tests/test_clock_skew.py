"""How far a dialer's clock is from ours: the decision, case by case (no I/O)."""

from __future__ import annotations

import pytest

from syncd.core.clockskew import ClockSkew


@pytest.mark.parametrize(
    ("skew_s", "offset_s", "zone_like", "said"),
    [
        (None, 0.0, False, None),  # nothing measured yet
        (0.4, 0.0, False, None),
        (-119.6, 0.0, False, None),  # within the 120 s tolerance
        (-19800.2, -19799.0, True, "the dialer's clock is 5.5 h behind ours"),  # IST vs UTC
        (3600.0, 3601.0, True, "the dialer's clock is 1 h ahead of ours"),
        (-1800.0, -1799.0, True, "the dialer's clock is 30 min behind ours"),
        (-1250.0, -1249.0, False, "the dialer's clock is 20.8 min behind ours"),
    ],
)
def test_the_skew_read_from_the_dialer_s_answers(
    skew_s: float | None, offset_s: float, zone_like: bool, said: str | None
) -> None:
    skew = ClockSkew(tolerance_s=120)
    if skew_s is not None:
        skew.observe(1_000_000.0 + skew_s, 1_000_000.0)
    assert skew.offset_s() == offset_s
    assert skew.looks_like_zone() is zone_like
    assert skew.describe() == said


def test_the_offset_errs_towards_the_dialer_s_future() -> None:
    # Its times are whole seconds, cut down: a window ending a second late misses nothing.
    skew = ClockSkew(tolerance_s=60)
    skew.observe(theirs=1000.0, ours=1200.7)  # the dialer said :00 during :00.0–:00.999
    assert skew.offset_s() == -199.0
