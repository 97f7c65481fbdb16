"""Scrubbing outside text of configured secrets, in every spelling a request carries them."""

from __future__ import annotations

import base64
import json
import urllib.parse

import pytest

from syncd.core.scrub import MASK, Scrubber
from syncd.errors import VendorError

SECRET = "s3cr3t/pass+word=1"


@pytest.mark.parametrize(
    "spelled",
    [
        SECRET,
        urllib.parse.quote(SECRET, safe=""),
        urllib.parse.quote_plus(SECRET),
        base64.b64encode(SECRET.encode()).decode(),
        base64.urlsafe_b64encode(SECRET.encode()).decode().rstrip("="),
        json.dumps(SECRET)[1:-1],
    ],
    ids=["plain", "url", "form", "base64", "base64url", "json"],
)
def test_every_spelling_of_a_secret_is_masked(spelled: str) -> None:
    scrubber = Scrubber()
    scrubber.add(SECRET)
    assert scrubber.scrub(f"Bad request: apikey={spelled}&x=1") == f"Bad request: apikey={MASK}&x=1"


def test_outside_text_is_capped_and_short_values_are_not_secrets() -> None:
    scrubber = Scrubber()
    scrubber.add("ab")  # too short to mask without mangling ordinary words
    assert scrubber.scrub("ab cd") == "ab cd"
    capped = scrubber.scrub("x" * 5000, limit=100)
    assert capped.startswith("x" * 100) and "4900 more characters" in capped


def test_a_vendor_error_names_its_vendor_once() -> None:
    inner = VendorError("login refused", vendor="ameyo")
    outer = VendorError(str(inner), vendor="ameyo")
    assert str(outer) == "ameyo: login refused"
