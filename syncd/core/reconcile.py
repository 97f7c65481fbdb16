"""Reconcile: pure decisions, per lead and per chunk, against what the store holds.

No I/O here (hishel's rule): the engine feeds in stored state and applies the
decisions; tests check every case without fixtures.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from syncd.core.model import Action, LeadWrite, StoredLead, version_text
from syncd.core.raw_rows import RawRows
from syncd.core.repeats import later_line
from syncd.core.versions import is_older, older_reason, read_version, version_of


class Decision(enum.StrEnum):
    NEW = "new"  # never seen: push
    CHANGED = "changed"  # content differs from what we hold: push again
    UNCHANGED = "unchanged"  # same content: nothing to do
    DELETED = "deleted"  # deleted in the CRM (or left the filter) and the dialer may have it
    SKIPPED = "skipped"  # deleted, but the dialer never had it: nothing to remove


ACTIVE_STATES = {"pending", "inflight", "held"}
QUEUED_STATES = {"pending", "held"}  # in the outbox, unsent: a newer version replaces them
CANCELLED = "cancelled: deleted in the CRM before it was sent; the dialer never had it"


def decide(stored: StoredLead | None, content_hash: str, deleted: bool) -> Decision:
    """Return what to do with a candidate lead given the stored (sink, key) record."""
    if deleted:
        if stored is None or stored.hash == content_hash:
            return Decision.SKIPPED if stored is None else Decision.UNCHANGED
        # A version sent whose answer never came, or one on its way, may be in the
        # dialer: removed as if held (a removal of a lead it never got is settled then).
        held = stored.delivered or stored.in_doubt or stored.state == "inflight"
        return Decision.DELETED if held else Decision.SKIPPED
    if stored is None:
        return Decision.NEW
    if stored.hash == content_hash:
        return Decision.UNCHANGED
    return Decision.CHANGED


def raw_unchanged(stored: StoredLead | None, raw_hash: str) -> bool:
    """Return True when the raw row is byte-identical to the one that produced the stored lead.

    Such rows skip phone validation entirely: the costliest step of a re-sync.
    """
    return stored is not None and stored.raw_hash == raw_hash


@dataclass(frozen=True, slots=True)
class Superseded:
    """An earlier row of the same file that a later row with the same key replaces."""

    line: int | None
    counted_as: str | None  # the class it was counted under in this run, if any


def superseded_by(
    stored: StoredLead | None, origin: str, run_id: str, line: int
) -> Superseded | None:
    """Return the earlier row this one replaces when the key repeats within one file."""
    if stored is None or stored.origin != origin or stored.line is None or stored.line >= line:
        return None
    counted = stored.klass if stored.run_id == run_id else None
    return Superseded(stored.line, counted)


def decide_repeat(
    previous: str | None, stored: StoredLead, content_hash: str, deleted: bool
) -> Decision:
    """Return the decision for a repeated key: it inherits what the earlier row started.

    A key that was NEW in this file stays NEW however often it repeats: it is one lead.
    """
    if previous == Decision.NEW.value and not deleted:
        return Decision.NEW
    decision = decide(stored, content_hash, deleted)
    if decision is Decision.UNCHANGED and previous in (
        Decision.CHANGED.value,
        Decision.DELETED.value,
    ):
        return Decision(previous)
    return decision


# -- a whole chunk ---------------------------------------------------------------------
#
# The pull reconciles a chunk in two pure steps around its two costly ones:
#   lookup (I/O)  -> triage()  -> phone mapping (CPU, a process pool) -> plan_chunk()
# triage decides which rows need mapping at all; plan_chunk turns the mapped rows
# and the stored leads into writes, rejects and count changes. The pull applies the
# plan in one transaction. A route with a version column (map.updated_at) first sets
# aside the mapped rows older than the version held (older_rows), before anything
# else looks at them (do-not-call lists, the refusal memory, plan_chunk).

Row = tuple[int, list[str]]  # (line, values)
MappedRow = tuple[int, str, str | None, str | None, str | None, bool, str]
"""(line, key, lead_hash, lead_json, reject_reason, deleted, facts), as mapping returns them
(``facts``: the audit's facts of a gate decision, see ``syncd.core.audit``)."""


@dataclass(frozen=True, slots=True)
class RowReject:
    """A source row refused on its way to the sink, with the reason kept."""

    line: int | None
    key: str
    values: list[str]
    reason: str
    facts: str = ""  # a gate block: the audit's facts (syncd.core.audit.Facts JSON)


@dataclass
class Triage:
    """Which rows of a chunk need mapping, and what was settled without it."""

    to_map: list[Row] = field(default_factory=list)
    unchanged: int = 0  # byte-identical to the row that produced the stored lead
    rejects: list[RowReject] = field(default_factory=list)  # superseded inside the chunk


@dataclass
class Versions:
    """The mapped rows of a chunk split by their version time against the one held."""

    current: list[MappedRow] = field(default_factory=list)  # equal, newer, or undecided
    older: list[RowReject] = field(default_factory=list)  # not applied: superseded
    times: dict[int, str] = field(default_factory=dict)  # line -> version time (current rows)


def older_rows(
    mapped: list[MappedRow],
    rows_by_line: Mapping[int, list[str]],
    stored: Mapping[str, StoredLead | None],
    column: str,
) -> Versions:
    """Return the mapped rows split into those applied and those older than the version
    stored for their lead (same sink, same key), each of these a reject saying so.

    A row refused by mapping has no version and stays (it is refused as it was).
    """
    split = Versions()
    for row in mapped:
        line, key, _hash, lead_json = row[0], row[1], row[2], row[3]
        given = version_of(lead_json) if lead_json is not None else None
        previous = stored.get(key)
        held = read_version(previous.version_at) if previous is not None else None
        if given is not None and held is not None and is_older(given, held):
            reason = older_reason(column, given, held)
            split.older.append(RowReject(line, key, rows_by_line[line], reason))
            continue
        split.current.append(row)
        if given is not None:
            split.times[line] = version_text(given)
    return split


@dataclass
class ChunkPlan:
    """What one chunk does to one sink's outbox, and to the route's counts."""

    writes: list[LeadWrite] = field(default_factory=list)
    rejects: list[RowReject] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # bucket -> change (may be < 0)
    carried_requeued: int = 0  # leads left queued by an earlier run, queued anew here
    # versions counted as enqueued that leave the outbox unsent: a newer version of the
    # lead replaced them, or the CRM took the lead back (enqueued = delivered + refused +
    # failed + superseded + what is still queued or in flight)
    superseded: int = 0
    blocked: dict[str, int] = field(default_factory=dict)  # safety-gate code -> leads blocked
    # (key, kind, detail, facts): what the audit records of the chunk (a call_at moved)
    events: list[tuple[str, str, str, str]] = field(default_factory=list)

    def count(self, bucket: str, n: int = 1) -> None:
        self.counts[bucket] = self.counts.get(bucket, 0) + n


CALL_AT_MOVED = "the CRM's call_at is outside the calling window: moved to its next opening"

_BLOCK_CODE = re.compile(r"^blocked \(([^)]+)\)")


def block_code(reason: str) -> str:
    """Return the gate's reason code of a ``blocked (code): …`` reason ("gate" if unnamed)."""
    m = _BLOCK_CODE.match(reason)
    return m.group(1) if m else "gate"


def superseded_reason(key: str, later_line: int) -> str:
    return f"duplicate key {key!r}: superseded by line {later_line} (last wins)"


def row_keys(rows: Sequence[Row], key_col: int) -> list[str]:
    """Return each row's key cell, stripped, in row order."""
    if isinstance(rows, RawRows):  # the line reader's: the one column, no row built
        return [cell.strip() for cell in rows.column(key_col)]
    return [values[key_col].strip() for _, values in rows]


def row_lines(rows: Sequence[Row]) -> list[int]:
    """Return each row's line, in row order."""
    if isinstance(rows, RawRows):
        return rows.lines
    return [line for line, _ in rows]


def latest_of(keys: list[str]) -> dict[str, int]:
    """Return, per key, the index of its last row (last row wins), given ``row_keys``."""
    return dict(zip(keys, range(len(keys)), strict=True))


def latest_rows(rows: Sequence[Row], key_col: int) -> dict[str, int]:
    """Return, per key, the index of its last row in the chunk (last row wins)."""
    return latest_of(row_keys(rows, key_col))


def triage(
    rows: Sequence[Row],
    key_col: int,
    raw_hashes: dict[int, str],
    changed: Mapping[str, StoredLead | None],
    *,
    origin: str,
    run_id: str,
    keys: list[str] | None = None,
    latest: dict[str, int] | None = None,
    last_lines: Mapping[str, int] | None = None,
) -> Triage:
    """Return which rows need mapping, given ``changed``: the stored leads of the keys whose
    raw row is new, differs, or repeats within the origin (keys absent from it are unchanged).

    ``keys``: the rows' ``row_keys``, when the caller has them already (``latest``: their
    ``latest_of``). ``last_lines``: the keys that repeat in the whole origin, with the line
    of their last row there (``core.repeats``): a row of such a key before that line is
    superseded here, in its own chunk, even when the later row is in a chunk not read yet.
    """
    result = Triage()
    keys = row_keys(rows, key_col) if keys is None else keys
    latest = latest_of(keys) if latest is None else latest
    # The last row of a key in this chunk, superseded by a row of a later chunk: it must
    # never be queued (a push may send it before that chunk is read). index -> that line
    ahead = _superseded_ahead(rows, latest, last_lines) if last_lines else {}
    # The rows decided one by one: the last row of each key the lookup returned, every
    # row a later row of its key supersedes, every row without a key. Every other row
    # (nearly all of a re-sync) is the last of a key the lookup left out: unchanged.
    picked = {latest[key] for key in changed if key in latest}
    picked.update(ahead)
    if len(latest) < len(rows):  # a key repeats, or several rows have none
        picked.update(i for i, key in enumerate(keys) if latest[key] != i)
    if "" in latest:
        picked.add(latest[""])
    result.unchanged = len(rows) - len(picked)
    for i in sorted(picked):
        line, values = rows[i]
        key = keys[i]
        if key and (latest[key] != i or i in ahead):
            # the line of the key's last row in the origin when known, else in the chunk
            last = latest[key]
            later = ahead[last] if last in ahead else rows[last][0]
            result.rejects.append(RowReject(line, key, values, superseded_reason(key, later)))
            continue
        if key and key not in changed:
            result.unchanged += 1  # the stored lead came from this very row content
            continue
        previous = changed.get(key)
        if previous is not None and superseded_by(previous, origin, run_id, line):
            result.to_map.append((line, values))  # a repeat across chunks: always re-map
        elif raw_unchanged(previous, raw_hashes[line]):
            result.unchanged += 1
        else:
            result.to_map.append((line, values))
    return result


def _superseded_ahead(
    rows: Sequence[Row], latest: dict[str, int], last_lines: Mapping[str, int]
) -> dict[int, int]:
    """Return, for each key's last row in the chunk that a later row of the origin
    supersedes, its index and the line of the origin's last row of the key."""
    lines = row_lines(rows)
    ahead: dict[int, int] = {}
    for key in last_lines.keys() & latest.keys():  # set operation: walks the smaller
        i = latest[key]
        later = later_line(last_lines, key, lines[i])
        if later is not None:
            ahead[i] = later
    return ahead


def plan_chunk(
    mapped: list[MappedRow],
    rows_by_line: dict[int, list[str]],
    raw_hashes: dict[int, str],
    stored: Mapping[str, StoredLead | None],
    *,
    origin: str,
    run_id: str,
    versions: Mapping[int, str] | None = None,
) -> ChunkPlan:
    """Return the writes, rejects and count changes of the mapped rows of one chunk.

    ``versions``: the rows' version times (``Versions.times``), which a row of unchanged
    content still records with its lead (a later row is compared with it)."""
    plan = ChunkPlan()
    for line, key, content_hash, lead_json, reason, deleted, facts in mapped:
        previous = stored.get(key)
        supersedes = replaces_queued(previous, origin, run_id, line)
        if reason is not None and content_hash is not None and lead_json is not None:
            _plan_blocked(plan, previous, (key, content_hash, raw_hashes[line], lead_json),
                          line, rows_by_line[line], reason, run_id, facts,
                          supersedes=supersedes)  # fmt: skip
            continue
        if reason is not None or content_hash is None or lead_json is None:
            plan.rejects.append(RowReject(line, key, rows_by_line[line], reason or "unmappable"))
            plan.count("rejected")
            continue
        decision = _decide_row(plan, previous, key, line, content_hash, deleted, origin, run_id)
        plan.count(decision.value)
        lead = (key, content_hash, raw_hashes[line], lead_json)
        if decision is Decision.UNCHANGED:  # raw text changed, content did not: refresh only
            version = versions.get(line) if versions else None
            write = LeadWrite(*lead, Action.UPSERT, decision.value, line, False, version_at=version)
            plan.writes.append(write)
            continue
        plan.superseded += supersedes  # skipped or queued anew: the unsent version leaves
        if decision is Decision.SKIPPED:
            if previous is not None:  # known, never delivered: record that it is gone
                write = LeadWrite(*lead, Action.DELETE, decision.value, line, state="removed")
                plan.writes.append(write)
                if previous.state in QUEUED_STATES:  # it was to go: the audit says it never did
                    plan.events.append((key, "push.cancelled", CANCELLED, ""))
                if previous.state in ACTIVE_STATES and previous.run_id != run_id:
                    # It was counted as carried over (queued, or waiting behind another
                    # lead of its number); it leaves here, counted as skipped.
                    plan.carried_requeued += 1
            continue
        action = Action.DELETE if decision is Decision.DELETED else Action.UPSERT
        if action is Action.DELETE and previous is not None and not previous.delivered:
            lead = (*lead[:3], naming_attempt(lead[3], previous.attempted))
        plan.writes.append(LeadWrite(*lead, action, decision.value, line))
        if facts and action is Action.UPSERT:  # the gate moved its call_at: this is what goes
            plan.events.append((key, "gate.call_at_moved", CALL_AT_MOVED, facts))
        if previous is not None and previous.state in ACTIVE_STATES and previous.run_id != run_id:
            plan.carried_requeued += 1  # counted as carried over; now queued anew
    return plan


def naming_attempt(removal_json: str, number: str | None) -> str:
    """Return a removal's JSON carrying the number of a version sent in doubt.

    The dialer knows such a record by that number alone (a delivered lead's removal has
    the number the dialer answered with, its ``vendor_ref``). The removal's hash is left
    as it is: the same deletion read again is unchanged.
    """
    if not number:
        return removal_json
    data = json.loads(removal_json)
    data["phone"] = number
    return json.dumps(data, sort_keys=True)


def replaces_queued(previous: StoredLead | None, origin: str, run_id: str, line: int) -> bool:
    """Return True when a row takes an unsent version, counted as enqueued, off the outbox.

    An earlier row of the same file in the same run is not one: it moves from its bucket
    to the rejects (superseded by line …) and was never counted as enqueued.
    """
    if previous is None or previous.state not in QUEUED_STATES:
        return False
    repeat = superseded_by(previous, origin, run_id, line)
    return repeat is None or repeat.counted_as is None


def _plan_blocked(
    plan: ChunkPlan,
    previous: StoredLead | None,
    lead: tuple[str, str, str, str],
    line: int,
    row: list[str],
    reason: str,
    run_id: str,
    facts: str = "",
    *,
    supersedes: bool = False,
) -> None:
    """Refuse a lead the safety gate blocks, and take it back from where it went.

    Delivered or sent in doubt: the dialer gets a removal (counted as deleted). Still
    queued, never sent: it is taken off the outbox before anyone calls it. Either way
    the reason is kept.
    """
    key = lead[0]
    code = block_code(reason)
    plan.blocked[code] = plan.blocked.get(code, 0) + 1
    plan.superseded += supersedes
    if previous is not None and previous.state in ACTIVE_STATES and previous.run_id != run_id:
        plan.carried_requeued += 1  # counted as carried over; accounted for here instead
    # Delivered, or sent in doubt (the dialer may hold the version sent): withdrawn.
    held = previous is not None and (previous.delivered or previous.in_doubt)
    if previous is not None and held and previous.hash != lead[1]:
        if not previous.delivered:  # named by the number sent (its removal has no ref)
            lead = (*lead[:3], naming_attempt(lead[3], previous.attempted))
        plan.writes.append(LeadWrite(*lead, Action.DELETE, Decision.DELETED.value, line))
        plan.count(Decision.DELETED.value)
        why = f"{reason}; its withdrawal from the dialer is queued"
        plan.rejects.append(RowReject(line, key, row, why, facts))
        return
    if previous is not None and previous.state in ACTIVE_STATES:
        plan.writes.append(LeadWrite(*lead, Action.DELETE, "rejected", line, state="removed"))
    plan.count("rejected")
    plan.rejects.append(RowReject(line, key, row, reason, facts))


def _decide_row(
    plan: ChunkPlan,
    previous: StoredLead | None,
    key: str,
    line: int,
    content_hash: str,
    deleted: bool,
    origin: str,
    run_id: str,
) -> Decision:
    repeat = superseded_by(previous, origin, run_id, line)
    if repeat is None or previous is None:
        return decide(previous, content_hash, deleted)
    # The key already appeared earlier in this origin (an earlier chunk): that row is
    # superseded and moves from its bucket to the rejects.
    if repeat.counted_as:
        plan.count(repeat.counted_as, -1)
        plan.count("rejected")
        plan.rejects.append(RowReject(repeat.line, key, [], superseded_reason(key, line)))
    return decide_repeat(repeat.counted_as, previous, content_hash, deleted)
