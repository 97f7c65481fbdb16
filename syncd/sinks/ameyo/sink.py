"""The Ameyo sink: uploadContactAndAddCallback (or uploadContacts), addCallback, getContacts.

Ameyo upserts on ``phone1`` (``update.customer``) but a callback is not idempotent,
so the sink remembers, per lead, the customer record and callback time it last
delivered (in the store's sink ledger: ``ledger.py``): a re-push whose record is
unchanged sends nothing, and a changed ``call_at`` alone becomes one ``addCallback``
for the stored ``customerId``.

A lead pushed inside its calling window goes with ``validityTime`` = the window's close
(``QueuedLead.dial_until``), after which Ameyo does not dial it. It is a parameter of the
request, not of the record: the push sends one request per close
(``WindowHold.per_request``), and a lead whose close changed is uploaded again even
when its record did not (sent again at the next opening after it expired undialled).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from syncd.core.model import Action, Lead, PushResult, QueuedLead
from syncd.core.reasons import DIALER_FAILED, log_reason
from syncd.errors import (
    CheckFailed,
    RetryableError,
    SessionExpiredError,
    SinkConfigError,
    SinkHeld,
    VendorError,
)
from syncd.net.http import make_client
from syncd.net.retry import RetryPolicy
from syncd.sinks.ameyo import outcomes
from syncd.sinks.ameyo.asking import Watchlist, kept
from syncd.sinks.ameyo.client import DEFAULT_PING_S, AmeyoClient, AmeyoRefused
from syncd.sinks.ameyo.config import LEAD_ATTRIBUTES, REMOVE_REFUSED, AmeyoSinkConfig
from syncd.sinks.ameyo.ledger import Delivered, Ledger, record_digest
from syncd.sinks.ameyo.replies import (
    RESULT_TYPES,
    Verdict,
    ameyo_time,
    ameyo_validity,
    hold_reason,
    lower_keys,
    result_list,
    result_reason,
)
from syncd.sinks.base import BaseSink, BatchRejected, SinkContext, SinkHealth

CALLBACK_HANDLER = "voice.campaign.callback.handler"
# Whole-request refusals that mean the sink's settings are wrong, not the records.
CONFIG_MARKERS = ("not.in.camp", "campaign.not.found", "invalid.campaign", "lead.not.found")


@dataclass
class Plan:
    """What one lead needs at Ameyo this time."""

    queued: QueuedLead
    record: dict[str, str]
    digest: str
    call_at: str | None  # ISO, UTC
    callback: dict[str, Any] | None  # the callbackRecord to send, if a new callback is due
    customer_id: str | None  # known from an earlier delivery
    action: str  # upload | callback | nothing
    validity: str | None = None  # the validityTime it goes with (the window's close)
    # the customer Ameyo holds under the lead's former phone1, which an upload leaves
    left_behind: Delivered | None = None


def _is_config_problem(detail: str) -> bool:
    flat = detail.lower()
    return any(marker in flat for marker in CONFIG_MARKERS)


class AmeyoSink(BaseSink):
    """Pushes leads into one Ameyo campaign lead and polls their call outcomes."""

    can_remove = False  # the Customer Manager API has no delete

    def __init__(self, config: AmeyoSinkConfig, ctx: SinkContext) -> None:
        super().__init__(config, ctx)
        self.cfg = config
        # Every request of the sink (pushes, polls, keep-alives, logins) shares its
        # rate limit, concurrency cap and Retry-After hold.
        self.http = make_client(
            timeout_s=config.timeout_s,
            verify_tls=config.verify_tls,
            max_connections=max(8, config.push_concurrency * 2),
            guard=self.guard.limits,
            proxy=config.proxy_url(),
            ca_bundle=config.ca_bundle,
        )
        self.client = AmeyoClient(
            self.http,
            config,
            log=self.log,
            policy=RetryPolicy(wait_max_s=min(15.0, config.retry_max_s), stopping=ctx.stopping),
            clock=self.clock.monotonic,
        )
        # The engine calls keepalive() at this interval (in `--once` and the daemon);
        # open() sets the server's pingInterval. None: cloud header auth has no session.
        self.keepalive_interval_s: float | None = None
        if self.client.session is not None:
            self.keepalive_interval_s = config.ping_interval_s or DEFAULT_PING_S
        self.pings = 0
        self._watch: Watchlist | None = None
        self.ledger = Ledger(ctx.store, config.name)  # what it delivered, per lead
        self._noted: list[tuple[str, Delivered]] = []  # a push's deliveries, not yet noted

    @property
    def watch(self) -> Watchlist:
        """When each delivered lead's outcome is asked about next (asking.py), in memory;
        found at first use: `check --online` builds the sink without a store."""
        if self._watch is None:
            cfg = self.cfg
            self._watch = kept(
                self.ctx.store,
                cfg.name,
                cfg.url,
                cfg.campaign_id,
                cfg.lead_id,
                cfg.poll.interval_s,
            )
        return self._watch

    @watch.setter
    def watch(self, value: Watchlist) -> None:
        self._watch = value

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        session = self.client.session
        try:
            if session is not None:
                await session.current()
            await self._check_lead()
        except SinkConfigError as exc:
            self._health = SinkHealth(
                ok=False, session=self._session_state(), stopped_reason=str(exc)
            )
            raise
        if self.client.terms is not None:
            self.keepalive_interval_s = self.cfg.ping_interval_s or self.client.terms.keepalive_s()

    async def probe(self) -> str:
        """Log in (a session) and read the campaign's leads, as ``open`` does; nothing is
        written. A refusal names the settings of the step it came from."""
        session = self.client.session
        if session is None:  # cloud headers: any request may refuse them, or the campaign
            step: tuple[str, ...] = ("auth.hash_key", "auth.policy_name", "campaign_id", "lead_id")
        else:
            step = ("auth.user_id", "auth.password")
        try:
            if session is not None:
                await session.current()
                step = ("campaign_id", "lead_id")
            await self._check_lead()
        except SinkConfigError as exc:
            raise CheckFailed(f"the dialer refused the sink: {exc.reason}", settings=step) from exc
        how = "logged in; " if session is not None else ""
        return f"{how}lead {self.cfg.lead_id} of campaign {self.cfg.campaign_id} found"

    async def _check_lead(self) -> None:
        cfg = self.cfg
        try:
            body = await self.client.call("getLeadsForCampaign", {"campaignId": cfg.campaign_id})
        except AmeyoRefused as exc:
            raise SinkConfigError(
                f"campaign {cfg.campaign_id}: {exc.detail}; check campaign_id", vendor="ameyo"
            ) from exc
        leads = [lower_keys(item) for item in result_list(body) or []]
        ours = [
            item for item in leads if str(item.get("leadid", item.get("id"))) == str(cfg.lead_id)
        ]
        if not ours:
            known = ", ".join(sorted({str(i.get("leadid", i.get("id"))) for i in leads})) or "none"
            raise SinkConfigError(
                f"lead {cfg.lead_id} is not in campaign {cfg.campaign_id} (its leads: {known}); "
                "check lead_id",
                vendor="ameyo",
            )
        if str(ours[0].get("enabled", "true")).lower() == "false":
            raise SinkConfigError(
                f"lead {cfg.lead_id} of campaign {cfg.campaign_id} is disabled in Ameyo; enable it "
                "(supervisor, contact management) or point lead_id at an enabled lead",
                vendor="ameyo",
            )
        self.log.info(
            "sink.open.checked",
            campaign_id=cfg.campaign_id,
            lead_id=cfg.lead_id,
            max_attempt=ours[0].get("maxattempt"),
        )

    async def close(self) -> None:
        try:
            await self._logout()
        finally:  # also when a hung logout is given up (cancelled)
            await self.http.aclose()

    async def _logout(self) -> None:
        session = self.client.session
        if session is not None and session.token is not None:
            held = session.forget()
            try:
                await self.client.send("logout", {"sessionId": held})
                self.log.info("sink.session.logout")
            except VendorError as exc:
                log_reason(
                    self.log, "warning", "sink.session.logout.failed", str(exc), DIALER_FAILED
                )

    # -- session ---------------------------------------------------------------

    async def keepalive(self) -> None:
        """Ping the session unless another request proved it alive in the last half interval."""
        session, terms = self.client.session, self.client.terms
        if session is None or terms is None:
            return
        interval = self.keepalive_interval_s or terms.ping_interval_s
        if session.token is not None and self.clock.monotonic() - session.last_ok < interval / 2:
            return
        body = await self.client.call(
            "ping-session", {"sessionPushSeqNo": "0", "sessionpushseqno": "0"}, retry=False
        )
        if isinstance(body, dict) and body.get("alive") is False:
            await session.renew(session.generation, "ping-session: alive=false")
        self.pings += 1
        self.log.debug("sink.session.ping")

    def _session_state(self) -> str:
        session = self.client.session
        if session is None:
            return "not needed"
        return session.state if session.state != "none" else "not started"

    def health(self) -> SinkHealth:
        session = self.client.session
        self._health.session = self._session_state()
        self._health.details = {
            "logins": session.logins if session else 0,
            "pings": self.pings,
            "keepalive_interval_s": self.keepalive_interval_s,
        }
        return self._health

    # -- records ---------------------------------------------------------------

    def record(self, lead: Lead) -> dict[str, str]:
        """Return the customerRecord for a lead: phone1, phone2…, name, email, extra columns."""
        cfg = self.cfg
        phone, alternates = self.dial_all(lead)
        record = {"phone1": phone}
        for number, alt in enumerate(alternates[: cfg.max_phones - 1], start=2):
            record[f"phone{number}"] = alt
        if cfg.name_column:
            record[cfg.name_column] = " ".join(p for p in (lead.first_name, lead.last_name) if p)
        if cfg.email_column:
            record[cfg.email_column] = lead.email
        if cfg.key_column:
            record[cfg.key_column] = lead.key
        for column, source in cfg.columns.items():
            record[column] = _lead_value(lead, source)
        return record

    def callback_record(self, lead: Lead, phone: str) -> dict[str, Any]:
        """Return the callbackRecord scheduling ``lead.call_at`` (which must be set)."""
        assert lead.call_at is not None
        callback: dict[str, Any] = {
            "callBackTime": ameyo_time(lead.call_at, self.cfg.timezone),
            "isSelfCallBack": self.cfg.self_callback,
            "callBackPhone": phone,
        }
        if lead.agent:
            callback["userId"] = lead.agent
        return callback

    async def _plan(self, queued: QueuedLead) -> Plan:
        lead = queued.lead
        record = self.record(lead)
        digest = record_digest(record)
        call_at = lead.call_at.isoformat() if lead.call_at else None
        held: Delivered | None = None
        if queued.delivered_hash is not None:
            held = await self.ledger.delivered(queued.key)
        customer_id = (held.customer if held else None) or queued.vendor_ref
        # A new phone1 is a new Ameyo customer: the callback must follow it there.
        new_callback = (
            self.cfg.callbacks
            and call_at is not None
            and (held is None or held.call_at != call_at or held.phone1 != record["phone1"])
        )
        callback = self.callback_record(lead, record["phone1"]) if new_callback else None
        validity = self.validity(queued)
        # addCallback takes no validityTime: a new close goes with an upload.
        same = held is not None and held.record == digest and held.validity == validity
        if held and customer_id and same:
            action = "callback" if callback else "nothing"
        else:
            action = "upload"
        plan = Plan(queued, record, digest, call_at, callback, customer_id, action, validity)
        plan.left_behind = left_behind(held, record)
        return plan

    def validity(self, queued: QueuedLead) -> str | None:
        """Return the validityTime ``queued`` goes with: its window's close, None if none."""
        style = self.cfg.validity_time
        if queued.dial_until is None or style == "off":
            return None
        return ameyo_validity(queued.dial_until, self.cfg.timezone, offset=style == "zone")

    # -- push ------------------------------------------------------------------

    async def push(self, batch: Sequence[QueuedLead]) -> list[PushResult]:
        self._noted = []
        try:
            return await self._push(batch)
        finally:
            # What Ameyo holds now, for the batch at once; also when a later request of
            # the batch failed: a lead delivered is not uploaded again as new.
            noted, self._noted = self._noted, []
            await self.ledger.record_many(noted)

    async def _push(self, batch: Sequence[QueuedLead]) -> list[PushResult]:
        results: dict[str, PushResult] = {}
        plans: list[Plan] = []
        for queued in batch:
            if queued.action is Action.DELETE:
                results[queued.key] = PushResult.rejected(queued.key, REMOVE_REFUSED)
            else:
                plans.append(await self._plan(queued))
        uploads = [p for p in plans if p.action == "upload"]
        for plan in plans:
            if plan.action == "nothing":
                results[plan.queued.key] = await self._delivered(
                    plan, plan.customer_id, "already held by Ameyo as sent: nothing to send"
                )
            elif plan.action == "callback":
                result = await self._add_callback(plan)
                if result is None:  # Ameyo no longer has the customer: upload it again
                    plan.action = "upload"
                    uploads.append(plan)
                else:
                    results[plan.queued.key] = result
        # One request per validityTime (the push already splits a batch so: one here).
        by_validity: dict[str | None, list[Plan]] = {}
        for plan in uploads:
            by_validity.setdefault(plan.validity, []).append(plan)
        for group in by_validity.values():
            for plan, result in zip(group, await self._upload(group), strict=True):
                results[plan.queued.key] = result
        return [results[q.key] for q in batch]

    async def _delivered(self, plan: Plan, customer_id: str | None, reply: str = "") -> PushResult:
        held = Delivered(
            customer=customer_id,
            record=plan.digest,
            call_at=plan.call_at,
            phone1=plan.record["phone1"],
            validity=plan.validity,
        )
        self._noted.append((plan.queued.key, held))  # written at the batch's end (push)
        # Asked about at the next poll, around its close (validityTime) too
        dial_until = plan.queued.dial_until if plan.validity is not None else None
        close = dial_until.timestamp() if dial_until is not None else None
        self.watch.delivered(plan.queued.key, customer_id, close)
        return PushResult.delivered(plan.queued.key, customer_id, reply=reply)

    async def _add_callback(self, plan: Plan) -> PushResult | None:
        assert plan.callback is not None and plan.customer_id is not None
        key = plan.queued.key
        data = {
            "campaignId": self.cfg.campaign_id,
            "callBackTime": plan.callback["callBackTime"],
            "isSelfCallBack": str(self.cfg.self_callback).lower(),
            "callBackHandlerType": CALLBACK_HANDLER,
            "callBackProperties": {"customerId": plan.customer_id, "phone": plan.record["phone1"]},
        }
        if "userId" in plan.callback:
            data["userId"] = plan.callback["userId"]
        try:
            body = await self.client.call("addCallback", data)
        except AmeyoRefused as exc:
            if "customer" in exc.detail.lower() and "not" in exc.detail.lower():
                return None
            if _is_config_problem(exc.detail):
                raise SinkConfigError(str(exc), vendor="ameyo") from exc
            return PushResult.rejected(key, str(exc))
        except SinkHeld:
            raise  # the campaign, not this lead: the whole sink waits
        except (RetryableError, SessionExpiredError) as exc:
            return PushResult.retry(key, str(exc), getattr(exc, "retry_after", None))
        if not result_list(body):
            return PushResult.retry(key, "addCallback answered without a callback")
        self.log.debug("sink.push.callback", key=key, customer_id=plan.customer_id)
        return await self._delivered(plan, plan.customer_id)

    async def _upload(self, plans: list[Plan]) -> list[PushResult]:
        cfg = self.cfg
        payload: dict[str, Any] = {
            "campaignId": cfg.campaign_id,
            "leadId": cfg.lead_id,
            "properties": {
                "update.customer": cfg.update_customer,
                "migrate.customer": cfg.migrate_customer,
            },
        }
        if plans[0].validity is not None:
            payload["validityTime"] = plans[0].validity
        if cfg.callbacks:
            command = "uploadContactAndAddCallback"
            payload["customerAndCallbackRecords"] = [
                {
                    "customerRecord": p.record,
                    **({"callbackRecord": p.callback} if p.callback else {}),
                }
                for p in plans
            ]
        else:
            command = "uploadContacts"
            payload["customerRecords"] = [p.record for p in plans]
        try:
            body = await self.client.call(command, payload)
        except AmeyoRefused as exc:
            if _is_config_problem(exc.detail):
                raise SinkConfigError(
                    f"{exc}; check campaign_id and lead_id", vendor="ameyo"
                ) from exc
            raise BatchRejected(str(exc), vendor="ameyo") from exc
        except SessionExpiredError as exc:
            raise RetryableError(str(exc), vendor="ameyo") from exc
        items = result_list(body)
        if items is None or len(items) != len(plans):
            got = "no result list" if items is None else f"{len(items)} results"
            raise RetryableError(
                f"{command} answered {got} for {len(plans)} records", vendor="ameyo"
            )
        held = {hold_reason(result_reason(item)) for item in items}
        if len(held) == 1 and None not in held:
            # Every record refused for the campaign's state, not its own: the sink waits.
            raise SinkHeld(
                f"{command}: {result_reason(items[0])}", public=str(held.pop()), vendor="ameyo"
            )
        return [await self._result(plan, item) for plan, item in zip(plans, items, strict=True)]

    async def _result(self, plan: Plan, item: dict[str, Any]) -> PushResult:
        low = lower_keys(item)
        result = str(low.get("resulttypestring") or "").strip().upper()
        verdict = RESULT_TYPES.get(result)
        key = plan.queued.key
        if verdict is Verdict.DELIVERED:
            customer = low.get("customerid")
            customer_id = str(customer) if customer not in (None, "") else plan.customer_id
            done = await self._delivered(
                plan, customer_id, f"Ameyo: {result}, customerId {customer_id}"
            )
            old = plan.left_behind
            if old is not None and (old.customer is None or old.customer != customer_id):
                # A second customer: the first stays dialable, and the API cannot remove it.
                done = replace(done, left_open=left_open_action(old, self.cfg))
            return done
        if verdict is Verdict.REJECTED:
            return PushResult.rejected(key, result_reason(item))
        if verdict is Verdict.RETRY:
            return PushResult.retry(key, result_reason(item))
        return PushResult.retry(key, f"unknown result {result or '(none)'}: {result_reason(item)}")

    # -- outcomes --------------------------------------------------------------

    async def poll_outcomes(self) -> int:
        if self.features.is_off(OUTCOMES):
            return 0
        try:
            changed = await outcomes.poll(
                self.client,
                self.ctx.store,
                self.cfg,
                self.watch,
                now=self.clock.time(),
                stopping=self.ctx.stopping,
                log=self.log,
            )
        except SinkConfigError as exc:
            # A server or API user without getContacts: outcomes are off, leads still go.
            if self.features.turn_off(OUTCOMES, exc, action=OUTCOMES_OFF):
                return 0
            raise
        if changed:
            self.log.info("sink.poll.outcomes", changed=changed)
        return changed


OUTCOMES = "getContacts"
OUTCOMES_OFF = (
    "outcomes are not read back from Ameyo (no writeback for this sink); leads still go."
    " Give the API user the Customer Manager read rights or upgrade Ameyo to have them"
)


def left_behind(held: Delivered | None, record: dict[str, str]) -> Delivered | None:
    """Return the customer an upload of ``record`` leaves under the lead's former phone1.

    Ameyo finds a customer by phone1: a new one is a second customer, and the first
    stays dialable — also when the old number is still one of the lead's (an alternate
    now): the person is then rung by two customers. None when phone1 is unchanged."""
    if held is None or held.phone1 == record["phone1"]:
        return None
    return held


def left_open_action(old: Delivered, cfg: AmeyoSinkConfig) -> str:
    """What to do about the customer Ameyo keeps under a lead's old phone1 (no number)."""
    which = f"customer {old.customer}" if old.customer else "the customer under its old phone1"
    found = f" (or search {cfg.key_column} for the lead's key)" if cfg.key_column else ""
    return (
        f"remove {which}{found} from campaign {cfg.campaign_id} by hand in Ameyo (its API "
        "cannot remove a customer)"
    )


def _lead_value(lead: Lead, source: str) -> str:
    name = source.removeprefix("fields.")
    if source == name and name in LEAD_ATTRIBUTES:
        return str(getattr(lead, name))
    return lead.fields.get(name, "")
