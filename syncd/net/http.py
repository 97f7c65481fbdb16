"""One HTTP policy for every vendor: timeouts, the status-to-error mapping, parsing.

Vendor clients build on this and translate answers into the typed errors of
``syncd.errors``; the retry loop here only ever retries ``RetryableError``.

The retries live in :mod:`syncd.net.retry`, the per-sink breaker and limits in
:mod:`syncd.net.guard`; ``status_error`` and ``transport_error`` here are the one
mapping from HTTP answers to syncd's errors that every vendor client shares.
"""

from __future__ import annotations

import json
import re
import socket
import urllib.parse
from collections.abc import Mapping
from typing import Any, TypeVar

import httpx
import orjson
import structlog

from syncd.errors import BatchTooLarge, PermanentError, RetryableError, SinkConfigError
from syncd.net.ratelimit import RequestLimits
from syncd.net.retry import MIN_WAIT_S, parse_retry_after

T = TypeVar("T")
log = structlog.get_logger("syncd.http")

HOLD_STATUSES = (429, 503)  # answers whose Retry-After holds back the whole sink
MAX_INLINE_HOLD_S = 15.0  # a longer Retry-After hold fails the request instead of sleeping


NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"

# Percent-encoding for every ASCII character outside the unreserved set. urllib's
# quote_plus loops in Python; one str.replace per special character runs in C and
# is ~4x faster on the large JSON payloads (hundreds of records) dialers take in
# one form field. "%" goes first (later escapes add "%"), space last (it becomes "+").
_FORM_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")
_FORM_ESCAPES = (
    [("%", "%25")]
    + [(chr(i), f"%{i:02X}") for i in range(128) if chr(i) not in _FORM_SAFE and chr(i) not in "% "]
    + [(" ", "+")]
)


def _escape_ascii(text: str) -> str:
    for char, escaped in _FORM_ESCAPES:
        if char in text:
            text = text.replace(char, escaped)
    return text


def wire_json(value: Any) -> str:
    """Return compact JSON text, ASCII-only (non-ASCII escaped), for a request body.

    orjson is ~8x faster than json on a 500-record batch; its output is UTF-8, so a
    batch holding a non-ASCII name takes json's escaping instead, and the form
    encoding keeps its fast ASCII path either way.
    """
    try:
        text = orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # a lone surrogate, an int key: json takes them
        text = ""
    return text if text and text.isascii() else json.dumps(value, separators=(",", ":"))


def encode_form(fields: dict[str, str]) -> bytes:
    """Return an application/x-www-form-urlencoded body, identical to urllib's urlencode."""
    parts = []
    for name, value in fields.items():
        if value.isascii() and name.isascii():
            parts.append(f"{_escape_ascii(name)}={_escape_ascii(value)}")
        else:
            parts.append(urllib.parse.urlencode({name: value}))
    return "&".join(parts).encode("ascii")


def make_client(
    *,
    timeout_s: float,
    verify_tls: bool,
    max_connections: int = 8,
    guard: RequestLimits | None = None,
) -> httpx.AsyncClient:
    """Return an httpx client with connect/read timeouts and a bounded pool.

    With ``guard``, every request waits for the sink's rate, concurrency and
    Retry-After hold, and a 429/503 with Retry-After holds the whole sink.
    """
    timeout = httpx.Timeout(timeout_s, connect=min(10.0, timeout_s))
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    # httpx writes a POST's headers and body separately; with Nagle on, the body
    # waits for the server's delayed ACK (~40 ms a request on Linux).
    inner = httpx.AsyncHTTPTransport(verify=verify_tls, limits=limits, socket_options=NODELAY)
    if guard is None:
        return httpx.AsyncClient(timeout=timeout, transport=inner)
    transport = GuardedTransport(inner, guard)
    guard.per_request = True
    return httpx.AsyncClient(timeout=timeout, transport=transport)


def human_seconds(seconds: float) -> str:
    """Return ``90`` as ``1.5 min``, ``86400`` as ``24 h``: what a person reads in a reason."""
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"


# A request extension: this request goes ahead of those queued for the sink's rate
# (a new login and the replay of the request that found the session expired).
URGENT = "syncd.urgent"


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that applies one sink's RequestLimits to every request."""

    def __init__(self, inner: httpx.AsyncBaseTransport, limits: RequestLimits) -> None:
        self.inner = inner
        self.limits = limits

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        held = self.limits.limiter.held_for()
        if held > MAX_INLINE_HOLD_S:
            # Sleeping out a long Retry-After inside a call would outlast `--once`'s
            # deadline and ignore SIGTERM; the lead waits in the outbox instead.
            raise RetryableError(self.limits.hold_text(held), retry_after=held)
        async with self.limits.slot(urgent=bool(request.extensions.get(URGENT))):
            response = await self.inner.handle_async_request(request)
        if response.status_code in HOLD_STATUSES:
            wait = parse_retry_after(response.headers.get("retry-after"))
            if wait is not None:
                self.limits.hold(max(wait, MIN_WAIT_S))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def transport_error(exc: httpx.HTTPError, vendor: str) -> RetryableError:
    """Return the RetryableError for a timeout, reset or refused connection."""
    kind = type(exc).__name__
    error = RetryableError(f"{kind} talking to the dialer", vendor=vendor)
    error.public = kind
    return error


def raise_for_http(
    response: httpx.Response, vendor: str, what: str, hints: Mapping[int, str] | None = None
) -> None:
    """Raise the typed error of an HTTP answer that failed; return for any other.

    The one mapping every dialer client shares: 408, 429 and 5xx are transient
    (``RetryableError``, with Retry-After); 401, 403 and 404 mean the sink is set up
    wrong (``SinkConfigError``: it stops until fixed); 413 says the request was too
    large (``BatchTooLarge``: the push loop halves the batch); any other 4xx refuses the
    request (``PermanentError``). ``hints`` adds what to check, per status.
    """
    retryable = status_error(response, vendor)
    if retryable is not None:
        raise retryable
    code = response.status_code
    hint = (hints or {}).get(code)
    message = f"{what}: HTTP {code}" + (f" ({hint})" if hint else "")
    if code in (401, 403, 404):
        raise SinkConfigError(message, vendor=vendor, code=str(code))
    if code == 413:
        error = BatchTooLarge(message, vendor=vendor, code="413")
        error.public = "HTTP 413 (request too large)"
        raise error
    if code >= 400:
        raise PermanentError(message, vendor=vendor, code=str(code))


def status_error(response: httpx.Response, vendor: str) -> RetryableError | None:
    """Return a RetryableError for 429/5xx/408 answers, None for anything else."""
    if response.status_code in (408, 429) or response.status_code >= 500:
        error = RetryableError(
            f"HTTP {response.status_code}",
            vendor=vendor,
            code=str(response.status_code),
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
        error.public = f"HTTP {response.status_code}"
        return error
    return None


_CURLY = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'"})
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def lenient_json(text: str) -> Any:
    """Return parsed JSON, forgiving curly quotes and trailing commas; ValueError if not JSON.

    The vendors' documents show such bodies; servers built from them sometimes send them.
    """
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    repaired = _TRAILING_COMMA.sub(r"\1", stripped.translate(_CURLY))
    try:
        return json.loads(repaired)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def looks_like_html(text: str) -> bool:
    head = text.lstrip()[:200].lower()
    return head.startswith(("<!doctype", "<html", "<?xml")) or "<body" in head
