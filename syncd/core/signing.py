"""HMAC-SHA256 request signatures: the one convention syncd signs and checks with.

The webhook writeback signs what it POSTs to a CRM, and the webhook source checks
what a CRM or a form backend POSTs to syncd, the same way (Stripe's and Slack's
scheme): ``<timestamp>.<body>`` under the shared secret, sent as
``sha256=<hex>`` beside the Unix timestamp. Pure: no clock, no I/O.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Syncd-Signature"
TIMESTAMP_HEADER = "X-Syncd-Timestamp"


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """Return the signature header value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify(secret: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    """Return True when ``signature`` is this body's at ``timestamp`` (in constant time)."""
    if not timestamp.isascii() or not signature.isascii():
        return False
    # Hex is hex in either case (some senders write it upper-case).
    return hmac.compare_digest(sign(secret, timestamp, body), signature.lower())


def fresh(timestamp: str, now: float, tolerance_s: float) -> bool:
    """Return True when ``timestamp`` (Unix seconds) is within ``tolerance_s`` of ``now``,
    either way: a stale request may be a replay, one from the future a wrong clock."""
    if not timestamp.isdigit() or len(timestamp) > 12:
        return False
    return abs(now - int(timestamp)) <= tolerance_s
