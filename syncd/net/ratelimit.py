"""Per-sink request limits: a rate (token bucket), a concurrency cap and a shared hold.

One ``RequestLimits`` object per sink is shared by everything that talks to that
dialer (push workers, outcome polls, keepalives), so the sum of their requests
stays within what the vendor allows. A ``Retry-After`` seen by one caller holds
back every caller of the sink, not only the one that was told.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import structlog

log = structlog.get_logger("syncd.ratelimit")


class RateLimiter:
    """At most ``rate_per_s`` acquisitions a second on average, bursts up to ``burst``.

    GCRA (the virtual-scheduling form of a token bucket): each acquisition
    advances a theoretical arrival time by one interval; a caller waits until that
    time, less the burst allowance, has come.
    """

    def __init__(
        self,
        rate_per_s: float | None,
        *,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate_per_s is not None and rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.rate_per_s = rate_per_s
        self.burst = max(1, burst)
        self._clock = clock
        self._sleep = sleep
        self.granted = 0  # requests let through so far
        self._tat = 0.0  # theoretical arrival time of the next request
        self._hold_until = 0.0

    def reserve(self) -> float:
        """Return how long the caller must wait before its request may go (0: now)."""
        now = self._clock()
        start = max(now, self._hold_until)
        if self.rate_per_s is None:
            return start - now
        interval = 1.0 / self.rate_per_s
        tat = max(self._tat, start)
        allowed_at = tat - (self.burst - 1) * interval
        self._tat = tat + interval
        return max(0.0, allowed_at - now, start - now)

    def hold(self, seconds: float) -> None:
        """Let no request go for ``seconds`` from now (a vendor's Retry-After)."""
        self._hold_until = max(self._hold_until, self._clock() + max(0.0, seconds))

    def held_for(self) -> float:
        """Return the seconds left of the current hold (0 when none)."""
        return max(0.0, self._hold_until - self._clock())

    async def acquire(self) -> None:
        """Wait until a request may go."""
        wait = self.reserve()
        if wait > 0:
            await self._sleep(wait)
        # A hold set while we slept applies to us too (checked once: holds are rare).
        left = self.held_for()
        if left > 0:
            await self._sleep(left)
        self.granted += 1


class RequestLimits:
    """Rate, concurrency and Retry-After hold for one sink's requests."""

    def __init__(
        self,
        name: str,
        *,
        rate_per_s: float | None = None,
        max_in_flight: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.max_in_flight = max_in_flight
        self.limiter = RateLimiter(rate_per_s, burst=max_in_flight or 1, clock=clock)
        self._slots = asyncio.Semaphore(max_in_flight) if max_in_flight else None
        self.in_flight = 0
        # True once a vendor client's HTTP transport applies these limits per request;
        # until then the push loop applies them per push.
        self.per_request = False

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one request slot: waits for the rate, a free slot and any hold."""
        if self._slots is not None:
            await self._slots.acquire()
        try:
            await self.limiter.acquire()
            self.in_flight += 1
            try:
                yield
            finally:
                self.in_flight -= 1
        finally:
            if self._slots is not None:
                self._slots.release()

    def hold(self, seconds: float) -> None:
        """Hold every request of this sink for ``seconds`` (the vendor asked us to wait)."""
        if seconds > self.limiter.held_for():
            log.info("sink.throttle.hold", sink=self.name, seconds=round(seconds, 3))
        self.limiter.hold(seconds)
