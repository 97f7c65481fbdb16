"""A claimed batch's fence: its lease checked again before the leads leave for the dialer.

A claim is leased (``lease_s``); a replica's heartbeat renews the leases of its running
pushes. A replica that froze past the lease (a VM pause, SIGSTOP, a stall) has lost its
leads to another replica, which sends them; were it to send them too on waking, the
dialer would get them twice. So before a request carries a batch claimed more than a
third of the lease ago (or confirmed that long ago), the store is asked which of its
leads the claim still holds; any lost and the request does not leave
(:class:`~syncd.errors.ClaimLost`). The check runs at the last moment before the request
is sent (:func:`syncd.net.fence.fenced`), after any wait for the dialer's rate limit.

The age counts both the monotonic and the wall clock: a paused VM's monotonic clock may
not advance while it is paused, its wall clock is set forward when it resumes.
"""

from __future__ import annotations

from collections.abc import Sequence

from syncd.core.clock import Clock
from syncd.core.model import QueuedLead
from syncd.errors import ClaimLost
from syncd.state.base import Outbox

RECHECK_PART = 1 / 3  # of the lease: older than this, a claim is checked before it is sent


class ClaimFence:
    """The check ``fenced`` runs before each request carrying ``batch``."""

    def __init__(
        self,
        store: Outbox,
        sink: str,
        batch: Sequence[QueuedLead],
        confirmed: tuple[float, float],
        lease_s: float,
        clock: Clock,
    ) -> None:
        self.store, self.sink, self.clock = store, sink, clock
        self.claim = batch[0].claim if batch else None
        self.keys = [q.key for q in batch]
        self.confirmed = confirmed  # (monotonic, wall) of the claim or its last check
        self.recheck_after_s = lease_s * RECHECK_PART

    def age_s(self) -> float:
        """Return how long ago the claim was taken or last confirmed."""
        monotonic, wall = self.confirmed
        return max(self.clock.monotonic() - monotonic, self.clock.time() - wall)

    async def __call__(self) -> None:
        if self.claim is None or self.age_s() < self.recheck_after_s:
            return
        held = await self.store.still_claimed(self.sink, self.claim, self.keys)
        lost = [key for key in self.keys if key not in held]
        if lost:
            raise ClaimLost(lost)
        self.confirmed = stamp(self.clock)


def stamp(clock: Clock) -> tuple[float, float]:
    """Return the moment a claim is taken or confirmed, on both clocks."""
    return clock.monotonic(), clock.time()
