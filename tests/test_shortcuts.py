"""The mapping's shortcuts answer as the rules they skip: the same placeholders, the same
defused cells, whatever the number or cell.

The pull maps every row of an initial sync, so the common case (a number whose last two
digits are no placeholder's, a printable ASCII cell without a formula prefix) is decided
without the full rule. Each shortcut is checked here at its edges and, for any text,
against the rule itself.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.core import csvsafe, phones
from syncd.core.csvsafe import runs_as_formula, unhidden
from syncd.core.phones import is_placeholder

PROPERTY = settings(
    max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)

# -- placeholder numbers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "placeholder"),
    [
        ("+919999999999", True),  # one digit repeated
        ("+911234567890", True),  # a run up, wrapping 9 → 0 at its end
        ("+918901234567", True),  # a run up, wrapping in the middle
        ("+911098765432", True),  # a run down, wrapping 0 → 9
        ("+919876543210", True),  # a run down to 0
        ("+19876543210", True),  # a one-digit country code
        ("+998901234567", True),  # a three-digit country code (Uzbekistan)
        ("+919820012345", False),  # last two 4 → 5 (a step of one): the rule decides
        ("+919820012349", False),  # last two 4 → 9: no placeholder ends so
        ("+919820012300", False),  # last two equal, the rest not
        ("+9112345", False),  # a run of five: too short to be a placeholder's
        ("+91123456", True),  # a run of six
        ("+9199", True),  # two national digits, repeated (the shortcut needs five digits)
        ("+9198", False),  # the shortcut's four digits: the rule decides
        ("+919", True),  # one national digit
        ("+9981", True),  # one national digit behind a three-digit country code (no shortcut)
        ("+91", True),  # no national digits
        ("+1", True),
        ("+", True),
        ("", True),
        ("+4412", False),  # five digits: the national number is 12
        ("+44121", False),
        ("+4412x", False),  # not a digit at the end: the rule decides
        ("+91xxxxx", True),  # one character repeated, even not a digit
    ],
)
def test_a_placeholder_is_one_digit_repeated_or_a_run(number: str, placeholder: bool) -> None:
    assert is_placeholder(number) is placeholder
    assert phones._is_placeholder_by_rule(number) is placeholder


def runs(draw_length: st.SearchStrategy[int]) -> st.SearchStrategy[str]:
    """Numbers whose national part is a run (up or down) or one digit repeated."""
    return st.builds(
        lambda cc, start, length, kind: (
            "+" + cc + "".join(str((start + i * kind) % 10) for i in range(length))
        ),
        st.sampled_from(["1", "7", "44", "91", "998", "", "0", "999"]),
        st.integers(0, 9),
        draw_length,
        st.sampled_from([0, 1, -1]),
    )


numbers = st.one_of(
    st.from_regex(r"\+?[0-9]{0,16}", fullmatch=True),
    runs(st.integers(0, 14)),
    st.text(alphabet="+0123456789x٠١", max_size=14),
)


@PROPERTY
@given(numbers)
def test_the_placeholder_shortcut_agrees_with_the_rule(number: str) -> None:
    assert is_placeholder(number) is phones._is_placeholder_by_rule(number)


# -- cells that may hide a formula ------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "cleaned", "expected"),
    [
        ("Asha Sharma", "Asha Sharma", "Asha Sharma"),  # plain: kept
        ("", "", ""),
        ("  Asha ", "Asha", "Asha"),
        ("=1+1", "=1+1", "=1+1"),  # a formula as written: the CSV writer defuses it
        ("\t=1+1", "=1+1", "'=1+1"),  # a tab before '=' cleaned away
        ("\x00+1+2", "+1+2", "'+1+2"),  # a NUL before '+'
        ("\x1b-2+3", "-2+3", "'-2+3"),  # an escape before '-'
        ("\x7f@SUM(A1)", "@SUM(A1)", "'@SUM(A1)"),  # DEL before '@'
        ("\x85=1", "=1", "'=1"),  # a C1 control before '='
        ("\u200b=1", "\u200b=1", "'\u200b=1"),  # a zero-width space kept in front
        ("\ufeff@x", "\ufeff@x", "'\ufeff@x"),  # a BOM kept in front
        ("\xa0=1", "\xa0=1", "'\xa0=1"),  # a no-break space kept in front
        (" =1", " =1", "' =1"),  # a blank kept in front (not from clean_cell)
        ("\x00\t", "\t", "'\t"),  # a tab left behind a NUL: a formula prefix of its own
        ("\t", "\t", "\t"),  # a tab as written: the CSV writer defuses it
        ("a\t=1", "a\t=1", "a\t=1"),  # a tab inside: nothing hidden in front
        ("+91 98200 12345", "+91 98200 12345", "+91 98200 12345"),  # a number
        ("\t+91 98200 12345", "+91 98200 12345", "+91 98200 12345"),
        ("naïve", "naïve", "naïve"),  # not ASCII: the rule decides
        ("é=", "é=", "é="),
    ],
)
def test_a_cell_is_defused_when_cleaning_revealed_a_formula(
    raw: str, cleaned: str, expected: str
) -> None:
    assert unhidden(raw, cleaned) == expected
    assert csvsafe._unhidden_by_rule(raw, cleaned) == expected


@pytest.mark.parametrize(
    ("text", "formula"),
    [
        ("L00000001", False),
        ("", False),
        ("=KEYF(1)", True),
        (" =KEYF(1)", True),
        ("\t=1", True),
        ("\u200b@x", True),
        ("-12", False),
        (" -12", False),
        ("+91 98200 12345", False),
        ("@", True),
        ("a@b", False),
    ],
)
def test_a_key_runs_as_a_formula_when_a_prefix_starts_it_or_hides_behind(
    text: str, formula: bool
) -> None:
    assert runs_as_formula(text) is formula


# A cell's characters, the awkward ones likelier than in plain text.
awkward = st.sampled_from(["=", "+", "-", "@", "\t", "\r", "\n", " ", "\x00", "\x7f", "\x85"])
invisible = st.sampled_from(["\u200b", "\ufeff", "\u202e", "\xa0", "\u2028", "\u3000"])
cells = st.lists(
    st.one_of(awkward, invisible, st.characters(), st.sampled_from("aZ09.'")), max_size=8
).map("".join)


@PROPERTY
@given(cells, cells)
def test_the_cell_shortcut_agrees_with_the_rule(raw: str, tail: str) -> None:
    text = raw + tail
    assert unhidden(text, text.strip()) == csvsafe._unhidden_by_rule(text, text.strip())
    assert unhidden(text, text) == csvsafe._unhidden_by_rule(text, text)
    assert unhidden(tail, raw) == csvsafe._unhidden_by_rule(tail, raw)


@PROPERTY
@given(cells)
def test_the_formula_shortcut_agrees_with_the_rule(text: str) -> None:
    hidden = csvsafe._behind(text)
    by_rule = (text.startswith(csvsafe._FORMULA_START) and not csvsafe._is_number(text)) or (
        hidden.startswith(csvsafe._FORMULA_START) and not csvsafe._is_number(hidden)
    )
    assert runs_as_formula(text) is by_rule
