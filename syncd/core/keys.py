"""A lead's key: which cells can name a lead, and why the others cannot.

One rule for every source (a CSV drop, a SQL CRM, a webhook's POST), applied where
each row is mapped. A key is its cell with the edge blanks stripped, and is refused
when it is empty, longer than ``MAX_KEY_LEN``, holds a control or invisible formatting
character anywhere (U+202E, U+200B; a tab or CR at its edge too: a strip would hide it
and deliver another key than the CRM holds) or would run as a spreadsheet formula
(``=KEYF(1)``, ``@SUM(A1)``): the CSV writeback defuses such a cell (``'=KEYF(1)``),
so the CRM could not match the lead's outcome back, and a spreadsheet export of the
dialer's list would run it.
Plain signed numbers and phone-like keys (``-12``, ``+91 98200 12345``) stay keys.

A reason names the column and the kind of problem, never the key: reasons are shown
by code on shared surfaces, and whole in ``syncd rejects`` and to a webhook's sender.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection

from syncd.core.csvsafe import runs_as_formula
from syncd.core.model import MAX_KEY_LEN

# Control characters, and the invisible "format" ones: a right-to-left override or a
# zero-width space makes a key that reads as another one (in a list, a log, a CRM).
_HIDDEN = frozenset({"Cc", "Cf"})


def looked_up(key: str) -> bool:
    """Return False for a key the store is not asked about: empty, or holding a NUL
    (PostgreSQL's text takes none, and its look-up failed the whole chunk). Its row is
    refused by :func:`key_refusal` when mapped, as a new row's."""
    return bool(key) and "\x00" not in key


def not_looked_up(keys: Collection[str]) -> list[str]:
    """Return the keys of ``keys`` the store is not asked about (see :func:`looked_up`).

    On every chunk of a re-sync, so the usual answer (none) is found in C: a lookup of
    "" and one scan of the keys joined, not a call per key."""
    if "" not in keys and "\x00" not in "".join(keys):
        return []
    return [key for key in keys if not looked_up(key)]


def key_refusal(raw: str, column: str) -> str | None:
    """Return why the key cell ``raw`` (read from ``column``) cannot be a lead's key,
    None when it can; the key is then ``raw.strip()``."""
    if not raw.isprintable() and (bad := {c for c in raw if unicodedata.category(c) in _HIDDEN}):
        shown = ", ".join(sorted(f"U+{ord(c):04X}" for c in bad))
        return f"key in column {column!r} holds control characters ({shown})"
    key = raw.strip()
    if not key:
        return f"missing key (column {column!r} is empty)"
    if len(key) > MAX_KEY_LEN:
        return f"key longer than {MAX_KEY_LEN} characters in column {column!r}"
    if runs_as_formula(key):
        return (
            f"key in column {column!r} would run as a spreadsheet formula (it starts with "
            "=, +, - or @, perhaps behind an invisible character, and is not a number)"
        )
    return None
