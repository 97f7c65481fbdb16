"""What the Ameyo sink delivered per lead, kept in the store's sink ledger.

Ameyo upserts a customer on ``phone1`` but a callback is not idempotent, so the sink
remembers per lead what Ameyo holds of it: the customer id, a digest of the record,
the callback time, phone1 and the validityTime it went with. A re-push compares the
lead with it (``sink.py``: nothing, one addCallback, or an upload). The store keeps
these in the typed columns of the lead's ledger row (:mod:`syncd.state.ledger`),
which goes with the lead; this module gives the columns their meaning.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from syncd.state.ledger import Placement, SinkLedger


@dataclass(frozen=True, slots=True)
class Delivered:
    """What Ameyo holds of one lead, as the sink last delivered it."""

    customer: str | None  # Ameyo's customerId
    record: str | None  # record_digest of the customerRecord
    call_at: str | None  # the callback's time (ISO, UTC), None: no callback
    phone1: str  # Ameyo's key of the customer
    validity: str | None  # the validityTime it went with, None: none

    def to_placement(self) -> Placement:
        return Placement(
            number=self.phone1,
            schedule=self.call_at,
            sent_hash=self.record,
            ref=self.customer,
            valid_until=self.validity,
        )

    @classmethod
    def from_placement(cls, p: Placement) -> Delivered:
        return cls(
            customer=p.ref,
            record=p.sent_hash,
            call_at=p.schedule,
            phone1=p.number,
            validity=p.valid_until,
        )


def record_digest(record: dict[str, str]) -> str:
    """Return the digest of a customerRecord that tells whether Ameyo holds it already."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:20]


class Ledger:
    """One Ameyo sink's records of what it delivered."""

    def __init__(self, store: SinkLedger, sink: str) -> None:
        self.store = store
        self.sink = sink

    async def delivered(self, key: str) -> Delivered | None:
        """Return what was last delivered for ``key``, None if nothing is known."""
        row = await self.store.ledger_get(self.sink, key)
        if row is None or row.placement is None:
            return None
        return Delivered.from_placement(row.placement)

    async def record(self, key: str, delivered: Delivered) -> None:
        await self.record_many([(key, delivered)])

    async def record_many(self, deliveries: Sequence[tuple[str, Delivered]]) -> None:
        """Note each (key, delivered), one transaction for them all. No number index:
        Ameyo's outcomes come by customer, not by number."""
        if deliveries:
            await self.store.ledger_place_many(
                self.sink, [(key, d.to_placement(), ()) for key, d in deliveries]
            )
