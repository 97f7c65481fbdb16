"""Spreadsheet-safe CSV cells: a cell a spreadsheet would run as a formula is defused."""

from __future__ import annotations

import re
import unicodedata

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet's formula starts with


def neutralise(value: object) -> str:
    """Return ``value`` as text that Excel/LibreOffice will not evaluate (OWASP rule),
    also when blanks, control or invisible characters stand before the formula."""
    text = "" if value is None else str(value)
    return "'" + text if runs_as_formula(text) else text


def runs_as_formula(text: str) -> bool:
    """Return True when a spreadsheet would take ``text`` for a formula: it starts with
    a formula prefix (``=``, ``+``, ``-``, ``@``, a tab or CR), also behind blanks,
    control or invisible characters, and is not a plain signed or phone number."""
    if _plain(text):  # nothing in front of it, nor a formula prefix (see _plain)
        return False
    if text.startswith(FORMULA_START) and not _is_number(text):
        return True
    hidden = _behind(text)
    return hidden.startswith(FORMULA_START) and not _is_number(hidden)


def _behind(text: str) -> str:
    """Return ``text`` without what a reader does not see at its start (blanks, control
    and format characters: a spreadsheet skips some, shows none); "" when nothing is."""
    for i, char in enumerate(text):
        if not (char.isspace() or unicodedata.category(char) in ("Cc", "Cf")):
            return text[i:] if i else ""
    return ""


def unhidden(raw: str, cleaned: str) -> str:
    """Return ``cleaned`` (``raw`` with its control characters and edge blanks removed),
    defused when what was removed hid a formula prefix: a cell of tab + ``=1+1`` is a
    formula to a spreadsheet, and cleaning it must not hand ``=1+1`` on as a name."""
    if _plain(cleaned):
        return cleaned
    return _unhidden_by_rule(raw, cleaned)


# What a cell starts with that the checks below must look behind: a formula prefix, or
# the one blank among printable ASCII characters.
_LOOK_BEHIND = (*FORMULA_START, " ")


def _plain(text: str) -> bool:
    """Return True for a cell ``unhidden`` keeps as it is without looking closer: printable
    ASCII (most cells; two C calls) that starts with neither a formula prefix nor a blank.

    Exact: such a cell starts with no formula prefix, and hides nothing in front of one,
    since the only printable ASCII character that is a blank, control or format
    character is the space; "" too."""
    return text.isascii() and text.isprintable() and not text.startswith(_LOOK_BEHIND)


def _unhidden_by_rule(raw: str, cleaned: str) -> str:
    """Return ``unhidden(raw, cleaned)`` by its rule, for any cell (no shortcut)."""
    if cleaned.startswith(FORMULA_START) and raw[:1] != cleaned[:1]:
        return neutralise(cleaned)
    if _behind(cleaned).startswith(FORMULA_START):  # an invisible character kept in front
        return neutralise(cleaned)
    return cleaned


_NUMERIC = re.compile(r"^[+-]?[0-9][0-9 ().-]*$")


def _is_number(text: str) -> bool:
    # Signed numbers and phone numbers ("+91 98200 12345") cannot run anything.
    return bool(_NUMERIC.match(text))
