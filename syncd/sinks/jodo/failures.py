"""Failed records listed inside a successful ImportProcessData reply, read without I/O.

Jodo's document shows only whole-batch success (``statuscode 001``) or failure
(``status 5``). Bulk-import servers commonly add a list of the rows they rejected
to a success reply: ``{"statuscode":"001","faileddata":[{"mobilenumber":…,
"reason":…}]}``. Reading such a reply as "all delivered" loses those leads
silently, so every plausible shape is read here:

- the list under ``faileddata``, ``failedData``, ``failed``, ``failedrecords``,
  ``rejected``, ``rejecteddata`` or ``errors`` (any case); items are objects naming
  the record by the sink's key field, ``crmuniquefield``'s column,
  ``customercode`` or ``mobilenumber``, or bare strings holding one of those values;
- the reason under ``reason``, ``message``, ``error``, ``statusdesc``, ``remarks``…;
- a bare count (``failedcount``, ``failcount``, or ``failed`` as a number), or a
  ``successcount`` below the number of records sent.

A listed record that can be matched is refused with the dialer's reason (personal
data removed); the others are delivered. A failure that names no record syncd
sent (or a bare count) cannot be placed: :func:`match_failures` reports it as
unplaced and the sink splits the batch until each failure stands alone with its
record (Jodo upserts by ``updateparam``, so sending the good records again is
harmless).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

LIST_NAMES = (
    "faileddata",
    "failedrecords",
    "failedrows",
    "failed",
    "rejected",
    "rejecteddata",
    "errors",
    "errordata",
)
COUNT_NAMES = ("failedcount", "failcount", "failurecount", "rejectedcount", "failed")
REASON_NAMES = (
    "reason",
    "message",
    "msg",
    "error",
    "errormessage",
    "errormsg",
    "statusdesc",
    "description",
    "remarks",
    "remark",
)
# Fields every reply may carry, besides the failure lists: not "unknown".
KNOWN_FIELDS = frozenset(
    {"method", "statuscode", "status", "statusdesc", "resdatetime", "revisionno", "reasonid"}
    | set(LIST_NAMES)
    | set(COUNT_NAMES)
    | {"successcount", "totalcount", "insertedcount", "updatedcount", "total", "success"}
)


@dataclass
class Failures:
    """What a reply's failure list says about the records of one batch."""

    refused: dict[str, str] = field(default_factory=dict)  # lead key -> the dialer's reason
    unplaced: int = 0  # failures naming no record syncd sent (or a bare count)
    example: str = ""  # the reason of one unplaced failure, for the log


def _lower(body: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in body.items()}


def failure_items(body: Mapping[str, Any]) -> tuple[list[Any], int]:
    """Return (the listed failures, a bare count beyond them) of a reply."""
    low = _lower(body)
    for name in LIST_NAMES:
        value = low.get(name)
        if isinstance(value, list):
            return list(value), 0
        if isinstance(value, dict) and value:
            # {"<number or key>": "<reason>", …}
            return [{"record": k, "reason": v} for k, v in value.items()], 0
    for name in COUNT_NAMES:
        count = _as_count(low.get(name))
        if count:
            return [], count
    return [], 0


def _as_count(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return 0


def _reason_of(item: Any) -> str:
    if isinstance(item, Mapping):
        low = _lower(item)
        for name in REASON_NAMES:
            value = low.get(name)
            if value not in (None, "", [], {}):
                return str(value)
    return ""


def _values_of(item: Any, names: Iterable[str]) -> list[str]:
    """Return the identifying values of one failure item (object fields or a bare value)."""
    if isinstance(item, str | int) and not isinstance(item, bool):
        return [str(item).strip()]
    if not isinstance(item, Mapping):
        return []
    low = _lower(item)
    found = [str(low[n]).strip() for n in names if low.get(n) not in (None, "")]
    if "record" in low and isinstance(low["record"], str | int):
        found.append(str(low["record"]).strip())
    return found


def match_failures(
    body: Mapping[str, Any],
    sent: Sequence[tuple[str, Mapping[str, Any]]],
    id_fields: Sequence[str],
) -> Failures:
    """Return which of the ``sent`` (key, record) pairs the reply lists as failed.

    ``id_fields`` are the record fields a failure may name a record by, most
    specific first (the key field, the upsert field, ``mobilenumber``). A value
    shared by several records sent (two leads with one number) names none of them
    for sure: it counts as unplaced.
    """
    items, count = failure_items(body)
    if not items and not count:
        said = _lower(body).get("successcount")
        if not isinstance(said, bool) and (_as_count(said) or str(said).strip() == "0"):
            # "successcount": 95 of 100 sent, the other five not named
            count = max(len(sent) - _as_count(said), 0)
    result = Failures(unplaced=count)
    if count:
        result.example = "the dialer counted failed records without naming them"
    if not items:
        # The usual reply: nothing listed. Indexing every record sent only to place no
        # failure cost ~9 µs a lead of a push's CPU.
        return result
    names = [n.lower() for n in id_fields]
    index: dict[str, set[str]] = {}
    for key, record in sent:
        low = _lower(record)
        for name in names:
            value = low.get(name)
            if value not in (None, ""):
                index.setdefault(str(value).strip(), set()).add(key)
    records = dict(sent)
    for item in items:
        keys = _place(_values_of(item, names), index)
        why = _reason_of(item) or "listed as failed by the dialer, no reason given"
        if keys is None:
            result.unplaced += 1
            result.example = result.example or private_free(why, ())
            continue
        (key,) = keys
        reason = "Jodo refused the record: " + private_free(why, records[key].values())
        result.refused.setdefault(key, reason)
    return result


def _place(values: list[str], index: Mapping[str, set[str]]) -> set[str] | None:
    for value in values:
        keys = index.get(value)
        if keys is not None and len(keys) == 1:
            return keys
    return None


_DIGITS = re.compile(r"\+?\d[\d ()./-]{4,}\d")
_EMAIL = re.compile(r"[^\s@'\"]+@[^\s@'\"]+")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def private_free(text: str, values: Iterable[Any]) -> str:
    """Return a dialer's reason without the personal data it may echo.

    The record's own values (name, e-mail, number) are cut out, then anything that
    still looks like a number, an e-mail address or a quoted cell: the reason is
    logged and shown by ``syncd status``.
    """
    cleaned = str(text)[:300]
    for value in sorted((str(v) for v in values if v), key=len, reverse=True):
        if len(value) >= 3:
            cleaned = cleaned.replace(value, "…")
    cleaned = _QUOTED.sub(lambda m: m.group(0)[0] + "…" + m.group(0)[-1], cleaned)
    cleaned = _EMAIL.sub("<e-mail>", cleaned)
    return _DIGITS.sub("<number>", cleaned).strip() or "no reason given"
