"""One fake clock for every test: time moves only when the test says so."""

from __future__ import annotations

import asyncio
import heapq
import itertools


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


class Sleepers:
    """Sleeps on a FakeClock that end only when the test moves the clock to them.

    Pass an instance where syncd takes a ``sleep``; ``wake_next()`` moves the clock
    to the earliest pending wake-up and ends every sleep due by then, the way the
    event loop would, in order, without waiting for real time.
    """

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self._due: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def __call__(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._due, (self.clock.now + max(0.0, seconds), next(self._order), future))
        await future

    @property
    def pending(self) -> int:
        return len(self._due)

    def quiescent(self) -> bool:
        """Return True when every other task waits on one of these sleeps or on a task.

        Only then may the clock move: a task reading a socket or waiting on a thread
        (the store) is still working, however long the machine takes to let it run.
        """
        sleeping = {id(f) for *_, f in self._due}
        current = asyncio.current_task()
        for task in asyncio.all_tasks():
            if task is current or task.done():
                continue
            waiter = getattr(task, "_fut_waiter", None)  # what the task awaits now
            if waiter is None:
                return False  # ready to run
            if id(waiter) in sleeping or isinstance(waiter, asyncio.Task):
                continue
            if type(waiter).__name__ == "_GatheringFuture":  # asyncio.gather of tasks
                continue
            return False
        return True

    def wake_next(self) -> None:
        """Move the clock to the earliest wake-up and end the sleeps due by then."""
        if not self._due:
            return
        self.clock.now = max(self.clock.now, self._due[0][0])
        while self._due and self._due[0][0] <= self.clock.now:
            _, _, future = heapq.heappop(self._due)
            if not future.done():
                future.set_result(None)
