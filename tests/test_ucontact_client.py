"""uContact sessions and reply shapes, against the simulator over loopback HTTP."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest

from syncd.core.model import ResultKind
from syncd.errors import SinkConfigError
from syncd.run.sinks import health_problem
from syncd.simulators.faults import Faults
from syncd.simulators.server import running
from syncd.simulators.ucontact.api import UContactSimulator, create_app
from syncd.sinks.base import SinkHealth
from tests.support.ucontact import CAMPAIGN, dialled, queued, served, sink_on, uy


async def test_open_logs_in_with_getusertoken_and_checks_the_campaign(tmp_path: Path) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            health = sink.health()
            assert health.ok and health.session == "valid"
            assert health.details["campaign"] == CAMPAIGN
            assert health.details["exists"] is True
            assert "totalcalls" in health.details
            assert [q.queue for q in health.queues] == [CAMPAIGN]  # its agents and callers
            assert sim.snapshot()["requests"] == {
                "auth/getUserToken": 1,
                "Supervisor/campaignstatus": 1,
                "Supervisor/queuesummary": 1,
            }
        assert sim.snapshot()["sessions_ended"] == 1  # close() ends the session
        assert sim.snapshot()["sessions_active"] == 0


@pytest.mark.parametrize("shape", ["list", "string"])
async def test_the_key_is_taken_from_a_json_string_or_the_end_of_a_list(
    tmp_path: Path, shape: str
) -> None:
    with served(token_reply=shape) as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            results = await sink.push([queued("k1", uy(1))])
        assert [r.kind for r in results] == [ResultKind.DELIVERED]
        assert sim.snapshot()["unauthorized"] == {}


async def test_an_old_server_answering_404_is_logged_into_with_userlogin(tmp_path: Path) -> None:
    with served(legacy_auth=True) as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            results = await sink.push([queued("k1", uy(1))])
            assert sink.health().details["legacy_auth"] is True
        requests = sim.snapshot()["requests"]
        assert requests["auth/getUserToken"] == 1  # asked once, then never again
        assert requests["auth/UserLogin"] == 1
        assert results[0].kind is ResultKind.DELIVERED
        assert sim.dial_list()[dialled(1)]["present"] == 1


async def test_a_wrong_password_stops_the_sink_without_showing_the_password(
    tmp_path: Path,
) -> None:
    with served(users={"api": "other"}) as (_, url):
        with pytest.raises(SinkConfigError) as caught:
            async with sink_on(url, tmp_path, password="hunter2-secret"):
                pass
    assert "refused user 'api'" in str(caught.value)
    assert "hunter2" not in str(caught.value)


async def test_an_unknown_campaign_stops_the_sink_at_open(tmp_path: Path) -> None:
    with served(campaigns=("Cobranza->",)) as (_, url):
        with pytest.raises(SinkConfigError, match=r"campaign 'Ventas->' does not exist"):
            async with sink_on(url, tmp_path):
                pass


@pytest.mark.parametrize("reply", ["401", "0"])
async def test_an_expired_key_is_renewed_once_and_the_call_replayed(
    tmp_path: Path, reply: str
) -> None:
    with served(unauthorized_reply=reply) as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            sim.expire_tokens(forget=False)  # the key's time is up
            results = await sink.push([queued("k1", uy(1))])
        snapshot = sim.snapshot()
        assert results[0].kind is ResultKind.DELIVERED
        assert snapshot["logins"] == 2
        assert snapshot["unauthorized"] == {"Dialers/uploadbase": 1}
        assert sim.dial_list()[dialled(1)] == {"present": 1, "added": 1, "peak": 1, "dialed": 0}


async def test_a_key_the_server_forgot_is_renewed_for_polls_too(tmp_path: Path) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            sim.expire_tokens()
            assert await sink.poll_outcomes() == 0
        assert sim.snapshot()["logins"] == 2


async def test_a_broken_answer_to_an_upload_is_retried_never_taken_as_success(
    tmp_path: Path,
) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            sim.faults.set(Faults(malformed_rate=1.0))
            results = await sink.push([queued("k1", uy(1))])
            sim.faults.set(Faults())
        assert results[0].kind is ResultKind.RETRY
        assert "Dialers/uploadbase answered" in results[0].reason


async def test_server_errors_on_an_upload_are_retried_inside_the_call_removing_nothing(
    tmp_path: Path,
) -> None:
    # A 5xx means the server did not take the file: sending it again cannot add twice.
    with served() as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            sim.faults.set(Faults(error_rate=1.0))
            results = await sink.push([queued("k1", uy(1))])
            sim.faults.set(Faults())
        assert results[0].kind is ResultKind.RETRY
        assert sim.snapshot()["faults_injected"] == {"5xx": 4}  # the call's four tries
        assert "Dialers/RemoveContact" not in sim.snapshot()["requests"]


async def test_an_upload_that_could_not_connect_is_sent_again_without_removal(
    tmp_path: Path,
) -> None:
    # Nothing reached the server: there is nothing it could have added.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sim = UContactSimulator(dial_delay_s=3600.0)
    async with sink_on(f"http://127.0.0.1:{port}", tmp_path, open_it=False) as sink:
        [first] = await sink.push([queued("k1", uy(1))])
        assert first.kind is ResultKind.RETRY and "ConnectError" in first.reason
        with running(create_app(sim), port=port):
            [second] = await sink.push([queued("k1", uy(1), attempts=2)])
            assert second.kind is ResultKind.DELIVERED
            assert "Dialers/RemoveContact" not in sim.snapshot()["requests"]
            assert sim.dial_list()[dialled(1)]["added"] == 1


async def test_idempotent_calls_are_retried_inside_the_call(tmp_path: Path) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            sim.faults.set(Faults(error_rate=0.5, seed=4))  # one 5xx, then an answer
            assert await sink.poll_outcomes() == 0
            sim.faults.set(Faults())
        assert sim.snapshot()["faults_injected"] == {"5xx": 1}


async def test_the_campaign_name_is_form_encoded_on_the_wire(tmp_path: Path) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            await sink.push([queued("k1", uy(1))])
        body = sim.last_body["Dialers/uploadbase"]
        assert "campaign=Ventas-%3E" in body
        assert "username=api" in body
        assert "cant=1" in body


async def test_a_zero_to_a_schedule_refuses_the_lead_and_to_an_upload_stops_the_sink(
    tmp_path: Path,
) -> None:
    when = datetime(2031, 5, 4, 15, 0, tzinfo=UTC)
    with served() as (sim, url):
        # The server does not know this campaign: it answers 0 to everything.
        async with sink_on(url, tmp_path, open_it=False, campaign="Otra->") as sink:
            [scheduled] = await sink.push([queued("K1", uy(1), call_at=when)])
            with pytest.raises(SinkConfigError, match="uploadbase refused the file"):
                await sink.push([queued("K2", uy(2))])
        assert scheduled.kind is ResultKind.REJECTED
        assert "ScheduleDialerCall refused the call for 2031-05-04 15:00:00" in scheduled.reason
        # A 0 may mean a stale key: each call got one new key and one replay.
        assert sim.snapshot()["requests"]["Dialers/ScheduleDialerCall"] == 2
        assert sim.snapshot()["requests"]["Dialers/uploadbase"] == 2


async def test_no_records_as_204_no_content_is_an_empty_poll(tmp_path: Path) -> None:
    with served(empty_as_204=True) as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            assert await sink.poll_outcomes() == 0
        assert sim.snapshot()["requests"]["Cdr/getrecords"] == 1


async def test_keepalive_renews_the_key_and_refreshes_the_campaign_figures(
    tmp_path: Path,
) -> None:
    with served() as (sim, url):
        async with sink_on(url, tmp_path) as sink:
            await sink.push([queued("K1", uy(1))])
            sim.dial_now()
            sim.expire_tokens()
            await sink.keepalive()
            health = sink.health()
        assert health.ok and health.session == "valid"
        assert health.details["totalcalls"] == 1
        assert health.details["logins"] == 2


async def test_a_keepalive_that_cannot_reach_the_dialer_leaves_the_sink_ok_for_readiness(
    tmp_path: Path,
) -> None:
    # issue 29: out of files, every keepalive failed; afterwards /readyz said "sink uc:
    # session valid" (a failure worded as a success) until the next keepalive. An
    # unreachable dialer is the breaker's to report; the campaign check said nothing new.
    with served() as (sim, url):
        async with sink_on(url, tmp_path, max_attempts=1) as sink:
            sim.faults.set(Faults(error_rate=1.0))
            await sink.keepalive()
            during = sink.health()
    assert during.ok and during.session == "valid"


@pytest.mark.parametrize(
    ("ok", "session", "said"),
    [
        (True, "valid", None),
        (True, "not needed", None),
        (True, "expired", "sink uc: session expired"),
        (False, "failed", "sink uc: session failed"),
        (False, "valid", "sink uc: its last check of the dialer failed; syncd status has why"),
    ],
)
def test_the_readiness_reason_of_a_sink_names_what_failed(
    ok: bool, session: str, said: str | None
) -> None:
    health = SinkHealth(ok=ok, session=session)
    assert health_problem("uc", health) == said
