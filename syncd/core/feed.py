"""Feed, don't flood: how many new leads a sink may still send now (pure).

A lead pushed to a dialer waits in its queue until the dialer reaches it. Pushed
faster than the dialer dials, leads pile up there and ring long after syncd let them
go, past the close of their calling window where the vendor cannot be told it
(``core.window_hold``). With ``queue_ahead_minutes`` a sink keeps only about that
many minutes of the dialer's own pace waiting in it:

    allowance = max(pace × queue_ahead_minutes, queue_start) − queued

- ``pace``: leads a minute the dialer has reached, measured from the outcomes it
  reported over the last ``max(queue_ahead_minutes, 15)`` minutes (a short span
  would swing with every poll);
- ``queued``: leads delivered to it that it has reported nothing on yet (delivered
  within ``QUEUED_HORIZON_S``: one it has not reached in three days is the dialer's
  own business, its hours or an absent agent, and no longer holds the feed back);
- ``queue_start``: what a dialer may hold before any pace is known, or when its
  pace is slower than that (a new sink, a quiet hour): never stuck, never more.

Only new leads count: an update of a lead the dialer holds, or a removal, adds no
record to its queue and goes whatever the allowance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_PACE_SPAN_MINUTES = 15.0
QUEUED_HORIZON_S = 3 * 86400.0


@dataclass(frozen=True, slots=True)
class FeedCounts:
    """What the store knows of one sink's dialer queue (``StateStore.feed_counts``)."""

    reached: int  # leads whose outcome the dialer reported within the pace span
    queued: int  # leads delivered (within the horizon) it has reported nothing on
    others_due: int = 0  # updates and removals due now: they go whatever the allowance


@dataclass(frozen=True, slots=True)
class Feed:
    """The decision: how many new leads may go now, and why no more."""

    allowance: int
    queued: int
    target: int  # what the dialer may hold undialled
    pace_per_min: float | None  # None: no outcome reported within the span
    ahead_minutes: float

    def reason(self) -> str:
        """Return the status line of a sink whose new leads wait for the dialer."""
        if self.pace_per_min is None:
            pace = f"no call reported yet, {self.target} let in to start"
        else:
            minutes = self.queued / self.pace_per_min
            pace = f"≈ {minutes:.0f} min of its pace ({self.pace_per_min:.3g} a minute)"
        return f"feeding the dialer: {self.queued} queued {pace}; next leads when it reaches them"


def pace_span_s(ahead_minutes: float) -> float:
    """Return how far back outcomes count toward the dialer's pace (seconds)."""
    return max(ahead_minutes, MIN_PACE_SPAN_MINUTES) * 60.0


def feed(ahead_minutes: float, start: int, counts: FeedCounts) -> Feed:
    """Return how many new leads a sink may send now (see the module doc)."""
    span_minutes = pace_span_s(ahead_minutes) / 60.0
    pace = counts.reached / span_minutes if counts.reached > 0 else None
    target = start if pace is None else max(start, math.ceil(pace * ahead_minutes))
    return Feed(
        allowance=max(0, target - counts.queued),
        queued=counts.queued,
        target=target,
        pace_per_min=pace,
        ahead_minutes=ahead_minutes,
    )
