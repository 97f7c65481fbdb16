"""How far a dialer's clock (or its time-zone setting) is from ours, from its answers.

Dialers stamp their answers and their rows with their own local time. When their
clock, or the zone syncd was told they use, is off, a poll over "the last ten
minutes" asks for the wrong ten minutes and finds nothing, without any error.
A sink feeds every time it reads from an answer to a ``ClockSkew``; beyond the
tolerance, the sink polls on the dialer's clock instead of ours and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ZONE_STEP_S = 15 * 60  # every time-zone offset in use is a multiple of 15 minutes


@dataclass
class ClockSkew:
    """The latest difference between a dialer's clock and ours (theirs minus ours)."""

    tolerance_s: float
    skew_s: float | None = None  # None: no answer carried a time yet

    @property
    def measured(self) -> bool:
        return self.skew_s is not None

    def observe(self, theirs: float, ours: float) -> None:
        """Note one reading: the dialer said it was ``theirs`` when we read ``ours``."""
        self.skew_s = theirs - ours

    @property
    def beyond(self) -> bool:
        """Return True when the clocks differ by more than the tolerance."""
        return self.skew_s is not None and abs(self.skew_s) > self.tolerance_s

    def offset_s(self) -> float:
        """Return what to add to our time to get the dialer's: 0 within the tolerance.

        Rounded up, plus a second: dialers state whole seconds, cut down, and a window
        that ends a moment in the dialer's future is harmless where one that ends
        in its past misses the rows stamped since.
        """
        if not self.beyond or self.skew_s is None:
            return 0.0
        return float(math.ceil(self.skew_s) + 1)

    def looks_like_zone(self) -> bool:
        """Return True when the difference is a whole time-zone offset (give or take a minute)."""
        if not self.beyond or self.skew_s is None:
            return False
        off = abs(self.skew_s) % ZONE_STEP_S
        return min(off, ZONE_STEP_S - off) <= 60

    def describe(self) -> str | None:
        """Return ``the dialer's clock is 5.5 h behind ours``, None within the tolerance."""
        if not self.beyond or self.skew_s is None:
            return None
        size = abs(self.skew_s)
        amount = f"{size / 3600:.3g} h" if size >= 3600 else f"{size / 60:.3g} min"
        return f"the dialer's clock is {amount} {'ahead of' if self.skew_s > 0 else 'behind'} ours"
