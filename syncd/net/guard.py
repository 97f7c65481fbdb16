"""One sink's guard: its circuit breaker and request limits, shared by every caller of that sink.

The engine builds it with the sink and hands it over in the sink's context; the
push loop asks the breaker before each push. Every vendor client builds its HTTP
client with ``make_client(..., guard=self.guard.limits)``, which applies the limits
to every single request (pushes, logins, polls and keep-alives alike).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from syncd.config import SinkConfig
from syncd.core.clock import SYSTEM_CLOCK, Clock
from syncd.net.breaker import CircuitBreaker
from syncd.net.ratelimit import RequestLimits


@dataclass
class SinkGuard:
    """The circuit breaker and request limits of one sink, shared by all its callers."""

    breaker: CircuitBreaker
    limits: RequestLimits
    sizes: BatchSizes = field(default_factory=lambda: BatchSizes())
    held: SinkHold = field(default_factory=lambda: SinkHold())

    def __post_init__(self) -> None:
        # Any request the dialer answers (a poll, a login) tells the breaker it is back.
        self.limits.on_answer = self.breaker.record_answer

    def details(self) -> dict[str, Any]:
        """Return what status pages show about the breaker and the throttle."""
        return {
            "breaker": self.breaker.snapshot(),
            "throttle": {
                "rate_limit_per_s": self.limits.limiter.rate_per_s,
                "max_in_flight": self.limits.max_in_flight,
                "in_flight": self.limits.in_flight,
                "held_for_s": round(self.limits.limiter.held_for(), 3),
            },
        }


@dataclass
class BatchSizes:
    """What a dialer's 413s taught: the largest request it took after refusing a larger one.

    In memory: a restart learns it again with one 413.
    """

    refused: int | None = None  # the smallest batch answered 413
    works: int | None = None  # the largest batch below it that went through

    def too_large(self, size: int) -> None:
        self.refused = size if self.refused is None else min(self.refused, size)
        if self.works is not None and self.works >= size:
            self.works = None  # the records grew: learn again

    def went_through(self, size: int) -> bool:
        """Record a batch the dialer took; return True when it is the first limit learned."""
        if self.refused is None or size >= self.refused:
            return False
        if self.works is not None and size <= self.works:
            return False
        first = self.works is None
        self.works = size
        return first

    def limit(self, configured: int) -> int:
        """Return how many records to claim for one request."""
        if self.works is not None:
            return min(configured, self.works)
        if self.refused is not None:  # until a size works, claim below the refused one
            return max(1, min(configured, self.refused // 2))
        return configured


@dataclass
class SinkHold:
    """A sink whose dialer refuses records for now (a paused campaign): why, and how often."""

    reason: str | None = None  # the dialer's words (status, log)
    public: str | None = None  # syncd's words (/readyz)
    since: float | None = None  # wall time it began
    times: int = 0  # holds in a row: the backoff grows with them
    until: float = 0.0  # monotonic time before which no push goes (polls do)

    def left(self, now: float) -> float:
        """Return the seconds pushes still wait (0 when they may go)."""
        return max(0.0, self.until - now)

    def wait_s(self, base_s: float, max_s: float, asked: float | None) -> float:
        """Return how long this hold lasts: the dialer's suggestion, else doubling from base."""
        if asked is not None:
            return max(asked, base_s)
        return min(max_s, base_s * 2.0 ** max(self.times - 1, 0))


def guard_from_config(cfg: SinkConfig, clock: Clock = SYSTEM_CLOCK) -> SinkGuard:
    """Return a fresh guard for one sink, from its settings."""
    return SinkGuard(
        breaker=CircuitBreaker(
            cfg.name,
            failure_threshold=cfg.breaker_failures,
            reset_s=cfg.breaker_reset_s,
            max_reset_s=max(cfg.breaker_reset_s, cfg.retry_max_s),
            clock=clock.monotonic,
        ),
        limits=RequestLimits(
            cfg.name,
            rate_per_s=cfg.rate_limit_per_s,
            max_in_flight=cfg.max_in_flight,
            clock=clock.monotonic,
        ),
    )
