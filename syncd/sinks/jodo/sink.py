"""The Jodo sink: ImportProcessData batches, upserted by the configured ``updateparam``.

Also: outcomes (getProcessData + recordings), agent status (userStatus),
reallocation of an absent agent's leads (reallocatedata) and CRM-side closing
(saveDisposition); each lives in its own module of this package.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from syncd.core.model import Action, PushResult, QueuedLead, ResultKind
from syncd.core.reasons import DIALER_FAILED, DIALER_REFUSED, log_reason
from syncd.errors import CheckFailed, PermanentError, SinkConfigError, VendorError
from syncd.net.http import UnknownFields
from syncd.sinks.base import BaseSink, BatchRejected, SinkContext, SinkHealth
from syncd.sinks.jodo.agents import MISSING, AgentPoller
from syncd.sinks.jodo.assignment import check_agents, unassigned_note
from syncd.sinks.jodo.client import NOT_FOUND, connect, jodo_time
from syncd.sinks.jodo.client import reply_text as jodo_reply_text
from syncd.sinks.jodo.codes import reason_code as jodo_code
from syncd.sinks.jodo.config import REMOVE_REFUSED, JodoSinkConfig
from syncd.sinks.jodo.dispositions import Disposal, Disposer, closing_rule
from syncd.sinks.jodo.failures import KNOWN_FIELDS, match_failures
from syncd.sinks.jodo.leads import delivered_leads
from syncd.sinks.jodo.outcomes import OutcomePoller
from syncd.sinks.jodo.reallocation import Reallocator

# Agents of leads delivered since are polled after at most this long (absences that
# move leads are counted in tens of minutes: reallocation.after_s).
AGENT_LOGINS_REFRESH_S = 300.0
# The settings a configuration code of the probe's read points at (client.CONFIG_CODES).
PROBE_SETTINGS: dict[str, tuple[str, ...]] = {
    "1107": ("apikey",),
    "1108": ("servicekey",),
    "1243": ("apikey", "servicekey"),
    "401": ("url", "apikey"),
    "403": ("url", "apikey"),
    "404": ("url",),
    "tls": ("ca_bundle",),
}


class JodoSink(BaseSink):
    """Pushes leads to one Jodo process."""

    can_remove = False  # Jodo has no delete; with dispositions.on_delete a removal is disposed

    def __init__(self, config: JodoSinkConfig, ctx: SinkContext) -> None:
        super().__init__(config, ctx)
        self.cfg = config
        self.http, self.client = connect(config, self.guard, self.clock, ctx.stopping)
        self.can_remove = config.dispositions.on_delete is not None
        self.outcomes = OutcomePoller(
            self.client, ctx.store, config, self.log, self.dial, self.clock
        )
        if ctx.stopping is not None:
            self.outcomes.stopping = ctx.stopping
        if self.outcomes.recordings is not None:  # a 403/404 turns them off, in status
            self.outcomes.recordings.features = self.features
        self.agents = AgentPoller(
            self.client, ctx.store, config.name, config.agents, config.timezone, self.log
        )
        self.reallocator = Reallocator(self.client, ctx.store, config, self.log, self.dial)
        self.disposer = Disposer(self.client, ctx.store, config, self.log, self.dial)
        chosen = config.provisioning.unknown_agent
        self.unknown_agent = chosen or ("unassign" if ctx.agents_outbox else "send")
        self.reply_fields = UnknownFields(self.log, "jodo")
        self._mapped_time_said = False  # a route field mapped onto callDateTime: said once
        self._assigned: tuple[float, list[str]] | None = None  # (look again at, logins)

    def record(
        self, lead_q: QueuedLead, now: datetime | None = None, stamped: str = ""
    ) -> dict[str, Any]:
        """Return the ImportProcessData record for a lead (the wire dict).

        Every record carries ``callDateTime``, the moment before which Jodo does not
        dial it: the lead's ``call_at`` (a callback, ``callback_calltype``), else the
        push moment ``now`` (the gate let it go now; ``calltype`` as configured). That
        holds the record to the start of the window the gate found open (a lead held
        overnight goes at the opening, due from then); Jodo takes no end, so the close
        is the process's calling hours and ``queue_ahead_minutes`` (``window_hold``).
        Both are on the dialer's clock (its measured skew added: see ``_dialer_now``).
        ``stamped``: the push moment already on that clock (a batch's leads share it).
        """
        lead = lead_q.lead
        cfg = self.cfg
        phone, alternates = self.dial_all(lead)
        record: dict[str, Any] = {
            cfg.key_field: lead.key,
            "mobilenumber": phone,
            "name": " ".join(p for p in (lead.first_name, lead.last_name) if p),
            "fname": lead.first_name,
            "lname": lead.last_name,
            "emailid": lead.email,
        }
        if cfg.updateparam == "customercode":
            record["customercode"] = lead.key
        elif cfg.updateparam == "crmuniquefield":
            record[cfg.crm_unique_field] = lead.key
        for field_name, number in zip(cfg.alt_phone_fields, alternates, strict=False):
            record[field_name] = number
        if lead.call_at is not None:
            record["callDateTime"] = self._dialer_time(lead.call_at)
        else:
            record["callDateTime"] = stamped or self._dialer_now(now)
        if lead.call_at is not None:
            record["calltype"] = str(cfg.callback_calltype)
        elif cfg.calltype is not None:
            record["calltype"] = str(cfg.calltype)
        if lead.agent:
            record["userlogin"] = lead.agent
        if "callDateTime" in lead.fields and not self._mapped_time_said:
            # The route maps a CRM column straight onto callDateTime: syncd's own time
            # wins (the gate checked it against the window; the column it did not).
            self._mapped_time_said = True
            self.log.warning(
                "jodo.field.replaced",
                field="callDateTime",
                action="map the CRM's callback time to call_at; syncd sends callDateTime",
            )
        for name, value in lead.fields.items():
            record.setdefault(name, value)
        return record

    def _dialer_time(self, when: datetime) -> str:
        """Return ``when`` on the Jodo server's clock (a skew beyond tolerance added)."""
        shifted = when + timedelta(seconds=self.client.skew.offset_s())
        return jodo_time(shifted, self.cfg.timezone)

    def _dialer_now(self, now: datetime | None) -> str:
        """Return the push moment on the Jodo server's clock, whatever the skew measured.

        A server 90 s behind ours would otherwise hold every lead 90 s (or, behind by a
        wrong zone, hours, into the close). The skew is measured from whole seconds cut
        down, so this is at most the server's now: due at once, never before the opening.
        """
        moment = now or datetime.fromtimestamp(self.clock.time(), UTC)
        skew = math.floor(self.client.skew.skew_s or 0.0)
        return jodo_time(moment + timedelta(seconds=skew), self.cfg.timezone)

    def closes_numbers(self, queued: QueuedLead) -> list[str]:
        """saveDisposition names a number (``contactvalue``): every record under it closes."""
        settings = self.cfg.dispositions
        if queued.action is Action.DELETE:
            closes = settings.on_delete is not None
        else:
            closes = (
                queued.delivered_hash is not None
                and closing_rule(queued.lead, settings.rules) is not None
            )
        if not closes:
            return []
        number = queued.lead.phone or self.undial(queued.vendor_ref or "")
        return [number] if number else []

    def _sort(
        self, batch: Sequence[QueuedLead]
    ) -> tuple[list[PushResult], list[QueuedLead], list[tuple[QueuedLead, Disposal]]]:
        """Return (refused, leads to import, leads to dispose) for a batch."""
        refused: list[PushResult] = []
        imports: list[QueuedLead] = []
        disposals: list[tuple[QueuedLead, Disposal]] = []
        settings = self.cfg.dispositions
        for q in batch:
            if q.action is Action.DELETE:
                if settings.on_delete is None:
                    refused.append(PushResult.rejected(q.key, REMOVE_REFUSED))
                    continue
                d = settings.on_delete
                disposals.append(
                    (q, Disposal(d.dispomasterid, d.disporeasonid, d.remarks, "removed in the CRM"))
                )
                continue
            closing = closing_rule(q.lead, settings.rules)
            if closing is None:
                imports.append(q)
            elif q.delivered_hash is None:
                # Importing it only to dispose of it would let the dialer ring it in between.
                refused.append(
                    PushResult.rejected(
                        q.key,
                        f"closed in the CRM ({closing.why}) before the dialer had it; not sent",
                    )
                )
            else:
                disposals.append((q, closing))
        return refused, imports, disposals

    async def push(self, batch: Sequence[QueuedLead]) -> list[PushResult]:
        store, outbox = self.ctx.store, self.ctx.agents_outbox
        checked = await check_agents(store, self.name, outbox, batch, self.unknown_agent)
        results, upserts, disposals = self._sort(checked.go)
        results += checked.held_back
        if checked.unassigned:
            self.log.warning(
                "jodo.agent.unknown",
                leads=len(checked.unassigned),
                logins=sorted(set(checked.unassigned.values()))[:10],
                action="sent unassigned; provision the agents or fix the leads' agent column",
            )
        moved = await self.reallocator.moved_agents([*upserts, *(q for q, _ in disposals)])
        if upserts:
            if any(q.lead.call_at is None for q in upserts):
                await self._read_dialer_clock()
            now = datetime.fromtimestamp(self.clock.time(), UTC)  # the gate allowed them now
            stamped = self._dialer_now(now)  # one push moment for the batch
            records = [self.record(q, now, stamped) for q in upserts]
            for q, record in zip(upserts, records, strict=True):
                if q.key in moved:  # keep the reallocation syncd made while the agent was away
                    record["userlogin"] = moved[q.key]
                elif q.key in checked.unassigned:
                    record.pop("userlogin", None)
            payload = {
                "media": str(self.cfg.media),
                "updateparam": self.cfg.updateparam,
                "data": records,
            }
            try:
                reply = await self.client.call("ImportProcessData", payload)
            except SinkConfigError:
                raise
            except PermanentError as exc:
                # Jodo answers for the whole batch; the engine isolates the bad record.
                raise BatchRejected(exc.reason, vendor="jodo", code=exc.code) from exc
            refused = self._failed_records(reply.body, upserts, records)
            # The number is how saveDisposition and reallocatedata name the record later,
            # even once the CRM has removed the lead (and with it the number we know).
            said = jodo_reply_text(reply.body)
            results += [
                PushResult.rejected(q.key, refused[q.key])
                if q.key in refused
                else PushResult.delivered(
                    q.key,
                    vendor_ref=str(record["mobilenumber"]),
                    reply=said + unassigned_note(checked.unassigned.get(q.key)),
                )
                for q, record in zip(upserts, records, strict=True)
            ]
            results = await self._close_old_numbers(upserts, records, results, moved)
        if disposals:
            results += await self.disposer.dispose(disposals, moved)
        return results

    def _numbers_of(self, record: dict[str, Any]) -> set[str]:
        """Return the numbers a record is dialled on: its main number and its alternates."""
        fields = ("mobilenumber", *self.cfg.alt_phone_fields)
        return {str(record[f]) for f in fields if record.get(f)}

    async def _close_old_numbers(
        self,
        upserts: Sequence[QueuedLead],
        records: Sequence[dict[str, Any]],
        results: list[PushResult],
        moved: dict[str, str],
    ) -> list[PushResult]:
        """Close the record a delivered lead left under its old number; return the results.

        Upserting by number, Jodo took a lead whose number changed as a second record:
        the one under the old number stays open, rung for someone who may no longer hold
        it. It is disposed of as a removal is (``dispositions.on_delete``); until that
        lands the lead is tried again (importing it again changes nothing at Jodo), its
        old number kept as its ``vendor_ref``."""
        if self.cfg.updateparam != "mobilenumber":
            return results
        delivered = {r.key for r in results if r.kind is ResultKind.DELIVERED}
        moved_from = [
            q
            for q, record in zip(upserts, records, strict=True)
            if q.key in delivered
            and q.delivered_hash is not None
            and q.vendor_ref
            # still one of the lead's numbers (now an alternate): saveDisposition would
            # close the new record with the old one
            and q.vendor_ref not in self._numbers_of(record)
        ]
        if not moved_from:
            return results
        rule = self.cfg.dispositions.on_delete
        if rule is None:
            # Nothing here can close it: the engine keeps an alert per lead until
            # someone closes it at the dialer and says so (`syncd ack`).
            self.log.warning(
                "jodo.number.changed",
                leads=len(moved_from),
                reason="Jodo upserts by number: the record under each lead's old number stays open",
                action="set dispositions.on_delete so syncd closes the old records",
            )
            unclosed = {q.key for q in moved_from}
            action = self._left_open_action
            return [replace(r, left_open=action) if r.key in unclosed else r for r in results]
        why = Disposal(rule.dispomasterid, rule.disporeasonid, rule.remarks, "number changed")
        closed = await self.disposer.dispose([(q, why) for q in moved_from], moved)
        left = {r.key: r for r in closed if r.kind is not ResultKind.DELIVERED}
        return [
            PushResult.retry(
                r.key,
                f"delivered under its new number; the record under its old one is still "
                f"open ({left[r.key].reason}): tried again",
                answered=True,
            )
            if r.key in left
            else r
            for r in results
        ]

    @property
    def _left_open_action(self) -> str:
        """What to do about a record Jodo keeps under a lead's old number (no number in it)."""
        return (
            f"close Jodo's record under the lead's old number by hand in Jodo (process "
            f"{self.cfg.servicekey}: the records whose {self.cfg.key_field} is the lead's key; "
            "keep the one under its current number), and set dispositions.on_delete so syncd "
            "closes such records itself"
        )

    async def probe(self) -> str:
        """Read an empty getProcessData window: Jodo checks the apikey, the servicekey and
        the process on it, and stores nothing (as ``_read_dialer_clock`` does before a push)."""
        moment = jodo_time(datetime.fromtimestamp(self.clock.time(), UTC), self.cfg.timezone)
        payload = {"searchparam": "daterange", "fromdate": moment, "todate": moment}
        try:
            await self.client.call("getProcessData", payload, retry=False, accept=(NOT_FOUND,))
        except SinkConfigError as exc:
            settings = PROBE_SETTINGS.get(exc.code or "")
            what = " and ".join(settings) if settings else "settings"
            code = f", code {exc.code}" if exc.code else ""
            raise CheckFailed(
                f"the dialer refused the sink's {what} ({exc.reason}{code})",
                settings=settings or ("url", "apikey", "servicekey", "media", "updateparam"),
            ) from exc
        said = f"getProcessData answered for process {self.cfg.servicekey!r} (apikey accepted)"
        login = self.cfg.dispositions.login
        return f"{said}; {await self._probe_login(login)}" if login else said

    async def _probe_login(self, login: str) -> str:
        """Ask userStatus about the login that disposes leads: Jodo refuses every
        saveDisposition of a login it lacks, so each CRM removal would fail at run time."""
        now = datetime.fromtimestamp(self.clock.time(), UTC)
        found = await self.agents.ask([login], now, retry=False)
        agent = found.get(login)
        if agent is None or agent.status == MISSING:
            why = agent.description if agent is not None else "not in userStatus's answer"
            raise CheckFailed(
                f"the dialer has no agent login {login!r} to dispose of removed or closed "
                f"leads as ({why})",
                settings=("dispositions.login",),
            )
        return f"login {login!r} (dispositions.login) found"

    async def _read_dialer_clock(self) -> None:
        """Read the Jodo server's clock once, before the first push-moment callDateTime.

        A server behind ours (or a wrong ``timezone``) would hold a record stamped with
        our time that much longer, into the close. Any reply carries ``resdatetime``:
        an empty ``getProcessData`` window costs the server nothing. Unanswered, the
        push goes on with our clock (the skew is measured from its reply then).
        """
        if self.client.skew.measured:
            return
        moment = jodo_time(datetime.fromtimestamp(self.clock.time(), UTC), self.cfg.timezone)
        payload = {"searchparam": "daterange", "fromdate": moment, "todate": moment}
        try:
            await self.client.call("getProcessData", payload, retry=False, accept=(NOT_FOUND,))
        except SinkConfigError:
            raise
        except VendorError as exc:
            self.log.debug("jodo.clock.unread", reason=str(exc))

    def _failed_records(
        self, body: dict[str, Any], upserts: Sequence[QueuedLead], records: list[dict[str, Any]]
    ) -> dict[str, str]:
        """Return the leads a success reply lists as failed, with the dialer's reason.

        A listed failure that names no record sent (or a bare count of failures)
        cannot be placed: rather than count every lead delivered, the batch is
        refused as a whole and split until each failure stands alone with its record.
        """
        self.reply_fields.note("ImportProcessData", body, KNOWN_FIELDS)
        cfg = self.cfg
        id_fields = [cfg.key_field, cfg.crm_unique_field, "customercode", "mobilenumber"]
        sent = [(q.key, r) for q, r in zip(upserts, records, strict=True)]
        found = match_failures(body, sent, id_fields)
        if found.unplaced:
            if len(upserts) == 1:
                return {upserts[0].key: f"Jodo refused the record: {found.example}"}
            log_reason(
                self.log,
                "warning",
                "jodo.push.failures_unplaced",
                found.example,
                DIALER_REFUSED,
                jodo_code,
                size=len(upserts),
                unplaced=found.unplaced,
                refused=len(found.refused),
                action="splitting the batch to find the failed records",
            )
            raise BatchRejected(
                f"ImportProcessData listed {found.unplaced} failed record(s) syncd cannot "
                f"match to the records sent ({found.example})",
                vendor="jodo",
            )
        if found.refused:
            # by its code: a dialer's words may name the customer however it spells them
            log_reason(
                self.log,
                "warning",
                "jodo.push.records_failed",
                next(iter(found.refused.values())),
                DIALER_REFUSED,
                jodo_code,
                size=len(upserts),
                refused=len(found.refused),
            )
        return found.refused

    async def poll_outcomes(self) -> int:
        """Store new outcomes, then agent statuses and reallocations; return outcomes changed.

        A failure of the agent part is logged and does not hide the outcomes; a
        failure of the outcome part is raised after the agent part has run.
        """
        changed = 0
        failure: VendorError | None = None
        if self.cfg.outcomes.enabled:
            try:
                changed = await self.outcomes.poll()
            except VendorError as exc:
                failure = exc
        if self.cfg.agents.enabled:
            try:
                await self.poll_agents()
            except VendorError as exc:
                log_reason(self.log, "warning", "sink.agents.failed", str(exc), DIALER_FAILED)
        if failure is not None:
            raise failure
        return changed

    async def poll_agents(self) -> int:
        """Poll agent statuses and reallocate the leads of long-absent agents; return moves."""
        now = datetime.now(UTC)
        logins = list(self.cfg.agents.logins) or await self._assigned_agents()
        logins += [f for f in self.cfg.reallocation.fallback if f not in logins]
        if not logins:
            return 0
        agents = await self.agents.poll(logins, now)
        return await self.reallocator.run(agents, now)

    async def _assigned_agents(self) -> list[str]:
        """Return the agents delivered leads are assigned to, found again every
        AGENT_LOGINS_REFRESH_S: finding them reads every delivered lead, which at each
        poll grew with the store and held the outcomes back."""
        now = self.clock.monotonic()
        if self._assigned is None or now >= self._assigned[0]:
            found = {
                lead.agent async for _k, _n, lead in delivered_leads(self.ctx.store, self.name)
            }
            self._assigned = (now + AGENT_LOGINS_REFRESH_S, sorted(found - {""}))
        return list(self._assigned[1])

    def health(self) -> SinkHealth:
        health = super().health()
        warning = self.outcomes.clock_warning() if self.cfg.outcomes.enabled else None
        health.warnings = [warning] if warning else []
        skew = self.client.skew.skew_s
        health.details["clock_skew_s"] = round(skew) if skew is not None else None
        return health

    async def close(self) -> None:
        await self.http.aclose()
