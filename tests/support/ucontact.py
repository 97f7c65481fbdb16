"""Helpers for the uContact tests: a served simulator, a sink on a temp store, queued leads."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from syncd.core.model import Action, Lead, PushResult, QueuedLead, ResultKind
from syncd.simulators.server import running
from syncd.simulators.ucontact.api import UContactSimulator, create_app
from syncd.sinks.base import SinkContext
from syncd.sinks.ucontact.config import UContactSinkConfig
from syncd.sinks.ucontact.sink import UContactSink
from syncd.state import open_store
from syncd.state.sqlite import SqliteStore

CAMPAIGN = "Ventas->"


def uy(n: int) -> str:
    """Return a valid Uruguayan mobile number in E.164 (+598 99 000 nnn)."""
    return f"+59899{n:06d}"


def dialled(n: int) -> str:
    """Return uy(n) as the test sinks dial it (dial_format "00")."""
    return "00" + uy(n)[1:]


@contextmanager
def served(**settings: Any) -> Iterator[tuple[UContactSimulator, str]]:
    """Yield a uContact simulator and its base URL; it dials only on ``sim.dial_now()``."""
    settings.setdefault("dial_delay_s", 3600.0)
    settings.setdefault("cdr_delay_s", 0.0)
    sim = UContactSimulator(**settings)
    with running(create_app(sim)) as url:
        yield sim, url


def sink_config(url: str, **overrides: Any) -> UContactSinkConfig:
    values: dict[str, Any] = {
        "name": "uc",
        "url": url,
        "user": "api",
        "password": "secret",
        "campaign": CAMPAIGN,
        "dial_format": "00",
        "retry_base_s": 0.05,
        "retry_max_s": 0.2,
        "timeout_s": 5.0,
        "cdr_delay_s": 0.0,  # the served simulator writes call records at once
        "backup_records_url": f"{url}/backup",
        **overrides,
    }
    return UContactSinkConfig(**values)


@asynccontextmanager
async def sink_on(
    url: str, tmp_path: Path, *, open_it: bool = True, store: SqliteStore | None = None, **cfg: Any
) -> AsyncIterator[UContactSink]:
    """Yield a uContact sink over a temp SQLite store (``sink.ctx.store``), opened."""
    own = store is None
    store = store or await open_store(str(tmp_path / "state.db"))
    sink = UContactSink(sink_config(url, **cfg), SinkContext(store=store, region="UY"))
    try:
        if open_it:
            await sink.open()
        yield sink
    finally:
        await sink.close()
        if own:
            await store.close()


def queued(
    key: str,
    phone: str | None = None,
    *,
    action: Action = Action.UPSERT,
    attempts: int = 1,
    delivered_hash: str | None = None,
    vendor_ref: str | None = None,
    **lead: Any,
) -> QueuedLead:
    """Return a claimed lead as the outbox hands it to a sink."""
    if action is Action.DELETE:
        body = Lead(key=key, phone="", deleted=True)
    else:
        body = Lead(key=key, phone=phone or uy(1), **lead)
    return QueuedLead(
        sink="uc",
        key=key,
        # A version's hash follows its content, as the reconciler's does.
        hash=f"h-{key}-" + hashlib.sha256(repr(body).encode()).hexdigest()[:12],
        action=action,
        lead=body,
        attempts=attempts,
        vendor_ref=vendor_ref,
        delivered_hash=delivered_hash,
    )


async def push_until_done(
    sink: UContactSink,
    batch: list[QueuedLead],
    *,
    rounds: int = 8,
    between: Callable[[int], None] | None = None,
) -> list[list[PushResult]]:
    """Return each round's results, pushing the leads again as the outbox would.

    A lead the sink asks to retry goes back with one more attempt, after the
    ``retry_after`` it asked for; ``between(round)`` runs before each later round.
    """
    history: list[list[PushResult]] = []
    pending = list(batch)
    for n in range(rounds):
        if not pending:
            break
        if n and between is not None:
            between(n)
        results = await sink.push(pending)
        history.append(results)
        again = {r.key: r for r in results if r.kind is ResultKind.RETRY}
        if again:
            await asyncio.sleep(max(r.retry_after or 0.05 for r in again.values()))
        pending = [replace(q, attempts=q.attempts + 1) for q in pending if q.key in again]
    return history
