"""The engine: one configuration's sinks and the stages that move leads and outcomes.

Both drivers use it. ``--once`` (:mod:`syncd.run.once`) runs every stage until
idle; the daemon (:mod:`syncd.daemon.scheduler`) only decides *when* each stage
runs. A stage that one replica of a shared store must run alone asks the engine's
:class:`syncd.run.leadership.Leadership` first. What happens on an error is decided
here, once, so it is the same under both:

- a stage that meets a configuration error (``SinkConfigError``) stops the sink
  (:class:`syncd.run.sinks.SinkSet`); its leads stay queued;
- a poll or keep-alive that fails is recorded by the health tracker (logged once,
  once again on recovery), counted, and tried at its next time;
- opening a sink retries a few times, then leaves it unavailable until a re-check.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from syncd.config import Settings, SourceConfig, WritebackConfig
from syncd.core.audit import sink_policy_version
from syncd.core.clock import Clock
from syncd.core.durations import human_seconds
from syncd.core.gate import CallingWindow, RouteWindow
from syncd.core.health import HealthTracker
from syncd.core.reasons import DIALER_FAILED, reason_code
from syncd.core.summary import RunSummary, SinkCounts
from syncd.core.zones import zone_table
from syncd.errors import LeadLost, SinkConfigError, StoreError, VendorError
from syncd.net.http import MAX_INLINE_HOLD_S, HeldBack
from syncd.run.consent import ORIGIN as CONSENT_ORIGIN
from syncd.run.consent import consent_sinks, withdraw_expired
from syncd.run.dnc_lists import STALE_CODE, ListState, list_states, strict_hold
from syncd.run.leadership import Leadership
from syncd.run.pull import Puller
from syncd.run.push import Pusher
from syncd.run.sinks import SinkSet, Throttle
from syncd.run.window import WindowContext, close_windows
from syncd.sources.base import Chunk, Source
from syncd.state.base import HEALTH_SCOPE, POLLED_SCOPE, ChunkWrite, StateStore

if TYPE_CHECKING:
    from syncd.writeback.runner import PassResult, WritebackRunner

log = structlog.get_logger("syncd.engine")
LISTS_RECHECK_S = 60.0  # how often the daemon looks at the do-not-call lists' age

Progress = Callable[[Source, int], None]

# Why a delivered lead is queued again (its history, `syncd explain`)
EXPIRED_UNDIALLED = (
    "the calling window closed before the dialer rang it (expired there): sent again at the"
    " next opening"
)


def _queues(sink: Any) -> list[Any]:
    """Return a sink's queue figures (none when its health cannot be read)."""
    try:
        return list(sink.health().queues)
    except Exception:  # a sink's broken health() must not stop the snapshot
        return []


def throttled_by(exc: VendorError) -> bool:
    """Return True when a failed request is the dialer's Retry-After hold, not a failure:
    held back by it (not sent), or the 429 answer that asked for it."""
    return isinstance(exc, HeldBack) or getattr(exc, "code", None) == "429"


def new_run_id() -> str:
    """Return a run id that sorts by start time: ``20261201T102309Z-1a2b3c``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


@dataclass(frozen=True)
class PollResult:
    """What one outcome poll of one sink gave: new or changed outcomes, or why it failed."""

    count: int = 0
    error: str | None = None
    skipped: bool = False  # the sink is stopped or unavailable: nothing was asked
    final: bool = False  # a configuration error: asking again cannot help
    retry_after: float | None = None
    # Skipped for the dialer's Retry-After hold ("throttled until …: the dialer asked to
    # wait …"): not a failure; the outcomes wait at the dialer until it ends.
    held: str | None = None


class Engine:
    """Owns one configuration's sinks, their health and the writeback runner."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        *,
        run_id: str | None = None,
        stop: asyncio.Event | None = None,
        observer: Any = None,
        clock: Clock | None = None,
        writebacks_since: Mapping[str, float] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.run_id = run_id or new_run_id()
        self.stop = stop or asyncio.Event()  # set: no new batch is claimed, waits end
        self.observer = observer  # metrics hooks (the daemon's), optional
        # The store's clock unless told otherwise: a shared store's is the database's, so
        # a retry's time, a calling window's "now" and a deadline agree with what the
        # other replicas stamp, whatever this host's clock says.
        clock = clock if clock is not None else store.clock
        self.clock = clock
        self.health = HealthTracker(structlog.get_logger("syncd.engine"), clock)
        self.sinks = SinkSet(settings, store, self.health, clock=clock, stopping=self.stop)
        self._writebacks: WritebackRunner | None = None
        self._writebacks_since = writebacks_since  # see WritebackRunner (None: from its start)
        # Which jobs this process runs on a store replicas share, and its part of the limits
        self.leadership = Leadership(
            store, self.sinks, ttl_s=settings.state.leader_ttl_s, shared=settings.state.shared
        )
        self.list_states: list[ListState] = []  # the do-not-call lists' age, as last checked
        self._lists_checked = -LISTS_RECHECK_S
        # By sink: why its new leads wait for the dialer (queue_ahead_minutes), None: not
        self.fed_up: dict[str, str | None] = {}
        self._pushing: dict[str, Pusher] = {}  # the push pass running per sink (nudge)
        self.gave_up: set[str] = set()  # sinks whose last push gave up on a failing dialer
        self._poll_held_said: dict[str, float] = {}  # by sink: the hold its polls said

    # -- life ------------------------------------------------------------------------

    async def open(self) -> None:
        """Open every sink; one that cannot open is stopped or unavailable, never fatal."""
        await self.sinks.open_all()

    async def close(self) -> None:
        """Log out of every sink and close every writeback."""
        await self.sinks.close_all()
        if self._writebacks is not None:
            await self._writebacks.close()
            self._writebacks = None

    # -- stages ----------------------------------------------------------------------

    async def pull(
        self,
        cfg: SourceConfig,
        summary: RunSummary,
        *,
        full: bool = False,
        progress: Progress | None = None,
    ) -> None:
        """Read one source and reconcile it into the outbox, chunk by chunk."""
        job = f"pull:{cfg.name}"
        if not await self.leadership.leads(job):
            # Said, not skipped in silence: a dead replica's turn passes after leader_ttl_s.
            ttl = human_seconds(self.settings.state.leader_ttl_s)
            summary.files_waiting.append(
                f"{cfg.name}: another replica reads this source now (if it died, its turn "
                f"passes within {ttl})"
            )
            return
        lead = job if self.leadership.shared else None
        puller = Puller(
            self.settings, self.store, summary, progress=progress, clock=self.clock, lead=lead
        )
        try:
            await puller.pull(cfg, full=full)
        except LeadLost as exc:
            # Frozen or stalled past its lead: another replica took the pull over and goes
            # on from the last commit. Nothing of this one's was written after that.
            self._lost_pull(job, cfg.name, str(exc), summary)
            return
        except StoreError as exc:
            # Frozen inside a chunk's transaction, the database ended it (and this
            # replica's connection): if another replica leads the pull now, that is why.
            if lead is None or await self.leadership.leads(job):
                raise
            self._lost_pull(job, cfg.name, f"{LeadLost(job)} ({exc})", summary)
            return
        finally:
            await asyncio.to_thread(puller.close)
        if self.settings.dnc_list_of(cfg.name) is not None:
            await self.check_lists(again=True)  # a version may have loaded

    def _lost_pull(self, job: str, source: str, why: str, summary: RunSummary) -> None:
        self.leadership.lost(job)
        log.warning("pull.lead.lost", job=job, source=source, reason=why)
        summary.files_waiting.append(f"{source}: {why}")

    async def ingest(
        self, source: Source, chunks: list[Chunk], summary: RunSummary
    ) -> list[ChunkWrite | Exception]:
        """Reconcile rows a source was handed (webhook POSTs, keys not overlapping) into the
        outbox in one transaction; committed when this returns (see ``Puller.ingest``). Not
        a leader's job: whichever replica was sent the rows takes them."""
        puller = Puller(self.settings, self.store, summary, clock=self.clock)
        try:
            return await puller.ingest(source, chunks)
        finally:
            puller.close()  # no process pool: a handed chunk stays below its threshold

    def nudge(self, name: str) -> None:
        """Tell the sink's push pass, if one runs, that leads were committed: a worker of
        it left idle while another waits on the dialer sends them now."""
        pusher = self._pushing.get(name)
        if pusher is not None:
            pusher.nudge()

    async def push(self, name: str, counts: SinkCounts, *, deadline: float) -> None:
        """Push one sink's outbox until nothing is due before ``deadline`` or it stops."""
        slot = self.sinks[name]
        if not slot.working:
            return
        # No pusher of this sink runs in this process now: a lead it still holds in flight
        # is one whose results the store could not take (it went away mid-batch) or whose
        # claim committed unanswered. Back to the outbox, or it would stay in flight.
        await self.store.release_inflight(name)
        if slot.cfg.window_hold().close == "withdraw":  # before the release: see run.window
            ctx = WindowContext(
                self.windows(name),
                sink_policy_version(self.settings.routes, name),
                self._fallback_zone(name),
                consent=name in consent_sinks(self.settings),
                refused_as=(self.run_id, self._source_of(name), CONSENT_ORIGIN),
            )
            moved = await close_windows(self.store, name, ctx, self.clock.time())
            counts.carried += moved.queued  # joined the outbox outside this run's routes
        released = await self.store.release_held(name, self.clock.time())
        if released:
            log.info("gate.released", sink=name, count=released)
        # Counted as carried over: delivered in an earlier run, back in the outbox now.
        counts.carried += await self._send_expired_again(name)
        states = await self.check_lists()
        stale = strict_hold(self.settings, states, name)
        strict = any(s.strict for s in states)  # else no lead was ever held for a list
        if stale is None and strict:
            if await self.store.release_held_for(name, f"held ({STALE_CODE})"):
                log.info("gate.released", sink=name, reason="a fresh do-not-call list loaded")
        pusher = Pusher(
            slot.sink,
            self.store,
            counts,
            stop=self.stop,
            observer=self.observer,
            windows=self.windows(name),
            clock=self.clock,
            health=self.health,
            policy=sink_policy_version(self.settings.routes, name),
            fallback_zone=self._fallback_zone(name),
            # Another job (a poll, a keep-alive, a re-check) may stop this sink mid-pass:
            # its pushers claim no more batches from then on.
            working=lambda: self.sinks.slots.get(name) is slot and slot.working,
        )
        pusher.dnc_stale = stale
        pusher.dnc_lists = self.dnc_lists(name)
        pusher.consent = name in consent_sinks(self.settings)
        self._pushing[name] = pusher
        try:
            await pusher.run_until_idle(deadline)
        finally:
            if self._pushing.get(name) is pusher:
                del self._pushing[name]
        self.sinks.confirm(name)  # a re-opened sink the dialer answered has recovered
        self.fed_up[name] = pusher.fed_up  # new leads wait for the dialer to reach its queue
        if pusher.gave_up:  # its dialer kept failing: said once (sink.push.unreachable)
            self.gave_up.add(name)
        else:
            self.gave_up.discard(name)
        if pusher.stopped_by is not None:
            self.sinks.stop(name, pusher.stopped_by)
        held = slot.sink.paused()
        if held is not None:  # logged once while it lasts, once when it ends
            self.health.failed(
                f"paused:{name}",
                held,
                event="sink.push.paused",
                level="warning",
                sink=name,
                action="leads wait in the outbox and go at the first push after it ends",
            )
        else:
            self.health.recovered(f"paused:{name}", event="sink.push.resumed", sink=name)

    async def _send_expired_again(self, name: str) -> int:
        """Queue again the leads whose window closed at a dialer that lets them expire
        (``WindowHold.close == "expiry"``) before it dialled them: else they never ring.
        The gate holds them until the next opening, where they go with its close.
        Return how many."""
        if self.sinks[name].cfg.window_hold().close != "expiry":
            return 0
        # Only leads whose close came before the start of the last outcome poll that went
        # through: a call the dialer placed before the close is then known (a customer who
        # answered and bought is not sent again the next morning).
        polled = await self.store.kv_get(POLLED_SCOPE, name)
        if polled is None:
            return 0
        count = await self.store.requeue_expired(
            name, self.clock.time(), EXPIRED_UNDIALLED, closed_by=float(polled)
        )
        if count:
            log.info("push.expired_again", sink=name, count=count, reason=EXPIRED_UNDIALLED)
        return count

    def _source_of(self, sink: str) -> str:
        """Return the source of ``sink``'s first route: what its refusals are listed under
        when no pull made them (as the consent stage's)."""
        return next((r.source for r in self.settings.routes if r.sink == sink), "")

    def _fallback_zone(self, sink: str) -> str:
        """Return the zone of a lead of ``sink`` whose numbers place nowhere (its first route's)."""
        return next((r.timezone for r in self.settings.routes if r.sink == sink), "UTC")

    async def check_lists(self, *, again: bool = False) -> list[ListState]:
        """Return the do-not-call lists' age (read again at most every LISTS_RECHECK_S, or
        after a pull), warning once per check about each stale one."""
        now = self.clock.time()
        if self.settings.dnc_lists and (again or now - self._lists_checked >= LISTS_RECHECK_S):
            self.list_states = await list_states(self.settings, self.store, now)
            self._lists_checked = now
            for state in self.list_states:
                if state.stale is not None:
                    log.warning("dnc.list.stale", dnc_list=state.name, reason=state.stale,
                                strict=state.strict)  # fmt: skip
        return self.list_states

    def list_warnings(self) -> list[str]:
        """Return one line per stale do-not-call list, for /readyz (as last checked)."""
        return [s.stale for s in self.list_states if s.stale is not None]

    def dnc_lists(self, sink: str) -> list[str]:
        """Return the do-not-call lists of the routes feeding ``sink`` (checked at push)."""
        names = {
            name
            for r in self.settings.routes
            if r.sink == sink and r.policy is not None
            for name in r.policy.dnc_lists
        }
        return sorted(names)

    async def expire_consent(self, summary: RunSummary | None = None) -> int:
        """Queue the withdrawal of the leads a dialer holds whose consent ran out; return
        how many (see ``syncd.run.consent``). One process runs it on a shared store."""
        if not consent_sinks(self.settings) or not await self.leadership.leads("consent"):
            return 0
        summary = summary or RunSummary(new_run_id())
        return await withdraw_expired(self.settings, self.store, summary, self.clock.time())

    def windows(self, sink: str) -> list[RouteWindow]:
        """Return the calling windows of the routes feeding ``sink`` (none: any time)."""
        found = []
        for route in self.settings.routes:
            policy = route.policy
            if route.sink == sink and policy is not None and policy.windows:
                window = CallingWindow.parse(policy.windows, policy.holidays)
                margin = timedelta(minutes=policy.min_minutes_left)
                table = zone_table((o.prefix, o.zones) for o in policy.zone_overrides)
                found.append(RouteWindow(window, route.timezone, margin, table))
        return found

    async def poll(self, name: str) -> PollResult:
        """Ask one sink for new outcomes and store them."""
        slot = self.sinks[name]
        if not slot.working or not await self.leadership.leads(f"poll:{name}"):
            return PollResult(skipped=True)
        throttle = self.sinks.throttled(name)
        if throttle is not None and throttle.left > MAX_INLINE_HOLD_S:
            # Every request would be held back: the poll is not tried (a vendor's login
            # would fail the same way, and say so as if the dialer had).
            return self._poll_held(name, throttle)
        started = self.clock.time()
        try:
            count = await slot.sink.poll_outcomes()
        except SinkConfigError as exc:
            self.sinks.stop(name, exc)
            return PollResult(error=str(exc), final=True)
        except VendorError as exc:
            throttle = self.sinks.throttled(name)
            if throttle is not None and throttled_by(exc):
                return self._poll_held(name, throttle)
            self.health.failed(
                f"poll:{name}",
                str(exc),
                event="sink.poll.failed",
                sink=name,
                action="outcomes wait at the dialer; the poll runs again at its next time",
            )
            return PollResult(error=str(exc), retry_after=getattr(exc, "retry_after", None))
        self.health.recovered(f"poll:{name}", event="sink.poll.recovered", sink=name)
        self.sinks.answered(name)
        if not self.stop.is_set():
            # A poll a stop may have ended early (at a safe point) has not read every
            # outcome: leads it did not reach must not be taken for expired undialled.
            await self.store.kv_set(POLLED_SCOPE, name, repr(started))  # see _send_expired_again
        if self.observer is not None:
            self.observer.outcomes_received(name, count)
        return PollResult(count=count)

    def _poll_held(self, name: str, throttle: Throttle) -> PollResult:
        """A poll the dialer's Retry-After hold keeps back: said once per hold, at info.

        Not a failure (no ``sink.poll.failed``, no failed-poll count, the poll's health
        untouched): the dialer is there and asked to wait; its outcomes wait for it.
        """
        if self._poll_held_said.get(name) != throttle.ends:
            self._poll_held_said[name] = throttle.ends
            log.info(
                "sink.poll.held",
                sink=name,
                until=datetime.fromtimestamp(throttle.until, UTC).isoformat(),
                cause=throttle.reason,  # syncd's words and the answer's code, as throttle.hold's
                action="outcomes wait at the dialer; the poll runs again once the hold ends",
            )
        return PollResult(skipped=True, held=throttle.text(), retry_after=throttle.left)

    async def keepalive(self, name: str) -> None:
        """Keep one sink's vendor session alive (a no-op for session-less vendors)."""
        slot = self.sinks[name]
        if not slot.working:
            return
        throttle = self.sinks.throttled(name)
        if throttle is not None and throttle.left > MAX_INLINE_HOLD_S:
            return  # it would be held back; the hold is said (sink.throttle.hold, status)
        try:
            await slot.sink.keepalive()
        except SinkConfigError as exc:
            self.sinks.stop(name, exc)
        except VendorError as exc:
            if self.sinks.throttled(name) is not None and throttled_by(exc):
                # The dialer asked to wait: not a failed ping (the next request logs in
                # again if the session ran out meanwhile).
                log.debug("sink.session.ping.held", sink=name, cause=str(exc))
                return
            self.health.failed(
                f"keepalive:{name}",
                str(exc),
                event="sink.session.ping.failed",
                level="warning",
                sink=name,
                action="the next request logs in again if the session is gone",
            )
        else:
            self.health.recovered(
                f"keepalive:{name}", event="sink.session.ping.recovered", sink=name
            )

    def keepalive_interval(self, name: str) -> float | None:
        """Return how often the engine keeps this sink's session alive (None: never)."""
        every = self.sinks[name].sink.keepalive_interval_s
        return float(every) if isinstance(every, int | float) and every > 0 else None

    async def writeback(self, cfg: WritebackConfig) -> PassResult:
        """Write everything pending for one writeback back to the CRM."""
        from syncd.writeback.runner import PassResult

        if not await self.leadership.leads(f"writeback:{cfg.name}"):
            return PassResult()
        if self._writebacks is None:
            from syncd.writeback.runner import WritebackRunner

            # One runner for the engine's life: each writeback stays open across passes.
            self._writebacks = WritebackRunner(
                self.settings,
                self.store,
                stop=self.stop,
                health=self.health,
                since=self._writebacks_since,
            )
        result = await self._writebacks.drain(cfg)
        if self.observer is not None:
            self.observer.writeback_pass(cfg.name, result.written, complete=result.error is None)
        return result

    async def finish_writebacks(self) -> dict[str, str]:
        """At a stop or reload: publish what the writebacks wrote (a CSV writeback's file
        being written); return, by writeback, why it could not."""
        if self._writebacks is None:
            return {}
        return await self._writebacks.finish()

    async def prune(self) -> dict[str, int]:
        """Return how many old events, rejects and runs were deleted (`[retention]`)."""
        if not await self.leadership.leads("retention"):
            return {}
        pruned = await self.store.prune(self.settings.retention.keep_s())
        if any(pruned.values()):
            log.info("state.pruned", **pruned)
        return pruned

    async def recheck(self) -> list[str]:
        """Open again every stopped or unavailable sink whose wait is over; return those back."""
        if self.stop.is_set():
            return []
        return await self.sinks.recheck(every_s=self.settings.run.sink_recheck_s)

    def health_snapshot(self) -> dict[str, dict[str, Any]]:
        """Return each sink's state now, as `syncd status` and the status page show it."""
        unreachable = self.sinks.unreachable()
        warnings = self.sinks.warnings(throttled=False)  # said in "throttled", with its end
        snapshots: dict[str, dict[str, Any]] = {}
        for slot in self.sinks:
            down = unreachable.get(slot.name)
            state, reason, since = slot.state.value, slot.reason, slot.since or None
            # Re-opened without a request yet: still out for its cause, as the metric says.
            reopened = self.sinks.unconfirmed(slot.name) if down is None else None
            if reopened is not None:
                state, reason, since = reopened[0].value, reopened[1], reopened[2]
            if down is not None:
                reason, since = down.reason, down.since
            public = (down.public if down is not None else slot.public) or None
            if reopened is not None and down is None:
                public = None  # the cause it was out for, not the slot's
            if reason and public is None:
                public = reason_code(reason, DIALER_FAILED)
            snapshots[slot.name] = {
                "state": "unreachable" if down is not None else state,
                # "dialer unreachable", or "dialer not answering" (no answer to any request)
                "headline": down.headline if down is not None else None,
                "reason": reason,
                # the reason in syncd's words (a code), for the status page
                "public": public,
                "since": since,
                "reopened": reopened is not None,
                "held": self.sinks.held(slot.name),
                # the dialer's Retry-After hold: until (wall time) and why, in syncd's words
                "throttled": (
                    {"until": throttle.until, "reason": throttle.reason}
                    if (throttle := self.sinks.throttled(slot.name)) is not None
                    else None
                ),
                "next_try": down.next_try if down is not None else None,
                "poll_failed": (f := self.health.failure(f"poll:{slot.name}")) and f.reason,
                "poll_public": f and reason_code(f.reason, DIALER_FAILED),
                "warnings": warnings.get(slot.name, []),
                "queues": [asdict(q) for q in _queues(slot.sink)],
                "feeding": self.fed_up.get(slot.name),
                "updated_at": self.clock.time(),
                "run_id": self.run_id,
            }
        return snapshots

    async def publish_health(self) -> None:
        """Write each sink's state where `syncd status` reads it (another process may ask)."""
        self.sinks.note_silences()  # logged here: read often enough, and by either driver
        for name, snapshot in self.health_snapshot().items():
            await self.store.kv_set(HEALTH_SCOPE, name, json.dumps(snapshot))
