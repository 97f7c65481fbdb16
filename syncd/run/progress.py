"""How a long push pass reports itself: delivered so far, what remains, the rate.

A pass of a big file takes minutes; without these lines the daemon's log says
nothing between its start and its end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from syncd.core.clock import Clock


@dataclass
class PushProgress:
    """Decides when a push pass logs its progress (at most every ``every_s``) and what it says."""

    clock: Clock
    every_s: float  # 0: after every batch
    delivered: int = 0  # this pass
    started: float = field(init=False)
    _last: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self._last = self.clock.monotonic()

    def add(self, delivered: int) -> bool:
        """Count a batch's deliveries; return True when a progress line is due now."""
        self.delivered += delivered
        now = self.clock.monotonic()
        if delivered == 0 or now - self._last < self.every_s:
            return False
        self._last = now
        return True

    def report(self, remaining: int) -> dict[str, Any]:
        """Return the fields of the progress line, given the leads still waiting.

        With several workers, another batch may land between the count of what
        remains and this call: each line is true to within a batch.
        """
        elapsed = self.clock.monotonic() - self.started
        rate = self.delivered / elapsed if elapsed > 0 else 0.0
        line: dict[str, Any] = {
            "delivered": self.delivered,
            "remaining": remaining,
            "rate_per_s": round(rate, 1),
        }
        if rate > 0 and remaining:
            line["eta_s"] = round(remaining / rate)
        return line
