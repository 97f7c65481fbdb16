"""The webhook sources' HTTP listeners: one Starlette app on its own address per source.

``POST <path>`` with one lead (a JSON object) or a batch (an array). The answer
comes once the leads are committed to the store, so a crash after it loses
nothing; the commit wakes the routed sinks' pushes. Answers:

- 202 every row went through (``accepted``: their indexes);
- 400 some rows refused (``refused``: row, field, reason; the other rows are
  committed all the same and listed in ``accepted``), or a body that holds no lead;
- 401 not authenticated (no detail); 409 the same signed request is still being
  processed; a replay of one answered gets that answer again (``replayed``: true);
- 413 a body past ``max_body_bytes`` (read with that cap, never whole) or over
  ``max_rows`` leads; 429 a routed sink's outbox holds ``max_backlog`` leads or more;
  503 the store failed: both with ``Retry-After``; 500 a bug (nothing committed).

The decisions are pure functions in :mod:`syncd.sources.webhook`; this module does
the I/O around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from syncd.config import Settings
from syncd.core.mapping import required_columns
from syncd.daemon.connections import connection_limits, guarded_protocol, http_ports
from syncd.daemon.perimeter import Secured
from syncd.daemon.probes import _bind, _Server, parse_listen
from syncd.errors import StoreError, SyncdError
from syncd.sources.base import Chunk
from syncd.sources.webhook import (
    Answer,
    BodyRefused,
    Replays,
    WebhookSourceConfig,
    answer,
    batch_keys,
    next_group,
    parse_leads,
    refusal,
    to_chunk,
)
from syncd.state.base import ChunkWrite

log = structlog.get_logger("syncd.webhook")

# Commits POSTs' chunks (keys not overlapping) in one transaction: what each wrote, or its bug
Ingest = Callable[[WebhookSourceConfig, list[Chunk]], Awaitable[list[ChunkWrite | Exception]]]
Backlog = Callable[[WebhookSourceConfig], Awaitable[int]]
Observe = Callable[[str, int], None]  # (source, status): the metrics' count of answers


class TooLarge(Exception):
    """The body is past the cap."""


async def read_capped(request: Request, cap: int, timeout_s: float) -> bytes:
    """Return the body, reading no more than ``cap`` bytes of it; raise TooLarge past it,
    TimeoutError when it has not all come within ``timeout_s`` (a trickle holds a slot)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise TooLarge
    parts: list[bytes] = []
    size = 0
    async with asyncio.timeout(timeout_s):
        async for part in request.stream():
            size += len(part)
            if size > cap:
                raise TooLarge
            parts.append(part)
    return b"".join(parts)


def _json(doc: dict[str, Any], status: int, **headers: str) -> Response:
    return JSONResponse(doc, status_code=status, headers=headers or None)


# The signatures seen, per source, for the life of the process: a reload builds new
# endpoints, and a replay within the tolerance must still be known for one after it
# (else a captured request brings back a lead's older version).
_REPLAYS: dict[str, Replays] = {}


def replay_memory(source: str, tolerance_s: float) -> Replays:
    """Return the process's replay memory of ``source`` (the same across reloads)."""
    memory = _REPLAYS.get(source)
    if memory is None or memory.keep_s != 2 * tolerance_s:
        memory = _REPLAYS[source] = Replays(tolerance_s)
    return memory


@dataclass
class _Waiting:
    chunk: Chunk
    keys: frozenset[str]
    done: asyncio.Future[ChunkWrite]


class GroupCommit:
    """Commits one source's POSTs: those arriving while a commit runs go in the next, one
    transaction for all (a burst of 100 is a few commits, not 100 in a row).

    A lone POST commits at once. Each is answered once the commit holding its leads
    is done; a sender gone before its commit began commits nothing.
    """

    def __init__(self, commit: Callable[[list[Chunk]], Awaitable[list[ChunkWrite | Exception]]]):
        self._commit = commit
        self._waiting: list[_Waiting] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, chunk: Chunk, keys: frozenset[str]) -> ChunkWrite:
        """Return what the chunk committed, once committed; raise what kept it out."""
        done: asyncio.Future[ChunkWrite] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(chunk, keys, done))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="webhook.commit")
        return await done  # cancelled with its request; a group already holding it commits

    async def _run(self) -> None:
        try:
            while group := self._next():
                try:
                    results: list[ChunkWrite | Exception] = await self._commit(
                        [w.chunk for w in group]
                    )
                except Exception as exc:  # the store failed: nothing of the group committed
                    results = [exc] * len(group)
                for waiting, result in zip(group, results, strict=True):
                    if waiting.done.done():
                        continue  # its sender went away
                    if isinstance(result, Exception):
                        waiting.done.set_exception(result)
                    else:
                        waiting.done.set_result(result)
        finally:  # cancelled (the loop is closing): no request is left waiting for ever
            for waiting in self._waiting:
                waiting.done.cancel()
            self._waiting.clear()

    def _next(self) -> list[_Waiting]:
        """Take the next group off the waiting POSTs (see ``next_group``)."""
        self._waiting = [w for w in self._waiting if not w.done.done()]
        picked = set(next_group([(w.keys, len(w.chunk.rows)) for w in self._waiting]))
        group = [w for i, w in enumerate(self._waiting) if i in picked]
        self._waiting = [w for i, w in enumerate(self._waiting) if i not in picked]
        return group


class Endpoint:
    """One webhook source's request handling: size, authentication, replay, backlog, commit."""

    def __init__(
        self,
        config: WebhookSourceConfig,
        required: set[str],
        ingest: Ingest,
        backlog: Backlog,
        observe: Observe | None = None,
        clock: Callable[[], float] = time.time,
        key_fields: frozenset[str] = frozenset(),
    ) -> None:
        self.config = config
        self.required = required
        self.key_fields = key_fields  # the routes' key fields: POSTs sharing a key never group
        self.backlog = backlog
        self.observe = observe
        self.clock = clock
        self.replays = replay_memory(config.name, config.tolerance_s)
        self.commits = GroupCommit(functools.partial(ingest, config))

    async def handle(self, request: Request) -> Response:
        response = await self._answer(request)
        if self.observe is not None:
            self.observe(self.config.name, response.status_code)
        return response

    async def _answer(self, request: Request) -> Response:
        cfg = self.config
        bound = log.bind(source=cfg.name)
        try:
            body = await read_capped(request, cfg.max_body_bytes, cfg.body_timeout_s)
        except TooLarge:
            bound.warning("webhook.refused", status=413, why="body too large")
            return _json({"error": f"the body is larger than {cfg.max_body_bytes} bytes"}, 413)
        except ClientDisconnect:
            return Response(status_code=400)
        except TimeoutError:
            bound.warning("webhook.refused", status=408, why="body not sent in time")
            return _json({"error": f"the body did not come within {cfg.body_timeout_s:g} s"}, 408)
        received = self.clock()  # the body is in: speed to lead starts before any wait of ours
        why = refusal(cfg, request.headers, body, received)
        if why is not None:  # the sender learns nothing of why; the operator does
            bound.warning("webhook.unauthorized", why=why)
            extra = {"WWW-Authenticate": "Bearer"} if cfg.token is not None else {}
            return _json({"error": "unauthorized"}, 401, **extra)
        signature = request.headers.get(cfg.signature_header) if cfg.secret is not None else None
        if signature:
            seen = self.replays.begin(signature, self.clock())
            if seen is not None:
                return self._replayed(seen.answer)
        try:
            said = await self._commit(body, received)
        except BaseException:
            if signature:
                self.replays.forget(signature)
            raise
        if signature:
            if said.status in (429, 500, 503):
                self.replays.forget(signature)  # nothing committed: its retry is no replay
            else:
                self.replays.finish(signature, said)
        headers = {"Retry-After": str(cfg.retry_after_s)} if said.status in (429, 503) else {}
        return _json(said.document, said.status, **headers)

    def _replayed(self, first: Answer | None) -> Response:
        if first is None:
            return _json(
                {"error": "this request is being processed; send it again shortly"},
                409,
                **{"Retry-After": "1"},
            )
        log.info("webhook.replayed", source=self.config.name, status=first.status)
        return _json({**first.document, "replayed": True}, first.status)

    async def _commit(self, body: bytes, received: float) -> Answer:
        cfg = self.config
        bound = log.bind(source=cfg.name)
        try:
            waiting = await self.backlog(cfg)
            if waiting >= cfg.max_backlog:
                bound.warning("webhook.backlog", waiting=waiting, max_backlog=cfg.max_backlog)
                return Answer(429, {"error": "too many leads are waiting for the dialer"})
            try:
                batch = parse_leads(body, cfg.max_rows)
            except BodyRefused as exc:
                bound.warning("webhook.refused", status=exc.status, why=str(exc))
                return Answer(exc.status, {"error": str(exc), "accepted": [], "refused": []})
            origin = f"post-{uuid.uuid4().hex[:12]}"
            chunk = to_chunk(batch, cfg.name, origin, self.required, self.key_fields)
            chunk.received_at = received
            write = await self.commits.submit(chunk, batch_keys(batch, self.key_fields))
        except StoreError as exc:
            bound.error("webhook.store.failed", reason=str(exc))
            return Answer(503, {"error": "the leads could not be stored; send them again"})
        except Exception as exc:  # a bug: the sender may try again; the log has the traceback
            bound.error("webhook.failed", reason=type(exc).__name__, exc_info=True)
            return Answer(500, {"error": "the leads could not be taken; send them again"})
        said = answer(batch, write.rejects, cfg.name)
        bound.info(
            "webhook.received",
            origin=origin,
            rows=batch.count,
            accepted=len(said.document["accepted"]),
            refused=len(said.document["refused"]),
            status=said.status,
        )
        return said


def create_app(endpoint: Endpoint) -> Secured:
    """Return the ASGI app of one webhook source: its path, POST only.

    Every answer carries the health port's browser headers (nothing to frame, sniff or
    keep). There is no ``Host:`` check: a sender may use any name for this address, and
    a DNS-rebinding page cannot sign a request or learn anything from a 401.
    """
    app = Starlette(routes=[Route(endpoint.config.path, endpoint.handle, methods=["POST"])])
    app.router.redirect_slashes = False  # only POST <path>: no 307 to a path with a slash
    return Secured(app)


class WebhookServer:
    """Serves one source's app on its own address, bound up front (a taken port fails clearly)."""

    def __init__(self, endpoint: Endpoint, ports: int = 1) -> None:
        self.endpoint = endpoint
        cfg = endpoint.config
        # each connection is a file the sync may need (syncd.daemon.connections)
        self.limits = connection_limits(cfg.name, cfg.max_connections, cfg.head_timeout_s, ports)
        self.port: int | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        cfg = self.endpoint.config
        host, port = parse_listen(cfg.listen)
        try:
            sock = _bind(host, port)
        except SyncdError:
            raise SyncdError(
                f"sources.{cfg.name}.listen {cfg.listen}: cannot listen there (taken?); "
                "pick another address"
            ) from None
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(self.endpoint),
            http=guarded_protocol(self.limits),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,  # a POST being committed finishes first
            proxy_headers=False,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name=cfg.name)
        while not self._server.started and not self._task.done():  # noqa: ASYNC110 - no event in uvicorn
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()
            raise SyncdError(f"webhook source {cfg.name} on {cfg.listen} stopped at start")
        log.info(
            "webhook.listening",
            source=cfg.name,
            host=host,
            port=self.port,
            path=cfg.path,
            max_connections=self.limits.max_connections,
        )

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, timeout=10)
        self._server = self._task = None


class Listeners:
    """Every webhook source of one configuration, started with it and stopped before its drain."""

    def __init__(
        self, settings: Settings, ingest: Ingest, backlog: Backlog, observe: Observe | None = None
    ) -> None:
        self.servers: list[WebhookServer] = []
        for cfg in settings.sources:
            if isinstance(cfg, WebhookSourceConfig):
                routes = [r for r in settings.routes if r.source == cfg.name]
                required = {c for r in routes for c in required_columns(r)}
                keys = frozenset(r.map.key for r in routes)
                endpoint = Endpoint(cfg, required, ingest, backlog, observe, key_fields=keys)
                self.servers.append(WebhookServer(endpoint, http_ports(settings)))

    async def start(self) -> None:
        for server in self.servers:
            await server.start()

    async def stop(self) -> None:
        """Stop taking POSTs; those being committed finish first (uvicorn's graceful stop)."""
        await asyncio.gather(*(s.stop() for s in self.servers))
