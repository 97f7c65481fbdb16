"""The daemon's LISTEN on PostgreSQL CRMs: a change there wakes that source's pull at once.

A SQL source with ``listen = "channel"`` keeps one connection to its CRM listening
on the channel the CRM's trigger NOTIFYs (``syncd sql trigger`` prints it). Each
notification asks the runtime to pull that source now; notifications that arrive
while it pulls make one more pull after it, however many they were. The schedule
stays the backstop: a lost connection costs speed, never leads. While it is lost
the daemon says so (``source.listen.lost`` once, a warning on /readyz and the
page, ``syncd_source_listening`` 0 on /metrics), tries again with a growing wait,
and pulls once when it is back (a change made meanwhile notified no one).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog

from syncd.crm_db import describe_db_error
from syncd.sources.sql import SqlSourceConfig
from syncd.state.postgres import dsn_of

log = structlog.get_logger("syncd.source")

RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0


def listening_sources(sources: list[Any]) -> list[SqlSourceConfig]:
    """Return the SQL sources that listen on a channel."""
    return [s for s in sources if isinstance(s, SqlSourceConfig) and s.listen]


class CrmListeners:
    """One listening connection per SQL source with ``listen``; each wakes its pull."""

    def __init__(self, sources: list[Any], wake_pull: Callable[[str], None]) -> None:
        self.sources = listening_sources(sources)
        self.wake_pull = wake_pull
        self.lost: dict[str, str] = {}  # source → why it is not listening now
        self._up: set[str] = set()  # sources whose connection listens now
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for cfg in self.sources:
            self._tasks.append(asyncio.create_task(self._keep(cfg), name=f"listen:{cfg.name}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def listening(self) -> dict[str, bool]:
        """Return per listening source whether its connection listens now (not yet: False)."""
        return {cfg.name: cfg.name in self._up for cfg in self.sources}

    def warnings(self) -> list[str]:
        """Return a line per source whose listening connection is lost."""
        return [
            f"source {name}: not listening for the CRM's changes ({why}); it is pulled on"
            " its schedule meanwhile"
            for name, why in sorted(self.lost.items())
        ]

    async def _keep(self, cfg: SqlSourceConfig) -> None:
        """Listen until stopped, connecting again after each loss."""
        wait = RETRY_FIRST_S
        while True:
            try:
                await self._listen(cfg)
            except Exception as exc:  # any failure to listen: the schedule still pulls
                why = describe_db_error(exc, cfg.url)
            else:  # it listened, then the connection went: try again soon
                why, wait = "the connection to the CRM was closed", RETRY_FIRST_S
            if cfg.name not in self.lost:
                log.warning(
                    "source.listen.lost",
                    source=cfg.name,
                    channel=cfg.listen,
                    reason=why,
                    action=f"pulled on its schedule meanwhile; listening again in {wait:.0f} s",
                )
            self.lost[cfg.name] = why
            await asyncio.sleep(wait)
            wait = min(wait * 2, RETRY_MAX_S)

    async def _listen(self, cfg: SqlSourceConfig) -> None:
        """Listen on one connection until it closes."""
        conn = await asyncpg.connect(
            dsn_of(cfg.url.get_secret_value()),
            timeout=cfg.timeout_s,
            # what the DBA sees in pg_stat_activity: whose session this is
            server_settings={"application_name": f"syncd listen {cfg.name}"[:63]},
        )
        closed = asyncio.Event()
        name = cfg.name

        def notified(*_: Any) -> None:
            self.wake_pull(name)

        try:
            conn.add_termination_listener(lambda _c: closed.set())
            await conn.add_listener(str(cfg.listen), notified)
            self._up.add(name)
            if self.lost.pop(name, None) is not None:
                log.info("source.listen.resumed", source=name, channel=cfg.listen)
                self.wake_pull(name)  # changes made while nobody listened notified no one
            else:
                log.info("source.listening", source=name, channel=cfg.listen)
            await _until_closed(conn, closed)
        finally:
            self._up.discard(name)
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.close(timeout=2))


async def _until_closed(conn: Any, closed: asyncio.Event) -> None:
    """Return once the connection is gone; a quiet one is checked every few seconds (a
    database restarted behind a proxy may leave the socket open but dead)."""
    while not closed.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(closed.wait(), timeout=10)
        if not closed.is_set():
            try:
                await asyncio.wait_for(conn.execute("SELECT 1"), timeout=10)
            except (TimeoutError, OSError, asyncpg.PostgresError):
                return
