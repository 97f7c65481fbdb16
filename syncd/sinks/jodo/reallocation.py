"""Reallocation: leads of an agent absent too long move to a fallback agent, once.

The document's use case for ``reallocatedata``: an agent is absent or has left,
and their scheduled calls must reach someone else. Each move is recorded per
lead in kv (scope ``jodo:<sink>:realloc``) before the call (with its target, so
a retry after a crash moves the lead to the same agent) and marked done after,
with an event on the lead. A lead is moved again only if the CRM assigns it to
another agent. Later pushes of a moved lead keep the fallback agent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from syncd.core.model import AgentStatus, Lead, QueuedLead
from syncd.core.reasons import DIALER_FAILED, log_reason
from syncd.errors import PermanentError, RetryableError, SinkConfigError
from syncd.sinks.jodo.agents import absent_for
from syncd.sinks.jodo.client import NOT_FOUND, jodo_time
from syncd.sinks.jodo.dispositions import closing_rule
from syncd.sinks.jodo.leads import delivered_leads
from syncd.sinks.jodo.part import JodoPart


class Reallocator(JodoPart):
    """Moves the leads of absent agents with reallocatedata, exactly once per absence."""

    def setup(self) -> None:
        name = self.cfg.name
        self.settings = self.cfg.reallocation
        self.marks = f"jodo:{name}:realloc"
        self.moved_counts = f"jodo:{name}:realloc-count"
        self.absent_scope = f"jodo:{name}:absent-since"
        self.absent_words = {" ".join(s.lower().split()) for s in self.settings.absent_statuses}

    @property
    def enabled(self) -> bool:
        return bool(self.settings.fallback)

    async def mark(self, key: str, lead: Lead) -> dict[str, Any] | None:
        """Return the reallocation mark of a lead, None if none applies to its current agent."""
        return applying(await self.store.kv_get(self.marks, key), lead)

    async def moved_agents(self, leads: Sequence[QueuedLead]) -> dict[str, str]:
        """Return key -> fallback login for leads syncd moved, so a later push keeps the move
        (the batch's marks read at once: this is on every push)."""
        if not self.enabled:
            return {}
        assigned = [q for q in leads if q.lead.agent]
        texts = await self.store.kv_many(self.marks, [q.key for q in assigned]) if assigned else {}
        moved: dict[str, str] = {}
        for q in assigned:
            mark = applying(texts.get(q.key), q.lead)
            if mark is not None and mark.get("state") == "done":
                moved[q.key] = str(mark["to"])
        return moved

    async def absences(self, agents: dict[str, AgentStatus], now: datetime) -> dict[str, float]:
        """Return login -> seconds absent for every absent agent (present ones are left out)."""
        out: dict[str, float] = {}
        for login, agent in agents.items():
            first = await self.store.kv_get(self.absent_scope, login)
            seconds = absent_for(agent, self.absent_words, now, float(first) if first else None)
            if seconds is None:
                if first:
                    await self.store.kv_set(self.absent_scope, login, None)
                continue
            if not first:
                await self.store.kv_set(self.absent_scope, login, str(now.timestamp()))
            out[login] = seconds
        return out

    async def run(self, agents: dict[str, AgentStatus], now: datetime) -> int:
        """Move leads of agents absent longer than ``after_s``; return how many moved."""
        if not self.enabled:
            return 0
        absent = await self.absences(agents, now)
        gone = {a for a, s in absent.items() if s >= self.settings.after_s}
        if not gone:
            return 0
        fallbacks = [f for f in self.settings.fallback if f in agents and f not in absent]
        if not fallbacks:
            self.log.warning(
                "sink.reallocation.no_fallback",
                absent=sorted(gone),
                reason="no fallback agent is present (or userStatus does not know them)",
            )
            return 0
        counts = {f: 0 for f in fallbacks}
        todo: list[tuple[str, str, Lead]] = []
        async for key, number, lead in delivered_leads(self.store, self.cfg.name):
            if lead.agent in counts:
                counts[lead.agent] += 1
            if lead.agent in gone and closing_rule(lead, self.cfg.dispositions.rules) is None:
                todo.append((key, number or self.dial(lead.phone), lead))
        for login in counts:
            counts[login] += int(await self.store.kv_get(self.moved_counts, login) or 0)
        moved = 0
        for key, number, lead in todo:
            if moved >= self.settings.max_per_poll:
                break
            agent = agents[lead.agent]
            if await self._move(key, number, lead, absent[lead.agent], agent, counts, now):
                moved += 1
        if moved:
            self.log.info("sink.reallocation.done", moved=moved, absent=sorted(gone))
        return moved

    async def _move(
        self,
        key: str,
        number: str,
        lead: Lead,
        seconds: float,
        agent: AgentStatus,
        counts: dict[str, int],
        now: datetime,
    ) -> bool:
        mark = await self.mark(key, lead)
        if mark is not None and mark.get("state") in ("done", "failed"):
            return False
        attempts = int(mark.get("attempts", 0)) if mark else 0
        target = str(mark["to"]) if mark and mark.get("to") in counts else None
        if target is None:
            target = min(counts, key=lambda f: (counts[f], self.settings.fallback.index(f)))
        mark = {
            "from": lead.agent,
            "to": target,
            "lead_agent": lead.agent,
            "state": "pending",
            "attempts": attempts + 1,
            "at": now.isoformat(),
        }
        await self.store.kv_set(self.marks, key, json.dumps(mark))
        payload = {
            "contactnumber": number,
            "login": target,
            "calldatetime": jodo_time(lead.call_at or now, self.cfg.timezone),
            "customercode": lead.key if self.cfg.updateparam == "customercode" else 0,
        }
        try:
            reply = await self.client.call("reallocatedata", payload)
            if reply.code == NOT_FOUND:
                raise PermanentError("reallocatedata: customer data not found", vendor="jodo")
        except SinkConfigError:
            raise
        except (RetryableError, PermanentError) as exc:
            final = mark["attempts"] >= self.settings.max_attempts
            log_reason(
                self.log,
                "warning",
                "sink.reallocation.failed",
                str(exc),
                DIALER_FAILED,
                key=key,
                to=target,
                final=final,
            )
            if final:
                mark["state"] = "failed"
                await self.store.kv_set(self.marks, key, json.dumps(mark))
                await self.store.add_event(
                    self.cfg.name,
                    key,
                    "jodo.reallocate.failed",
                    f"{lead.agent} -> {target}: {exc} (gave up after {mark['attempts']} attempts)",
                )
            return False
        mark["state"] = "done"
        await self.store.kv_set(self.marks, key, json.dumps(mark))
        counts[target] += 1
        moved_before = int(await self.store.kv_get(self.moved_counts, target) or 0)
        await self.store.kv_set(self.moved_counts, target, str(moved_before + 1))
        what = agent.description or agent.status
        await self.store.add_event(
            self.cfg.name,
            key,
            "jodo.reallocated",
            f"{lead.agent} -> {target} ({lead.agent} {what} for {seconds:.0f}s)",
        )
        return True


def applying(text: str | None, lead: Lead) -> dict[str, Any] | None:
    """Return a stored reallocation mark when it applies to the lead's current agent (the
    CRM may have assigned it another since), else None."""
    if not text:
        return None
    mark = dict(json.loads(text))
    return mark if mark.get("lead_agent") == lead.agent else None
