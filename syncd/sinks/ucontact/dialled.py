"""Whether uContact already called a lead whose upload syncd could not confirm.

uploadbase says only ``1`` and the API cannot list the dial list, so after a crash
(or a call that got no answer) syncd does not know whether the lead went in and,
worse, whether it was dialled already: the dialer takes a number out of the list
when it dials it, so removing it first then finds nothing and a re-upload calls
the person again. The call records (``Cdr/getrecords``) are the only witness: a
record for one of the lead's numbers made after the upload went out means it was
delivered and dialled. Records are written when a call ends, so the check is
trusted only ``cdr_delay_s`` after the number was removed.

A check serves the leads in doubt of one push, and reads what they need. The
filter takes one ``destination`` (the number as sent), so there are two ways:
the campaign's records since the earliest upload in doubt answer every lead at
once, cheaply while they are few (one request when the campaign was quiet); or
each lead's numbers are looked up on their own, a request each, reading only
their own records. Which is cheaper is not known before reading, so the
campaign's records are read a page at a time only while they stay within what
the leads that asked so far would cost on their own (a request and
``CHECK_PAGE`` records per number in doubt, or one page of the document's 50);
whoever asks before that read is complete is looked up by number. A check so
reads at most about twice what the cheaper way would have, in records and in
requests, and never the whole campaign for a few leads. A server that ignores
the destination filter (it answers with other numbers' records) is read for the
whole campaign since the earliest upload in doubt instead, as a last resort.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from syncd.sinks.ucontact.client import UContactClient
from syncd.sinks.ucontact.config import UContactSinkConfig
from syncd.sinks.ucontact.ledger import Placed, match_forms
from syncd.sinks.ucontact.outcomes import CLOCK_SKEW
from syncd.sinks.ucontact.records import (
    DOCUMENT_PAGE,
    PageSize,
    call_records,
    first,
    record_filter,
    rows_of,
)
from syncd.sinks.ucontact.wire import parse_server_time, phone_digits

CHECK_PAGE = 10  # records of one number a page: the first call after the upload will do
READS_IN_FLIGHT = 4  # numbers looked up at once
DATES_TO_THE_SECOND = timedelta(seconds=1)  # the filter's dates drop fractions
UNBOUNDED = 10**12  # the last resort's allowance: the whole window

Calls = dict[str, list[tuple[float, dict[str, Any]]]]  # digits -> (call time, record)


@dataclass(slots=True)
class Stretch:
    """One stretch of the campaign's call dates, read from row ``lastrow`` on."""

    start: datetime
    end: datetime
    lastrow: int = 0
    done: bool = False
    previous: list[str] | None = None  # the last page's ids: a server ignoring lastrow


@dataclass(slots=True)
class CampaignView:
    """The campaign's call records since ``since``, as far as they were read.

    Complete once every stretch is read to its end: then a number with no record in
    it was not called between ``since`` and ``end``. ``as_of``: when the first page
    was asked for; records written after that may be missing (offsets only shift
    forward as records are added, so none written before it is).
    """

    since: float
    end: datetime
    as_of: float
    stretches: list[Stretch] = field(default_factory=list)
    calls: Calls = field(default_factory=dict)
    records: int = 0
    pages: int = 0
    served: int | None = None  # the most rows a page of this server held (its limit)
    broken: bool = False  # the server ignored lastrow: never complete

    @property
    def complete(self) -> bool:
        return not self.broken and all(s.done for s in self.stretches)

    def covers(self, floor: float, check_at: float | None) -> bool:
        """Return True when a number absent from the view was not called since ``floor``."""
        fresh = check_at is None or check_at <= self.as_of
        return self.complete and self.since <= floor and fresh

    def reach_back(self, floor: float) -> None:
        """Add the stretch from ``floor`` to where the view starts (an earlier upload)."""
        if floor >= self.since:
            return
        start = datetime.fromtimestamp(floor, UTC) - DATES_TO_THE_SECOND
        end = datetime.fromtimestamp(self.since, UTC) + DATES_TO_THE_SECOND
        self.stretches.append(Stretch(start, end))
        self.since = floor

    def call_to(self, numbers: list[str], floor: float) -> dict[str, Any] | None:
        """Return a record read so far of a call to one of ``numbers`` since ``floor``."""
        for form in match_forms(*numbers):
            for when, record in self.calls.get(form, []):
                if when >= floor:
                    return record
        return None


def page_ends(rows: int, ask: int, served: int | None) -> bool:
    """Return True when a page of ``rows``, ``ask`` asked, is surely a stretch's last.

    A server may serve fewer rows than asked without saying so: a short page ends
    the stretch when it is shorter than what every server serves (the document's
    50) or than what this one has shown it serves.
    """
    return rows == 0 or rows < min(ask, max(DOCUMENT_PAGE, served or 0))


class DialledCheck:
    """Looks for calls to the numbers of a push's leads in doubt, since their upload."""

    def __init__(self, cfg: UContactSinkConfig, client: UContactClient, log: Any) -> None:
        self.cfg = cfg
        self.client = client
        self.log = log
        self._slots = asyncio.Semaphore(READS_IN_FLIGHT)
        self._unfiltered = False  # the server ignored the destination filter
        self._view: CampaignView | None = None
        self._asked = 0  # numbers in doubt asked about so far
        self._pages = self._records = 0  # what reading the campaign cost so far, all views
        self._lock = asyncio.Lock()  # one reader of the campaign's records at a time

    async def call_after_upload(self, placed: Placed) -> dict[str, Any] | None:
        """Return a call record to any of the lead's numbers made after its upload, or None."""
        sent = placed.added_at if placed.added_at is not None else 0.0
        # The server's clock and ours may differ: a call is "after" within the skew.
        floor = sent - CLOCK_SKEW.total_seconds()
        numbers = [
            n for n in dict.fromkeys((placed.destination, *placed.alternatives)) if phone_digits(n)
        ]
        if not numbers:
            return None
        self._asked += len(numbers)
        view = await self._read_campaign(floor, placed.check_at)
        record = view.call_to(numbers, floor)
        if record is not None or view.covers(floor, placed.check_at):
            return record
        for number in numbers:
            if not self._unfiltered:
                record = await self._call_to(number, floor)
                if record is not None:
                    return record
            if self._unfiltered:
                # The last resort: the whole campaign since the earliest upload in doubt.
                view = await self._read_campaign(floor, placed.check_at)
                return view.call_to(numbers, floor)
        return None

    # -- the campaign's records, within what the leads asking would cost ---------------

    async def _read_campaign(self, floor: float, check_at: float | None) -> CampaignView:
        """Return the view of the campaign since ``floor``, read on as far as allowed.

        A view read before ``check_at`` (a removal's records were due after it was
        read) is read again from the start.
        """
        async with self._lock:
            view = self._view
            if view is None or (check_at is not None and check_at > view.as_of):
                now = time.time()
                view = self._view = CampaignView(
                    since=floor, end=datetime.now(UTC) + CLOCK_SKEW, as_of=now
                )
                start = datetime.fromtimestamp(floor, UTC) - DATES_TO_THE_SECOND
                view.stretches.append(Stretch(start, view.end))
            view.reach_back(floor)
            unbounded = self._unfiltered
            pages = view.pages
            while not view.complete and not view.broken:
                allowed = UNBOUNDED if unbounded else self._allowance()
                if self._records >= allowed or (not unbounded and self._pages >= self._asked):
                    break
                stretch = next(s for s in view.stretches if not s.done)
                want = min(self.cfg.cdr_page_size, allowed - self._records)
                await self._page(view, stretch, want)
            if view.pages > pages and (view.complete or view.broken or unbounded):
                self.log.info(
                    "sink.push.dialled_check",
                    records=view.records,
                    pages=view.pages,
                    complete=view.complete,
                    unfiltered=unbounded or None,
                )
            return view

    def _allowance(self) -> int:
        """Return how many of the campaign's records the leads asking so far may cost.

        Looked up by number they would cost a request and a page of ``CHECK_PAGE``
        each; a request of the document's page costs about what one of ten does.
        """
        return max(DOCUMENT_PAGE, CHECK_PAGE * self._asked)

    async def _page(self, view: CampaignView, stretch: Stretch, want: int) -> None:
        """Read the next page of ``stretch`` into the view."""
        ask = min(want, view.served) if view.served else want
        flt = json.dumps(record_filter(self.cfg, stretch.start, stretch.end))
        form = {
            "lastrow": str(stretch.lastrow),
            "searchLimit": str(ask),
            "filter": flt,
            "Random": "1",
        }
        page = rows_of(await self.client.json("Cdr/getrecords", form, empty=[]))
        view.pages += 1
        self._pages += 1
        self._records += len(page)
        ids = [first(r, "guid", "uniqueid") for r in page]
        if page and ids == stretch.previous:
            # A server that ignores lastrow would page forever: look up by number.
            self.log.warning("sink.poll.paging_ignored", lastrow=stretch.lastrow)
            view.broken = True
            return
        stretch.previous = ids
        for record in page:
            view.records += 1
            when = self._when(record)
            number = phone_digits(first(record, "destination", "dst", "number", "phone"))
            if when is not None and number:
                view.calls.setdefault(number, []).append((when, record))
        stretch.lastrow += len(page)
        if page_ends(len(page), ask, view.served):
            stretch.done = True
        elif len(page) < ask:
            view.served = len(page)  # the server's own limit, or the end: the next page tells

    # -- one number's own records ----------------------------------------------------

    async def _call_to(self, number: str, floor: float) -> dict[str, Any] | None:
        """Return the first call to ``number`` since ``floor`` from its own records."""
        forms, digits = set(match_forms(number)), phone_digits(number)
        start = datetime.fromtimestamp(floor, UTC) - DATES_TO_THE_SECOND
        end = datetime.now(UTC) + CLOCK_SKEW
        read = 0
        async with self._slots:
            pages = call_records(
                self.client,
                self.cfg,
                start,
                end,
                self.log,
                size=PageSize(CHECK_PAGE),
                destination=number,
            )
            async for page in pages:
                for record in page:
                    read += 1
                    called = phone_digits(first(record, "destination", "dst", "number", "phone"))
                    if called and digits not in called:
                        # Another number's record: the server does not filter by number.
                        if not self._unfiltered:
                            self._unfiltered = True
                            self.log.warning(
                                "sink.push.dialled_check_unfiltered",
                                action="reading the campaign's records since the upload instead",
                            )
                        return None
                    when = self._when(record)
                    if called in forms and when is not None and when >= floor - 1:
                        self.log.debug("sink.push.dialled_check_number", records=read, found=True)
                        return record
        self.log.debug("sink.push.dialled_check_number", records=read, found=False)
        return None

    def _when(self, record: dict[str, Any]) -> float | None:
        when = parse_server_time(first(record, "calldate", "date"), self.cfg.server_timezone)
        return when.timestamp() if when is not None else None
