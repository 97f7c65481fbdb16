"""The simulators' fast form decoder reads every body exactly as urllib's parse_qs does."""

from __future__ import annotations

from urllib.parse import parse_qs, quote_plus

from hypothesis import given
from hypothesis import strategies as st

from syncd.simulators.form import parse_form

ESCAPES = st.builds(
    lambda a, b: f"%{a}{b}",
    st.sampled_from("0123456789abcdefABCDEFxz"),
    st.sampled_from("0123456789abcdefABCDEF%"),
)
PIECES = st.one_of(st.text(max_size=4), ESCAPES, st.sampled_from(["&", "=", "+", "%", " ", "\n"]))


@given(st.lists(PIECES, max_size=30).map("".join))
def test_any_body_decodes_as_parse_qs_does(body: str) -> None:
    assert parse_form(body) == parse_qs(body, keep_blank_values=True)


@given(st.dictionaries(st.text(min_size=1), st.text(), max_size=5))
def test_an_encoded_form_comes_back_whole(fields: dict[str, str]) -> None:
    body = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in fields.items())
    assert parse_form(body) == {k: [v] for k, v in fields.items()}
