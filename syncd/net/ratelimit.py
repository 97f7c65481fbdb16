"""Per-sink request limits: a rate (token bucket), a concurrency cap and a shared hold.

One ``RequestLimits`` object per sink is shared by everything that talks to that
dialer (push workers, outcome polls, keepalives), so the sum of their requests
stays within what the vendor allows. A ``Retry-After`` seen by one caller holds
back every caller of the sink, not only the one that was told.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import structlog

from syncd.core.durations import human_seconds
from syncd.net.answers import AnswerWatch

log = structlog.get_logger("syncd.ratelimit")


class RateLimiter:
    """At most ``rate_per_s`` grants a second on average, bursts up to ``burst``, in turn.

    GCRA (the virtual-scheduling form of a token bucket) decides *when* the next
    request may go: each grant advances a theoretical arrival time by one interval.
    Waiters queue for that moment in order, except that an ``urgent`` one (a new
    login and the request it replays) goes ahead of those already queued: behind
    them, a short session would expire before its own replay went out.
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
        self.hold_cause: str | None = None  # why the current hold: None, a Retry-After
        self.hold_answer: str | None = None  # the dialer's answer that asked for it ("HTTP 429")
        self.hold_asked = 0.0  # the seconds it asked for
        self._queue: list[tuple[int, int]] = []  # (0 urgent | 1 normal, arrival) of waiters
        self._arrivals = itertools.count()

    def reserve(self) -> float:
        """Return how long a request arriving now waits for its turn, and take that turn."""
        now = self._clock()
        wait = self._earliest(now) - now
        self._take(now + wait)
        return wait

    def _earliest(self, now: float) -> float:
        start = max(now, self._hold_until)
        if self.rate_per_s is None:
            return start
        return max(start, self._tat - (self.burst - 1) / self.rate_per_s)

    def _take(self, at: float) -> None:
        if self.rate_per_s is not None:
            self._tat = max(self._tat, at) + 1.0 / self.rate_per_s

    def hold(self, seconds: float, cause: str | None = None, answer: str | None = None) -> None:
        """Let no request go for ``seconds`` from now (a vendor's Retry-After, or ``cause``)."""
        until = self._clock() + max(0.0, seconds)
        if until > self._hold_until or self.held_for() <= 0:
            # the hold that lasts longest says why
            self.hold_cause, self.hold_answer = cause, answer
            self.hold_asked = max(0.0, seconds)
        self._hold_until = max(self._hold_until, until)

    @property
    def hold_until(self) -> float:
        """Return the clock's time the current (or last) hold ends: one value per hold."""
        return self._hold_until

    def held_for(self) -> float:
        """Return the seconds left of the current hold (0 when none)."""
        return max(0.0, self._hold_until - self._clock())

    @property
    def waiting(self) -> int:
        """Return how many callers are queued for their turn."""
        return len(self._queue)

    async def acquire(self, *, urgent: bool = False) -> None:
        """Wait until it is this caller's turn and the rate and any hold let it go."""
        ticket = (0 if urgent else 1, next(self._arrivals))
        self._queue.append(ticket)
        interval = 1.0 / self.rate_per_s if self.rate_per_s else 0.0
        try:
            while True:
                now = self._clock()
                ahead = sum(1 for other in self._queue if other < ticket)
                wait = self._earliest(now) + ahead * interval - now
                if ahead == 0 and wait <= 0:
                    break
                # Sleep until the turn we expect; an urgent arrival or a new hold may
                # push it back, so look again on waking.
                await self._sleep(wait if wait > 0 else max(interval, 0.001) / 4)
        finally:
            self._queue.remove(ticket)
        self._take(self._clock())
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
        self.configured = (rate_per_s, max_in_flight)  # the dialer's limits, for all replicas
        self.shared_by = 1
        # Told when the dialer answers any request (the sink's breaker: it is back).
        self.on_answer: Callable[[], None] = lambda: None
        # Every request sent, answered or not: is the dialer answering at all?
        self.answers = AnswerWatch(clock)

    @asynccontextmanager
    async def slot(self, *, urgent: bool = False) -> AsyncIterator[None]:
        """Hold one request slot: waits for its turn at the rate, any hold and a free slot.

        The turn comes first: a caller waiting for the rate holds no slot, so an
        ``urgent`` request is not stuck behind callers that are only waiting their turn.
        """
        await self.limiter.acquire(urgent=urgent)
        slots = self._slots  # released to the one it came from, if shared out anew meanwhile
        if slots is not None:
            await slots.acquire()
        try:
            self.in_flight += 1
            try:
                yield
            finally:
                self.in_flight -= 1
        finally:
            if slots is not None:
                slots.release()

    def share(self, replicas: int) -> bool:
        """Give this process its part of the dialer's limits when ``replicas`` share them.

        The rate is divided by the live replicas and so is the in-flight cap (at least
        one each): together they keep to what the dialer allows. Return True when the
        part changed.
        """
        replicas = max(1, replicas)
        if replicas == self.shared_by:
            return False
        self.shared_by = replicas
        rate, cap = self.configured
        self.limiter.rate_per_s = rate / replicas if rate is not None else None
        if cap is not None:
            self.max_in_flight = max(1, cap // replicas)
            self._slots = asyncio.Semaphore(self.max_in_flight)
        return True

    def hold(self, seconds: float, cause: str | None = None, answer: str | None = None) -> None:
        """Hold every request of this sink for ``seconds``.

        ``cause`` says why in syncd's words; None means the dialer asked for the wait
        (Retry-After), and ``answer`` says in which answer ("HTTP 429"). Only the
        dialer's own word should hold every request: a lead in doubt waits on its own.
        """
        if seconds > self.limiter.held_for():
            said = f"the dialer answered {answer or 'a request'} with Retry-After: {seconds:g}"
            log.info(
                "sink.throttle.hold", sink=self.name, seconds=round(seconds, 3), cause=cause or said
            )
        self.limiter.hold(seconds, cause, answer)

    def hold_reason(self) -> str:
        """Return why requests are held, with the wait as asked (not what is left): the
        cause, or ``the dialer asked to wait 2 min (HTTP 429, Retry-After)``."""
        cause = self.limiter.hold_cause
        return cause or self._asked(self.limiter.hold_asked)

    def hold_text(self, seconds: float) -> str:
        """Return why requests wait ``seconds``: the hold's cause, or the dialer's Retry-After."""
        cause = self.limiter.hold_cause
        if cause:
            return f"{cause}; next try in {human_seconds(seconds)}"
        return self._asked(seconds)

    def _asked(self, seconds: float) -> str:
        answer = self.limiter.hold_answer
        asked = f"{answer}, Retry-After" if answer else "Retry-After"
        return f"the dialer asked to wait {human_seconds(seconds)} ({asked})"
