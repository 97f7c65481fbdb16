"""The engine: builds sinks, pulls every source, pushes until idle.

`--once` and the daemon share it: `--once` is the same engine run until idle.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog

from syncd import registry
from syncd.config import Settings, SinkConfig
from syncd.core.summary import RunSummary
from syncd.errors import SinkConfigError, VendorError
from syncd.net.http import RetryPolicy, with_retries
from syncd.run.pull import Puller
from syncd.run.push import Pusher
from syncd.sinks.base import Sink, SinkContext
from syncd.sources.base import Source
from syncd.state.base import StateStore

log = structlog.get_logger("syncd.engine")


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Log how long a stage of the run took (`run.phase`), so a slow run says where."""
    started = time.monotonic()
    try:
        yield
    finally:
        log.info("run.phase", phase=name, seconds=round(time.monotonic() - started, 3))


def open_policy(cfg: SinkConfig) -> RetryPolicy:
    """Return the retries for opening a sink: a few quick tries, then it is stopped.

    Unlike a push there is no outbox to wait in, so a Retry-After of up to 30 s
    is waited out here.
    """
    return RetryPolicy(
        attempts=4,
        timeout_s=max(60.0, 4 * cfg.timeout_s),
        wait_initial_s=min(0.5, cfg.retry_base_s),
        wait_max_s=30.0,
    )


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def build_sink(
    cfg: SinkConfig, settings: Settings, store: StateStore, *, dry_run: bool = False
) -> Sink:
    """Return the sink object for a config, via the registry."""
    if not cfg.verify_tls:
        log.warning(
            "sink.tls.unverified",
            sink=cfg.name,
            action="verify_tls = false: the dialer's certificate is not checked",
        )
    region = next((r.default_region for r in settings.routes if r.sink == cfg.name), "US")
    ctx = SinkContext(
        store=store, region=region, dry_run=dry_run, log=structlog.get_logger("syncd.sink")
    )
    factory = registry.sinks()[cfg.kind].load_factory()
    sink: Sink = factory(cfg, ctx)
    return sink


class Engine:
    """Owns one run's sinks and counters."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        *,
        run_id: str | None = None,
        stop: asyncio.Event | None = None,
        observer: Any = None,
        progress: Callable[[Source, int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.run_id = run_id or new_run_id()
        self.stop = stop or asyncio.Event()
        self.observer = observer
        self.progress = progress
        self.sinks: dict[str, Sink] = {}
        self.stopped: dict[str, str] = {}  # sink -> why it cannot work now

    async def open_sinks(self) -> None:
        """Build and open every sink; one that cannot open is stopped, not fatal."""
        for cfg in self.settings.sinks:
            sink = build_sink(cfg, self.settings, self.store)
            self.sinks[cfg.name] = sink
            try:
                # A reset or a 503 during login must not cost the sink the whole run.
                await with_retries(sink.open, open_policy(cfg), vendor=cfg.kind, what="open")
            except SinkConfigError as exc:
                self.stopped[cfg.name] = str(exc)
                log.error(
                    "sink.stopped",
                    sink=cfg.name,
                    reason=str(exc),
                    action="fix the sink's configuration; its leads stay queued",
                )
            except VendorError as exc:
                self.stopped[cfg.name] = str(exc)
                log.error("sink.open.failed", sink=cfg.name, reason=str(exc))

    async def close(self) -> None:
        for name, sink in self.sinks.items():
            try:
                await sink.close()
            except Exception as exc:  # a failing logout must not block the others
                log.warning("sink.close.failed", sink=name, reason=str(exc))
        self.sinks.clear()

    async def run_once(self, *, full: bool = False, deadline_s: float | None = None) -> RunSummary:
        """Pull everything, push until the outbox is empty or the deadline passes."""
        summary = RunSummary(self.run_id)
        deadline = time.time() + (deadline_s or self.settings.run.deadline_s)
        await self.store.release_inflight()  # we hold the store lock: any lease is orphaned
        await self.store.start_run(self.run_id, "once-full" if full else "once")
        for cfg in self.settings.sinks:
            summary.sink(cfg.name).carried = await self.store.pending_count(cfg.name)
        for route in self.settings.routes:
            summary.route(route.name)
        puller = Puller(self.settings, self.store, summary, progress=self.progress)
        with phase("pull"):
            try:
                await puller.pull_all(full=full)
            finally:
                puller.close()
        await self.open_sinks()
        with phase("push"):
            await self.push_all(summary, deadline)
        with phase("poll"):
            await self.poll_all(summary)
        with phase("writeback"):
            await self.writeback_all(summary)
        for name, counts in summary.sinks.items():
            counts.pending = await self.store.pending_count(name)
            counts.stopped = counts.stopped or self.stopped.get(name)
        await self.store.finish_run(self.run_id, summary.to_dict())
        return summary

    async def poll_all(self, summary: RunSummary) -> None:
        """Ask every working sink for new outcomes; one vendor's failure does not stop the rest."""
        for name, sink in self.sinks.items():
            if name in self.stopped:
                continue
            try:
                summary.outcomes[name] = await sink.poll_outcomes()
            except VendorError as exc:
                log.warning("sink.poll.failed", sink=name, reason=str(exc))

    async def writeback_all(self, summary: RunSummary) -> None:
        """Write stored outcomes back to the CRM through every configured writeback."""
        if not self.settings.writebacks:
            return
        from syncd.writeback.runner import run_writebacks

        summary.written.update(await run_writebacks(self.settings, self.store))

    async def push_all(self, summary: RunSummary, deadline: float) -> None:
        pushers = [
            Pusher(sink, self.store, summary.sink(name), stop=self.stop, observer=self.observer)
            for name, sink in self.sinks.items()
            if name not in self.stopped
        ]
        await asyncio.gather(*(p.run_until_idle(deadline) for p in pushers))
        for p in pushers:
            if p.stopped_reason:
                self.stopped[p.sink.name] = p.stopped_reason
