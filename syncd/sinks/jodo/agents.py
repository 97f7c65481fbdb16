"""Agent status with userStatus: who is logged in, since when, kept in the store.

A login the dialer answers for with a failed item (its own ``status`` not 3) is
recorded as status ``missing``: the agent has left or the CRM names someone the
dialer does not know. A login absent from the answer altogether is not guessed at.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from syncd.core.model import AgentStatus
from syncd.sinks.jodo.client import SUCCESS, JodoClient, from_jodo_time, items_of
from syncd.sinks.jodo.client import status_of as _status_of
from syncd.sinks.jodo.config import AgentSettings
from syncd.state.base import SinkStore

MISSING = "missing"


def _int(value: object) -> int | None:
    try:
        return int(float(str(value).strip()))
    except ValueError:
        return None


def parse_agent(
    item: dict[str, Any], *, sink: str, zone: str, change_format: str, now: datetime
) -> AgentStatus | None:
    """Return the AgentStatus one ``statusdata`` item reports, None if it names no login."""
    login = str(item.get("login") or item.get("loginid") or "").strip()
    if not login:
        return None
    code, desc = _status_of(item)
    if "currentstatus" not in item and code not in SUCCESS:
        return AgentStatus(
            sink=sink,
            login=login,
            status=MISSING,
            description=desc or "not known to the dialer",
            observed_at=now,
            raw=dict(item),
        )
    return AgentStatus(
        sink=sink,
        login=login,
        status=str(item.get("currentstatus", "")).strip(),
        description=str(item.get("currentstatusdesc") or "").strip(),
        duration_s=_int(item.get("duration")),
        changed_at=from_jodo_time(item.get("statuschangetime"), zone, [change_format]),
        observed_at=now,
        raw=dict(item),
    )


def absent_for(
    agent: AgentStatus, absent: set[str], now: datetime, first_seen: float | None
) -> float | None:
    """Return how many seconds the agent has been absent, None when present."""
    words = {" ".join(agent.status.lower().split()), " ".join(agent.description.lower().split())}
    if not words & absent:
        return None
    if agent.changed_at is not None:
        return max(0.0, (now - agent.changed_at).total_seconds())
    if agent.duration_s is not None:
        return float(agent.duration_s)
    return max(0.0, now.timestamp() - (first_seen or now.timestamp()))


class AgentPoller:
    """Asks userStatus about agent logins and keeps what it says in the store."""

    def __init__(
        self,
        client: JodoClient,
        store: SinkStore,
        sink: str,
        settings: AgentSettings,
        zone: str,
        log: Any,
    ) -> None:
        self.client = client
        self.store = store
        self.sink = sink
        self.settings = settings
        self.zone = zone
        self.log = log

    async def poll(self, logins: Sequence[str], now: datetime) -> dict[str, AgentStatus]:
        """Return each answered login's status (by login); the store keeps them too."""
        found = await self.ask(logins, now)
        changed = await self.store.record_agents(found.values()) if found else 0
        log = self.log.info if changed else self.log.debug
        log("sink.agents.polled", asked=len(logins), answered=len(found), changed=changed)
        return found

    async def ask(
        self, logins: Sequence[str], now: datetime, *, retry: bool = True
    ) -> dict[str, AgentStatus]:
        """Return each answered login's status (by login), keeping nothing."""
        found: dict[str, AgentStatus] = {}
        wanted = sorted(set(logins))
        # The answer's spelling of a login may differ in case from the one asked about.
        asked = {login.lower(): login for login in wanted}
        size = self.settings.batch_size
        for start in range(0, len(wanted), size):
            reply = await self.client.call(
                "userStatus", {"loginids": wanted[start : start + size]}, per_item=True, retry=retry
            )
            body = reply.body
            if reply.code is not None:
                continue  # a success without items: nobody to report
            for item in items_of(body):
                agent = parse_agent(
                    item,
                    sink=self.sink,
                    zone=self.zone,
                    change_format=self.settings.change_time_format,
                    now=now,
                )
                if agent is not None:
                    agent.login = asked.get(agent.login.lower(), agent.login)
                    found[agent.login] = agent
        return found
