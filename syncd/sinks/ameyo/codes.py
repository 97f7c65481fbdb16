"""What Ameyo's refusals mean, as reason codes for the shared surfaces
(syncd.core.reasons): its result types, in words. Each code is a constant, nothing of a
reply is carried over."""

from __future__ import annotations

import re

_TYPES = {
    "INVALID_RECORD_FAILED": "invalid record",
    "PREPROCESSING_INVALID_LENGTH": "invalid phone length",
    "PREPROCESSOR_NOT_NULLABLE_COLUMN_GIVEN_NULL": "missing field at the dialer",
    "INVALID_CONFIGURATION": "invalid configuration",
    "NOT_MIGRATED": "customer in another lead",
    "ADD_FAILED": "add failed",
    "UPDATE_FAILED": "update failed",
}
_LEADING = re.compile(r"^(?:ameyo: )?(?:\w+: )?([A-Z][A-Z_]+)\b")


def reason_code(reason: str) -> str | None:
    """Return the code of one of Ameyo's results, None when it is not one of these."""
    found = _LEADING.match(reason)
    if found is None:
        return None
    said = _TYPES.get(found.group(1))
    return f"{said} ({found.group(1)})" if said else None
