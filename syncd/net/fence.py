"""A check right before a request leaves for the dialer: is what it carries still ours?

The push sets one for the batch it sends (:func:`fenced`); the guarded transport of
every sink's client awaits it once the request has its turn at the rate limit and a
slot, the last moment before the bytes leave. A replica that froze between its claim
and this moment (a VM pause, SIGSTOP) finds there that another replica took its leads
over, and the check raises instead of sending them twice. Nothing here knows what a
claim is: the check is whatever the caller set.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

Check = Callable[[], Awaitable[None]]

_BEFORE_SEND: ContextVar[Check | None] = ContextVar("syncd_before_send", default=None)


@contextmanager
def fenced(check: Check) -> Iterator[None]:
    """Run ``check`` before each request this task sends inside the block."""
    token = _BEFORE_SEND.set(check)
    try:
        yield
    finally:
        _BEFORE_SEND.reset(token)


async def before_send() -> None:
    """Await the current task's check, if one is set (it raises to stop the request)."""
    check = _BEFORE_SEND.get()
    if check is not None:
        await check()
