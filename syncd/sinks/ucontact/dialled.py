"""Whether uContact already called a lead whose upload syncd could not confirm.

uploadbase says only ``1`` and the API cannot list the dial list, so after a crash
(or a call that got no answer) syncd does not know whether the lead went in and,
worse, whether it was dialled already: the dialer takes a number out of the list
when it dials it, so removing it first then finds nothing and a re-upload calls
the person again. The call records (``Cdr/getrecords``) are the only witness: a
record for one of the lead's numbers made after the upload went out means it was
delivered and dialled. Records are written when a call ends, so the check is
trusted only ``cdr_delay_s`` after the number was removed.

Each lead's numbers are looked up on their own: the filter's ``destination`` (the
number as it was sent, which the dialer dials and writes) and its call-date range
(from the upload on), so a check reads the few records of the leads in doubt, not
the campaign's, and stops at the first call found. A server that ignores the
destination filter (it answers with other numbers' records) is read once for the
whole campaign since the earliest upload in doubt instead, as a last resort.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from syncd.sinks.ucontact.client import UContactClient
from syncd.sinks.ucontact.config import UContactSinkConfig
from syncd.sinks.ucontact.ledger import Placed, match_forms
from syncd.sinks.ucontact.outcomes import CLOCK_SKEW
from syncd.sinks.ucontact.records import PageSize, call_records, first
from syncd.sinks.ucontact.wire import parse_server_time, phone_digits

CHECK_PAGE = 10  # records of one number a page: the first call after the upload will do
READS_IN_FLIGHT = 4  # numbers looked up at once
DATES_TO_THE_SECOND = timedelta(seconds=1)  # the filter's dates drop fractions


class DialledCheck:
    """Looks for calls to the numbers of a batch's leads in doubt, since their upload."""

    def __init__(self, cfg: UContactSinkConfig, client: UContactClient, log: Any) -> None:
        self.cfg = cfg
        self.client = client
        self.log = log
        self._slots = asyncio.Semaphore(READS_IN_FLIGHT)
        self._unfiltered = False  # the server ignored the destination filter
        self._campaign: tuple[float, dict[str, list[tuple[float, dict[str, Any]]]]] | None = None
        self._lock = asyncio.Lock()

    async def call_after_upload(self, placed: Placed) -> dict[str, Any] | None:
        """Return a call record to any of the lead's numbers made after its upload, or None."""
        sent = placed.added_at if placed.added_at is not None else 0.0
        # The server's clock and ours may differ: a call is "after" within the skew.
        floor = sent - CLOCK_SKEW.total_seconds()
        for number in dict.fromkeys((placed.destination, *placed.alternatives)):
            if not phone_digits(number):
                continue
            record = None if self._unfiltered else await self._call_to(number, floor)
            if self._unfiltered:
                record = await self._campaign_call(number, floor)
            if record is not None:
                return record
        return None

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
                        self.log.info("sink.push.dialled_check", records=read, found=True)
                        return record
        self.log.info("sink.push.dialled_check", records=read, found=False)
        return None

    def _when(self, record: dict[str, Any]) -> float | None:
        when = parse_server_time(first(record, "calldate", "date"), self.cfg.server_timezone)
        return when.timestamp() if when is not None else None

    async def _campaign_call(self, number: str, floor: float) -> dict[str, Any] | None:
        """The last resort: every record of the campaign since ``floor``, read once."""
        async with self._lock:
            if self._campaign is None or floor < self._campaign[0]:
                self._campaign = (floor, await self._read_campaign(floor))
            calls = self._campaign[1]
        for form in match_forms(number):
            for when, record in calls.get(form, []):
                if when >= floor:
                    return record
        return None

    async def _read_campaign(self, since: float) -> dict[str, list[tuple[float, dict[str, Any]]]]:
        start = datetime.fromtimestamp(since, UTC)
        end = datetime.now(UTC) + CLOCK_SKEW
        calls: dict[str, list[tuple[float, dict[str, Any]]]] = {}
        records = 0
        async for page in call_records(self.client, self.cfg, start, end, self.log):
            for record in page:
                when = self._when(record)
                number = phone_digits(first(record, "destination", "dst", "number", "phone"))
                if when is None or not number:
                    continue
                records += 1
                calls.setdefault(number, []).append((when, record))
        self.log.info(
            "sink.push.dialled_check",
            since=start.isoformat(),
            records=records,
            numbers=len(calls),
            unfiltered=True,
        )
        return calls
