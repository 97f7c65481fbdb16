"""The pull's memory of refused rows: recall before mapping, remember after (issue 27).

The rule of what is remembered and when it settles a row is pure, in
``syncd.core.refusals``; here it meets the store and the run's counts.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping

from syncd import __version__
from syncd.core.keys import looked_up
from syncd.core.mapping import NormalizedRow
from syncd.core.model import StoredLead
from syncd.core.reconcile import Row, RowReject, block_code
from syncd.core.refusals import Refusal, fingerprint, recall, rememberable
from syncd.core.summary import RouteCounts
from syncd.state.base import ChunkWrite, StateStore


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def environment(phone_backend: str) -> tuple[str, ...]:
    """Return what decides a refusal besides the row and its route: syncd's version (its
    rules), the phone library that validates numbers and its version (its metadata), and
    the zone database's (a zone cell, a number's zones)."""
    return (
        __version__,
        phone_backend,
        _version(phone_backend),
        _version("phonenumbers"),  # rphonenumbers is checked against it when chosen
        _version("tzdata"),  # "-": the system's zone files, which syncd does not version
    )


def chunk_fingerprint(environment: tuple[str, ...], header: tuple[str, ...]) -> str:
    """Return the fingerprint of one chunk's refusals: the environment and the header (the
    same cells under other column names are another row to the mapping)."""
    return fingerprint([*environment, "\x1e", *header])


async def recall_refused(
    store: StateStore,
    sink: str,
    to_map: list[Row],
    key_col: int,
    raw_hashes: Mapping[int, str],
    stored: Mapping[str, StoredLead | None],
    fp: str,
) -> tuple[list[Row], list[tuple[Row, Refusal]]]:
    """Return the rows still to map, and those refused before with the same content."""
    keys = {k for _, values in to_map if looked_up(k := values[key_col].strip())}
    if not keys:
        return to_map, []
    memory = await store.refusals(sink, sorted(keys))
    return recall(to_map, key_col, raw_hashes, memory, fp, stored)


def refuse_again(settled: list[tuple[Row, Refusal]], counts: RouteCounts) -> list[RowReject]:
    """Return the rejects of the rows refused from memory, and count them as the mapping
    would have (rejected, and blocked by the gate's code), and as refused before."""
    rejects: list[RowReject] = []
    for (line, values), refusal in settled:
        rejects.append(RowReject(line, refusal.key, values, refusal.reason, refusal.facts))
        if refusal.blocked:
            code = block_code(refusal.reason)
            counts.blocked[code] = counts.blocked.get(code, 0) + 1
    counts.rejected += len(settled)
    counts.refused_before += len(settled)
    return rejects


def remember(
    write: ChunkWrite,
    sink: str,
    mapped: list[NormalizedRow],
    rows_by_line: Mapping[int, list[str]],
    key_col: int,
    raw_hashes: Mapping[int, str],
    fp: str,
) -> None:
    """Add to the chunk's write the refusals of its mapped rows that may be remembered."""
    for line, _key, content_hash, lead_json, reason, _deleted, facts in mapped:
        if reason is None:
            continue
        key = rows_by_line[line][key_col].strip()
        blocked = content_hash is not None and lead_json is not None
        if rememberable(key, reason, blocked):
            refusal = Refusal(key, raw_hashes[line], fp, reason, facts, blocked)
            write.refused.append((sink, refusal))
