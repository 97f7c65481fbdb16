"""One session mechanism for every dialer that logs in: attach, renew once, replay.

A vendor client passes ``auth=session`` (a :class:`SessionAuth`) on each request
that needs the session. The vendor supplies only a :class:`SessionVendor`: how to
log in, how to put the token on a request (a header, a form field, a value inside
the body) and how it recognises an answer that says the session is gone. The rest
is here, once:

- the first request logs in (lazily, one login however many requests wait for it);
- an answer that says the session expired renews it **once**: concurrent requests
  that met the same expired token wait for that one login instead of each logging
  in (the login *generation* each request used tells whether someone renewed since);
- the request is then replayed with the new token, marked ``URGENT`` so that it goes
  ahead of the sink's queued requests: behind them, a short session would expire
  again before its own replay went out;
- a replay that is refused again is an error (:class:`SessionExpiredError`), never
  a loop; a refused login (the vendor raises ``SinkConfigError``) stops the sink.

httpx runs this as the request's auth flow: the login and the replay go through the
same client, so the sink's rate limit, concurrency cap and Retry-After hold apply
to them as to every other request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any, Protocol

import httpx
import structlog

from syncd.errors import SessionExpiredError
from syncd.net.http import CAP, FORM_CONTENT_TYPE, REPLY_CAP, URGENT, encode_form, read_reply


class SessionVendor(Protocol):
    """What one dialer's session needs from its client: log in, attach, recognise expiry."""

    vendor: str  # names the dialer in errors

    async def login(self) -> str:
        """Log in and return the new token.

        Raise ``SinkConfigError`` when the dialer refuses the credentials (the sink
        stops until fixed), another VendorError when the login could not be done now.
        The login request must not use the session itself (``auth=None``).
        """
        ...

    def attach(self, request: httpx.Request, token: str) -> httpx.Request:
        """Return ``request`` carrying ``token`` (it may be changed in place or rebuilt)."""
        ...

    def expired(self, response: httpx.Response, *, replayed: bool) -> str | None:
        """Return why ``response`` says the session is gone; None when it does not.

        ``replayed`` is True for the answer to a replay after a new login: a vendor
        whose expiry answer is ambiguous (uContact's bare ``0`` is also a refusal)
        says there whether that answer can still mean an expired session.
        """
        ...


class SessionAuth(httpx.Auth):
    """The one session of a sink, shared by all its workers; an ``httpx.Auth``."""

    # A replay sends the body again (it must be re-readable), and an expired session
    # is often told in the body of an HTTP 200.
    requires_request_body = True
    requires_response_body = True

    def __init__(
        self,
        vendor: SessionVendor,
        *,
        log: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.vendor = vendor
        self.log = log or structlog.get_logger("syncd.sink")
        self.clock = clock  # monotonic: when the session was last proved alive
        self._lock = asyncio.Lock()
        self.token: str | None = None
        self.generation = 0  # login attempts so far: tells a waiter whether one happened
        self._failure: BaseException | None = None  # how the latest attempt failed, if it did
        self.logins = 0
        self.last_ok = 0.0  # monotonic time of the last answer that proved the session alive
        self.state = "none"  # none | valid | expired | failed

    # -- the token ------------------------------------------------------------

    async def current(self) -> str:
        """Return the token, logging in first if there is none."""
        token, _ = await self._current()
        return token

    async def renew(self, seen: int, why: str) -> str:
        """Return a valid token, logging in again only if nobody did since login ``seen``.

        ``seen`` is the :attr:`generation` whose token the dialer refused. Twenty
        requests that fail together all pass the same one: the first logs in, the
        others get its token (or its error) without logging in again.
        """
        async with self._lock:
            if self.generation != seen:
                return self._outcome()
            self.state = "expired"
            self.token = None
            self.log.warning("sink.session.expired", reason=why)
            await self._login("expired")
            assert self.token is not None
            return self.token

    def forget(self) -> str | None:
        """Drop the token (before a logout); return the one that was held."""
        held, self.token = self.token, None
        self.state = "none"
        return held

    async def _current(self) -> tuple[str, int]:
        if self.token is not None:
            return self.token, self.generation
        seen = self.generation
        async with self._lock:
            if self.generation != seen:
                return self._outcome(), self.generation
            if self.token is None:
                await self._login("start")
            assert self.token is not None
            return self.token, self.generation

    def _outcome(self) -> str:
        """Return the token of the login another request made meanwhile, or raise its error."""
        if self.token is not None:
            return self.token
        if self._failure is not None:
            raise self._failure
        raise SessionExpiredError("the session was dropped meanwhile", vendor=self.vendor.vendor)

    async def _login(self, reason: str) -> None:
        try:
            token = await self.vendor.login()
        except Exception as exc:
            self.state = "failed"
            self._failure = exc
            raise
        finally:
            # Counted when the attempt is over: a request that arrives meanwhile must
            # still see the generation before it, and then wait for this attempt's outcome.
            self.generation += 1
        self.token = token
        self._failure = None
        self.logins += 1
        self.state = "valid"
        self.last_ok = self.clock()
        self.log.info("sink.session.login", reason=reason, logins=self.logins)

    # -- the flow ------------------------------------------------------------

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        await request.aread()
        token, generation = await self._current()
        # Read here, for the session's answer, with the cap the caller's read has.
        cap = int(request.extensions.get(CAP, REPLY_CAP))
        response = yield self.vendor.attach(request, token)
        await read_reply(response, cap)
        why = self.vendor.expired(response, replayed=False)
        if why is None:
            self._answered(response)
            return
        fresh = await self.renew(generation, why)
        replay = self.vendor.attach(request, fresh)
        replay.extensions = {**replay.extensions, URGENT: True}
        response = yield replay
        await read_reply(response, cap)
        again = self.vendor.expired(response, replayed=True)
        if again is not None:
            raise SessionExpiredError(
                f"{again}: the session was refused again right after a new login",
                vendor=self.vendor.vendor,
            )
        self._answered(response)

    def _answered(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            self.last_ok = self.clock()

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("SessionAuth works with httpx.AsyncClient only")


def with_form(request: httpx.Request, fields: dict[str, str]) -> httpx.Request:
    """Return a copy of ``request`` whose body is ``fields``, form-encoded.

    For a vendor whose token travels inside the body: its ``attach`` rebuilds the
    body around the token (headers, URL and extensions stay as they were).
    """
    headers = request.headers.copy()
    for name in ("content-length", "content-type", "transfer-encoding"):
        headers.pop(name, None)
    headers["content-type"] = FORM_CONTENT_TYPE
    return httpx.Request(
        request.method,
        request.url,
        headers=headers,
        content=encode_form(fields),
        extensions=dict(request.extensions),
    )
