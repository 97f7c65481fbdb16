"""A value the HTTP port serves without asking the store per request.

``/status``, ``/metrics`` and the store half of ``/readyz`` read the store; a crowd of
clients must not multiply that work. A :class:`Snapshot` is computed at most once per
period, one computation at a time: a request that finds it stale starts the refresh and
waits for it, and everyone who comes meanwhile waits for that same refresh (a scrape
every 15 s sees the store as it is, not as the previous scrape saw it). A refresh that
took long waits longer before the next one (``duty``), so a large store spends a bounded
share of its time on the page.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")

SNAPSHOT_S = 2.0  # how old a served /status, /metrics or /readyz may be, at least
DUTY = 0.2  # at most this share of the time goes to refreshing one snapshot


class Snapshot(Generic[T]):
    """``compute()``'s result, refreshed at most every ``max(period_s, cost / duty)``."""

    def __init__(
        self,
        compute: Callable[[], Awaitable[T]],
        period_s: float = SNAPSHOT_S,
        *,
        duty: float = DUTY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._compute = compute
        self.period_s = period_s
        self.duty = duty
        self._clock = clock
        self._value: T | None = None
        self._has = False
        self._at = float("-inf")  # when the last refresh ended (well or not)
        self._cost = 0.0  # how long the last refresh took
        self._error: Exception | None = None
        self._task: asyncio.Task[T] | None = None
        self.refreshes = 0

    async def get(self) -> T:
        """Return the value held while it is fresh, else the result of the refresh running
        (started now if none is)."""
        if self._clock() - self._at < self.fresh_for():
            if self._has:
                return self._value  # type: ignore[return-value]
            if self._error is not None:  # nothing yet, and the last try failed: say so
                raise self._error
        task = self._task or self._start()
        # Shielded: an abandoned request must not cancel the refresh the others wait for.
        return await asyncio.shield(task)

    def fresh_for(self) -> float:
        """Return how long a value stays served before the next refresh."""
        return max(self.period_s, self._cost / self.duty if self.duty > 0 else 0.0)

    def invalidate(self) -> None:
        """Make the next request start a refresh."""
        self._at = float("-inf")

    def _start(self) -> asyncio.Task[T]:
        self._task = asyncio.create_task(self._refresh(), name="snapshot")
        # A refresh whose requesters all left must not warn that nobody read its error.
        self._task.add_done_callback(_retrieve)
        return self._task

    async def _refresh(self) -> T:
        started = self._clock()
        self.refreshes += 1
        try:
            value = await self._compute()
        except Exception as exc:
            self._error, self._at = exc, self._clock()  # a failing store: not again at once
            raise
        finally:
            self._cost = self._clock() - started
            self._task = None
        self._value, self._has, self._error, self._at = value, True, None, self._clock()
        return value


def _retrieve(task: asyncio.Task[object]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        task.exception()
