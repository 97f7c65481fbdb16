"""A thin client for Ameyo's Customer Manager API, and the session it shares.

Every command is ``POST …/ameyowebaccess/command?command=<id>`` with the form field
``data=<JSON>``. Replies are JSON, often sent as ``text/plain``, and errors often
come with HTTP 200, so every body is parsed; an empty body, ``null`` or an HTML page
is never a success. The session is ``syncd.net.session``'s, shared by every worker
of the sink; Ameyo supplies its login, the ``sessionId`` inside ``data``, and the
four shapes of a session-invalid answer (see ``replies``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import structlog

from syncd.errors import (
    PermanentError,
    SessionExpiredError,
    SinkConfigError,
    SinkHeld,
    VendorError,
)
from syncd.net.http import (
    FORM_HEADERS,
    URGENT,
    UnreadableReply,
    body_text,
    encode_form,
    lenient_json,
    looks_like_html,
    post,
    raise_for_http,
    reply_too_large,
    reply_was_cut,
    transport_error,
)
from syncd.net.retry import RetryPolicy
from syncd.net.retry import with_retries as _with_retries
from syncd.net.session import SessionAuth as Session  # the sink's session (not the config's)
from syncd.net.session import with_form
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
COMMAND = "syncd.ameyo.command"  # request extension: (command, data) before the sessionId


class EmptyAnswer(UnreadableReply):
    """The reply was empty or ``null``: a glitch for most commands, a refusal for a login."""


class _InDoubt(Exception):
    """Carries an UnreadableReply out of the retry loop, which must not repeat it again."""

    def __init__(self, error: UnreadableReply) -> None:
        super().__init__(str(error))
        self.error = error


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


class AmeyoLogin:
    """Ameyo's part of the shared session (``syncd.net.session``): the login call, the
    ``sessionId`` inside the ``data`` field, and the four shapes of an expired session.

    It also keeps what the login answered about keeping the session alive.
    """

    vendor = VENDOR

    def __init__(self, client: AmeyoClient, auth: SessionAuth) -> None:
        self._client = client
        self._auth = auth
        self.ping_interval_s = DEFAULT_PING_S
        self.timeout_s: float | None = None  # sessionTimeout from the login answer

    def keepalive_s(self) -> float:
        """Return how often to ping: the server's pingInterval, but at least three times per
        sessionTimeout, so a ping delayed by the rate limit still lands in time."""
        if self.timeout_s is None:
            return self.ping_interval_s
        return min(self.ping_interval_s, self.timeout_s / 3)

    async def login(self) -> str:
        """Return a new sessionId; SinkConfigError when Ameyo refuses the user."""
        data = {
            "userId": self._auth.user_id,
            "password": self._auth.password.get_secret_value(),
            "terminal": self._auth.terminal,
        }
        try:
            body = await self._login_answer(data)
        except AmeyoRefused as exc:
            body = {"status": "error", "reason": exc.detail}
        session_id = body.get("sessionId") if isinstance(body, dict) else None
        if not session_id:
            why = error_text(body) or "no sessionId in the answer"
            raise SinkConfigError(
                f"login as {self._auth.user_id!r} refused: {why}; check auth.user_id, "
                "auth.password and that the user has the Customer Manager role",
                vendor=VENDOR,
            )
        interval = body.get("pingInterval")
        if isinstance(interval, int | float) and not isinstance(interval, bool) and interval > 0:
            self.ping_interval_s = float(interval) / 1000
        timeout = body.get("sessionTimeout")
        if isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > 0:
            self.timeout_s = float(timeout) / 1000
        self._client.log.debug(
            "sink.session.terms",
            user=self._auth.user_id,
            ping_interval_s=self.ping_interval_s,
            session_timeout_s=self.timeout_s,
        )
        return str(session_id)

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

    def attach(self, request: httpx.Request, token: str) -> httpx.Request:
        """Return the request with ``sessionId`` in its ``data`` JSON (the body is built here)."""
        command, data = request.extensions[COMMAND]
        return with_form(request, command_form(command, {**data, "sessionId": token}))

    def expired(self, response: httpx.Response, *, replayed: bool) -> str | None:
        """Return the reason of a session-invalid answer (any of its four shapes), else None."""
        if response.status_code >= 400:
            return None  # raise_for_http's to map
        command = str(response.request.extensions.get(COMMAND, ("?",))[0])
        try:
            parse_body(command, body_text(response))
        except InvalidSession as exc:
            return exc.reason
        except VendorError:
            return None
        return None


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
        self.url = config.command_url
        self.policy = policy or RetryPolicy()
        self.log = log or structlog.get_logger("syncd.sink").bind(sink=config.name)
        self.requests = 0
        self._headers: dict[str, str] = {}
        # The session (None with cloud header auth) and what its login said about it.
        self.session: Session | None = None
        self.terms: AmeyoLogin | None = None
        if isinstance(config.auth, SessionAuth):
            self.terms = AmeyoLogin(self, config.auth)
            self.session = Session(self.terms, log=self.log, clock=clock)
        else:
            self._headers = _cloud_headers(config.auth)

    async def call(self, command: str, data: dict[str, Any], *, retry: bool = True) -> Any:
        """Return the parsed reply of a successful command; raise a VendorError otherwise."""

        unreadable = 0

        async def once() -> Any:
            nonlocal unreadable
            try:
                return await self._once(command, data)
            except UnreadableReply as exc:
                # Ameyo may have acted on a request whose answer cannot be read: one
                # resend (uploads upsert on phone1), then the call is in doubt.
                unreadable += 1
                if unreadable > 1:
                    raise _InDoubt(exc) from exc
                raise

        try:
            if not retry:
                return await once()
            return await _with_retries(once, self.policy, vendor=VENDOR, what=command)
        except _InDoubt as stop:
            raise UnreadableReply(
                f"{stop.error.reason}, twice: in doubt, the dialer may have acted on it "
                "(it is sent again later)",
                vendor=VENDOR,
            ) from stop.error

    async def _once(self, command: str, data: dict[str, Any]) -> Any:
        if self.session is not None:
            return await self.send(command, data, session=self.session)
        try:
            return await self.send(command, data)
        except InvalidSession as exc:
            raise SinkConfigError(
                f"{command}: Ameyo refused the cloud credentials ({exc.reason}); "
                "check auth.hash_key, auth.policy_name and auth.requesting_host",
                vendor=VENDOR,
            ) from exc

    async def send(
        self,
        command: str,
        data: dict[str, Any],
        *,
        session: Session | None = None,
        urgent: bool = False,
    ) -> Any:
        """Return the parsed JSON reply of one request; raise the typed error of a bad one.

        With ``session`` the request carries its sessionId, renewed once if Ameyo says
        it expired. An ``urgent`` request goes ahead of those waiting for the sink's
        rate limit.
        """
        self.requests += 1
        extensions: dict[str, Any] = {COMMAND: (command, data)}
        if urgent:
            extensions[URGENT] = True
        # With a session the body is written when the sessionId is attached (once per
        # send, not twice: an upload's JSON is large).
        body = b"" if session is not None else encode_form(command_form(command, data))
        try:
            response = await post(
                self.http,
                self.url,
                params={"command": command},
                content=body,
                # charset named: servers that decode forms as ISO-8859-1 garble "José".
                headers={**self._headers, **FORM_HEADERS},
                extensions=extensions,
                auth=session if session is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc, VENDOR) from exc
        raise_for_http(response, VENDOR, command, HTTP_HINTS)
        if reply_was_cut(response):
            raise UnreadableReply(
                reply_too_large(response, command),
                vendor=VENDOR,
            )
        return parse_body(command, body_text(response), session=command not in SESSIONLESS)


def command_form(command: str, data: dict[str, Any]) -> dict[str, str]:
    """Return the form fields of one command: its name and its ``data`` as JSON."""
    return {"command": command, "data": json.dumps(data, ensure_ascii=False)}


def parse_body(command: str, text: str, *, session: bool = True) -> Any:
    """Return the JSON of a reply; raise InvalidSession, RetryableError or AmeyoRefused.

    Read whatever the Content-Type says (Ameyo sends JSON as text/plain); a
    byte-order mark (written by .NET front ends) is dropped, not taken for garbage.
    """
    stripped = text.lstrip("\ufeff").strip()
    if looks_like_html(stripped):
        if session and looks_like_login_page(stripped):
            raise InvalidSession(f"{command} answered with the login page")
        raise UnreadableReply(f"{command} answered with an HTML page, not JSON", vendor=VENDOR)
    if not stripped or stripped == "null":
        shown = "an empty body" if not stripped else "null"
        raise EmptyAnswer(f"{command} answered with {shown}, not JSON", vendor=VENDOR)
    try:
        body = lenient_json(stripped)
    except ValueError:
        raise UnreadableReply(
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
    if problem.lower().startswith("unknown command"):
        # The server (an older release, a restricted user) lacks the command: as a 404
        # would say, so a helper command can be turned off and a needed one stops the sink.
        raise SinkConfigError(
            f"{command}: this Ameyo server does not offer the command ({problem})",
            vendor=VENDOR,
            code="404",
        )
    raise AmeyoRefused(command, problem)


def _cloud_headers(auth: HeaderAuth) -> dict[str, str]:
    return {
        "hash-key": auth.hash_key.get_secret_value(),
        "policy-name": auth.policy_name,
        "requesting-host": auth.requesting_host,
    }
