"""Helpers shared by the reliability suites: exports, configs, request counting, in-process runs."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.responses import PlainTextResponse, Response, StreamingResponse

from syncd.config import Settings, load_settings
from syncd.core.clock import SYSTEM_CLOCK, Clock
from syncd.core.summary import RunSummary
from syncd.run.engine import Engine
from syncd.run.once import run_until_idle
from syncd.simulators.faults import FaultInjector, Faults, _broken_body
from syncd.state import open_store
from syncd.state.sqlite import SqliteStore
from tests.conftest import cli_env

HEADER = "id,first,last,phone,email,callback\n"


def lead_row(i: int) -> str:
    """Return a valid CSV row for lead ``L{i}`` (an Indian mobile number)."""
    return f"L{i},First{i},Last{i},98{i:08d},l{i}@example.in,\n"


def export(n: int, *, start: int = 0, extra_rows: Iterable[str] = ()) -> str:
    """Return a CRM export with ``n`` valid leads L{start}…, then ``extra_rows`` verbatim."""
    rows = [lead_row(i) for i in range(start, start + n)]
    return HEADER + "".join(rows) + "".join(r if r.endswith("\n") else r + "\n" for r in extra_rows)


def keys(n: int, start: int = 0) -> set[str]:
    return {f"L{i}" for i in range(start, start + n)}


# -- configs -------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def _table(header: str, values: dict[str, Any]) -> str:
    lines = [header]
    nested = {k: v for k, v in values.items() if isinstance(v, dict)}
    for k, v in values.items():
        if not isinstance(v, dict):
            lines.append(f"{k} = {_toml_value(v)}")
    name = header.strip("[]")
    for k, v in nested.items():
        lines.append("")
        lines.append(_table(f"[{name}.{k}]", v))
    return "\n".join(lines)


def jodo_sink(url: str, name: str = "jodo", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "jodo",
        "url": f"{url}/CustomerWebServices/handleCustomerWS",
        "apikey": "env:TEST_JODO_APIKEY",
        "servicekey": "VoiceProcess",
        "media": 12,
        "updateparam": "crmuniquefield",
        "dial_format": "00",
        "batch_size": 50,
        "retry_base_s": 0.05,
        "retry_max_s": 0.2,
        "max_attempts": 8,
        "timeout_s": 5.0,
        **extra,
    }


def route(sink: str, source: str = "crm", **extra: Any) -> dict[str, Any]:
    return {
        "source": source,
        "sink": sink,
        "default_region": "IN",
        "map": {
            "key": "id",
            "phone": "phone",
            "first_name": "first",
            "last_name": "last",
            "email": "email",
            "call_at": "callback",
            **extra.pop("map", {}),
        },
        **extra,
    }


def write_config(
    tmp_path: Path,
    sinks: list[dict[str, Any]],
    *,
    routes: list[dict[str, Any]] | None = None,
    writebacks: list[dict[str, Any]] | None = None,
    chunk_rows: int = 1000,
    log_level: str = "info",
    run: dict[str, Any] | None = None,
    source: dict[str, Any] | None = None,
    extra_toml: str = "",
) -> Path:
    """Write a CSV-drop config feeding every sink and return its path.

    ``source`` adds settings to the CSV source (``max_field_bytes``, ``settle_s``…);
    ``extra_toml`` is appended as written (more ``[[sources]]``, ``[[dnc_lists]]``…).
    """
    inbox = tmp_path / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    parts = [
        _table("[state]", {"path": str(tmp_path / "state" / "state.db")}),
        _table("[log]", {"level": log_level, "format": "json"}),
        _table("[run]", {"normalize_processes": 1, **(run or {})}),
        _table(
            "[[sources]]",
            {
                "name": "crm",
                "kind": "csv_drop",
                "inbox": str(inbox),
                "chunk_rows": chunk_rows,
                **(source or {}),
            },
        ),
    ]
    parts += [_table("[[sinks]]", s) for s in sinks]
    parts += [_table("[[routes]]", r) for r in (routes or [route(s["name"]) for s in sinks])]
    parts += [_table("[[writebacks]]", w) for w in writebacks or []]
    if extra_toml:
        parts.append(extra_toml)
    path = tmp_path / "syncd.toml"
    path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return path


def vendor_env(**extra: str) -> dict[str, str]:
    """Return the CLI environment with every test dialer's secret set."""
    return cli_env(**{**VENDOR_ENV, **extra})


def settings_for(config: Path, **env: str) -> Settings:
    return load_settings(config, environ=vendor_env(**env))


# A ``deadline_s`` for run_engine on a FakeClock that ends the pass once a push the
# dialer refused or failed is written: its retry comes 0.5 s later at the soonest (the
# pusher's shortest backoff), after this deadline, so it is the next run's. With a later
# deadline the retry falls due within it on the fake clock, which stands still while the
# pass waits in real time: the pass would sit out its whole deadline, plus a grace.
BEFORE_A_RETRY_S = 0.4


async def run_engine(
    settings: Settings,
    *,
    deadline_s: float | None = None,
    inspect: Callable[[Engine], Awaitable[None] | None] | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> RunSummary:
    """Return the summary of one in-process `run --once`; ``inspect`` sees the engine's sinks."""
    if clock is SYSTEM_CLOCK:
        store = await open_store(str(settings.state.path))
    else:  # the store's times (claims, retries, holds) on the same clock as the engine's
        store = SqliteStore(settings.state.path, clock)
        await store.open()
    engine = Engine(settings, store, clock=clock)
    try:
        summary = await run_until_idle(engine, deadline_s=deadline_s)
        if inspect is not None:
            maybe = inspect(engine)
            if maybe is not None:
                await maybe
    finally:
        await engine.close()
        await store.close()
    return summary


# -- simulators -----------------------------------------------------------------------


class RequestCounter:
    """ASGI middleware counting the vendor requests a simulator receives (admin paths excluded).

    ``count`` counts every request. With ``only`` (markers such as a Jodo method
    name), ``matched`` counts the requests whose path, query or body contains one of
    them, and only those reach the hook: ``hook(n, "before")`` runs before the n-th
    such request is handled, ``hook(n, "after")`` once the app has answered it and
    before the answer is sent.
    """

    def __init__(
        self,
        app: Any,
        hook: Callable[[int, str], None] | None = None,
        *,
        only: bytes | tuple[bytes, ...] | None = None,
    ) -> None:
        self.app = app
        self.only = (only,) if isinstance(only, bytes) else only
        self.total = 0
        self.state = getattr(app, "state", None)
        self.count = 0
        self.by_path: dict[str, int] = {}
        self.active = 0
        self.max_active = 0
        self.times: list[float] = []  # monotonic arrival time of each request
        self.hook = hook
        self._lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith("/_sim"):
            await self.app(scope, receive, send)
            return
        with self._lock:
            self.total += 1
        if self.only is not None:
            receive, body = await _buffered(receive)
            seen = str(scope["path"]).encode() + b"?" + bytes(scope.get("query_string", b""))
            if not any(marker in seen or marker in body for marker in self.only):
                await self.app(scope, receive, send)
                return
        with self._lock:
            self.count += 1
            n = self.count
            path = str(scope["path"])
            self.by_path[path] = self.by_path.get(path, 0) + 1
            self.times.append(time.monotonic())
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            await self._handle(n, scope, receive, send)
        finally:
            with self._lock:
                self.active -= 1

    async def _handle(self, n: int, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.hook is None:
            await self.app(scope, receive, send)
            return
        self.hook(n, "before")
        held: list[dict[str, Any]] = []

        async def capture(message: dict[str, Any]) -> None:
            held.append(message)

        await self.app(scope, receive, capture)
        self.hook(n, "after")
        for message in held:
            await send(message)


async def _buffered(receive: Any) -> tuple[Any, bytes]:
    """Return a replaying ``receive`` and the whole request body."""
    messages = []
    body = b""
    while True:
        message = await receive()
        messages.append(message)
        body += message.get("body", b"")
        if message["type"] != "http.request" or not message.get("more_body"):
            break

    async def replay() -> Any:
        if messages:
            return messages.pop(0)
        return await receive()

    return replay, body


def wait_until(condition: Callable[[], bool], timeout: float = 30.0, every: float = 0.05) -> bool:
    """Return True once ``condition()`` holds, False after ``timeout`` seconds; asked
    every ``every`` seconds (a page fetched a hundred times a second loads the daemon)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(every)
    return False


# Every fault switch at once, as the fault suite and bench/bench_faults.py use it.
FAULT_MIX: dict[str, Any] = {
    "seed": 12,
    "error_rate": 0.2,
    "rate_429": 0.02,
    "retry_after": "1",
    "malformed_rate": 0.02,
    "slow_rate": 0.01,
    "slow_s": 1.5,  # past the client's 1 s read timeout
    "reset_rate": 0.02,
    "invalid_session_rate": 0.02,
}


class RepeatableFaults(FaultInjector):
    """The shared fault injector, made repeatable and sure to show every fault it is given.

    The shared one draws a request's remaining rolls after its slow answer's sleep,
    so the retry of a timed-out request (arriving during that sleep) takes some of
    its draws and a seeded run does not repeat. Here each request draws all its
    rolls on arrival, in the same order and with the same rates, then waits.

    And so that a run exercises every enabled switch whatever the seed, every
    ``SPACING``-th of the first requests gets one of each enabled fault in turn (the
    others, and all later ones, the seeded draws), and the first session check
    answers "invalid".
    """

    SPACING = 7

    def set(self, faults: Faults) -> None:
        super().set(faults)
        rates = (
            ("5xx", faults.error_rate),
            ("429", faults.rate_429),
            ("malformed", faults.malformed_rate),
            ("reset", faults.reset_rate),
            ("slow", faults.slow_rate),
        )
        self._first = [kind for kind, rate in rates if rate > 0]
        self._session_first = faults.invalid_session_rate > 0
        self._seen = 0

    def session_fault(self) -> bool:
        if self._session_first:
            self._session_first = False
            self.injected["invalid_session"] = self.injected.get("invalid_session", 0) + 1
            return True
        return super().session_fault()

    async def before(self) -> Response | None:
        f = self.faults
        self._seen += 1
        if self._first and self._seen % self.SPACING == 1:
            kind = self._first.pop(0)
            self.injected[kind] = self.injected.get(kind, 0) + 1
            slow, answer = kind == "slow", None if kind == "slow" else _fault_answer(kind, f)
        else:
            slow = self._roll(f.slow_rate, "slow")
            answer = None
            if self._roll(f.error_rate, "5xx"):
                answer = _fault_answer("5xx", f, self.rng.choice([500, 502, 503]))
            elif self._roll(f.rate_429, "429"):
                answer = _fault_answer("429", f)
            elif self._roll(f.malformed_rate, "malformed"):
                body = self.rng.choice(["", "null", "<html><body><h1>Gateway</h1></body></html>"])
                answer = _fault_answer("malformed", f, body=body)
            elif self._roll(f.reset_rate, "reset"):
                answer = _fault_answer("reset", f)
        wait = f.latency_ms / 1000 + (f.slow_s if slow else 0.0)
        if wait:
            await asyncio.sleep(wait)
        return answer


def _fault_answer(kind: str, f: Faults, code: int = 503, body: str = "") -> Response:
    """Return the response the shared injector sends for a fault of ``kind``."""
    if kind == "5xx":
        return PlainTextResponse("Internal Server Error", status_code=code)
    if kind == "429":
        return PlainTextResponse(
            "Too Many Requests", status_code=429, headers={"Retry-After": f.retry_after}
        )
    if kind == "malformed":
        media = "text/html" if body.startswith("<") else "application/json"
        return Response(body, media_type=media)
    return StreamingResponse(_broken_body(), media_type="application/json")


def repeatable(sim: Any) -> Any:
    """Return ``sim`` with its fault injector swapped for a RepeatableFaults one."""
    sim.faults = RepeatableFaults(sim.faults.faults)
    return sim


# -- the dialers the suites run against -------------------------------------------------


@dataclass
class Vendor:
    """One dialer for the fault and crash suites: its simulator, config and stored keys."""

    name: str
    simulator: Callable[[Faults], Any]
    app: Callable[[Any], Any]
    sink: Callable[..., dict[str, Any]]  # (url, **settings) -> [[sinks]] table
    held: Callable[[Any], list[str]]  # the lead keys the simulator stores, one per record
    push_markers: tuple[bytes, ...]  # requests that deliver leads (and the logins they need)
    has_sessions: bool = False
    diagnose: Callable[[Any, list[str]], str] | None = None  # what the dialer knows of keys

    def config(self, tmp_path: Path, url: str, **sink_settings: Any) -> Path:
        return write_config(tmp_path, [self.sink(url, **sink_settings)])


def _jodo_held(sim: Any) -> list[str]:
    return [str(r.get("leadnumber")) for r in sim.records("VoiceProcess")]


def _jodo() -> Vendor:
    from syncd.simulators.jodo.api import JodoSimulator, create_app

    return Vendor(
        name="jodo",
        simulator=lambda faults: repeatable(JodoSimulator(faults=faults)),
        app=create_app,
        sink=jodo_sink,
        held=_jodo_held,
        push_markers=(b"ImportProcessData",),
    )


def ameyo_sink(url: str, name: str = "ameyo", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "ameyo",
        "url": url,
        "campaign_id": 1,
        "lead_id": 1,
        "key_column": "crm_key",
        "dial_format": "national",
        "batch_size": 50,
        "retry_base_s": 0.05,
        "retry_max_s": 0.2,
        "max_attempts": 8,
        "timeout_s": 5.0,
        "auth": {"mode": "session", "user_id": "syncd", "password": "env:TEST_AMEYO_PASSWORD"},
        **extra,
    }


def _ameyo_held(sim: Any) -> list[str]:
    return [str(c.data.get("crm_key")) for c in sim.customer_list()]


def _ameyo() -> Vendor:
    from syncd.simulators.ameyo.api import AmeyoSimulator, create_app

    return Vendor(
        name="ameyo",
        simulator=lambda faults: repeatable(
            AmeyoSimulator(users={"syncd": AMEYO_PASSWORD}, dialing=False, faults=faults)
        ),
        app=create_app,
        sink=ameyo_sink,
        held=_ameyo_held,
        push_markers=(b"command=login", b"command=upload", b"command=addCallback"),
        has_sessions=True,
    )


def ucontact_sink(url: str, name: str = "ucontact", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "ucontact",
        "url": url,
        "user": "api",
        "password": "env:TEST_UCONTACT_PASSWORD",
        "campaign": "Ventas->",
        "dial_format": "00",
        "batch_size": 50,
        "retry_base_s": 0.05,
        "retry_max_s": 0.2,
        "max_attempts": 8,
        "timeout_s": 5.0,
        "cdr_delay_s": 0.2,  # the simulators write call records at once
        **extra,
    }


def _ucontact_held(sim: Any) -> list[str]:
    # The dial list holds numbers; each lead L{i} has its own number 98{i:08d}.
    present = sim.snapshot()["campaigns"]["Ventas->"]["dial_list"]
    held: list[str] = []
    for number, seen in present.items():
        key = f"L{int(number[-8:])}" if number.startswith("0091") else number
        held += [key] * int(seen["present"])
    return held


def _ucontact_diagnose(sim: Any, lead_keys: list[str]) -> str:
    listed = sim.snapshot()["campaigns"]["Ventas->"]["dial_list"]
    numbers = {k: f"009198{int(k[1:]):08d}" for k in lead_keys if k[1:].isdigit()}
    return "; ".join(f"{k} ({n}): {listed.get(n, 'never listed')}" for k, n in numbers.items())


def _ucontact() -> Vendor:
    from syncd.simulators.ucontact.api import UContactSimulator, create_app

    return Vendor(
        name="ucontact",
        simulator=lambda faults: repeatable(
            UContactSimulator(users={"api": UCONTACT_PASSWORD}, faults=faults, dial_delay_s=3600.0)
        ),
        app=create_app,
        sink=ucontact_sink,
        held=_ucontact_held,
        push_markers=(b"/auth/", b"/Dialers/"),
        diagnose=_ucontact_diagnose,
        has_sessions=True,
    )


AMEYO_PASSWORD = "ameyo-test-password"
UCONTACT_PASSWORD = "ucontact-test-password"
VENDOR_ENV = {"TEST_AMEYO_PASSWORD": AMEYO_PASSWORD, "TEST_UCONTACT_PASSWORD": UCONTACT_PASSWORD}
VENDORS: list[Vendor] = [_jodo(), _ameyo(), _ucontact()]
