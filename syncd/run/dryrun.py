"""`syncd run --once --dry-run`: a whole pass except the vendor calls and the writes.

The pass runs for real, on throwaway copies: the state store is copied into a
private temporary folder, and a source that claims files from an inbox reads
them through a shadow inbox of symbolic links (its renames move the links, never
the files). The pull, mapping and reconcile are exactly those of a real run; what
the copy's outbox then holds is what a real run would send. No sink is opened, no
outcome polled, no writeback run; the real inbox and store are left untouched.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import structlog

from syncd.config import Settings, SourceConfig, StateConfig
from syncd.core.model import Action
from syncd.core.summary import RunSummary
from syncd.run.engine import new_run_id
from syncd.run.pull import Puller
from syncd.run.sinks import build_sink
from syncd.state import open_store
from syncd.state.base import StateStore
from syncd.state.sqlite import snapshot

log = structlog.get_logger("syncd.dryrun")

SAMPLES = 5  # keys shown per category
REJECT_LINES = 10  # rejected rows shown


@dataclass
class SinkPreview:
    """What one sink would be sent: leads per kind of change, and rows refused before it."""

    create: int = 0  # the dialer never had the lead
    update: int = 0  # the dialer holds an older version
    remove: int = 0
    refuse: int = 0  # removals this sink cannot carry out (refused with a reason)
    rejected_rows: int = 0  # source rows refused on the way to this sink
    samples: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "create": self.create,
            "update": self.update,
            "remove": self.remove,
            "refuse": self.refuse,
            "rejected_rows": self.rejected_rows,
            "samples": self.samples,
        }


@dataclass
class DryRun:
    summary: RunSummary
    sinks: dict[str, SinkPreview]
    rejects: list[dict[str, Any]]  # the first rejected rows: origin, line, key, reason, sink


async def dry_run(settings: Settings, *, full: bool = False) -> DryRun:
    """Return what a pass would do, having changed nothing outside a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="syncd-dry-run-") as tmp:
        work = Path(tmp)
        copy = work / "state.db"
        await anyio.to_thread.run_sync(snapshot, Path(settings.state.path), copy)
        sources = [await anyio.to_thread.run_sync(_shadowed, cfg, work) for cfg in settings.sources]
        shadow = settings.model_copy(update={"state": StateConfig(path=copy), "sources": sources})
        store = await open_store(str(copy))
        try:
            return await _preview(settings, shadow, store, full=full)
        finally:
            await store.close()


async def _preview(
    settings: Settings, shadow: Settings, store: StateStore, *, full: bool
) -> DryRun:
    summary = RunSummary(new_run_id(), dry_run=True)
    await store.release_inflight()  # a real run would take these over too
    for cfg in settings.sinks:
        summary.sink(cfg.name).carried = await store.pending_count(cfg.name)
    for name in settings.route_names():
        summary.route(name)
    puller = Puller(shadow, store, summary)
    try:
        await puller.pull_all(full=full)
    finally:
        puller.close()
    sinks = {cfg.name: SinkPreview() for cfg in settings.sinks}
    for name, preview in sinks.items():
        can_remove = await _can_remove(settings, name, store)
        await _fill(store, name, preview, can_remove)
        preview.rejected_rows = sum(
            c.rejected for route, c in summary.routes.items() if route.endswith(f"->{name}")
        )
    rejects = await store.run_rejects(summary.run_id, REJECT_LINES)
    log.info(
        "run.dry_run.finished",
        sinks={
            n: {k: v for k, v in p.to_dict().items() if k != "samples"} for n, p in sinks.items()
        },
    )
    return DryRun(summary, sinks, rejects)


def _shadowed(cfg: SourceConfig, work: Path) -> SourceConfig:
    """Return ``cfg`` reading its inbox, if it has one, through a shadow folder of links."""
    inbox = getattr(cfg, "inbox", None)
    if not isinstance(inbox, Path):
        return cfg
    shadow = work / f"inbox-{cfg.name}"
    shadow.mkdir()
    # done/ too: a file there that the store has no record of is read again (a restore)
    for folder, target in (
        (inbox, shadow),
        (inbox / "processing", shadow / "processing"),
        (inbox / "done", shadow / "done"),
    ):
        target.mkdir(exist_ok=True)
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry.is_file() and not entry.is_symlink():  # a link is refused, not followed
                (target / entry.name).symlink_to(entry.resolve())
            elif entry.is_symlink():
                (target / entry.name).symlink_to(entry.absolute())  # shown as refused
    shadowing = getattr(cfg, "shadowing", None)  # a source that reads links into its inbox
    if callable(shadowing):
        shadowed: SourceConfig = shadowing(shadow, inbox)
        return shadowed
    return cfg.model_copy(update={"inbox": shadow})


async def _can_remove(settings: Settings, sink: str, store: StateStore) -> bool:
    # Built (for its settings) but never opened: no login, no request, nothing to log out of.
    built = build_sink(settings.sink(sink), settings, store, dry_run=True)
    try:
        return bool(built.can_remove)
    finally:
        await built.close()


async def _fill(store: StateStore, sink: str, preview: SinkPreview, can_remove: bool) -> None:
    async for lead in store.queued(sink):
        if lead.action is Action.DELETE:
            kind = "remove" if can_remove else "refuse"
        else:
            kind = "update" if lead.delivered else "create"
        setattr(preview, kind, getattr(preview, kind) + 1)
        shown = preview.samples.setdefault(kind, [])
        if len(shown) < SAMPLES:
            shown.append(lead.key)
