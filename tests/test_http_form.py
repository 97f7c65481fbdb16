"""The fast form encoder produces exactly what urllib would, for any text."""

from __future__ import annotations

import urllib.parse

from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.net.http import encode_form


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=200), max_size=3))
def test_encode_form_matches_urlencode(fields: dict[str, str]) -> None:
    assert encode_form(fields) == urllib.parse.urlencode(fields).encode("ascii")


def test_percent_plus_and_space_do_not_double_encode() -> None:
    assert encode_form({"data": "a %2B+b"}) == b"data=a+%252B%2Bb"
