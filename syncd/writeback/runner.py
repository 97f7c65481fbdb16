"""Runs the configured writebacks: pending versions → write → mark written, batch by batch.

A batch is marked written (in the state store) only after the writeback returned,
so a crash re-writes at most the batch in flight. A batch the CRM refuses is
halved until the record at fault stands alone; that record is marked with its
reason (an event, the log, ``writeback.status`` in the store) and not retried
until its outcome changes again. A transient failure or a stopped writeback ends
that writeback's pass; its records stay pending for the next pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import structlog

from syncd import registry
from syncd.config import Settings, WritebackConfig
from syncd.core.health import HealthTracker
from syncd.core.reasons import CRM_REFUSED, log_reason
from syncd.errors import RetryableError, SyncdError
from syncd.state.base import WRITEBACK_STATUS_SCOPE, Notes, Writebacks
from syncd.writeback.base import Item, ItemsRefused, Writeback, WritebackStopped, item_from_row

log = structlog.get_logger("syncd.writeback")

STATE_SCOPE = "writeback.state"  # a writeback's own recovery state (committed with marks)


def build_writeback(cfg: WritebackConfig) -> Writeback:
    """Return the writeback object for a config, via the registry."""
    factory = registry.writebacks()[cfg.kind].load_factory()
    writeback: Writeback = factory(cfg)
    return writeback


class WritebackStore(Writebacks, Notes, Protocol):
    """What a writeback runner uses of the store: the versions to write and its marks, its
    recovery state, the events it leaves on a lead."""


@dataclass
class PassResult:
    """What one pass of one writeback did."""

    written: int = 0
    refused: int = 0
    error: str | None = None  # why the pass ended with records still pending
    at: float = 0.0


class WritebackRunner:
    """Keeps one opened instance per writeback across passes (the daemon holds one runner)."""

    def __init__(
        self,
        settings: Settings,
        store: WritebackStore,
        *,
        stop: asyncio.Event | None = None,
        health: HealthTracker | None = None,
        since: Mapping[str, float] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.stop = stop or asyncio.Event()
        self.health = health or HealthTracker(log)
        self._open: dict[str, Writeback] = {}
        self._seeded: set[str] = set()
        self._started = time.time()
        # By writeback: since when this process has run it (the daemon's start, or the
        # reload that added it; a reload builds a new runner), else this runner's start.
        self._since = dict(since or {})
        self._last: dict[str, dict[str, Any]] = {}  # each writeback's last status record

    async def run_pass(self) -> dict[str, int]:
        """Return, per writeback, how many versions it wrote in this pass."""
        written: dict[str, int] = {}
        for cfg in self.settings.writebacks:
            if self.stop.is_set():
                break
            result = await self.drain(cfg)
            written[cfg.name] = result.written
        return written

    async def drain(self, cfg: WritebackConfig) -> PassResult:
        """Write everything pending for one writeback; return what happened."""
        result = PassResult()
        bound = log.bind(writeback=cfg.name)
        try:
            writeback = await self._writeback(cfg)
            try:
                await self._batches(writeback, cfg, result)
            finally:
                await writeback.end_pass()
                state = writeback.state()
                if state is not None:
                    await self.store.kv_set(STATE_SCOPE, cfg.name, state)
        except RetryableError as exc:
            result.error = str(exc)
        except WritebackStopped as exc:
            result.error = str(exc)
            await self._drop(cfg.name)  # reopened (and re-checked) on the next pass
        await self._report(cfg.name, result, bound)
        return result

    async def finish(self) -> dict[str, str]:
        """At a stop or reload: publish what each open writeback wrote; return, by writeback,
        why it could not (its rows stay marked and reach the CRM after the next start)."""
        unpublished: dict[str, str] = {}
        for name, writeback in list(self._open.items()):
            try:
                await writeback.publish()
            except SyncdError as exc:  # one that cannot publish must not keep the others back
                unpublished[name] = str(exc)
                log.error(
                    "writeback.unpublished",
                    writeback=name,
                    reason=str(exc),
                    action="the rows marked written so far are published after the next "
                    "start; fix the outbox meanwhile",
                )
                continue
            state = writeback.state()
            if state is not None:
                # Not kept: the next start finds the file it names gone and starts a new one.
                with contextlib.suppress(SyncdError):
                    await self.store.kv_set(STATE_SCOPE, name, state)
        return unpublished

    async def close(self) -> None:
        for name in list(self._open):
            await self._drop(name)

    # -- internals -------------------------------------------------------------------

    async def _writeback(self, cfg: WritebackConfig) -> Writeback:
        writeback = self._open.get(cfg.name)
        if writeback is None:
            writeback = build_writeback(cfg)
            await writeback.open(await self.store.kv_get(STATE_SCOPE, cfg.name))
            self._open[cfg.name] = writeback
        return writeback

    async def _drop(self, name: str) -> None:
        writeback = self._open.pop(name, None)
        if writeback is None:
            return
        try:
            await writeback.close()
        except Exception as exc:  # closing one must not keep the others open
            log_reason(log, "warning", "writeback.close.failed", str(exc), writeback=name)

    async def _batches(
        self, writeback: Writeback, cfg: WritebackConfig, result: PassResult
    ) -> None:
        what = str(getattr(cfg, "what", "outcomes"))
        sinks: Sequence[str] = getattr(cfg, "sinks", ())
        size = int(getattr(cfg, "batch_size", 500))
        after = ("", "")
        while not self.stop.is_set():
            rows = await self.store.pending_writeback(
                cfg.name, what, sinks=sinks, after=after, limit=size
            )
            if not rows:
                return
            items = [item_from_row(row, what, cfg.name) for row in rows]
            await self._write(writeback, cfg.name, items, result)
            after = (items[-1].sink, items[-1].key)

    async def _write(
        self, writeback: Writeback, name: str, items: Sequence[Item], result: PassResult
    ) -> None:
        try:
            await writeback.write(items)
        except ItemsRefused as exc:
            if len(items) == 1:
                await self._refuse(writeback, name, items[0], exc.reason, result)
                return
            middle = len(items) // 2
            await self._write(writeback, name, items[:middle], result)
            await self._write(writeback, name, items[middle:], result)
            return
        await self.store.mark_written(name, [i.mark for i in items], state=writeback.state())
        await writeback.committed()
        result.written += len(items)

    async def _refuse(
        self, writeback: Writeback, name: str, item: Item, reason: str, result: PassResult
    ) -> None:
        # Marked with its reason, not sent again by itself (the same version would be refused
        # forever): `syncd retry --writeback` makes it pending once the cause is fixed.
        await self.store.mark_written(
            name, [item.mark], state=writeback.state(), refused=reason[:500]
        )
        await self.store.add_event(
            item.sink, item.key, "writeback.refused", f"{name} v{item.version}: {reason}"
        )
        # The CRM's words may quote the row (a duplicate e-mail): its code at warning.
        log_reason(
            log,
            "warning",
            "writeback.refused",
            reason,
            CRM_REFUSED,
            writeback=name,
            sink=item.sink,
            key=item.key,
            version=item.version,
        )
        result.refused += 1

    async def _report(self, name: str, result: PassResult, bound: Any) -> None:
        result.at = time.time()
        subject = f"writeback:{name}"
        if name not in self._seeded:
            # A failure the last process already reported is not news after a restart.
            self._seeded.add(name)
            previous = await self.store.kv_get(WRITEBACK_STATUS_SCOPE, name)
            self._last[name] = json.loads(previous) if previous else {}
            self.health.remember(subject, self._last[name].get("error"))
        if result.error:
            self.health.failed(
                subject,
                result.error,
                event="writeback.failing",
                writeback=name,
                action="records stay pending and are written on a later pass",
            )
        else:
            self.health.recovered(subject, event="writeback.recovered", writeback=name)
        if result.written or result.refused:
            bound.info("writeback.pass", written=result.written, refused=result.refused)
        await self.store.kv_set(
            WRITEBACK_STATUS_SCOPE, name, json.dumps(self._record(name, result))
        )

    def _record(self, name: str, result: PassResult) -> dict[str, Any]:
        """Return the status record of a pass: what it did, and since when the writeback
        fails, last finished a pass and last wrote, so status and /readyz can tell a
        writeback that never wrote from one failing for a minute
        (syncd.run.status.writeback_alert)."""
        before = self._last.get(name, {})
        record: dict[str, Any] = {
            **asdict(result),
            "started_at": self._since.get(name, self._started),
            "ok_at": before.get("ok_at") if result.error else result.at,  # a full pass
            "wrote_at": result.at if result.written else before.get("wrote_at"),
            "failing_since": (before.get("failing_since") or result.at) if result.error else None,
        }
        self._last[name] = record
        return record


async def run_writebacks(
    settings: Settings, store: WritebackStore, *, stop: asyncio.Event | None = None
) -> dict[str, int]:
    """Return, per configured writeback, how many outcome versions it wrote in one pass."""
    runner = WritebackRunner(settings, store, stop=stop)
    try:
        return await runner.run_pass()
    finally:
        await runner.close()
