"""Webhook writeback: JSON batches POSTed to the CRM, signed with HMAC-SHA256.

Every request carries ``X-Syncd-Timestamp`` (Unix seconds) and
``X-Syncd-Signature: sha256=<hex>``, the HMAC-SHA256 of ``<timestamp>.<body>``
under the shared secret (:mod:`syncd.core.signing`; the webhook source checks
the same); a receiver recomputes it over the raw body and rejects stale
timestamps. ``Idempotency-Key`` is the same for every retry of one batch, and each
item carries its ``version``: a receiver can drop what it already has.

Answers: 2xx written; 408, 429, 5xx and transport errors retried with backoff;
401/403/404/405 and redirects stop the writeback (its configuration is wrong;
records stay pending); any other 4xx refuses the batch, which the runner halves
until the record at fault is found and kept with the CRM's reason.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import httpx
from pydantic import Field, field_validator

from syncd.core.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify
from syncd.errors import CheckFailed, RetryableError
from syncd.net.http import make_client, status_error, status_only
from syncd.net.http import post as capped_post
from syncd.net.retry import RetryPolicy, with_retries
from syncd.secrets import Secret
from syncd.writeback.base import (
    BaseWritebackConfig,
    Item,
    ItemsRefused,
    StatelessWriteback,
    WritebackStopped,
)

__all__ = ["WebhookWriteback", "WebhookWritebackConfig", "sign", "verify"]

VENDOR = "crm webhook"
_STOP_CODES = {401, 403, 404, 405, 410}


class WebhookWritebackConfig(BaseWritebackConfig):
    kind: Literal["webhook"] = "webhook"
    url: str = Field(pattern=r"^https?://")
    secret: Secret  # the HMAC key shared with the receiver
    headers: dict[str, Secret] = Field(default_factory=dict)  # e.g. Authorization
    batch_size: int = Field(100, ge=1, le=10_000)
    include_raw: bool = False  # add each dialer's raw payload as "raw"
    timeout_s: float = Field(30.0, gt=0)
    verify_tls: bool = True
    attempts: int = Field(5, ge=1, le=50)
    retry_base_s: float = Field(1.0, gt=0)
    retry_max_s: float = Field(30.0, gt=0)
    signature_header: str = SIGNATURE_HEADER
    timestamp_header: str = TIMESTAMP_HEADER

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: Any) -> Any:
        if not value.get_secret_value():
            raise ValueError("must not be empty")
        return value


class WebhookWriteback(StatelessWriteback):
    """POSTs each batch as one signed JSON document."""

    def __init__(self, config: WebhookWritebackConfig) -> None:
        self.name = config.name
        self.config = config
        self._http: httpx.AsyncClient | None = None
        self._policy = RetryPolicy(
            attempts=config.attempts,
            timeout_s=max(config.timeout_s, config.retry_max_s) * config.attempts,
            wait_initial_s=config.retry_base_s,
            wait_max_s=config.retry_max_s,
        )

    async def open(self, state: str | None) -> None:
        self._http = make_client(timeout_s=self.config.timeout_s, verify_tls=self.config.verify_tls)

    async def probe(self) -> str:
        """Send OPTIONS to the URL: no record, no signature. Any HTTP answer proves the
        receiver reachable (and its certificate trusted); whether it accepts a signed POST
        is not tried, since a POST would be a write."""
        url = self.config.url
        async with make_client(
            timeout_s=self.config.timeout_s, verify_tls=self.config.verify_tls
        ) as http:
            try:
                status = await status_only(http, "OPTIONS", url)
            except httpx.HTTPError as exc:
                raise CheckFailed(
                    f"cannot reach {url}: {type(exc).__name__} {exc}".rstrip(),
                    settings=("url",),
                    action="check that the receiver is up and reachable from here",
                ) from None
        return f"{url} answered OPTIONS with HTTP {status} (reachable; no POST sent)"

    def body(self, items: Sequence[Item]) -> tuple[bytes, str]:
        """Return the JSON body of a batch and its idempotency key."""
        marks = [list(i.mark) for i in items]
        batch = hashlib.sha256(
            json.dumps([self.name, marks], separators=(",", ":")).encode()
        ).hexdigest()[:32]
        records = [self._record(i) for i in items]
        document = {
            "writeback": self.name,
            "what": self.config.what,
            "batch": batch,
            "items": records,
        }
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode(), batch

    def _record(self, item: Item) -> dict[str, Any]:
        record: dict[str, Any] = {}
        for name, value in item.values.items():
            if name == "writeback" or (name == "raw" and not self.config.include_raw):
                continue
            record[name] = value.isoformat() if isinstance(value, datetime) else value
        return record

    async def write(self, items: Sequence[Item]) -> None:
        if self._http is None:
            raise WritebackStopped("the webhook writeback is not open")
        http = self._http
        body, batch = self.body(items)
        secret = self.config.secret.get_secret_value().encode()

        async def post() -> None:
            stamp = str(int(time.time()))  # fresh per attempt: receivers reject stale ones
            headers = {k: v.get_secret_value() for k, v in self.config.headers.items()}
            headers.update(
                {
                    "Content-Type": "application/json",
                    "Idempotency-Key": batch,
                    self.config.timestamp_header: stamp,
                    self.config.signature_header: sign(secret, stamp, body),
                }
            )
            try:
                # Only the first 64 KB of the answer: its reason is all syncd reads of it.
                response = await capped_post(
                    http, self.config.url, cap=65536, content=body, headers=headers
                )
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__} talking to the CRM"
                raise RetryableError(reason, vendor=VENDOR) from exc
            self._check(response)

        await with_retries(post, self._policy, vendor=VENDOR, what=self.name)

    def _check(self, response: httpx.Response) -> None:
        code = response.status_code
        if 200 <= code < 300:
            return
        transient = status_error(response, VENDOR)
        if transient is not None:
            raise transient
        said = " ".join(response.text.split())[:300]
        reason = f"HTTP {code}" + (f": {said}" if said else "")
        if 300 <= code < 400:
            where = response.headers.get("location", "?")
            raise WritebackStopped(
                f"the webhook URL redirects (HTTP {code}) to {where}; configure the final URL"
            )
        if code in _STOP_CODES:
            raise WritebackStopped(f"the CRM webhook refused the request: {reason}")
        if 400 <= code < 500:
            raise ItemsRefused(reason, vendor=VENDOR, code=str(code))
        raise RetryableError(reason, vendor=VENDOR, code=str(code))

    async def close(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()
