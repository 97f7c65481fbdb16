"""Outcomes from uContact's call records (``Cdr/getrecords``), with recording links.

Each poll reads the window from the cursor (minus an overlap for records written
late) to now, page by page until a short page. Records are matched to leads by
their destination number and deduplicated by call ``guid``; the cursor and the
guids seen inside the overlap window are kept in the kv table, and every step can
be repeated after a crash without counting a call twice.

A stop or reload (the context's ``stopping``) ends a poll after the page it is
reading: the outcomes of the pages read are recorded, and the window and the row
to go on from are kept, so the next poll resumes there instead of re-reading it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from syncd.core.model import CallStatus, Outcome
from syncd.errors import VendorError
from syncd.sinks.features import OptionalFeatures
from syncd.sinks.ucontact.client import VENDOR, UContactClient
from syncd.sinks.ucontact.config import UContactSinkConfig
from syncd.sinks.ucontact.ledger import Ledger
from syncd.sinks.ucontact.wire import parse_server_time, recording_candidates, server_time
from syncd.state.base import StateStore

# Asterisk's CDR dispositions, which uContact's records carry as the call status.
STATUS = {
    "ANSWERED": CallStatus.CONNECTED,
    "ANSWER": CallStatus.CONNECTED,
    "NO ANSWER": CallStatus.NO_ANSWER,
    "NOANSWER": CallStatus.NO_ANSWER,
    "NO_ANSWER": CallStatus.NO_ANSWER,
    "BUSY": CallStatus.BUSY,
    "FAILED": CallStatus.FAILED,
    "CONGESTION": CallStatus.FAILED,
    "CHANUNAVAIL": CallStatus.FAILED,
    "CANCEL": CallStatus.DROPPED,
    "ABANDON": CallStatus.DROPPED,
    "ABANDONED": CallStatus.DROPPED,
}
CLOCK_SKEW = timedelta(minutes=1)
CONVERT = "Supervisor/convert"
CONVERT_OFF = (
    "GSM recordings are linked as they are, not converted to MP3; set convert_gsm = false "
    "to silence this, or give the API user supervisor rights"
)
PROBES_IN_FLIGHT = 8  # leads whose recording is looked for at once


def first(record: dict[str, Any], *names: str) -> str:
    """Return the first non-empty of ``names`` in a record (servers differ in casing)."""
    lowered = {str(k).lower(): v for k, v in record.items()}
    for name in names:
        value = lowered.get(name.lower())
        if value not in (None, ""):
            return str(value).strip()
    return ""


def rows_of(body: Any) -> list[dict[str, Any]]:
    """Return the records of a getrecords answer (a list, or a list under a key)."""
    if isinstance(body, dict):
        for name in ("records", "data", "rows", "result"):
            if isinstance(body.get(name), list):
                body = body[name]
                break
        else:
            return []
    if not isinstance(body, list):
        raise VendorError("Cdr/getrecords answered JSON that is not a list", vendor=VENDOR)
    return [r for r in body if isinstance(r, dict)]


def call_status(raw: str, extra: dict[str, CallStatus]) -> CallStatus:
    """Return the neutral status for a record's raw status."""
    upper = raw.strip().upper()
    mapped = {k.upper(): v for k, v in extra.items()}.get(upper)
    return mapped or STATUS.get(upper, CallStatus.UNKNOWN)


def disposition_of(record: dict[str, Any]) -> str:
    """Return the agent's disposition: ``l1 / l2 / l3`` levels, or a typification field."""
    levels = [first(record, name) for name in ("l1", "l2", "l3")]
    if any(levels):
        return " / ".join(level for level in levels if level)
    return first(record, "typification", "dispositionname", "tipificacion")


async def call_records(
    client: UContactClient,
    cfg: UContactSinkConfig,
    start: datetime,
    end: datetime,
    log: Any,
    *,
    lastrow: int = 0,
) -> AsyncIterator[list[dict[str, Any]]]:
    """Yield the campaign's call records between two times, page by page, from row
    ``lastrow`` of the window on."""
    flt = {
        "calldatei": server_time(start, cfg.server_timezone),
        "calldatef": server_time(end, cfg.server_timezone),
        "agent": "",
        "campaign": cfg.campaign,
        "source": "",
        "destination": "",
        "data": "",
        "range": "",
        "rating": "",
        "mindur": "",
        "exclude": "",
        "type": "record",
        "cont": "",
    }
    previous = None
    while True:
        form = {
            "lastrow": str(lastrow),
            "searchLimit": str(cfg.cdr_page_size),
            "filter": json.dumps(flt),
            "Random": "1",
        }
        page = rows_of(await client.json("Cdr/getrecords", form, empty=[]))
        ids = [first(r, "guid", "uniqueid") for r in page]
        if page and ids == previous:
            # A server that ignores lastrow would page forever.
            log.warning("sink.poll.paging_ignored", lastrow=lastrow)
            return
        yield page
        if len(page) < cfg.cdr_page_size:
            return
        lastrow += cfg.cdr_page_size
        previous = ids


@dataclass(frozen=True)
class Resume:
    """Where a poll a stop cut short left off: its window, the row to read next, and the
    newest call it had seen (the cursor once the window is read to its end)."""

    start: datetime
    end: datetime
    lastrow: int
    newest: datetime | None

    @classmethod
    def read(cls, value: object) -> Resume | None:
        if not isinstance(value, dict):
            return None
        start, end = _parse_iso(value.get("start")), _parse_iso(value.get("end"))
        lastrow = value.get("lastrow")
        if start is None or end is None or not isinstance(lastrow, int) or lastrow < 0:
            return None
        return cls(start, end, lastrow, _parse_iso(value.get("newest")))

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "lastrow": self.lastrow,
            "newest": self.newest.isoformat() if self.newest else None,
        }


@dataclass
class _Hit:
    """The newest record of one lead in this poll and the new call ids seen for it."""

    record: dict[str, Any]
    when: datetime | None
    guids: list[str] = field(default_factory=list)


class CdrPoller:
    """Reads call records for one campaign and records them as outcomes."""

    def __init__(
        self,
        cfg: UContactSinkConfig,
        client: UContactClient,
        http: httpx.AsyncClient,
        ledger: Ledger,
        store: StateStore,
        log: Any,
        features: OptionalFeatures | None = None,
        stopping: asyncio.Event | None = None,
    ) -> None:
        self.cfg = cfg
        self.stopping = stopping or asyncio.Event()  # set: end after the page being read
        self.client = client
        self.http = http
        self.ledger = ledger
        self.store = store
        self.log = log
        self.features = features or OptionalFeatures(log)
        self.telephony = cfg.records_url or cfg.url

    async def poll(self) -> int:
        """Return how many outcomes were new or changed."""
        cfg = self.cfg
        state = await self.ledger.get_state("cdr")
        now = datetime.now(UTC)
        cursor = _parse_iso(state.get("cursor"))
        resume = Resume.read(state.get("resume"))
        if resume is not None:
            # The window a stop cut short, from the row it left off at.
            start, end, lastrow = resume.start, resume.end, resume.lastrow
            newest = max((t for t in (cursor, resume.newest) if t), default=None)
            self.log.info("sink.poll.resumed", lastrow=lastrow, since=start.isoformat())
        else:
            if cursor is not None:
                start = cursor - timedelta(seconds=cfg.cdr_overlap_s)
            else:
                start = now - timedelta(seconds=cfg.cdr_lookback_s)
            end, lastrow, newest = now + CLOCK_SKEW, 0, cursor
        seen: dict[str, list[Any]] = {
            g: v for g, v in (state.get("seen") or {}).items() if isinstance(v, list)
        }
        hits: dict[str, _Hit] = {}
        pages = records = 0
        stopped = False
        async for page in call_records(self.client, cfg, start, end, self.log, lastrow=lastrow):
            pages += 1
            lastrow += len(page)
            for record in page:
                records += 1
                when = parse_server_time(first(record, "calldate", "date"), cfg.server_timezone)
                if when is not None and when <= now + CLOCK_SKEW:
                    newest = max(newest, when) if newest else when
                await self._take(record, when, seen, hits, now)
            if self.stopping.is_set() and len(page) == cfg.cdr_page_size:
                stopped = True  # a safe point: what was read is recorded below
                break
        slots = asyncio.Semaphore(PROBES_IN_FLIGHT)

        async def build(key: str, hit: _Hit) -> Outcome:
            async with slots:
                return await self._outcome(key, hit, seen, now)

        outcomes = await asyncio.gather(*(build(key, hit) for key, hit in hits.items()))
        changed = await self.store.record_outcomes(outcomes)
        if stopped:
            # The cursor stays: the calls of the unread pages may be older than the newest
            # read. Every guid of the window stays seen, so a call is never counted twice.
            kept = {g: v for g, v in seen.items() if (_parse_iso(v[0]) or now) >= start}
            left = Resume(start, end, lastrow, newest)
            await self.ledger.set_state(
                "cdr",
                {
                    "cursor": cursor.isoformat() if cursor else None,
                    "seen": kept,
                    "resume": left.to_json(),
                },
            )
            self.log.info(
                "sink.poll.stopped",
                pages=pages,
                records=records,
                lastrow=lastrow,
                leads=len(hits),
                changed=changed,
                action="the next poll resumes at this row",
            )
            return changed
        floor = (newest or now) - timedelta(seconds=cfg.cdr_overlap_s)
        kept = {g: v for g, v in seen.items() if (_parse_iso(v[0]) or now) >= floor}
        await self.ledger.set_state(
            "cdr", {"cursor": newest.isoformat() if newest else None, "seen": kept}
        )
        self.log.info(
            "sink.poll.done", pages=pages, records=records, leads=len(hits), changed=changed
        )
        return changed

    async def _take(
        self,
        record: dict[str, Any],
        when: datetime | None,
        seen: dict[str, list[Any]],
        hits: dict[str, _Hit],
        now: datetime,
    ) -> None:
        guid = first(record, "guid", "uniqueid", "callid")
        if not guid:
            return
        mark = seen.get(guid)
        if mark is not None and mark[1]:
            return  # already recorded, recording link included
        destination = first(record, "destination", "dst", "number", "phone")
        key = await self.ledger.owner(destination) if destination else None
        if key is None:
            seen[guid] = [(when or now).isoformat(), True]  # not one of ours
            return
        hit = hits.get(key)
        if hit is None:
            hits[key] = hit = _Hit(record, when)
        elif when is not None and (hit.when is None or when >= hit.when):
            hit.record, hit.when = record, when
        hit.guids.append(guid)
        seen[guid] = [(when or now).isoformat(), True]

    async def _outcome(
        self, key: str, hit: _Hit, seen: dict[str, list[Any]], now: datetime
    ) -> Outcome:
        counted = await self.ledger.calls(key)
        merged = counted + [g for g in dict.fromkeys(hit.guids) if g not in counted]
        if merged != counted:
            await self.ledger.set_calls(key, merged)  # idempotent: a set union
        record = hit.record
        guid = first(record, "guid", "uniqueid", "callid")
        raw_status = first(record, "disposition", "status", "callstatus")
        status = call_status(raw_status, self.cfg.status_map)
        url, candidates = "", list[str]()
        if status is CallStatus.CONNECTED or _int(first(record, "billsec")) > 0:
            url, candidates = await self.recording(guid, first(record, "calldate"))
            if not url:
                seen[guid][1] = False  # look again while the record is in the window
        return Outcome(
            sink=self.cfg.name,
            key=key,
            observed_at=now,
            status=status.value,
            raw_status=raw_status,
            disposition=disposition_of(record),
            attempts=len(merged),
            last_dialed_at=hit.when,
            agent=first(record, "agent"),
            call_id=guid,
            recording_url=url,
            raw={**record, "recording_candidates": candidates},
        )

    async def recording(self, guid: str, calldate: str) -> tuple[str, list[str]]:
        """Return (the recording URL found or "", the candidates tried)."""
        cfg = self.cfg
        mp3 = recording_candidates(guid, calldate, self.telephony, cfg.backup_records_url)
        if not cfg.probe_recordings:
            return mp3[0], mp3
        found = await self._first_existing(mp3)
        if found:
            return found, mp3
        gsm = recording_candidates(guid, calldate, self.telephony, cfg.backup_records_url, "gsm")
        found = await self._first_existing(gsm)
        if found and cfg.convert_gsm and not self.features.is_off(CONVERT):
            folder = calldate.strip()[:10].replace("-", "")
            try:
                converted = await self.client.flag(CONVERT, {"guid": guid, "folder": folder})
            except VendorError as exc:
                if not self.features.turn_off(CONVERT, exc, action=CONVERT_OFF):
                    self.log.warning("sink.recording.convert_failed", guid=guid, reason=str(exc))
                converted = False
            if converted:
                mp3_found = await self._first_existing(mp3)
                if mp3_found:
                    return mp3_found, mp3 + gsm
        return found, mp3 + gsm

    async def _first_existing(self, urls: list[str]) -> str:
        for url in urls:
            try:
                response = await self.http.head(url)
                if response.status_code == 405:  # HEAD not allowed: one byte will do
                    response = await self.http.get(url, headers={"Range": "bytes=0-0"})
            except httpx.HTTPError as exc:
                self.log.debug("sink.recording.unreachable", url=url, reason=type(exc).__name__)
                continue
            if 200 <= response.status_code < 300:
                return url
        return ""


def _parse_iso(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _int(text: str) -> int:
    try:
        return int(float(text))
    except ValueError:
        return 0
