"""An Ameyo Customer Manager API simulator (Starlette).

``POST /ameyowebaccess/command?command=<id>`` with ``data=<JSON>``; replies are JSON
sent as ``text/plain``, errors with HTTP 200 in the document's shapes. Commands:
login, ping-session, logout, getLeadsForCampaign, uploadContacts,
uploadContactAndAddCallback, addCallback, getContacts. Sessions expire after
``session_timeout_s`` without activity; cloud requests may authenticate with the
``hash-key`` / ``policy-name`` / ``requesting-host`` headers instead.

Customers are upserted on (campaign, phone1) honouring ``update.customer`` and
``migrate.customer``, with the request's ``validityTime`` (the server's clock, or the
zone it names: ``GMT+05:30``, ``+0530``, ``IST``), after which a customer is not
dialled; the dialing engine in ``ameyo_dialer`` works through them and their
callbacks over time, so getContacts has real outcomes to report.

Quirks (:mod:`syncd.simulators.quirks`): a BOM, a campaign not running for a
while ("Campaign is not running"), 413 above N records, commands the server lacks,
forms decoded as ISO-8859-1, credentials refused for a while, a batch stored but
answered late.

Admin endpoints: ``GET /_sim/state``, ``GET /_sim/holdings``, ``POST /_sim/faults``,
``POST /_sim/quirks``, ``POST /_sim/expire``.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from syncd.simulators.ameyo.dialing import Callback, ContactFloor, Customer, LeadInfo
from syncd.simulators.faults import FaultInjector, Faults, faults_route
from syncd.simulators.form import parse_form
from syncd.simulators.quirks import Quirks, QuirkState, holdings_of, quirks_route
from syncd.simulators.ringing import RingTimes

ALIAS = "__campaign_customer_table_alias__."
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# A validityTime's zone, as Java's `yyyy-MM-dd HH:mm:ss z` reads it: GMT+05:30, +0530, or
# one of the abbreviations it maps (a few; the document's example is IST).
ZONE_OFFSET = re.compile(r"^(?:GMT|UTC)?([+-])(\d{1,2}):?(\d{2})$")
ZONE_NAMES = {
    "UTC": 0, "GMT": 0, "IST": 330, "EST": -300, "EDT": -240, "CST": -360, "CDT": -300,
    "MST": -420, "MDT": -360, "PST": -480, "PDT": -420,
}  # fmt: skip
PHONE_COLUMN = re.compile(r"^phone\d+$")
PHONE_TEXT = re.compile(r"^\+?\d+$")
SESSION_SHAPES = ("status", "processing", "failed", "login_page")
NATURAL_SHAPE = {
    "ping-session": "status",
    "logout": "processing",
    "getContacts": "failed",
    "uploadContacts": "failed",
    "uploadContactAndAddCallback": "processing",
    "addCallback": "failed",
    "getLeadsForCampaign": "status",
}
UPLOADS = {
    "uploadContacts": "customerRecords",
    "uploadContactAndAddCallback": "customerAndCallbackRecords",
}
NOT_RUNNING = "Campaign is not running"
LOGIN_PAGE = (
    "<!DOCTYPE html><html><head><title>Ameyo Login</title></head><body>"
    '<form action="/ameyowebaccess/login" method="post"><input name="userId">'
    '<input type="password" name="password"><button>Login</button></form></body></html>'
)


def failed(*comment: Any) -> dict[str, Any]:
    return {"result": "Failed.", "comment": list(comment)}


@dataclass
class SimSession:
    id: str
    user: str
    last_active: float


class AmeyoSimulator:
    """The state behind the app; tests read it directly or through /_sim/state."""

    def __init__(
        self,
        *,
        users: dict[str, str] | None = None,
        campaigns: dict[int, dict[int, bool]] | None = None,
        hash_keys: dict[str, str] | None = None,
        session_timeout_s: float = 180.0,
        ping_interval_ms: int = 20_000,
        single_session: bool = False,
        refused_login: str = "error",  # "null": answer a wrong password with `null`
        echo_errors: bool = False,  # error replies quote the request, password included
        min_phone_length: int = 6,
        max_phone_length: int = 20,
        max_attempt: int = 10,
        dialing: bool = True,
        dial_every_s: float = 1.0,
        dials_per_tick: int = 5,
        redial_after_s: float = 60.0,
        dial_outcomes: Sequence[str] | None = None,
        agents: Sequence[str] = ("agent1", "agent2"),
        timezone: str = "UTC",
        not_running: set[int] | None = None,  # campaigns paused by a supervisor: uploads refused
        seed: int = 0,
        faults: Faults | None = None,
        clock: Callable[[], float] = time.time,
        quirks: Quirks | None = None,
        key_column: str = "crm_key",  # the campaign column holding the CRM key (holdings)
        name_column: str = "name",
    ) -> None:
        self.lock = threading.Lock()
        self.quirks = QuirkState("ameyo", quirks, clock)
        self.key_column, self.name_column = key_column, name_column
        self.users = users if users is not None else {"syncd": "secret"}
        layout = campaigns if campaigns is not None else {1: {1: True, 21: True, 35: False}}
        self.campaigns = {
            c: {lid: LeadInfo(lid, enabled, max_attempt) for lid, enabled in leads.items()}
            for c, leads in layout.items()
        }
        self.hash_keys = hash_keys if hash_keys is not None else {"test-hash-key": "syncd"}
        self.session_timeout_s = session_timeout_s
        self.ping_interval_ms = ping_interval_ms
        self.single_session = single_session
        self.refused_login = refused_login
        self.echo_errors = echo_errors
        self.min_phone_length = min_phone_length
        self.max_phone_length = max_phone_length
        self.zone = ZoneInfo(timezone)
        self.clock = clock
        self.rng = random.Random(seed)
        self.floor = ContactFloor(
            self.campaigns,
            self.rng,
            agents=tuple(agents),
            dialing=dialing,
            dial_every_s=dial_every_s,
            dials_per_tick=dials_per_tick,
            redial_after_s=redial_after_s,
        )
        self.floor.set_outcomes(dial_outcomes)
        self.faults = FaultInjector(faults)
        # Tests may change it at run time (a supervisor pauses and resumes the campaign).
        self.not_running: set[int] = set(not_running or ())
        self.session_error_shape: str | None = None  # force one invalid-session shape
        self.sessions: dict[str, SimSession] = {}
        self.forced: dict[str, list[str | None]] = {}  # phone1 -> result types to answer
        self.counts = {"logins": 0, "pings": 0, "logouts": 0, "expired": 0, "invalidated": 0}
        self.requests: dict[str, int] = {}
        # How many customer ids each getContacts asked about (all: 0), in order
        self.contacts_asked: list[int] = []

    # -- test hooks --------------------------------------------------------------

    def force_result(self, phone1: str, result: str, times: int | None = 1) -> None:
        """Answer ``result`` for uploads of ``phone1`` (``times`` times; None: always)."""
        with self.lock:
            self.forced[phone1] = [result] * times if times is not None else [None, result]

    def set_dialer(
        self,
        outcomes: Sequence[str] | None = None,
        *,
        dial_every_s: float | None = None,
        redial_after_s: float | None = None,
        dialing: bool = True,
    ) -> None:
        """Switch the dialer on or off; ``outcomes`` cycles instead of a weighted draw."""
        with self.lock:
            self.floor.dialing = dialing
            if outcomes is not None:
                self.floor.set_outcomes(outcomes)
            if dial_every_s is not None:
                self.floor.dial_every_s = dial_every_s
            if redial_after_s is not None:
                self.floor.redial_after_s = redial_after_s

    def expire_sessions(self) -> int:
        """Expire every session now, as a lapsed timeout would; return how many."""
        with self.lock:
            n = len(self.sessions)
            self.counts["expired"] += n
            self.sessions.clear()
            return n

    # -- dispatch ----------------------------------------------------------------

    def handle(self, command: str, data: Any, headers: dict[str, str]) -> Response:
        with self.lock:
            self.requests[command] = self.requests.get(command, 0) + 1
            self.floor.advance(self.clock())
            if not isinstance(data, dict):
                return _reply({"status": "error", "reason": "Invalid JSON in data"})
            if command == "login":
                answer = self.login(data)
                if self.echo_errors and isinstance(answer, dict) and "reason" in answer:
                    answer["reason"] += f" (request was: {json.dumps(data)})"
                return _reply(answer)
            handler = self._handlers().get(command)
            if handler is None or self.quirks.missing(command):
                return _reply({"status": "error", "reason": f"Unknown command: {command}"})
            auth = self._authorise(command, data, headers)
            if isinstance(auth, Response):
                return auth
            return _reply(handler(data))

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {
            "ping-session": self.ping,
            "logout": self.logout,
            "getLeadsForCampaign": self.get_leads,
            "uploadContacts": self.upload_contacts,
            "uploadContactAndAddCallback": self.upload_with_callbacks,
            "addCallback": self.add_callback,
            "getContacts": self.get_contacts,
        }

    def _authorise(self, command: str, data: dict[str, Any], headers: dict[str, str]) -> Any:
        hash_key = headers.get("hash-key")
        revoked = self.quirks.revoked()
        if hash_key is not None:
            policy = headers.get("policy-name")
            if (
                self.hash_keys.get(hash_key) != policy
                or not headers.get("requesting-host")
                or revoked
            ):
                return JSONResponse(
                    {"status": "error", "reason": "Unauthorized: invalid hash-key or policy"},
                    status_code=401,
                )
            return "cloud"
        sid = str(data.get("sessionId", ""))
        session = self.sessions.get(sid)
        now = self.clock()
        if session is not None and now - session.last_active > self.session_timeout_s:
            del self.sessions[sid]
            self.counts["expired"] += 1
            session = None
        if session is not None and revoked:  # revoked credentials end their sessions
            del self.sessions[sid]
            session = None
        if session is None:
            return self._session_error(command, sid, self.session_error_shape)
        if command != "logout" and self.faults.session_fault():
            del self.sessions[sid]
            self.counts["invalidated"] += 1
            return self._session_error(command, sid, self.rng.choice(SESSION_SHAPES))
        session.last_active = now
        return session.user

    def _session_error(self, command: str, sid: str, shape: str | None) -> Response:
        shape = shape or NATURAL_SHAPE.get(command, "processing")
        text = f"Invalid session Id: {sid}"
        if shape == "login_page":
            return HTMLResponse(LOGIN_PAGE)
        if shape == "status":
            return _reply({"status": "error", "reason": text, "details": text})
        if shape == "failed":
            return _reply(failed("LogoutRemoterProcessorHelper.invalid.sessionid", sid))
        return _reply({"message": text, "type": "ProcessingException", "isPopulated": True})

    # -- session commands ----------------------------------------------------------

    def describe(self, url: str) -> str:
        """Return what a client must send to be accepted, and where to read what it holds."""
        users = ", ".join(f"{u} / {p}" for u, p in sorted(self.users.items()))
        keys = ", ".join(f"{k} (policy {p})" for k, p in sorted(self.hash_keys.items()))
        campaigns = ", ".join(
            f"{c} (lead lists {', '.join(str(i) for i in sorted(leads))})"
            for c, leads in sorted(self.campaigns.items())
        )
        return "\n".join(
            [
                f"  endpoint    POST {url}/ameyowebaccess/command/?command=NAME  (form data=JSON)",
                f"  login       {users}  (command login: userId, password)",
                f"  hash-key    {keys}  (headers hash-key, policy-name, requesting-host)",
                f"  campaigns   {campaigns}",
                f"  holds       GET {url}/_sim/state",
            ]
        )

    def login(self, data: dict[str, Any]) -> dict[str, Any] | None:
        user = str(data.get("userId", ""))
        revoked = self.quirks.revoked()
        if not user or self.users.get(user) != data.get("password") or revoked:
            if self.refused_login == "null":
                return None  # what some Ameyo servers answer, with HTTP 200
            text = f"Authentication failed for user: {user}"
            return {"status": "error", "reason": text, "details": text}
        if self.single_session:
            for sid in [s.id for s in self.sessions.values() if s.user == user]:
                del self.sessions[sid]
        self.counts["logins"] += 1
        sid = f"d431-{uuid.uuid4().hex[:8]}-ses-{user}-{self.counts['logins']}"
        self.sessions[sid] = SimSession(sid, user, self.clock())
        return {
            "sessionId": sid,
            "userId": user,
            "userType": "CustomerManager",
            "terminalInfo": str(data.get("terminal", "")),
            "campaignInfos": [
                {
                    "campaignName": f"Campaign{c}",
                    "campaignId": c,
                    "campaignType": "Outbound Voice Campaign",
                }
                for c in self.campaigns
            ],
            "pingInterval": self.ping_interval_ms,
            "pingNotificationTimeout": 60000,
            "sessionTimeout": int(self.session_timeout_s * 1000),
            "commandTimeout": 20000,
            "maxPhoneLengthAllowed": self.max_phone_length,
        }

    def ping(self, data: dict[str, Any]) -> dict[str, Any]:
        self.counts["pings"] += 1
        return {"alive": True, "serverTime": int(self.clock() * 1000)}

    def logout(self, data: dict[str, Any]) -> dict[str, Any]:
        self.sessions.pop(str(data.get("sessionId", "")), None)
        self.counts["logouts"] += 1
        return {}

    # -- campaign commands -----------------------------------------------------------

    def _campaign(self, data: dict[str, Any]) -> tuple[int, dict[int, LeadInfo]] | dict[str, Any]:
        try:
            campaign_id = int(str(data.get("campaignId")))
        except ValueError:
            return failed("CustomerManager.campaign.id.cannot.be.null")
        leads = self.campaigns.get(campaign_id)
        if leads is None:
            return failed("CustomerManager.campaign.not.found", campaign_id)
        return campaign_id, leads

    def get_leads(self, data: dict[str, Any]) -> Any:
        found = self._campaign(data)
        if isinstance(found, dict):
            return found
        campaign_id, leads = found
        return [
            {
                "id": lead.lead_id,
                "campaignId": campaign_id,
                "leadId": lead.lead_id,
                "priority": 1,
                "weightage": 1,
                "enabled": lead.enabled,
                "maxAttempt": lead.max_attempt,
                "churnCount": 0,
                "fetchOrderDetails": [{"ascending": False}],
            }
            for lead in leads.values()
        ]

    def _upload_target(
        self, data: dict[str, Any]
    ) -> tuple[int, int, dict[str, Any]] | dict[str, Any]:
        found = self._campaign(data)
        if isinstance(found, dict):
            return found
        campaign_id, leads = found
        if campaign_id in self.not_running:
            return {"status": "error", "reason": "Campaign is not running"}
        try:
            lead_id = int(str(data.get("leadId")))
        except ValueError:
            return failed("CustomerManager.lead.id.cannot.be.null")
        if lead_id not in leads:
            return failed(f"CustomerManager.lead.not.in.camp.{lead_id}", campaign_id, lead_id)
        props = data.get("properties")
        if not isinstance(props, dict):
            return failed("CustomerManager.properties.cannot.be.null")
        return campaign_id, lead_id, props

    def _not_running(self, campaign_id: int) -> dict[str, Any] | None:
        """Return the refusal of a paused campaign, or None when it is running."""
        return failed(NOT_RUNNING, campaign_id) if self.quirks.paused() else None

    def upload_contacts(self, data: dict[str, Any]) -> dict[str, Any]:
        target = self._upload_target(data)
        if isinstance(target, dict):
            return target
        paused = self._not_running(target[0])
        if paused is not None:
            return paused
        records = data.get("customerRecords")
        if not isinstance(records, list):
            return failed("CustomerManager.customerRecords.cannot.be.null")
        valid_until = _validity(data, self.zone)
        if isinstance(valid_until, dict):
            return valid_until
        results = []
        for record in records:
            outcome, _ = self._upsert(*target, record, valid_until)
            results.append(outcome)
        return {"beanResponse": results}

    def upload_with_callbacks(self, data: dict[str, Any]) -> Any:
        target = self._upload_target(data)
        if isinstance(target, dict):
            return target
        campaign_id = target[0]
        paused = self._not_running(campaign_id)
        if paused is not None:
            return paused
        records = data.get("customerAndCallbackRecords")
        if not isinstance(records, list):
            return failed("CustomerManager.customerAndCallbackRecords.cannot.be.null")
        valid_until = _validity(data, self.zone)
        if isinstance(valid_until, dict):
            return valid_until
        answers = []
        for item in records:
            item = item if isinstance(item, dict) else {}
            callback = item.get("callbackRecord")
            answer: dict[str, Any] = {
                "callbackProperties": None,
                "callbackTime": None,
                "campaignId": campaign_id,
                "id": None,
                "isSelfCallback": False,
                "userId": None,
            }
            when = (
                _parse_time(callback.get("callBackTime"), self.zone)
                if isinstance(callback, dict)
                else None
            )
            if callback is not None and when is None:
                shown = callback.get("callBackTime") if isinstance(callback, dict) else callback
                answer.update(
                    _failure(
                        "INVALID_RECORD_FAILED", "CustomerManager.callback.time.invalid", shown
                    )
                )
                answers.append(answer)
                continue
            outcome, customer = self._upsert(*target, item.get("customerRecord"), valid_until)
            answer.update(
                {
                    "crmIntegrated": True,
                    "crmTypeString": outcome["resultTypeString"],
                    "crmSuccess": outcome.get("inserted", False),
                    "customerId": outcome.get("customerId"),
                    "isInserted": outcome.get("inserted", outcome.get("Inserted", False)),
                    "resultTypeString": outcome["resultTypeString"],
                    "message": None,
                }
            )
            if "exception" in outcome:
                answer["exception"] = outcome["exception"]
                answer["message"] = str(outcome["exception"][0])
            if customer is not None and isinstance(callback, dict) and when is not None:
                cb = self._schedule(customer, when, callback)
                answer.update(
                    {
                        "id": cb.id,
                        "callbackProperties": {
                            "phone": cb.phone,
                            "customerId": str(customer.customer_id),
                        },
                        "callbackTime": _display_time(when, self.zone),
                        "isSelfCallback": cb.self_callback,
                        "userId": cb.user_id,
                    }
                )
            answers.append(answer)
        return answers

    def add_callback(self, data: dict[str, Any]) -> dict[str, Any]:
        found = self._campaign(data)
        if isinstance(found, dict):
            return found
        if found[0] in self.not_running:
            return {"status": "error", "reason": "Campaign is not running"}
        paused = self._not_running(found[0])
        if paused is not None:
            return paused
        when = _parse_time(data.get("callBackTime"), self.zone)
        if when is None:
            return failed("CustomerManager.callback.time.invalid", data.get("callBackTime"))
        props = data.get("callBackProperties")
        props = props if isinstance(props, dict) else {}
        customer = self.floor.customer(found[0], props.get("customerId"))
        if customer is None:
            return failed("CustomerManager.customer.not.found", props.get("customerId"))
        cb = self._schedule(customer, when, {**data, "callBackPhone": props.get("phone")})
        phone = cb.phone
        return {
            "beanResponse": [
                {
                    "id": cb.id,
                    "campaignId": cb.campaign_id,
                    "callBackTime": _display_time(when, self.zone),
                    "selfCallback": cb.self_callback,
                    "callBackProperties": [
                        {"phone": phone, "customerId": str(customer.customer_id)}
                    ],
                    "userId": cb.user_id,
                    "phone": phone,
                    "customerId": customer.customer_id,
                }
            ]
        }

    def get_contacts(self, data: dict[str, Any]) -> dict[str, Any]:
        found = self._campaign(data)
        if isinstance(found, dict):
            return found
        campaign_id, leads = found
        lead_ids = data.get("leadIds")
        wanted_leads: set[int] | None = None
        if isinstance(lead_ids, list) and lead_ids:
            wanted_leads = set()
            for raw in lead_ids:
                lead_id = int(str(raw)) if str(raw).isdigit() else -1
                if lead_id not in leads:
                    return failed(
                        f"CustomerManager.lead.not.in.camp.{lead_id}", lead_id, campaign_id
                    )
                wanted_leads.add(lead_id)
        ids = data.get("customerIds")
        self.contacts_asked.append(len(ids) if isinstance(ids, list) else 0)
        if isinstance(ids, list) and ids:
            pool = [c for c in (self.floor.customer(campaign_id, i) for i in ids) if c]
        else:
            pool = list(self.floor.customers.values())
        enabled_only = str(data.get("chooseEnabledLeads", "false")).lower() == "true"
        columns = _other_columns(data.get("otherColumns"))
        rows = []
        for c in pool:
            if c.campaign_id != campaign_id or (
                wanted_leads is not None and c.lead_id not in wanted_leads
            ):
                continue
            if enabled_only and not leads[c.lead_id].enabled:
                continue
            rows.append(self._contact(c, columns))
        return {"beanResponse": rows, "result": "Success.", "comment": "Execution successful"}

    # -- customers -------------------------------------------------------------------

    def _phone_problem(self, record: dict[str, Any]) -> dict[str, Any] | None:
        for column, value in record.items():
            text = str(value or "").strip()
            if not PHONE_COLUMN.match(column) or not text:
                continue
            if not PHONE_TEXT.match(text):
                return _failure(
                    "INVALID_RECORD_FAILED", "CustomerManager.Phone.number.invalid", text
                )
            if not self.min_phone_length <= len(text) <= self.max_phone_length:
                return _failure(
                    "PREPROCESSING_INVALID_LENGTH",
                    "CustomerManager.Phone.number.does.not.have.valid.length",
                    len(text),
                )
        return None

    def _upsert(
        self,
        campaign_id: int,
        lead_id: int,
        props: dict[str, Any],
        record: Any,
        valid_until: float | None = None,
    ) -> tuple[dict[str, Any], Customer | None]:
        if not isinstance(record, dict):
            return _failure("INVALID_RECORD_FAILED", "CustomerManager.record.invalid"), None
        phone1 = str(record.get("phone1") or "").strip()
        if not phone1:
            # The document spells this one "Inserted"; clients must not care.
            answer = _failure(
                "PREPROCESSOR_NOT_NULLABLE_COLUMN_GIVEN_NULL",
                "CustomerManager.Column.name.cannot.be.missing.empty",
                "phone1",
            )
            answer["Inserted"] = answer.pop("inserted")
            return answer, None
        problem = self._phone_problem(record)
        if problem is not None:
            return problem, None
        echoed = self.quirks.echoed_refusal(record)
        if echoed is not None:
            return _failure("INVALID_RECORD_FAILED", echoed), None
        queue = self.forced.get(phone1)
        if queue:
            result = queue[-1] if queue[0] is None else queue.pop(0)
            assert result is not None
            return _failure(result, f"CustomerManager.simulated.{result.lower()}"), None
        result, customer = self.floor.upsert(
            campaign_id,
            lead_id,
            record,
            update=_flag(props.get("update.customer")),
            migrate=_flag(props.get("migrate.customer")),
            now=self.clock(),
            valid_until=valid_until,
        )
        return _success(result, customer), customer

    def _schedule(self, customer: Customer, when: float, spec: dict[str, Any]) -> Callback:
        user = spec.get("userId")
        return self.floor.schedule(
            customer,
            when,
            str(spec.get("callBackPhone") or ""),
            str(user) if user else None,
            _flag(spec.get("isSelfCallBack")),
        )

    def _contact(self, c: Customer, columns: dict[str, str]) -> dict[str, Any]:
        values = {
            "status": c.status,
            "attempts": c.attempts,
            "disposition": c.disposition,
            "last_user_id": c.last_user_id,
            "last_dialed": _db_time(c.last_dialed, self.zone),
            "last_dialed_time": _db_time(c.last_dialed, self.zone),
            "last_connected_time": _db_time(c.last_connected, self.zone),
            "num_outbound_attempted": c.num_outbound_attempted,
            "num_outbound_connected": c.num_outbound_connected,
            "num_inbound_attempted": 0,
            "num_inbound_connected": 0,
            "churn_count": 0,
            "validity_time": _db_time(c.valid_until, self.zone),
        }
        extra = {
            alias: values[name] for name, alias in columns.items() if values.get(name) is not None
        }
        return {
            "customerId": c.customer_id,
            "processId": c.campaign_id,
            "leadId": c.lead_id,
            "numInboundAttempted": 0,
            "numInboundConnected": 0,
            "numOutboundAttempted": c.num_outbound_attempted,
            "numOutboundConnected": c.num_outbound_connected,
            "customerData": dict(c.data),
            "extraData": extra,
        }

    # -- inspection ----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            self.floor.advance(self.clock())
            return {
                **self.counts,
                "active_sessions": len(self.sessions),
                "customers": [asdict(c) for c in self.floor.customers.values()],
                "callbacks": [asdict(cb) for cb in self.floor.callbacks],
                "requests": dict(self.requests),
                "dials": self.floor.dials,
                "faults_injected": dict(self.faults.injected),
            }

    def holdings(self, campaign_id: int = 1) -> dict[str, Any]:
        """Return who the dialer would ring: its customers, open per number.

        Ameyo has no delete: every customer of an enabled lead list that has not
        run out of attempts or connected stays open (``finished`` otherwise). An open
        row rings from its pending callback's time to its validityTime
        (``syncd.simulators.ringing``); the simulated campaign has no calling hours.
        """
        with self.lock:
            self.floor.advance(self.clock())
            open_rows: list[dict[str, Any]] = []
            finished: list[dict[str, Any]] = []
            for c in self.floor.customers.values():
                if c.campaign_id != campaign_id:
                    continue
                numbers = sorted(
                    {str(v).strip() for k, v in c.data.items() if PHONE_COLUMN.match(k) and v}
                )
                row = {
                    "key": str(c.data.get(self.key_column) or ""),
                    "numbers": numbers,
                    "name": str(c.data.get(self.name_column) or ""),
                    **self._ring_times(c).fields(),
                }
                lead = self.campaigns.get(campaign_id, {}).get(c.lead_id)
                done = c.status == "CONNECTED" or (
                    lead is not None and c.attempts >= lead.max_attempt
                )
                (finished if done else open_rows).append(row)
        return holdings_of(open_rows, [], finished)

    def _ring_times(self, c: Customer) -> RingTimes:
        callback = next((cb for cb in self.floor.callbacks if cb.id == c.callback_id), None)
        return RingTimes(
            ring_from=_utc(callback.at) if callback is not None else None,
            ring_until=_utc(c.valid_until),
        )

    def customer_list(self) -> list[Customer]:
        """Return copies of the customers after letting the dialer catch up."""
        with self.lock:
            self.floor.advance(self.clock())
            return [Customer(**asdict(c)) for c in self.floor.customers.values()]

    def uploads(self) -> dict[str, int]:
        """Return phone1 -> how many times it was uploaded."""
        with self.lock:
            return {str(c.data.get("phone1")): c.uploads for c in self.floor.customers.values()}

    @property
    def callbacks(self) -> list[Callback]:
        return self.floor.callbacks

    @property
    def logins(self) -> int:
        return self.counts["logins"]

    @property
    def pings(self) -> int:
        return self.counts["pings"]


def _reply(body: Any) -> Response:
    # Ameyo sends its JSON as text/plain; clients must parse the body whatever the type.
    return Response(json.dumps(body), media_type="text/plain")


def _success(result: str, c: Customer) -> dict[str, Any]:
    return {
        "inserted": result != "DUPLICATE_NOT_ADDED",
        "customerId": c.customer_id,
        "resultTypeString": result,
        "crmIntegrated": True,
        "crmSuccess": True,
        "crmResultTypeString": result,
    }


def _failure(result: str, *exception: Any) -> dict[str, Any]:
    return {
        "inserted": False,
        "exception": list(exception),
        "resultTypeString": result,
        "crmIntegrated": False,
        "crmSuccess": False,
    }


def _flag(value: Any) -> bool:
    return str(value).strip().lower() == "true"


def _parse_time(value: Any, zone: ZoneInfo) -> float | None:
    try:
        return datetime.strptime(str(value).strip(), TIME_FORMAT).replace(tzinfo=zone).timestamp()
    except ValueError:
        return None


def _validity(data: dict[str, Any], zone: ZoneInfo) -> float | dict[str, Any] | None:
    """Return a request's validityTime (epoch s; None: not given), or its refusal."""
    value = data.get("validityTime")
    if value in (None, ""):
        return None
    text = str(value).strip()
    named = text[19:].strip()  # after "YYYY-MM-DD hh:mm:ss"
    where: tzinfo | None = _named_zone(named) if named else zone
    try:
        if where is None:
            raise ValueError(named)
        return datetime.strptime(text[:19], TIME_FORMAT).replace(tzinfo=where).timestamp()
    except ValueError:
        return failed("CustomerManager.validity.time.invalid", text)


def _named_zone(name: str) -> tzinfo | None:
    """Return the zone a validityTime names (None: one Java would not read)."""
    if name.upper() in ZONE_NAMES:
        return timezone(timedelta(minutes=ZONE_NAMES[name.upper()]))
    match = ZONE_OFFSET.match(name.upper())
    if match is None:
        return None
    sign, hours, minutes = match.groups()
    offset = timedelta(hours=int(hours), minutes=int(minutes))
    return timezone(-offset if sign == "-" else offset)


def _utc(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch is not None else None


def _display_time(epoch: float, zone: ZoneInfo) -> str:
    when = datetime.fromtimestamp(epoch, zone)
    return f"{when:%b} {when.day}, {when:%Y} {when.hour % 12 or 12}:{when:%M:%S %p}"


def _db_time(epoch: float | None, zone: ZoneInfo) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, zone).strftime(TIME_FORMAT) + ".0"


def _other_columns(value: Any) -> dict[str, str]:
    """Return column -> result alias from otherColumns (a map of aliases, or a list)."""
    pairs: list[tuple[str, str]] = []
    if isinstance(value, dict):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    elif isinstance(value, list):
        pairs = [(str(v), str(v).removeprefix(ALIAS).upper()) for v in value]
    return {name.removeprefix(ALIAS).lower(): alias for name, alias in pairs}


def create_app(sim: AmeyoSimulator | None = None, **kwargs: Any) -> Starlette:
    """Return the ASGI app; ``app.state.sim`` is the simulator behind it."""
    sim = sim or AmeyoSimulator(**kwargs)

    async def command(request: Request) -> Response:
        return sim.quirks.dress(await answer(request))

    async def answer(request: Request) -> Response:
        faulty = await sim.faults.before()
        if faulty is not None:
            return faulty
        raw, encoding = sim.quirks.form_text(
            await request.body(), request.headers.get("content-type", "")
        )
        form = parse_form(raw, encoding)
        name = request.query_params.get("command") or (form.get("command") or [""])[0]
        text = (form.get("data") or [request.query_params.get("data", "")])[0]
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        batch = data.get(UPLOADS[name]) if name in UPLOADS and isinstance(data, dict) else None
        if isinstance(batch, list):
            too_large = sim.quirks.too_large(len(batch))
            if too_large is not None:
                return too_large
        headers = {k.lower(): v for k, v in request.headers.items()}
        response = sim.handle(name, data, headers)
        if isinstance(batch, list):
            await sim.quirks.after_store()
        return response

    async def state(request: Request) -> Response:
        return JSONResponse(sim.snapshot())

    async def expire(request: Request) -> Response:
        return JSONResponse({"expired": sim.expire_sessions()})

    async def holdings(request: Request) -> Response:
        try:
            campaign_id = int(request.query_params.get("campaign", "1"))
        except ValueError:
            return JSONResponse({"error": "campaign is a number"}, status_code=400)
        return JSONResponse(sim.holdings(campaign_id))

    app = Starlette(
        routes=[
            Route("/ameyowebaccess/command", command, methods=["POST", "GET"]),
            Route("/ameyowebaccess/command/", command, methods=["POST", "GET"]),
            Route("/_sim/state", state, methods=["GET"]),
            Route("/_sim/holdings", holdings, methods=["GET"]),
            faults_route(sim.faults),
            quirks_route(sim.quirks),
            Route("/_sim/expire", expire, methods=["POST"]),
        ]
    )
    app.state.sim = sim
    return app
