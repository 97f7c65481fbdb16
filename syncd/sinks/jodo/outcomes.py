"""Outcome polling: getProcessData over a moving ``storedatetime`` window, and by lead.

Jodo stamps ``storedatetime`` (whole seconds, on its clock) when it stores a change
to a record: an import, a call, a disposition, a reallocation. So each poll reads
what is new: ``[last window end - overlap, now]``, the overlap only as wide as the
stamps' uncertainty (a few seconds for the second cut off and a write committed a
moment after its stamp, plus how far the dialer's clock, as its replies measure it,
is behind where the window follows it). A change that becomes readable later than
that is read by the late pass: each poll also reads, once, the rows stamped
``settle_s`` ago, so a write readable up to ``settle_s`` after its stamp is read
without every poll re-reading ``settle_s`` (a 20,000-record import re-read every
few seconds for ten minutes). Windows longer than ``max_window_s`` are read in
slices; unchanged rows read twice are dropped by the store's content hash. Both
window ends are kept in the store's kv table and move only after the outcomes of
a slice are stored.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from syncd.core.model import Lead, Outcome
from syncd.errors import VendorError
from syncd.sinks.jodo.client import (
    NOT_FOUND,
    REQUEST_BUGS,
    jodo_time,
)
from syncd.sinks.jodo.leads import delivered_leads
from syncd.sinks.jodo.outcome_rows import StatusMapper, build_outcome, worked
from syncd.sinks.jodo.part import JodoPart
from syncd.sinks.jodo.recordings import Recordings

# storedatetime has whole seconds and is stamped as a change is stored: each window
# re-reads this much for the second cut off and a write committed a moment after it.
STAMP_MARGIN_S = 5.0
MOBILE_BATCH = 100  # numbers per getProcessData by mobilenumber
CONCURRENCY = 4  # by-lead searches in flight at once


class OutcomePoller(JodoPart):
    """Reads call outcomes of one Jodo process into the store."""

    def setup(self) -> None:
        self.settings = self.cfg.outcomes
        self.mapper = StatusMapper(self.cfg.outcomes.status_map)
        self.scope = f"jodo:{self.cfg.name}"
        self._offset_s = 0.0  # the dialer's clock minus ours, once beyond the tolerance
        # Set at a stop or reload: a poll ends after the slice it is reading (its window
        # end is stored per slice, so the next poll goes on from there).
        self.stopping = asyncio.Event()
        self.recordings = (
            Recordings(self.client, self.store, self.cfg.name, self.cfg.recordings, self.log)
            if self.cfg.recordings.enabled
            else None
        )

    # -- the poll -----------------------------------------------------------------

    async def poll(self) -> int:
        """Store new or changed outcomes; return how many there were."""
        widen = self._follow_dialer_clock()
        ours = datetime.fromtimestamp(self.clock.time(), UTC)
        now = self._dialer_now()  # the window is on the dialer's clock, as its rows are
        start = await self._window_start(now, widen)
        changed = 0
        if not self.stopping.is_set():  # at a stop, only the slice of the window
            changed += await self._poll_late(start, ours, widen)
            if self.stopping.is_set():
                return changed
        changed += await self._poll_window(start, now, ours)
        if self.stopping.is_set():
            return changed
        if self._follow_dialer_clock():  # those answers put the dialer's clock elsewhere
            now = self._dialer_now()
            start = await self._window_start(now, widen=True)
            changed += await self._poll_window(start, now, ours)
            await self._settled_to(self._late_until())  # that window read the whole lookback
        if self.settings.recheck_per_poll and not self.stopping.is_set():
            ours = datetime.fromtimestamp(self.clock.time(), UTC)
            changed += await self.ingest(await self._recheck(), ours)
        if changed:
            self.log.info("sink.outcomes.polled", changed=changed)
        return changed

    async def _poll_window(self, start: datetime, now: datetime, ours: datetime) -> int:
        changed = 0
        ingested = False
        for begin, end in _slices(start, now, timedelta(seconds=self.settings.max_window_s)):
            rows = await self._read(begin, end)
            changed += await self.ingest(rows, ours)
            ingested = True
            await self.store.kv_set(self.scope, "outcomes.window_end", end.isoformat())
            self.log.debug(
                "sink.outcomes.window",
                fromdate=begin.isoformat(),
                todate=end.isoformat(),
                rows=len(rows),
            )
            if self.stopping.is_set() and end < now:
                self.log.info("sink.poll.stopped", read_to=end.isoformat(), reason="stop")
                break
        if not ingested and not self.settings.recheck_per_poll:
            # recordings awaited from earlier polls are still asked for
            changed += await self.ingest([], ours)
        return changed

    async def _read(self, begin: datetime, end: datetime) -> list[dict[str, Any]]:
        """Return the rows stamped from ``begin`` to ``end`` (whole seconds, both included)."""
        return await self.search(
            {
                "searchparam": "daterange",
                "fromdate": jodo_time(begin, self.cfg.timezone),
                "todate": jodo_time(end, self.cfg.timezone),
            }
        )

    # -- the dialer's clock -------------------------------------------------------

    def _dialer_now(self) -> datetime:
        """Return the time on the dialer's clock: ours, moved by a skew beyond tolerance."""
        return datetime.fromtimestamp(self.clock.time() + self._offset_s, UTC)

    def _follow_dialer_clock(self) -> bool:
        """Return True when the dialer's clock moved from where the window followed it.

        Its rows are stamped on its clock: a window on ours would ask for the wrong
        hours and find nothing. Following it, the next window reaches back the whole
        lookback, so rows stamped while the clocks disagreed are read too.
        """
        offset = self.client.skew.offset_s()
        if abs(offset - self._offset_s) <= self.cfg.clock_tolerance_s:
            return False
        self._offset_s = offset
        warning = self.clock_warning()
        if warning is None:
            self.log.info("sink.clock.agrees", tolerance_s=self.cfg.clock_tolerance_s)
        else:
            self.log.error("sink.clock.skew", reason=warning, skew_s=offset)
        return True

    def clock_warning(self) -> str | None:
        """Return what the operator should know about the dialer's clock, None when it agrees."""
        skew = self.client.skew
        said = skew.describe()
        if said is None:
            return None
        theirs = jodo_time(self._dialer_now(), self.cfg.timezone)[:16]
        text = f"{said} (its replies say {theirs} in timezone {self.cfg.timezone!r})"
        if skew.looks_like_zone():
            text += "; a whole time-zone step: set the sink's timezone to the zone of the "
            text += "Jodo server's clock, or correct that clock (NTP)"
        else:
            text += "; correct the Jodo server's clock (NTP)"
        return text + "; outcome polls follow the dialer's clock meanwhile"

    async def _window_start(self, now: datetime, widen: bool = False) -> datetime:
        overlap = timedelta(seconds=self._overlap_s())
        lookback = now - timedelta(seconds=self.settings.lookback_s)
        text = await self.store.kv_get(self.scope, "outcomes.window_end")
        if not text:
            return lookback
        end = datetime.fromisoformat(text)
        if end > now:
            # Our clock went back: waiting for it to catch up would stop polling meanwhile.
            self.log.warning("sink.outcomes.cursor_ahead", window_end=text, now=now.isoformat())
            end = now
        return min(end - overlap, lookback) if widen else end - overlap

    def _lag_s(self) -> float:
        """Return how far the dialer's clock may be behind where the window follows it.

        Within ``clock_tolerance_s`` the window stays on our clock, and a dialer
        behind it stamps a change that much before the end of a window already
        read. Its replies say by how much: their time is cut to the second and
        read on arrival, so the measure is never less than the lag. Before any
        reply, the whole tolerance.
        """
        skew = self.client.skew.skew_s
        if skew is None:
            return float(self.cfg.clock_tolerance_s)
        return float(max(0, math.ceil(self._offset_s - skew)))

    def _overlap_s(self) -> float:
        """Return how much of the previous window each window reads again.

        ``overlap_s`` when set; else the stamps' margin plus the dialer's lag, never
        more than ``settle_s`` (beyond it the late pass reads them anyway).
        """
        if self.settings.overlap_s is not None:
            return self.settings.overlap_s
        return min(STAMP_MARGIN_S + self._lag_s(), self.settings.settle_s)

    # -- the late pass ----------------------------------------------------------------

    def _late_until(self) -> datetime:
        """Return the newest stamp a change readable ``settle_s`` after it has had time for."""
        lag = timedelta(seconds=self._lag_s() + self.settings.settle_s)
        return self._dialer_now() - lag

    async def _settled_to(self, until: datetime) -> None:
        await self.store.kv_set(self.scope, "outcomes.settled_to", until.isoformat())

    async def _poll_late(self, start: datetime, ours: datetime, widen: bool) -> int:
        """Read once more the rows stamped ``settle_s`` ago; return how many changed.

        A write the dialer makes readable after the windows over its stamp were read
        is found here, ``settle_s`` after that stamp at the latest. Rows the window
        reads from ``start`` on are read at that age or older already, and so are all
        rows when the window reaches back the whole lookback or before a first poll.
        """
        until = self._late_until()
        text = await self.store.kv_get(self.scope, "outcomes.settled_to")
        if not text or widen or self._overlap_s() >= self.settings.settle_s:
            await self._settled_to(until)  # every window reads them at that age anyway
            return 0
        # The rows of the second it reached were read: a stamp has whole seconds.
        begin = datetime.fromisoformat(text).replace(microsecond=0) + timedelta(seconds=1)
        if until <= start and until - begin < timedelta(seconds=STAMP_MARGIN_S):
            return 0  # too little to ask for yet (or our clock went back): a later poll
        stop = min(until, start)
        changed = 0
        width = timedelta(seconds=self.settings.max_window_s)
        for first, last in _slices(begin, stop, width):
            rows = await self._read(first, last)
            changed += await self.ingest(rows, ours, ask_recordings=False)
            await self._settled_to(last)
            self.log.debug(
                "sink.outcomes.late_window",
                fromdate=first.isoformat(),
                todate=last.isoformat(),
                rows=len(rows),
            )
            if self.stopping.is_set() and last < stop:
                self.log.info("sink.poll.stopped", read_to=last.isoformat(), reason="stop")
                return changed
        await self._settled_to(until)  # beyond stop, this poll's window reads them
        return changed

    async def search(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        """Return the rows getProcessData finds (none for status 14, customer data not found)."""
        try:
            reply = await self.client.call("getProcessData", payload)
        except VendorError as exc:
            if exc.code is not None and exc.code.isdigit() and int(exc.code) in REQUEST_BUGS:
                self.log.error(
                    "sink.outcomes.request_bug",
                    code=exc.code,
                    reason=exc.reason,
                    searchparam=payload.get("searchparam"),
                    fromdate=payload.get("fromdate"),
                    todate=payload.get("todate"),
                )
            raise
        if reply.code == NOT_FOUND:
            return []
        data = reply.body.get("data")
        return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []

    # -- rows to outcomes -----------------------------------------------------------

    async def ingest(
        self, rows: list[dict[str, Any]], now: datetime, *, ask_recordings: bool = True
    ) -> int:
        """Store the outcomes ``rows`` report (with recording links); return how many changed.

        Without ``ask_recordings`` the recordings still awaited are not asked for (a
        later ingest of the same poll asks for them all).
        """
        outcomes: dict[str, Outcome] = {}
        rows = [row for row in rows if worked(row, self.settings)]
        for key, row in await self.match(rows):
            outcome = build_outcome(
                row,
                sink=self.cfg.name,
                key=key,
                settings=self.settings,
                mapper=self.mapper,
                zone=self.cfg.timezone,
                observed_at=now,
            )
            if outcome is not None:
                outcomes[key] = outcome  # a key listed twice: the later row wins
        found = list(outcomes.values())
        if self.recordings is not None:
            found = await self.recordings.attach(found, now, ask=ask_recordings)
        if not found:
            return 0
        return await self.store.record_outcomes(found)

    def _match_fields(self) -> list[str]:
        if self.settings.match_field:
            return [self.settings.match_field]
        by_param = {
            "customercode": "customercode",
            "crmuniquefield": self.cfg.crm_unique_field,
            "mobilenumber": self.cfg.key_field,
        }
        fields = [by_param[self.cfg.updateparam], self.cfg.key_field]
        return list(dict.fromkeys(fields))

    async def match(self, rows: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
        """Return (lead key, row) for rows of leads this sink delivered; others are ignored."""
        fields = self._match_fields()
        candidates = [[str(row.get(f) or "").strip() for f in fields] for row in rows]
        wanted = sorted({v for values in candidates for v in values if v})
        known: set[str] = set()
        for start in range(0, len(wanted), 500):
            known.update(await self.store.lookup(self.cfg.name, wanted[start : start + 500]))
        matched: list[tuple[str, dict[str, Any]]] = []
        unmatched: list[dict[str, Any]] = []
        for row, values in zip(rows, candidates, strict=True):
            key = next((v for v in values if v in known), None)
            if key is not None:
                matched.append((key, row))
            else:
                unmatched.append(row)
        if unmatched and self.cfg.updateparam == "mobilenumber" and not self.settings.match_field:
            # The process's update key is the number itself: match by what we dialled.
            by_phone = await self._phone_index()
            for row in unmatched:
                key = by_phone.get(str(row.get("mobilenumber") or "").strip())
                if key is not None:
                    matched.append((key, row))
        return matched

    async def _phone_index(self) -> dict[str, str]:
        """Return the delivered lead of each number; a number two leads share is left out.

        Such a record's outcome belongs to neither lead alone (``duplicates = "allow"``
        with ``updateparam = "mobilenumber"``): it is not written to either.
        """
        index: dict[str, str] = {}
        shared: set[str] = set()
        async for key, number, lead in delivered_leads(self.store, self.cfg.name):
            dialled = number or self.dial(lead.phone)
            if dialled in index and index[dialled] != key:
                shared.add(dialled)
            index[dialled] = key
        if shared:
            self.log.warning(
                "sink.outcomes.shared_number",
                numbers=len(shared),
                action="outcomes of numbers several delivered leads share are not attributed;"
                ' use duplicates = "one_per_number" or a key-based updateparam',
            )
        return {n: k for n, k in index.items() if n not in shared}

    # -- by lead --------------------------------------------------------------------

    async def _recheck(self) -> list[dict[str, Any]]:
        """Return rows of the next few delivered leads, searched by the sink's update key."""
        after = await self.store.kv_get(self.scope, "outcomes.recheck_after") or ""
        page = await self.store.delivered(
            self.cfg.name, after_key=after, limit=self.settings.recheck_per_poll
        )
        next_after = page[-1][0] if len(page) == self.settings.recheck_per_poll else None
        await self.store.kv_set(self.scope, "outcomes.recheck_after", next_after)
        leads = [(key, Lead.from_json(json.loads(text))) for key, _ref, text in page]
        return await self.rows_for(leads)

    async def rows_for(self, leads: list[tuple[str, Lead]]) -> list[dict[str, Any]]:
        """Return the rows of the given leads, searched by the sink's update key."""
        param = self.cfg.updateparam
        if param == "mobilenumber":
            numbers = sorted({self.dial(lead.phone) for _key, lead in leads})
            rows: list[dict[str, Any]] = []
            for start in range(0, len(numbers), MOBILE_BATCH):
                part = numbers[start : start + MOBILE_BATCH]
                rows += await self.search({"searchparam": "mobilenumber", "mobilenumber": part})
            return rows
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(key: str) -> list[dict[str, Any]]:
            async with gate:
                return await self.search({"searchparam": param, param: key})

        found = await asyncio.gather(*(one(key) for key, _lead in leads))
        return [row for rows in found for row in rows]


def _slices(
    start: datetime, end: datetime, width: timedelta
) -> Iterator[tuple[datetime, datetime]]:
    """Yield [begin, end] windows covering ``start``..``end``, none wider than ``width``."""
    begin = start
    while begin < end:
        stop = min(begin + width, end)
        yield begin, stop
        begin = stop
