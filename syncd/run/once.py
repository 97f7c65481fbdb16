"""`syncd run --once`: the engine run until idle, with a progress bar on a terminal."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import structlog
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from syncd import logs
from syncd.config import Settings
from syncd.core.summary import RunSummary
from syncd.run.engine import Engine, new_run_id
from syncd.run.signals import install_stop_handlers
from syncd.sources.base import Source
from syncd.state import open_store


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
        with _progress() as progress:
            engine = Engine(settings, store, run_id=run_id, stop=stop)
            try:
                summary = await engine.run_once(full=full, deadline_s=deadline_s, progress=progress)
            finally:
                await engine.close()
    finally:
        await store.close()
    structlog.get_logger("syncd.run").info("run.finished", **summary.totals())
    return summary


@contextmanager
def _progress() -> Iterator[Callable[[Source, int], None] | None]:
    if not sys.stderr.isatty():
        yield None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        transient=True,
    )
    tasks: dict[str, TaskID] = {}

    def update(source: Source, _rows: int) -> None:
        if source.name not in tasks:
            tasks[source.name] = bar.add_task(f"pull {source.name}", total=source.progress_total())
        bar.update(tasks[source.name], completed=source.progress_done())

    with bar:
        yield update
