"""When the daemon runs each stage of the engine: one configuration's scheduled jobs.

The engine (:mod:`syncd.run.engine`) owns the sinks and decides what every error
means; this module only decides *when*: each source's pull, each sink's push
(woken as soon as the outbox gains rows), outcome poll and session keep-alive,
each writeback, a re-check of stopped sinks, and the consent re-check (leads whose
consent ran out in a dialer are withdrawn). A job never overlaps itself; one
that fails is logged once (and once again when it recovers) and simply runs again
at its next time, so one vendor's outage never stops the others. A reload drains
the running Runtime and starts a new one; the scheduler, store, metrics and
health server outlive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from apscheduler.jobstores.base import JobLookupError
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from syncd.config import Schedule, Settings, SourceConfig, WritebackConfig
from syncd.core.summary import RunSummary, SinkCounts
from syncd.daemon.crm_listen import CrmListeners
from syncd.daemon.metrics import Metrics
from syncd.daemon.webhook import Listeners
from syncd.errors import ConfigError, StoreError, SyncdError
from syncd.run.consent import CONSENT_RECHECK_S
from syncd.run.engine import Engine, new_run_id
from syncd.run.pull import build_source, choose_phone_backend
from syncd.sources.base import Chunk, Source
from syncd.sources.webhook import WebhookSourceConfig
from syncd.state.base import ChunkWrite, StateStore

if TYPE_CHECKING:
    pass

log = structlog.get_logger("syncd.daemon")

WAKE_LINGER_S = 0.005  # a webhook's wake-up waits this long: a burst of POSTs shares a batch
RECHECK_TICK_S = 5.0
HELD_BACK_S = 1.0
BACKLOG_SAMPLE_S = 60.0  # the backlog chart keeps each hour's largest sample

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


class Runtime:
    """Schedules one configuration's engine stages until it is drained."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        scheduler: Any,
        metrics: Metrics,
        writebacks_since: Mapping[str, float] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.scheduler = scheduler
        self.metrics = metrics
        self.draining = asyncio.Event()  # the engine's stop: no new batch is claimed once set
        self.engine = Engine(
            settings,
            store,
            stop=self.draining,
            observer=metrics,
            writebacks_since=writebacks_since,
        )
        self.job_ids: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: set[str] = set()
        self._rewake: set[str] = set()
        self._handed: dict[str, Source] = {}  # the webhook sources, by name
        self.listeners = Listeners(  # the webhook sources
            settings, self.ingest, self.backlog, metrics.webhook_answered
        )
        self.crm_listeners = CrmListeners(settings.sources, self.wake_pull)  # LISTEN/NOTIFY
        self._repull: set[str] = set()

    # -- sinks -----------------------------------------------------------------

    async def open(self) -> None:
        """Open every sink; one that cannot open is stopped, not fatal."""
        await self.store.listen(self.wake)  # a shared store: other replicas' pulls wake us
        await self.store.heartbeat()
        await self.engine.open()
        await self.engine.leadership.share_limits()
        # The phone library is loaded and checked now, not by the first lead (a POST
        # answered a few hundred milliseconds late)
        choose_phone_backend(self.settings)
        await self.listeners.start()  # once the sinks are open: a POST's leads go out at once
        await self.crm_listeners.start()

    async def recheck(self) -> None:
        """Open again every stopped sink whose wait is over; wake its push when it works."""
        for name in await self.engine.recheck():
            self.wake(name)
        await self.engine.publish_health()

    def problems(self, waiting: Mapping[str, int] | None = None) -> list[str]:
        """Return why leads cannot flow now (the store, stopped or unreachable sinks), for
        /readyz."""
        store = self.engine.health.failure("store")
        found = [f"state store: {store.reason}"] if store is not None else []
        return found + self.engine.sinks.problems(waiting)

    def warnings(self) -> list[str]:
        """Return what needs fixing although leads flow, one line per sink and warning."""
        said = self.engine.sinks.warnings().items()
        return (
            [f"{name}: {w}" for name, ws in said for w in ws]
            + self.engine.list_warnings()
            + self.crm_listeners.warnings()
        )

    def failing(self, waiting: Mapping[str, int] | None = None) -> list[str]:
        """Return one line per sink that is stopped, unavailable or unreachable."""
        sinks = self.engine.sinks
        lines = (sinks.describe(slot.name, (waiting or {}).get(slot.name)) for slot in sinks)
        return [line for line in lines if line is not None]

    def causes(self) -> dict[str, str]:
        """Return why each sink delivers or not now (``working``, ``unreachable``, …)."""
        return {name: str(cause) for name, cause in self.engine.sinks.causes().items()}

    # -- scheduling ------------------------------------------------------------------

    def schedule(self) -> None:
        """Add this configuration's jobs to the scheduler."""
        s = self.settings
        for i, source in enumerate(s.sources):
            if not source.scheduled:
                continue  # a webhook: its rows come with each POST (see ingest)
            self._add(
                f"pull:{source.name}",
                trigger_for(source.schedule, f"sources[{i}].schedule"),
                _bind(self._pull, source),
                now=not source.schedule.cron,
            )
        for i, cfg in enumerate(s.sinks):
            name = cfg.name
            tick = IntervalTrigger(seconds=s.run.push_tick_s)
            self._add(f"push:{name}", tick, _bind(self._push, name))
            if cfg.entity == "agents":
                continue  # users have no outcomes; their requests share the dialer's session
            self._add(
                f"poll:{name}",
                trigger_for(cfg.poll, f"sinks[{i}].poll"),
                _bind(self._poll, name),
                now=not cfg.poll.cron,
            )
            every = self.engine.keepalive_interval(name)
            if every is not None:
                self._add(
                    f"keepalive:{name}",
                    IntervalTrigger(seconds=every),
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
        self._add("consent", IntervalTrigger(seconds=CONSENT_RECHECK_S), self._expire_consent)
        if s.state.shared:  # renewed well before they run out: a live leader keeps its jobs
            every = s.state.leader_ttl_s / 3
            self._add(
                "leadership",
                IntervalTrigger(seconds=every),
                self.engine.leadership.renew,
                now=False,
            )
        self._add("retention", IntervalTrigger(seconds=s.retention.every_s), self._prune)
        self._add("backlog", IntervalTrigger(seconds=BACKLOG_SAMPLE_S), self.sample_backlog)

    async def sample_backlog(self) -> None:
        """Keep each sink's outbox size for the status page's backlog chart: from a job of
        its own, so a stopped dialer (no push runs) still shows its backlog growing."""
        await self.store.record_backlog(
            {cfg.name: await self.store.pending_count(cfg.name) for cfg in self.settings.sinks}
        )

    async def _prune(self) -> None:
        await self.engine.prune()

    async def _expire_consent(self) -> None:
        """Withdraw the leads whose consent ran out in a dialer; wake those sinks' pushes."""
        summary = RunSummary(new_run_id())
        if await self.engine.expire_consent(summary):
            for sink in summary.sinks:
                self.wake(sink)

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
        health = self.engine.health
        try:
            await job()
        except StoreError as exc:  # a full disk, say: every job fails alike; readiness says it
            self.metrics.job_failed(job_id)
            health.failed("store", str(exc), event="store.failing", job=job_id)
        except SyncdError as exc:
            self.metrics.job_failed(job_id)
            health.failed(
                f"job:{job_id}",
                str(exc),
                event="job.failed",
                job=job_id,
                action="it runs again at its next scheduled time",
            )
        except Exception as exc:  # a bug: keep the daemon up, show the traceback once
            self.metrics.job_failed(job_id)
            health.failed(
                f"job:{job_id}",
                f"{type(exc).__name__}: {exc}",
                event="job.failed",
                exc_info=True,
                job=job_id,
                action="it runs again at its next scheduled time",
            )
        else:
            health.recovered(f"job:{job_id}", event="job.recovered", job=job_id)
            if job_id.startswith(("pull:", "push:")):
                health.recovered("store", event="store.recovered", job=job_id)

    def wake(self, sink: str, linger_s: float = 0.0) -> None:
        """Run the sink's push job now, or after ``linger_s`` (a burst's leads gather into
        one batch meanwhile), or once more if it is running."""
        job_id = f"push:{sink}"
        if self.draining.is_set():
            return
        if job_id in self._running:
            self._rewake.add(sink)
            self.engine.nudge(sink)  # a worker of the pass left idle sends them now
            return
        when = datetime.now(UTC) + timedelta(seconds=linger_s)
        job = self.scheduler.get_job(job_id)
        if job is None or (job.next_run_time is not None and job.next_run_time <= when):
            return  # gone (drained), or due sooner anyway: a wake never puts a push off
        with contextlib.suppress(JobLookupError):
            job.modify(next_run_time=when)

    def wake_pull(self, source: str) -> None:
        """Run the source's pull now (its CRM notified a change), or once more after the
        one running: notifications during a pull fold into one pull after it."""
        job_id = f"pull:{source}"
        if self.draining.is_set():
            return
        if job_id in self._running:
            self._repull.add(source)
            return
        job = self.scheduler.get_job(job_id)
        if job is not None:
            with contextlib.suppress(JobLookupError):
                job.modify(next_run_time=datetime.now(UTC))

    # -- webhook sources ---------------------------------------------------------------

    async def ingest(
        self, cfg: WebhookSourceConfig, chunks: list[Chunk]
    ) -> list[ChunkWrite | Exception]:
        """Commit POSTs' leads (the pull's path: mapping, reconcile, the gate, one
        transaction for them all: one run) and wake the pushes of the sinks whose outbox
        grew."""
        source = self._handed.get(cfg.name)
        if source is None:  # built once: the registry's lookup costs more than a commit
            routes = [r for r in self.settings.routes if r.source == cfg.name]
            source = self._handed[cfg.name] = build_source(cfg, routes, self.store)
        summary = RunSummary(new_run_id())
        meter = self.metrics.pull_meter(cfg.name, summary)
        writes = await self.engine.ingest(source, chunks, summary)
        self.metrics.webhook_committed(cfg.name)
        grew = {s for w in writes if isinstance(w, ChunkWrite) for s, ls in w.leads.items() if ls}
        for sink in meter.update() | grew:
            self.wake(sink, WAKE_LINGER_S)
        for route, counts in summary.routes.items():
            for code, n in counts.blocked.items():
                self.metrics.gate_blocked(route.rpartition("->")[2], code, n)
        return writes

    async def backlog(self, cfg: WebhookSourceConfig) -> int:
        """Return the most leads waiting in the outbox of a sink this source feeds."""
        sinks = {r.sink for r in self.settings.routes if r.source == cfg.name}
        return max([await self.store.pending_count(sink) for sink in sinks], default=0)

    # -- jobs ----------------------------------------------------------------------

    async def _pull(self, cfg: SourceConfig) -> None:
        while not self.draining.is_set():
            self._repull.discard(cfg.name)
            await self._pull_once(cfg)
            if cfg.name not in self._repull:  # no await since: a notification cannot slip
                return

    async def _pull_once(self, cfg: SourceConfig) -> None:
        summary = RunSummary(new_run_id())
        started = self.engine.clock.time()
        meter = self.metrics.pull_meter(cfg.name, summary)

        def committed(_source: Source, _rows: int) -> None:
            for sink in meter.update():
                self.wake(sink)

        try:
            await self.engine.pull(cfg, summary, progress=committed)
        finally:
            for sink in meter.update():
                self.wake(sink)
        for route, counts in summary.routes.items():
            for code, n in counts.blocked.items():
                self.metrics.gate_blocked(route.rpartition("->")[2], code, n)
        totals = summary.totals()
        if totals.get("read") or summary.files_failed:
            # The run history (status page, `syncd status`): a pass that read nothing
            # every few seconds would bury the ones that did.
            await self.store.record_run(
                summary.run_id, f"pull {cfg.name}", started, summary.to_dict()
            )
            await self.sample_backlog()  # near its peak: the pushes have just begun
            log.info(
                "source.pulled",
                source=cfg.name,
                read=summary.rows_read(),  # rows, each once (totals count per dialer)
                enqueued=sum(c.enqueued for c in summary.routes.values()),
                rejected=totals.get("rejected", 0),
                files_failed=len(summary.files_failed),
            )

    async def _push(self, name: str) -> None:
        slot = self.engine.sinks[name]
        while not self.draining.is_set():
            self._rewake.discard(name)
            await self.engine.push(name, SinkCounts(), deadline=self.engine.clock.time())
            slot = self.engine.sinks[name]
            if not slot.working:
                return
            due = await self.store.next_due(name)
            _, released_at = await self.store.held(name)
            if released_at is not None:  # a held lead's window opens: push then
                due = released_at if due is None else min(due, released_at)
            if due is not None and self.engine.fed_up.get(name):
                # New leads wait for the dialer to reach its queue: the next tick looks
                # again (measuring the feed every second would only repeat the answer).
                due = max(due, time.time() + self.settings.run.push_tick_s)
            # No await between this check and the return: a wake cannot slip through.
            if name not in self._rewake:
                self._push_again_at(name, due)
                return

    def _push_again_at(self, name: str, due: float | None) -> None:
        # Leads waiting for a retry: run again when the first is due, not a tick later.
        job = self.scheduler.get_job(f"push:{name}")
        if due is None or job is None or self.draining.is_set():
            return
        # `due` is on the engine's clock (a shared store's: the database's), the
        # scheduler's triggers on this host's: wait the difference.
        wait = due - self.engine.clock.time()
        # Due already, yet the pusher went idle: held back (open breaker, Retry-After).
        # Look again shortly instead of spinning.
        when = datetime.fromtimestamp(time.time() + (wait if wait > 0 else HELD_BACK_S), UTC)
        if job.next_run_time is None or when < job.next_run_time:
            job.modify(next_run_time=when)

    async def _poll(self, name: str) -> None:
        result = await self.engine.poll(name)
        if result.error is not None:
            self.metrics.poll_failed(name)

    async def _keepalive(self, name: str) -> None:
        await self.engine.keepalive(name)

    async def _writeback(self, cfg: WritebackConfig) -> None:
        await self.engine.writeback(cfg)

    # -- shutdown --------------------------------------------------------------------

    async def drain(self, grace_s: float) -> dict[str, str]:
        """Stop new work, let running jobs finish within ``grace_s``, cancel the rest; publish
        what the writebacks wrote. Return, by writeback, why it could not publish."""
        await self.listeners.stop()  # first: a POST answered 202 is committed before the store goes
        await self.crm_listeners.stop()
        self.draining.set()
        for job_id in self.job_ids:
            with contextlib.suppress(JobLookupError):
                self.scheduler.remove_job(job_id)
        ends = time.monotonic() + grace_s
        running = {t for t in self._tasks if not t.done()}
        late: set[asyncio.Task[None]] = set()
        if running:
            log.info("daemon.drain.waiting", jobs=sorted(t.get_name() for t in running))
        # The writebacks first: their files are published before a slow push's wait, so
        # a supervisor that kills at its own timeout finds them published.
        writing = {t for t in running if t.get_name().startswith("writeback:")}
        if writing:
            _, late = await asyncio.wait(writing, timeout=grace_s)
        unpublished = await self.engine.finish_writebacks() if not late else {}
        if running - writing:
            _, rest = await asyncio.wait(running - writing, timeout=max(ends - time.monotonic(), 0))
            late |= rest
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
        # The CRM reads only published files: a stop must not leave rows in a part file
        # until the next start (plus rotate_s). Published above unless a writeback was
        # cut off: then after it (its rows so far).
        if writing and writing & late:
            unpublished = await self.engine.finish_writebacks()
        try:
            await self.engine.leadership.resign()  # the other replicas take over without waiting
        except SyncdError as exc:  # they take over once the leases run out
            log.warning("leader.resign_failed", reason=str(exc))
        await self.engine.close()
        return unpublished


def _bind(fn: Callable[[Any], Awaitable[None]], arg: Any) -> Job:
    async def job() -> None:
        await fn(arg)

    return job
