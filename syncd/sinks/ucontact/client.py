"""A thin client for uContact's Integra API: form POSTs, the session token, strict replies.

Log in with ``auth/getUserToken`` (older servers answer 404 there and use
``auth/UserLogin``); every later call sends ``Authorization: Basic <key>``. A 401,
or a ``0`` body, means the key may have expired: the session (``syncd.net.session``)
logs in again once and replays the call; a ``0`` to the replay is the call's answer.
Many answers are bare ``1``/``0`` or ``OK``/``ERROR``; anything else is treated
as a broken answer, never as success.

A failed call that changes the dialer is one of two kinds. *Answered*: an HTTP
error status, a 401 even with a new key, a refusal, a connection that could not
be opened or written: the server did not act on it, so it is simply tried again.
*Unanswered* (:class:`NoAnswer`): the request went out and no readable answer came
back (a read timeout, a connection dropped before or during the answer, an empty,
``null`` or HTML body): the server may have acted on it, and may still do so
later. The sink decides what that means for the leads in it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from pydantic import SecretStr

from syncd.core.reasons import DIALER_FAILED, log_reason
from syncd.errors import PermanentError, RetryableError, SinkConfigError, VendorError
from syncd.net.http import (
    FORM_HEADERS,
    URGENT,
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
from syncd.net.session import SessionAuth

VENDOR = "ucontact"
ROOT = "/Integra/resources/"
_TRUE = {"1", "OK"}
_FALSE = {"0", "ERROR"}
_BARE_TOKEN = re.compile(r"^[A-Za-z0-9+/=._-]{8,}$")
T = TypeVar("T")


class NoAnswer(RetryableError):
    """The request went out but no readable answer came back: the server may have acted on it.

    It may also still act on it (a request the server carries out after the client
    gave up waiting), so what it changes must be given time to land.
    """


@dataclass(frozen=True, slots=True)
class Reply:
    """The ``1``/``0`` answer of a call that changes the dialer."""

    ok: bool
    unanswered_at: float | None = None  # wall clock of the last earlier try left unanswered


class _Unanswered(Exception):
    """Carries a NoAnswer through the retry loop, which must not repeat it."""

    def __init__(self, error: NoAnswer) -> None:
        super().__init__(str(error))
        self.error = error


def describe(text: str) -> str:
    """Return a short, safe description of an unexpected body for an error message."""
    stripped = text.strip()
    if not stripped:
        return "an empty body"
    if looks_like_html(stripped):
        return "an HTML page"
    return repr(stripped[:60])


def read_flag(text: str, what: str) -> bool:
    """Return True for ``1``/``OK``, False for ``0``/``ERROR``; PermanentError for
    ``ERROR: <why>``; NoAnswer for anything else.

    A 200 with a body that is not a flag (empty, ``null``, an HTML page) may come
    from a server that did the work and failed to say so: it is no answer.
    """
    value = text.lstrip("\ufeff").strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].strip()  # a JSON string around the flag
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    if value[:6].upper() == "ERROR:":
        # A refusal in words ("ERROR: Duplicate customer …"): answered, nothing done. Not
        # an answer in doubt, which would hold every lead of the request for the settle.
        raise PermanentError(f"{what} refused: {value[6:].strip()[:500]}", vendor=VENDOR)
    raise NoAnswer(f"{what} answered {describe(text)}, expected 1 or 0", vendor=VENDOR)


def read_json(text: str, what: str) -> Any:
    """Return the parsed JSON body; RetryableError for an empty, null, HTML or non-JSON body."""
    text = text.lstrip("\ufeff")
    if not text.strip() or text.strip() == "null" or looks_like_html(text):
        raise RetryableError(f"{what} answered {describe(text)}, not JSON", vendor=VENDOR)
    try:
        return lenient_json(text)
    except ValueError:
        raise RetryableError(f"{what} answered {describe(text)}, not JSON", vendor=VENDOR) from None


def token_from(text: str, *, legacy: bool) -> str | None:
    """Return the key in a login answer, None when the server said ``0`` (refused).

    getUserToken answers a JSON string, or a list whose last element is the key;
    UserLogin answers a list with the key third.
    """
    stripped = text.lstrip("\ufeff").strip()
    if stripped in ("0", '"0"'):
        return None
    try:
        body = lenient_json(stripped)
    except ValueError:
        if _BARE_TOKEN.match(stripped) and not looks_like_html(stripped):
            return stripped  # some servers send the key unquoted
        raise RetryableError(f"login answered {describe(text)}, not a key", vendor=VENDOR) from None
    if body == 0:
        return None
    if isinstance(body, str) and body.strip():
        return body.strip()
    if isinstance(body, list) and body:
        item = body[2] if legacy and len(body) > 2 else body[-1]
        if isinstance(item, str) and item.strip() and item.strip() != "0":
            return item.strip()
        if item in (0, "0"):
            return None
    raise RetryableError(f"login answered {describe(text)}, not a key", vendor=VENDOR)


class UContactClient:
    """Calls one uContact server as one API user; supplies the session its login and key."""

    vendor = VENDOR

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        user: str,
        password: SecretStr,
        *,
        policy: RetryPolicy | None = None,
        log: Any = None,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.user = user
        self._password = password
        self.legacy_auth = False  # learnt when getUserToken answers 404
        self.policy = policy or RetryPolicy()
        self.log = log
        self.session = SessionAuth(self, log=log)
        self.requests = 0

    @property
    def logins(self) -> int:
        return self.session.logins

    def url(self, resource: str) -> str:
        return self.base_url + ROOT + resource

    # -- session ------------------------------------------------------------

    async def open_session(self) -> None:
        """Log in (transient failures retried); SinkConfigError when the server refuses the user."""
        await _with_retries(self.session.current, self.policy, vendor=VENDOR, what="login")

    async def login(self) -> str:
        """Return a new key; SinkConfigError when the server refuses the user."""
        form = {"user": self.user, "password": self._password.get_secret_value()}
        try:
            response = await self._login_post(form)
        except NoAnswer as exc:
            # Logging in changes nothing in the dialer: an unanswered login is just transient.
            raise RetryableError(exc.reason, vendor=VENDOR) from exc
        resource = "auth/UserLogin" if self.legacy_auth else "auth/getUserToken"
        self._raise_for_status(response, resource)
        key = token_from(body_text(response), legacy=self.legacy_auth)
        if key is None:
            raise SinkConfigError(
                f"{resource}: the server refused user {self.user!r} (check user and password)",
                vendor=VENDOR,
            )
        if self.log is not None:
            self.log.debug("sink.session.endpoint", endpoint=resource)
        return key

    async def _login_post(self, form: dict[str, str]) -> httpx.Response:
        if not self.legacy_auth:
            response = await self._post("auth/getUserToken", form, urgent=True)
            if response.status_code == 404:
                self.legacy_auth = True
                if self.log is not None:
                    self.log.info("sink.session.legacy_auth", endpoint="auth/UserLogin")
        if self.legacy_auth:
            response = await self._post("auth/UserLogin", form, urgent=True)
        return response

    def attach(self, request: httpx.Request, token: str) -> httpx.Request:
        request.headers["Authorization"] = "Basic " + token
        return request

    def expired(self, response: httpx.Response, *, replayed: bool) -> str | None:
        """Return why the key may have expired: a 401, or (before a replay) a bare ``0``.

        A ``0`` is also how a call refuses; after a new key it is that refusal.
        """
        resource = response.request.url.path.rpartition(ROOT)[2]
        if response.status_code == 401:
            return f"{resource}: HTTP 401"
        if not replayed and response.status_code == 200 and body_text(response).strip() == "0":
            return f"{resource}: answered 0"
        return None

    async def end_session(self) -> None:
        """Tell the server the key is no longer needed; errors are logged, not raised."""
        token = self.session.forget()
        if token is None:
            return
        form = {"user": self.user, "token": token}
        try:
            response = await self._post(
                "auth/EndSession", form, headers={"Authorization": "Basic " + token}
            )
        except RetryableError as exc:
            if self.log is not None:
                log_reason(
                    self.log, "warning", "sink.session.logout.failed", str(exc), DIALER_FAILED
                )
            return
        if self.log is not None:
            self.log.info("sink.session.logout", status=response.status_code)

    # -- calls --------------------------------------------------------------

    async def text(self, resource: str, form: dict[str, str]) -> str:
        """Return the body of an idempotent call, after one re-login if the key was stale.

        Every transient failure is retried in place: repeating the call is harmless.
        Calls that add to the dialer go through :meth:`command` instead.
        """

        async def once() -> str:
            return await self._authed(resource, form)

        return await self._retrying(once, resource)

    async def flag(self, resource: str, form: dict[str, str]) -> bool:
        """Return an idempotent call's ``1``/``0`` (or ``OK``/``ERROR``) answer as a bool."""
        return read_flag(await self.text(resource, form), resource)

    async def command(
        self, resource: str, form: dict[str, str], *, repeat_unanswered: bool
    ) -> Reply:
        """Return the ``1``/``0`` answer of a call that changes the dialer.

        Answered failures are tried again inside the call: the server did not act on
        them. An unanswered try (NoAnswer) is repeated only with ``repeat_unanswered``
        (a removal: repeating it cannot add anything); otherwise it ends the call at
        once. If any try went unanswered and none succeeded, NoAnswer is raised; if
        one succeeded after it, ``Reply.unanswered_at`` says when the doubt began.
        """
        unanswered_at: float | None = None

        async def once() -> bool:
            nonlocal unanswered_at
            try:
                return read_flag(await self._authed(resource, form), resource)
            except NoAnswer as exc:
                unanswered_at = time.time()
                if repeat_unanswered:
                    raise
                raise _Unanswered(exc) from exc

        try:
            ok = await self._retrying(once, resource)
        except _Unanswered as stop:
            raise stop.error from stop.error.__cause__
        except VendorError as exc:
            if unanswered_at is not None and not isinstance(exc, NoAnswer):
                raise NoAnswer(
                    f"{resource}: an earlier try got no answer, then {exc.reason}", vendor=VENDOR
                ) from exc
            raise
        return Reply(ok, unanswered_at)

    async def json(self, resource: str, form: dict[str, str], *, empty: Any = None) -> Any:
        """Return the parsed JSON answer of an idempotent call; VendorError on ``0``.

        ``empty`` is returned for an empty body (Java servers answer a null result with
        204 No Content); None makes an empty body a transient error.
        """

        async def once() -> Any:
            body = await self._authed(resource, form)
            if empty is not None and not body.strip():
                return empty
            if body.strip() == "0":
                raise VendorError(f"{resource} answered 0 (refused)", vendor=VENDOR, code="0")
            return read_json(body, resource)

        return await self._retrying(once, resource)

    async def _retrying(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        return await _with_retries(call, self.policy, vendor=VENDOR, what=what)

    async def _authed(self, resource: str, form: dict[str, str]) -> str:
        response = await self._post(resource, form, session=self.session)
        self._raise_for_status(response, resource)
        if reply_was_cut(response):
            raise NoAnswer(
                reply_too_large(response, resource),
                vendor=VENDOR,
            )
        return body_text(response)

    async def _post(
        self,
        resource: str,
        form: dict[str, str],
        *,
        session: SessionAuth | None = None,
        headers: dict[str, str] | None = None,
        urgent: bool = False,
    ) -> httpx.Response:
        self.requests += 1
        try:
            return await post(
                self.http,
                self.url(resource),
                content=encode_form(form),
                headers={**(headers or {}), **FORM_HEADERS},  # the document asks for charset=UTF-8
                extensions={URGENT: True} if urgent else None,
                auth=session if session is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError) as exc:
            # Sent in full, then nothing readable: the server may have acted, or may yet.
            raise NoAnswer(
                f"{resource}: {type(exc).__name__} waiting for the answer", vendor=VENDOR
            ) from exc
        except httpx.HTTPError as exc:
            # Not connected, or not sent in full: the server cannot have acted on it.
            raise transport_error(exc, VENDOR) from exc

    def _raise_for_status(self, response: httpx.Response, resource: str) -> None:
        hints = {
            401: "check user and password",
            403: f"user {self.user!r} may not use this API",
            404: "check the sink's url; does this server have the call?",
        }
        raise_for_http(response, VENDOR, resource, hints)
