"""Vendor-neutral records that move between the stages."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MAX_KEY_LEN = 128  # a lead's (or an agent's login's) key: longer is refused, never cut


@dataclass(slots=True)
class Lead:
    """One person to call, in canonical form."""

    key: str
    phone: str  # E.164
    alt_phones: tuple[str, ...] = ()
    first_name: str = ""
    last_name: str = ""
    email: str = ""
    call_at: datetime | None = None  # UTC
    agent: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    deleted: bool = False
    zone: str = ""  # the lead's time zone from the CRM (the gate's calling window); never sent
    withdrawn: str = ""  # a removal the safety gate asked for: its reason code ("dnc_crm")
    # numbers of the row left out of the record, each with why (never sent)
    notes: tuple[str, ...] = ()
    # When the person's consent runs out (UTC; a consent date plus the policy's
    # consent_max_age_days): checked again at push and while the dialer holds the lead.
    consent_until: datetime | None = None
    # The CRM's change time of the row this lead came from (UTC; the route's
    # ``map.updated_at``): a row older than it is not applied (core.versions). Stored
    # with the lead, never sent, and left out of its content hash.
    version_at: datetime | None = None

    def _extra(self) -> dict[str, Any]:
        """Return the fields written only when set: a lead without them keeps the text
        (and hash) it always had."""
        extra: dict[str, Any] = {"zone": self.zone} if self.zone else {}
        if self.withdrawn:
            extra["withdrawn"] = self.withdrawn
        if self.notes:
            extra["notes"] = list(self.notes)
        if self.consent_until is not None:
            extra["consent_until"] = consent_text(self.consent_until)
        if self.version_at is not None:
            extra["version_at"] = version_text(self.version_at)
        return extra

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict; the inverse of :meth:`from_json`."""
        return {
            "key": self.key,
            "phone": self.phone,
            "alt_phones": list(self.alt_phones),
            "first_name": self.first_name,
            "last_name": self.last_name,
            "email": self.email,
            "call_at": self.call_at.isoformat() if self.call_at else None,
            "agent": self.agent,
            "fields": self.fields,
            "deleted": self.deleted,
            **self._extra(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Lead:
        """Return the Lead that :meth:`to_json` produced."""
        call_at = data.get("call_at")
        consent_until = data.get("consent_until")
        version_at = data.get("version_at")
        return cls(
            key=data["key"],
            phone=data.get("phone", ""),
            alt_phones=tuple(data.get("alt_phones") or ()),
            first_name=data.get("first_name", ""),
            last_name=data.get("last_name", ""),
            email=data.get("email", ""),
            call_at=datetime.fromisoformat(call_at) if call_at else None,
            agent=data.get("agent", ""),
            fields=dict(data.get("fields") or {}),
            deleted=bool(data.get("deleted", False)),
            zone=str(data.get("zone") or ""),
            withdrawn=str(data.get("withdrawn") or ""),
            notes=tuple(data.get("notes") or ()),
            consent_until=datetime.fromisoformat(consent_until) if consent_until else None,
            version_at=datetime.fromisoformat(version_at) if version_at else None,
        )


def consent_text(moment: datetime) -> str:
    """Return a consent expiry as stored: UTC, whole seconds, one fixed width.

    The stores compare these texts (``consent_expired``): one shape makes text order
    time order, whatever the database's collation.
    """
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


def version_text(moment: datetime) -> str:
    """Return a version time as stored: UTC, to the microsecond the CRM wrote (two rows a
    fraction of a second apart are two versions). Compared as times, never as text."""
    return moment.astimezone(UTC).isoformat()


class Action(enum.StrEnum):
    """What the sink must do with a queued lead."""

    UPSERT = "upsert"
    DELETE = "delete"


class LeadState(enum.StrEnum):
    """Where a lead stands for one sink."""

    PENDING = "pending"  # in the outbox, waiting to be pushed
    INFLIGHT = "inflight"  # claimed by a push worker (leased)
    HELD = "held"  # the safety gate holds it (outside its calling window) until next_at
    DELIVERED = "delivered"
    REJECTED = "rejected"  # refused by the dialer for this record, with a reason
    FAILED = "failed"  # attempts exhausted: a dead letter, see `syncd retry`
    REMOVED = "removed"  # deleted from the dialer


@dataclass(slots=True)
class QueuedLead:
    """A lead claimed from the outbox for one push."""

    sink: str
    key: str
    hash: str
    action: Action
    lead: Lead
    attempts: int
    vendor_ref: str | None = None  # the dialer's own id once known (Ameyo customerId)
    delivered_hash: str | None = None  # what the dialer held before this push, if anything
    # Set by the push for a lead the calling window allows now: when the opening it is
    # pushed in closes (UTC; None: no window, or one that never closes), and the zones it
    # was decided in. A sink that can holds the dialer to it (core.window_hold).
    dial_until: datetime | None = None
    dial_zones: tuple[str, ...] = ()
    # The token of the claim that took it (fencing): its results, requeues and lease
    # renewals apply only while the lead still carries it. None: taken outside a claim.
    claim: str | None = None
    # Where and when this version was read (the store's commit of it: a POST's receipt,
    # a pull's chunk): the speed-to-lead histogram counts from there to the dialer.
    source: str = ""
    read_at: float | None = None


class ResultKind(enum.StrEnum):
    DELIVERED = "delivered"
    REJECTED = "rejected"  # permanent for this record
    RETRY = "retry"  # transient; back to the outbox with backoff


@dataclass(slots=True)
class PushResult:
    """The outcome of pushing one queued lead."""

    key: str
    kind: ResultKind
    reason: str = ""
    vendor_ref: str | None = None
    retry_after: float | None = None
    reply: str = ""  # what the dialer answered for this lead (ADDED, statuscode 001…)
    deferred: bool = False  # a retry for syncd's own delay (cdr_delay_s), not a dialer failure
    # a retry the dialer answered with a failure: it took nothing, so the lead is not in
    # doubt (an unanswered request may have been stored: StoredLead.in_doubt)
    answered: bool = False
    # Set by a sink whose dialer still holds the lead under a former number of it that
    # the sink cannot close (a second record the dialer made when the number changed):
    # what the operator does about it, in the sink's words, with no number in it. The
    # engine keeps it as an alert until acknowledged (syncd.run.numbers_left).
    left_open: str = ""

    @classmethod
    def delivered(cls, key: str, vendor_ref: str | None = None, reply: str = "") -> PushResult:
        return cls(key, ResultKind.DELIVERED, vendor_ref=vendor_ref, reply=reply)

    @classmethod
    def rejected(cls, key: str, reason: str) -> PushResult:
        return cls(key, ResultKind.REJECTED, reason=reason)

    @classmethod
    def retry(
        cls, key: str, reason: str, retry_after: float | None = None, *, answered: bool = False
    ) -> PushResult:
        return cls(key, ResultKind.RETRY, reason=reason, retry_after=retry_after, answered=answered)

    @classmethod
    def defer(cls, key: str, reason: str, wait_s: float) -> PushResult:
        """Return a retry after ``wait_s`` that syncd itself chose: the dialer did not fail."""
        return cls(key, ResultKind.RETRY, reason=reason, retry_after=wait_s, deferred=True)


class CallStatus(enum.StrEnum):
    """The vendor-neutral call status every sink maps its vocabulary onto."""

    PENDING = "pending"  # queued at the dialer, not dialled yet
    CONNECTED = "connected"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    FAILED = "failed"  # network / invalid number / SIT tones
    DROPPED = "dropped"
    SCHEDULED = "scheduled"  # a callback is pending
    CLOSED = "closed"  # the dialer will not call again
    UNKNOWN = "unknown"


@dataclass(slots=True)
class Outcome:
    """What a dialer reports for a lead."""

    sink: str
    key: str
    observed_at: datetime  # UTC, when syncd saw it
    status: str = CallStatus.UNKNOWN.value
    raw_status: str = ""
    disposition: str = ""
    attempts: int | None = None
    last_dialed_at: datetime | None = None
    agent: str = ""
    call_id: str = ""
    recording_url: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class AgentStatus:
    """An agent's current status at a dialer."""

    sink: str
    login: str
    status: str
    description: str = ""
    duration_s: int | None = None
    changed_at: datetime | None = None
    observed_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Reject:
    """A source row that could not become a lead, with the reason."""

    source: str
    reason: str
    line: int | None = None  # 1-based physical line of the row's start, for files
    origin: str = ""  # the file name or table the row came from
    row: dict[str, str] | list[str] = field(default_factory=dict)
    key: str = ""
    facts: str = ""  # a safety-gate block: the audit's facts (syncd.core.audit.Facts JSON)


@dataclass(slots=True)
class StoredLead:
    """What the store knows of one (sink, key) when reconciling."""

    hash: str
    raw_hash: str | None
    state: str
    origin: str | None
    line: int | None
    run_id: str | None
    klass: str | None
    delivered: bool = False  # the dialer has held some version of this lead
    version_at: str | None = None  # the CRM's change time of the stored version (version_text)
    # Never delivered, but a version was sent and its answer never came (a timeout, a
    # reset): the dialer may hold it. ``attempted``: that version's number, by which a
    # removal names the record there.
    in_doubt: bool = False
    attempted: str | None = None


@dataclass(slots=True)
class LeadWrite:
    """One lead entering (or refreshing) the outbox."""

    key: str
    hash: str
    raw_hash: str | None
    lead_json: str
    action: Action
    klass: str  # new | changed | deleted | unchanged (raw text changed, content did not)
    line: int | None
    enqueue: bool = True  # False: refresh raw_hash/origin only
    state: str = "pending"  # "removed" for a delete of a lead the dialer never had
    # a refresh (enqueue False) of a row with a version time: set in the stored lead's
    # JSON, which is otherwise kept (a newer version of the same content)
    version_at: str | None = None
