"""Whether uContact already called a lead whose upload syncd could not confirm.

uploadbase says only ``1`` and the API cannot list the dial list, so after a crash
(or a call that got no answer) syncd does not know whether the lead went in and,
worse, whether it was dialled already: the dialer takes a number out of the list
when it dials it, so removing it first then finds nothing and a re-upload calls
the person again. The call records (``Cdr/getrecords``) are the only witness: a
record for one of the lead's numbers made after the upload went out means it was
delivered and dialled. Records are written when a call ends, so the check is
trusted only ``cdr_delay_s`` after the number was removed.

One read of the campaign's records serves every lead of a batch.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from syncd.sinks.ucontact.client import UContactClient
from syncd.sinks.ucontact.config import UContactSinkConfig
from syncd.sinks.ucontact.ledger import Placed, match_forms
from syncd.sinks.ucontact.outcomes import CLOCK_SKEW, call_records, first
from syncd.sinks.ucontact.wire import parse_server_time, phone_digits


class DialledCheck:
    """The campaign's call records since the earliest upload of a batch, read once."""

    def __init__(self, cfg: UContactSinkConfig, client: UContactClient, log: Any) -> None:
        self.cfg = cfg
        self.client = client
        self.log = log
        self.since: float | None = None  # the records read start here
        self._calls: dict[str, list[tuple[float, dict[str, Any]]]] | None = None
        self._lock = asyncio.Lock()

    async def call_after_upload(self, placed: Placed) -> dict[str, Any] | None:
        """Return a call record to any of the lead's numbers made after its upload, or None."""
        sent = placed.added_at if placed.added_at is not None else 0.0
        calls = await self._load(sent)
        # The server's clock and ours may differ: a call is "after" within the skew.
        floor = sent - CLOCK_SKEW.total_seconds()
        for form in match_forms(placed.destination, *placed.alternatives):
            for when, record in calls.get(form, []):
                if when >= floor:
                    return record
        return None

    async def _load(self, sent: float) -> dict[str, list[tuple[float, dict[str, Any]]]]:
        async with self._lock:
            # The leads of one batch went out in one upload: one read serves them all.
            if self._calls is None or self.since is None or sent < self.since:
                self.since = sent
                self._calls = await self._read(sent)
            return self._calls

    async def _read(self, since: float) -> dict[str, list[tuple[float, dict[str, Any]]]]:
        start = datetime.fromtimestamp(since, UTC) - CLOCK_SKEW
        end = datetime.now(UTC) + CLOCK_SKEW
        calls: dict[str, list[tuple[float, dict[str, Any]]]] = {}
        records = 0
        zone = self.cfg.server_timezone
        async for page in call_records(self.client, self.cfg, start, end, self.log):
            for record in page:
                when = parse_server_time(first(record, "calldate", "date"), zone)
                number = phone_digits(first(record, "destination", "dst", "number", "phone"))
                if when is None or not number:
                    continue
                records += 1
                calls.setdefault(number, []).append((when.timestamp(), record))
        self.log.info(
            "sink.push.dialled_check",
            since=start.isoformat(),
            records=records,
            numbers=len(calls),
        )
        return calls
