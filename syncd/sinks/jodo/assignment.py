"""Which agent a lead may be assigned to: only a login the dialer has.

A login is known when syncd provisioned it (delivered from the agents outbox) or
Jodo's userStatus listed it. A lead naming another login is, by the sink's
``provisioning.unknown_agent``: sent unassigned, refused with the reason, or sent as
it is. A login still waiting in the agents outbox makes its leads wait too (retried
shortly), so a lead and its new agent can be pulled in the same pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from syncd.core.model import PushResult, QueuedLead
from syncd.core.reconcile import ACTIVE_STATES
from syncd.sinks.jodo.agents import MISSING
from syncd.state.base import SinkStore

WAIT_FOR_AGENT_S = 30.0


@dataclass
class Assignment:
    """The batch's leads sorted by whether their agent exists."""

    go: list[QueuedLead] = field(default_factory=list)
    held_back: list[PushResult] = field(default_factory=list)  # refused, or waiting for the agent
    unassigned: dict[str, str] = field(default_factory=dict)  # key -> the unknown login


async def check_agents(
    store: SinkStore,
    sink: str,
    outbox: str | None,
    batch: Sequence[QueuedLead],
    mode: str,
) -> Assignment:
    """Return which leads go as they are, which go unassigned and which are held back."""
    result = Assignment()
    wanted = {q.lead.agent for q in batch if q.lead.agent}
    if mode == "send" or not wanted:
        result.go = list(batch)
        return result
    provisioned = await store.lookup(outbox, sorted(wanted)) if outbox else {}
    listed = {
        a["login"]
        for a in await store.agent_dump()
        if a["sink"] == sink and a["status"] != MISSING and a["login"] in wanted
    }
    for q in batch:
        login = q.lead.agent
        stored = provisioned.get(login)
        if not login or login in listed or (stored is not None and stored.state == "delivered"):
            result.go.append(q)
        elif stored is not None and stored.state in ACTIVE_STATES:
            why = f"agent {login!r} is still being provisioned into the dialer"
            result.held_back.append(PushResult.retry(q.key, why, retry_after=WAIT_FOR_AGENT_S))
        elif mode == "refuse":
            why = f"agent {login!r} is no login the dialer has (not provisioned, not listed)"
            result.held_back.append(PushResult.rejected(q.key, why))
        else:
            result.unassigned[q.key] = login
            result.go.append(q)
    return result


def unassigned_note(login: str | None) -> str:
    """Return what a lead's history adds when it went without its unknown agent."""
    return f"; sent unassigned: agent {login!r} is no login the dialer has" if login else ""
