"""The Ameyo simulator's contacts and dialing engine.

Customers live per campaign, keyed by ``phone1`` (Ameyo's upsert key). Time moves
lazily: every API request first calls :meth:`ContactFloor.advance`, which dials
what fell due since the last request, at most ``dials_per_tick`` customers every
``dial_every_s`` seconds. A new customer is due at once, a callback at its time, a
customer that did not connect again after ``redial_after_s`` until its lead's
``max_attempt``. Each dial sets status, attempts, disposition, last user and the
last dialled time, so that ``getContacts`` has real outcomes to report.

A customer uploaded with a ``validityTime`` is not dialled from then on (a callback or
redial falling later is dropped); an upload with a new one makes it dialable again
(due at once, unless a callback or redial is due later).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

OUTCOME_NAMES = ("CONNECTED", "NO_ANSWER", "BUSY", "CALL_DROP")
OUTCOME_WEIGHTS = (5.0, 2.0, 2.0, 1.0)
DISPOSITIONS = ("Sale", "Not Interested", "Call Back Later", "Foreign Language", "DNC")
FIRST_CUSTOMER_ID = 17821  # the document's first example


@dataclass
class LeadInfo:
    lead_id: int
    enabled: bool = True
    max_attempt: int = 10


@dataclass
class Customer:
    customer_id: int
    campaign_id: int
    lead_id: int
    data: dict[str, Any]
    status: str = "NOT_TRIED"
    attempts: int = 0
    disposition: str | None = None
    last_user_id: str | None = None
    last_dialed: float | None = None  # epoch seconds
    last_connected: float | None = None
    num_outbound_attempted: int = 0
    num_outbound_connected: int = 0
    uploads: int = 1  # how many times syncd (or anyone) uploaded this phone1
    due: float | None = None  # when the dialer will next call this customer
    callback_id: str | None = None  # the callback that made it due, if any
    valid_until: float | None = None  # validityTime: not dialled from then on (None: always)


@dataclass
class Callback:
    id: str
    campaign_id: int
    customer_id: int
    phone: str
    at: float
    user_id: str | None
    self_callback: bool
    done: bool = False


@dataclass
class ContactFloor:
    """Customers, callbacks and the dialer that works through them."""

    campaigns: dict[int, dict[int, LeadInfo]]
    rng: random.Random
    agents: tuple[str, ...] = ("agent1", "agent2")
    dialing: bool = True  # False: customers wait, nothing is dialled
    dial_every_s: float = 1.0
    dials_per_tick: int = 5
    redial_after_s: float = 60.0
    customers: dict[int, Customer] = field(default_factory=dict)
    callbacks: list[Callback] = field(default_factory=list)
    dials: int = 0
    _outcomes: Any = None  # an endless iterator of statuses, or None for a weighted draw
    _by_phone: dict[tuple[int, str], int] = field(default_factory=dict)
    _queue: list[tuple[float, int, int]] = field(default_factory=list)  # (due, seq, id)
    _ids: Any = field(default_factory=lambda: itertools.count(FIRST_CUSTOMER_ID))
    _seq: Any = field(default_factory=itertools.count)
    _engine_at: float = 0.0

    def set_outcomes(self, outcomes: Sequence[str] | None) -> None:
        """Cycle through ``outcomes`` for every dial (None: a weighted random draw)."""
        self._outcomes = itertools.cycle(outcomes) if outcomes else None

    def upsert(
        self,
        campaign_id: int,
        lead_id: int,
        record: dict[str, Any],
        *,
        update: bool,
        migrate: bool,
        now: float,
        valid_until: float | None = None,
    ) -> tuple[str, Customer]:
        """Return Ameyo's result type and the customer after uploading ``record``."""
        phone1 = str(record["phone1"]).strip()
        existing = self._by_phone.get((campaign_id, phone1))
        if existing is None:
            customer = Customer(next(self._ids), campaign_id, lead_id, dict(record))
            customer.valid_until = valid_until
            self.customers[customer.customer_id] = customer
            self._by_phone[(campaign_id, phone1)] = customer.customer_id
            self._make_due(customer, now)
            return "ADDED", customer
        customer = self.customers[existing]
        customer.uploads += 1
        if valid_until is not None:
            self._revalidate(customer, valid_until, now)
        moved = migrate and customer.lead_id != lead_id
        if update:
            customer.data.update(record)
        if moved:
            customer.lead_id = lead_id
        result = {
            (True, True): "UPDATED_AND_MIGRATED",
            (True, False): "UPDATED",
            (False, True): "MIGRATED",
            (False, False): "DUPLICATE_NOT_ADDED",
        }[(update, moved)]
        return result, customer

    def customer(self, campaign_id: int, customer_id: object) -> Customer | None:
        """Return the customer with this id in the campaign, if any."""
        try:
            found = self.customers.get(int(str(customer_id)))
        except ValueError:
            return None
        return found if found is not None and found.campaign_id == campaign_id else None

    def schedule(
        self, customer: Customer, when: float, phone: str, user_id: str | None, self_callback: bool
    ) -> Callback:
        """Return a new callback that makes ``customer`` due at ``when``."""
        cb = Callback(
            id=f"d431-cm-{len(self.callbacks) + 1}",
            campaign_id=customer.campaign_id,
            customer_id=customer.customer_id,
            phone=phone or str(customer.data.get("phone1", "")),
            at=when,
            user_id=user_id,
            self_callback=self_callback,
        )
        self.callbacks.append(cb)
        customer.callback_id = cb.id
        self._make_due(customer, when)
        return cb

    def _revalidate(self, customer: Customer, valid_until: float, now: float) -> None:
        """A new validityTime: a customer not finished becomes dialable again from now."""
        customer.valid_until = valid_until
        lead = self.campaigns[customer.campaign_id].get(customer.lead_id)
        finished = customer.status == "CONNECTED" or (
            lead is not None and customer.attempts >= lead.max_attempt
        )
        if not finished and (customer.due is None or customer.due < now):
            self._make_due(customer, now)

    def expired(self, customer: Customer, at: float) -> bool:
        """Return True when ``customer``'s validityTime has passed at ``at``."""
        return customer.valid_until is not None and at >= customer.valid_until

    def _make_due(self, customer: Customer, when: float) -> None:
        customer.due = when
        heapq.heappush(self._queue, (when, next(self._seq), customer.customer_id))

    def advance(self, now: float) -> None:
        """Dial what fell due up to ``now``, at most dials_per_tick per tick."""
        while self.dialing and self._queue:
            # Ticks only where there is work: an idle hour costs nothing.
            tick = max(self._engine_at + self.dial_every_s, self._queue[0][0])
            if tick > now:
                return
            dialled = 0
            while self._queue and self._queue[0][0] <= tick and dialled < self.dials_per_tick:
                due, _, customer_id = heapq.heappop(self._queue)
                customer = self.customers[customer_id]
                if customer.due != due:
                    continue  # superseded by a later callback or redial
                lead = self.campaigns[customer.campaign_id].get(customer.lead_id)
                if lead is None or not lead.enabled or self.expired(customer, tick):
                    customer.due = None  # a disabled lead list, or past its validityTime
                    continue
                self._dial(customer, tick, lead.max_attempt)
                dialled += 1
            self._engine_at = tick

    def _dial(self, c: Customer, at: float, max_attempt: int) -> None:
        if self._outcomes is not None:
            status = str(next(self._outcomes))
        else:
            status = self.rng.choices(OUTCOME_NAMES, OUTCOME_WEIGHTS)[0]
        agent = self.rng.choice(self.agents)
        if c.callback_id is not None:
            cb = next(cb for cb in self.callbacks if cb.id == c.callback_id)
            cb.done = True
            agent = cb.user_id or agent
            c.callback_id = None
        self.dials += 1
        c.attempts += 1
        c.num_outbound_attempted += 1
        c.status = status
        c.last_dialed = at
        c.due = None
        if status == "CONNECTED":
            c.num_outbound_connected += 1
            c.last_connected = at
            c.last_user_id = agent
            c.disposition = self.rng.choice(DISPOSITIONS)
        elif c.attempts < max_attempt:
            self._make_due(c, at + self.redial_after_s)
