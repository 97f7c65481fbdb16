"""The engine: one configuration's sinks and the stages that move leads and outcomes.

Both drivers use it. ``--once`` (:mod:`syncd.run.once`) calls :meth:`Engine.run_once`,
which runs every stage until idle; the daemon (:mod:`syncd.daemon.scheduler`)
only decides *when* each stage runs. What happens on an error is decided here,
once, so it is the same under both:

- a stage that meets a configuration error (``SinkConfigError``) stops the sink
  (:class:`syncd.run.sinks.SinkSet`); its leads stay queued;
- a poll or keep-alive that fails is recorded by the health tracker (logged once,
  once again on recovery), counted, and tried at its next time;
- opening a sink retries a few times, then leaves it unavailable until a re-check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog

from syncd.config import Settings, SourceConfig, WritebackConfig
from syncd.core.audit import sink_policy_version
from syncd.core.clock import Clock
from syncd.core.durations import human_seconds
from syncd.core.gate import CallingWindow, RouteWindow
from syncd.core.health import HealthTracker
from syncd.core.summary import RunSummary, SinkCounts
from syncd.core.zones import zone_table
from syncd.errors import SinkConfigError, VendorError
from syncd.run.consent import consent_sinks, withdraw_expired
from syncd.run.dnc_lists import STALE_CODE, ListState, list_states, strict_hold
from syncd.run.pull import Puller
from syncd.run.push import Pusher
from syncd.run.sinks import SinkSet
from syncd.run.window import WindowContext, close_windows
from syncd.sources.base import Source
from syncd.state.base import StateStore

if TYPE_CHECKING:
    from syncd.writeback.runner import PassResult, WritebackRunner

log = structlog.get_logger("syncd.engine")
LISTS_RECHECK_S = 60.0  # how often the daemon looks at the do-not-call lists' age

Progress = Callable[[Source, int], None]
HEALTH_SCOPE = "engine.sinks"  # kv scope: each sink's last known state, for `syncd status`

DEADLINE_GRACE_S = 2.0  # past `--deadline`, what in-flight work gets before it is cut off
ONCE_POLL_TRIES = 3  # outcome polls in one `--once` pass before it reports the poll failed
ONCE_POLL_WAIT_S = 2.0  # the pause before the next try grows by this much each time
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


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Log how long a stage of the run took (`run.phase`), so a slow run says where."""
    started = time.monotonic()
    try:
        yield
    finally:
        log.info("run.phase", phase=name, seconds=round(time.monotonic() - started, 3))


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
        self.sinks = SinkSet(settings, store, self.health, clock=clock)
        self._writebacks: WritebackRunner | None = None
        self._led: set[str] = set()  # the jobs this process leads (a shared store)
        self._following: set[str] = set()  # the jobs another replica leads, as last seen
        self.list_states: list[ListState] = []  # the do-not-call lists' age, as last checked
        self._lists_checked = -LISTS_RECHECK_S

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

    # -- leadership: jobs that must not run twice at once, on a store replicas share -

    async def leads(self, job: str) -> bool:
        """Return True when this process runs ``job`` now (taking or renewing its lease).

        On a store of one host that is always; on a shared store, one replica leads each
        source's pull, each sink's outcome poll, each writeback and the pruning, and
        another takes over within ``[state] leader_ttl_s`` once it dies. Pushes run on
        every replica.
        """
        led = await self.store.lead(job, self.settings.state.leader_ttl_s)
        if led and job not in self._led:
            self._led.add(job)
            self._following.discard(job)
            if self.settings.state.shared:
                log.info("leader.took", job=job)
        elif not led and job in self._led:
            self._led.discard(job)
            log.warning("leader.lost", job=job, action="another replica runs it now")
        if not led and job not in self._following:  # said once, not at every tick
            self._following.add(job)
            log.info("leader.following", job=job, why="another replica leads it")
        return led

    async def renew(self) -> None:
        """Renew the leases of the jobs this process leads, its heartbeat, and its part of
        each dialer's limits (divided among the live replicas)."""
        await self.store.heartbeat()
        for job in sorted(self._led):
            await self.leads(job)
        await self.share_limits()

    async def share_limits(self) -> None:
        """Keep each dialer's rate limit and in-flight cap for all replicas together."""
        if not self.settings.state.shared:
            return
        live = len(await self.store.replicas(within_s=self.settings.state.leader_ttl_s * 2))
        for slot in self.sinks:
            limits = slot.sink.guard.limits
            if limits.configured == (None, None) or not limits.share(live):
                continue
            rate, cap = limits.limiter.rate_per_s, limits.max_in_flight
            log.info("sink.limits.shared", sink=slot.name, replicas=live, rate_per_s=rate,
                     max_in_flight=cap)  # fmt: skip

    async def resign(self) -> None:
        """Hand every job this process leads to the other replicas (a clean stop)."""
        self._led.clear()
        await self.store.resign()

    async def pull(
        self,
        cfg: SourceConfig,
        summary: RunSummary,
        *,
        full: bool = False,
        progress: Progress | None = None,
    ) -> None:
        """Read one source and reconcile it into the outbox, chunk by chunk."""
        if not await self.leads(f"pull:{cfg.name}"):
            # Said, not skipped in silence: a dead replica's turn passes after leader_ttl_s.
            ttl = human_seconds(self.settings.state.leader_ttl_s)
            summary.files_waiting.append(
                f"{cfg.name}: another replica reads this source now (if it died, its turn "
                f"passes within {ttl})"
            )
            return
        puller = Puller(self.settings, self.store, summary, progress=progress, clock=self.clock)
        try:
            await puller.pull(cfg, full=full)
        finally:
            await asyncio.to_thread(puller.close)
        if self.settings.dnc_list_of(cfg.name) is not None:
            await self.check_lists(again=True)  # a version may have loaded

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
        )
        pusher.dnc_stale = stale
        pusher.dnc_lists = self.dnc_lists(name)
        pusher.consent = name in consent_sinks(self.settings)
        await pusher.run_until_idle(deadline)
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
        count = await self.store.requeue_expired(name, self.clock.time(), EXPIRED_UNDIALLED)
        if count:
            log.info("push.expired_again", sink=name, count=count, reason=EXPIRED_UNDIALLED)
        return count

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
        if not consent_sinks(self.settings) or not await self.leads("consent"):
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
        if not slot.working or not await self.leads(f"poll:{name}"):
            return PollResult(skipped=True)
        try:
            count = await slot.sink.poll_outcomes()
        except SinkConfigError as exc:
            self.sinks.stop(name, exc)
            return PollResult(error=str(exc), final=True)
        except VendorError as exc:
            self.health.failed(
                f"poll:{name}",
                str(exc),
                event="sink.poll.failed",
                sink=name,
                action="outcomes wait at the dialer; the poll runs again at its next time",
            )
            return PollResult(error=str(exc), retry_after=getattr(exc, "retry_after", None))
        self.health.recovered(f"poll:{name}", event="sink.poll.recovered", sink=name)
        if self.observer is not None:
            self.observer.outcomes_received(name, count)
        return PollResult(count=count)

    async def keepalive(self, name: str) -> None:
        """Keep one sink's vendor session alive (a no-op for session-less vendors)."""
        slot = self.sinks[name]
        if not slot.working:
            return
        try:
            await slot.sink.keepalive()
        except SinkConfigError as exc:
            self.sinks.stop(name, exc)
        except VendorError as exc:
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

        if not await self.leads(f"writeback:{cfg.name}"):
            return PassResult()
        if self._writebacks is None:
            from syncd.writeback.runner import WritebackRunner

            # One runner for the engine's life: each writeback stays open across passes.
            self._writebacks = WritebackRunner(
                self.settings, self.store, stop=self.stop, health=self.health
            )
        result = await self._writebacks.drain(cfg)
        if self.observer is not None:
            self.observer.writeback_pass(cfg.name, result.written, complete=result.error is None)
        return result

    async def prune(self) -> dict[str, int]:
        """Return how many old events, rejects and runs were deleted (`[retention]`)."""
        if not await self.leads("retention"):
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
        warnings = self.sinks.warnings()
        snapshots: dict[str, dict[str, Any]] = {}
        for slot in self.sinks:
            down = unreachable.get(slot.name)
            snapshots[slot.name] = {
                "state": "unreachable" if down is not None else slot.state.value,
                "reason": down.reason if down is not None else slot.reason,
                "since": down.since if down is not None else (slot.since or None),
                "held": self.sinks.held(slot.name),
                "next_try": down.next_try if down is not None else None,
                "poll_failed": (f := self.health.failure(f"poll:{slot.name}")) and f.reason,
                "warnings": warnings.get(slot.name, []),
                "queues": [asdict(q) for q in _queues(slot.sink)],
                "updated_at": self.clock.time(),
                "run_id": self.run_id,
            }
        return snapshots

    async def publish_health(self) -> None:
        """Write each sink's state where `syncd status` reads it (another process may ask)."""
        for name, snapshot in self.health_snapshot().items():
            await self.store.kv_set(HEALTH_SCOPE, name, json.dumps(snapshot))

    # -- the `--once` driver ---------------------------------------------------------

    async def run_once(
        self,
        *,
        full: bool = False,
        deadline_s: float | None = None,
        progress: Progress | None = None,
    ) -> RunSummary:
        """Return the summary of one pass: pull, push until idle, poll, write back."""
        summary = RunSummary(self.run_id)
        deadline = self.clock.time() + (deadline_s or self.settings.run.deadline_s)
        await self.store.release_inflight()  # we hold the store lock: any lease is orphaned
        await self.store.start_run(self.run_id, "once-full" if full else "once")
        for cfg in self.settings.sinks:
            held, _ = await self.store.held(cfg.name)
            summary.sink(cfg.name).carried = await self.store.pending_count(cfg.name) + held
        for name in self.settings.route_names():
            summary.route(name)
        async with self._leadership():
            await self._pass(summary, deadline, full=full, progress=progress)
        await self.publish_health()
        stopped = self.sinks.stopped()
        for name, counts in summary.sinks.items():
            counts.pending = await self.store.pending_count(name)
            counts.held, counts.released_at = await self.store.held(name)
            counts.stopped = counts.stopped or stopped.get(name)
        await self.store.finish_run(self.run_id, summary.to_dict())
        return summary

    async def _pass(
        self, summary: RunSummary, deadline: float, *, full: bool, progress: Progress | None
    ) -> None:
        with phase("pull"):
            for source in self.settings.sources:
                await self.pull(source, summary, full=full, progress=progress)
        with phase("consent"):
            await self.expire_consent(summary)  # its withdrawals go out in this pass's push
        await self._bounded("opening the sinks", self.open(), deadline, summary)
        async with self._keepalives():
            with phase("push"):
                # Agents first: a lead assigned to an agent provisioned in this run finds
                # the agent at the dialer.
                for entity in ("agents", "leads"):
                    pushes = asyncio.gather(
                        *(
                            self.push(slot.name, summary.sink(slot.name), deadline=deadline)
                            for slot in self.sinks.working()
                            if slot.cfg.entity == entity
                        )
                    )
                    if not await self._bounded("the push", pushes, deadline, summary):
                        await self.store.release_inflight()  # cut off mid-request: back to pending
                        break
            with phase("poll"):
                await self._bounded(
                    "the outcome poll", self._poll_all(summary, deadline), deadline, summary
                )
            with phase("writeback"):
                await self._bounded(
                    "the writeback", self._writeback_all(summary), deadline, summary
                )
        await self.prune()

    @contextlib.asynccontextmanager
    async def _leadership(self) -> Any:
        """Keep the leases of the jobs this pass leads while it runs; hand them over after."""
        if not self.settings.state.shared:
            yield
            return
        every = self.settings.state.leader_ttl_s / 3

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

    async def _bounded(
        self, what: str, work: Awaitable[Any], deadline: float, summary: RunSummary
    ) -> bool:
        """Run ``work`` until the run's deadline (plus a short grace); return False when cut off.

        The deadline bounds the whole pass, requests in flight included: a dialer that
        accepts a connection and never answers must not hold cron's next run off.
        """
        left = deadline - self.clock.time() + DEADLINE_GRACE_S
        task = asyncio.ensure_future(work)
        stopping = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait(
                {task, stopping}, timeout=max(left, 0.0), return_when="FIRST_COMPLETED"
            )
            if not task.done() and stopping.done():
                # SIGTERM: in-flight work gets the shutdown grace, then it is cut off too.
                grace = min(self.settings.run.shutdown_grace_s, max(left, 0.0))
                await asyncio.wait({task}, timeout=grace)
                cause = "a stop signal"
            else:
                cause = "the deadline"
        finally:
            stopping.cancel()
        if task.done():
            task.result()  # an error of the stage itself propagates as before
            return True
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        reason = f"{cause} came during {what}: requests in flight were cut off"
        summary.deadline = summary.deadline or reason
        log.error("run.cut_off", during=what, by=cause, action="leads stay queued for the next run")
        return False

    async def _poll_all(self, summary: RunSummary, deadline: float) -> None:
        for slot in self.sinks.working():
            if slot.cfg.entity == "agents":
                continue  # users have no outcomes
            result = await self._poll_until_done(slot.name, deadline)
            if result.error is not None:
                summary.poll_failed[slot.name] = result.error
            elif not result.skipped:
                summary.outcomes[slot.name] = result.count
        summary.warnings = self.sinks.warnings()

    async def _writeback_all(self, summary: RunSummary) -> None:
        for wb in self.settings.writebacks:
            if self.stop.is_set():
                break
            result = await self.writeback(wb)
            summary.written[wb.name] = result.written
            if result.error is not None:
                summary.writeback_failed[wb.name] = result.error

    async def _poll_until_done(self, name: str, deadline: float) -> PollResult:
        """Poll one sink, asking again after a failure while the run's deadline allows.

        A pass that pushed every lead but could not read outcomes has not done its
        job: like a push, a poll gets a few more tries before the run reports it.
        """
        result = await self.poll(name)
        for attempt in range(1, ONCE_POLL_TRIES):
            if result.error is None or result.final or self.stop.is_set():
                break
            wait = max(result.retry_after or 0.0, ONCE_POLL_WAIT_S * attempt)
            if self.clock.time() + wait >= deadline:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=wait)
                break
            result = await self.poll(name)
        return result

    @contextlib.asynccontextmanager
    async def _keepalives(self) -> Any:
        """Keep every session alive while the pass works (the daemon schedules these instead)."""
        tasks = [
            asyncio.create_task(
                self._keepalive_loop(slot.name, every), name=f"keepalive:{slot.name}"
            )
            for slot in self.sinks.working()
            if (every := self.keepalive_interval(slot.name)) is not None
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _keepalive_loop(self, name: str, every: float) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=every)
                return
            await self.keepalive(name)
            every = self.keepalive_interval(name) or every
