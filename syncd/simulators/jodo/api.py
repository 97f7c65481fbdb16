"""A Jodo Customer Web Service simulator (Starlette).

Answers ``handleCustomerWS`` with the document's shapes and status codes:
success ``{"statuscode":"001"}`` (ImportProcessData, getProcessData,
reallocatedata) or ``{"status":3}`` (recordings, userStatus, saveDisposition),
failure ``{"status":N,"statusdesc":…}``. Records are upserted by the request's
``updateparam``; every record received is counted per key so tests can prove
nobody was pushed twice.

With a :class:`DialPlan` the simulator also works the records it holds (see
``jodo_dialer``): calls, agents whose status changes, recordings that appear
some time after a call. ``saveDisposition`` takes a record out of dialing; a
later ImportProcessData of the same record puts it back. ``storedatetime`` is
stamped on every change, which is what a ``daterange`` search reads.

Quirks (:mod:`syncd.simulators.quirks`): failed records listed in a success
reply's ``faileddata``, a BOM, text/plain JSON, 413 above N records, methods the
server lacks ("Invalid method"), an API key refused for a while, a batch stored
but answered late. ``saveDisposition`` closes every record holding the number,
in ``mobilenumber`` or an alternate-number field, as a real server does.

Admin endpoints for tests and the demo: ``GET /_sim/state``, ``GET /_sim/holdings``,
``POST /_sim/faults``, ``POST /_sim/quirks``, ``POST /_sim/agents``
(``{"login": …, "status": 0}``), ``POST /_sim/recordings``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from syncd.simulators.faults import FaultInjector, Faults, faults_route
from syncd.simulators.form import parse_form
from syncd.simulators.jodo.dialing import (
    AGENT_STATUSES,
    LOGGED_OUT,
    READY,
    DialPlan,
    DialResult,
    DialState,
    Floor,
)
from syncd.simulators.jodo.users import UserDirectory
from syncd.simulators.quirks import Quirks, QuirkState, holdings_of, quirks_route
from syncd.simulators.ringing import RingTimes

__all__ = ["AGENT_STATUSES", "DialPlan", "DialResult", "JodoSimulator", "create_app"]

MEDIA = {1, 2, 3, 4, 8, 11, 12, 21, 22, 31}
MEDIA_NAMES = {
    "email in",
    "email out",
    "sms in",
    "sms out",
    "chat",
    "voice in",
    "voice out",
    "social-twitter",
    "social-facebook",
    "video",
}
CALL_TYPES = {5, 21, 31, 41, 71, 1001}
UPDATE_PARAMS = ("mobilenumber", "customercode", "crmuniquefield")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
PHONE = re.compile(r"^\+?\d{7,16}$")
# Form-template fields that hold a record's alternate numbers (configurable per process).
ALT_PHONE_FIELDS = ("alternatenumber1", "alternatenumber2", "alternatenumber3")
MAX_RECORDS_PER_REQUEST = 10_000


def _now() -> str:
    # Replaced by the simulator's own clock and zone before a reply goes out.
    return datetime.now().strftime(TIME_FORMAT)


def _offset(clock: Callable[[], float], seconds: float) -> Callable[[], float]:
    return lambda: clock() + seconds


def ok(method: str, **extra: Any) -> dict[str, Any]:
    return {
        "method": method,
        "resdatetime": _now(),
        "statuscode": "001",
        "statusdesc": "success",
        **extra,
    }


def fail(method: str, status: int, desc: str) -> dict[str, Any]:
    return {
        "method": method,
        "revisionno": "1",
        "status": status,
        "statusdesc": desc,
        "resdatetime": _now(),
    }


@dataclass
class Process:
    """One Jodo process (servicekey): the records it holds."""

    apikey: str
    servicekey: str
    crm_unique_field: str = "leadnumber"
    records: list[dict[str, Any]] = field(default_factory=list)
    index: dict[tuple[str, str], int] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)  # update-key value -> times pushed
    dial_state: dict[int, DialState] = field(default_factory=dict)  # slot -> the dialer's view

    def key_field(self, updateparam: str) -> str:
        return {
            "mobilenumber": "mobilenumber",
            "customercode": "customercode",
            "crmuniquefield": self.crm_unique_field,
        }[updateparam]

    def upsert(self, updateparam: str, record: dict[str, Any], stamp: str | None = None) -> None:
        value = str(record[self.key_field(updateparam)])
        self.received[value] = self.received.get(value, 0) + 1
        slot = self.index.get((updateparam, value))
        stamped = {**record, "storedatetime": stamp or _now()}
        if slot is None:
            self.records.append(stamped)
            slot = len(self.records) - 1
        else:
            self.records[slot] = {**self.records[slot], **stamped}
            state = self.dial_state.get(slot)
            if state is not None and state.disposed:  # the CRM re-opened a disposed lead
                state.disposed = state.final = False
        for param in UPDATE_PARAMS:
            key = self.records[slot].get(self.key_field(param))
            if key not in (None, ""):
                self.index[(param, str(key))] = slot


class JodoSimulator:
    """The state behind the app; tests read it directly or through /_sim/state."""

    def __init__(
        self,
        *,
        apikey: str = "test_org",
        servicekeys: tuple[str, ...] = ("VoiceProcess",),
        faults: Faults | None = None,
        crm_unique_field: str = "leadnumber",
        dial: DialPlan | None = None,
        agents: dict[str, int] | None = None,
        timezone: str = "UTC",
        clock: Callable[[], float] = time.time,
        clock_offset_s: float = 0.0,
        echo_errors: bool = False,
        quirks: Quirks | None = None,
        alt_phone_fields: tuple[str, ...] = ALT_PHONE_FIELDS,
    ) -> None:
        self.lock = threading.Lock()
        self.quirks = QuirkState("jodo", quirks, clock)
        self.alt_phone_fields = alt_phone_fields
        # Like some servers (and proxies) in the field: a failure reply quotes the
        # whole request, API key included.
        self.echo_errors = echo_errors
        self.processes = {
            sk: Process(apikey, sk, crm_unique_field=crm_unique_field) for sk in servicekeys
        }
        self.apikeys = {apikey}
        self.zone_name, self.clock_offset_s = timezone, clock_offset_s
        self.faults = FaultInjector(faults)
        self.requests: dict[str, int] = {}
        self.request_times: list[tuple[float, str]] = []  # (monotonic, method): the rate seen
        self.last_body: dict[str, dict[str, Any]] = {}  # method -> its latest request body
        # A server whose clock is wrong stamps its rows and replies wrong by as much.
        self.floor = Floor(
            dial or DialPlan(),
            timezone,
            _offset(clock, clock_offset_s) if clock_offset_s else clock,
        )
        for login, status in (agents or {}).items():
            self.floor.set_agent(login, status)
        self.directory = UserDirectory(MEDIA_NAMES)  # addEditUser / deleteUser
        self.dispositions: list[dict[str, Any]] = []  # every saveDisposition accepted
        self.reallocations: list[dict[str, Any]] = []  # every reallocatedata accepted

    def add_process(self, apikey: str, servicekey: str) -> None:
        self.apikeys.add(apikey)
        self.processes[servicekey] = Process(apikey, servicekey)

    # -- handlers --------------------------------------------------------------

    def handle(self, body: dict[str, Any]) -> dict[str, Any]:
        method = str(body.get("method", ""))
        with self.lock:
            self.requests[method] = self.requests.get(method, 0) + 1
            self.request_times.append((time.monotonic(), method))
            if method != "ImportProcessData":  # batches can be large; nobody inspects them here
                self.last_body[method] = {k: v for k, v in body.items() if k != "apikey"}
            handler = {
                "ImportProcessData": self.import_process_data,
                "getProcessData": self.get_process_data,
                "customer_recording": self.customer_recording,
                "customer_multiple_recordings": self.customer_multiple_recordings,
                "userStatus": self.user_status,
                "reallocatedata": self.reallocate_data,
                "saveDisposition": self.save_disposition,
            }.get(method)
            if method in ("addEditUser", "deleteUser"):  # the organisation's: no process
                if str(body.get("apikey", "")) not in self.apikeys:
                    return self._stamped(fail(method, 1107, "API key not found"))
                return self._stamped(self._users(method, body))
            if handler is None or self.quirks.missing(method):
                return self._stamped(fail(method or "unknown", 5, "Invalid method"))
            self.floor.advance(self.processes.values())
            auth = self._authorise(method, body)
            if isinstance(auth, dict):
                return self._stamped(auth)
            return self._stamped(handler(auth, body))

    def _stamped(self, reply: dict[str, Any]) -> dict[str, Any]:
        """Return ``reply`` with its resdatetime on this server's clock and in its zone."""
        if "resdatetime" in reply:
            reply["resdatetime"] = self.floor.text(self.floor.clock())
        return reply

    def _authorise(self, method: str, body: dict[str, Any]) -> Process | dict[str, Any]:
        apikey = str(body.get("apikey", ""))
        servicekey = str(body.get("servicekey", ""))
        if apikey not in self.apikeys or self.quirks.revoked():
            return fail(method, 1107, "API key not found")
        process = self.processes.get(servicekey)
        if process is None:
            return fail(method, 1108, "Service key not found")
        if process.apikey != apikey:
            return fail(method, 1243, "API key and service key mismatch")
        if not _valid_time(body.get("reqdatetime")):
            return fail(method, 5, "Invalid reqdatetime")
        return process

    def _users(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        """Answer the user module; the users it holds are the floor's agents (logged out)."""
        if method == "deleteUser":
            reply = self.directory.delete(body)
            if reply["status"] == 1:
                self.floor.agents.pop(str(body.get("loginid")).strip(), None)
            return reply
        reply = self.directory.add_edit(body)
        login = str(body.get("loginid") or "").strip()
        if reply["status"] == 3 and login not in self.floor.agents:
            self.floor.set_agent(login, LOGGED_OUT)
        return reply

    def users(self) -> dict[str, dict[str, Any]]:
        """Return the users the organisation holds (loginid -> what was sent, password hash)."""
        with self.lock:
            return {login: dict(user) for login, user in self.directory.users.items()}

    def import_process_data(self, process: Process, body: dict[str, Any]) -> dict[str, Any]:
        method = "ImportProcessData"
        media = body.get("media")
        if media is None or str(media).strip() == "":
            return fail(method, 19, "Media Found blank")
        if not str(media).strip().isdigit():
            return fail(method, 17, "Invalid Media")
        if int(str(media)) not in MEDIA:
            return fail(method, 18, "Media Not found")
        if "updateparam" not in body:
            return fail(method, 24, "Update Parameter not found")
        updateparam = str(body["updateparam"])
        if not updateparam.strip():
            return fail(method, 25, "Update Parameter blank")
        if updateparam not in UPDATE_PARAMS:  # case sensitive, as the document says
            return fail(method, 26, "Invalid Update Parameter")
        data = body.get("data")
        if not isinstance(data, list) or not data or len(data) > MAX_RECORDS_PER_REQUEST:
            return fail(method, 5, "fail")
        key_field = process.key_field(updateparam)
        for record in data:
            problem = _record_problem(record, key_field)
            if problem:
                return fail(method, 5, problem)
        stamp = self.floor.text(self.floor.clock())
        failing = self.quirks.failing([str(record.get(key_field)) for record in data])
        echoed = {i: said for i, r in enumerate(data) if (said := self.quirks.echoed_refusal(r))}
        for i, record in enumerate(data):
            if i not in failing and i not in echoed:
                process.upsert(updateparam, record, stamp)
        if not failing and not echoed:
            return ok(method)
        # Some servers answer success and list what they did not store.
        reason = self.quirks.quirks.failed_reason
        listed = [
            {key_field: record.get(key_field), "mobilenumber": record.get("mobilenumber"),
             "reason": echoed.get(i, reason)}
            for i, record in enumerate(data) if i in failing or i in echoed
        ]  # fmt: skip
        return ok(method, faileddata=listed)

    def get_process_data(self, process: Process, body: dict[str, Any]) -> dict[str, Any]:
        method = "getProcessData"
        param = body.get("searchparam")
        if param == "daterange":
            start, end = body.get("fromdate"), body.get("todate")
            if not _valid_time(start) or not _valid_time(end):
                return fail(method, 16, "Invalid To Date format")
            if str(start) > str(end):
                return fail(method, 15, "Date range not proper")
            rows = [r for r in process.records if str(start) <= r["storedatetime"] <= str(end)]
        elif param in UPDATE_PARAMS:
            wanted = body.get(param)
            values = {str(v) for v in (wanted if isinstance(wanted, list) else [wanted])}
            field_name = process.key_field(str(param))
            rows = [r for r in process.records if str(r.get(field_name)) in values]
        else:
            return fail(method, 5, "Invalid searchparam")
        if not rows:
            return fail(method, 14, "Customer data not found")
        return ok(method, data=[dict(r) for r in rows])

    def customer_recording(self, process: Process, body: dict[str, Any]) -> dict[str, Any]:
        method = "customer_recording"
        call_id = str(body.get("systemcallid") or "").strip()
        if not call_id:
            return fail(method, 5, "fail")
        item = self.floor.recording(call_id)
        if item["status"] != 3:
            return fail(method, item["status"], item["statusdesc"])
        return {
            "method": method,
            "recordingfilepath": item["recordingfilepath"],
            "revisionno": 1,
            "statusdesc": "success",
            "status": 3,
            "resdatetime": _now(),
        }

    def customer_multiple_recordings(
        self, process: Process, body: dict[str, Any]
    ) -> dict[str, Any]:
        method = "customer_multiple_recordings"
        ids = body.get("systemcallids")
        if not isinstance(ids, list) or not ids:
            return fail(method, 5, "fail")
        return {
            "method": method,
            "resdatetime": _now(),
            "statusdata": [self.floor.recording(str(i).strip()) for i in ids],
        }

    def user_status(self, process: Process, body: dict[str, Any]) -> dict[str, Any]:
        method = "userStatus"
        logins = body.get("loginids")
        if isinstance(logins, str):
            logins = [logins]
        if not isinstance(logins, list) or not logins:
            return fail(method, 5, "loginids blank")
        now = self.floor.clock()
        return {
            "statusdata": [self.floor.user_status(str(login), now) for login in logins],
            "method": method,
            "timestamp": _now(),
        }

    def reallocate_data(self, process: Process, body: dict[str, Any]) -> dict[str, Any]:
        method = "reallocatedata"
        number = str(body.get("contactnumber") or "").strip()
        login = str(body.get("login") or "").strip()
        when = body.get("calldatetime")
        code = str(body.get("customercode") or "").strip()
        if not number:
            return fail(method, 5, "Contact number blank")
        if login not in self.floor.agents:
            return fail(method, 5, "Invalid login")
        if when not in (None, "") and not _valid_time(when):
            return fail(method, 5, "Invalid calldatetime")
        slots = [
            i
            for i, r in enumerate(process.records)
            if str(r.get("mobilenumber")) == number
            and (code in ("", "0") or str(r.get("customercode")) == code)
        ]
        if not slots:
            return fail(method, 14, "Customer data not found")
        stamp = self.floor.text(self.floor.clock())
        for slot in slots:
            record = process.records[slot]
            record.update({"userlogin": login, "storedatetime": stamp})
            if when not in (None, ""):
                record["callDateTime"] = str(when)
            process.dial_state.setdefault(slot, DialState()).next_at = 0.0
        self.reallocations.append({"contactnumber": number, "login": login})
        return {
            "method": method,
            "statuscode": "001",
            "resdatetime": _now(),
            "statusdesc": "Success",
        }

    def save_disposition(self, process: Process, body: dict[str, Any]) -> dict[str, Any]:
        method = "saveDisposition"

        def refused(reasonid: int, desc: str) -> dict[str, Any]:
            # The document's failure reply names the method in lower case.
            return {
                "method": "savedisposition",
                "reasonid": reasonid,
                "statusdesc": desc,
                "status": 4,
                "resdatetime": _now(),
            }

        login = str(body.get("login") or "").strip()
        if login not in self.floor.agents:
            return refused(31, "Invalid login")
        try:
            ids = (int(str(body.get("dispomasterid"))), int(str(body.get("disporeasonid"))))
        except ValueError:
            return refused(32, "Invalid disposition")
        if min(ids) < 0:
            return refused(32, "Invalid disposition")
        if str(body.get("media") or "").strip().lower() not in MEDIA_NAMES:
            return refused(33, "Invalid media")
        when = body.get("selecteddatetime")
        if when not in (None, "") and not _valid_time(when):
            return refused(35, "Invalid selecteddatetime")
        number = str(body.get("contactvalue") or "").strip()
        # A removal by number: every record holding it, as main or alternate, is closed.
        slots = [i for i, r in enumerate(process.records) if number in self._numbers(r)]
        if not number or not slots:
            return refused(34, "Contact not found")
        remarks = str(body.get("remarks") or "")
        for slot in slots:
            state = process.dial_state.setdefault(slot, DialState())
            self.floor.dispose(process.records[slot], state, remarks, ids)
        self.dispositions.append(
            {"contactvalue": number, "login": login, "ids": list(ids), "remarks": remarks}
        )
        return {"method": method, "statusdesc": "success", "status": 3, "resdatetime": _now()}

    def _numbers(self, record: dict[str, Any]) -> set[str]:
        fields = ("mobilenumber", *self.alt_phone_fields)
        return {str(record[f]).strip() for f in fields if str(record.get(f) or "").strip()}

    # -- inspection -------------------------------------------------------------

    def holdings(self, servicekey: str = "VoiceProcess") -> dict[str, Any]:
        """Return who the dialer would ring: open and closed records, open records per number.

        A record is open until disposed (closed: saveDisposition) or finished
        (dialled to a final result); ``key`` is the process's CRM unique field
        (else customercode). Open rows carry ``ring_from`` / ``ring_until`` /
        ``hours_zone`` (``syncd.simulators.ringing``).
        """
        with self.lock:
            p = self.processes[servicekey]
            open_rows: list[dict[str, Any]] = []
            closed: list[dict[str, Any]] = []
            finished: list[dict[str, Any]] = []
            for slot, record in enumerate(p.records):
                state = p.dial_state.get(slot)
                row = {
                    "key": str(record.get(p.crm_unique_field) or record.get("customercode") or ""),
                    "numbers": sorted(self._numbers(record)),
                    "name": str(record.get("name") or ""),
                    "first_name": str(record.get("fname") or ""),
                    "last_name": str(record.get("lname") or ""),
                }
                if state is not None and state.disposed:
                    closed.append(row)
                elif state is not None and state.final:
                    finished.append(row)
                else:
                    open_rows.append({**row, **self._ring_times(record, state).fields()})
        return holdings_of(open_rows, closed, finished)

    def _ring_times(self, record: dict[str, Any], state: DialState | None) -> RingTimes:
        """Return when the dialing engine would ring an open record: not before its
        callDateTime nor its retry time, no end; the process dials at any hour.

        Both are on this server's clock: a server whose clock is off rings that much
        earlier or later by the true time, which is what ``ring_from`` says.
        """
        due = self.floor.parse(record.get("callDateTime")) if record.get("callDateTime") else None
        retry = state.next_at if state is not None and state.next_at > 0 else None
        starts = [t for t in (due, retry) if t is not None]
        if not starts:
            return RingTimes()
        true = max(starts) - self.clock_offset_s
        return RingTimes(ring_from=datetime.fromtimestamp(true, UTC))

    def undialled(self, servicekey: str = "VoiceProcess") -> int:
        """Return how many open records the dialing engine has not called yet."""
        with self.lock:
            p = self.processes[servicekey]
            return sum(
                1
                for slot in range(len(p.records))
                if (state := p.dial_state.get(slot)) is None
                or not (state.attempts or state.disposed or state.final)
            )

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "processes": {
                    sk: {"records": list(p.records), "received": dict(p.received)}
                    for sk, p in self.processes.items()
                },
                "requests": dict(self.requests),
                "faults_injected": dict(self.faults.injected),
                "agents": {
                    a.login: {"status": a.status, "changed_at": a.changed_at}
                    for a in self.floor.agents.values()
                },
                "calls": len(self.floor.calls),
                "dispositions": list(self.dispositions),
                "reallocations": list(self.reallocations),
                "users": {
                    login: {k: v for k, v in user.items() if k != "password"}
                    for login, user in self.directory.users.items()
                },
            }

    # -- the call floor, for tests --------------------------------------------------

    def advance(self) -> int:
        """Return how many calls the dialer made now (as if a request had arrived)."""
        with self.lock:
            return self.floor.advance(self.processes.values())

    def set_agent_status(self, login: str, status: int, since: float | None = None) -> None:
        """Set (or create) an agent's status, changed at ``since`` (epoch; default now)."""
        with self.lock:
            self.floor.set_agent(login, status, since)

    def schedule_agent(self, login: str, after_s: float, status: int) -> None:
        """Make an agent's status change ``after_s`` seconds from now."""
        with self.lock:
            self.floor.schedule_agent(login, after_s, status)

    def script(self, mobilenumber: str, *results: DialResult) -> None:
        """Make the next calls to a number end as given, in order."""
        with self.lock:
            self.floor.scripts.setdefault(mobilenumber, []).extend(results)

    def publish_recordings(self) -> int:
        """Make every call's recording exist now; return how many became available."""
        with self.lock:
            return self.floor.publish_recordings()

    def recording_path(self, call_id: str) -> str:
        with self.lock:
            call = self.floor.calls.get(call_id)
            return call.path if call else ""

    def dial_state(self, servicekey: str = "VoiceProcess") -> dict[str, DialState]:
        """Return the dialer's view of each record, by mobilenumber."""
        with self.lock:
            p = self.processes[servicekey]
            return {
                str(p.records[slot].get("mobilenumber")): state
                for slot, state in p.dial_state.items()
            }

    def describe(self, url: str) -> str:
        """Return what a client must send to be accepted, and where to read what it holds."""
        with self.lock:
            keys = ", ".join(sorted(self.apikeys))
            processes = ", ".join(sorted(self.processes))
        return "\n".join(
            [
                f"  endpoint    POST {url}/CustomerWebServices/handleCustomerWS",
                "              (form field data = the JSON request)",
                f"  apikey      {keys}",
                f"  servicekey  {processes}  (the process: Jodo's campaign)",
                f"  clock       {self.zone_name}, {self.clock_offset_s:+.0f} s from this host",
                f"  holds       GET {url}/_sim/state",
            ]
        )

    def records(self, servicekey: str = "VoiceProcess") -> list[dict[str, Any]]:
        with self.lock:
            return list(self.processes[servicekey].records)

    def received(self, servicekey: str = "VoiceProcess") -> dict[str, int]:
        with self.lock:
            return dict(self.processes[servicekey].received)


def _valid_time(value: object) -> bool:
    try:
        datetime.strptime(str(value), TIME_FORMAT)
    except ValueError:
        return False
    return True


def _record_problem(record: object, key_field: str) -> str | None:
    if not isinstance(record, dict):
        return "Invalid data"
    phone = str(record.get("mobilenumber", "")).strip()
    if not phone:
        return "Mobile number blank"
    if not PHONE.match(phone):
        return f"Invalid mobile number {phone}"
    if str(record.get(key_field, "")).strip() == "":
        return f"Update parameter value ({key_field}) blank"
    when = record.get("callDateTime")
    if when not in (None, "") and not _valid_time(when):
        return "Invalid callDateTime"
    calltype = record.get("calltype")
    if calltype not in (None, "") and (
        not str(calltype).isdigit() or int(str(calltype)) not in CALL_TYPES
    ):
        return "Invalid calltype"
    return None


def create_app(sim: JodoSimulator | None = None, **kwargs: Any) -> Starlette:
    """Return the ASGI app; ``app.state.sim`` is the simulator behind it.

    Built without a simulator (``syncd simulate jodo``), it dials one record a
    second, retries after two minutes and has each recording half a minute
    after its call; a simulator passed in keeps its own plan (tests: none).
    """
    if sim is None:
        kwargs.setdefault("dial", DialPlan(interval_s=1.0, retry_s=120.0, recording_delay_s=30.0))
        sim = JodoSimulator(**kwargs)

    async def handle_ws(request: Request) -> Response:
        return sim.quirks.dress(await answer_ws(request))

    async def answer_ws(request: Request) -> Response:
        faulty = await sim.faults.before()
        if faulty is not None:
            return faulty
        raw = (await request.body()).decode("utf-8", "replace")
        form = parse_form(raw)
        text = (form.get("data") or [request.query_params.get("data", "")])[0]
        try:
            body = json.loads(text)
        except ValueError:
            return JSONResponse(fail("unknown", 5, "Invalid JSON request"))
        if not isinstance(body, dict):
            return JSONResponse(fail("unknown", 5, "Invalid JSON request"))
        storing = body.get("method") == "ImportProcessData"
        if storing and isinstance(body.get("data"), list):
            too_large = sim.quirks.too_large(len(body["data"]))
            if too_large is not None:
                return too_large
        reply = sim.handle(body)
        if sim.echo_errors and reply.get("status", reply.get("statuscode")) not in (1, 3):
            reply["statusdesc"] = f"{reply.get('statusdesc', '')} (request was: {raw})"
        if storing and reply.get("statuscode") == "001":
            await sim.quirks.after_store()
        return JSONResponse(reply)

    async def state(request: Request) -> Response:
        return JSONResponse(sim.snapshot())

    async def set_agent(request: Request) -> Response:
        try:
            data = await request.json()
            sim.set_agent_status(str(data["login"]), int(data.get("status", READY)))
        except (ValueError, TypeError, KeyError) as exc:
            return JSONResponse({"error": f"need login and status: {exc}"}, status_code=400)
        return JSONResponse(sim.snapshot()["agents"])

    async def publish(request: Request) -> Response:
        return JSONResponse({"published": sim.publish_recordings()})

    async def holdings(request: Request) -> Response:
        servicekey = request.query_params.get("servicekey", "VoiceProcess")
        if servicekey not in sim.processes:
            return JSONResponse({"error": f"no process {servicekey}"}, status_code=404)
        return JSONResponse(sim.holdings(servicekey))

    app = Starlette(
        routes=[
            Route("/CustomerWebServices/handleCustomerWS", handle_ws, methods=["POST", "GET"]),
            Route("/_sim/state", state, methods=["GET"]),
            Route("/_sim/holdings", holdings, methods=["GET"]),
            faults_route(sim.faults),
            quirks_route(sim.quirks),
            Route("/_sim/agents", set_agent, methods=["POST"]),
            Route("/_sim/recordings", publish, methods=["POST"]),
        ]
    )
    app.state.sim = sim
    return app
