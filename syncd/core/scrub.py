"""Text that came from outside, cleaned of every configured secret before it is kept or shown.

A dialer, a proxy or a CRM may echo the request in its error answer, and with it
an API key, a password or a bearer token. Every secret the configuration holds is
registered here when the settings load; :func:`scrub` replaces each of them, in
every spelling a request may have carried it (plain, URL- and form-encoded,
base64, JSON-escaped), and caps the length of the text.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import urllib.parse

MASK = "***"
MAX_TEXT = 2000  # characters of outside text kept in one reason
MIN_SECRET = 4  # shorter values would mask ordinary words


class Scrubber:
    """Knows the secrets and replaces them; one per process, shared by every thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, *secrets: str) -> None:
        """Register secret values (each in every spelling a request may carry it)."""
        with self._lock:
            for secret in secrets:
                if len(secret) >= MIN_SECRET:
                    self._forms.update(spellings(secret))
            ordered = sorted(self._forms, key=len, reverse=True)  # longest first
            self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def scrub(self, text: str, limit: int = MAX_TEXT) -> str:
        """Return ``text`` with every registered secret masked, at most ``limit`` characters."""
        pattern = self._pattern
        if pattern is not None and text:
            text = pattern.sub(MASK, text)
        if len(text) > limit:
            text = text[:limit] + f"… ({len(text) - limit} more characters)"
        return text


def spellings(secret: str) -> set[str]:
    """Return the ways a request can carry ``secret``."""
    raw = secret.encode()
    forms = {
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        json.dumps(secret)[1:-1],
    }
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = encoded.decode()
        forms.update({text, text.rstrip("=")})
    return {f for f in forms if len(f) >= MIN_SECRET}


SCRUBBER = Scrubber()


def register_secrets(*secrets: str) -> None:
    """Register the configuration's secrets for every later :func:`scrub` in this process."""
    SCRUBBER.add(*secrets)


def scrub(text: str, limit: int = MAX_TEXT) -> str:
    """Return outside ``text`` with every configured secret masked and its length capped."""
    return SCRUBBER.scrub(text, limit)
