"""Outcomes from uContact's call records (``Cdr/getrecords``), with recording links.

Each poll reads what is new: from the newest call date seen (the cursor) minus an
overlap only as wide as records can be late — ``cdr_delay_s``, a call's length plus
the server's delay in writing its record, plus the clocks' skew — to now, in the
largest pages the server serves (see ``records``). Records are matched to leads by
their destination number and deduplicated by call ``guid``; the cursor and the
guids seen inside the overlap are kept in the kv table, and every step can be
repeated after a crash without counting a call twice. Each page's outcomes are
recorded before the next page is read, so what a poll holds is a page, whatever
the backlog.

A stop or reload (the context's ``stopping``) ends a poll after the page it is
reading: the outcomes of the pages read are recorded, and the window and the row
to go on from are kept, so the next poll resumes there instead of re-reading it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from syncd.core.model import CallStatus, Outcome
from syncd.core.reasons import DIALER_FAILED, log_reason
from syncd.errors import VendorError
from syncd.net.http import status_only
from syncd.sinks.features import OptionalFeatures
from syncd.sinks.ucontact.client import UContactClient
from syncd.sinks.ucontact.config import UContactSinkConfig
from syncd.sinks.ucontact.ledger import Ledger
from syncd.sinks.ucontact.records import PageSize, call_records, first, rows_of
from syncd.sinks.ucontact.wire import parse_server_time, recording_candidates
from syncd.state.base import SinkStore

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
__all__ = ["CLOCK_SKEW", "CdrPoller", "call_status", "disposition_of", "first", "rows_of"]


def overlap_of(cfg: UContactSinkConfig) -> timedelta:
    """Return how far before the newest call seen a poll reads again: as late as a
    record can be written (``cdr_delay_s``) plus the clocks' skew, unless set."""
    if cfg.cdr_overlap_s is not None:
        return timedelta(seconds=cfg.cdr_overlap_s)
    return timedelta(seconds=cfg.cdr_delay_s) + CLOCK_SKEW


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
        store: SinkStore,
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
        self.page_size = PageSize(cfg.cdr_page_size)  # learns the server's own limit

    async def poll(self) -> int:
        """Return how many outcomes were new or changed."""
        cfg = self.cfg
        state = await self.ledger.get_state("cdr")
        now = datetime.now(UTC)
        overlap = overlap_of(cfg)
        cursor = _parse_iso(state.get("cursor"))
        resume = Resume.read(state.get("resume"))
        if resume is not None:
            # The window a stop cut short, from the row it left off at.
            start, end, lastrow = resume.start, resume.end, resume.lastrow
            newest = max((t for t in (cursor, resume.newest) if t), default=None)
            self.log.info("sink.poll.resumed", lastrow=lastrow, since=start.isoformat())
        else:
            start = self._start(cursor, _parse_iso(state.get("read_at")), overlap, now)
            end, lastrow, newest = now + CLOCK_SKEW, 0, cursor
        seen: dict[str, list[Any]] = {
            g: v for g, v in (state.get("seen") or {}).items() if isinstance(v, list)
        }
        pages = records = leads = changed = 0
        stopped = False
        size = self.page_size
        async for page in call_records(
            self.client, cfg, start, end, self.log, lastrow=lastrow, size=size
        ):
            pages += 1
            lastrow += len(page)
            hits: dict[str, _Hit] = {}
            for record in page:
                records += 1
                when = parse_server_time(first(record, "calldate", "date"), cfg.server_timezone)
                if when is not None and when <= now + CLOCK_SKEW:
                    newest = max(newest, when) if newest else when
                await self._take(record, when, seen, hits, now)
            # Recorded page by page: a backlog never gathers in memory.
            changed += await self._record(hits, seen, now)
            leads += len(hits)
            if self.stopping.is_set() and size.full(len(page)):
                stopped = True  # a safe point: what was read is recorded
                break
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
                leads=leads,
                changed=changed,
                action="the next poll resumes at this row",
            )
            return changed
        read_at = end - CLOCK_SKEW  # when the window's reading began
        # What the next poll reads again stays seen (and no more).
        floor = self._start(newest, read_at, overlap, now)
        kept = {g: v for g, v in seen.items() if (_parse_iso(v[0]) or now) >= floor}
        await self.ledger.set_state(
            "cdr",
            {
                "cursor": newest.isoformat() if newest else None,
                "read_at": read_at.isoformat(),
                "seen": kept,
            },
        )
        self.log.info(
            "sink.poll.done",
            pages=pages,
            records=records,
            leads=leads,
            changed=changed,
            since=start.isoformat(),
        )
        return changed

    def _start(
        self, cursor: datetime | None, read_at: datetime | None, overlap: timedelta, now: datetime
    ) -> datetime:
        """Return where a poll's window starts: no later than a record the last poll
        can have missed.

        A record is written at most ``overlap`` after its call date, so what the last
        poll (reading from ``read_at``) did not see has a call date after ``read_at -
        overlap``, or after the newest call it saw; a quiet spell re-reads nothing.
        """
        if cursor is None:
            return now - timedelta(seconds=self.cfg.cdr_lookback_s)
        if read_at is None:  # a state from before read_at was kept
            return cursor - overlap
        return min(cursor, read_at - overlap)

    async def _record(
        self, hits: dict[str, _Hit], seen: dict[str, list[Any]], now: datetime
    ) -> int:
        """Record the outcomes of one page's hits; return how many were new or changed."""
        if not hits:
            return 0
        slots = asyncio.Semaphore(PROBES_IN_FLIGHT)

        async def build(key: str, hit: _Hit) -> Outcome | None:
            async with slots:
                return await self._outcome(key, hit, seen, now)

        built = await asyncio.gather(*(build(key, hit) for key, hit in hits.items()))
        return await self.store.record_outcomes([o for o in built if o is not None])

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
    ) -> Outcome | None:
        """Return the lead's outcome from its newest call of ``hit``; None when the lead's
        outcome is already from a newer call (an older one written late is only counted)."""
        counted = await self.ledger.calls(key)
        merged = counted + [g for g in dict.fromkeys(hit.guids) if g not in counted]
        if merged != counted:
            await self.ledger.set_calls(key, merged)  # idempotent: a set union
        latest = await self.ledger.newest_call(key)
        if hit.when is not None and latest is not None and hit.when < latest:
            self.log.debug("sink.poll.older_call", key=key, calls=len(merged))
            return None
        if hit.when is not None and hit.when != latest:
            await self.ledger.set_newest_call(key, hit.when)
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
                    log_reason(
                        self.log,
                        "warning",
                        "sink.recording.convert_failed",
                        str(exc),
                        DIALER_FAILED,
                        guid=guid,
                    )
                converted = False
            if converted:
                mp3_found = await self._first_existing(mp3)
                if mp3_found:
                    return mp3_found, mp3 + gsm
        return found, mp3 + gsm

    async def _first_existing(self, urls: list[str]) -> str:
        for url in urls:
            try:
                status = await status_only(self.http, "HEAD", url)
                if status == 405:  # HEAD not allowed: one byte will do (if Range is heeded)
                    status = await status_only(self.http, "GET", url, {"Range": "bytes=0-0"})
            except httpx.HTTPError as exc:
                self.log.debug("sink.recording.unreachable", url=url, reason=type(exc).__name__)
                continue
            if 200 <= status < 300:
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
