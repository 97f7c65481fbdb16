"""Whether a dialer answers at all: the pure decision, and the watch every request passes."""

from __future__ import annotations

import ssl

import httpx
import pytest

from syncd.net.answers import WAITING, AnswerWatch, Misses, Silence, silence, unanswered_kind
from syncd.net.http import GuardedTransport
from syncd.net.ratelimit import RequestLimits
from tests.support.clock import FakeClock


def misses(*done: tuple[float, str]) -> Misses:
    found = Misses()
    for sent, kind in done:
        found.add(sent, kind)
    return found


@pytest.mark.parametrize(
    ("done", "waiting", "last_answer", "now", "expected"),
    [
        # nothing unanswered, nothing out
        ((), (), None, 100.0, None),
        # one refused connection: a blip until a second one, with no answer between
        (((10.0, "connection refused"),), (), None, 11.0, None),
        (
            ((10.0, "connection refused"), (10.5, "connection refused")),
            (),
            None,
            11.0,
            Silence(10.0, 2, ("connection refused",)),
        ),
        # one read timeout is a whole read timeout of silence
        (((10.0, "read timeout"),), (), 5.0, 40.0, Silence(10.0, 1, ("read timeout",))),
        (((10.0, "connect timeout"),), (), None, 20.0, Silence(10.0, 1, ("connect timeout",))),
        # a reset then a refusal
        (
            ((10.0, "connection reset"), (12.0, "connection refused")),
            (),
            None,
            13.0,
            Silence(10.0, 2, ("connection reset", "connection refused")),
        ),
        # a request still out within its read timeout says nothing yet
        ((), ((10.0, 30.0),), 9.0, 39.0, None),
        # past it, with no answer since it left: a timeout
        ((), ((10.0, 30.0),), 9.0, 40.0, Silence(10.0, 1, (WAITING,))),
        # sent before the latest answer: the dialer answered after it left
        ((), ((10.0, 30.0),), 11.0, 90.0, None),
        # a request with no read timeout is never overdue
        ((), ((10.0, None),), None, 1e6, None),
        # an unanswered request and an overdue one: the earliest is the since
        (
            ((20.0, "connection reset"),),
            ((12.0, 5.0),),
            None,
            21.0,
            Silence(12.0, 2, ("connection reset", WAITING)),
        ),
    ],
)
def test_silence_decision(
    done: tuple[tuple[float, str], ...],
    waiting: tuple[tuple[float, float | None], ...],
    last_answer: float | None,
    now: float,
    expected: Silence | None,
) -> None:
    assert silence(misses(*done), waiting, last_answer, now) == expected


def refused() -> httpx.ConnectError:
    return httpx.ConnectError("[Errno 111] Connection refused")


def refused_by_anyio() -> httpx.ConnectError:
    exc = httpx.ConnectError("All connection attempts failed")
    exc.__cause__ = OSError("All connection attempts failed")
    exc.__cause__.__cause__ = ConnectionRefusedError(111, "Connect call failed")
    return exc


def untrusted() -> httpx.ConnectError:
    exc = httpx.ConnectError("certificate verify failed")
    exc.__cause__ = ssl.SSLCertVerificationError("certificate verify failed")
    return exc


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ReadTimeout("timed out"), "read timeout"),
        (httpx.ConnectTimeout("timed out"), "connect timeout"),
        (httpx.WriteTimeout("timed out"), "write timeout"),
        (refused(), "connection refused"),
        (refused_by_anyio(), "connection refused"),
        (httpx.ConnectError("[Errno -2] Name or service not known"), "cannot connect"),
        (httpx.ReadError("reset by peer"), "connection reset"),
        (httpx.RemoteProtocolError("Server disconnected"), "connection closed without an answer"),
        # none of these is the dialer's silence
        (httpx.PoolTimeout("every connection busy"), None),
        (untrusted(), None),  # the dialer answered the handshake
        (httpx.ProxyError("407"), None),
        (ValueError("a bug"), None),
    ],
)
def test_what_a_transport_failure_says_of_the_dialer(exc: BaseException, kind: str | None) -> None:
    assert unanswered_kind(exc) == kind


def test_any_answer_clears_the_silence_and_a_request_sent_before_it_does_not_count() -> None:
    clock = FakeClock(0.0)
    watch = AnswerWatch(clock)
    slow = watch.sent(30.0)  # a slow request, out while the dialer answers others
    clock.advance(1)
    watch.answered(watch.sent(30.0))
    clock.advance(40)
    watch.ended(slow, "read timeout")
    assert watch.silence() is None  # it left before the latest answer

    first = watch.sent(30.0)
    watch.ended(first, "connection refused")
    second = watch.sent(30.0)
    watch.ended(second, "connection refused")
    assert watch.silence() == Silence(41.0, 2, ("connection refused",))

    watch.answered(watch.sent(30.0))  # an answer (a 500 is one) clears it at once
    assert watch.silence() is None


async def test_the_guarded_transport_tells_the_watch_of_every_request_answered_or_not() -> None:
    clock = FakeClock(0.0)
    answers: list[httpx.Response | BaseException] = [
        httpx.Response(500),
        refused(),
        refused(),
        httpx.Response(503),
    ]

    def dialer(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    limits = RequestLimits("jodo", clock=clock)
    transport = GuardedTransport(httpx.MockTransport(dialer), limits)
    async with httpx.AsyncClient(transport=transport, timeout=5.0) as http:
        said = []
        for _ in range(4):
            try:
                await http.get("http://dialer.test/x")
            except httpx.ConnectError:
                pass
            said.append(limits.answers.silence())

    assert said == [None, None, Silence(0.0, 2, ("connection refused",)), None]
