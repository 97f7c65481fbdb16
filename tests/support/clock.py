"""One fake clock for every test: time moves only when the test says so."""

from __future__ import annotations


class FakeClock:
    """A clock that stands still until ``advance``; usable where syncd takes a clock.

    Call it (``clock()``) where a plain ``Callable[[], float]`` is taken (the rate
    limiter, the breaker, the simulators); pass it where a ``syncd.core.clock.Clock``
    is taken (``time()`` and ``monotonic()`` read the same instant).
    """

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        """Stand-in for ``asyncio.sleep`` that moves this clock instead of waiting."""
        self.now += max(0.0, seconds)
