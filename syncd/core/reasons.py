"""Reason codes: what a shared surface may say about a refusal or a failure.

A stored reason is whole (scrubbed of secrets) for `syncd explain` and `syncd status`:
it may quote a CRM cell (``invalid phone 'Asha Sharma'``) or a dialer's words, and a
dialer's words may echo the customer (``Duplicate customer Asha Sharma … already
exists``). The status page, /readyz, /metrics and info- and warning-level log lines
show its *code* instead: a short phrase from a closed vocabulary, never text that came
from outside. Reasons are grouped and counted by it.

:func:`reason_code` reads the code off syncd's own reason templates (the mapping's
refusals, the safety gate's ``blocked (code)``/``held (code)``, the push loop's
bookkeeping); for a dialer's text it keeps only what names no one: the vendor's result
type (``INVALID_RECORD_FAILED``) or numeric status code (``code 1107``), an HTTP status.
A reason it does not recognise gets the caller's ``other`` code. Pure: tables of cases
in tests/test_reason_codes.py.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from typing import Any

# syncd's own templates, first match wins: (pattern at the start of the reason, code).
# A code may take one group, itself restricted to a closed alphabet by the pattern.
_TEMPLATES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE if flags else 0), code)
    for pattern, code, flags in (
        # the gate's rule: its code, a list's or number type's configured name after ":"
        (r"blocked \(([a-z][a-z0-9_]{0,30}(?::[A-Za-z0-9_.\-]{1,40})?)\)", "blocked ({0})", False),
        (r"held \(([a-z][a-z0-9_]{0,30}(?::[A-Za-z0-9_.\-]{1,40})?)\)", "held ({0})", False),
        (r"missing key\b", "missing key", False),
        (r"missing phone\b", "missing phone", False),
        (r"missing column", "missing column", False),
        (r"missing login\b", "missing login", False),
        (r"missing field ([a-z0-9_]{1,40})\b", "missing field {0}", False),
        (r"key in column .{0,200}? holds control characters", "key with control characters", False),
        (r"key longer than \d+ characters", "key too long", False),
        (r"key in column .{0,200}? would run as a spreadsheet formula",
         "key like a spreadsheet formula", False),
        (r"duplicate key .{0,1000}superseded by line \d+", "superseded by a later row", False),
        (r"superseded: an older version than the one syncd holds",
         "superseded: an older version", False),
        (r"invalid date\b", "invalid date", False),
        (r"(invalid phone|empty phone|phone .{0,200}(rounded number|not a whole number))",
         "invalid phone", False),
        (r"column .{0,200}? is not valid text", "not valid text in the file's encoding", False),
        (r"(invalid|unknown) time ?zone", "invalid time zone", True),
        (r"no phone number to dial", "no phone number to dial", False),
        (r"unmappable", "unmappable", False),
        # the state store (a path or URL follows "store": never shown)
        (r"the disk holding the state store .{0,2000} is full", "the state store's disk is full",
         False),
        (r"the state store .{0,2000} cannot be reached", "the state store cannot be reached",
         False),
        (r"the state store .{0,2000} is read-only", "the state store is read-only", False),
        # a dialer's clock against what syncd was told of it (sinks' own server checks)
        (r"the dialer's clock reads UTC[+-]\d\d:\d\d but server_timezone",
         "the dialer's clock is in another zone than server_timezone", False),
        (r"the dialer's clock is .{1,40} (ahead of|behind) this host's",
         "the dialer's clock is off", False),
        # push bookkeeping syncd adds after a dialer's words
        (r".{0,3000}: this one record is larger than the dialer takes in a request$",
         "one record too large for the dialer (HTTP 413)", False),
    )
)  # fmt: skip
# What a dialer's words may contribute: its result type where a reason starts with one
# (upper case with an underscore, which no name has: ``ameyo: INVALID_RECORD_FAILED: …``),
# its numeric status code, an HTTP status. Nothing else.
_RESULT_TYPE = re.compile(r"^(?:[A-Za-z]{1,20}: )?([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)(?![A-Za-z0-9_])")
_STATUS_CODE = re.compile(r"\(code (\d{1,6})\)")
_HTTP = re.compile(r"\bHTTP ([1-5]\d\d)\b")
_GAVE_UP = re.compile(r"\(gave up after \d+ attempts\)\s*$")

REFUSED_ROW = "refused row"
DIALER_REFUSED = "refused by the dialer"
DIALER_FAILED = "failed at the dialer"
CRM_REFUSED = "refused by the CRM"
FAILING = "failing"  # anything else that fails (a store, a writeback, a job)
# A key refused for what it holds is not the CRM's key as written (a control character
# stripped) or would run in a spreadsheet: a shared surface shows the row's file, line
# and code, not the key.
KEY_NOT_SHOWN = frozenset({"key with control characters", "key like a spreadsheet formula"})
SHARED_LEVELS = frozenset({"info", "warning"})  # log levels a shipper keeps: codes only


# A dialer's own reading of its words (sinks/<vendor>/codes.py): a code, or None.
Coder = Callable[[str], "str | None"]
_SAFE = re.compile(r"[A-Za-z0-9 _().,:-]{1,60}")


def reason_code(reason: str | None, other: str = DIALER_REFUSED, coder: Coder | None = None) -> str:
    """Return the code a shared surface shows for ``reason``.

    syncd's own templates first; then the dialer's code for its words (``coder``, from
    the sink's package: ``refused by the dialer: duplicate in dialer``), else the part of
    them that names no one; else ``other``.
    """
    text = (reason or "").strip()
    for pattern, code in _TEMPLATES:
        found = pattern.match(text)
        if found is not None:
            return code.format(*(g for g in found.groups() if g is not None))
    code = other
    if _GAVE_UP.search(text):
        code = f"{DIALER_FAILED}, gave up after its attempts"
    said = coder(text) if coder is not None else None
    if said and _SAFE.fullmatch(said):  # a plug-in's code is a short phrase, or not used
        return f"{code}: {said}"
    vendor = dialer_code(text)
    return f"{code} ({vendor})" if vendor else code


def dialer_code(text: str) -> str | None:
    """Return the part of a dialer's reason that names no one: its result type, status
    code or HTTP status (``INVALID_RECORD_FAILED``, ``code 1107``, ``HTTP 503``), or None."""
    found = _RESULT_TYPE.search(text)
    if found is not None:
        return found.group(1)[:48]
    status = _STATUS_CODE.search(text)
    if status is not None:
        return f"code {status.group(1)}"
    http = _HTTP.search(text)
    if http is not None:
        return f"HTTP {http.group(1)}"
    return None


def group_by_code(
    rows: list[tuple[str, str, int]],
    other: str = DIALER_REFUSED,
    coders: Mapping[str, Coder | None] | None = None,
) -> list[tuple[str, str, int]]:
    """Return (sink, code, count) for (sink, reason, count) rows, largest first
    (``coders``: each sink's dialer's reading of its words)."""
    merged: dict[tuple[str, str], int] = {}
    for sink, reason, n in rows:
        key = (sink, reason_code(reason, other, (coders or {}).get(sink)))
        merged[key] = merged.get(key, 0) + n
    return sorted(((s, c, n) for (s, c), n in merged.items()), key=lambda r: (-r[2], r[0], r[1]))


def log_reason(
    logger: Any,
    level: str,
    event: str,
    reason: str,
    other: str = FAILING,
    coder: Coder | None = None,
    **context: Any,
) -> None:
    """Log ``event`` at ``level``; at info and warning its ``reason`` is the code, and the
    whole text goes to a debug line ``<event>.text`` (a dialer's or a CRM's words may
    echo a customer). Other levels keep the whole reason."""
    if level not in SHARED_LEVELS:
        getattr(logger, level)(event, reason=reason, **context)
        return
    getattr(logger, level)(event, reason=reason_code(reason, other, coder), **context)
    logger.debug(f"{event}.text", reason=reason, **context)


_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_DIGITS = re.compile(r"\d")
_NUMBER_INSIDE = re.compile(r"\d{10}")  # a national number's length, at the least


def looks_personal(key: str) -> bool:
    """Return True for a lead key that may say who the lead is: an e-mail address, or a
    phone number (``+`` and 7 digits or more, or 10 digits or more and nothing but
    separators), or one inside it (10 digits in a row: ``LEAD9820057779``). A CRM's own
    id (``L1``, ``10042``, ``0065g00000Xyz``, ``L00000001``) is not."""
    text = key.strip()
    if _EMAIL.fullmatch(text) or _NUMBER_INSIDE.search(text):
        return True
    digits = len(_DIGITS.findall(text))
    if text.startswith("+") and digits >= 7:
        return True
    return digits >= 10 and re.fullmatch(r"[\d\s().\-/+]+", text) is not None


def shown_key(key: str) -> str:
    """Return how an info or warning log line names a lead: its key, or for a key that
    looks like an e-mail address or a phone number its hash (``sha256:3f9a1c0e2b7d``,
    the first 12 hex digits of the key's SHA-256), which matches across lines."""
    if not looks_personal(key):
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:12]
