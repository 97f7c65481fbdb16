"""One configuration at work in the daemon: its sinks and the scheduled jobs that drive them.

Jobs: each source's pull, each sink's push (woken as soon as the outbox gains
rows), outcome poll and session keep-alive, each writeback, and a re-check of
stopped sinks. A job never overlaps itself; one that fails is logged once (and
once again when it recovers) and simply runs again at its next time, so one
vendor's outage never stops the others. A reload drains the running Runtime and
starts a new one; the scheduler, store, metrics and health server outlive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from apscheduler.jobstores.base import JobLookupError
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from syncd.config import Schedule, Settings, SinkConfig, SourceConfig, WritebackConfig
from syncd.core.summary import RunSummary, SinkCounts
from syncd.daemon.metrics import Metrics
from syncd.errors import ConfigError, SinkConfigError, SyncdError, VendorError
from syncd.net.http import guard_for
from syncd.run.engine import build_sink, new_run_id
from syncd.run.pull import Puller
from syncd.run.push import Pusher
from syncd.sinks.base import Sink
from syncd.sources.base import Source
from syncd.state.base import StateStore

if TYPE_CHECKING:
    from syncd.writeback.runner import WritebackRunner

log = structlog.get_logger("syncd.daemon")

PUSH_TICK_S = 10.0  # push jobs also run this often: `syncd retry` may queue rows from outside
KEEPALIVE_DEFAULT_S = 60.0
TRANSIENT_RECHECK_S = 30.0  # a sink that could not connect is tried again sooner than a bad config
RECHECK_TICK_S = 5.0
HELD_BACK_S = 1.0
SESSION_BAD = ("expired", "failed")  # SinkHealth.session values that mean "cannot work now"

Job = Callable[[], Awaitable[None]]


def trigger_for(schedule: Schedule, what: str) -> CronTrigger | IntervalTrigger:
    """Return the APScheduler trigger of a schedule; raise ConfigError for a bad cron."""
    if schedule.cron:
        try:
            return CronTrigger.from_crontab(schedule.cron)
        except ValueError as exc:
            raise ConfigError(
                f"{what}.cron: {schedule.cron!r} is not a cron expression ({exc})"
            ) from None
    return IntervalTrigger(seconds=schedule.interval_s)


@dataclass
class SinkSlot:
    """A configured sink, its live object, and why it is stopped (None while it works)."""

    cfg: SinkConfig
    sink: Sink
    stopped: str | None = None
    config_error: bool = False
    since: float = 0.0

    def stop(self, reason: str, *, config_error: bool) -> None:
        self.stopped, self.config_error, self.since = reason, config_error, time.time()


class Runtime:
    """Owns one configuration's sinks and jobs until it is drained."""

    def __init__(
        self, settings: Settings, store: StateStore, scheduler: Any, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.store = store
        self.scheduler = scheduler
        self.metrics = metrics
        self.draining = asyncio.Event()  # the pushers' stop: no new batch is claimed once set
        self.slots: dict[str, SinkSlot] = {}
        self.job_ids: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: set[str] = set()
        self._rewake: set[str] = set()
        self._failing: dict[str, str] = {}
        self._writebacks: WritebackRunner | None = None

    # -- sinks -----------------------------------------------------------------

    async def open(self) -> None:
        """Build and open every sink; one that cannot open is stopped, not fatal."""
        for cfg in self.settings.sinks:
            self.slots[cfg.name] = await self._open_sink(cfg)

    async def _open_sink(self, cfg: SinkConfig, previous: SinkSlot | None = None) -> SinkSlot:
        slot = SinkSlot(cfg, build_sink(cfg, self.settings, self.store))
        try:
            await slot.sink.open()
        except SinkConfigError as exc:
            slot.stop(str(exc), config_error=True)
        except VendorError as exc:
            slot.stop(str(exc), config_error=False)
        except Exception as exc:  # a sink bug: keep the daemon and the other sinks going
            log.error("sink.open.crashed", sink=cfg.name, exc_info=True)
            slot.stop(f"internal error in the {cfg.kind} sink: {exc!r}", config_error=False)
        if slot.stopped is not None and (previous is None or previous.stopped != slot.stopped):
            log.error(
                "sink.stopped" if slot.config_error else "sink.open.failed",
                sink=cfg.name,
                reason=slot.stopped,
                action=(
                    "fix the sink's configuration and reload; its leads stay queued"
                    if slot.config_error
                    else "syncd tries again shortly; its leads stay queued"
                ),
            )
        return slot

    async def recheck(self) -> None:
        """Open again every stopped sink whose wait is over; wake its push when it works."""
        now = time.time()
        every = self.settings.run.sink_recheck_s
        for name, slot in list(self.slots.items()):
            if slot.stopped is None or self.draining.is_set():
                continue
            wait = every if slot.config_error else min(TRANSIENT_RECHECK_S, every)
            if now - slot.since < wait:
                continue
            await _close_sink(name, slot.sink)
            fresh = await self._open_sink(slot.cfg, previous=slot)
            self.slots[name] = fresh
            if fresh.stopped is None:
                log.info("sink.reopened", sink=name, was=slot.stopped)
                self.wake(name)

    def problems(self) -> list[str]:
        """Return why sinks cannot work now (stopped, session not valid), for /readyz."""
        reasons = []
        for name, slot in self.slots.items():
            if slot.stopped is not None:
                what = "stopped by a configuration error" if slot.config_error else "unavailable"
                reasons.append(f"sink {name} {what}: {slot.stopped}")
                continue
            try:
                health = slot.sink.health()
            except Exception as exc:  # a broken health() must not break the probe
                reasons.append(f"sink {name}: health check failed: {exc}")
                continue
            if health.stopped_reason:
                reasons.append(f"sink {name} stopped: {health.stopped_reason}")
            elif not health.ok or health.session in SESSION_BAD:
                reasons.append(f"sink {name}: session {health.session}")
        return reasons

    def failing(self) -> list[str]:
        """Return the sinks that are stopped or whose circuit breaker is not closed."""
        return [
            name
            for name, slot in self.slots.items()
            if slot.stopped is not None or guard_for(slot.sink).breaker.state_value != 0
        ]

    # -- scheduling ------------------------------------------------------------------

    def schedule(self) -> None:
        """Add this configuration's jobs to the scheduler."""
        s = self.settings
        for i, source in enumerate(s.sources):
            self._add(
                f"pull:{source.name}",
                trigger_for(source.schedule, f"sources[{i}].schedule"),
                _bind(self._pull, source),
                now=not source.schedule.cron,
            )
        for i, cfg in enumerate(s.sinks):
            name = cfg.name
            self._add(f"push:{name}", IntervalTrigger(seconds=PUSH_TICK_S), _bind(self._push, name))
            self._add(
                f"poll:{name}",
                trigger_for(cfg.poll, f"sinks[{i}].poll"),
                _bind(self._poll, name),
                now=not cfg.poll.cron,
            )
            every = getattr(self.slots[name].sink, "keepalive_interval_s", KEEPALIVE_DEFAULT_S)
            if isinstance(every, int | float) and every > 0:
                self._add(
                    f"keepalive:{name}",
                    IntervalTrigger(seconds=float(every)),
                    _bind(self._keepalive, name),
                    now=False,
                )
        for i, wb in enumerate(s.writebacks):
            self._add(
                f"writeback:{wb.name}",
                trigger_for(wb.schedule, f"writebacks[{i}].schedule"),
                _bind(self._writeback, wb),
                now=not wb.schedule.cron,
            )
        tick = min(RECHECK_TICK_S, s.run.sink_recheck_s)
        self._add("recheck", IntervalTrigger(seconds=tick), self.recheck, now=False)

    def _add(self, job_id: str, trigger: Any, job: Job, *, now: bool = True) -> None:
        extra: dict[str, Any] = {"next_run_time": datetime.now(UTC)} if now else {}
        self.scheduler.add_job(
            self._run_job,
            trigger,
            args=[job_id, job],
            id=job_id,
            name=job_id,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            replace_existing=True,
            **extra,
        )
        self.job_ids.append(job_id)

    async def _run_job(self, job_id: str, job: Job) -> None:
        # The work runs in a task of our own: draining waits for it or cancels it,
        # without the scheduler reporting a cancelled job as a crash.
        if self.draining.is_set():
            return
        task = asyncio.create_task(self._guarded(job_id, job), name=job_id)
        self._tasks.add(task)
        self._running.add(job_id)
        try:
            await asyncio.wait([task])
        finally:
            self._tasks.discard(task)
            self._running.discard(job_id)

    async def _guarded(self, job_id: str, job: Job) -> None:
        try:
            await job()
        except SyncdError as exc:
            self._failed(job_id, str(exc))
        except Exception as exc:  # a bug: keep the daemon up, show the traceback once
            self._failed(job_id, f"{type(exc).__name__}: {exc}", exc_info=True)
        else:
            if self._failing.pop(job_id, None) is not None:
                log.info("job.recovered", job=job_id)

    def _failed(self, job_id: str, reason: str, *, exc_info: bool = False) -> None:
        self.metrics.job_failed(job_id)
        if self._failing.get(job_id) == reason:
            log.debug("job.failed", job=job_id, reason=reason, repeated=True)
            return
        self._failing[job_id] = reason
        log.error(
            "job.failed",
            job=job_id,
            reason=reason,
            exc_info=exc_info,
            action="it runs again at its next scheduled time",
        )

    def wake(self, sink: str) -> None:
        """Run the sink's push job now (or once more, if it is running)."""
        job_id = f"push:{sink}"
        if self.draining.is_set():
            return
        if job_id in self._running:
            self._rewake.add(sink)
            return
        with contextlib.suppress(JobLookupError):
            self.scheduler.modify_job(job_id, next_run_time=datetime.now(UTC))

    # -- jobs ----------------------------------------------------------------------

    async def _pull(self, cfg: SourceConfig) -> None:
        summary = RunSummary(new_run_id())
        meter = self.metrics.pull_meter(cfg.name, summary)

        def committed(_source: Source, _rows: int) -> None:
            for sink in meter.update():
                self.wake(sink)

        puller = Puller(self.settings, self.store, summary, progress=committed)
        try:
            await puller.pull(cfg)
        finally:
            for sink in meter.update():
                self.wake(sink)
            await asyncio.to_thread(puller.close)
        totals = summary.totals()
        if totals.get("read") or summary.files_failed:
            log.info(
                "source.pulled",
                source=cfg.name,
                read=totals.get("read", 0),
                enqueued=sum(c.enqueued for c in summary.routes.values()),
                rejected=totals.get("rejected", 0),
                files_failed=len(summary.files_failed),
            )

    async def _push(self, name: str) -> None:
        slot = self.slots[name]
        while slot.stopped is None and not self.draining.is_set():
            self._rewake.discard(name)
            pusher = Pusher(
                slot.sink, self.store, SinkCounts(), stop=self.draining, observer=self.metrics
            )
            await pusher.run_until_idle(time.time())
            if pusher.stopped_reason is not None:  # the pusher logged sink.stopped
                slot.stop(pusher.stopped_reason, config_error=True)
                return
            due = await self.store.next_due(name)
            # No await between this check and the return: a wake cannot slip through.
            if name not in self._rewake:
                self._push_again_at(name, due)
                return

    def _push_again_at(self, name: str, due: float | None) -> None:
        # Leads waiting for a retry: run again when the first is due, not a tick later.
        job = self.scheduler.get_job(f"push:{name}")
        if due is None or job is None or self.draining.is_set():
            return
        now = time.time()
        # Due already, yet the pusher went idle: held back (open breaker, Retry-After).
        # Look again shortly instead of spinning.
        when = datetime.fromtimestamp(due if due > now else now + HELD_BACK_S, UTC)
        if job.next_run_time is None or when < job.next_run_time:
            job.modify(next_run_time=when)

    async def _poll(self, name: str) -> None:
        slot = self.slots[name]
        if slot.stopped is not None:
            return
        try:
            count = await slot.sink.poll_outcomes()
        except SinkConfigError as exc:
            self._stop(slot, exc)
            return
        self.metrics.outcomes_received(name, count)

    async def _keepalive(self, name: str) -> None:
        slot = self.slots[name]
        if slot.stopped is not None:
            return
        try:
            await slot.sink.keepalive()
        except SinkConfigError as exc:
            self._stop(slot, exc)

    def _stop(self, slot: SinkSlot, exc: SinkConfigError) -> None:
        slot.stop(str(exc), config_error=True)
        log.error(
            "sink.stopped",
            sink=slot.cfg.name,
            reason=str(exc),
            action="fix the sink's configuration and reload; its leads stay queued",
        )

    async def _writeback(self, cfg: WritebackConfig) -> None:
        if self._writebacks is None:
            from syncd.writeback.runner import WritebackRunner

            # One runner for the Runtime's life: each writeback stays open across passes.
            self._writebacks = WritebackRunner(self.settings, self.store, stop=self.draining)
        result = await self._writebacks.drain(cfg)
        self.metrics.writeback_pass(cfg.name, result.written, complete=result.error is None)

    # -- shutdown --------------------------------------------------------------------

    async def drain(self, grace_s: float) -> None:
        """Stop new work, let running jobs finish within ``grace_s``, cancel the rest."""
        self.draining.set()
        for job_id in self.job_ids:
            with contextlib.suppress(JobLookupError):
                self.scheduler.remove_job(job_id)
        running = {t for t in self._tasks if not t.done()}
        late: set[asyncio.Task[None]] = set()
        if running:
            log.info("daemon.drain.waiting", jobs=sorted(t.get_name() for t in running))
            _, late = await asyncio.wait(running, timeout=grace_s)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=10)
            log.warning(
                "daemon.drain.cancelled",
                jobs=sorted(t.get_name() for t in late),
                grace_s=grace_s,
                action="their leads return to the outbox",
            )
        try:
            released = await self.store.release_inflight()
        except SyncdError as exc:  # the next start releases them (it holds the lock)
            log.error("outbox.leases.release_failed", reason=str(exc))
        else:
            if released:
                log.info("outbox.leases.released", leads=released)
        for name, slot in self.slots.items():
            await _close_sink(name, slot.sink)
        if self._writebacks is not None:
            await self._writebacks.close()


def _bind(fn: Callable[[Any], Awaitable[None]], arg: Any) -> Job:
    async def job() -> None:
        await fn(arg)

    return job


async def _close_sink(name: str, sink: Sink) -> None:
    try:
        await sink.close()
    except Exception as exc:  # a failing logout must not block the others
        log.warning("sink.close.failed", sink=name, reason=str(exc))
