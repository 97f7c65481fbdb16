"""Fault injection shared by every simulator, driven by a seed so runs repeat.

Switches: latency, 5xx, 429 with Retry-After, malformed bodies (empty, ``null``,
HTML), slow answers past the client's timeout, and connection resets.
Set them at start-up or at run time with ``POST /_sim/faults``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, fields
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Faults:
    seed: int = 0
    latency_ms: float = 0.0  # added to every answer
    error_rate: float = 0.0  # HTTP 500/502/503
    rate_429: float = 0.0
    retry_after: str = "1"  # seconds or an HTTP date
    malformed_rate: float = 0.0  # 200 with an empty, null or HTML body
    slow_rate: float = 0.0  # answers after slow_s (past a client's read timeout)
    slow_s: float = 5.0
    reset_rate: float = 0.0  # connection dropped mid-answer
    invalid_session_rate: float = 0.0  # vendor-specific: answer "session invalid"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Faults:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault switch(es): {', '.join(sorted(unknown))}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultInjector:
    """Decides, per request, whether and how to misbehave."""

    def __init__(self, faults: Faults | None = None) -> None:
        self.set(faults or Faults())
        self.injected: dict[str, int] = {}

    def set(self, faults: Faults) -> None:
        self.faults = faults
        self.rng = random.Random(faults.seed)

    def _roll(self, rate: float, name: str) -> bool:
        if rate > 0 and self.rng.random() < rate:
            self.injected[name] = self.injected.get(name, 0) + 1
            return True
        return False

    def session_fault(self) -> bool:
        return self._roll(self.faults.invalid_session_rate, "invalid_session")

    async def before(self) -> Response | None:
        """Return a faulty response to send instead of the real one, or None."""
        f = self.faults
        # Every draw happens before any sleep: concurrent requests interleave at the
        # awaits, and a seed must give the same sequence of faults whatever the timing.
        slow = self._roll(f.slow_rate, "slow")
        response: Response | None = None
        if self._roll(f.error_rate, "5xx"):
            code = self.rng.choice([500, 502, 503])
            response = PlainTextResponse("Internal Server Error", status_code=code)
        elif self._roll(f.rate_429, "429"):
            response = PlainTextResponse(
                "Too Many Requests", status_code=429, headers={"Retry-After": f.retry_after}
            )
        elif self._roll(f.malformed_rate, "malformed"):
            body = self.rng.choice(["", "null", "<html><body><h1>Gateway</h1></body></html>"])
            media = "text/html" if body.startswith("<") else "application/json"
            response = Response(body, media_type=media)
        elif self._roll(f.reset_rate, "reset"):
            response = StreamingResponse(_broken_body(), media_type="application/json")
        if f.latency_ms:
            await asyncio.sleep(f.latency_ms / 1000)
        if slow:
            await asyncio.sleep(f.slow_s)
        return response


async def _broken_body() -> AsyncIterator[bytes]:
    yield b'{"status":'
    # Raising after the headers went out makes the server drop the connection.
    raise ConnectionResetError("simulated connection reset")


def faults_route(injector: FaultInjector) -> Route:
    """Return the admin route ``POST /_sim/faults`` that switches faults at run time."""

    async def set_faults(request: Request) -> Response:
        try:
            injector.set(Faults.from_dict(await request.json()))
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(injector.faults.to_dict())

    return Route("/_sim/faults", set_faults, methods=["POST"])
