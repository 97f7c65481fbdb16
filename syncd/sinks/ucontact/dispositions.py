"""CRM dispositions on uContact (``api/DispositionCall``): the way a CRM closes a lead there.

When an agent or a supervisor sets a disposition in the CRM, the lead's mapped
fields carry it (``dispositions.l1`` … ``comment``). The sink then dispositions the
lead's last call — its ``guid`` from the call records syncd already polled — instead
of placing the lead again: a lead the CRM has dispositioned is not dialled anew. A
``reschedule`` value with a ``schedule`` time asks uContact to call again then.
Each disposition is sent once: the text last accepted is kept in the sink's ledger.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from syncd.core.model import Lead, PushResult, QueuedLead
from syncd.errors import SinkConfigError
from syncd.sinks.features import OptionalFeatures
from syncd.sinks.ucontact.client import UContactClient
from syncd.sinks.ucontact.config import DispositionFields, UContactSinkConfig
from syncd.sinks.ucontact.ledger import Ledger
from syncd.sinks.ucontact.wire import server_time
from syncd.state.base import SinkStore

RESOURCE = "api/DispositionCall"
DISPOSITIONS_OFF = (
    f"dispositions are off: this uContact has no {RESOURCE} for the API user, so the CRM's "
    "disposition is not sent (the lead is refused with this reason; `syncd retry` sends it "
    "once the server has the call); leads still go"
)


@dataclass(frozen=True, slots=True)
class CrmDisposition:
    """A disposition the CRM set on a lead, as DispositionCall takes it."""

    l1: str
    l2: str = ""
    l3: str = ""
    d1: str = ""
    d2: str = ""
    comment: str = ""
    schedule: str = ""  # server time, only for a reschedule

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def disposition_of(
    lead: Lead, fields: DispositionFields, server_zone: str
) -> CrmDisposition | None:
    """Return the disposition the CRM set on the lead, None while it has none.

    Raises ValueError when a reschedule has no readable time to call again.
    """

    def value(name: str | None) -> str:
        return lead.fields.get(name, "").strip() if name else ""

    l1 = value(fields.l1)
    if not l1:
        return None
    schedule = ""
    if l1.upper() in {v.upper() for v in fields.reschedule_values}:
        schedule = _server_time(value(fields.schedule), server_zone)
    return CrmDisposition(
        l1, value(fields.l2), value(fields.l3), value(fields.d1), value(fields.d2),
        value(fields.comment), schedule,
    )  # fmt: skip


def _server_time(text: str, zone: str) -> str:
    if not text:
        raise ValueError("a reschedule needs a time to call again in dispositions.schedule")
    try:
        when = datetime.fromisoformat(text.replace("/", "-"))
    except ValueError:
        raise ValueError(
            f"cannot read the reschedule time {text!r} (write 2026-12-24 10:00)"
        ) from None
    if when.tzinfo is None:  # written in the server's own time
        when = when.replace(tzinfo=ZoneInfo(zone))
    return server_time(when, zone)


class Dispositioner:
    """Sends a lead's CRM disposition on its last call; one result per lead."""

    def __init__(
        self,
        config: UContactSinkConfig,
        client: UContactClient,
        store: SinkStore,
        ledger: Ledger,
        dial: Callable[[str], str],
        features: OptionalFeatures | None = None,
    ) -> None:
        assert config.dispositions is not None
        self.features = features
        self.dial = dial
        self.cfg = config
        self.fields = config.dispositions
        self.client = client
        self.store = store
        self.ledger = ledger  # keeps the digest of the disposition last accepted

    async def send(self, q: QueuedLead, disposition: CrmDisposition) -> PushResult:
        if await self.ledger.disposition(q.key) == disposition.digest():
            return PushResult.delivered(q.key, reply="disposition already sent; nothing to do")
        call = await self.store.last_call(self.cfg.name, q.key)
        if not call or not call.get("call_id"):
            return PushResult.rejected(
                q.key,
                f"dispositioned in the CRM ({disposition.l1}) before uContact called it: "
                "no call to disposition, and the lead is not placed again",
            )
        agent = self.fields.agent or str(call.get("agent") or "")
        form = {
            "campaign": self.cfg.campaign,
            "agent": agent,
            "callerid": q.vendor_ref or self.dial(q.lead.phone),
            "guid": str(call["call_id"]),
            "l1": disposition.l1,
            "l2": disposition.l2,
            "l3": disposition.l3,
            "d1": disposition.d1,
            "d2": disposition.d2,
            "comment": disposition.comment,
        }
        if disposition.schedule:
            form["schedule"] = disposition.schedule
        features = self.features
        if features is not None and features.is_off(RESOURCE):
            return PushResult.rejected(q.key, DISPOSITIONS_OFF)
        try:
            reply = await self.client.command(RESOURCE, form, repeat_unanswered=True)
        except SinkConfigError as exc:
            if features is not None and features.turn_off(RESOURCE, exc, action=DISPOSITIONS_OFF):
                return PushResult.rejected(q.key, DISPOSITIONS_OFF)
            raise
        if not reply.ok:
            return PushResult.rejected(
                q.key,
                f"uContact refused the disposition {disposition.l1!r} of call {form['guid']} "
                "(answer 0): check the campaign, the agent and the disposition's levels",
            )
        await self.ledger.set_disposition(q.key, disposition.digest())
        said = f"dispositioned call {form['guid']} as {disposition.l1}"
        if disposition.schedule:
            said += f", to be called again at {disposition.schedule}"
        return PushResult.delivered(q.key, reply=said)
