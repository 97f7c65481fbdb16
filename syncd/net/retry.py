"""Retries inside one call: bounded by attempts and time, Retry-After honoured, one log line each.

The outbox's own backoff (``syncd.run.push.backoff``) takes over once these run
out. stamina does the looping; its own instrumentation is switched off so that a
retry is logged once (``http.retry``) and counted in syncd's own metrics.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import stamina
import structlog

from syncd.errors import RetryableError, SinkHeld

T = TypeVar("T")
log = structlog.get_logger("syncd.http")

MIN_WAIT_S = 0.05  # floor for a Retry-After of 0: a retry is never a busy loop
MAX_RETRY_AFTER_S = 86_400.0  # a Retry-After further out than a day is a broken header

# (vendor, what) -> retries so far in this process; /metrics reads it.
RETRIES: Counter[tuple[str, str]] = Counter()

# stamina would log every retry again (``stamina.retry_scheduled`` with no useful
# context) and count it in a Prometheus registry /metrics never shows.
stamina.instrumentation.set_on_retry_hooks([])


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
    # Set when syncd stops or reloads: no further attempt starts (the last error stands;
    # the outbox tries again after the restart), so a stop waits for no retry.
    stopping: asyncio.Event | None = field(default=None, compare=False)


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


def _backoff_hook(
    policy: RetryPolicy, vendor: str, what: str
) -> Callable[[Exception], bool | float]:
    """Return a stamina backoff hook: full-jitter exponential waits within the budget.

    It is also where each retry is logged (``http.retry``, once per retry, with the
    wait and the cause) and counted for ``syncd_http_retries_total``.
    """
    started = time.monotonic()
    retries = 0

    def hook(exc: Exception) -> bool | float:
        nonlocal retries
        if not isinstance(exc, RetryableError) or isinstance(exc, SinkHeld):
            return False  # a held sink waits in the push loop, not inside one call
        if retries + 1 >= policy.attempts:
            return False  # the last attempt failed: no retry to announce
        if policy.stopping is not None and policy.stopping.is_set():
            log.info(
                "http.retry.skipped",
                vendor=vendor,
                what=what,
                reason="syncd is stopping or reloading",
            )
            return False
        if exc.retry_after is not None:
            if exc.retry_after > policy.wait_max_s:
                return False  # a long wait belongs to the outbox, not to an open call
            wait = max(exc.retry_after, MIN_WAIT_S)
        else:
            ceiling = min(policy.wait_max_s, policy.wait_initial_s * 2**retries)
            wait = max(MIN_WAIT_S, random.uniform(0, ceiling))
        if time.monotonic() - started + wait > policy.timeout_s:
            return False  # sleeping would overrun the call's time budget
        retries += 1
        RETRIES[(vendor, what)] += 1
        log.info(
            "http.retry",
            vendor=vendor,
            what=what,
            attempt=retries + 1,
            wait_s=round(wait, 3),
            reason=str(exc),
        )
        return wait

    return hook


async def with_retries(
    call: Callable[[], Awaitable[T]], policy: RetryPolicy, *, vendor: str, what: str
) -> T:
    """Return ``call()``'s result, retrying RetryableError with jittered exponential backoff."""
    async for attempt in stamina.retry_context(
        on=_backoff_hook(policy, vendor, what),
        attempts=policy.attempts,
        timeout=policy.timeout_s,
        wait_initial=policy.wait_initial_s,
        wait_max=policy.wait_max_s,
    ):
        with attempt:
            return await call()
    raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover
