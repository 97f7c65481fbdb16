"""What Jodo's refusals mean, as reason codes for the shared surfaces (syncd.core.reasons).

Jodo answers a refused record in words (``Duplicate record in process``, ``Invalid
mobile number …``); this package understands them, so it names their code. Each code
is a constant: nothing of the reply is carried over.
"""

from __future__ import annotations

import re

_CODES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), code)
    for pattern, code in (
        (r"Jodo cannot remove a lead", "cannot remove"),
        (r"\bduplicate\b", "duplicate in dialer"),
        (r"invalid (mobile|phone|number)", "invalid phone at the dialer"),
        (r"customer data not found|no number known", "not found at the dialer"),
        (r"unknown media", "unknown media"),
    )
)


def reason_code(reason: str) -> str | None:
    """Return the code of one of Jodo's refusals, None when it is not one of these."""
    for pattern, code in _CODES:
        if pattern.search(reason):
            return code
    return None
