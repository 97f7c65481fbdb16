"""CRM-side dispositions: saveDisposition so the dialer stops working a lead the CRM closed.

Jodo has no delete; a disposition is how a record leaves the dialing queue. A
lead is disposed when one of its mapped fields holds a closing value
(``dispositions.rules``) or, with ``dispositions.on_delete``, when the CRM
removed it. The decision is pure (:func:`closing_rule`); :class:`Disposer` does
the calls, one lead per request, as the API takes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from syncd.core.model import Lead, PushResult, QueuedLead
from syncd.errors import PermanentError, RetryableError, SinkConfigError
from syncd.sinks.jodo.client import NOT_FOUND, jodo_time, reply_text
from syncd.sinks.jodo.config import DispositionRule
from syncd.sinks.jodo.part import JodoPart


@dataclass(frozen=True, slots=True)
class Disposal:
    """What to send for one lead."""

    dispomasterid: int
    disporeasonid: int
    remarks: str
    why: str  # for the event and the log: "crm_status=DNC" or "removed from the CRM"


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def closing_rule(lead: Lead, rules: Sequence[DispositionRule]) -> Disposal | None:
    """Return the disposal a lead's closing field calls for, None when the CRM has not closed it."""
    for rule in rules:
        value = lead.fields.get(rule.field, "")
        if value and _norm(value) in {_norm(v) for v in rule.values}:
            return Disposal(
                rule.dispomasterid, rule.disporeasonid, rule.remarks, f"{rule.field}={value}"
            )
    return None


class Disposer(JodoPart):
    """Sends saveDisposition for leads and turns each reply into a PushResult."""

    async def dispose(
        self, items: Sequence[tuple[QueuedLead, Disposal]], agents: dict[str, str]
    ) -> list[PushResult]:
        """Return one result per lead; ``agents`` holds reallocated logins by lead key."""
        gate = asyncio.Semaphore(self.cfg.push_concurrency)

        async def one(queued: QueuedLead, disposal: Disposal) -> PushResult:
            async with gate:
                return await self._one(queued, disposal, agents.get(queued.key))

        return list(await asyncio.gather(*(one(q, d) for q, d in items)))

    async def _one(
        self, queued: QueuedLead, disposal: Disposal, moved_to: str | None
    ) -> PushResult:
        lead = queued.lead
        login = self.cfg.dispositions.login or moved_to or lead.agent
        if not login:
            return PushResult.rejected(
                queued.key,
                "saveDisposition needs a login: set dispositions.login or assign the lead an agent",
            )
        number = queued.vendor_ref or (self.dial(lead.phone) if lead.phone else "")
        if not number:
            return PushResult.rejected(queued.key, "no number known for this lead at the dialer")
        payload = {
            "login": login,
            "dispomasterid": disposal.dispomasterid,
            "disporeasonid": disposal.disporeasonid,
            "remarks": disposal.remarks,
            "selecteddatetime": jodo_time(datetime.now(UTC), self.cfg.timezone),
            "contactvalue": number,
            "media": self.cfg.media_name,
        }
        try:
            reply = await self.client.call("saveDisposition", payload)
        except SinkConfigError:
            raise
        except RetryableError as exc:
            return PushResult.retry(queued.key, str(exc), exc.retry_after)
        except PermanentError as exc:
            return PushResult.rejected(queued.key, exc.reason)
        if reply.code == NOT_FOUND:
            return PushResult.rejected(queued.key, "saveDisposition: customer data not found")
        await self.store.add_event(
            self.cfg.name,
            queued.key,
            "jodo.disposed",
            f"saveDisposition {disposal.dispomasterid}/{disposal.disporeasonid} "
            f"as {login} ({disposal.why})",
        )
        self.log.info("sink.lead.disposed", key=queued.key, why=disposal.why, login=login)
        # The dialer's answer goes into the lead's history and the audit (a withdrawal's).
        said = f"saveDisposition {disposal.dispomasterid}/{disposal.disporeasonid}: "
        return PushResult.delivered(queued.key, reply=said + reply_text(reply.body))
