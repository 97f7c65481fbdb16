"""The state store's interface and the records it exchanges.

Everything that crosses a stage boundary goes through here, durably: a crash
anywhere resumes from what the store says.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from syncd.core.clock import Clock
from syncd.core.feed import FeedCounts
from syncd.core.model import (
    Action,
    AgentStatus,
    LeadWrite,
    Outcome,
    QueuedLead,
    Reject,
    ResultKind,
    StoredLead,
)
from syncd.core.numbers import Holder
from syncd.core.refusals import Refusal
from syncd.state.ledger import SinkLedger


@dataclass(slots=True)
class ChunkWrite:
    """Everything one source chunk produced, committed in one transaction."""

    run_id: str
    source: str
    origin: str
    leads: dict[str, list[LeadWrite]] = field(default_factory=dict)  # per sink
    rejects: list[tuple[str, Reject]] = field(default_factory=list)  # (sink or "", reject)
    cursor: str | None = None
    # When the source received the chunk (a POST; epoch): its leads' versions count as
    # read then, not at this commit (speed to lead from receipt, a queued POST included)
    received_at: float | None = None
    dnc: list[tuple[str, str]] = field(default_factory=list)  # (list, E.164) added
    dnc_checked: str | None = None  # this list's new numbers were matched against the leads
    # A snapshot list's next version: numbers staged (list, E.164) beside the version in
    # force; dnc_restage empties that list's stage first (a new file, or a failed one)
    dnc_staged: list[tuple[str, str]] = field(default_factory=list)
    dnc_restage: str | None = None
    dnc_version: DncVersion | None = None  # a file read whole: recorded (snapshot: switched to)
    # Leads blocked by a list, kept so they come back when their numbers leave it
    dnc_blocked: list[BlockedLead] = field(default_factory=list)
    dnc_unblocked: list[tuple[str, str]] = field(default_factory=list)  # (sink, key): not now
    # Refusals remembered (sink, refusal): a row read again unchanged is refused from them
    refused: list[tuple[str, Refusal]] = field(default_factory=list)
    # sink, key, kind, detail, facts (the audit's facts of a gate decision, or "")
    events: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    # (name, metric, n) added to this hour's stats: a POST's counts under its source's
    # name (HANDED_STATS), beside the sinks' figures
    stats: list[tuple[str, str, int]] = field(default_factory=list)
    # The leader's job the write belongs to (a pull's `pull:<source>`): on a store
    # replicas share it commits only while this process leads that job. One that froze
    # past its lead while another took the job over writes nothing (LeadLost): its
    # cursor would move the source back, its files be read or failed twice.
    lead: str | None = None


@dataclass(frozen=True, slots=True)
class ListedLead:
    """A lead holding a number just added to a do-not-call list."""

    sink: str
    key: str
    state: str
    delivered: bool  # the dialer has held some version of it
    raw_hash: str | None
    number: str
    hash: str = ""  # the lead as stored: what comes back if the number leaves the list
    lead_json: str = ""
    # never delivered, but a version was sent whose answer never came: its number (the
    # dialer may hold it under that number)
    doubt_number: str | None = None


@dataclass(frozen=True, slots=True)
class ExpiredLead:
    """A lead a dialer holds (some version of it) whose consent has run out."""

    sink: str
    key: str
    state: str
    raw_hash: str | None
    consent_until: str  # as stored in the lead (``core.model.consent_text``)
    lead_json: str


@dataclass(frozen=True, slots=True)
class BlockedLead:
    """A lead a do-not-call list keeps from the dialers, as it would be sent without it."""

    sink: str
    key: str
    list: str
    hash: str
    raw_hash: str | None
    lead_json: str


@dataclass(frozen=True, slots=True)
class DncVersion:
    """One file of a do-not-call list, as loaded (a whole version in snapshot mode)."""

    list: str
    file: str
    rows: int  # data lines read
    numbers: int  # distinct numbers listed once it is in force
    file_date: float  # the registry copy's date: from the file name, else its mtime
    sha256: str
    mode: str = "append"
    added: int = 0  # numbers new to the list
    removed: int = 0  # numbers no longer listed (snapshot)
    loaded_at: float = 0.0
    version: int = 0


@dataclass(slots=True)
class Completion:
    """The store-side effect of one push result."""

    key: str
    pushed_hash: str
    kind: ResultKind
    reason: str = ""
    vendor_ref: str | None = None
    next_at: float | None = None  # for RETRY: when to try again
    final: bool = False  # for RETRY: attempts exhausted, becomes FAILED
    reply: str = ""  # the dialer's answer for this lead, kept in its history
    facts: str = ""  # the audit's facts of this push (syncd.core.audit.Facts JSON)
    # for DELIVERED: when the calling-window opening it went in closes (epoch; None: no
    # window). A sink that withdraws at the close finds it there (``window_closed``).
    dial_until: float | None = None
    # The token of the claim the push was made under (QueuedLead.claim): applied only
    # where the lead still carries it; a stale result is dropped. None: by key alone.
    claim: str | None = None
    # for RETRY of an upsert: the number sent, its answer lost (in doubt). Should the CRM
    # have deleted the lead meanwhile, its queued removal names the record by it.
    attempted: str = ""
    # for RETRY: False when syncd itself chose to wait (PushResult.defer: a lead in doubt
    # settling, call records not in yet): no try at the dialer, so its attempt is given back
    spent: bool = True


STATS_BUCKET_S = 3600.0  # the status page's charts: one figure per sink, metric and hour
# A webhook source's hourly figures, kept in stats under the source's name: its POSTs
# committed, and their rows accepted and refused (status shows them, no lead data)
HANDED_STATS = ("posts", "accepted", "refused")


def stats_hour(at: float) -> float:
    """Return the start of the hour ``at`` falls in (the key of its stats)."""
    return at - at % STATS_BUCKET_S


# The kv scopes `syncd status` reads, named beside the store: reading them does not load
# the engine and the writeback runner that write them (nor the dialers' clients).
HEALTH_SCOPE = "engine.sinks"  # each sink's last known state (the engine's)
POLLED_SCOPE = "polled"  # per sink, when its last poll that went through started
WRITEBACK_STATUS_SCOPE = "writeback.status"  # a writeback's last pass: counts, the error


# How a removal the dialer refused begins its reason: the number stays dialable, so it is
# an alert (``failing_withdrawals``) from the first refusal, not after max_attempts.
WITHDRAWAL_REFUSED = "the dialer refused the withdrawal"

# The stages of a lead whose calling window closed while a dialer held it (run.window).
CLOSED = "closed"  # delivered; its opening has closed: to be withdrawn
WITHDRAWN = "withdrawn"  # the withdrawal landed: to be held for the next opening
RETURNING = "returning"  # held for its return and due now: sent again unless dialled


@dataclass(frozen=True, slots=True)
class WindowLead:
    """A lead of a sink that withdraws at the window's close (see ``window_closed``)."""

    key: str
    stage: str  # CLOSED | WITHDRAWN | RETURNING
    lead_json: str
    dialled: bool  # a final outcome (connected, closed) came in after its delivery


@dataclass(slots=True)
class WindowMoves:
    """What one pass of ``syncd.run.window`` does to a sink's leads, in one transaction."""

    # (key, lead_json marked withdrawn, reason, facts): delivered leads whose removal is
    # queued, for the window's close or for consent that ran out before it
    withdraw: list[tuple[str, str, str, str]] = field(default_factory=list)
    # (key, lead_json as it was, until, reason, facts): held until the next opening
    back: list[tuple[str, str, float, str, str]] = field(default_factory=list)
    # (key, reason, facts): dialled to a final result: neither withdrawn nor sent again
    done: list[tuple[str, str, str]] = field(default_factory=list)
    # (key, reason, facts): withdrawn for consent that ran out: a refusal `syncd rejects`
    # lists, as the consent stage's are (run, source and origin: ``refused_as``)
    refused: list[tuple[str, str, str]] = field(default_factory=list)
    refused_as: tuple[str, str, str] = ("", "", "")


@dataclass(frozen=True, slots=True)
class QueuedSummary:
    """One lead waiting in a sink's outbox, as a dry run reports it."""

    key: str
    action: Action
    delivered: bool  # the dialer holds an older version (an update, not a create)


@dataclass(frozen=True, slots=True)
class SchemaState:
    """The store's schema as `syncd status` shows it (syncd/state/migrations)."""

    at: int  # the steps the store has applied
    knows: int  # the steps this syncd ships
    edited: list[str] = field(default_factory=list)  # steps edited after release: warnings


class Lifecycle(Protocol):
    """The store's life: open it, close it; where it is and whose clock it keeps."""

    path: str
    # The clock stored times are read from: the host's for SQLite, the database's for
    # a shared store (every replica stamps and compares times on one clock).
    clock: Clock

    async def open(self) -> None: ...
    async def close(self) -> None: ...


class LeadLookup(Protocol):
    """The stored version of leads by key (a pull's diff; a sink matching its dialer's
    records to leads)."""

    async def lookup(self, sink: str, keys: Sequence[str]) -> dict[str, StoredLead]: ...


class PullLedger(LeadLookup, Protocol):
    """What a pull reads and commits: cursors, the stored version of each key, remembered
    refusals, a chunk's writes; do-not-call lists."""

    async def get_cursor(self, source: str) -> str | None: ...
    async def set_cursor(self, source: str, value: str | None) -> None: ...
    async def lookup_changed(
        self, sink: str, rows: Sequence[tuple[str, str]], origin: str
    ) -> dict[str, StoredLead | None]:
        """Return the keys of ``(key, raw_hash)`` rows that need reconciling.

        A key is left out when its stored lead came from a byte-identical row of
        another file: it is unchanged. Unknown keys map to None.
        """
        ...

    async def refusals(self, sink: str, keys: Sequence[str]) -> dict[str, Refusal]:
        """Return the remembered refusal of each of ``keys`` that has one (the last; see
        ``syncd.core.refusals``): whether it still holds is the caller's to decide."""
        ...

    async def apply_chunk(self, chunk: ChunkWrite) -> None: ...
    async def apply_chunks(self, chunks: Sequence[ChunkWrite]) -> None:
        """Commit chunks whose keys do not overlap in one transaction."""
        ...

    async def rejects_for_origin(
        self, source: str, origin: str
    ) -> list[tuple[int | None, str, str, str]]: ...
    async def dnc_matches(self, lists: Sequence[str], numbers: Sequence[str]) -> dict[str, str]:
        """Return, of ``numbers``, those on one of ``lists``: number -> the list."""
        ...

    async def listed_leads(self, list_name: str) -> list[ListedLead]:
        """Return the leads holding a number newly added to the list (main or alternate)."""
        ...

    async def dnc_staged_count(self, list_name: str) -> int:
        """Return how many numbers the snapshot being read for ``list_name`` holds so far."""
        ...

    async def dnc_versions(self, list_name: str, limit: int = 20) -> list[DncVersion]:
        """Return the list's recorded versions (files loaded), newest first."""
        ...

    async def dnc_staged_origin(self, list_name: str) -> str | None:
        """Return the file whose numbers are staged for the list's next version, if any."""
        ...

    async def blocked_leads(self, list_name: str) -> list[BlockedLead]:
        """Return the leads the list keeps from the dialers (see ``ChunkWrite.dnc_blocked``)."""
        ...


class Outbox(Protocol):
    """What the push, the calling window and consent stages do with queued leads: claim,
    complete, hold, requeue, withdraw."""

    # The lease of a claim, when the store caps it shorter than the push asks (a shared
    # store: a dead replica's claims come back sooner). None: the push's own.
    lease_s: float | None

    async def release_inflight(self, sink: str | None = None) -> int: ...
    async def claim(self, sink: str, limit: int, lease_s: float) -> list[QueuedLead]:
        """Take up to ``limit`` due leads of ``sink`` for one push, leased for ``lease_s``
        (or the store's shorter lease), under one new claim token (``QueuedLead.claim``)."""
        ...

    async def complete(self, sink: str, completions: Sequence[Completion]) -> list[str]:
        """Write a push's results; return the keys whose result was stale (their claim
        was taken over since: another replica's result stands) and was dropped."""
        ...

    async def still_claimed(self, sink: str, claim: str, keys: Sequence[str]) -> set[str]:
        """Return the ``keys`` still in flight under ``claim`` with a lease not run out."""
        ...

    def settle(self, claim: str | None) -> None:
        """The push of ``claim`` is over (its results written, or given up): a shared
        store's heartbeat no longer renews its leases, so what was not written lapses."""
        ...

    async def next_due(self, sink: str) -> float | None: ...
    async def pending_count(self, sink: str | None = None) -> int: ...
    async def requeue(
        self,
        sink: str,
        keys: Sequence[str],
        next_at: float,
        reason: str,
        *,
        claim: str | None = None,
    ) -> None: ...
    async def hold(
        self,
        sink: str,
        holds: Sequence[tuple[str, float, str]],
        facts: Mapping[str, str] | None = None,
        *,
        claim: str | None = None,
    ) -> None:
        """Hold claimed leads (key, until, reason): not pushed, not an attempt, until then.

        ``facts``: by key, the audit's facts of each hold, written with it."""
        ...

    async def feed_counts(
        self, sink: str, *, reached_since: float, delivered_since: float, now: float
    ) -> FeedCounts:
        """Return what ``sink``'s dialer reached since ``reached_since`` and still holds
        of what was delivered since ``delivered_since`` (``syncd.core.feed``)."""
        ...

    async def number_holders(
        self,
        sink: str,
        numbers: Sequence[str],
        *,
        alternates: bool = False,
        besides: Collection[str] = (),
    ) -> list[Holder]:
        """Return the sink's leads queued for or held by the dialer under ``numbers``,
        but for the leads keyed ``besides`` (a push's own batch: it holds its numbers)."""
        ...

    async def queued_removals(self, sink: str, limit: int = 10_000) -> list[QueuedLead]:
        """Return the sink's removals of delivered leads not landed yet (pending/held)."""
        ...

    async def set_aside(
        self,
        sink: str,
        waits: Sequence[tuple[str, float, str, str]],
        facts: Mapping[str, str] | None = None,
        *,
        claim: str | None = None,
    ) -> None:
        """Hold claimed leads (key, until, reason, key waited for) behind another lead."""
        ...

    async def release_waiting(self, sink: str, keys: Sequence[str]) -> int:
        """Return to the outbox the leads held behind any of ``keys``; return how many."""
        ...

    async def requeue_expired(
        self, sink: str, now: float, reason: str, closed_by: float | None = None
    ) -> int:
        """Return to the outbox the delivered leads whose ``dial_until`` passed undialled.

        For a dialer that stops dialling a record at its expiry (``WindowHold.close``
        "expiry"): a lead it did not dial between its delivery and that close would
        never ring again, so it is sent again (the gate holds it until the next opening).
        "Dialled" is an outcome that finished it (connected, closed) or one dialled at or
        after the delivery. Return how many.
        ``closed_by``: only leads whose close came by then (default ``now``).
        """

    async def window_closed(self, sink: str, now: float, limit: int = 500) -> list[WindowLead]:
        """Return up to ``limit`` leads of ``sink`` the window's close concerns (``WindowLead``):
        delivered ones whose ``dial_until`` is before ``now``, withdrawals of them that
        landed, and those held for their return whose time has come."""
        ...

    async def move_window(self, sink: str, moves: WindowMoves) -> int:
        """Apply ``moves`` (each only to a lead still in the stage it was read in), with
        their events: ``gate.withdrawn``, ``gate.held``, ``gate.not_returned``; return how
        many more leads the outbox (pending or held) holds for it."""
        ...

    async def release_held(self, sink: str, now: float) -> int:
        """Return held leads whose time has come to the outbox; return how many."""
        ...

    async def release_held_for(self, sink: str, reason: str) -> int:
        """Return how many held leads whose hold reason starts with ``reason`` were released."""
        ...

    async def held(self, sink: str) -> tuple[int, float | None]:
        """Return how many leads of ``sink`` are held and when the first is released."""
        ...

    async def retry_failed(
        self, sink: str, *, reason: str | None = None, key: str | None = None
    ) -> int: ...
    async def consent_expired(
        self, sinks: Sequence[str], now: float, limit: int = 1000
    ) -> list[ExpiredLead]:
        """Return up to ``limit`` leads of ``sinks`` a dialer holds (some version delivered,
        not withdrawn) whose ``consent_until`` is at or before ``now``, earliest first."""
        ...


class Notes(Protocol):
    """A stage's own small state by name (kv), and events on a lead's history."""

    async def kv_get(self, scope: str, name: str) -> str | None: ...
    async def kv_many(self, scope: str, names: Sequence[str]) -> dict[str, str]:
        """Return the values of ``names`` in ``scope`` that are set: one look-up for a
        whole batch (a push's leads), not one per name."""
        ...

    async def kv_set(self, scope: str, name: str, value: str | None) -> None: ...
    async def kv_scan(self, scope: str, limit: int = 100) -> list[tuple[str, str]]:
        """Return up to ``limit`` (name, value) of ``scope``, by name (the key's prefix)."""
        ...

    async def add_event(self, sink: str, key: str, kind: str, detail: str) -> None: ...


class SinkStore(LeadLookup, Notes, SinkLedger, Protocol):
    """What a sink keeps of its dialer: outcomes and agents polled, its ledger, events on
    a lead, its own small state."""

    async def record_outcomes(self, outcomes: Iterable[Outcome]) -> int: ...
    async def recording_links(self, sink: str, keys: Sequence[str]) -> dict[str, tuple[str, str]]:
        """Return key -> (call id, recording link) of the stored outcomes that have a link."""
        ...

    async def delivered(
        self, sink: str, *, after_key: str = "", limit: int = 500
    ) -> list[tuple[str, str | None, str]]: ...
    async def record_agents(self, agents: Iterable[AgentStatus]) -> int: ...
    async def agent_dump(self) -> list[dict[str, Any]]: ...
    async def last_call(self, sink: str, key: str) -> dict[str, Any] | None:
        """Return the latest outcome polled for a lead (call_id, agent, status), None if none."""
        ...


class Reports(Protocol):
    """What `status`, `explain`, `audit`, the status page and the metrics read, and the
    runs they list."""

    async def counts(self) -> dict[str, dict[str, int]]: ...
    async def start_run(self, run_id: str, mode: str) -> None: ...
    async def finish_run(self, run_id: str, summary: dict[str, Any]) -> None: ...
    async def last_run(self) -> dict[str, Any] | None: ...
    async def record_run(
        self, run_id: str, mode: str, started_at: float, summary: dict[str, Any]
    ) -> None:
        """Record a finished run at once (a daemon's pull pass that read something)."""
        ...

    async def recent_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """Return the last ``limit`` runs, newest first; a daemon's pull pass (mode
        ``pull …``) with its leads delivered and refused now (``delivered_now``,
        ``refused_now``; None for other runs: their summaries count them)."""
        ...

    async def record_backlog(self, pending: Mapping[str, int]) -> None:
        """Keep, per sink, the largest outbox seen this hour (the status page's chart)."""
        ...

    async def stats_since(self, since: float) -> list[tuple[str, float, str, int, int]]:
        """Return the hourly stats from ``since``: (sink, hour, metric, bucket, n); metrics
        ``delivered``, ``pending`` (the hour's largest) and ``latency`` (counts per
        :mod:`syncd.core.latency` bucket). Deliveries are counted as pushes complete."""
        ...

    async def outcome_counts(self, since: float) -> dict[str, dict[str, Any]]:
        """Return per sink the outcomes held (``received``), those observed since
        ``since`` (``recent``) and the latest one's time (``last_at``)."""
        ...

    async def cursor_times(self) -> dict[str, tuple[str, float]]:
        """Return each source's cursor and when it was last written."""
        ...

    async def recent_rejects(self, limit: int = 10) -> list[dict[str, Any]]: ...
    def audit(self, since: float, until: float) -> AsyncIterator[dict[str, Any]]:
        """Yield, oldest first, every gate decision and push (at, sink, key, kind, detail,
        lead_json, facts, known: the lead's latest earlier facts naming its numbers) from
        ``since`` to ``until`` (epoch seconds)."""
        ...

    async def gate_counts(self) -> dict[str, dict[str, int]]:
        """Return, per sink, the gate's decisions counted by "blocked <code>" or "held <code>"."""
        ...

    async def run_rejects(self, run_id: str, limit: int = 10) -> list[dict[str, Any]]: ...
    def all_rejects(self, source: str | None = None) -> AsyncIterator[dict[str, Any]]: ...
    async def failure_reasons(self, limit: int = 10) -> list[tuple[str, str, int]]: ...
    def queued(self, sink: str) -> AsyncIterator[QueuedSummary]: ...
    async def lead_history(self, key: str) -> dict[str, Any]: ...
    async def outcome_dump(self) -> list[dict[str, Any]]: ...
    async def integrity_ok(self) -> bool: ...
    async def size_bytes(self) -> int:
        """Return the disk space the store takes (for the store-size metric and alert)."""
        ...

    async def prune(self, keep_s: Mapping[str, float], batch: int = 2000) -> dict[str, int]:
        """Return how many rows of each kind (events, rejects, runs) older than the seconds
        ``keep_s`` gives were deleted (by the store's clock), ``batch`` rows at a time."""
        ...

    async def schema_state(self) -> SchemaState:
        """Return the store's schema version, this syncd's, and steps edited after release."""
        ...

    async def oldest_pending(self) -> dict[str, float]: ...
    async def delivered_since(self, since: float) -> int: ...
    async def failing_withdrawals(self, min_attempts: int, limit: int = 20) -> list[dict[str, Any]]:
        """Return removals still queued after ``min_attempts`` tries, for alerts."""
        ...

    async def waiting(self, limit: int = 20) -> list[dict[str, Any]]:
        """Return leads held behind another lead of their number, for ``status``."""
        ...


class Leases(Protocol):
    """Replicas: who runs the jobs that must not run twice at once, who is alive, who
    queued leads."""

    async def lead(self, job: str, ttl_s: float) -> bool:
        """Return True when this process leads ``job`` (a store of one host: always)."""
        ...

    async def resign(self) -> None:
        """Give up every job this process leads."""
        ...

    async def heartbeat(self) -> None:
        """Say this process is alive (the replicas `syncd status` lists)."""
        ...

    async def replicas(self, within_s: float = 60.0) -> list[dict[str, Any]]:
        """Return the live replicas and what each leads ([] for a store of one host)."""
        ...

    async def listen(self, woken: Callable[[str], None]) -> None:
        """Call ``woken(sink)`` when another replica queues leads for ``sink``."""
        ...


class Writebacks(Protocol):
    """The outcome and agent versions not yet written to the CRM, and what was."""

    async def pending_writeback(
        self,
        writeback: str,
        what: str = "outcomes",
        *,
        sinks: Sequence[str] = (),
        after: tuple[str, str] = ("", ""),
        limit: int = 500,
    ) -> list[dict[str, Any]]: ...
    async def mark_written(
        self,
        writeback: str,
        marks: Sequence[tuple[str, str, int]],
        *,
        state: str | None = None,
        refused: str | None = None,
    ) -> None: ...
    async def refused_writebacks(self, writeback: str) -> list[tuple[str, int]]: ...
    async def retry_writeback(self, writeback: str, *, reason: str | None = None) -> int: ...


class StateStore(Lifecycle, PullLedger, Outbox, SinkStore, Reports, Leases, Writebacks, Protocol):
    """The whole store, as the engine opens it: SQLite, or PostgreSQL for replicas. A caller
    takes the part it uses (``Outbox``, ``Reports``…), so it sees only that."""
