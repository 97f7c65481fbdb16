"""The clock the engine, sinks and limiters read, so tests can move time instead of waiting."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Wall time for what is stored and shown; monotonic time for intervals."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK: Clock = SystemClock()


class DatabaseClock:
    """A shared store's wall clock, read between readings through the local monotonic one.

    Replicas whose own clocks disagree must still stamp and compare stored times
    (``delivered_at``, events, a retry's ``next_at``) on one clock: the database's.
    Asking the database on every ``time()`` would cost a round trip per call and
    cannot be done from synchronous code, so the store reads the database's clock
    now and then (:meth:`anchor`, at open and at each heartbeat) and this clock moves
    on with ``local.monotonic()`` from there: a local wall clock minutes off, or one
    stepped by NTP, does not move it. ``monotonic()`` stays the local one (intervals).
    """

    def __init__(self, local: Clock) -> None:
        self.local = local
        # database time minus local monotonic time; the local wall clock until anchored
        self.offset = local.time() - local.monotonic()
        self.anchored = False

    def time(self) -> float:
        return self.local.monotonic() + self.offset

    def monotonic(self) -> float:
        return self.local.monotonic()

    def anchor(self, database_time: float, asked: float, answered: float) -> None:
        """Set this clock from the database's ``database_time``, read between the local
        monotonic instants ``asked`` and ``answered`` (taken as read half-way)."""
        self.offset = database_time - (asked + answered) / 2
        self.anchored = True
