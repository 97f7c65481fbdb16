"""The one HTTP policy every vendor client uses: backoff, budget, Retry-After, limits."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
import stamina
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from syncd.errors import PermanentError, RetryableError, SinkConfigError
from syncd.net.http import lenient_json, make_client, status_error, transport_error
from syncd.net.ratelimit import RateLimiter, RequestLimits
from syncd.net.retry import (
    MAX_RETRY_AFTER_S,
    MIN_WAIT_S,
    RETRIES,
    RetryPolicy,
    parse_retry_after,
    with_retries,
)
from syncd.simulators.server import running
from tests.support.clock import FakeClock


@pytest.fixture
def waits() -> Iterator[list[float]]:
    """The waits stamina schedules between attempts, in order."""
    seen: list[float] = []
    stamina.instrumentation.set_on_retry_hooks([lambda details: seen.append(details.wait_for)])
    yield seen
    stamina.instrumentation.set_on_retry_hooks([])  # as syncd.net.retry leaves them


class Flaky:
    """Fails ``failures`` times with ``error``, then returns "ok"."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


# -- Retry-After ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        ("0", 0.0),
        ("2.5", 2.5),
        (" 12 ", 12.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 10.0),  # HTTP-date, 10 s after `now`
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # a date in the past: go now
    ],
)
def test_retry_after_is_read_in_seconds_and_http_date_form(header: str, seconds: float) -> None:
    assert parse_retry_after(header, now=1445412470.0) == seconds


@pytest.mark.parametrize("header", ["", None, "soon", "-5", "inf", "nan", "1e3", "٣"])
def test_a_retry_after_that_is_not_a_delay_or_date_is_ignored(header: str | None) -> None:
    assert parse_retry_after(header) is None


def test_an_absurd_retry_after_is_capped_at_a_day() -> None:
    assert parse_retry_after("9" * 400) == MAX_RETRY_AFTER_S


async def test_retry_after_zero_still_waits_a_little_never_a_busy_loop(waits: list[float]) -> None:
    call = Flaky(3, RetryableError("HTTP 429", code="429", retry_after=0.0))
    policy = RetryPolicy(attempts=5, timeout_s=10, wait_initial_s=0.01, wait_max_s=1)

    assert await with_retries(call, policy, vendor="test", what="push") == "ok"
    assert call.calls == 4
    assert waits == pytest.approx([MIN_WAIT_S] * 3)


async def test_retry_after_within_the_call_budget_is_honoured_exactly(waits: list[float]) -> None:
    call = Flaky(1, RetryableError("HTTP 503", code="503", retry_after=0.2))
    policy = RetryPolicy(attempts=3, timeout_s=10, wait_initial_s=0.01, wait_max_s=1)

    assert await with_retries(call, policy, vendor="test", what="push") == "ok"
    assert waits == pytest.approx([0.2])


async def test_a_retry_after_longer_than_the_in_call_wait_goes_back_to_the_outbox() -> None:
    # Holding a connection and a worker for minutes helps nobody: the error (with its
    # delay) reaches the push loop, which reschedules the leads and holds the sink.
    call = Flaky(5, RetryableError("HTTP 429", code="429", retry_after=120.0))
    policy = RetryPolicy(attempts=5, timeout_s=600, wait_initial_s=0.01, wait_max_s=15)

    with pytest.raises(RetryableError) as err:
        await with_retries(call, policy, vendor="test", what="push")
    assert call.calls == 1
    assert err.value.retry_after == 120.0


async def test_only_retries_that_are_made_are_logged_and_counted() -> None:
    call = Flaky(5, RetryableError("timed out"))
    policy = RetryPolicy(attempts=3, timeout_s=600, wait_initial_s=0.01, wait_max_s=0.02)
    before = RETRIES[("test", "count")]

    with pytest.raises(RetryableError):
        await with_retries(call, policy, vendor="test", what="count")
    assert call.calls == 3
    assert RETRIES[("test", "count")] - before == 2  # not a third that never went


async def test_no_attempt_starts_once_syncd_is_stopping() -> None:
    stopping = asyncio.Event()
    stopping.set()
    call = Flaky(5, RetryableError("timed out"))
    policy = RetryPolicy(attempts=4, timeout_s=600, wait_initial_s=0.01, stopping=stopping)

    with pytest.raises(RetryableError, match="timed out"):  # the last error stands
        await with_retries(call, policy, vendor="test", what="stop")
    assert call.calls == 1


# -- backoff ------------------------------------------------------------------------------


async def test_backoff_is_exponential_with_full_jitter_and_capped(waits: list[float]) -> None:
    call = Flaky(7, RetryableError("HTTP 500", code="500"))
    policy = RetryPolicy(attempts=8, timeout_s=30, wait_initial_s=0.02, wait_max_s=0.16)

    assert await with_retries(call, policy, vendor="test", what="push") == "ok"
    ceilings = [min(0.16, 0.02 * 2**n) for n in range(7)]
    assert len(waits) == 7
    for wait, ceiling in zip(waits, ceilings, strict=True):
        assert MIN_WAIT_S - 1e-9 <= wait <= max(ceiling, MIN_WAIT_S) + 1e-9


async def test_attempts_are_bounded() -> None:
    call = Flaky(10, RetryableError("HTTP 502", code="502"))
    policy = RetryPolicy(attempts=3, timeout_s=30, wait_initial_s=0.01, wait_max_s=0.01)

    with pytest.raises(RetryableError, match="HTTP 502"):
        await with_retries(call, policy, vendor="test", what="push")
    assert call.calls == 3


async def test_the_total_time_budget_is_never_overrun_by_a_wait(waits: list[float]) -> None:
    call = Flaky(10, RetryableError("HTTP 500", code="500"))
    policy = RetryPolicy(attempts=100, timeout_s=0.3, wait_initial_s=0.2, wait_max_s=0.2)

    with pytest.raises(RetryableError):
        await with_retries(call, policy, vendor="test", what="push")
    # Budget 0.3 s and waits ≤ 0.2 s: it stops before a wait would cross the budget
    # (what was scheduled, not how long the machine took to run it).
    assert 0 < sum(waits) <= 0.3
    assert all(w <= 0.2 for w in waits)
    assert call.calls == len(waits) + 1 < 10


async def test_permanent_errors_are_never_retried() -> None:
    call = Flaky(1, PermanentError("refused", vendor="test"))
    with pytest.raises(PermanentError):
        await with_retries(call, RetryPolicy(), vendor="test", what="push")
    assert call.calls == 1


async def test_stamina_testing_mode_skips_the_waits() -> None:
    call = Flaky(3, RetryableError("HTTP 500", code="500", retry_after=30.0))
    with stamina.set_testing(True, attempts=4):
        # Three waits of 30 s would take 90 s: a bound no loaded machine comes near.
        async with asyncio.timeout(20):
            result = await with_retries(call, RetryPolicy(wait_max_s=60), vendor="test", what="x")
    assert result == "ok" and call.calls == 4


def test_status_classification_retries_429_5xx_and_408_only() -> None:
    def answer(code: int, **headers: str) -> httpx.Response:
        return httpx.Response(code, headers=headers, request=httpx.Request("POST", "http://x"))

    assert status_error(answer(429, **{"Retry-After": "3"}), "v").retry_after == 3.0  # type: ignore[union-attr]
    for code in (408, 500, 502, 503, 504):
        assert isinstance(status_error(answer(code), "v"), RetryableError)
    for code in (200, 400, 401, 403, 404, 422):
        assert status_error(answer(code), "v") is None


def test_lenient_json_turns_pathological_nesting_into_a_value_error() -> None:
    with pytest.raises(ValueError):
        lenient_json("[" * 100_000)
    assert lenient_json('{"a": [1, 2,],}') == {"a": [1, 2]}


# -- rate, concurrency and hold --------------------------------------------------------


def test_rate_limiter_spaces_requests_at_the_configured_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(4.0, clock=clock)
    assert [limiter.reserve() for _ in range(4)] == [0.0, 0.25, 0.5, 0.75]
    clock.now += 10  # idle time does not bank an unlimited burst
    assert [limiter.reserve() for _ in range(2)] == [0.0, 0.25]


def test_rate_limiter_allows_a_burst_up_to_its_size() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2.0, burst=3, clock=clock)
    assert [limiter.reserve() for _ in range(5)] == [0.0, 0.0, 0.0, 0.5, 1.0]


def test_a_hold_delays_every_request_until_it_ends() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock)
    assert limiter.reserve() == 0.0
    limiter.hold(3.0)
    assert limiter.reserve() == 3.0
    clock.now += 3.0
    assert limiter.reserve() == 0.0


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0.0)


def concurrency_app() -> tuple[Starlette, dict[str, int]]:
    seen = {"now": 0, "max": 0, "total": 0}

    async def handler(request: Request) -> Response:
        seen["now"] += 1
        seen["total"] += 1
        seen["max"] = max(seen["max"], seen["now"])
        await asyncio.sleep(0.05)
        seen["now"] -= 1
        return PlainTextResponse("{}")

    return Starlette(routes=[Route("/", handler, methods=["GET"])]), seen


async def test_a_guarded_client_never_has_more_requests_in_flight_than_allowed() -> None:
    app, seen = concurrency_app()
    limits = RequestLimits("test", max_in_flight=2)
    with running(app) as url:
        async with make_client(timeout_s=5, verify_tls=True, guard=limits) as http:
            await asyncio.gather(*(http.get(url + "/") for _ in range(8)))
    assert seen["total"] == 8
    assert seen["max"] == 2
    assert limits.limiter.granted == 8  # each request took its turn at the sink's limiter


async def test_a_429_with_retry_after_holds_every_request_of_the_sink() -> None:
    async def handler(request: Request) -> Response:
        return PlainTextResponse("slow down", status_code=429, headers={"Retry-After": "30"})

    app = Starlette(routes=[Route("/", handler, methods=["GET"])])
    limits = RequestLimits("test")
    with running(app) as url:
        async with make_client(timeout_s=5, verify_tls=True, guard=limits) as http:
            await http.get(url + "/")
    assert 29 < limits.limiter.held_for() <= 30


async def test_an_unguarded_client_is_unchanged() -> None:
    app, seen = concurrency_app()
    with running(app) as url:
        async with make_client(timeout_s=5, verify_tls=True) as http:
            await asyncio.gather(*(http.get(url + "/") for _ in range(4)))
    assert seen["total"] == 4


@pytest.mark.parametrize(
    ("error", "answered"),
    [
        (status_error(httpx.Response(500), "jodo"), True),  # the dialer failed: took nothing
        (status_error(httpx.Response(503), "jodo"), True),
        (status_error(httpx.Response(429), "jodo"), True),
        (status_error(httpx.Response(504), "jodo"), False),  # a gateway gave up waiting
        (transport_error(httpx.ReadTimeout("timed out"), "jodo"), False),  # no answer
        (transport_error(httpx.RemoteProtocolError("reset"), "jodo"), False),
    ],
)
def test_a_failure_the_dialer_answered_is_told_from_one_that_may_have_been_stored(
    error: RetryableError | SinkConfigError | None, answered: bool
) -> None:
    # An unanswered upload puts its leads in doubt (the dialer may hold them).
    assert isinstance(error, RetryableError) and error.answered is answered
