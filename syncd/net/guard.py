"""One sink's guard: its circuit breaker and request limits, shared by every caller of that sink.

The engine builds it with the sink and hands it over in the sink's context; the
push loop asks the breaker before each push. Every vendor client builds its HTTP
client with ``make_client(..., guard=self.guard.limits)``, which applies the limits
to every single request (pushes, logins, polls and keep-alives alike).
"""

from __future__ import annotations

from dataclasses import dataclass
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
