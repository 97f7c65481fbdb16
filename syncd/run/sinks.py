"""The engine's sinks: how one is opened, why one is stopped, when it is tried again.

Both drivers (`--once` and the daemon) go through here, so a sink behaves the
same under each: opening retries a reset or a 503 a few times; a configuration
error (wrong key, unknown campaign) stops the sink until it is fixed; a dialer
that cannot be reached leaves the sink *unavailable* and it is tried again
sooner. A stopped sink's leads stay queued. Any of its jobs (push, poll,
keep-alive) that raises ``SinkConfigError`` stops it the same way.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from syncd import registry
from syncd.config import Settings, SinkConfig
from syncd.core.agents import agents_outbox, provisioned_sink
from syncd.core.clock import SYSTEM_CLOCK, Clock
from syncd.core.health import HealthTracker
from syncd.core.reasons import DIALER_FAILED, log_reason
from syncd.errors import SinkConfigError, VendorError, public_reason
from syncd.net.guard import SinkGuard
from syncd.net.ratelimit import RequestLimits
from syncd.net.retry import RetryPolicy, with_retries
from syncd.sinks.base import Sink, SinkContext, SinkHealth
from syncd.state.base import StateStore

log = structlog.get_logger("syncd.sinks")

TRANSIENT_RECHECK_S = 30.0  # a sink that could not connect is tried again sooner than a bad config
FIRST_RECHECK_S = 5.0  # a stopped sink is asked again this soon, then ever less often
# A logout at a stop or reload, after the grace: a hung dialer must not hold the exit.
CLOSE_TIMEOUT_S = 5.0
SESSION_BAD = ("expired", "failed")  # SinkHealth.session values that mean "cannot work now"


def health_problem(name: str, health: SinkHealth) -> str | None:
    """Return why a sink's own health says it cannot work now (for /readyz), or None."""
    if health.stopped_reason:
        return f"sink {name} stopped; syncd status has the reason"
    if health.session in SESSION_BAD:
        return f"sink {name}: session {health.session}"
    if not health.ok:  # its session is fine: a check of the dialer (a campaign's) was not
        return f"sink {name}: its last check of the dialer failed; syncd status has why"
    return None


ACTION_CONFIG = "fix the sink's configuration and reload; its leads stay queued"
ACTION_TRANSIENT = "syncd tries again shortly; its leads stay queued"


class SinkState(enum.StrEnum):
    WORKING = "working"
    STOPPED = "stopped"  # a configuration error: waits for a fix (or a slow re-check)
    UNAVAILABLE = "unavailable"  # could not be reached or opened: tried again soon


class SinkCause(enum.StrEnum):
    """Why a sink delivers or not, one value per cause an operator acts on differently.

    ``syncd_sink_state`` exports it: a refused configuration needs a fix, an
    unreachable dialer needs its network or its vendor, a held sink needs its campaign,
    a throttled one nothing unless it keeps coming back (then its rate limit).
    """

    WORKING = "working"
    HELD = "held"  # working, but the dialer refuses records for now (a paused campaign)
    # working, but the dialer asked every request to wait (429/503 with Retry-After)
    THROTTLED = "throttled"
    # could not connect, not answering, or the breaker is open or probing
    UNREACHABLE = "unreachable"
    CONFIG_REFUSED = "config_refused"  # stopped by SinkConfigError until fixed
    INTERNAL_ERROR = "internal_error"  # the sink's code crashed while opening


def open_policy(cfg: SinkConfig) -> RetryPolicy:
    """Return the retries for opening a sink: a few quick tries, then it is unavailable.

    Unlike a push there is no outbox to wait in, so a Retry-After of up to 30 s
    is waited out here.
    """
    return RetryPolicy(
        attempts=4,
        timeout_s=max(60.0, 4 * cfg.timeout_s),
        wait_initial_s=min(0.5, cfg.retry_base_s),
        wait_max_s=30.0,
    )


def recheck_wait(tries: int, cap_s: float) -> float:
    """Return how long after its ``tries``-th failure in a row a sink is opened again.

    From a few seconds, doubling, capped at ``cap_s`` (``run.sink_recheck_s``): a
    credential revoked for 15 s or a campaign paused for 20 s heals by itself within
    seconds, and a sink that stays wrong is asked no more often than configured.
    """
    return min(cap_s, FIRST_RECHECK_S * 2.0 ** max(tries - 1, 0))


def build_sink(
    cfg: SinkConfig,
    settings: Settings,
    store: StateStore,
    *,
    dry_run: bool = False,
    clock: Clock = SYSTEM_CLOCK,
    guard: SinkGuard | None = None,
    stopping: asyncio.Event | None = None,
) -> Sink:
    """Return the sink object for a config, via the registry (not opened).

    The outbox of the agents provisioned into a dialer gets that vendor's agent sink,
    sharing the dialer's guard (its rate limit and breaker) when given.
    """
    if not cfg.verify_tls and not dry_run:
        log.warning(
            "sink.tls.unverified",
            sink=cfg.name,
            action="verify_tls = false: the dialer's certificate is not checked",
        )
    region = next((r.default_region for r in settings.routes if r.sink == cfg.name), "US")
    provisioned = any(r.sink == cfg.name for r in settings.agent_routes)
    ctx = SinkContext(
        store=store,
        region=region,
        dry_run=dry_run,
        log=structlog.get_logger("syncd.sink"),
        clock=clock,
        guard=guard,
        agents_outbox=agents_outbox(cfg.name) if provisioned else None,
        stopping=stopping,
    )
    if cfg.entity == "agents":
        factory = registry.load_agent_sink(cfg.kind)
    else:
        factory = registry.sinks()[cfg.kind].load_factory()
    sink: Sink = factory(cfg, ctx)
    return sink


@dataclass(frozen=True)
class Throttle:
    """A working sink whose dialer asked every request to wait (a 429 or 503 with
    Retry-After): why, in syncd's words and the answer's code, and until when."""

    until: float  # wall time the hold ends
    left: float  # seconds from now
    reason: str  # "the dialer asked to wait 2 min (HTTP 429, Retry-After)"
    ends: float  # the limiter's own end of it (monotonic): one value per hold

    def text(self) -> str:
        return f"throttled until {clock_text(self.until)}: {self.reason}"


THROTTLE_ACTION = (
    "its pushes and polls wait until then; leads stay queued and spend no attempts; "
    "nothing to do unless it keeps coming back (then lower rate_limit_per_s or ask the "
    "vendor for a higher limit)"
)


UNREACHABLE = "dialer unreachable"
NOT_ANSWERING = "dialer not answering"
SILENCE_ACTION = "leads wait, nothing is lost"


@dataclass(frozen=True)
class Unreachable:
    """A working sink whose dialer keeps failing: since when (wall time), why, next try."""

    since: float
    reason: str
    next_try: float | None
    public: str = ""  # the reason without the dialer's words, for /readyz
    headline: str = UNREACHABLE  # or NOT_ANSWERING: no answer to any request lately


def clock_text(when: float) -> str:
    """Return a wall time as ``09:08:12 UTC`` (today) or ``2026-11-30 09:08 UTC``."""
    moment = datetime.fromtimestamp(when, UTC)
    if moment.date() == datetime.now(UTC).date():
        return moment.strftime("%H:%M:%S UTC")
    return moment.strftime("%Y-%m-%d %H:%M UTC")


CANNOT_WITHDRAW = (
    "this dialer cannot take a lead back: one the safety gate blocks after delivery "
    "(do-not-call, consent) is refused here with that reason and must be removed in the "
    "dialer by hand; `syncd rejects` lists them"
)


@dataclass
class SinkSlot:
    """A configured sink, its live object, and whether (and why) it cannot work now."""

    cfg: SinkConfig
    sink: Sink
    state: SinkState = SinkState.WORKING
    reason: str | None = None
    public: str | None = None  # the reason without the dialer's words, for /readyz
    since: float = 0.0
    failures: int = 0  # failed opens (or stops) in a row: the re-check backs off with them
    last_failed: float = 0.0  # when the latest of them happened
    # Why it is out (set with ``state``). A re-check opens it again with the cause it was
    # out for, kept until the dialer answers a push or a poll (``answered``): a re-open
    # proves nothing (a Jodo sink opens without a request), and ``syncd_sink_state`` must
    # not read "working" between a re-open and the next refusal.
    cause: SinkCause = SinkCause.WORKING
    answered: bool = False
    # Opened again after a failure, the dialer not heard from since: "recovered" waits
    # for its answer, and until then its failures count on (the re-checks back off).
    unconfirmed: bool = False

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def working(self) -> bool:
        return self.state is SinkState.WORKING


class SinkSet:
    """Every sink of one configuration, opened, stopped and re-checked in one place."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        health: HealthTracker,
        *,
        clock: Clock = SYSTEM_CLOCK,
        stopping: asyncio.Event | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.health = health
        self.clock = clock
        self.stopping = stopping  # handed to every sink: long reads end when it is set
        self.slots: dict[str, SinkSlot] = {}

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.slots.values())

    def __getitem__(self, name: str) -> SinkSlot:
        return self.slots[name]

    def working(self) -> list[SinkSlot]:
        return [slot for slot in self.slots.values() if slot.working]

    def limits(self) -> Iterator[tuple[str, RequestLimits]]:
        """Yield each sink's request limits (a dialer's agents sink shares its dialer's)."""
        for slot in self.slots.values():
            yield slot.name, slot.sink.guard.limits

    def stopped(self) -> dict[str, str]:
        """Return why each sink that cannot work now is out (name -> reason)."""
        return {n: s.reason or s.state.value for n, s in self.slots.items() if not s.working}

    async def open_all(self) -> None:
        """Build and open every sink; one that cannot open is stopped, not fatal."""
        for cfg in self.settings.sinks:
            await self._open(cfg)

    async def _open(self, cfg: SinkConfig) -> SinkSlot:
        dialer = provisioned_sink(cfg.name) if cfg.entity == "agents" else None
        parent = self.slots.get(dialer) if dialer is not None else None
        guard = parent.sink.guard if parent is not None else None  # one dialer, one rate limit
        sink = build_sink(
            cfg, self.settings, self.store, clock=self.clock, guard=guard, stopping=self.stopping
        )
        before = self.slots.get(cfg.name)
        out = before is not None and not before.working
        carried = before.cause if before is not None and out else SinkCause.WORKING
        # the public reason goes along with the cause, for /readyz until the dialer answers
        slot = SinkSlot(cfg, sink, cause=carried, public=before.public if before and out else None)
        # Held before it opens: a cancelled open (the deadline, a stop) is still closed.
        self.slots[cfg.name] = slot
        limiter = slot.sink.guard.limits.limiter
        asked = limiter.granted  # requests the open makes: a login answered proves the sink
        try:
            # A reset or a 503 during login must not cost the sink its whole run.
            await with_retries(slot.sink.open, open_policy(cfg), vendor=cfg.kind, what="open")
        except SinkConfigError as exc:
            self._out(slot, SinkState.STOPPED, exc, event="sink.stopped")
        except VendorError as exc:
            self._out(slot, SinkState.UNAVAILABLE, exc, event="sink.open.failed")
        except Exception as exc:  # a sink bug: keep the other sinks (and the daemon) going
            reason = f"internal error in the {cfg.kind} sink: {type(exc).__name__}: {exc}"
            self._out(
                slot,
                SinkState.UNAVAILABLE,
                reason,
                public=public_reason(exc),
                event="sink.open.crashed",
                trace=True,
                cause=SinkCause.INTERNAL_ERROR,
            )
        else:
            if carried is SinkCause.WORKING or limiter.granted > asked:
                self.health.recovered(f"sink:{cfg.name}", event="sink.recovered", sink=cfg.name)
            else:
                # An open without a request proves nothing (Jodo's): with a wrong key it
                # said "recovered" then "stopped" every re-check, never backing off.
                slot.unconfirmed = True
                log.info("sink.reopened", sink=cfg.name, why="recovered once the dialer answers")
            if self.cannot_withdraw(cfg.name):
                log.warning("sink.cannot_withdraw", sink=cfg.name, reason=CANNOT_WITHDRAW)
        return slot

    def stop(self, name: str, exc: SinkConfigError | str) -> None:
        """Stop a sink for a configuration error seen by any of its jobs; its leads stay queued."""
        slot = self.slots[name]
        self._out(slot, SinkState.STOPPED, exc, event="sink.stopped")

    def _out(
        self,
        slot: SinkSlot,
        state: SinkState,
        error: BaseException | str,
        *,
        event: str,
        public: str | None = None,
        trace: bool = False,
        cause: SinkCause | None = None,
    ) -> None:
        reason = str(error)
        if cause is None:
            refused = state is SinkState.STOPPED
            cause = SinkCause.CONFIG_REFUSED if refused else SinkCause.UNREACHABLE
        slot.cause, slot.answered = cause, False
        previous = self.health.failure(f"sink:{slot.name}")
        slot.failures = previous.times + 1 if previous is not None else 1
        slot.last_failed = self.clock.time()
        slot.state, slot.reason = state, reason
        slot.public = public or public_reason(error)
        slot.since = previous.since if previous is not None else self.clock.time()
        self.health.failed(
            f"sink:{slot.name}",
            reason,
            event=event,
            exc_info=trace,
            sink=slot.name,
            action=ACTION_CONFIG if state is SinkState.STOPPED else ACTION_TRANSIENT,
        )

    async def recheck(self, *, every_s: float) -> list[str]:
        """Open again every sink whose wait is over; return the names that work again.

        The wait starts at a few seconds and doubles with each failure in a row, up to
        ``every_s`` (``run.sink_recheck_s``; 30 s at most for a dialer that could not
        be reached). A sink that opens again says so once (``sink.recovered``).
        """
        now = self.clock.time()
        reopened = []
        for name, slot in list(self.slots.items()):
            if slot.working:
                continue
            cap = every_s if slot.state is SinkState.STOPPED else min(TRANSIENT_RECHECK_S, every_s)
            if now - slot.last_failed < recheck_wait(slot.failures, cap):
                continue
            await close_sink(name, slot.sink)
            fresh = await self._open(slot.cfg)
            if fresh.working:
                reopened.append(name)
        return reopened

    def unreachable(self, *, silent: bool = True) -> dict[str, Unreachable]:
        """Return the working sinks whose dialer keeps failing (the breaker is not closed)
        or, with ``silent``, answers nothing (see :mod:`syncd.net.answers`).

        The breaker's word comes first: it is what holds the pushes back. Its "since"
        is the silence's when that began earlier: the outage began when the dialer
        stopped answering, not when the breaker opened.
        """
        out = {}
        for name, slot in self.slots.items():
            breaker = slot.sink.guard.breaker
            if not slot.working:
                continue
            quiet = self.silence(name) if silent else None
            if breaker.state_value == 0:
                if quiet is not None:
                    out[name] = quiet
                continue
            started = breaker.failing_since
            ago = self.clock.monotonic() - started if started is not None else 0.0
            since = self.clock.time() - ago
            probe = breaker.wait_s()
            out[name] = Unreachable(
                since=min(since, quiet.since) if quiet is not None else since,
                reason=breaker.last_reason or "the dialer keeps failing",
                next_try=self.clock.time() + probe if probe > 0 else None,
                public=breaker.last_public or "the dialer keeps failing",
            )
        return out

    def silence(self, name: str) -> Unreachable | None:
        """Return a working sink whose dialer answers none of its requests, else None.

        Seen within a read timeout or two, minutes before the breaker would open on a
        dialer that takes connections and never answers; cleared by any answer.
        """
        quiet = self.slots[name].sink.guard.limits.answers.silence()
        if quiet is None:
            return None
        ago = self.clock.monotonic() - quiet.since
        why = quiet.reason()  # syncd's words only: fit for /readyz as it is
        return Unreachable(
            since=self.clock.time() - ago,
            reason=why,
            next_try=None,
            public=why,
            headline=NOT_ANSWERING,
        )

    def note_silences(self) -> None:
        """Log once when a working sink's dialer stops answering, and once when it answers."""
        for name, slot in self.slots.items():
            if not slot.working:
                continue  # its state says why; "answering" waits for an answer
            quiet = self.silence(name)
            subject = f"answers:{name}"
            if quiet is None:
                if slot.sink.guard.limits.answers.last_answer is not None:
                    # an answer, not a re-opened sink that has asked nothing yet
                    self.health.recovered(subject, event="sink.answering", sink=name)
                continue
            # One silence, however its details move (1 request unanswered, then 2; a
            # read timeout, then a refused connection): said once, the details public.
            self.health.failed(
                subject,
                NOT_ANSWERING,
                event="sink.not_answering",
                level="warning",
                public=quiet.reason,
                sink=name,
                since=clock_text(quiet.since),
                action=f"{SILENCE_ACTION}; syncd goes on asking and says when it answers",
            )

    def cause(self, name: str, unreachable: Mapping[str, Unreachable] | None = None) -> SinkCause:
        """Return why a sink delivers or not now (``syncd_sink_state``).

        A half-open breaker counts as unreachable until the dialer answers its probe, and
        a re-opened sink keeps the cause it was out for until the dialer answers: neither
        a probe nor a re-open proves anything, and an alert must not resolve on each one.
        """
        slot = self.slots[name]
        if not slot.working:
            return slot.cause
        if name in (self.unreachable() if unreachable is None else unreachable):
            return SinkCause.UNREACHABLE
        if slot.cause is not SinkCause.WORKING and not self._answered(slot):
            return slot.cause
        if self.held(name) is not None:
            return SinkCause.HELD
        if self.throttled(name) is not None:
            return SinkCause.THROTTLED
        return SinkCause.WORKING

    def unconfirmed(self, name: str) -> tuple[SinkState, str, float] | None:
        """Return the state, reason and since (wall time) a re-opened sink was out with,
        until its dialer answers; None otherwise.

        `syncd status` and the page show this, as ``cause`` gives ``syncd_sink_state``
        the cause: a re-open made no request, so the sink is not known to work.
        """
        slot = self.slots[name]
        if not slot.working or slot.cause in (SinkCause.WORKING, SinkCause.HELD):
            return None
        if self._answered(slot):
            return None
        refused = slot.cause is SinkCause.CONFIG_REFUSED
        failure = self.health.failure(f"sink:{name}")
        reason = failure.reason if failure is not None else str(slot.cause)
        since = failure.since if failure is not None else slot.since
        return (SinkState.STOPPED if refused else SinkState.UNAVAILABLE), reason, since

    def answered(self, name: str) -> None:
        """The dialer answered one of the sink's requests (a poll went through)."""
        self.slots[name].answered = True
        self.confirm(name)

    def confirm(self, name: str) -> None:
        """Say once that a re-opened sink works again, once its dialer has answered."""
        slot = self.slots[name]
        if slot.unconfirmed and slot.working and self._answered(slot):
            slot.unconfirmed = False
            self.health.recovered(f"sink:{name}", event="sink.recovered", sink=name)

    @staticmethod
    def _answered(slot: SinkSlot) -> bool:
        """Return True once the dialer answered the sink since it was (re)opened."""
        return slot.answered or slot.sink.guard.breaker.successes > 0

    def causes(self) -> dict[str, SinkCause]:
        """Return every sink's cause (see ``cause``)."""
        unreachable = self.unreachable()
        return {name: self.cause(name, unreachable) for name in self.slots}

    def held(self, name: str) -> str | None:
        """Return why a working sink's records wait for now: the dialer refuses them (a
        paused campaign), or the sink holds them itself (``paused``: uContact while its
        server's clock disagrees with server_timezone)."""
        slot = self.slots[name]
        if not slot.working:
            return None
        return slot.sink.guard.held.reason or slot.sink.paused()

    def throttled(self, name: str) -> Throttle | None:
        """Return the dialer's Retry-After hold of a working sink while it lasts, else None.

        The hold is the sink's request limits' (every push, poll and keep-alive waits
        for it), not ``guard.held`` (a paused campaign, pushes only).
        """
        slot = self.slots[name]
        limits = slot.sink.guard.limits
        left = limits.limiter.held_for()
        if not slot.working or left <= 0:
            return None
        return Throttle(
            until=self.clock.time() + left,
            left=left,
            reason=limits.hold_reason(),
            ends=limits.limiter.hold_until,
        )

    def describe(
        self, name: str, waiting: int | None = None, *, public: bool = False
    ) -> str | None:
        """Return one line on why a sink is not delivering (None while it works).

        ``jodo: dialer unreachable since 09:08:12 UTC (ConnectError talking to the dialer),
        1 lead waiting``: what the systemd status and `syncd status` say. ``public``
        leaves out the dialer's own words (``(ConnectError)``, ``(…credentials, code
        1107)``): what the unauthenticated /readyz says.
        """
        slot = self.slots[name]
        reopened = self.unconfirmed(name) if name not in self.unreachable() else None
        if not slot.working:
            what = "stopped" if slot.state is SinkState.STOPPED else "unavailable"
            why = slot.public if public else slot.reason
            text = f"{name}: {what} since {clock_text(slot.since)} ({why})"
        elif reopened is not None:  # as `cause` says: not known to work until it answers
            what = "stopped" if reopened[0] is SinkState.STOPPED else "unavailable"
            why = slot.public if public else reopened[1]
            text = f"{name}: {what} since {clock_text(reopened[2])} ({why}), re-opened"
        elif (down := self.unreachable().get(name)) is not None:
            why = down.public if public else down.reason
            text = f"{name}: {down.headline} since {clock_text(down.since)} ({why})"
            if down.headline == NOT_ANSWERING:
                text += f"; {SILENCE_ACTION}"
        elif (hold := slot.sink.guard.held).reason is not None:
            why = hold.public if public else hold.reason
            text = f"{name}: held since {clock_text(hold.since or 0.0)} ({why})"
        elif (throttle := self.throttled(name)) is not None:  # its reason is syncd's words
            text = f"{name}: throttled until {clock_text(throttle.until)} ({throttle.reason})"
        else:
            return None
        if waiting is not None:
            text += f", {waiting} lead{'s' if waiting != 1 else ''} waiting"
        return text

    def problems(self, waiting: Mapping[str, int] | None = None) -> list[str]:
        """Return why sinks cannot work now (stopped, unavailable, unreachable, session),
        without the dialers' own words: /readyz answers anyone who asks."""
        reasons = []
        unreachable = self.unreachable()
        for name, slot in self.slots.items():
            if not slot.working or name in unreachable or self.unconfirmed(name) is not None:
                reasons.append(str(self.describe(name, (waiting or {}).get(name), public=True)))
                continue
            try:
                health = slot.sink.health()
            except Exception as exc:  # a broken health() must not break the probe
                reasons.append(f"sink {name}: health check failed ({type(exc).__name__})")
                continue
            problem = health_problem(name, health)
            if problem is not None:
                reasons.append(problem)
        return reasons

    def warnings(self, *, throttled: bool = True) -> dict[str, list[str]]:
        """Return, per working sink, what needs fixing although its leads still flow.

        ``throttled``: with the dialer's Retry-After hold while it lasts (/readyz, the
        summary); `syncd status` says it in the sink's state instead, with its end.
        """
        found: dict[str, list[str]] = {}
        for name, slot in self.slots.items():
            if not slot.working:
                continue
            try:
                said = slot.sink.health().warnings
            except Exception:  # a broken health() shows up in problems()
                continue
            said = list(said) + slot.sink.features.warnings()
            hold = slot.sink.guard.held
            if hold.public is not None:  # the dialer's words stay in the log and `status` detail
                said.append(f"held since {clock_text(hold.since or 0.0)}: {hold.public}")
            if throttled and (throttle := self.throttled(name)) is not None:
                said.append(f"{throttle.text()}; {THROTTLE_ACTION}")
            if self.cannot_withdraw(name):
                said.append(CANNOT_WITHDRAW)
            if said:
                found[name] = said
        return found

    def cannot_withdraw(self, name: str) -> bool:
        """Return True when the gate may block delivered leads the sink cannot take back."""
        slot = self.slots[name]
        if slot.sink.can_remove:
            return False
        return any(
            r.sink == name
            and r.policy is not None
            and bool(r.policy.dnc_column or r.policy.consent_column or r.policy.dnc_lists)
            for r in self.settings.routes
        )

    async def close_all(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Log out of every sink at once, each given ``timeout_s``."""
        await asyncio.gather(
            *(close_sink(name, slot.sink, timeout_s) for name, slot in self.slots.items())
        )
        self.slots.clear()


async def close_sink(name: str, sink: Sink, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    """Log out of one sink; a failing or hung logout is logged and never blocks the others.

    Bounded: a dialer that takes the connection and never answers would hold a stop for
    the client's whole read timeout after the grace, past a supervisor's own timeout
    (systemd kills at 45 s). Given up, the session simply runs out at the dialer.
    """
    try:
        await asyncio.wait_for(sink.close(), timeout_s)
    except TimeoutError:
        log.warning(
            "sink.close.timed_out",
            sink=name,
            after_s=timeout_s,
            action="none: the dialer did not answer the logout; its session runs out there",
        )
    except Exception as exc:
        log_reason(log, "warning", "sink.close.failed", str(exc), DIALER_FAILED, sink=name)
