"""What uContact's refusals mean, as reason codes for the shared surfaces
(syncd.core.reasons). uContact answers most calls with ``1`` or ``0``; each code is a
constant, nothing of a reply is carried over."""

from __future__ import annotations

import re

_CODES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), code)
    for pattern, code in (
        (r"no phone number to dial", "no phone number to dial"),
        (r"\banswered 0\b", "refused (answered 0)"),
        (r"expected 1 or 0", "unreadable answer (in doubt)"),
        (r"\bduplicate\b", "duplicate in dialer"),
    )
)


def reason_code(reason: str) -> str | None:
    """Return the code of one of uContact's refusals, None when it is not one of these."""
    for pattern, code in _CODES:
        if pattern.search(reason):
            return code
    return None
