"""A request-size limit in front of a simulator, as a proxy's ``client_max_body_size`` is.

Requests whose body is larger than ``max_bytes`` (and that carry one of ``only``'s
markers, when given) are answered 413 without reaching the dialer.
"""

from __future__ import annotations

import threading
from typing import Any

from starlette.responses import PlainTextResponse

from tests.support.reliability import _buffered


class BodyLimit:
    """ASGI middleware answering HTTP 413 to requests over ``max_bytes``; counts them."""

    def __init__(self, app: Any, max_bytes: int, *, only: tuple[bytes, ...] = ()) -> None:
        self.app = app
        self.state = getattr(app, "state", None)
        self.max_bytes = max_bytes
        self.only = only
        self.refused: list[int] = []  # the size of each request answered 413
        self.passed: list[int] = []  # the size of each marked request let through
        self._lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith("/_sim"):
            await self.app(scope, receive, send)
            return
        receive, body = await _buffered(receive)
        seen = str(scope["path"]).encode() + b"?" + bytes(scope.get("query_string", b""))
        marked = not self.only or any(m in seen or m in body for m in self.only)
        if marked and len(body) > self.max_bytes:
            with self._lock:
                self.refused.append(len(body))
            await PlainTextResponse("Request Entity Too Large", status_code=413)(
                scope, receive, send
            )
            return
        if marked:
            with self._lock:
                self.passed.append(len(body))
        await self.app(scope, receive, send)


class Answering:
    """ASGI middleware answering the first marked requests with scripted statuses.

    ``script`` is a list of (status, Retry-After or None): the n-th request carrying one
    of ``only``'s markers gets the n-th answer, without reaching the dialer; later
    requests go through.
    """

    def __init__(
        self, app: Any, script: list[tuple[int, str | None]], *, only: tuple[bytes, ...]
    ) -> None:
        self.app = app
        self.state = getattr(app, "state", None)
        self.script = list(script)
        self.only = only
        self.answered: list[int] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith("/_sim"):
            await self.app(scope, receive, send)
            return
        receive, body = await _buffered(receive)
        seen = str(scope["path"]).encode() + b"?" + bytes(scope.get("query_string", b""))
        answer = None
        if any(m in seen or m in body for m in self.only):
            with self._lock:
                if self.script:
                    answer = self.script.pop(0)
                    self.answered.append(answer[0])
        if answer is None:
            await self.app(scope, receive, send)
            return
        status, retry_after = answer
        headers = {"Retry-After": retry_after} if retry_after is not None else None
        await PlainTextResponse("busy", status_code=status, headers=headers)(scope, receive, send)
