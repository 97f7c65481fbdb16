"""Leadership: which replica runs each job that must not run twice at once.

On a store of one host this process leads everything. On a store replicas share
(PostgreSQL), one replica leads each source's pull, each sink's outcome poll, each
writeback, the consent re-check and the pruning; pushes run on every replica. A
lead is a lease row per job, taken on the database's clock and renewed every
``leader_ttl_s / 3`` while the replica lives; another replica takes the job within
``leader_ttl_s`` once it dies. The dialers' limits are shared out among the live
replicas at the same time (docs/replicas.md).

The engine asks :meth:`Leadership.leads` before each such stage; the daemon
schedules :meth:`Leadership.renew`; ``--once`` holds its leases for its pass with
:meth:`Leadership.kept`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any, Protocol

import structlog

if TYPE_CHECKING:
    from syncd.net.ratelimit import RequestLimits

log = structlog.get_logger("syncd.leadership")


class LeaderStore(Protocol):
    """The part of the state store leadership uses (both stores implement it)."""

    async def lead(self, job: str, ttl_s: float) -> bool: ...
    async def resign(self) -> None: ...
    async def heartbeat(self) -> None: ...
    async def replicas(self, within_s: float = 60.0) -> list[dict[str, Any]]: ...


class LimitedSinks(Protocol):
    """Where the dialers' limits live: the engine's sinks (``syncd.run.sinks.SinkSet``)."""

    def limits(self) -> Iterable[tuple[str, RequestLimits]]: ...


class Leadership:
    """The jobs this process leads, and its part of each dialer's limits."""

    def __init__(self, store: LeaderStore, sinks: LimitedSinks, *, ttl_s: float, shared: bool):
        self.store = store
        self.sinks = sinks
        self.ttl_s = ttl_s  # `[state] leader_ttl_s`
        self.shared = shared  # several replicas may share the store
        self._led: set[str] = set()  # the jobs this process leads
        self._following: set[str] = set()  # the jobs another replica leads, as last seen

    async def leads(self, job: str) -> bool:
        """Return True when this process runs ``job`` now (taking or renewing its lease).

        Each change is logged once: taking a job (on a shared store), losing it, and
        following another replica's lead — not at every tick.
        """
        led = await self.store.lead(job, self.ttl_s)
        if led and job not in self._led:
            self._led.add(job)
            self._following.discard(job)
            if self.shared:
                log.info("leader.took", job=job)
        elif not led and job in self._led:
            self._led.discard(job)
            log.warning("leader.lost", job=job, action="another replica runs it now")
        if not led and job not in self._following:
            self._following.add(job)
            log.info("leader.following", job=job, why="another replica leads it")
        return led

    def lost(self, job: str) -> None:
        """Take note that another replica leads ``job`` now (found on a write it fenced)."""
        if job in self._led:
            self._led.discard(job)
            log.warning("leader.lost", job=job, action="another replica runs it now")

    async def renew(self) -> None:
        """Renew the leases of the jobs this process leads, its heartbeat, and its part of
        each dialer's limits (divided among the live replicas)."""
        await self.store.heartbeat()
        for job in sorted(self._led):
            await self.leads(job)
        await self.share_limits()

    async def share_limits(self) -> None:
        """Keep each dialer's rate limit and in-flight cap for all replicas together."""
        if not self.shared:
            return
        live = len(await self.store.replicas(within_s=self.ttl_s * 2))
        for sink, limits in self.sinks.limits():
            if limits.configured == (None, None) or not limits.share(live):
                continue
            rate, cap = limits.limiter.rate_per_s, limits.max_in_flight
            log.info("sink.limits.shared", sink=sink, replicas=live, rate_per_s=rate,
                     max_in_flight=cap)  # fmt: skip

    async def resign(self) -> None:
        """Hand every job this process leads to the other replicas (a clean stop)."""
        self._led.clear()
        await self.store.resign()

    @contextlib.asynccontextmanager
    async def kept(self) -> AsyncIterator[None]:
        """Keep the leases of the jobs taken inside while it runs; hand them over after.

        For a driver without a scheduler (``--once``): the daemon schedules
        :meth:`renew` as a job of its own instead.
        """
        if not self.shared:
            yield
            return
        every = self.ttl_s / 3  # renewed well before they run out

        async def renew() -> None:
            while True:
                await asyncio.sleep(every)
                await self.renew()

        await self.store.heartbeat()
        task = asyncio.create_task(renew(), name="leadership")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await self.resign()
