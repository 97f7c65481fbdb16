"""A uContact Integra API simulator (Starlette): sessions, dialer lists, call records.

Serves ``/Integra/resources/...`` the way the document describes: form-encoded
POSTs, ``Authorization: Basic <key>`` after ``auth/getUserToken`` (or
``auth/UserLogin`` when ``legacy_auth`` makes getUserToken answer 404 like an old
server), bare ``1``/``0`` answers. ``Dialers/uploadbase`` parses the documented file
(``campaign;phone;var=val:var=val;alt1:alt2;priority;agentphone``) and ignores
malformed lines as a real server would. A dialing engine turns queued and
scheduled contacts into call records (guid, disposition, recording files) after
``dial_delay_s``; each record becomes visible ``cdr_delay_s`` after the call, so
records arrive late. Recordings are served under ``/records/`` (the telephony
host) and ``/backup/records/`` (the backup host), some only as ``.gsm`` until
``Supervisor/convert`` makes an mp3.

Per campaign the dial list is exposed with, for each number, how often it is
present now, how often it was added, its peak presence and how often it was
dialled, so tests can prove nobody is in it (or called) twice.

A call is read in full before anything else happens, as a real server does: a
``slow`` fault makes the server carry it out late, also when the client has
stopped waiting. ``answers`` scripts what the next calls of a resource get, in
order: ``"ok"`` (as usual), ``"late"`` (carried out ``late_s`` after it arrived),
``"500"``/``"502"``/``"503"``/``"429"`` (refused, not carried out), ``"garbled"``
(carried out, then an HTML page instead of the answer) or ``"reset"`` (carried
out, then the connection drops mid-answer).

Quirks (:mod:`syncd.simulators.quirks`): a BOM, text/plain JSON, 413 above N
upload lines, resources the server lacks (404), credentials refused for a while,
an upload stored but answered late. ``RemoveContact`` takes out every contact
holding the number (shared numbers included).

Admin endpoints: ``GET /_sim/state``, ``GET /_sim/holdings``, ``POST /_sim/faults``,
``POST /_sim/quirks``, ``POST /_sim/settings``, ``POST /_sim/dial`` (dial everything
queued now).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from syncd.core.gate import CallingWindow
from syncd.simulators.faults import FaultInjector, Faults, faults_route
from syncd.simulators.quirks import Quirks, QuirkState, holdings_of, quirks_route
from syncd.simulators.ringing import RingTimes
from syncd.simulators.ucontact.dialing import Campaign, Entry
from syncd.simulators.ucontact.wire import (
    PHONE,
    RECORDING_PLACES,
    form_fields,
    json_object,
    parse_line,
    parse_phones,
    recording_path,
    valid_data,
)

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
TASK_KEYS = (
    "calldate",
    "campaign",
    "destination",
    "alternatives",
    "agent",
    "data",
    "source",
    "bulk",
    "automatic",
)
REFUSALS = ("500", "502", "503", "429")  # scripted answers: not carried out
SCRIPTED = ("ok", "late", *REFUSALS, "garbled", "reset")
DEFAULT_OUTCOMES = {"ANSWERED": 0.55, "NO ANSWER": 0.25, "BUSY": 0.12, "FAILED": 0.08}
AGENT_DISPOSITIONS = (
    ("Venta", "Contado", ""),
    ("No interesado", "", ""),
    ("Volver a llamar", "Tarde", ""),
)


class UContactSimulator:
    """The state behind the app; tests read it directly or through /_sim/state."""

    def __init__(
        self,
        *,
        users: dict[str, str] | None = None,
        campaigns: tuple[str, ...] = ("Ventas->",),
        faults: Faults | None = None,
        token_ttl_s: float = 3600.0,
        legacy_auth: bool = False,
        token_reply: str = "list",  # "list" (key last) or "string"
        unauthorized_reply: str = "401",  # "401" or "0" (a 200 with body 0)
        dial_delay_s: float = 2.0,
        cdr_delay_s: float = 1.0,
        calls_per_minute: float | None = None,  # a campaign's pace (agents); None: no limit
        upload_answer_delay_s: float = 0.0,
        answers: dict[str, list[str]] | None = None,
        late_s: float = 1.0,
        max_page: int = 500,
        filters_destination: bool = True,  # False: getrecords ignores the filter's destination
        empty_as_204: bool = False,
        timezone: str = "UTC",
        outcomes: dict[str, float] | None = None,
        recording_places: tuple[str, ...] = tuple(RECORDING_PLACES),
        seed: int = 0,
        queue_agents: dict[str, list[int]] | None = None,
        missing_endpoints: frozenset[str] | set[str] = frozenset(),  # answered 404 (older servers)
        quirks: Quirks | None = None,
        clock: Callable[[], float] = time.time,  # its clock: dialing, call records, quirks
        key_var: str = "crmkey",  # the data variable holding the CRM key (holdings)
        # the campaign's calling hours ({"mon-fri": "09:00-20:00"}), applied in each
        # contact's upload zone (else the server's); None: it dials around the clock
        hours: dict[str, str] | None = None,
    ) -> None:
        self.lock = threading.Lock()
        self.quirks = QuirkState("ucontact", quirks, clock)
        self.clock = clock  # a test's fake clock: schedules and dialing follow it, not the wall
        self.key_var = key_var
        self.hours = dict(hours) if hours else None
        if self.hours:
            CallingWindow.parse(self.hours)  # a spec it cannot read fails here, not at a tick
        self.removed: list[Entry] = []  # contacts RemoveContact took out
        self.users = dict(users or {"api": "secret"})
        self.campaigns = {name: Campaign(name) for name in campaigns}
        # Per campaign: [agents logged in, of them available]; every campaign has one.
        self.queue_agents = {name: [1, 1] for name in campaigns} | dict(queue_agents or {})
        self.faults = FaultInjector(faults)
        self.missing_endpoints = frozenset(missing_endpoints)  # e.g. {"Supervisor/queuesummary"}
        self.token_ttl_s = token_ttl_s
        self.legacy_auth = legacy_auth
        self.token_reply = token_reply
        self.unauthorized_reply = unauthorized_reply
        self.dial_delay_s = dial_delay_s
        self.calls_per_minute = calls_per_minute
        self._next_dial = 0.0  # the paced campaign's next free moment (calls_per_minute)
        self.cdr_delay_s = cdr_delay_s
        self.upload_answer_delay_s = upload_answer_delay_s
        self.answers = {k: list(v) for k, v in (answers or {}).items()}  # resource -> script
        self.late_s = late_s  # how long after its arrival a "late" call is carried out
        self.max_page = max_page
        self.filters_destination = filters_destination
        self.empty_as_204 = empty_as_204
        self.zone = ZoneInfo(timezone)
        self.outcomes = dict(outcomes or DEFAULT_OUTCOMES)
        self.recording_places = recording_places
        self.rng = random.Random(seed)
        self.tokens: dict[str, tuple[str, float]] = {}
        self.logins = 0
        self.sessions_ended = 0
        self.requests: Counter[str] = Counter()  # calls received (past any fault)
        self.carried_out: Counter[str] = Counter()  # authorised calls the server acted on
        self.unauthorized: Counter[str] = Counter()
        self.uploads: list[dict[str, Any]] = []
        self.last_body: dict[str, str] = {}
        self.cdrs: list[dict[str, Any]] = []  # each with a private "_visible_at"
        self.records_served = 0  # call records getrecords answered with, all pages summed
        self.blacklist: set[tuple[str, str]] = set()  # (campaign or "*", phone)
        self.dispositions: list[dict[str, str]] = []  # every api/DispositionCall accepted
        self.files: set[str] = set()  # "records/20240101/<guid>.mp3", "backup/records/…"
        self.converted: list[str] = []

    # -- time ------------------------------------------------------------------

    def local(self, epoch: float) -> str:
        return datetime.fromtimestamp(epoch, self.zone).strftime(TIME_FORMAT)

    def epoch(self, text: str) -> float | None:
        try:
            naive = datetime.strptime(text.strip()[:19], TIME_FORMAT)
        except ValueError:
            return None
        return naive.replace(tzinfo=self.zone).timestamp()

    # -- sessions --------------------------------------------------------------

    def describe(self, url: str) -> str:
        """Return what a client must send to be accepted, and where to read what it holds."""
        users = ", ".join(f"{u} / {p}" for u, p in sorted(self.users.items()))
        return "\n".join(
            [
                f"  endpoint    {url}/Integra/resources/<resource>  (form fields)",
                f"  login       {users}  (POST auth/getUserToken)",
                "              then send the token: Authorization: Basic TOKEN",
                f"  campaigns   {', '.join(sorted(self.campaigns))}",
                f"  holds       GET {url}/_sim/state",
            ]
        )

    def login(self, form: dict[str, str], legacy: bool) -> Response:
        user, password = form.get("user", ""), form.get("password", "")
        if not legacy and self.legacy_auth:
            return PlainTextResponse("Not Found", status_code=404)
        if self.users.get(user) != password or not user or self.quirks.revoked():
            return PlainTextResponse("0")
        key = base64.b64encode(f"{user}:{uuid.UUID(int=self.rng.getrandbits(128))}".encode())
        token = key.decode()
        self.tokens[token] = (user, self.clock() + self.token_ttl_s)
        self.logins += 1
        if legacy:
            return JSONResponse([user, "Supervisor", token, "1001"])
        if self.token_reply == "string":
            return JSONResponse(token)
        return JSONResponse([user, "Supervisor", "", token])

    def authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if not header.startswith("Basic "):
            return False
        entry = self.tokens.get(header[6:].strip())
        if entry is None or self.quirks.revoked():
            return False
        if entry[1] < self.clock():
            del self.tokens[header[6:].strip()]
            return False
        return not self.faults.session_fault()

    def end_session(self, form: dict[str, str]) -> Response:
        if self.tokens.pop(form.get("token", ""), None) is not None:
            self.sessions_ended += 1
        return PlainTextResponse("1")

    def expire_tokens(self, *, forget: bool = True) -> None:
        """End every session: forgotten (a restarted server) or just expired."""
        with self.lock:
            if forget:
                self.tokens.clear()
            else:
                self.tokens = {t: (user, 0.0) for t, (user, _) in self.tokens.items()}

    # -- dialer: adding and removing contacts -------------------------------------

    def _campaign(self, name: str) -> Campaign | None:
        return self.campaigns.get(name)

    def upload(self, form: dict[str, str], with_timezone: bool) -> Response:
        campaign = self._campaign(form.get("campaign", ""))
        record: dict[str, Any] = {
            "filename": form.get("filename", ""),
            "campaign": form.get("campaign", ""),
            "cant": form.get("cant", ""),
            "username": form.get("username", ""),
            "timezone": form.get("timezone") if with_timezone else None,
            "accepted": 0,
            "ignored": [],
            "text": "",
        }
        self.uploads.append(record)
        zone = record["timezone"]
        if campaign is None or (with_timezone and not _known_zone(zone)):
            return PlainTextResponse("0")  # the zones are uContact's list: IANA names
        try:
            text = base64.b64decode(form.get("fileb64", ""), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return PlainTextResponse("0")
        record["text"] = text
        for line in text.split("\n"):
            echoed = self.quirks.echoed_refusal(line.rstrip("\r"))
            if echoed is not None:  # a server's error text instead of the flag; nothing stored
                return PlainTextResponse(f"ERROR: {echoed}")
        earliest = self.clock() + self.dial_delay_s
        for number, line in enumerate(text.split("\n"), start=1):
            line = line.rstrip("\r")
            if not line.strip():
                continue
            entry = parse_line(line, campaign.name)
            if isinstance(entry, str):
                record["ignored"].append({"line": number, "reason": entry})
                continue
            entry.source = record["filename"]
            entry.ready_at = self._paced(earliest)
            entry.timezone = zone
            campaign.add(entry)
            record["accepted"] += 1
        return PlainTextResponse("1")  # asynchronous on a real server: it says no more

    def schedule(self, form: dict[str, str]) -> Response:
        body = json_object(form.get("callschedule", ""))
        if body is None:
            return PlainTextResponse("0")
        campaign = self._campaign(str(body.get("campaign", "")))
        calldate = str(body.get("calldate") or "")
        when = self.epoch(calldate)
        destination = str(body.get("destination", ""))
        alternatives = parse_phones(str(body.get("alternatives") or ""))
        data = str(body.get("data") or "")
        if (
            campaign is None
            or when is None
            or not PHONE.match(destination)
            or alternatives is None
            or not valid_data(data)
        ):
            return PlainTextResponse("0")
        entry = Entry(
            destination,
            alternatives,
            data,
            1,
            str(body.get("agentphone") or ""),
            "schedule",
            when,
            calldate,
        )
        campaign.add(entry, scheduled=True)
        return PlainTextResponse("1")

    def task(self, form: dict[str, str]) -> Response:
        body = json_object(form.get("call", ""))
        if body is None or any(k not in body for k in TASK_KEYS):
            return PlainTextResponse("0")
        campaign = self._campaign(str(body.get("campaign", "")))
        destination = str(body.get("destination", ""))
        alternatives = parse_phones(str(body.get("alternatives") or ""))
        data = str(body.get("data") or "")
        calldate = body.get("calldate")
        earliest = self.clock() + self.dial_delay_s
        when = self._paced(earliest) if calldate is None else self.epoch(str(calldate))
        if (
            campaign is None
            or when is None
            or not PHONE.match(destination)
            or alternatives is None
            or not valid_data(data)
        ):
            return PlainTextResponse("0")
        entry = Entry(destination, alternatives, data, None, str(body.get("agent") or ""), "task")
        entry.ready_at = when
        if calldate is not None:
            entry.calldate = str(calldate)
        campaign.add(entry, scheduled=calldate is not None)
        return PlainTextResponse("1")

    def _paced(self, earliest: float) -> float:
        """Return when a contact added now is dialled: ``earliest``, or later when the
        campaign dials at ``calls_per_minute`` and others are ahead of it."""
        if not self.calls_per_minute:
            return earliest
        ready = max(earliest, self._next_dial)
        self._next_dial = ready + 60.0 / self.calls_per_minute
        return ready

    def remove_contact(self, form: dict[str, str]) -> Response:
        campaign = self._campaign(form.get("campaign", ""))
        if campaign is None:
            return PlainTextResponse("0")
        number = form.get("number", "")
        # By number: every contact holding it goes, whoever else it belongs to.
        self.removed.extend(campaign.take(lambda e: e.phone == number))
        return PlainTextResponse("1")

    def remove_schedule(self, form: dict[str, str]) -> Response:
        campaign = self._campaign(form.get("campaign", ""))
        start, end = self.epoch(form.get("from", "")), self.epoch(form.get("to", ""))
        if campaign is None or start is None or end is None:
            return PlainTextResponse("0")
        number = form.get("destination", "")
        campaign.take(
            lambda e: e.phone == number and start <= (self.epoch(e.calldate or "") or 0) <= end,
            scheduled=True,
        )
        return PlainTextResponse("1")

    def add_black(self, form: dict[str, str]) -> Response:
        body = json_object(form.get("black", ""))
        if body is None:
            return PlainTextResponse("0")
        phone, where = str(body.get("phone", "")), str(body.get("campaign", ""))
        if not PHONE.match(phone) or (where != "*" and where not in self.campaigns):
            return PlainTextResponse("0")
        if (where, phone) in self.blacklist:
            return PlainTextResponse("already exists")
        self.blacklist.add((where, phone))
        return PlainTextResponse("1")

    # -- dialing engine -----------------------------------------------------------

    def tick(self, now: float | None = None, *, force: bool = False) -> int:
        """Dial every contact that is due (all of them with ``force``); return how many."""
        now = self.clock() if now is None else now
        dialled = 0

        def due(entry: Entry) -> bool:
            return (force or entry.ready_at <= now) and self.in_hours(entry, now)

        for campaign in self.campaigns.values():
            for scheduled in (False, True):
                for entry in campaign.take(due, scheduled=scheduled):
                    dialled += self._dial(campaign, entry, now)
        return dialled

    def in_hours(self, entry: Entry, now: float) -> bool:
        """Return True when the campaign's hours let it dial ``entry`` at ``now``."""
        if not self.hours:
            return True
        zone = ZoneInfo(entry.timezone) if entry.timezone else self.zone
        return CallingWindow.parse(self.hours).open_at(zone, datetime.fromtimestamp(now, UTC))

    def _dial(self, campaign: Campaign, entry: Entry, now: float) -> int:
        if (campaign.name, entry.phone) in self.blacklist or ("*", entry.phone) in self.blacklist:
            campaign.blacklisted_skips[entry.phone] += 1
            return 0
        campaign.dialed[entry.phone] += 1
        now = max(entry.added_at, min(now, entry.ready_at))  # when it fell due
        status = self.rng.choices(list(self.outcomes), weights=list(self.outcomes.values()))[0]
        guid = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        calldate = self.local(now)
        answered = status == "ANSWERED"
        billsec = self.rng.randint(20, 300) if answered else 0
        levels = self.rng.choice(AGENT_DISPOSITIONS) if answered else ("", "", "")
        record = {
            "guid": guid,
            "calldate": calldate,
            "campaign": campaign.name,
            "source": "dialer",
            "destination": entry.phone,
            "agent": "agent1" if answered else "",
            "duration": billsec + self.rng.randint(5, 30),
            "billsec": billsec,
            "disposition": status,
            "l1": levels[0],
            "l2": levels[1],
            "l3": levels[2],
            "data": entry.data,
            "type": "record",
            "_visible_at": now + self.cdr_delay_s,
        }
        self.cdrs.append(record)
        if answered and self.recording_places:
            place = self.rng.choice(self.recording_places)
            self.files.add(recording_path(place, guid, calldate))
        return 1

    def add_record(
        self,
        destination: str,
        *,
        calldate: str,
        campaign: str = "Ventas->",
        status: str = "NO ANSWER",
        guid: str | None = None,
        visible: bool = True,
        recording: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Add a call record directly (tests): hidden ones appear with :meth:`reveal`."""
        with self.lock:
            record = {
                "guid": guid or str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
                "calldate": calldate,
                "campaign": campaign,
                "source": "dialer",
                "destination": destination,
                "agent": extra.pop("agent", ""),
                "duration": extra.pop("duration", 0),
                "billsec": extra.pop("billsec", 0),
                "disposition": status,
                "l1": extra.pop("l1", ""),
                "l2": extra.pop("l2", ""),
                "l3": extra.pop("l3", ""),
                "data": "",
                "type": "record",
                **extra,
                "_visible_at": self.clock() if visible else float("inf"),
            }
            self.cdrs.append(record)
            if recording:
                self.files.add(recording_path(recording, record["guid"], calldate))
            return {k: v for k, v in record.items() if not k.startswith("_")}

    def reveal(self) -> None:
        """Make every hidden record visible (records written late)."""
        with self.lock:
            for record in self.cdrs:
                if record["_visible_at"] == float("inf"):
                    record["_visible_at"] = self.clock()

    def dial_now(self) -> int:
        """Dial everything queued or scheduled, now; records visible at once (tests)."""
        with self.lock:
            n = self.tick(force=True)
            for record in self.cdrs:
                if record["_visible_at"] != float("inf"):
                    record["_visible_at"] = min(record["_visible_at"], self.clock())
            return n

    # -- records, campaigns, recordings ---------------------------------------------

    def get_records(self, form: dict[str, str]) -> Response:
        flt = json_object(form.get("filter", "")) or {}
        try:
            lastrow = max(0, int(form.get("lastrow", "0") or 0))
            limit = int(form.get("searchLimit", "50") or 50)
        except ValueError:
            return PlainTextResponse("0")
        limit = max(1, min(limit, self.max_page))
        start = str(flt.get("calldatei") or "0000")
        end = str(flt.get("calldatef") or "9999")
        wanted_campaign = str(flt.get("campaign") or "")
        # Part of the number, as SQL's LIKE '%…%' would match it.
        wanted_destination = str(flt.get("destination") or "") if self.filters_destination else ""
        now = self.clock()
        rows = [
            r
            for r in self.cdrs
            if r["_visible_at"] <= now
            and start <= r["calldate"] <= end
            and (not wanted_campaign or r["campaign"] == wanted_campaign)
            and (not wanted_destination or wanted_destination in r["destination"])
        ]
        rows.sort(key=lambda r: (r["calldate"], r["guid"]))
        page = rows[lastrow : lastrow + limit]
        self.records_served += len(page)
        if not page and self.empty_as_204:
            return Response(status_code=204)  # a Java server's null result
        return JSONResponse([{k: v for k, v in r.items() if not k.startswith("_")} for r in page])

    def disposition_call(self, form: dict[str, str]) -> Response:
        """api/DispositionCall: disposition a call the dialer made; RESCHEDULE calls again."""
        campaign = self._campaign(form.get("campaign", ""))
        guid, l1 = form.get("guid", ""), form.get("l1", "")
        call = next((r for r in self.cdrs if r["guid"] == guid), None)
        if campaign is None or call is None or not l1 or call["campaign"] != campaign.name:
            return PlainTextResponse("0")
        schedule = form.get("schedule", "")
        when = self.epoch(schedule) if schedule else None
        if schedule and when is None:
            return PlainTextResponse("0")
        fields = ("agent", "callerid", "l1", "l2", "l3", "d1", "d2", "comment", "schedule")
        entry = {"campaign": campaign.name, "guid": guid, **{k: form.get(k, "") for k in fields}}
        self.dispositions.append(entry)
        call.update({k: form.get(k, "") for k in ("l1", "l2", "l3")})
        if when is not None:
            number = form.get("callerid") or str(call["destination"])
            again = Entry(number, [], "", 1, "", "schedule", when, schedule)
            campaign.add(again, scheduled=True)
        return PlainTextResponse("1")

    def queue_summary(self, form: dict[str, str]) -> Response:
        """Answer Supervisor/queuesummary as the document shows: a list, then the request's id."""
        stamp = {"internalActionId": "1982468278_6312", "dateReceived": _doc_date(self.zone)}
        queues = []
        for name, campaign in self.campaigns.items():
            logged, available = self._agents(name)
            waiting = len(campaign.queued) if logged == 0 else 0
            queues.append(
                {"queue": name, "loggedIn": logged, "available": available, "callers": waiting,
                 "holdTime": 0, "talkTime": 0, "longestHoldTime": 0, **stamp}
            )  # fmt: skip
        return JSONResponse([*queues, stamp])

    def _agents(self, campaign: str) -> tuple[int, int]:
        logged, available = [*(self.queue_agents.get(campaign) or ()), 0, 0][:2]
        return int(logged), min(int(available), int(logged))

    def campaign_status(self, form: dict[str, str]) -> Response:
        campaign = self._campaign(form.get("queue", ""))
        if campaign is None:
            return JSONResponse({})
        logged, available = self._agents(campaign.name)
        return JSONResponse(
            {
                campaign.name: {
                    "campaign": campaign.name,
                    "availables": available,
                    "notavailables": logged - available,
                    "paused": 0,
                    "busy": 0,
                    "busypaused": 0,
                    "totalagents": max(logged, 1),
                    "logged": logged,
                    "onwrapup": 0,
                    "completed": sum(campaign.dialed.values()),
                    "abandoned": 0,
                    "talked": "00:00:00-0",
                    "hold": "00:00:00-0",
                    "abandonedlevel": "0",
                    "totalcalls": sum(campaign.dialed.values()),
                    "acd": 0,
                    "servicelevel": "0.0",
                    "servicelevel2": "0.0",
                    "strategy": "leastrecent",
                    "slevelthreshold": "3",
                    "wrapup": 0,
                }
            }
        )

    def convert(self, form: dict[str, str]) -> Response:
        guid, folder = form.get("guid", ""), form.get("folder", "")
        for prefix in ("records", "backup/records"):
            for path in (f"{prefix}/{folder}/{guid}.gsm", f"{prefix}/{guid}.gsm"):
                if path in self.files:
                    self.files.add(path[:-4] + ".mp3")
                    self.converted.append(guid)
                    return PlainTextResponse("1")
        return PlainTextResponse("0")

    def has_file(self, path: str) -> bool:
        with self.lock:
            return path in self.files

    # -- inspection ---------------------------------------------------------------

    def dial_list(self, campaign: str = "Ventas->") -> dict[str, dict[str, int]]:
        """Return, per number: present now, added in total, peak presence, dialled."""
        with self.lock:
            return self._dial_list(campaign)

    def _dial_list(self, campaign: str) -> dict[str, dict[str, int]]:
        c = self.campaigns[campaign]
        present = c.present()
        phones = set(present) | set(c.added) | set(c.dialed)
        return {
            p: {
                "present": present[p],
                "added": c.added[p],
                "peak": c.peak[p],
                "dialed": c.dialed[p],
            }
            for p in sorted(phones)
        }

    def holdings(self, campaign: str = "Ventas->") -> dict[str, Any]:
        """Return who the dialer would ring: queued and scheduled contacts, open per number.

        ``closed``: contacts RemoveContact took out; ``finished``: contacts dialled.
        """
        with self.lock:
            c = self.campaigns[campaign]
            open_rows = [self._holding(e) for e in (*c.queued, *c.scheduled)]
            closed = [self._holding(e) for e in self.removed]
            finished = [
                {"key": _var(str(r["data"]), self.key_var), "numbers": [str(r["destination"])]}
                for r in self.cdrs
                if r["campaign"] == campaign
            ]
        return holdings_of(open_rows, closed, finished)

    def _holding(self, entry: Entry) -> dict[str, Any]:
        return {
            "key": _var(entry.data, self.key_var),
            "numbers": sorted({entry.phone, *entry.alternatives}),
            "name": " ".join(
                p for p in (_var(entry.data, "first_name"), _var(entry.data, "last_name")) if p
            ),
            "first_name": _var(entry.data, "first_name"),
            "last_name": _var(entry.data, "last_name"),
            # a schedule from its calldate; the campaign's hours in the upload's zone
            **RingTimes(
                ring_from=datetime.fromtimestamp(entry.ready_at, UTC) if entry.calldate else None,
                hours_zone=(entry.timezone or self.zone.key) if self.hours else None,
            ).fields(),
        }

    def scheduled(self, campaign: str = "Ventas->") -> list[dict[str, Any]]:
        with self.lock:
            return [asdict(e) for e in self.campaigns[campaign].scheduled]

    def records(self) -> list[dict[str, Any]]:
        with self.lock:
            return [{k: v for k, v in r.items() if not k.startswith("_")} for r in self.cdrs]

    def uploads_made(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(u) for u in self.uploads]

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "campaigns": {
                    name: {
                        "dial_list": self._dial_list(name),
                        "scheduled": [asdict(e) for e in c.scheduled],
                        "blacklist": sorted(p for w, p in self.blacklist if w in (name, "*")),
                    }
                    for name, c in self.campaigns.items()
                },
                "uploads": [dict(u) for u in self.uploads],
                "records": len(self.cdrs),
                "records_served": self.records_served,
                "files": sorted(self.files),
                "requests": dict(self.requests),
                "carried_out": dict(self.carried_out),
                "unauthorized": dict(self.unauthorized),
                "logins": self.logins,
                "sessions_active": len(self.tokens),
                "sessions_ended": self.sessions_ended,
                "faults_injected": dict(self.faults.injected),
            }

    SETTINGS = (
        "legacy_auth",
        "token_ttl_s",
        "token_reply",
        "unauthorized_reply",
        "dial_delay_s",
        "cdr_delay_s",
        "calls_per_minute",
        "upload_answer_delay_s",
        "answers",
        "late_s",
        "max_page",
        "filters_destination",
        "empty_as_204",
        "queue_agents",
        "hours",
    )

    def next_answer(self, resource: str) -> str | None:
        """Return (and use up) the scripted answer for the next call of ``resource``."""
        with self.lock:
            script = self.answers.get(resource)
            return script.pop(0) if script else None

    def apply_settings(self, values: dict[str, Any]) -> dict[str, Any]:
        unknown = set(values) - set(self.SETTINGS)
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        for script in dict(values.get("answers") or {}).values():
            wrong = set(script) - set(SCRIPTED)
            if wrong:
                raise ValueError(f"unknown scripted answer(s): {', '.join(sorted(wrong))}")
        with self.lock:
            for name, value in values.items():
                setattr(self, name, value)
            return {name: getattr(self, name) for name in self.SETTINGS}


def _var(data: str, name: str) -> str:
    """Return one variable of an upload line's ``var=val:var=val``."""
    for pair in data.split(":"):
        key, _, value = pair.partition("=")
        if key == name:
            return value
    return ""


def _known_zone(name: str | None) -> bool:
    try:
        ZoneInfo(name or "")
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _upload_lines(form: dict[str, str]) -> int:
    """Return how many contacts an uploadbase file holds (0 when it cannot be read)."""
    try:
        text = base64.b64decode(form.get("fileb64", ""), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return 0
    return sum(1 for line in text.split("\n") if line.strip())


def _doc_date(zone: ZoneInfo) -> str:
    """Return now as the document writes dates: ``Nov 2, 2018 11:31:42 AM``."""
    now = datetime.now(zone)
    return now.strftime("%b ") + str(now.day) + now.strftime(", %Y %I:%M:%S %p")


async def _dropped() -> AsyncIterator[bytes]:
    yield b""
    # Raising after the headers went out makes the server drop the connection.
    raise ConnectionResetError("simulated connection reset after the call was carried out")


# ---------------------------------------------------------------------------
# the app


def create_app(sim: UContactSimulator | None = None, **kwargs: Any) -> Starlette:
    """Return the ASGI app; ``app.state.sim`` is the simulator behind it."""
    sim = sim or UContactSimulator(**kwargs)
    authed = {
        "Dialers/uploadbase": lambda f: sim.upload(f, False),
        "Dialers/uploadbasewithtimezone": lambda f: sim.upload(f, True),
        "Dialers/ScheduleDialerCall": sim.schedule,
        "Dialers/DialerTask": sim.task,
        "Dialers/RemoveContact": sim.remove_contact,
        "Dialers/RemoveScheduleDialerCall": sim.remove_schedule,
        "admin/addblack": sim.add_black,
        "Cdr/getrecords": sim.get_records,
        "Supervisor/campaignstatus": sim.campaign_status,
        "Supervisor/queuesummary": sim.queue_summary,
        "api/DispositionCall": sim.disposition_call,
        "Supervisor/convert": sim.convert,
    }

    async def resource(request: Request) -> Response:
        return sim.quirks.dress(await answer(request))

    async def answer(request: Request) -> Response:
        name = request.path_params["name"]
        # The server has the whole request before it is slow or fails, and carries it
        # out even if the client stops waiting meanwhile.
        raw = await request.body()
        faulty = await sim.faults.before()
        if faulty is not None:
            return faulty
        scripted = sim.next_answer(name)
        if scripted in REFUSALS:
            headers = {"Retry-After": "0"} if scripted == "429" else None
            return PlainTextResponse("Refused", status_code=int(scripted or 0), headers=headers)
        form = form_fields(raw)
        uploading = name.startswith("Dialers/uploadbase")
        if uploading:  # a proxy in front refuses the body before the server sees it
            too_large = sim.quirks.too_large(_upload_lines(form))
            if too_large is not None:
                return too_large
        with sim.lock:
            sim.requests[name] += 1
            sim.last_body[name] = raw.decode("utf-8", "replace")
            if name in ("auth/getUserToken", "auth/UserLogin"):
                return sim.login(form, legacy=name == "auth/UserLogin")
            if name == "auth/EndSession":
                return sim.end_session(form)
            handler = authed.get(name)
            if handler is None or name in sim.missing_endpoints or sim.quirks.missing(name):
                return PlainTextResponse("Not Found", status_code=404)
            if not sim.authorised(request):  # on arrival, as a server's filter does
                sim.unauthorized[name] += 1
                if sim.unauthorized_reply == "0":
                    return PlainTextResponse("0")
                return PlainTextResponse("Unauthorized", status_code=401)
        if scripted == "late":
            await asyncio.sleep(sim.late_s)
        with sim.lock:
            sim.tick()
            response = handler(form)
            sim.carried_out[name] += 1
            delay = sim.upload_answer_delay_s if name.startswith("Dialers/uploadbase") else 0.0
        if delay:
            await asyncio.sleep(delay)  # accepted already: the answer is what is late
        if uploading:
            await sim.quirks.after_store()
        if scripted == "garbled":
            return Response("<html><body>Bad Gateway</body></html>", media_type="text/html")
        if scripted == "reset":
            return StreamingResponse(_dropped(), media_type="text/plain")
        return response

    async def recording(request: Request) -> Response:
        path = request.url.path.lstrip("/")
        if sim.has_file(path):
            return Response(b"ID3" + b"\x00" * 64, media_type="audio/mpeg")
        return PlainTextResponse("Not Found", status_code=404)

    async def state(request: Request) -> Response:
        with sim.lock:
            sim.tick()
        return JSONResponse(sim.snapshot())

    async def set_settings(request: Request) -> Response:
        try:
            return JSONResponse(sim.apply_settings(await request.json()))
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    async def dial(request: Request) -> Response:
        return JSONResponse({"dialled": sim.dial_now()})

    async def holdings(request: Request) -> Response:
        campaign = request.query_params.get("campaign", next(iter(sim.campaigns)))
        if campaign not in sim.campaigns:
            return JSONResponse({"error": f"no campaign {campaign}"}, status_code=404)
        return JSONResponse(sim.holdings(campaign))

    app = Starlette(
        routes=[
            Route("/Integra/resources/{name:path}", resource, methods=["POST"]),
            Route("/records/{path:path}", recording, methods=["GET", "HEAD"]),
            Route("/backup/records/{path:path}", recording, methods=["GET", "HEAD"]),
            Route("/_sim/state", state, methods=["GET"]),
            Route("/_sim/holdings", holdings, methods=["GET"]),
            faults_route(sim.faults),
            quirks_route(sim.quirks),
            Route("/_sim/settings", set_settings, methods=["POST"]),
            Route("/_sim/dial", dial, methods=["POST"]),
        ]
    )
    app.state.sim = sim
    return app
