"""Health bookkeeping in Home Assistant's coordinator style: log once on failure, once on recovery.

One tracker serves every repeated job (a sink's open, poll and keep-alive, a
scheduled job, a writeback): a failure is logged when it starts or its reason
changes (numbers and ids aside: a 502 then a 503 is one outage), repeats only at
debug level, and recovery is logged once. What is
failing, since when and how often is what `status`, /readyz and metrics show.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import structlog

from syncd.core.clock import SYSTEM_CLOCK, Clock
from syncd.core.reasons import FAILING, SHARED_LEVELS, reason_code

_VOLATILE = re.compile(r"\b[0-9a-fA-F-]{8,}\b|\d+")


def stable_reason(reason: str) -> str:
    """Return ``reason`` without its volatile parts (numbers, ids), to group like failures.

    ``HTTP 502`` and ``HTTP 503`` are one outage; ``session 3f9a1c0e… expired`` and
    the next session's expiry are one problem.
    """
    return _VOLATILE.sub("#", reason)


@dataclass
class Failure:
    """What keeps failing: the reason, since when (wall time), how many times in a row."""

    reason: str
    since: float
    times: int = 1


class HealthTracker:
    """Remembers what is failing; logs each change of state exactly once."""

    def __init__(self, logger: Any = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.log = logger or structlog.get_logger("syncd.health")
        self.clock = clock
        self._failing: dict[str, Failure] = {}

    def failed(
        self,
        subject: str,
        reason: str,
        *,
        event: str,
        level: str = "error",
        exc_info: bool = False,
        public: str | None = None,
        **context: Any,
    ) -> bool:
        """Record a failure of ``subject``; return True when it was logged (new or changed).

        At info and warning the line's ``reason`` is ``public`` or the reason's code
        (:mod:`syncd.core.reasons`); error lines keep the whole reason.
        """
        current = self._failing.get(subject)
        if current is not None and stable_reason(current.reason) == stable_reason(reason):
            current.times += 1
            current.reason = reason
            self.log.debug(event, reason=reason, repeated=current.times, **context)
            return False
        since = current.since if current is not None else self.clock.time()
        times = current.times + 1 if current is not None else 1
        self._failing[subject] = Failure(reason, since, times)
        if level in SHARED_LEVELS:  # a code at info and warning; the whole text at debug
            shown = public or reason_code(reason, FAILING)
            getattr(self.log, level)(event, reason=shown, exc_info=exc_info, **context)
            self.log.debug(f"{event}.text", reason=reason, **context)
        else:
            getattr(self.log, level)(event, reason=reason, exc_info=exc_info, **context)
        return True

    def recovered(self, subject: str, *, event: str, **context: Any) -> bool:
        """Record that ``subject`` works; return True when it had been failing (logged once)."""
        was = self._failing.pop(subject, None)
        if was is None:
            return False
        self.log.info(
            event, was=reason_code(was.reason, FAILING), failed_times=was.times, **context
        )
        return True

    def remember(self, subject: str, reason: str | None, since: float | None = None) -> None:
        """Seed what an earlier process saw failing, so a restart does not log it as new."""
        if reason and subject not in self._failing:
            self._failing[subject] = Failure(reason, since or self.clock.time())

    def failure(self, subject: str) -> Failure | None:
        """Return the current failure of ``subject``, or None while it works."""
        return self._failing.get(subject)

    def failing(self, prefix: str = "") -> dict[str, Failure]:
        """Return every current failure whose subject starts with ``prefix``."""
        return {k: v for k, v in self._failing.items() if k.startswith(prefix)}
