"""The Jodo sink against the Jodo simulator over real loopback HTTP: every documented shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from syncd.core.model import Action, Lead, QueuedLead, ResultKind
from syncd.errors import RetryableError, SinkConfigError
from syncd.net.retry import RetryPolicy
from syncd.simulators.faults import Faults
from syncd.simulators.server import running
from syncd.sinks.base import BatchRejected, SinkContext
from syncd.sinks.jodo.client import JodoClient
from syncd.sinks.jodo.config import JodoSinkConfig
from syncd.sinks.jodo.sink import JodoSink
from syncd.state.sqlite import SqliteStore
from tests.conftest import Simulated


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "state.db")
    await s.open()
    yield s
    await s.close()


def sink_for(url: str, store: SqliteStore, **extra: Any) -> JodoSink:
    config = JodoSinkConfig.model_validate(
        {
            "name": "jodo",
            "url": f"{url}/CustomerWebServices/handleCustomerWS",
            "apikey": "test_org",
            "servicekey": "VoiceProcess",
            "media": 12,
            "updateparam": "crmuniquefield",
            "dial_format": "00",
            "timezone": "Asia/Kolkata",
            **extra,
        }
    )
    sink = JodoSink(config, SinkContext(store=store, region="IN"))
    sink.client.policy = RetryPolicy(attempts=3, timeout_s=10, wait_initial_s=0.01, wait_max_s=0.05)
    return sink


def queued(key: str, phone: str = "+919820012345", **lead: Any) -> QueuedLead:
    return QueuedLead("jodo", key, f"h-{key}", Action.UPSERT, Lead(key=key, phone=phone, **lead), 1)


async def test_push_upserts_records_by_crm_unique_field(store: SqliteStore) -> None:
    from datetime import UTC, datetime

    from syncd.simulators.jodo.api import JodoSimulator, create_app

    sim = JodoSimulator(timezone="Asia/Kolkata")  # the server's clock, as the sink is told
    when = datetime(2026, 12, 1, 5, 0, tzinfo=UTC)
    with running(create_app(sim)) as url:
        sink = sink_for(url, store)
        results = await sink.push(
            [
                queued(
                    "L1",
                    first_name="Asha",
                    last_name="Rao",
                    email="a@x.in",
                    agent="agent7",
                    call_at=when,
                    fields={"city": "Pune"},
                ),
                queued("L2", phone="+919820054321"),
            ]
        )
        await sink.close()
    assert [r.kind for r in results] == [ResultKind.DELIVERED, ResultKind.DELIVERED]
    records = {r["leadnumber"]: r for r in sim.records()}
    assert records["L1"]["mobilenumber"] == "00919820012345"
    assert records["L1"]["name"] == "Asha Rao"
    assert records["L1"]["callDateTime"] == "2026-12-01 10:30:00"  # the server's clock (IST)
    assert records["L1"]["calltype"] == "41" and records["L1"]["userlogin"] == "agent7"
    assert records["L1"]["city"] == "Pune"
    assert records["L2"]["mobilenumber"] == "00919820054321"
    assert "calltype" not in records["L2"]  # an ordinary lead: calltype as configured (none)
    assert records["L2"]["callDateTime"]  # …due from the push moment, on the server's clock


async def test_a_server_clock_in_another_zone_gets_call_times_on_its_own_clock(
    jodo: Simulated, store: SqliteStore
) -> None:
    # The sink is told Asia/Kolkata; the server's clock reads UTC. Measured before the
    # first import, the callback is sent as that clock will show it (a second late at
    # most), not 5.5 h late, past its window.
    from datetime import UTC, datetime

    sink = sink_for(jodo.url, store)
    when = datetime(2026, 12, 1, 5, 0, tzinfo=UTC)
    await sink.push([queued("L1", call_at=when), queued("L2", phone="+919820054321")])
    await sink.close()
    records = {r["leadnumber"]: r for r in jodo.sim.records()}
    assert records["L1"]["callDateTime"] in ("2026-12-01 05:00:01", "2026-12-01 05:00:02")


async def test_pushing_the_same_lead_again_updates_rather_than_adds(
    jodo: Simulated, store: SqliteStore
) -> None:
    sink = sink_for(jodo.url, store)
    await sink.push([queued("L1", first_name="Asha")])
    await sink.push([queued("L1", first_name="Asha Devi")])
    await sink.close()
    assert len(jodo.sim.records()) == 1
    assert jodo.sim.records()[0]["fname"] == "Asha Devi"


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"apikey": "someone_else"}, "1107"),
        ({"servicekey": "NoSuchProcess"}, "1108"),
    ],
)
async def test_unknown_keys_stop_the_sink(
    jodo: Simulated, store: SqliteStore, overrides: dict[str, str], code: str
) -> None:
    sink = sink_for(jodo.url, store, **overrides)
    with pytest.raises(SinkConfigError) as err:
        await sink.push([queued("L1")])
    await sink.close()
    assert err.value.code == code
    assert "someone_else" not in str(err.value)


async def test_api_key_of_another_organisation_is_a_key_mismatch(store: SqliteStore) -> None:
    from syncd.simulators.jodo.api import JodoSimulator, create_app

    sim = JodoSimulator(servicekeys=("VoiceProcess",))
    sim.add_process("other_org", "OtherProcess")
    with running(create_app(sim)) as url:
        sink = sink_for(url, store, servicekey="OtherProcess")
        with pytest.raises(SinkConfigError) as err:
            await sink.push([queued("L1")])
        await sink.close()
    assert err.value.code == "1243"


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"media": ""}, 19),
        ({"media": "voice"}, 17),
        ({"media": "99"}, 18),
        ({"updateparam": ""}, 25),
        ({"updateparam": "MobileNumber"}, 26),
    ],
)
async def test_configuration_status_codes_are_sink_config_errors(
    jodo: Simulated, store: SqliteStore, payload: dict[str, str], code: int
) -> None:
    sink = sink_for(jodo.url, store)
    body = {
        "media": "12",
        "updateparam": "crmuniquefield",
        "data": [sink.record(queued("L1"))],
        **payload,
    }
    # The client raises the reply's failure itself: no caller checks the status.
    with pytest.raises(SinkConfigError) as raised:
        await sink.client.call("ImportProcessData", body)
    await sink.close()
    assert raised.value.code == str(code)


async def test_missing_update_parameter_is_status_24(jodo: Simulated, store: SqliteStore) -> None:
    sink = sink_for(jodo.url, store)
    with pytest.raises(SinkConfigError) as raised:
        await sink.client.call(
            "ImportProcessData", {"media": "12", "data": [{"mobilenumber": "1"}]}
        )
    await sink.close()
    assert raised.value.code == "24"


async def test_a_batch_with_one_bad_record_is_refused_as_a_whole(
    jodo: Simulated, store: SqliteStore
) -> None:
    sink = sink_for(jodo.url, store, dial_format="prefix:*")  # "*91…" is no number for Jodo
    with pytest.raises(BatchRejected, match="Invalid mobile number"):
        await sink.push([queued("L1"), queued("L2")])
    await sink.close()
    assert jodo.sim.records() == []


async def test_5xx_and_429_are_retried_honouring_retry_after(
    jodo: Simulated, store: SqliteStore
) -> None:
    jodo.sim.faults.set(Faults(seed=3, error_rate=0.3, rate_429=0.3, retry_after="0"))
    sink = sink_for(jodo.url, store)
    sink.client.policy = RetryPolicy(
        attempts=20, timeout_s=30, wait_initial_s=0.01, wait_max_s=0.02
    )
    for i in range(10):
        results = await sink.push([queued(f"L{i}", phone=f"+9198200{i:05d}")])
        assert results[0].kind is ResultKind.DELIVERED
    await sink.close()
    assert len(jodo.sim.records()) == 10
    assert jodo.sim.faults.injected.get("5xx", 0) + jodo.sim.faults.injected.get("429", 0) > 0


def test_retry_after_in_seconds_and_http_date_form() -> None:
    from syncd.net.retry import parse_retry_after

    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None


@pytest.mark.parametrize(
    "body", ["", "null", "<html><body>Bad gateway</body></html>", "{oops", "[1]"]
)
async def test_bodies_that_are_not_a_json_object_are_errors_never_success(
    store: SqliteStore, body: str
) -> None:
    async def handler(request: Request) -> Response:
        return Response(
            body, media_type="text/html" if body.startswith("<") else "application/json"
        )

    app = Starlette(
        routes=[Route("/CustomerWebServices/handleCustomerWS", handler, methods=["POST"])]
    )
    with running(app) as url:
        sink = sink_for(url, store)
        sink.client.policy = RetryPolicy(
            attempts=2, timeout_s=5, wait_initial_s=0.01, wait_max_s=0.01
        )
        with pytest.raises(RetryableError):
            await sink.push([queued("L1")])
        await sink.close()


async def test_documented_failure_reply_with_curly_quotes_is_still_understood(
    store: SqliteStore,
) -> None:
    # The document's own fail example: "method":”ImportProcessData”
    text = '{"method":”ImportProcessData”,"revisionno":"1","status":5,"statusdesc":"fail",}'

    async def handler(request: Request) -> Response:
        return Response(text, media_type="text/plain")

    app = Starlette(
        routes=[Route("/CustomerWebServices/handleCustomerWS", handler, methods=["POST"])]
    )
    with running(app) as url:
        sink = sink_for(url, store)
        with pytest.raises(BatchRejected, match="fail"):
            await sink.push([queued("L1"), queued("L2")])
        await sink.close()


async def test_connection_refused_is_retryable(store: SqliteStore) -> None:
    sink = sink_for("http://127.0.0.1:9", store)
    sink.client.policy = RetryPolicy(attempts=2, timeout_s=5, wait_initial_s=0.01, wait_max_s=0.01)
    with pytest.raises(RetryableError, match="ConnectError"):
        await sink.push([queued("L1")])
    await sink.close()


async def test_request_carries_the_documented_fields(jodo: Simulated) -> None:
    # The simulator validates reqdatetime's format, apikey and servicekey: a success proves them.
    async with httpx.AsyncClient() as http:
        from pydantic import SecretStr

        client = JodoClient(
            http,
            f"{jodo.url}/CustomerWebServices/handleCustomerWS",
            SecretStr("test_org"),
            "VoiceProcess",
        )
        reply = await client.call(
            "ImportProcessData",
            {
                "media": "12",
                "updateparam": "mobilenumber",
                "data": [{"mobilenumber": "00918452892308", "fname": "suvarna"}],
            },
        )
    assert reply.body["statuscode"] == "001"
