"""The webhook writeback against a real loopback receiver that checks every signature."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from syncd.core.model import AgentStatus
from syncd.simulators.faults import FaultInjector, Faults
from syncd.writeback.runner import run_writebacks
from syncd.writeback.webhook import verify
from tests.conftest import running
from tests.support.writeback import change, keys, outcome, settings, status, store_with

SECRET = "whsec-test-0123456789"


@dataclass
class Receiver:
    """A CRM endpoint: verifies the signature, then maybe fails, then records the items."""

    secret: bytes
    faults: FaultInjector = field(default_factory=FaultInjector)
    refuse: set[str] = field(default_factory=set)  # keys it answers 422 for
    seen: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    items: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    bad_signatures: int = 0
    idempotency_keys: set[str] = field(default_factory=set)

    async def handle(self, request: Request) -> Response:
        self.requests += 1
        body = await request.body()
        stamp = request.headers.get("x-syncd-timestamp", "")
        signature = request.headers.get("x-syncd-signature", "")
        fresh = stamp.isdigit() and abs(time.time() - int(stamp)) < 300
        if not fresh or not verify(self.secret, stamp, body, signature):
            self.bad_signatures += 1
            return JSONResponse({"error": "bad signature"}, status_code=401)
        faulty = await self.faults.before()
        if faulty is not None:
            return faulty
        document = json.loads(body)
        refused = [i["key"] for i in document["items"] if i["key"] in self.refuse]
        if refused:
            return JSONResponse({"error": f"unknown lead {refused[0]}"}, status_code=422)
        self.idempotency_keys.add(request.headers["idempotency-key"])
        for item in document["items"]:
            self.seen[(item["sink"], item["key"], item["version"])] += 1
            self.items.append(item)
        return JSONResponse({"ok": True})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/crm/hook", self.handle, methods=["POST"])])


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    crm = Receiver(SECRET.encode())
    with running(crm.app()) as url:
        yield crm, f"{url}/crm/hook"


def hook(url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "name": "crm-hook",
        "kind": "webhook",
        "url": url,
        "secret": SECRET,
        "batch_size": 25,
        "attempts": 8,
        "retry_base_s": 0.01,
        "retry_max_s": 0.05,
        "timeout_s": 5,
        **overrides,
    }


async def test_each_outcome_arrives_once_despite_injected_500s(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    crm, url = receiver
    crm.faults.set(Faults(seed=3, error_rate=0.35))
    store = await store_with(tmp_path / "state.db", [outcome(k) for k in keys(300)])
    try:
        written = await run_writebacks(settings(tmp_path, hook(url)), store)
        again = await run_writebacks(settings(tmp_path, hook(url)), store)
    finally:
        await store.close()

    assert crm.faults.injected.get("5xx", 0) > 0
    assert written == {"crm-hook": 300} and again == {"crm-hook": 0}
    assert set(crm.seen) == {("jodo", k, 1) for k in keys(300)}
    assert set(crm.seen.values()) == {1}
    assert crm.bad_signatures == 0


async def test_the_body_carries_what_the_crm_needs_and_no_vendor_payload(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    crm, url = receiver
    store = await store_with(tmp_path / "state.db", [outcome("L1")])
    try:
        await run_writebacks(settings(tmp_path, hook(url)), store)
    finally:
        await store.close()

    (item,) = crm.items
    assert item == {
        "sink": "jodo",
        "key": "L1",
        "version": 1,
        "status": "connected",
        "raw_status": "Connected",
        "disposition": "Interested",
        "attempts": 1,
        "last_dialed_at": "2026-11-22T09:30:00+00:00",
        "agent": "asha",
        "call_id": "call-L1",
        "recording_url": "https://rec.example/L1.mp3",
        "observed_at": item["observed_at"],
    }


async def test_a_changed_outcome_is_sent_again_as_its_new_version(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    crm, url = receiver
    store = await store_with(tmp_path / "state.db", [outcome(k) for k in keys(10)])
    try:
        await run_writebacks(settings(tmp_path, hook(url)), store)
        await change(store, "L00004", disposition="Call back")
        written = await run_writebacks(settings(tmp_path, hook(url)), store)
    finally:
        await store.close()

    assert written == {"crm-hook": 1}
    assert crm.seen[("jodo", "L00004", 2)] == 1
    assert crm.items[-1]["disposition"] == "Call back"


async def test_a_record_the_crm_refuses_is_kept_with_its_reason_and_not_sent_again(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    crm, url = receiver
    crm.refuse = {"L00037"}
    store = await store_with(tmp_path / "state.db", [outcome(k) for k in keys(100)])
    try:
        written = await run_writebacks(settings(tmp_path, hook(url)), store)
        requests = crm.requests
        again = await run_writebacks(settings(tmp_path, hook(url)), store)
        history = await store.lead_history("L00037")
        last = await status(store, "crm-hook")
    finally:
        await store.close()

    assert written == {"crm-hook": 99} and again == {"crm-hook": 0}
    assert ("jodo", "L00037", 1) not in crm.seen and len(crm.seen) == 99
    assert crm.requests == requests  # nothing left to send
    (event,) = [e for e in history["events"] if e["kind"] == "writeback.refused"]
    assert "HTTP 422" in event["detail"] and "unknown lead L00037" in event["detail"]
    assert last["refused"] == 0 and last["error"] is None  # the second pass refused nothing


async def test_a_wrong_secret_stops_the_writeback_and_keeps_everything_pending(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    crm, url = receiver
    store = await store_with(tmp_path / "state.db", [outcome(k) for k in keys(30)])
    try:
        refused = await run_writebacks(settings(tmp_path, hook(url, secret="wrong")), store)
        stopped = await status(store, "crm-hook")
        fixed = await run_writebacks(settings(tmp_path, hook(url)), store)
        recovered = await status(store, "crm-hook")
    finally:
        await store.close()

    assert refused == {"crm-hook": 0}
    assert crm.bad_signatures == 1  # stopped at the first refusal: no retry storm
    assert "HTTP 401" in stopped["error"] and "wrong" not in stopped["error"]
    assert fixed == {"crm-hook": 30} and recovered["error"] is None


async def test_an_unreachable_crm_defers_the_batch_to_a_later_pass(tmp_path: Path) -> None:
    store = await store_with(tmp_path / "state.db", [outcome(k) for k in keys(5)])
    try:
        written = await run_writebacks(
            settings(tmp_path, hook("http://127.0.0.1:9/crm/hook", attempts=2)), store
        )
        last = await status(store, "crm-hook")
        pending = await store.pending_writeback("crm-hook")
    finally:
        await store.close()

    assert written == {"crm-hook": 0}
    assert "ConnectError" in last["error"]
    assert len(pending) == 5


async def test_agent_statuses_are_written_back_the_same_way(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    crm, url = receiver
    store = await store_with(tmp_path / "state.db", [])
    try:
        await store.record_agents(
            [
                AgentStatus("jodo", "asha", "Ready", "Available"),
                AgentStatus("jodo", "ravi", "Break", "Lunch", duration_s=300),
            ]
        )
        written = await run_writebacks(
            settings(tmp_path, hook(url, name="agents", what="agents")), store
        )
    finally:
        await store.close()

    assert written == {"agents": 2}
    by_login = {i["login"]: i for i in crm.items}
    assert by_login["ravi"]["status"] == "Break" and by_login["ravi"]["duration_s"] == 300
    assert by_login["asha"]["description"] == "Available"


@dataclass
class Flood:
    """A broken or hostile CRM: every answer is a 500 whose body is 60 MB, written as the
    client takes it (a raw socket, so what it got out is what the client read, plus
    what the sockets' buffers hold)."""

    sent: list[int] = field(default_factory=list)

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        await reader.readexactly(int(length.group(1)) if length else 0)
        self.sent.append(0)
        size, chunk = 60 << 20, b"x" * (1 << 20)
        writer.write(b"HTTP/1.1 500 Oops\r\nContent-Type: text/html\r\n")
        writer.write(f"Content-Length: {size}\r\n\r\n".encode())
        try:
            for _ in range(size // len(chunk)):
                writer.write(chunk)
                await writer.drain()
                self.sent[-1] += len(chunk)
        except (ConnectionError, OSError):
            pass  # the client hung up: what we measure
        finally:
            writer.close()


async def test_a_flood_of_an_error_reply_is_read_only_as_far_as_its_reason_needs(
    tmp_path: Path,
) -> None:
    flood = Flood()
    server = await asyncio.start_server(flood.answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = await store_with(tmp_path / "state.db", [outcome(k) for k in keys(5)])
    try:
        url = f"http://127.0.0.1:{port}/crm/hook"
        written = await run_writebacks(settings(tmp_path, hook(url, attempts=4)), store)
        last = await status(store, "crm-hook")
        pending = await store.pending_writeback("crm-hook")
    finally:
        await store.close()
        server.close()

    assert written == {"crm-hook": 0} and len(pending) == 5  # kept for a later pass
    assert len(flood.sent) >= 2  # retried, each answer a flood
    # syncd hung up once it had the first KB it needs for the reason: no answer got out
    # more than the sockets' buffers hold, never the 60 MB meant for it.
    assert max(flood.sent) < 16 << 20, flood.sent
    assert len(last["error"]) < 4096 and "500" in last["error"]
