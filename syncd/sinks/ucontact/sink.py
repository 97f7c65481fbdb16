"""The uContact sink: uploadbase files, scheduled calls, removals, DNC, CDR outcomes.

A lead goes to the campaign one of three ways: in a batch file (``Dialers/uploadbase``),
as a scheduled call (``Dialers/ScheduleDialerCall``, lead has ``call_at``), or as a
single task (``Dialers/DialerTask``, when ``immediate = "dialertask"``). How that is
done without dialling anyone twice, also when calls fail or answer late, is in
``placing``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from typing import Any

from syncd.core.model import Action, Lead, PushResult, QueuedLead
from syncd.core.reasons import DIALER_FAILED, log_reason
from syncd.core.window_hold import WINDOW_CODE
from syncd.errors import CheckFailed, RetryableError, SinkConfigError, VendorError
from syncd.net.http import make_client
from syncd.net.retry import RetryPolicy
from syncd.sinks.base import BaseSink, SinkContext, SinkHealth
from syncd.sinks.features import OFF_STATUSES
from syncd.sinks.ucontact.client import VENDOR, UContactClient
from syncd.sinks.ucontact.config import UContactSinkConfig
from syncd.sinks.ucontact.dispositions import Dispositioner, disposition_of
from syncd.sinks.ucontact.ledger import SCHEDULE, TASK, Ledger
from syncd.sinks.ucontact.outcomes import CdrPoller
from syncd.sinks.ucontact.placing import CALL_CONCURRENCY, Placer, guard
from syncd.sinks.ucontact.queues import hold_reason, no_agents_since, parse_queue_summary
from syncd.sinks.ucontact.server_clock import read_clock
from syncd.sinks.ucontact.timezones import upload_zone
from syncd.sinks.ucontact.wire import Call, UnsafeValue, clean, data_string, server_time

HEALTH_KEYS = (
    "logged",
    "availables",
    "busy",
    "paused",
    "totalagents",
    "totalcalls",
    "completed",
    "abandoned",
    "servicelevel",
)


def find_campaign(body: Any, name: str) -> dict[str, Any] | None:
    """Return the campaignstatus entry for ``name`` from any of the answer's shapes."""
    if isinstance(body, dict):
        entry = body.get(name)
        if isinstance(entry, dict):
            return entry
        if body.get("campaign") == name or body.get("queue") == name:
            return body
        return None
    if isinstance(body, list):
        for item in body:
            if isinstance(item, dict) and name in (item.get("campaign"), item.get("queue")):
                return item
    return None


QUEUE_SUMMARY = "Supervisor/queuesummary"
CAMPAIGN_STATUS = "Supervisor/campaignstatus"
CAMPAIGN_CHECK_OFF = (
    "the campaign's existence is not checked at start and the keep-alive reads no status;"
    " leads still go. Give the API user supervisor rights or upgrade uContact to have it"
)
QUEUES_OFF = (
    "queue figures and hold_without_agents_min are off, and server_timezone cannot be "
    "checked against the server's clock (make sure it is the server's zone: a wrong one "
    "rings windows hours off); leads still go. Give the API user supervisor rights or "
    "upgrade uContact to have them"
)
CLOCK_UNCHECKED = (
    "server_timezone not checked: the server answers no Supervisor/queuesummary (make sure "
    "it is the server's zone)"
)


class UContactSink(BaseSink):
    """Pushes leads to one uContact dialer campaign and reads its call records."""

    can_remove = True

    def __init__(self, config: UContactSinkConfig, ctx: SinkContext) -> None:
        super().__init__(config, ctx)
        self.cfg = config
        # Every request of the sink (pushes, polls, keep-alives, logins) shares its
        # rate limit, concurrency cap and Retry-After hold.
        self.http = make_client(
            timeout_s=config.timeout_s,
            verify_tls=config.verify_tls,
            max_connections=max(8, config.push_concurrency * CALL_CONCURRENCY),
            guard=self.guard.limits,
            proxy=config.proxy_url(),
            ca_bundle=config.ca_bundle,
        )
        policy = RetryPolicy(
            wait_initial_s=min(0.5, config.retry_base_s),
            wait_max_s=min(15.0, config.retry_max_s),
            stopping=ctx.stopping,
        )
        self.client = UContactClient(
            self.http, config.url, config.user, config.password, policy=policy, log=self.log
        )
        self.ledger = Ledger(ctx.store, config.name)
        self.poller = CdrPoller(
            config,
            self.client,
            self.http,
            self.ledger,
            ctx.store,
            self.log,
            self.features,
            stopping=ctx.stopping,
        )
        self.placer = Placer(config, self.client, self.ledger, ctx.store, self.log, self.dial)
        self._health = SinkHealth(session="not started")
        self.keepalive_interval_s = config.queue_poll_s  # campaign status and queue figures
        self._no_agents_since: float | None = None
        self._clock_wrong: str | None = None  # why server_timezone is not the server's
        self._dnc_values = {v.strip().lower() for v in config.dnc.values} if config.dnc else set()
        self.dispositioner = (
            Dispositioner(config, self.client, ctx.store, self.ledger, self.dial, self.features)
            if config.dispositions
            else None
        )

    # -- lifecycle ----------------------------------------------------------

    async def open(self) -> None:
        try:
            await self.client.open_session()
        except SinkConfigError as exc:
            self._health = SinkHealth(ok=False, session="failed", stopped_reason=str(exc))
            raise
        self._health.session = "valid"
        await self.check_campaign(required=True)

    async def probe(self) -> str:
        """Log in once and look the campaign up, as ``open`` does, but store nothing (open
        keeps the campaign's figures in the store)."""
        try:
            await self.client.session.current()
        except SinkConfigError as exc:
            raise CheckFailed(
                f"the dialer refused the login: {exc.reason}", settings=("user", "password")
            ) from exc
        try:
            body = await self.client.json(CAMPAIGN_STATUS, {"queue": self.cfg.campaign})
        except SinkConfigError as exc:
            if exc.code in OFF_STATUSES:  # a helper this server or user lacks (see open)
                return f"logged in; campaign not looked up (HTTP {exc.code} to {CAMPAIGN_STATUS})"
            raise CheckFailed(
                f"the dialer refused the campaign lookup: {exc.reason}", settings=("campaign",)
            ) from exc
        if find_campaign(body, self.cfg.campaign) is None:
            raise CheckFailed(
                f"campaign {self.cfg.campaign!r} does not exist on {self.cfg.url} "
                "(Supervisor/campaignstatus does not list it; check the name and its '->')",
                settings=("campaign",),
            )
        unchecked = await self._probe_clock()
        return f"logged in; campaign {self.cfg.campaign!r} found" + (
            f"; {unchecked}" if unchecked else ""
        )

    async def _probe_clock(self) -> str | None:
        """Fail the check when ``server_timezone`` is not the server's clock; return why it
        could not be checked (a server or user without queuesummary, an undated answer)."""
        try:
            body = await self.client.json(QUEUE_SUMMARY, {})
        except (SinkConfigError, VendorError):
            return CLOCK_UNCHECKED
        dated, wrong = read_clock(body, self.cfg.server_timezone, datetime.now(UTC))
        if not dated:
            return "server_timezone not checked: the server's queuesummary carries no date"
        if wrong is not None:
            raise CheckFailed(wrong, settings=("server_timezone",))
        return None

    async def check_campaign(self, *, required: bool) -> dict[str, Any] | None:
        """Return the campaign's status; SinkConfigError when it must exist and does not."""
        campaign = self.cfg.campaign
        if self.features.is_off(CAMPAIGN_STATUS):
            return None
        try:
            body = await self.client.json(CAMPAIGN_STATUS, {"queue": campaign})
        except SinkConfigError as exc:
            # An older release or a restricted API user: the check is a helper, not the
            # sink (a wrong campaign name still shows: its uploads are refused).
            if self.features.turn_off(CAMPAIGN_STATUS, exc, action=CAMPAIGN_CHECK_OFF):
                return None
            raise
        entry = find_campaign(body, campaign)
        checked = datetime.now(UTC).isoformat(timespec="seconds")
        if entry is None:
            reason = (
                f"campaign {campaign!r} does not exist on {self.cfg.url} "
                "(Supervisor/campaignstatus does not list it; check the name and its '->')"
            )
            self._health.ok = False
            self._health.details = {"campaign": campaign, "exists": False, "checked_at": checked}
            if required:
                self._health.stopped_reason = reason
                raise SinkConfigError(reason, vendor=VENDOR)
            return None
        details: dict[str, Any] = {"campaign": campaign, "exists": True, "checked_at": checked}
        details.update({k: entry[k] for k in HEALTH_KEYS if k in entry})
        self._health.ok = True
        self._health.details = details
        await self.ledger.set_state("health", details)
        await self.read_queue(required=required)
        return entry

    async def read_queue(self, *, required: bool = False) -> None:
        """Read the campaign's queue figures; a server without queuesummary is no error.

        Older releases and API users without supervisor rights answer it 404 or 403:
        the figures (and ``hold_without_agents_min``) are off, said once; leads flow.
        """
        if self.features.is_off(QUEUE_SUMMARY):
            return
        try:
            body = await self.client.json(QUEUE_SUMMARY, {})
        except SinkConfigError as exc:
            if self.features.turn_off(QUEUE_SUMMARY, exc, action=QUEUES_OFF):
                return
            raise
        except VendorError as exc:
            log_reason(self.log, "info", "sink.queue.unavailable", str(exc), DIALER_FAILED)
            return
        self._read_clock(body, required=required)
        figures = parse_queue_summary(body, self.cfg.campaign)
        if figures is None:
            self._health.queues = []
            return
        now = self.clock.time()
        before = (await self.ledger.get_state("agents")).get("none_since")
        since = no_agents_since(figures, before if isinstance(before, int | float) else None, now)
        if since != before:
            await self.ledger.set_state("agents", {"none_since": since})
        self._no_agents_since = since
        self._health.queues = [figures]

    def _read_clock(self, body: Any, *, required: bool = False) -> None:
        """Hold every push while ``server_timezone`` is not the server's clock (see
        ``server_clock``); said once when it starts and once when it ends. Found when
        the sink opens (``required``), the sink is refused as misconfigured: stopped,
        its leads queued, its state ``config_refused`` (which pages)."""
        dated, wrong = read_clock(body, self.cfg.server_timezone, datetime.now(UTC))
        if not dated:  # an answer without its date: nothing to go by
            return
        if wrong is not None and self._clock_wrong is None:
            self.log.warning(
                "sink.server_timezone.wrong",
                reason=wrong,
                action="leads wait in the outbox until server_timezone is the server's",
            )
        elif wrong is None and self._clock_wrong is not None:
            self.log.info("sink.server_timezone.right", server_timezone=self.cfg.server_timezone)
        self._clock_wrong = wrong
        if wrong is not None and required:
            self._health.ok = False
            self._health.stopped_reason = wrong
            refused = SinkConfigError(wrong, vendor=VENDOR)
            # no dialer's words in it: /readyz, unauthenticated, may say it whole
            refused.public = wrong
            raise refused

    def paused(self) -> str | None:
        if self._clock_wrong is not None:
            return self._clock_wrong
        return hold_reason(
            self.cfg.campaign,
            self._no_agents_since,
            self.clock.time(),
            self.cfg.hold_without_agents_min,
        )

    async def keepalive(self) -> None:
        """Refresh the campaign status (which also renews an expired key)."""
        try:
            await self.check_campaign(required=False)
        except RetryableError as exc:
            # Not reached (or busy): the breaker reports an unreachable dialer, and the
            # campaign is as last checked. Marking the sink not ok would keep /readyz 503
            # until the next check, however well the pushes go meanwhile.
            log_reason(self.log, "warning", "sink.keepalive.failed", str(exc), DIALER_FAILED)
        except VendorError as exc:
            self._health.ok = False
            self._health.details = {**self._health.details, "error": str(exc)}
            log_reason(self.log, "warning", "sink.keepalive.failed", str(exc), DIALER_FAILED)

    def health(self) -> SinkHealth:
        held = self.paused()
        self._health.warnings = [held] if held else []
        if self._health.session != "failed":  # a login refused at open stays shown
            state = self.client.session.state  # none | valid | expired | failed
            self._health.session = "not started" if state == "none" else state
        self._health.details["logins"] = self.client.logins
        self._health.details["legacy_auth"] = self.client.legacy_auth
        return self._health

    async def close(self) -> None:
        try:
            await self.client.end_session()
        finally:
            await self.http.aclose()

    async def poll_outcomes(self) -> int:
        if self._clock_wrong is not None:
            # Read in the wrong zone, each call record's date would be hours off and the
            # poll's window with it: they wait at the dialer until the clocks agree.
            raise VendorError(f"call records not read: {self._clock_wrong}", vendor=VENDOR)
        return await self.poller.poll()

    # -- building calls -----------------------------------------------------

    def call_for(self, lead: Lead) -> Call:
        """Return the call for a lead; UnsafeValue when a value cannot be carried."""
        replace = self.cfg.clean == "replace"
        pairs = {
            self.cfg.key_var: lead.key,
            "first_name": lead.first_name,
            "last_name": lead.last_name,
            "email": lead.email,
        }
        dnc_field = self.cfg.dnc.field if self.cfg.dnc else None
        for name, value in lead.fields.items():
            if name != dnc_field:
                pairs.setdefault(name, value)
        destination, alternatives = self.dial_all(lead)
        calldate = server_time(lead.call_at, self.cfg.server_timezone) if lead.call_at else None
        return Call(
            destination=destination,
            alternatives=tuple(a for a in alternatives if a != destination),
            data=data_string(pairs, replace=replace),
            agentphone=clean(lead.agent, replace=replace, what="agent"),
            priority=self.cfg.priority,
            calldate=calldate,
        )

    def upload_zone(self, q: QueuedLead) -> str | None:
        """Return the zone a lead is uploaded with (``timezones``); None: plain uploadbase."""
        if not self.cfg.lead_timezones:
            return self.cfg.timezone
        return upload_zone(q.dial_zones, self.cfg.timezone, q.dial_until)

    def is_dnc(self, lead: Lead) -> bool:
        if self.cfg.dnc is None:
            return False
        return lead.fields.get(self.cfg.dnc.field, "").strip().lower() in self._dnc_values

    # -- push ---------------------------------------------------------------

    async def push(self, batch: Sequence[QueuedLead]) -> list[PushResult]:
        results: dict[str, PushResult] = {}
        work: list[Awaitable[PushResult | list[PushResult] | None]] = []
        uploads: dict[str | None, list[tuple[QueuedLead, Call]]] = {}  # by upload zone
        dialled = self.placer.dialled_check()  # shared by the push's leads in doubt
        for q in batch:
            if q.action is Action.DELETE:
                if q.lead.withdrawn.startswith("dnc"):
                    work.append(guard(q, self.placer.withdraw_dnc(q)))
                elif q.lead.withdrawn == WINDOW_CODE:
                    work.append(guard(q, self.placer.withdraw(q)))
                else:
                    work.append(guard(q, self.placer.delete(q)))
                continue
            if not q.lead.phone:
                results[q.key] = PushResult.rejected(q.key, "no phone number to dial")
                continue
            if self.dispositioner is not None and self.cfg.dispositions is not None:
                try:
                    crm = disposition_of(q.lead, self.cfg.dispositions, self.cfg.server_timezone)
                except ValueError as exc:
                    results[q.key] = PushResult.rejected(q.key, str(exc))
                    continue
                if crm is not None:  # dispositioned in the CRM: not placed again
                    work.append(guard(q, self.dispositioner.send(q, crm)))
                    continue
            try:
                call = self.call_for(q.lead)
            except UnsafeValue as exc:
                results[q.key] = PushResult.rejected(q.key, str(exc))
                continue
            if self.is_dnc(q.lead):
                work.append(guard(q, self.placer.blacklist(q, call)))
            elif call.calldate is not None:
                work.append(guard(q, self.placer.single(q, call, SCHEDULE, dialled)))
            elif self.cfg.immediate == "dialertask":
                work.append(guard(q, self.placer.single(q, call, TASK, dialled)))
            else:
                uploads.setdefault(self.upload_zone(q), []).append((q, call))
        if uploads:
            work.append(self.placer.upload_zones(uploads, dialled))
        outcomes = await asyncio.gather(*work, return_exceptions=True)
        config_error: BaseException | None = None
        for outcome in outcomes:
            if isinstance(outcome, SinkConfigError):
                config_error = config_error or outcome
            elif isinstance(outcome, BaseException):
                raise outcome
            elif isinstance(outcome, list):
                results.update((r.key, r) for r in outcome)
            elif outcome is not None:
                results[outcome.key] = outcome
        if config_error is not None:
            raise config_error
        return [results[q.key] for q in batch if q.key in results]
