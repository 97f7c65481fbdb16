"""The mapping's shortcuts answer as the rules they skip: the same placeholders, the same
defused cells, whatever the number or cell.

The pull maps every row of an initial sync, so the common case (a number whose last two
digits are no placeholder's, a printable ASCII cell without a formula prefix, a phone
cell with one number that no spreadsheet rewrote) is decided without the full rule.
Each shortcut is checked here at its edges and, for any text, against the rule itself.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from syncd.core import csvsafe, mapping, phones
from syncd.core.csvsafe import runs_as_formula, unhidden
from syncd.core.mapping import clean_cell, clean_text
from syncd.core.phones import PhoneError, is_placeholder, unmangle

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
@example("+9981")  # one national digit behind a three-digit country code
@example("+911098765432")  # a run down, wrapping 0 → 9
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
    st.one_of(
        awkward,
        invisible,
        st.characters(),
        st.characters(max_codepoint=0x7F),  # ASCII: where the shortcuts apply
        st.sampled_from("aZ09.'"),
    ),
    max_size=8,
).map("".join)
# Cells as a reader sees them: what hides at the start, what starts it, the rest.
layered = st.tuples(
    st.sampled_from(["", " ", "  ", "\t", "\r\n", "\x00", "\x7f", "\xa0", "\u200b", " \u200b"]),
    st.sampled_from(["", "=", "+", "-", "@", "a", "1", "'"]),
    st.one_of(st.text(alphabet=" =+-@a0.\t", max_size=4), cells),
).map("".join)


@PROPERTY
@given(st.one_of(layered, cells), st.one_of(layered, cells))
@example(" ", "=1")  # a blank before a formula prefix
@example(" ", "-12")
@example("\u200b", "@x")
def test_the_cell_shortcut_agrees_with_the_rule(raw: str, tail: str) -> None:
    text = raw + tail
    assert unhidden(text, text.strip()) == csvsafe._unhidden_by_rule(text, text.strip())
    assert unhidden(text, text) == csvsafe._unhidden_by_rule(text, text)
    assert unhidden(tail, raw) == csvsafe._unhidden_by_rule(tail, raw)


@PROPERTY
@given(st.one_of(layered, cells))
@example(" =1")  # a blank before a formula prefix
@example(" -12")
def test_the_formula_shortcut_agrees_with_the_rule(text: str) -> None:
    hidden = csvsafe._behind(text)
    by_rule = (text.startswith(csvsafe.FORMULA_START) and not csvsafe._is_number(text)) or (
        hidden.startswith(csvsafe.FORMULA_START) and not csvsafe._is_number(hidden)
    )
    assert runs_as_formula(text) is by_rule


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("Asha", "Asha"),
        ("  Asha  ", "Asha"),  # printable ASCII: only stripped
        ("", ""),
        ("   ", ""),
        ("=1+1", "=1+1"),  # a formula as written: the CSV writer defuses it
        (" =1+1", "'=1+1"),  # a blank before '=' stripped away
        ("\t=1+1", "'=1+1"),  # a tab before '='
        ("\x00+1+2", "'+1+2"),  # a NUL before '+'
        ("\r\n-2+3", "'-2+3"),  # line breaks before '-'
        ("\x1b@SUM(A1)", "'@SUM(A1)"),  # an escape before '@'
        ("\u200b=1", "'\u200b=1"),  # an invisible character kept in front
        ("\xa0@x", "'@x"),  # a no-break space stripped
        ("Asha\x07", "Asha"),  # a control character removed
        ("-12", "-12"),
        (" +91 98200 12345", "+91 98200 12345"),  # a number behind a blank stays a number
        ("Ана", "Ана"),
    ],
)
def test_a_text_cell_is_cleaned_and_defused_where_cleaning_revealed_a_formula(
    raw: str, shown: str
) -> None:
    assert clean_text(raw) == shown
    assert unhidden(raw, clean_cell(raw)) == shown


@PROPERTY
@given(st.one_of(layered, cells), st.one_of(layered, cells))
@example(" ", "=1")  # a blank before a formula prefix
@example("\t", "+1")
def test_the_text_cell_shortcut_agrees_with_the_rule(head: str, tail: str) -> None:
    raw = head + tail
    assert clean_text(raw) == unhidden(raw, clean_cell(raw))


# -- phone cells ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "numbers"),
    [
        ("9820012345", ["9820012345"]),
        ("", []),
        ("  ", []),
        (" +91 98200 12345 ", ["+91 98200 12345"]),
        ("98200 12345 / 98200 54321", ["98200 12345", "98200 54321"]),
        ("9820012345;9820054321", ["9820012345", "9820054321"]),
        ("9820012345,", ["9820012345"]),
        ("|", []),
        ("n/a", ["n/a"]),  # no digit: filler, quoted whole
        ("none; later", ["none; later"]),
        ("8123456789.0", ["8123456789.0"]),  # a point is no separator
    ],
)
def test_a_phone_cell_lists_its_numbers(cell: str, numbers: list[str]) -> None:
    assert mapping._split_phones(cell) == numbers
    assert mapping._split_at_separators(cell) == numbers


phone_cells = st.lists(
    st.one_of(
        st.sampled_from([",", ";", "/", "|", "\n", " ", "\t", "+", "9", "0"]), st.characters()
    ),
    max_size=12,
).map("".join)


@PROPERTY
@given(phone_cells)
@example(" ")
@example("n/a")
def test_the_phone_cell_shortcut_agrees_with_the_rule(cell: str) -> None:
    assert mapping._split_phones(cell) == mapping._split_at_separators(cell)


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("8123456789", "8123456789"),  # no point, comma or e: as it is
        ("+918123456789", "+918123456789"),
        ("8123456789.0", "8123456789"),
        ("8123456789,00", "8123456789"),
        ("8.123456789E+09", "8123456789"),
        ("8,123456789e9", "8123456789"),
        ("+91 98200 12345 ext. 12", "+91 98200 12345 ext. 12"),  # not a spreadsheet's
    ],
)
def test_a_number_a_spreadsheet_rewrote_is_read_back(text: str, number: str) -> None:
    assert unmangle(text) == number


@pytest.mark.parametrize("text", ["8E+9", "8e9", "9.18123E+11", "8.1234567891E+09"])
def test_a_number_a_spreadsheet_rounded_is_refused(text: str) -> None:
    with pytest.raises(PhoneError):
        unmangle(text)
