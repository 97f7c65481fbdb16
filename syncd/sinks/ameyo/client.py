"""A thin client for Ameyo's Customer Manager API, and the session it shares.

Every command is ``POST …/ameyowebaccess/command?command=<id>`` with the form field
``data=<JSON>``. Replies are JSON, often sent as ``text/plain``, and errors often
come with HTTP 200, so every body is parsed; an empty body, ``null`` or an HTML page
is never a success. A session-invalid answer (four shapes, see ``replies``) makes
the client log in again once and replay the request; concurrent requests that fail
together share that one login.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import structlog

from syncd.errors import (
    PermanentError,
    RetryableError,
    SessionExpiredError,
    SinkConfigError,
    SinkHeld,
    VendorError,
)
from syncd.net.http import (
    URGENT,
    lenient_json,
    looks_like_html,
    raise_for_http,
    transport_error,
)
from syncd.net.retry import RetryPolicy
from syncd.net.retry import with_retries as _with_retries
from syncd.sinks.ameyo.config import AmeyoSinkConfig, HeaderAuth, SessionAuth
from syncd.sinks.ameyo.replies import (
    error_text,
    hold_reason,
    is_session_error,
    looks_like_login_page,
)

VENDOR = "ameyo"
HTTP_HINTS = dict.fromkeys((401, 403, 404), "check the sink's url and auth")
DEFAULT_PING_S = 20.0  # the document's pingInterval
SESSIONLESS = frozenset({"login"})


class EmptyAnswer(RetryableError):
    """The reply was empty or ``null``: a glitch for most commands, a refusal for a login."""


class InvalidSession(SessionExpiredError):
    """Ameyo says the session id is not (or no longer) valid."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, vendor=VENDOR)


class AmeyoRefused(PermanentError):
    """Ameyo answered a command with an error shape that is not about the session."""

    def __init__(self, command: str, detail: str) -> None:
        self.command = command
        self.detail = detail
        super().__init__(f"{command} refused: {detail}", vendor=VENDOR)


class Session:
    """The one login shared by every worker of a sink.

    ``renew(stale)`` logs in only if ``stale`` is still the current id: when twenty
    requests fail together, the first renews and the other nineteen reuse its id.
    """

    def __init__(self, client: AmeyoClient, auth: SessionAuth, log: Any) -> None:
        self._client = client
        self._auth = auth
        self._log = log
        self._lock = asyncio.Lock()
        self.id: str | None = None
        self.logins = 0
        self.ping_interval_s = DEFAULT_PING_S
        self.timeout_s: float | None = None  # sessionTimeout from the login answer
        self.last_ok = 0.0  # monotonic time of the last answer that proved the session alive
        self.state = "none"  # none | valid | expired | failed

    def keepalive_s(self) -> float:
        """Return how often to ping: the server's pingInterval, but at least three times per
        sessionTimeout, so a ping delayed by the rate limit still lands in time."""
        if self.timeout_s is None:
            return self.ping_interval_s
        return min(self.ping_interval_s, self.timeout_s / 3)

    async def current(self) -> str:
        """Return the session id, logging in first if there is none."""
        if self.id is not None:
            return self.id
        async with self._lock:
            if self.id is None:
                await self._login("start")
            assert self.id is not None
            return self.id

    async def renew(self, stale: str | None, why: str) -> str:
        """Return a valid session id, logging in again only if ``stale`` is still current."""
        async with self._lock:
            if self.id is not None and self.id != stale:
                return self.id
            self.state = "expired"
            self._log.warning("sink.session.expired", reason=why)
            self.id = None
            await self._login("expired")
            assert self.id is not None
            return self.id

    async def _login_answer(self, data: dict[str, Any]) -> Any:
        """Return the login answer; a refusal stated as `null` reads as one.

        Ameyo answers a wrong user or password with HTTP 200 and `null`. A `null` can
        also be a glitch, so it counts as a refusal only when a second try says it again.
        """
        for tries_left in (1, 0):
            try:
                # Every other request waits on the session: the login goes first.
                return await self._client.send("login", data, urgent=True)
            except EmptyAnswer:
                if not tries_left:
                    return {"status": "error", "reason": "the server answered null twice"}
        raise AssertionError("unreachable")  # pragma: no cover

    async def _login(self, reason: str) -> None:
        data = {
            "userId": self._auth.user_id,
            "password": self._auth.password.get_secret_value(),
            "terminal": self._auth.terminal,
        }
        try:
            body = await self._login_answer(data)
        except AmeyoRefused as exc:
            body = {"status": "error", "reason": exc.detail}
        except VendorError:
            self.state = "failed"
            raise
        session_id = body.get("sessionId") if isinstance(body, dict) else None
        if not session_id:
            self.state = "failed"
            why = error_text(body) or "no sessionId in the answer"
            raise SinkConfigError(
                f"login as {self._auth.user_id!r} refused: {why}; check auth.user_id, "
                "auth.password and that the user has the Customer Manager role",
                vendor=VENDOR,
            )
        self.id = str(session_id)
        self.logins += 1
        self.state = "valid"
        self.last_ok = self._client.clock()
        interval = body.get("pingInterval")
        if isinstance(interval, int | float) and not isinstance(interval, bool) and interval > 0:
            self.ping_interval_s = float(interval) / 1000
        timeout = body.get("sessionTimeout")
        if isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > 0:
            self.timeout_s = float(timeout) / 1000
        self._log.info(
            "sink.session.login",
            reason=reason,
            user=self._auth.user_id,
            ping_interval_s=self.ping_interval_s,
        )

    def forget(self) -> str | None:
        """Drop the session id (after logout); return the one that was held."""
        held, self.id = self.id, None
        self.state = "none"
        return held


class AmeyoClient:
    """Calls one Ameyo server, either through a Customer Manager session or cloud headers."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        config: AmeyoSinkConfig,
        *,
        log: Any = None,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.http = http
        self.clock = clock  # monotonic: when the session was last proved alive
        self.url = config.command_url
        self.policy = policy or RetryPolicy()
        self.log = log or structlog.get_logger("syncd.sink").bind(sink=config.name)
        self.requests = 0
        self._headers: dict[str, str] = {}
        self.session: Session | None = None
        if isinstance(config.auth, SessionAuth):
            self.session = Session(self, config.auth, self.log)
        else:
            self._headers = _cloud_headers(config.auth)

    async def call(self, command: str, data: dict[str, Any], *, retry: bool = True) -> Any:
        """Return the parsed reply of a successful command; raise a VendorError otherwise."""

        async def once() -> Any:
            return await self._with_session(command, data)

        if not retry:
            return await once()
        return await _with_retries(once, self.policy, vendor=VENDOR, what=command)

    async def _with_session(self, command: str, data: dict[str, Any]) -> Any:
        if self.session is None:
            try:
                return await self.send(command, data)
            except InvalidSession as exc:
                raise SinkConfigError(
                    f"{command}: Ameyo refused the cloud credentials ({exc.reason}); "
                    "check auth.hash_key, auth.policy_name and auth.requesting_host",
                    vendor=VENDOR,
                ) from exc
        session = self.session
        used = await session.current()
        try:
            body = await self.send(command, {**data, "sessionId": used})
        except InvalidSession as exc:
            fresh = await session.renew(used, f"{command}: {exc.reason}")
            try:
                # Ahead of the queue: behind it, a short session expires before its replay.
                body = await self.send(command, {**data, "sessionId": fresh}, urgent=True)
            except InvalidSession as again:
                raise InvalidSession(
                    f"{command}: session refused again right after a new login ({again.reason})"
                ) from again
        session.last_ok = self.clock()
        return body

    async def send(self, command: str, data: dict[str, Any], *, urgent: bool = False) -> Any:
        """Return the parsed JSON reply of one request; raise the typed error of a bad one.

        An ``urgent`` request goes ahead of those waiting for the sink's rate limit.
        """
        self.requests += 1
        try:
            response = await self.http.post(
                self.url,
                params={"command": command},
                data={"command": command, "data": json.dumps(data, ensure_ascii=False)},
                headers=self._headers,
                extensions={URGENT: True} if urgent else None,
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc, VENDOR) from exc
        raise_for_http(response, VENDOR, command, HTTP_HINTS)
        return parse_body(command, response.text, session=command not in SESSIONLESS)


def parse_body(command: str, text: str, *, session: bool = True) -> Any:
    """Return the JSON of a reply; raise InvalidSession, RetryableError or AmeyoRefused."""
    stripped = text.strip()
    if looks_like_html(stripped):
        if session and looks_like_login_page(stripped):
            raise InvalidSession(f"{command} answered with the login page")
        raise RetryableError(f"{command} answered with an HTML page, not JSON", vendor=VENDOR)
    if not stripped or stripped == "null":
        shown = "an empty body" if not stripped else "null"
        raise EmptyAnswer(f"{command} answered with {shown}, not JSON", vendor=VENDOR)
    try:
        body = lenient_json(stripped)
    except ValueError:
        raise RetryableError(
            f"{command} answered with a body that is not JSON", vendor=VENDOR
        ) from None
    if body is None:
        raise EmptyAnswer(f"{command} answered with null, not JSON", vendor=VENDOR)
    problem = error_text(body)
    if problem is None:
        return body
    if session and is_session_error(problem):
        raise InvalidSession(problem)
    held = hold_reason(problem)
    if held is not None:
        raise SinkHeld(f"{command}: {problem}", public=held, vendor=VENDOR)
    raise AmeyoRefused(command, problem)


def _cloud_headers(auth: HeaderAuth) -> dict[str, str]:
    return {
        "hash-key": auth.hash_key.get_secret_value(),
        "policy-name": auth.policy_name,
        "requesting-host": auth.requesting_host,
    }
