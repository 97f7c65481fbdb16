"""`syncd run`: the long-running daemon.

It holds the state store's lock (a `run --once` from cron meanwhile exits 75),
runs every pull, push, poll, keep-alive and writeback on its schedule
(:mod:`syncd.daemon.scheduler`), serves /healthz, /readyz and /metrics
(:mod:`syncd.daemon.probes`), and speaks systemd's notify protocol (:mod:`syncd.daemon.sdnotify`).

Signals: SIGTERM or SIGINT stops it (in-flight batches finish within
``run.shutdown_grace_s``, leased leads return to the outbox, writeback files are
published, sessions log out, exit 0, or 1 if a file could not be published); a
second one exits at once. SIGHUP re-reads the configuration; an
invalid one is refused and the running one carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any

import structlog
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from syncd import __version__, logs
from syncd.config import Settings, load_settings
from syncd.core.reasons import shown_key
from syncd.daemon.connections import http_ports, install_accept_failures
from syncd.daemon.metrics import Metrics
from syncd.daemon.probes import (
    HealthServer,
    allowed_hosts,
    create_app,
    port_limits,
    status_access,
)
from syncd.daemon.scheduler import Runtime
from syncd.daemon.sdnotify import Notifier
from syncd.daemon.snapshot import Snapshot
from syncd.errors import ConfigError
from syncd.run.engine import new_run_id
from syncd.run.lock import store_lock
from syncd.run.numbers_left import SHOWN, counts, more_line, standing_all, warning_line
from syncd.state import StateStore, open_store

log = structlog.get_logger("syncd.daemon")

STATUS_S = 10.0  # how often systemd's STATUS= line is refreshed
STORE_PROBE_S = 5.0


def run_daemon(settings: Settings, *, config_path: str | None = None) -> int:
    """Return the daemon's exit code: 0 after a clean stop (SIGTERM, SIGINT)."""
    configure_logging(settings)
    with store_lock(settings.state):
        return asyncio.run(Daemon(settings, config_path).run())


def configure_logging(settings: Settings) -> None:
    logs.configure_from(settings.log)
    # "skipped: maximum number of running instances" is the point of max_instances=1;
    # our own job.* events report what matters.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)


@dataclass
class StoreView:
    """What /readyz needs of the store: leads waiting per sink, why the store could not
    say, and the withdrawals a dialer keeps refusing."""

    waiting: dict[str, int] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    withdrawals_failing: list[dict[str, Any]] = field(default_factory=list)
    numbers_left: list[dict[str, Any]] = field(default_factory=list)  # old numbers dialable
    numbers_left_total: dict[str, int] = field(default_factory=dict)  # per sink, all of them
    writebacks_failing: list[str] = field(default_factory=list)


class DeliveredToday:
    """Counts leads delivered since local midnight: read from the store once a day, then live."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._day: date | None = None
        self._at_midnight = 0
        self._total_then = 0

    async def value(self, store: StateStore) -> int:
        today = date.today()
        if self._day != today:
            midnight = datetime.combine(today, dtime.min).timestamp()
            self._at_midnight = await store.delivered_since(midnight)
            self._total_then = self.metrics.delivered_total
            self._day = today
        return self._at_midnight + self.metrics.delivered_total - self._total_then


def configured_since(
    before: Mapping[str, float], names: Iterable[str], now: float
) -> dict[str, float]:
    """Return since when each of ``names`` has been configured: its time in ``before``
    (kept across a reload), else ``now`` (new with this configuration)."""
    return {name: before.get(name, now) for name in names}


class Daemon:
    """Owns the store, the scheduler, the health server and the running configuration."""

    def __init__(
        self, settings: Settings, config_path: str | None = None, notifier: Notifier | None = None
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.notifier = notifier or Notifier()
        self.metrics = Metrics()
        self.delivered_today = DeliveredToday(self.metrics)
        self.run_id = new_run_id()
        self.phase = "starting"
        self.stop = asyncio.Event()
        self._attention = asyncio.Event()
        self._reload_wanted = False
        self.store: StateStore | None = None
        self.scheduler: Any = None
        self.runtime: Runtime | None = None
        self.health: HealthServer | None = None
        self._background: list[asyncio.Task[None]] = []
        self._run_started = False
        # By writeback: since when this process runs it. A reload keeps the time of those
        # it keeps ("nothing written since syncd started" means the process's start);
        # one it adds counts from the reload.
        self._writebacks_since: dict[str, float] = {}
        self.unpublished: dict[str, str] = {}  # by writeback: why the stop left a file unpublished
        # What the HTTP port serves is read from the store at most once per snapshot_s,
        # however many ask (docs/daemon.md, "Health endpoints").
        period = settings.health.snapshot_s
        self._store_view = Snapshot(self._read_store_view, period)
        self._page = Snapshot(self._render_page, period)
        self._store_gauges = Snapshot(self._read_store_gauges, period)

    # -- lifecycle -------------------------------------------------------------------

    async def run(self) -> int:
        """Return 0 once stopped by a signal (1: a writeback could not publish its file);
        raise SyncdError if it cannot start."""
        self._install_signal_handlers()
        install_accept_failures(asyncio.get_running_loop())  # out of files: said, not spewed
        if self.notifier.watchdog_s:
            self._background.append(asyncio.create_task(self._watchdog(), name="watchdog"))
        try:
            if not await self._start_unless_stopped():
                return 0
            while True:
                await self._attention.wait()
                self._attention.clear()
                if self.stop.is_set():
                    break
                if self._reload_wanted:
                    self._reload_wanted = False
                    await self._reload()
        finally:
            await self._shutdown()
        return 1 if self.unpublished else 0

    async def _start_unless_stopped(self) -> bool:
        """Return True once started; False if a stop signal came first (logins can be slow)."""
        starting = asyncio.create_task(self._start(), name="start")
        stopped = asyncio.create_task(self.stop.wait(), name="stop-wait")
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return False
        starting.result()  # a failed start raises here
        return True

    async def _start(self) -> None:
        log.info("daemon.starting", pid=os.getpid(), state=self.settings.state.shown())
        self.store = await open_store(self.settings.state)
        released = await self.store.release_inflight()  # we hold the lock: leases are orphans
        if released:
            log.info("outbox.leases.released", leads=released)
        if self.settings.health.enabled:
            app = create_app(
                self.readiness,
                self.render_metrics,
                self.warnings,
                page=self.status_page,
                access=status_access(self.settings.health),
                hosts=allowed_hosts(self.settings.health),
                limits=port_limits(self.settings.health),
            )
            health = self.settings.health
            self.health = HealthServer(
                app,
                health.listen,
                max_connections=health.max_connections,
                head_timeout_s=health.head_timeout_s,
                ports=http_ports(self.settings),
            )
            await self.health.start()
        self.scheduler = AsyncIOScheduler(
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
        )
        self.scheduler.add_listener(self._on_job_event, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        self.scheduler.start()
        await self._start_runtime(self.settings)
        await self.store.start_run(self.run_id, "daemon")
        self._run_started = True
        self.phase = "running"
        status = await self.status_line()
        self.notifier.ready(status)
        if self.notifier.enabled:
            self._background.append(asyncio.create_task(self._status_loop(), name="status"))
        log.info("daemon.ready", run_id=self.run_id, status=status)

    async def _start_runtime(self, settings: Settings) -> None:
        assert self.store is not None
        self._writebacks_since = configured_since(
            self._writebacks_since, [w.name for w in settings.writebacks], time.time()
        )
        runtime = Runtime(
            settings, self.store, self.scheduler, self.metrics, dict(self._writebacks_since)
        )
        self.metrics.declare(
            [s.name for s in settings.sources],
            [(r.source, r.sink) for r in settings.routes],
            [s.name for s in settings.sinks],
            [w.name for w in settings.writebacks],
        )
        self.runtime = runtime  # set first: a stop during the logins still closes what opened
        await runtime.open()
        runtime.schedule()

    async def _shutdown(self) -> None:
        self.phase = "stopping"
        grace = self.settings.run.shutdown_grace_s
        self.notifier.stopping("stopping: finishing in-flight batches")
        log.info("daemon.stopping", grace_s=grace)
        if self.runtime is not None:
            try:
                self.unpublished = await self.runtime.drain(grace)
            except Exception as exc:  # still close the store and the server below
                log.error("daemon.drain.failed", reason=str(exc), exc_info=True)
            self.runtime = None
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.health is not None:
            await self.health.stop()
        if self.store is not None:
            if self._run_started:
                await self.store.finish_run(
                    self.run_id, {"mode": "daemon", "delivered": self.metrics.delivered_total}
                )
            await self.store.close()
        log.info(
            "daemon.stopped",
            delivered=self.metrics.delivered_total,
            unpublished=sorted(self.unpublished),
        )
        self.notifier.close()

    # -- signals -------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)

    def _on_stop_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.stop.is_set():
            log.warning(
                "daemon.stop.forced",
                signal=name,
                action="leads in flight return to the outbox at the next start",
            )
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + signum)
        log.info("daemon.stop.requested", signal=name)
        self.stop.set()
        self._attention.set()

    def _on_reload_signal(self) -> None:
        log.info("config.reload.requested", signal="SIGHUP")
        self._reload_wanted = True
        self._attention.set()

    # -- reload --------------------------------------------------------------------------

    async def _reload(self) -> None:
        try:
            new = await asyncio.to_thread(load_settings, self.config_path)
        except ConfigError as exc:
            log.error(
                "config.reload.refused",
                problems=exc.problems,
                action="fix the configuration and send SIGHUP again; the old one keeps running",
            )
            return
        if (Path(new.state.path), new.state.shown()) != (
            Path(self.settings.state.path),
            self.settings.state.shown(),
        ):
            log.error(
                "config.reload.refused",
                problems=["state: the store cannot change while syncd runs (restart it)"],
                action="restart syncd to move the state store",
            )
            return
        if new.health != self.settings.health:
            log.warning("config.reload.partial", setting="health", action="restart to apply it")
        self.notifier.reloading()
        self.phase = "reloading"
        assert self.runtime is not None
        await self.runtime.drain(self.settings.run.shutdown_grace_s)
        self.runtime = None
        if new.log != self.settings.log:
            configure_logging(new)
        self.settings = new
        await self._start_runtime(new)
        self.phase = "running"
        status = await self.status_line()
        self.notifier.ready(status)
        log.info(
            "config.reloaded",
            sources=len(new.sources),
            sinks=len(new.sinks),
            writebacks=len(new.writebacks),
        )

    # -- health, metrics, status ----------------------------------------------------------

    async def readiness(self) -> list[str]:
        """Return why syncd is not ready to work (empty when it is)."""
        if self.phase != "running" or self.store is None or self.runtime is None:
            return [f"syncd is {self.phase}"]
        view = await self._store_view.get()
        return [*view.reasons, *self.runtime.problems(view.waiting)]

    async def warnings(self) -> list[str]:
        """Return what needs fixing although leads flow (for /readyz): the sinks' warnings
        and withdrawals a dialer keeps refusing (their numbers stay dialable)."""
        if self.runtime is None:
            return []
        said = self.runtime.warnings()
        view = await self._store_view.get() if self.store is not None else StoreView()
        said += [
            f"{w['sink']}: the withdrawal of lead {shown_key(str(w['key']))} keeps failing "
            f"({w['attempts']} tries); the number stays dialable; syncd status has the reason"
            for w in view.withdrawals_failing
        ]
        said += [warning_line(a) for a in view.numbers_left]
        said += [
            line
            for sink, total in sorted(view.numbers_left_total.items())
            if (line := more_line(sink, SHOWN, total)) is not None
        ]
        return said + view.writebacks_failing

    async def _read_store_view(self) -> StoreView:
        """Return what readiness and warnings need of the store (one snapshot's worth)."""
        from syncd.run.status import failing_withdrawals, writeback_alerts

        assert self.store is not None
        view = StoreView()
        try:
            view.waiting = await asyncio.wait_for(self._waiting(), STORE_PROBE_S)
        except TimeoutError:
            view.reasons.append(f"state store did not answer within {STORE_PROBE_S:.0f}s")
        except Exception as exc:  # any failure of the store is a reason, not a crash
            view.reasons.append(f"state store unreachable: {exc}")
        try:
            view.withdrawals_failing = await asyncio.wait_for(
                failing_withdrawals(self.settings, self.store), STORE_PROBE_S
            )
            view.writebacks_failing = await asyncio.wait_for(
                writeback_alerts(self.settings, self.store, time.time()), STORE_PROBE_S
            )
            found = await asyncio.wait_for(standing_all(self.settings, self.store), STORE_PROBE_S)
            view.numbers_left = [a.to_dict() for a in found]
            view.numbers_left_total = await asyncio.wait_for(
                counts(self.store, [s.name for s in self.settings.sinks]), STORE_PROBE_S
            )
        except Exception as exc:  # readiness reports the store; a warning is not worth more
            log.debug("withdrawals.check.failed", reason=str(exc))
        return view

    async def _waiting(self) -> dict[str, int]:
        """Return the leads waiting in each sink's outbox."""
        assert self.store is not None
        return {cfg.name: await self.store.pending_count(cfg.name) for cfg in self.settings.sinks}

    async def render_metrics(self) -> bytes:
        """Return /metrics: what the daemon knows now, with the gauges the store holds
        read at most once per snapshot."""
        runtime = self.runtime
        if runtime is not None and self.store is not None:
            sinks = {slot.name: slot.sink for slot in runtime.engine.sinks}
            try:
                await self._store_gauges.get()
                self.metrics.observe_live(sinks, runtime.causes())
                self.metrics.observe_lists(runtime.engine.list_states)
                self.metrics.observe_listening(runtime.crm_listeners.listening())
            except Exception as exc:  # counters are still worth serving
                log.warning("metrics.refresh.failed", reason=str(exc))
        return self.metrics.exposition()

    async def _read_store_gauges(self) -> None:
        runtime, store = self.runtime, self.store
        if runtime is not None and store is not None:
            sinks = {slot.name: slot.sink for slot in runtime.engine.sinks}
            await self.metrics.refresh_store(store, sinks)

    async def status_page(self) -> str:
        """Return the HTML of /status, rendered at most once per snapshot."""
        from syncd.daemon.status_page import PageData, render

        if self.store is None:
            return render(PageData({}, __version__, 0, problems=[f"syncd is {self.phase}"]))
        return await self._page.get()

    async def _render_page(self) -> str:
        """Return the page: the store's snapshot and what the daemon knows live."""
        from syncd.daemon.status_page import PageData, render
        from syncd.run.status import collect

        assert self.store is not None
        now = time.time()
        status = await collect(self.settings, self.store)
        if self.runtime is not None:  # the daemon knows its sinks now: no stale snapshot
            for name, live in self.runtime.engine.health_snapshot().items():
                status["sinks"][name] = {**status["sinks"].get(name, {}), **live}
        data = PageData(
            status,
            __version__,
            await self.delivered_today.value(self.store),
            poll_lag_s={s: now - at for s, at in self.metrics.polled_at().items()},
            problems=await self.readiness(),
            warnings=await self.warnings(),
            now=now,
        )
        return render(data)

    async def status_line(self) -> str:
        """Return the one-line summary shown by `systemctl status`."""
        if self.store is None:
            return self.phase
        pending = await self.store.pending_count()
        delivered = await self.delivered_today.value(self.store)
        line = f"{pending} pending, {delivered} delivered today"
        if self.runtime is not None:
            failing = self.runtime.failing(await self._waiting())
            if failing:
                line += "; " + "; ".join(failing)
        if self.phase != "running":
            line = f"{self.phase}; {line}"
        return f"{line} (syncd {__version__})"

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(STATUS_S)
            try:
                self.notifier.status(await self.status_line())
            except Exception as exc:  # the status line is cosmetic; never let it kill the loop
                log.debug("status.failed", reason=str(exc))

    async def _watchdog(self) -> None:
        # Pings come from the event loop itself: if the loop hangs, they stop.
        period = self.notifier.watchdog_s or 1.0
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(period)

    def _on_job_event(self, event: JobEvent) -> None:
        what = "job.overlap.skipped" if event.code == EVENT_JOB_MAX_INSTANCES else "job.missed"
        log.debug(what, job=event.job_id)
