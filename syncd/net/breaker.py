"""A circuit breaker per sink: stop hammering a dialer that keeps failing.

Closed: requests flow, consecutive failures are counted. After ``failure_threshold``
in a row it opens: nothing is sent for ``reset_s``. Then it is half-open: one
probe goes; success closes it, failure opens it again for twice as long (up to
``max_reset_s``). A pure state machine (no I/O, an injectable clock); the push
loop asks it before each push and tells it how the push went.

Pushes are not the only requests: polls, logins and keep-alives go on while it is
open, and one of those answered (:meth:`record_answer`, told by the sink's HTTP
transport) means the dialer is back. The probe then goes at once instead of after
a wait doubled by a long outage, so pushes resume within seconds of the dialer's
return; at most once per ``reset_s``, so a dialer that answers reads but fails
pushes is not probed on every page of a poll.

``state`` is a plain public attribute for status pages and metrics.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("syncd.breaker")


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# Gauge values for metrics: 0 closed, 1 half-open, 2 open.
STATE_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class CircuitBreaker:
    """The breaker of one sink; see the module docstring for the states."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_s: float = 30.0,
        max_reset_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = max(1, failure_threshold)
        self.reset_s = reset_s
        self.max_reset_s = max(reset_s, max_reset_s)
        self._clock = clock
        self.state = BreakerState.CLOSED
        self.failures = 0  # consecutive
        self.opened = 0  # times opened since the last close
        self.last_reason = ""
        self.last_public = ""
        self._probe_at = 0.0  # when OPEN: the earliest time a probe may go
        self.failing_since: float | None = None  # clock time of the first failure in a row
        self.successes = 0  # answers ever recorded: has this dialer answered since it opened?
        self._probing = False
        self._hinted_at: float | None = None  # when another request's answer last moved a probe

    @property
    def state_value(self) -> int:
        """Return the state as a number for a metrics gauge (0 closed, 1 half-open, 2 open)."""
        return STATE_VALUE[self.state]

    def wait_s(self) -> float:
        """Return how long until a request may go (0 when one may go now)."""
        if self.state is BreakerState.OPEN:
            return max(0.0, self._probe_at - self._clock())
        if self.state is BreakerState.HALF_OPEN and self._probing:
            return min(1.0, self.reset_s)  # the probe's answer decides; check again soon
        return 0.0

    def allow(self) -> bool:
        """Return True if a request may go now; in half-open, only one probe at a time."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if self._clock() < self._probe_at:
                return False
            self._set(BreakerState.HALF_OPEN)
        if self._probing:
            return False
        self._probing = True
        return True

    def cancel(self) -> None:
        """Give back an allowed request that was never sent (nothing to push)."""
        self._probing = False

    def record_success(self) -> None:
        """The dialer answered: close the breaker and forget past failures."""
        self._probing = False
        self.successes += 1
        self.failures = 0
        self.opened = 0
        self.failing_since = None
        self._hinted_at = None
        if self.state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def record_answer(self) -> None:
        """Another request to the dialer was answered: an open breaker probes now.

        Only the probe's own answer closes it (reads may work while pushes fail); once
        an early probe has gone, the next one waits ``reset_s`` at least.
        """
        if self.state is not BreakerState.OPEN:
            return  # closed: pushes flow; half-open: the probe's answer decides
        now = self._clock()
        soonest = now if self._hinted_at is None else max(now, self._hinted_at + self.reset_s)
        if soonest >= self._probe_at:
            return
        self._probe_at = self._hinted_at = soonest
        log.info(
            "sink.breaker.probe_early",
            sink=self.name,
            reason="the dialer answered another request",
            in_s=round(soonest - now, 3),
        )

    def record_failure(self, reason: str = "", public: str = "") -> None:
        """The dialer could not be reached or failed; open after too many in a row.

        ``public`` is the same failure without the dialer's own words, for /readyz.
        """
        self._probing = False
        self.failures += 1
        self.last_reason = reason
        self.last_public = public
        if self.failing_since is None:
            self.failing_since = self._clock()
        if self.state is BreakerState.HALF_OPEN or (
            self.state is BreakerState.CLOSED and self.failures >= self.failure_threshold
        ):
            self.opened += 1
            cooldown = min(self.max_reset_s, self.reset_s * 2 ** (self.opened - 1))
            self._probe_at = self._clock() + cooldown
            self._set(BreakerState.OPEN, cooldown_s=cooldown)

    def snapshot(self) -> dict[str, Any]:
        """Return what status pages show: state, consecutive failures, next probe, reason."""
        return {
            "state": self.state.value,
            "consecutive_failures": self.failures,
            "next_probe_in_s": round(self.wait_s(), 3) if self.state is BreakerState.OPEN else None,
            "last_failure": self.last_reason or None,
        }

    def _set(self, state: BreakerState, **context: Any) -> None:
        self.state = state
        # Logged once per transition, never per request.
        if state is BreakerState.OPEN:
            log.warning(
                "sink.breaker.opened",
                sink=self.name,
                failures=self.failures,
                reason=self.last_reason,
                **context,
            )
        elif state is BreakerState.HALF_OPEN:
            log.info("sink.breaker.half_open", sink=self.name)
        else:
            log.info("sink.breaker.closed", sink=self.name)
