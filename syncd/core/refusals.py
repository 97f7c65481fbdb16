"""Refused rows remembered: which refusals a re-sync may take as settled. Pure, no I/O.

A re-sync skips a row whose raw content produced the lead the store holds; a row
refused before was mapped and refused again every run (a fifth of a real export).
A refusal is remembered by (sink, key) with the raw row's hash, which already
covers the route's whole configuration (mapping, region, gate rules: see
``core.mapping.row_hash``), and a fingerprint of what else decides it: the
file's header, syncd's version, the phone library and its version, the zone
database. A row read again with the same hash under the same fingerprint is
refused again with the remembered reason, without mapping or phone validation.

Only refusals that are a pure function of the row and that configuration are
remembered: never one that hangs on the clock (consent that ran out), on an
outside list (do-not-call lists), or on the calling window (its zones and
rules). Their rows are screened again every time they are read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from syncd.core.model import MAX_KEY_LEN
from syncd.core.reconcile import Row, block_code, latest_rows

# The gate's blocks decided by the row's own cells and the route's rules alone.
# Left out on purpose: consent_expired (the clock), dnc_list:* (an outside list),
# window_closed / window_never_open / call_at_outside_window (the calling window).
PURE_BLOCKS = frozenset({"dnc_crm", "placeholder_number", "no_consent"})
PURE_BLOCK_PREFIXES = ("number_type:",)  # the phone library's metadata: fingerprinted


@dataclass(frozen=True, slots=True)
class Refusal:
    """A row refused, as remembered: its reason and the content that earned it."""

    key: str  # the row's key cell as the pull reads it (stripped)
    raw_hash: str  # core.mapping.row_hash of the row under its route
    fingerprint: str  # what else decided the refusal (see ``fingerprint``)
    reason: str
    facts: str = ""  # a gate block's audit facts (core.audit.Facts JSON), else ""
    blocked: bool = False  # the gate blocked it (a refusal plus a withdrawal), not mapping


def fingerprint(parts: Iterable[str]) -> str:
    """Return the fingerprint of what decides a refusal besides the row and its route."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return h.hexdigest()


def rememberable(key: str, reason: str, blocked: bool) -> bool:
    """Return True when a refusal may be remembered, to be taken as settled next time.

    A mapping refusal (an unreadable phone, a missing column's cell, a bad date or
    zone) is a pure function of the row under the route and the fingerprint. A gate
    block is only when its rule reads nothing but the row and the rules. A key that
    cannot be stored as text as it is (empty, too long, control characters, bytes the
    file's encoding could not read) is not kept: its row is mapped again, as before.
    """
    if not key or len(key) > MAX_KEY_LEN or not key.isprintable():
        return False
    if not blocked:
        return True
    code = block_code(reason)
    return code in PURE_BLOCKS or code.startswith(PURE_BLOCK_PREFIXES)


def recalled(
    memory: Refusal | None, raw_hash: str, fingerprint: str, *, stored: bool
) -> Refusal | None:
    """Return the remembered refusal that settles a row read again, None to map it.

    Settled only when the row and the fingerprint are the same as when it was refused,
    and the store holds no lead of the key. A key with a lead is mapped again: a block
    takes a queued or delivered version back, and what is queued may have changed
    since (a ``syncd retry`` put an older version back in the outbox); and a row refused
    for its zone cell today may be blocked for its consent later, which withdraws what
    the dialer holds. Without a lead, a refusal does one thing whatever its reason or
    the clock: the reject. Those are the rows a re-sync refused again and again.
    """
    if memory is None or stored:
        return None
    if memory.raw_hash != raw_hash or memory.fingerprint != fingerprint:
        return None
    return memory


def recall(
    to_map: list[Row],
    key_col: int,
    raw_hashes: Mapping[int, str],
    memory: Mapping[str, Refusal],
    fingerprint: str,
    stored: Mapping[str, object | None],
) -> tuple[list[Row], list[tuple[Row, Refusal]]]:
    """Split the rows triage sent to mapping into those still to map and those refused
    before with the same content and fingerprint (each with its remembered refusal).

    ``stored``: the store's lead per key (None or absent: none). Only the last row of a
    key is recalled; an earlier one (a repeat inside the chunk) was settled by triage.
    """
    if not memory:
        return to_map, []
    latest = latest_rows(to_map, key_col)
    keep: list[Row] = []
    settled: list[tuple[Row, Refusal]] = []
    for i, row in enumerate(to_map):
        key = row[1][key_col].strip()
        found = memory.get(key) if latest.get(key) == i else None
        refusal = recalled(
            found, raw_hashes[row[0]], fingerprint, stored=stored.get(key) is not None
        )
        if refusal is None:
            keep.append(row)
        else:
            settled.append((row, refusal))
    return keep, settled
