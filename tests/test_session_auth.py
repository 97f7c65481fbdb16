"""The one session helper (net/session.py): a lazy login, one renewal per expiry, one replay.

Against a small token server over loopback (tests/support/session_server.py), and
against the uContact simulator through the real uContact sink.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from syncd.errors import SessionExpiredError, SinkConfigError
from syncd.net.http import URGENT, make_client
from syncd.net.ratelimit import RequestLimits
from syncd.net.session import SessionAuth
from tests.support.session_server import PASSWORD, TokenServer, TokenVendor, serving
from tests.support.ucontact import queued, served, sink_on, uy


@pytest.fixture
def server() -> TokenServer:
    return TokenServer()


@pytest.fixture
async def url(server: TokenServer) -> AsyncIterator[str]:
    with serving(server) as base:
        yield base


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(timeout_s=5, verify_tls=True, guard=RequestLimits("tokens")) as client:
        yield client


def session_for(
    http: httpx.AsyncClient, url: str, *, in_body: bool = False, password: str = PASSWORD
) -> SessionAuth:
    return SessionAuth(TokenVendor(http, url, in_body=in_body, password=password))


async def work(http: httpx.AsyncClient, url: str, session: SessionAuth, n: int = 0) -> str:
    response = await http.post(url + "/work", data={"n": str(n)}, auth=session)
    assert response.status_code == 200
    return response.text


async def test_twenty_first_requests_share_one_lazy_login(
    server: TokenServer, url: str, http: httpx.AsyncClient
) -> None:
    session = session_for(http, url)
    await asyncio.gather(*(work(http, url, session, n) for n in range(20)))
    assert server.logins == 1
    assert server.work == [("t1", "ok")] * 20
    assert (session.state, session.logins) == ("valid", 1)


async def test_twenty_requests_meeting_an_expired_session_cause_exactly_one_login(
    server: TokenServer, url: str, http: httpx.AsyncClient
) -> None:
    session = session_for(http, url)
    await work(http, url, session)
    server.expire()
    with capture_logs() as logs:
        answers = await asyncio.gather(*(work(http, url, session, n) for n in range(20)))
    assert sorted(answers) == sorted(f'{{"n": "{n}"}}' for n in range(20))
    assert server.logins == 2
    # Each request was refused once with the old token and replayed once with the new.
    assert server.work[1:].count(("t1", "401")) == 20
    assert server.work[1:].count(("t2", "ok")) == 20
    events = [(e["event"], e.get("reason")) for e in logs]
    assert events.count(("sink.session.login", "expired")) == 1
    assert events.count(("sink.session.expired", "work: HTTP 401")) == 1


async def test_the_login_and_the_replay_go_ahead_of_the_queue_the_first_try_does_not(
    server: TokenServer, url: str, http: httpx.AsyncClient
) -> None:
    session = session_for(http, url)
    await work(http, url, session)
    server.expire()
    sent: list[tuple[str, bool]] = []

    async def note(request: httpx.Request) -> None:
        sent.append((request.url.path, bool(request.extensions.get(URGENT))))

    http.event_hooks = {"request": [note], "response": []}
    await work(http, url, session)
    assert sent == [("/work", False), ("/login", True), ("/work", True)]


async def test_a_replay_refused_again_is_an_error_not_a_loop(
    server: TokenServer, url: str, http: httpx.AsyncClient
) -> None:
    session = session_for(http, url)
    server.refuse_every_token = True
    with pytest.raises(SessionExpiredError, match="refused again right after a new login"):
        await work(http, url, session)
    assert server.logins == 2  # the first login, and one renewal
    assert server.work == [("t1", "401"), ("t2", "401")]


async def test_a_refused_login_is_a_sink_config_error_that_waiting_requests_share(
    server: TokenServer, url: str, http: httpx.AsyncClient
) -> None:
    session = session_for(http, url, password="wrong")
    outcomes = await asyncio.gather(
        *(work(http, url, session, n) for n in range(10)), return_exceptions=True
    )
    assert all(isinstance(o, SinkConfigError) for o in outcomes)
    assert "check the password" in str(outcomes[0])
    assert server.login_attempts == 1  # not one per waiting request
    assert server.work == []
    assert session.state == "failed"
    with pytest.raises(SinkConfigError):  # a later request tries again
        await work(http, url, session)
    assert server.login_attempts == 2


async def test_a_login_refused_at_renewal_stops_every_request_that_met_the_expiry(
    server: TokenServer, url: str, http: httpx.AsyncClient
) -> None:
    session = session_for(http, url)
    await work(http, url, session)
    server.expire()
    server.refuse_logins = True  # the credentials were revoked meanwhile
    outcomes = await asyncio.gather(
        *(work(http, url, session, n) for n in range(5)), return_exceptions=True
    )
    assert all(isinstance(o, SinkConfigError) for o in outcomes)
    assert server.login_attempts == 2
    assert session.state == "failed" and session.token is None


async def test_a_token_in_the_body_is_written_into_the_replayed_body(
    server: TokenServer, url: str, http: httpx.AsyncClient
) -> None:
    session = session_for(http, url, in_body=True)
    await work(http, url, session, 1)
    server.expire()
    response = await http.post(url + "/work", data={"campaign": "Ventas->", "n": "2"}, auth=session)
    assert response.status_code == 200
    assert server.work[1:] == [("t1", "401"), ("t2", "ok")]
    assert server.bodies[-1] == {"campaign": "Ventas->", "n": "2"}  # the rest kept as sent


async def test_a_streamed_body_is_read_once_and_replayed_whole(
    server: TokenServer, url: str, http: httpx.AsyncClient
) -> None:
    session = session_for(http, url)
    await work(http, url, session)
    server.expire()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"n=3&"
        yield b"lead=L3"

    response = await http.post(
        url + "/work",
        content=chunks(),
        headers={"content-type": "application/x-www-form-urlencoded"},
        auth=session,
    )
    assert response.status_code == 200
    assert server.bodies[-1] == {"n": "3", "lead": "L3"}


async def test_ucontact_credentials_revoked_mid_run_stop_the_sink_with_one_login_try(
    tmp_path: Path,
) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            logins = sim.snapshot()["logins"]
            sim.users["api"] = "changed"
            sim.expire_tokens()
            with pytest.raises(SinkConfigError, match="refused user 'api'"):
                await sink.push([queued(f"K{n}", uy(n)) for n in range(1, 6)])
            assert sink.health().session == "failed"
        assert sim.snapshot()["logins"] == logins
        assert sim.requests["auth/getUserToken"] == 2  # open, and the one renewal attempt
