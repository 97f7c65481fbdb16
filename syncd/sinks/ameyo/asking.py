"""Which delivered customers an outcome poll asks Ameyo about: by need, not all of them.

``getContacts`` answers only for the customer ids it is given, so a poll asking about
every lead ever delivered costs what the store holds (issue 30: 14 s polls after half
an hour of a soak). A poll asks about a lead:

- new to this process, or delivered again since it was last asked (the sink delivered
  it here, or its stored version changed): at once;
- whose calling window closes (its validityTime, the lead's ``dial_until``) around now:
  at every poll from ``CLOSE_MARGIN_S`` before the close until one asked it
  ``CLOSE_MARGIN_S`` after it. The expired-lead check (``requeue_expired``, after a poll
  that went through) trusts such a poll to have seen every call placed before it
  started; the margin covers a shared store's clock being ahead of ours and a call's
  record written a moment after the close;
- otherwise at growing gaps: the poll interval after its first answer, doubling at
  each answer up to ``MAX_GAP_S`` (a redial or a callback comes minutes or hours
  after a call, not seconds); at most ``REASK_CHUNKS`` chunks of these a poll, the
  longest overdue first, so a poll costs what is new however large the store;
- never again once its outcome is final (``connected`` or ``closed``, the status map
  included) and said so twice alike (the agent's disposition may follow the call's
  status): Ameyo dials such a customer no more unless syncd delivers it again.

The state is in memory, per process: the store has no batched read of a per-lead due
time (the sink ledger is read one lead at a time) and no migration adds one. A reload
keeps it (``kept``: the sink objects it builds anew find it beside the open store).
After a restart every delivered lead is asked once, then spread out again. A lead that
leaves the delivered leads (withdrawn, removed, queued again) is forgotten. Pure decisions:
the poll (``outcomes.py``) does the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from weakref import WeakKeyDictionary

from syncd.core.model import CallStatus

MAX_GAP_S = 300.0  # the longest a lead whose outcome may still change goes unasked
REASK_CHUNKS = 4  # chunks of re-asks (not new, not closing leads) per poll at most
CLOSE_MARGIN_S = 30.0  # see the module docstring: asked around its close until after it
FINAL = frozenset({CallStatus.CONNECTED.value, CallStatus.CLOSED.value})


@dataclass(slots=True)
class Watched:
    """What this process knows of one delivered lead's asking."""

    customer: str | None
    version: int | None  # of (customer, lead_json) as last walked; None: pushed here, not walked
    due: float = 0.0  # when a re-ask is due (0: at the next poll)
    gap: float = 0.0  # the wait that set ``due``
    asked_at: float | None = None  # when a poll last had its answer (None: never here)
    close: float | None = None  # its validityTime (epoch), None: none
    close_known: bool = False  # close set from a push here or read from the ledger
    final: bool = False
    answer: int | None = None  # a digest of what getContacts last said of its customer


@dataclass(frozen=True, slots=True)
class Picked:
    """The leads one poll asks about: those it must, and the re-asks its budget allows."""

    must: list[str]  # new, delivered again, or around their close
    reask: list[str]  # due at their gap, longest overdue first
    waiting: int  # re-asks due but left to later polls (over the budget)


class Watchlist:
    """Per lead, when an Ameyo sink's outcome poll asks about it next."""

    def __init__(self, first_gap: float, *, max_gap: float = MAX_GAP_S) -> None:
        self.first_gap = max(first_gap, 1.0)
        self.max_gap = max(max_gap, self.first_gap)
        self.leads: dict[str, Watched] = {}

    def delivered(self, key: str, customer: str | None, close: float | None) -> None:
        """The sink delivered ``key`` in this process: ask at the next poll, know its close."""
        self.leads[key] = Watched(customer, None, close=close, close_known=True)

    def walked(self, key: str, customer: str | None, version: int) -> None:
        """The poll's walk found ``key`` delivered, as ``version`` of its stored lead."""
        held = self.leads.get(key)
        if held is None or (held.version is not None and held.version != version):
            # New here, or changed since (delivered again by another process): from scratch
            self.leads[key] = Watched(customer, version)
        elif held.version is None:  # pushed here: keep what the push knew
            held.version, held.customer = version, customer

    def forget_others(self, walked: set[str]) -> int:
        """Forget leads the walk did not find delivered; return how many."""
        gone = [key for key in self.leads if key not in walked]
        for key in gone:
            del self.leads[key]
        return len(gone)

    def closing(self, lead: Watched, now: float) -> bool:
        """Return True when ``lead``'s close is near enough that this poll must ask it."""
        if lead.close is None or lead.final or lead.close - CLOSE_MARGIN_S > now:
            return False
        return lead.asked_at is None or lead.asked_at < lead.close + CLOSE_MARGIN_S

    def pick(self, now: float, chunk: int) -> Picked:
        """Return the leads a poll at ``now`` asks about, ``chunk`` customers a request."""
        must: list[str] = []
        due: list[tuple[float, str]] = []
        for key, lead in self.leads.items():
            if lead.customer is None or lead.final:
                continue
            if lead.asked_at is None or self.closing(lead, now):
                must.append(key)
            elif lead.due <= now:
                due.append((lead.due, key))
        due.sort()
        budget = REASK_CHUNKS * chunk
        return Picked(must, [k for _, k in due[:budget]], max(0, len(due) - budget))

    def answered(self, key: str, now: float, answer: int | None, status: str | None) -> None:
        """A poll at ``now`` had Ameyo's ``answer`` about ``key``'s customer."""
        lead = self.leads.get(key)
        if lead is None:
            return
        first = lead.asked_at is None
        gap = self.first_gap if first else min(lead.gap * 2, self.max_gap)
        # Final once a final status is said twice alike: the agent's disposition may come
        # after the call's status (wrap-up), and it is asked for once more at the gap.
        lead.final = status in FINAL and not first and answer == lead.answer
        lead.gap, lead.due, lead.asked_at, lead.answer = gap, now + gap, now, answer

    def close_unknown(self) -> list[str]:
        """Return the leads answered, not final, whose close this process does not know."""
        return [
            key
            for key, lead in self.leads.items()
            if lead.asked_at is not None and not lead.final and not lead.close_known
        ]

    def set_close(self, key: str, close: float | None) -> None:
        lead = self.leads.get(key)
        if lead is not None:
            lead.close, lead.close_known = close, True


# By the open store (a reload keeps the daemon's; a new process or `run --once` pass
# opens its own), then (sink, dialer, campaign, lead): what this process asked
_KEPT: WeakKeyDictionary[object, dict[tuple[str, str, int, int], Watchlist]] = WeakKeyDictionary()


def kept(
    store: object, sink: str, url: str, campaign: int, lead: int, first_gap: float
) -> Watchlist:
    """Return the watchlist of the sink's leads at that Ameyo campaign lead kept with
    ``store``: a reload builds the sink anew on the same open store, and asking about
    every delivered lead again would cost one poll what the store holds. A new one when
    the store was opened anew or anything of that key changed."""
    kept_here = _KEPT.setdefault(store, {})
    key = (sink, url, campaign, lead)
    watch = kept_here.get(key)
    if watch is None:
        watch = kept_here[key] = Watchlist(first_gap)
    else:
        watch.first_gap = max(first_gap, 1.0)  # a reload may change the poll interval
        watch.max_gap = max(MAX_GAP_S, watch.first_gap)
    return watch


def forget_kept() -> None:
    """Forget every kept watchlist, as a new process starts with none (tests: a restart)."""
    _KEPT.clear()
