"""A thin client for Jodo's Customer Web Service: one POST, ``data=<JSON>``, typed errors.

Jodo answers success as ``{"statuscode":"001"}`` (a string) and failure as
``{"status":5,"statusdesc":"fail"}`` (a number); other methods use ``status: 3`` for
success. Both are read here and nowhere else. Methods that answer per item
(``userStatus``, ``customer_multiple_recordings``) carry a ``statusdata`` list whose
items each have their own ``status``; read them with :func:`items_of`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import httpx
from pydantic import SecretStr

from syncd.core.clock import SYSTEM_CLOCK, Clock
from syncd.core.clockskew import ClockSkew
from syncd.errors import PermanentError, SinkConfigError, VendorError
from syncd.net.guard import SinkGuard
from syncd.net.http import (
    FORM_HEADERS,
    UnreadableReply,
    body_text,
    encode_form,
    lenient_json,
    looks_like_html,
    make_client,
    post,
    raise_for_http,
    reply_too_large,
    reply_was_cut,
    transport_error,
    wire_json,
)
from syncd.net.retry import RetryPolicy
from syncd.net.retry import with_retries as _with_retries

if TYPE_CHECKING:
    from syncd.sinks.jodo.config import JodoSinkConfig

VENDOR = "jodo"
HTTP_HINTS = {
    401: "check the sink's url and apikey",
    403: "check the sink's url and apikey",
    404: "check the sink's url",
}

# Status codes that mean our configuration is wrong, not the records.
CONFIG_CODES = {
    17: "invalid media",
    18: "media not found",
    19: "media found blank",
    24: "update parameter not found",
    25: "update parameter blank",
    26: "invalid update parameter",
    1107: "api key not found",
    1108: "service key not found",
    1243: "api key and service key do not match",
}
NOT_FOUND = 14  # customer data not found: an empty result, not an error
REQUEST_BUGS = {15: "date range not proper", 16: "invalid to-date format"}
SUCCESS = {1, 3}
RECORDING_NOT_READY = 67  # "Data not found": the recording does not exist yet
_MISSING_COMMA = re.compile(r"}\s*{")


def jodo_time(when: datetime, zone: str) -> str:
    """Return ``when`` in Jodo's ``YYYY-MM-DD hh:mm:ss`` in the server's time zone."""
    local = when.astimezone(ZoneInfo(zone))
    if local.year >= 1000:
        # The same text as strftime's, a third of its time: a push writes one a lead.
        return local.isoformat(" ", "seconds")[:19]
    return local.strftime("%Y-%m-%d %H:%M:%S")


def from_jodo_time(text: object, zone: str, formats: Iterable[str]) -> datetime | None:
    """Return a Jodo server-local time as an aware UTC datetime, None when absent or unreadable."""
    value = str(text or "").strip()
    if not value:
        return None
    for fmt in (*formats, "%Y-%m-%d %H:%M:%S", "%d-%b-%y %I:%M:%S %p", "%Y-%m-%dT%H:%M:%S"):
        try:
            parsed = datetime.strptime(value, fmt)
        except ValueError:
            continue
        return parsed.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
    return None


def items_of(body: dict[str, Any], name: str = "statusdata") -> list[dict[str, Any]]:
    """Return the per-item list of a reply (``statusdata``), skipping anything not an object."""
    items = body.get(name)
    if not isinstance(items, list):
        return []
    return [i for i in items if isinstance(i, dict)]


def status_of(body: dict[str, Any]) -> tuple[int | None, str]:
    """Return (numeric status, description) from either reply shape."""
    raw = body.get("statuscode", body.get("status"))
    desc = str(body.get("statusdesc", ""))
    try:
        return (int(str(raw).strip()) if raw is not None else None), desc
    except ValueError:
        return None, desc


class JodoClient:
    """Calls one Jodo process (apikey + servicekey)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        apikey: SecretStr,
        servicekey: str,
        *,
        timezone: str = "UTC",
        policy: RetryPolicy | None = None,
        clock: Clock = SYSTEM_CLOCK,
        clock_tolerance_s: float = 120.0,
    ) -> None:
        self.http = http
        self.clock = clock
        # Every reply carries the server's resdatetime: how far its clock is from ours.
        self.skew = ClockSkew(clock_tolerance_s)
        self.url = url
        self._apikey = apikey
        self.servicekey = servicekey
        self.timezone = timezone
        self.policy = policy or RetryPolicy()
        self.requests = 0

    async def call(
        self,
        method: str,
        payload: dict[str, Any],
        *,
        retry: bool = True,
        accept: Collection[int] = (),
        per_item: bool = False,
    ) -> Reply:
        """Return the reply of a successful call; raise a VendorError subclass otherwise.

        A failure reply (``status`` 5, a configuration code…) raises here, so no caller
        checks; a status in ``accept`` (e.g. "not ready yet") is returned instead. With
        ``per_item``, a reply carrying ``statusdata`` is returned as is: each item has a
        status of its own.
        """

        unreadable = 0

        async def once() -> dict[str, Any]:
            nonlocal unreadable
            try:
                return await self._call_once(method, payload)
            except UnreadableReply as exc:
                # The server answered and may have acted (stored the batch): one
                # resend (Jodo upserts by updateparam), then the call is in doubt.
                unreadable += 1
                if unreadable > 1:
                    raise _InDoubt(exc) from exc
                raise

        try:
            if retry:
                body = await _with_retries(once, self.policy, vendor=VENDOR, what=method)
            else:
                body = await once()
        except _InDoubt as stop:
            doubt = (
                "in doubt, the dialer may have stored it (it is sent again later; "
                "Jodo upserts by updateparam, so a repeat is harmless)"
                if method == "ImportProcessData"
                else "tried again later"
            )
            raise UnreadableReply(f"{stop.error.reason}, twice: {doubt}", vendor=VENDOR) from (
                stop.error
            )
        if per_item and "statusdata" in body:
            return Reply(body, None)
        code, _ = status_of(body)
        if code is not None and code in accept:
            return Reply(body, code)
        return Reply(body, raise_for_status(method, body))

    async def _call_once(self, method: str, payload: dict[str, Any]) -> dict[str, Any]:
        body = {
            "method": method,
            "apikey": self._apikey.get_secret_value(),
            "servicekey": self.servicekey,
            "reqdatetime": jodo_time(datetime.fromtimestamp(self.clock.time(), UTC), self.timezone),
            **payload,
        }
        self.requests += 1
        try:
            response = await post(
                self.http,
                self.url,
                content=encode_form({"data": wire_json(body)}),
                headers=FORM_HEADERS,
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc, VENDOR) from exc
        raise_for_http(response, VENDOR, method, HTTP_HINTS)
        if reply_was_cut(response):
            raise UnreadableReply(
                reply_too_large(response, method),
                vendor=VENDOR,
            )
        body = self._parse(method, body_text(response))
        theirs = from_jodo_time(body.get("resdatetime"), self.timezone, ())
        if theirs is not None:
            self.skew.observe(theirs.timestamp(), self.clock.time())
        return body

    def _parse(self, method: str, text: str) -> dict[str, Any]:
        """Return a reply's JSON object; UnreadableReply for anything else.

        The text is read whatever the Content-Type said (Jodo front ends label JSON
        text/plain or text/html); a byte-order mark is no reason to refuse it.
        """
        text = text.lstrip("\ufeff")
        if not text.strip() or text.strip() == "null" or looks_like_html(text):
            shown = (
                "an empty body"
                if not text.strip()
                else ("null" if text.strip() == "null" else "an HTML page")
            )
            raise UnreadableReply(f"{method} answered with {shown}, not JSON", vendor=VENDOR)
        try:
            body = lenient_json(text)
        except ValueError:
            try:
                # The document's userStatus sample lists items without commas between them.
                body = lenient_json(_MISSING_COMMA.sub("},{", text))
            except ValueError:
                raise UnreadableReply(
                    f"{method} answered with a body that is not JSON", vendor=VENDOR
                ) from None
        if not isinstance(body, dict):
            raise UnreadableReply(
                f"{method} answered with JSON that is not an object", vendor=VENDOR
            )
        return body


class _InDoubt(Exception):
    """Carries an UnreadableReply out of the retry loop, which must not repeat it again."""

    def __init__(self, error: UnreadableReply) -> None:
        super().__init__(str(error))
        self.error = error


def connect(
    config: JodoSinkConfig, guard: SinkGuard, clock: Clock, stopping: asyncio.Event | None = None
) -> tuple[httpx.AsyncClient, JodoClient]:
    """Return the HTTP client and the Jodo client of one sink's settings."""
    # Every request of the sink (pushes, polls, keep-alives, logins) shares its
    # rate limit, concurrency cap and Retry-After hold.
    http = make_client(
        timeout_s=config.timeout_s,
        verify_tls=config.verify_tls,
        max_connections=config.push_concurrency * 2,
        guard=guard.limits,
        proxy=config.proxy_url(),
        ca_bundle=config.ca_bundle,
    )
    client = JodoClient(
        http,
        config.url,
        config.apikey,
        config.servicekey,
        timezone=config.timezone,
        policy=RetryPolicy(wait_max_s=min(15.0, config.retry_max_s), stopping=stopping),
        clock=clock,
        clock_tolerance_s=config.clock_tolerance_s,
    )
    return http, client


@dataclass(frozen=True)
class Reply:
    """A successful Jodo reply: its body, and its status (None: a per-item reply)."""

    body: dict[str, Any]
    code: int | None


def reply_text(body: dict[str, Any]) -> str:
    """Return a reply's status as a lead's history shows it: ``Jodo: status 3 (Success)``."""
    code, desc = status_of(body)
    raw = body.get("statuscode", body.get("status"))
    return f"Jodo: status {raw if raw is not None else code}" + (f" ({desc})" if desc else "")


def raise_for_status(method: str, body: dict[str, Any]) -> int:
    """Return the status code of a successful reply; raise the typed error of a failed one."""
    code, desc = status_of(body)
    if code in SUCCESS:
        return code
    if code == NOT_FOUND:
        return code
    if code in CONFIG_CODES:
        raise SinkConfigError(
            f"{method}: {desc or CONFIG_CODES[code]}", vendor=VENDOR, code=str(code)
        )
    if code in REQUEST_BUGS:
        raise VendorError(
            f"{method}: {desc or REQUEST_BUGS[code]} (a bug in syncd's request)",
            vendor=VENDOR,
            code=str(code),
        )
    reason = desc or "fail"
    reasonid = body.get("reasonid")
    if isinstance(reasonid, int | str) and not isinstance(reasonid, bool) and str(reasonid).strip():
        reason += f" (reasonid {reasonid})"
    raise PermanentError(
        f"{method} refused: {reason}", vendor=VENDOR, code=str(code) if code is not None else None
    )
