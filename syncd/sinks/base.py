"""The sink interface every dialer implements, and what the engine hands a sink."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from syncd.config import SinkConfig
from syncd.core.clock import SYSTEM_CLOCK, Clock
from syncd.core.model import Lead, PushResult, QueuedLead
from syncd.core.phones import format_dial, from_dial, parse_dial_format
from syncd.errors import PermanentError
from syncd.net.guard import SinkGuard, guard_from_config
from syncd.sinks.features import OptionalFeatures
from syncd.state.base import SinkStore


class BatchRejected(PermanentError):
    """The dialer refused a whole batch without naming the record at fault.

    The engine splits the batch in halves until the bad lead stands alone.
    """


@dataclass
class SinkContext:
    """What the engine gives a sink: the store, a bound logger, the default region."""

    store: SinkStore
    log: Any = field(default_factory=lambda: structlog.get_logger("syncd.sink"))
    region: str = "US"  # the first route's default_region, for `national` dial strings
    dry_run: bool = False
    clock: Clock = SYSTEM_CLOCK
    guard: SinkGuard | None = None  # built from the sink's config when not given
    # the outbox of the agents syncd provisions into this dialer (None: it provisions none)
    agents_outbox: str | None = None
    # Set when the process stops or reloads: a long read (an outcome poll's pages) ends at
    # its next safe point, keeping what it read, instead of being cancelled at the grace.
    stopping: asyncio.Event | None = None


@dataclass(frozen=True)
class QueueFigures:
    """One dialer queue (campaign) as its supervisor view reports it."""

    queue: str
    logged_in: int  # agents logged in to it
    available: int  # of them, free to take a call
    callers_waiting: int
    hold_s: float = 0.0  # average hold time
    talk_s: float = 0.0  # average talk time
    longest_hold_s: float = 0.0


@dataclass
class SinkHealth:
    """What `status`, /readyz and metrics show about a sink."""

    ok: bool = True
    session: str = "not needed"  # valid | expired | not needed | failed
    stopped_reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    # What the operator must fix although leads still flow (a dialer clock that is off)
    warnings: list[str] = field(default_factory=list)
    queues: list[QueueFigures] = field(default_factory=list)  # agents and callers per queue


class Sink(Protocol):
    """A dialer target. Vendor I/O lives in the vendor's own client module."""

    name: str
    config: SinkConfig
    can_remove: bool
    # Breaker and request limits, shared by every caller of this sink. The sink applies
    # the limits to each of its requests (its HTTP client is built with
    # ``make_client(..., guard=self.guard.limits)``); the push loop does not.
    guard: SinkGuard
    features: OptionalFeatures  # helper endpoints turned off by a 403/404 (status warnings)
    keepalive_interval_s: float | None  # how often the engine calls keepalive(); None: never

    async def open(self) -> None:
        """Log in and run start-up checks; raise SinkConfigError when the sink cannot work."""
        ...

    async def probe(self) -> str:
        """Log in and make one harmless read, writing nothing (`syncd check --online`).

        Return what answered; raise CheckFailed naming the settings to fix when the
        dialer refuses them, or the VendorError of a dialer that cannot be reached.
        ``close`` follows.
        """
        ...

    async def push(self, batch: Sequence[QueuedLead]) -> list[PushResult]:
        """Return one result per lead; raise RetryableError or BatchRejected for the batch."""
        ...

    async def poll_outcomes(self) -> int:
        """Record new or changed outcomes in the store; return how many."""
        ...

    async def keepalive(self) -> None:
        """Keep a vendor session alive (no-op for session-less vendors)."""
        ...

    def health(self) -> SinkHealth: ...

    def paused(self) -> str | None:
        """Return why pushes wait now although the dialer answers (None: they go)."""
        ...

    def closes_numbers(self, queued: QueuedLead) -> list[str]:
        """Return the E.164 numbers pushing ``queued`` would close at the dialer as a whole.

        A vendor whose removal names a number rather than a record (every record under
        it closes) lists them, so the engine can hold the removal while another live
        lead holds one of them; [] when the push addresses the lead's own record.
        """
        ...

    async def close(self) -> None:
        """Log out and release connections."""
        ...


class BaseSink:
    """Defaults for the optional parts of the Sink protocol."""

    can_remove = False
    keepalive_interval_s: float | None = None

    def __init__(self, config: SinkConfig, ctx: SinkContext) -> None:
        self.name = config.name
        self.config = config
        self.ctx = ctx
        self.clock = ctx.clock
        self.guard = ctx.guard or guard_from_config(config, ctx.clock)
        self.log = ctx.log.bind(sink=config.name)
        self._dial = parse_dial_format(config.dial_format)
        self._region = config.dial_region or ctx.region
        self._health = SinkHealth()
        self.features = OptionalFeatures(self.log)

    def dial(self, e164: str) -> str:
        """Return the number as this sink's trunks want it dialled."""
        return format_dial(e164, self._dial, self._region)

    def undial(self, dial: str) -> str | None:
        """Return the E.164 number behind one of this sink's dial strings (None: unreadable)."""
        return from_dial(dial, self._dial, self._region)

    def dial_all(self, lead: Lead) -> tuple[str, list[str]]:
        return self.dial(lead.phone), [self.dial(p) for p in lead.alt_phones]

    async def open(self) -> None:
        return None

    async def probe(self) -> str:
        # A sink whose open only reads (logs in, looks its campaign up) probes with it.
        await self.open()
        return "opened"

    async def poll_outcomes(self) -> int:
        return 0

    async def keepalive(self) -> None:
        return None

    def health(self) -> SinkHealth:
        return self._health

    def paused(self) -> str | None:
        return None

    def closes_numbers(self, queued: QueuedLead) -> list[str]:
        return []

    async def close(self) -> None:
        return None
