"""One HTTP policy for every vendor: timeouts, retries with backoff, Retry-After, limits, parsing.

Vendor clients build on this and translate answers into the typed errors of
``syncd.errors``; the retry loop here only ever retries ``RetryableError``.

Per sink, one ``SinkGuard`` (``guard_for(sink)``) holds the circuit breaker and
the request limits (rate, concurrency, Retry-After hold). The push loop uses it
around every push; a vendor client that builds its HTTP client with
``make_client(..., guard=guard_for(self).limits)`` gets the limits applied to
every single request (polls and keepalives included) instead.
"""

from __future__ import annotations

import email.utils
import json
import math
import random
import re
import socket
import time
import urllib.parse
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httpx
import stamina
import structlog

from syncd.config import SinkConfig
from syncd.errors import RetryableError
from syncd.net.breaker import CircuitBreaker
from syncd.net.ratelimit import RequestLimits

T = TypeVar("T")
log = structlog.get_logger("syncd.http")

MIN_WAIT_S = 0.05  # floor for a Retry-After of 0: a retry is never a busy loop
MAX_RETRY_AFTER_S = 86_400.0  # a Retry-After further out than a day is a broken header
HOLD_STATUSES = (429, 503)  # answers whose Retry-After holds back the whole sink


@dataclass(frozen=True)
class RetryPolicy:
    """In-call retries; the outbox's own backoff takes over when these run out.

    Waits grow exponentially from ``wait_initial_s`` with full jitter (a uniform
    draw between 0 and the ceiling), capped at ``wait_max_s``; the whole call,
    waits included, stays within ``timeout_s``. A Retry-After longer than
    ``wait_max_s`` ends the call at once: the lead waits in the outbox instead of
    holding a connection and a worker.
    """

    attempts: int = 4
    timeout_s: float = 60.0
    wait_initial_s: float = 0.5
    wait_max_s: float = 15.0


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


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that applies one sink's RequestLimits to every request."""

    def __init__(self, inner: httpx.AsyncBaseTransport, limits: RequestLimits) -> None:
        self.inner = inner
        self.limits = limits

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        async with self.limits.slot():
            response = await self.inner.handle_async_request(request)
        if response.status_code in HOLD_STATUSES:
            wait = parse_retry_after(response.headers.get("retry-after"))
            if wait is not None:
                self.limits.hold(max(wait, MIN_WAIT_S))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


# -- per-sink guard ---------------------------------------------------------------


class _SinkLike(Protocol):
    name: str
    config: SinkConfig


@dataclass
class SinkGuard:
    """The circuit breaker and request limits of one sink, shared by all its callers."""

    breaker: CircuitBreaker
    limits: RequestLimits

    def details(self) -> dict[str, Any]:
        """Return what status pages show about the breaker and the throttle."""
        return {
            "breaker": self.breaker.snapshot(),
            "throttle": {
                "rate_limit_per_s": self.limits.limiter.rate_per_s,
                "max_in_flight": self.limits.max_in_flight,
                "in_flight": self.limits.in_flight,
                "held_for_s": round(self.limits.limiter.held_for(), 3),
            },
        }


_GUARDS: weakref.WeakKeyDictionary[Any, SinkGuard] = weakref.WeakKeyDictionary()


def guard_for(sink: _SinkLike) -> SinkGuard:
    """Return the one SinkGuard of ``sink``, created from its config on first use."""
    guard = _GUARDS.get(sink)
    if guard is None:
        cfg = sink.config
        guard = SinkGuard(
            breaker=CircuitBreaker(
                sink.name,
                failure_threshold=cfg.breaker_failures,
                reset_s=cfg.breaker_reset_s,
                max_reset_s=max(cfg.breaker_reset_s, cfg.retry_max_s),
            ),
            limits=RequestLimits(
                sink.name, rate_per_s=cfg.rate_limit_per_s, max_in_flight=cfg.max_in_flight
            ),
        )
        _GUARDS[sink] = guard
    return guard


def all_guards() -> list[tuple[str, SinkGuard]]:
    """Return (sink name, guard) of every live sink, for metrics."""
    return [(getattr(sink, "name", "?"), guard) for sink, guard in list(_GUARDS.items())]


# -- retries --------------------------------------------------------------------


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Return the seconds a ``Retry-After`` header asks for (delta or HTTP-date form)."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", value):
        seconds = min(float(value), MAX_RETRY_AFTER_S)  # 400 nines are inf, not NaN
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
            seconds = when.timestamp() - (time.time() if now is None else now)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


def _backoff_hook(policy: RetryPolicy) -> Callable[[Exception], bool | float]:
    """Return a stamina backoff hook: full-jitter exponential waits within the budget."""
    started = time.monotonic()
    retries = 0

    def hook(exc: Exception) -> bool | float:
        nonlocal retries
        if not isinstance(exc, RetryableError):
            return False
        if exc.retry_after is not None:
            if exc.retry_after > policy.wait_max_s:
                return False  # a long wait belongs to the outbox, not to an open call
            wait = max(exc.retry_after, MIN_WAIT_S)
        else:
            retries += 1
            ceiling = min(policy.wait_max_s, policy.wait_initial_s * 2 ** (retries - 1))
            wait = max(MIN_WAIT_S, random.uniform(0, ceiling))
        if time.monotonic() - started + wait > policy.timeout_s:
            return False  # sleeping would overrun the call's time budget
        return wait

    return hook


async def with_retries(
    call: Callable[[], Awaitable[T]], policy: RetryPolicy, *, vendor: str, what: str
) -> T:
    """Return ``call()``'s result, retrying RetryableError with jittered exponential backoff."""
    attempt_no = 0
    async for attempt in stamina.retry_context(
        on=_backoff_hook(policy),
        attempts=policy.attempts,
        timeout=policy.timeout_s,
        wait_initial=policy.wait_initial_s,
        wait_max=policy.wait_max_s,
    ):
        with attempt:
            attempt_no += 1
            if attempt_no > 1:
                log.info("http.retry", vendor=vendor, what=what, attempt=attempt_no)
            return await call()
    raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover


def transport_error(exc: httpx.HTTPError, vendor: str) -> RetryableError:
    """Return the RetryableError for a timeout, reset or refused connection."""
    kind = type(exc).__name__
    return RetryableError(f"{kind} talking to the dialer", vendor=vendor)


def status_error(response: httpx.Response, vendor: str) -> RetryableError | None:
    """Return a RetryableError for 429/5xx/408 answers, None for anything else."""
    if response.status_code in (408, 429) or response.status_code >= 500:
        return RetryableError(
            f"HTTP {response.status_code}",
            vendor=vendor,
            code=str(response.status_code),
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
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
