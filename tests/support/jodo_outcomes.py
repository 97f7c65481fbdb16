"""Helpers shared by the Jodo outcome, agent and disposition tests (no tests here).

Leads reach the simulator the real way: written to the store's outbox, claimed
and pushed by the engine's Pusher through the Jodo sink.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from syncd.core.clock import SYSTEM_CLOCK, Clock
from syncd.core.mapping import lead_hash, lead_to_json
from syncd.core.model import Action, Lead, LeadWrite
from syncd.core.summary import SinkCounts
from syncd.net.retry import RetryPolicy
from syncd.run.push import Pusher
from syncd.simulators.jodo.api import JodoSimulator, create_app
from syncd.simulators.server import running
from syncd.sinks.base import SinkContext
from syncd.sinks.jodo.config import JodoSinkConfig
from syncd.sinks.jodo.sink import JodoSink
from syncd.state.base import ChunkWrite
from syncd.state.sqlite import SqliteStore
from tests.conftest import Simulated

WS = "/CustomerWebServices/handleCustomerWS"


@contextmanager
def serve(sim: JodoSimulator) -> Iterator[Simulated]:
    """Yield the simulator served over loopback HTTP."""
    with running(create_app(sim)) as url:
        yield Simulated(sim, url)


def make_sink(
    url: str,
    store: SqliteStore,
    clock: Clock = SYSTEM_CLOCK,
    stopping: asyncio.Event | None = None,
    **settings: Any,
) -> JodoSink:
    """Return a Jodo sink for the simulator at ``url`` with quick in-call retries."""
    config = JodoSinkConfig.model_validate(
        {
            "name": "jodo",
            "url": f"{url}{WS}",
            "apikey": "test_org",
            "servicekey": "VoiceProcess",
            "updateparam": "crmuniquefield",
            "dial_format": "00",
            "retry_base_s": 0.05,
            "retry_max_s": 0.2,
            **settings,
        }
    )
    context = SinkContext(store=store, region="IN", clock=clock, stopping=stopping)
    sink = JodoSink(config, context)
    sink.client.policy = RetryPolicy(attempts=3, timeout_s=10, wait_initial_s=0.01, wait_max_s=0.05)
    return sink


def phone(n: int) -> str:
    """Return a valid Indian mobile in E.164 (``n`` below 10 000)."""
    return f"+9198200{n:05d}"


def dialled(n: int) -> str:
    """Return what the sink sends for :func:`phone` with ``dial_format = "00"``."""
    return "00" + phone(n)[1:]


def lead(n: int, **fields: Any) -> Lead:
    """Return lead ``L<n>`` with phone(n)."""
    return Lead(key=f"L{n}", phone=phone(n), first_name=f"First{n}", **fields)


async def enqueue(
    store: SqliteStore, leads: list[Lead], action: Action = Action.UPSERT, sink: str = "jodo"
) -> None:
    """Put leads in the sink's outbox, as a pull would."""
    writes = []
    for i, item in enumerate(leads, start=1):
        text = lead_to_json(item)
        writes.append(LeadWrite(item.key, lead_hash(text), None, text, action, "new", i))
    await store.apply_chunk(ChunkWrite("test-run", "crm", "test", leads={sink: writes}))


async def push(sink: JodoSink, store: SqliteStore, leads: list[Lead], **kw: Any) -> SinkCounts:
    """Enqueue ``leads`` and push until the outbox is idle; return the counts."""
    await enqueue(store, leads, **kw)
    counts = SinkCounts()
    await Pusher(sink, store, counts).run_until_idle(time.time() + 30)
    return counts


async def outcomes(store: SqliteStore) -> dict[str, dict[str, Any]]:
    """Return the stored outcomes by lead key."""
    return {o["key"]: o for o in await store.outcome_dump()}


def records_by_phone(sim: JodoSimulator) -> dict[str, dict[str, Any]]:
    return {str(r["mobilenumber"]): r for r in sim.records()}


@contextmanager
def canned(replies: dict[str, str]) -> Iterator[str]:
    """Yield the URL of a server answering each method with a fixed body (a document sample)."""

    async def answer(request: Request) -> Response:
        import json
        from urllib.parse import parse_qs

        form = parse_qs((await request.body()).decode())
        method = json.loads(form["data"][0])["method"]
        return PlainTextResponse(replies[method], media_type="application/json")

    app = Starlette(routes=[Route(WS, answer, methods=["POST"])])
    with running(app) as url:
        yield url
