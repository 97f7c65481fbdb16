"""`syncd run --once`: the engine run until idle, with a progress bar on a terminal.

One pass calls the engine's stages in order — pull, consent, open the sinks, push
until idle (agents before leads), poll, write back, prune — with session
keep-alives running beside it. Without do-not-call lists or agents, the push starts
while the pull reads (each chunk's commit wakes it: ``_EarlyPush``) and finishes after.
Each stage is bounded by the run's ``--deadline`` and by a stop signal: what is still
in flight then gets a short grace and is cut off, its leads back in the outbox, and
the summary says so. The daemon runs the
same stages on a schedule instead (:mod:`syncd.daemon.scheduler`).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from syncd import logs
from syncd.config import Settings
from syncd.core.summary import RunSummary, SinkCounts
from syncd.run import numbers_left
from syncd.run.engine import Engine, PollResult, new_run_id
from syncd.run.heap import started_up
from syncd.run.signals import install_stop_handlers
from syncd.sources.base import Source
from syncd.state import open_store

log = structlog.get_logger("syncd.once")

DEADLINE_GRACE_S = 2.0  # past `--deadline`, what in-flight work gets before it is cut off
ONCE_POLL_TRIES = 3  # outcome polls in one `--once` pass before it reports the poll failed
ONCE_POLL_WAIT_S = 2.0  # the pause before the next try grows by this much each time
STOPPED_POLL = "a stop signal came: the outcomes read are kept, the next run reads on"


async def run_once(
    settings: Settings,
    *,
    full: bool = False,
    deadline_s: float | None = None,
) -> RunSummary:
    """Return the summary of one pass: pull every source, push until idle."""
    run_id = new_run_id()
    logs.bind(run_id=run_id)
    store = await open_store(settings.state)
    stop = asyncio.Event()
    install_stop_handlers(stop)
    try:
        with _progress() as bars, started_up():
            engine = Engine(settings, store, run_id=run_id, stop=stop)
            try:
                summary = await run_until_idle(engine, full=full, deadline_s=deadline_s, bars=bars)
                if stop.is_set():
                    # A stop: the CRM gets what was written now, not after the next run.
                    summary.writeback_failed.update(await engine.finish_writebacks())
            finally:
                await engine.close()
    finally:
        await store.close()
    structlog.get_logger("syncd.run").info("run.finished", **summary.totals())
    return summary


class _Bars:
    """The terminal's progress bars: one per source while it is read, one per sink while
    its outbox is pushed (delivered of those due), the log lines printed above them."""

    def __init__(self) -> None:
        self.bar = _WatchingProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            _Amount(),
            _Rate(),
            TimeRemainingColumn(),
            # stderr, where the logs go and whose terminal was checked; stdout keeps the
            # summary alone (`syncd run --once > summary.txt` with the bars on screen).
            console=Console(stderr=True),
            transient=True,
        )
        self.sources: dict[str, TaskID] = {}
        self.sinks: dict[str, TaskID] = {}

    def pull(self, source: Source, _rows: int) -> None:
        if source.name not in self.sources:
            self.sources[source.name] = self.bar.add_task(
                f"pull {source.name}", total=source.progress_total()
            )
        self.bar.update(self.sources[source.name], completed=source.progress_done())

    def push(self, sink: str, counts: SinkCounts, due: int) -> None:
        """Show ``sink``'s push: its delivered count, read at each redraw, of ``due``
        (a push started while the pull reads is shown again as its outbox grows)."""
        task = self.sinks.get(sink)
        if task is not None:
            self.bar.update(task, total=max(due, 1))
            return
        task = self.sinks[sink] = self.bar.add_task(f"push {sink}", total=max(due, 1), unit="leads")
        self.bar.watch(task, counts)


class _WatchingProgress(Progress):
    """A Progress that reads each push's delivered count when it redraws, so the
    pusher, which knows nothing of bars, need not report to it."""

    def __init__(self, *columns: ProgressColumn | str, **kwargs: Any) -> None:
        self._watched: dict[TaskID, SinkCounts] = {}  # before: the base class renders once
        super().__init__(*columns, **kwargs)

    def watch(self, task: TaskID, counts: SinkCounts) -> None:
        self._watched[task] = counts
        self.update(task, completed=counts.delivered)

    def get_renderable(self) -> RenderableType:
        for task, counts in list(self._watched.items()):
            self.update(task, completed=counts.delivered)
        return super().get_renderable()


class _Amount(ProgressColumn):
    """How much is done: bytes of a source (as before), leads of a sink."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes = DownloadColumn()

    def render(self, task: Task) -> Text:
        if task.fields.get("unit") != "leads":
            return self._bytes.render(task)
        return Text(
            f"{int(task.completed)}/{int(task.total or 0)} leads", style="progress.download"
        )


class _Rate(ProgressColumn):
    """How fast: bytes per second of a source, leads per second of a sink."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes = TransferSpeedColumn()

    def render(self, task: Task) -> Text:
        if task.fields.get("unit") != "leads":
            return self._bytes.render(task)
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} leads/s", style="progress.data.speed")


@contextmanager
def _progress() -> Iterator[_Bars | None]:
    """Yield the bars on a terminal with readable logs; None otherwise (cron, a pipe,
    a journal, JSON logs: a machine reads those, and a bar's redraws would be noise)."""
    if not sys.stderr.isatty() or logs.as_json():
        yield None
        return
    bars = _Bars()
    with bars.bar, logs.through(bars.bar.console):
        yield bars


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Log how long a stage of the run took (`run.phase`), so a slow run says where."""
    started = time.monotonic()
    try:
        yield
    finally:
        log.info("run.phase", phase=name, seconds=round(time.monotonic() - started, 3))


async def run_until_idle(
    engine: Engine,
    *,
    full: bool = False,
    deadline_s: float | None = None,
    bars: _Bars | None = None,
) -> RunSummary:
    """Return the summary of one pass of ``engine``: pull, push until idle, poll, write back."""
    store, settings = engine.store, engine.settings
    summary = RunSummary(engine.run_id)
    deadline = engine.clock.time() + (deadline_s or settings.run.deadline_s)
    await store.release_inflight()  # we hold the store lock: any lease is orphaned
    await store.start_run(engine.run_id, "once-full" if full else "once")
    for cfg in settings.sinks:
        held, _ = await store.held(cfg.name)
        summary.sink(cfg.name).carried = await store.pending_count(cfg.name) + held
    for name in settings.route_names():
        summary.route(name)
    async with engine.leadership.kept():
        await _Pass(engine, summary, deadline).run(full=full, bars=bars)
    await engine.publish_health()
    stopped = engine.sinks.stopped()
    for name, counts in summary.sinks.items():
        counts.pending = await store.pending_count(name)
        counts.held, counts.released_at = await store.held(name)
        counts.stopped = counts.stopped or stopped.get(name)
    await store.record_backlog({name: c.pending for name, c in summary.sinks.items()})
    # Every run says so until acknowledged, as a refused withdrawal stays pending
    left = await numbers_left.counts(store, [cfg.name for cfg in settings.sinks])
    summary.numbers_left = {name: n for name, n in left.items() if n}
    await store.finish_run(engine.run_id, summary.to_dict())
    return summary


class _EarlyPush:
    """The push of a `--once` pass started while its pull still reads: the sinks open
    beside the first chunk, and each chunk's commit wakes a push of what it queued, so
    the dialers' requests overlap the reading and mapping of the next chunks."""

    def __init__(self, owner: _Pass, bars: _Bars | None) -> None:
        self.owner = owner
        self.bars = bars
        self.committed = asyncio.Event()
        self.pulled = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name="push-while-pulling")

    async def finish(self) -> bool:
        """Let the push end at its next idle moment; return False when it was cut off."""
        self.pulled.set()
        if await self.owner._bounded("the push", self.task):
            return True
        await self.owner.engine.store.release_inflight()  # cut off mid-request: pending
        return False

    async def _run(self) -> None:
        owner = self.owner
        engine, summary = owner.engine, owner.summary
        await engine.open()
        while not engine.stop.is_set():
            self.committed.clear()
            last = self.pulled.is_set()
            await owner._show_pushes(self.bars)
            await asyncio.gather(
                *(
                    engine.push(slot.name, summary.sink(slot.name), deadline=owner.deadline)
                    for slot in engine.sinks.working()
                    if slot.name not in engine.gave_up  # once a pass, as without overlap
                )
            )
            if last:
                return
            woken = [asyncio.ensure_future(e.wait()) for e in (self.committed, self.pulled)]
            try:
                await asyncio.wait(woken, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in woken:
                    waiter.cancel()


async def record_backlog(engine: Engine) -> None:
    """Keep each sink's outbox size for the status page's backlog chart."""
    store = engine.store
    await store.record_backlog(
        {cfg.name: await store.pending_count(cfg.name) for cfg in engine.settings.sinks}
    )


class _Pass:
    """One `--once` pass over the engine's stages, within the run's deadline."""

    def __init__(self, engine: Engine, summary: RunSummary, deadline: float) -> None:
        self.engine = engine
        self.summary = summary
        self.deadline = deadline

    async def run(self, *, full: bool, bars: _Bars | None) -> None:
        engine, summary, deadline = self.engine, self.summary, self.deadline
        early = _EarlyPush(self, bars) if self._pushes_while_pulling() else None
        progress = None if bars is None else bars.pull

        def committed(source: Source, rows: int) -> None:
            if progress is not None:
                progress(source, rows)
            if early is not None:
                early.committed.set()

        cut_off = False
        try:
            with phase("pull"):
                for source in engine.settings.sources:
                    await engine.pull(source, summary, full=full, progress=committed)
        finally:
            if early is not None:
                # It ends at its next idle moment: what is still due goes in the push below.
                with phase("push"):  # the part after the pull (bench_sync adds the two up)
                    cut_off = not await early.finish()
        with phase("consent"):
            await engine.expire_consent(summary)  # its withdrawals go out in this pass's push
        await record_backlog(engine)  # all read (and, pushed while reading, some sent)
        if early is None:
            await self._bounded("opening the sinks", engine.open())
        await self._show_pushes(bars)
        async with self._keepalives():
            with phase("push"):
                # Agents first: a lead assigned to an agent provisioned in this run finds
                # the agent at the dialer.
                for entity in ("agents", "leads") if not cut_off else ():
                    pushes = asyncio.gather(
                        *(
                            engine.push(slot.name, summary.sink(slot.name), deadline=deadline)
                            for slot in engine.sinks.working()
                            if slot.cfg.entity == entity
                            # given up on while the pull read: once a pass
                            and not (early is not None and slot.name in engine.gave_up)
                        )
                    )
                    if not await self._bounded("the push", pushes):
                        await (
                            engine.store.release_inflight()
                        )  # cut off mid-request: back to pending
                        break
            with phase("poll"):
                await self._bounded("the outcome poll", self._poll_all())
            with phase("writeback"):
                await self._bounded("the writeback", self._writeback_all())
        await engine.prune()

    async def _show_pushes(self, bars: _Bars | None) -> None:
        """Give each working sink its bar: delivered of what this pass has had due."""
        if bars is None:
            return
        for slot in self.engine.sinks.working():
            counts = self.summary.sink(slot.name)
            due = await self.engine.store.pending_count(slot.name) + counts.delivered
            bars.push(slot.name, counts, due)

    def _pushes_while_pulling(self) -> bool:
        """Whether the push may start while the sources are still read.

        It may when nothing read later in the pass decides what an earlier lead may be:
        not with do-not-call lists (a list read after a lead's source must screen it
        before it goes) nor with agents (an agent provisioned in this pass goes first).
        """
        settings = self.engine.settings
        return not settings.dnc_lists and not settings.agent_routes

    async def _bounded(self, what: str, work: Awaitable[Any]) -> bool:
        """Run ``work`` until the run's deadline (plus a short grace); return False when cut off.

        The deadline bounds the whole pass, requests in flight included: a dialer that
        accepts a connection and never answers must not hold cron's next run off.
        """
        engine = self.engine
        left = self.deadline - engine.clock.time() + DEADLINE_GRACE_S
        task = asyncio.ensure_future(work)
        stopping = asyncio.ensure_future(engine.stop.wait())
        try:
            await asyncio.wait(
                {task, stopping}, timeout=max(left, 0.0), return_when="FIRST_COMPLETED"
            )
            if not task.done() and stopping.done():
                # SIGTERM: in-flight work gets the shutdown grace, then it is cut off too.
                grace = min(engine.settings.run.shutdown_grace_s, max(left, 0.0))
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
        self.summary.deadline = self.summary.deadline or reason
        log.error("run.cut_off", during=what, by=cause, action="leads stay queued for the next run")
        return False

    async def _poll_all(self) -> None:
        engine, summary = self.engine, self.summary
        down = engine.sinks.unreachable(silent=False)  # the breaker's word: pushes gave up
        for slot in engine.sinks.working():
            if slot.cfg.entity == "agents":
                continue  # users have no outcomes
            if engine.stop.is_set():
                summary.poll_failed[slot.name] = STOPPED_POLL
                continue
            if slot.name in down:
                # The push gave up on this dialer (its breaker is open): polling it with
                # retries would keep cron's next run waiting on a dialer that is down.
                summary.poll_failed[slot.name] = (
                    f"dialer unreachable ({down[slot.name].public}): not polled this run; "
                    "the next run reads its outcomes"
                )
                continue
            result = await self._poll_until_done(slot.name)
            if result.error is None and engine.stop.is_set():
                # It may have ended at a safe point before the last page: not all read.
                summary.poll_failed[slot.name] = STOPPED_POLL
            elif result.error is not None:
                summary.poll_failed[slot.name] = result.error
            elif result.held is not None:  # not a failure, but its outcomes were not read
                summary.poll_failed[slot.name] = (
                    f"{result.held}: not polled this run; the next run reads its outcomes"
                )
            elif not result.skipped:
                summary.outcomes[slot.name] = result.count
        summary.warnings = engine.sinks.warnings()

    async def _writeback_all(self) -> None:
        engine, summary = self.engine, self.summary
        for wb in engine.settings.writebacks:
            if engine.stop.is_set():
                break
            result = await engine.writeback(wb)
            summary.written[wb.name] = result.written
            if result.error is not None:
                summary.writeback_failed[wb.name] = result.error

    async def _poll_until_done(self, name: str) -> PollResult:
        """Poll one sink, asking again after a failure while the run's deadline allows.

        A pass that pushed every lead but could not read outcomes has not done its
        job: like a push, a poll gets a few more tries before the run reports it.
        """
        engine = self.engine
        result = await engine.poll(name)
        for attempt in range(1, ONCE_POLL_TRIES):
            waits = result.error is not None or result.held is not None  # a hold may end in time
            if not waits or result.final or engine.stop.is_set():
                break
            wait = max(result.retry_after or 0.0, ONCE_POLL_WAIT_S * attempt)
            if engine.clock.time() + wait >= self.deadline:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(engine.stop.wait(), timeout=wait)
                break
            result = await engine.poll(name)
        return result

    @contextlib.asynccontextmanager
    async def _keepalives(self) -> AsyncIterator[None]:
        """Keep every session alive while the pass works (the daemon schedules these instead)."""
        engine = self.engine
        tasks = [
            asyncio.create_task(
                self._keepalive_loop(slot.name, every), name=f"keepalive:{slot.name}"
            )
            for slot in engine.sinks.working()
            if (every := engine.keepalive_interval(slot.name)) is not None
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _keepalive_loop(self, name: str, every: float) -> None:
        engine = self.engine
        while not engine.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(engine.stop.wait(), timeout=every)
                return
            await engine.keepalive(name)
            every = engine.keepalive_interval(name) or every
