"""Contract: the Ameyo client against the Ameyo simulator, command by command, shape by shape."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from syncd.errors import RetryableError, SessionExpiredError, SinkConfigError
from syncd.net.http import make_client
from syncd.net.retry import RetryPolicy
from syncd.simulators.ameyo.api import AmeyoSimulator, create_app
from syncd.simulators.faults import Faults
from syncd.simulators.server import running
from syncd.sinks.ameyo.client import AmeyoClient, AmeyoRefused, InvalidSession, parse_body
from syncd.sinks.ameyo.config import AmeyoSinkConfig
from syncd.sinks.ameyo.replies import RESULT_TYPES, Verdict, call_status, result_list, result_reason

SESSION = {"mode": "session", "user_id": "syncd", "password": "secret"}


def config(url: str, **overrides: Any) -> AmeyoSinkConfig:
    values: dict[str, Any] = {
        "name": "ameyo",
        "url": url,
        "auth": SESSION,
        "campaign_id": 1,
        "lead_id": 1,
        **overrides,
    }
    return AmeyoSinkConfig(**values)


@pytest.fixture
def sim() -> AmeyoSimulator:
    return AmeyoSimulator(dialing=False)


@pytest.fixture
def url(sim: AmeyoSimulator) -> Iterator[str]:
    with running(create_app(sim)) as base:
        yield base


@pytest.fixture
async def client(url: str) -> AsyncIterator[AmeyoClient]:
    http = make_client(timeout_s=5, verify_tls=True)
    yield AmeyoClient(http, config(url), policy=RetryPolicy(attempts=2, wait_initial_s=0.01))
    await http.aclose()


def upload(records: list[dict[str, Any]], **props: bool) -> dict[str, Any]:
    return {
        "campaignId": 1,
        "leadId": 1,
        "properties": {"update.customer": True, "migrate.customer": False, **props},
        "customerRecords": records,
    }


async def test_login_returns_a_session_id_and_the_servers_ping_interval(
    client: AmeyoClient, sim: AmeyoSimulator
) -> None:
    assert client.session is not None
    session_id = await client.session.current()
    assert session_id in sim.sessions
    assert client.terms is not None and client.terms.ping_interval_s == 20.0
    assert sim.logins == 1


async def test_a_refused_login_is_a_sink_config_error_that_never_shows_the_password(
    url: str, sim: AmeyoSimulator
) -> None:
    async with make_client(timeout_s=5, verify_tls=True) as http:
        cfg = config(url, auth={**SESSION, "password": "hunter2-wrong"})
        client = AmeyoClient(http, cfg)
        assert client.session is not None
        with pytest.raises(SinkConfigError) as caught:
            await client.session.current()
    assert "Authentication failed" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert sim.logins == 0


async def test_ping_session_answers_alive_and_is_counted(
    client: AmeyoClient, sim: AmeyoSimulator
) -> None:
    body = await client.call("ping-session", {"sessionPushSeqNo": "0"})
    assert body["alive"] is True
    assert sim.pings == 1


async def test_logout_ends_the_session(client: AmeyoClient, sim: AmeyoSimulator) -> None:
    assert client.session is not None
    session_id = await client.session.current()
    assert await client.send("logout", {"sessionId": session_id}) == {}
    assert sim.counts["logouts"] == 1
    assert not sim.sessions


async def test_get_leads_for_campaign_lists_leads_with_their_enabled_flag(
    client: AmeyoClient,
) -> None:
    leads = result_list(await client.call("getLeadsForCampaign", {"campaignId": 1}))
    assert leads is not None
    assert {(lead["leadId"], lead["enabled"]) for lead in leads} == {
        (1, True),
        (21, True),
        (35, False),
    }


async def test_get_leads_for_an_unknown_campaign_is_refused(client: AmeyoClient) -> None:
    with pytest.raises(AmeyoRefused, match=r"campaign\.not\.found"):
        await client.call("getLeadsForCampaign", {"campaignId": 99})


async def test_upload_contacts_adds_then_updates_on_phone1(
    client: AmeyoClient, sim: AmeyoSimulator
) -> None:
    first = result_list(await client.call("uploadContacts", upload([{"phone1": "919820012345"}])))
    again = result_list(
        await client.call("uploadContacts", upload([{"phone1": "919820012345", "name": "Asha"}]))
    )
    assert first is not None and again is not None
    assert first[0]["resultTypeString"] == "ADDED"
    assert again[0]["resultTypeString"] == "UPDATED"
    assert first[0]["customerId"] == again[0]["customerId"]
    assert sim.uploads() == {"919820012345": 2}
    assert sim.customer_list()[0].data["name"] == "Asha"


async def test_upload_without_update_customer_answers_duplicate_not_added(
    client: AmeyoClient,
) -> None:
    await client.call("uploadContacts", upload([{"phone1": "919820012345"}]))
    body = await client.call(
        "uploadContacts", upload([{"phone1": "919820012345"}], **{"update.customer": False})
    )
    items = result_list(body)
    assert items is not None and items[0]["resultTypeString"] == "DUPLICATE_NOT_ADDED"
    assert RESULT_TYPES["DUPLICATE_NOT_ADDED"] is Verdict.DELIVERED


async def test_upload_into_another_lead_migrates_when_asked(
    client: AmeyoClient, sim: AmeyoSimulator
) -> None:
    await client.call("uploadContacts", upload([{"phone1": "919820012345"}]))
    body = await client.call(
        "uploadContacts",
        {**upload([{"phone1": "919820012345"}], **{"migrate.customer": True}), "leadId": 21},
    )
    items = result_list(body)
    assert items is not None and items[0]["resultTypeString"] == "UPDATED_AND_MIGRATED"
    assert sim.customer_list()[0].lead_id == 21


async def test_a_phone_of_invalid_length_is_refused_per_record(client: AmeyoClient) -> None:
    body = await client.call(
        "uploadContacts",
        upload([{"phone1": "919820012345"}, {"phone1": "12345678901234567890123"}]),
    )
    items = result_list(body)
    assert items is not None
    assert [i["resultTypeString"] for i in items] == ["ADDED", "PREPROCESSING_INVALID_LENGTH"]
    assert result_reason(items[1]) == (
        "PREPROCESSING_INVALID_LENGTH: CustomerManager.Phone.number.does.not.have.valid.length (23)"
    )


async def test_a_missing_phone1_is_refused_as_a_not_nullable_column(client: AmeyoClient) -> None:
    items = result_list(await client.call("uploadContacts", upload([{"name": "no phone"}])))
    assert items is not None
    assert items[0]["resultTypeString"] == "PREPROCESSOR_NOT_NULLABLE_COLUMN_GIVEN_NULL"
    assert items[0]["Inserted"] is False  # the document's spelling; the sink reads any case
    assert "phone1" in result_reason(items[0])


async def test_upload_contact_and_add_callback_schedules_the_callback(
    client: AmeyoClient, sim: AmeyoSimulator
) -> None:
    body = await client.call(
        "uploadContactAndAddCallback",
        {
            "campaignId": 1,
            "leadId": 1,
            "properties": {"update.customer": True},
            "customerAndCallbackRecords": [
                {
                    "customerRecord": {"phone1": "919820012345"},
                    "callbackRecord": {
                        "callBackTime": "2030-01-02 10:00:00",
                        "userId": "agent7",
                        "isSelfCallBack": True,
                    },
                },
                {"customerRecord": {"phone1": "919820012346"}},
                {
                    "customerRecord": {"phone1": "919820012347"},
                    "callbackRecord": {"callBackTime": "2016-08-2716:23:00"},
                },
            ],
        },
    )
    assert isinstance(body, list)  # this command answers a bare list, not beanResponse
    assert [i["resultTypeString"] for i in body] == ["ADDED", "ADDED", "INVALID_RECORD_FAILED"]
    assert body[0]["callbackProperties"]["customerId"] == str(body[0]["customerId"])
    assert body[0]["callbackTime"] == "Jan 2, 2030 10:00:00 AM"
    [callback] = sim.callbacks
    assert (callback.user_id, callback.self_callback) == ("agent7", True)
    assert len(sim.customer_list()) == 2  # the record with a bad callback time is not added


async def test_add_callback_schedules_for_an_existing_customer(
    client: AmeyoClient, sim: AmeyoSimulator
) -> None:
    items = result_list(await client.call("uploadContacts", upload([{"phone1": "919820012345"}])))
    assert items is not None
    customer_id = str(items[0]["customerId"])
    body = await client.call(
        "addCallback",
        {
            "campaignId": 1,
            "callBackTime": "2030-05-31 15:30:00",
            "isSelfCallBack": "false",
            "userId": "agent",
            "callBackHandlerType": "voice.campaign.callback.handler",
            "callBackProperties": {"customerId": customer_id, "phone": "919820012345"},
        },
    )
    [answer] = body["beanResponse"]
    assert str(answer["customerId"]) == customer_id
    assert answer["userId"] == "agent"
    assert [cb.customer_id for cb in sim.callbacks] == [int(customer_id)]


async def test_add_callback_for_an_unknown_customer_is_refused(client: AmeyoClient) -> None:
    with pytest.raises(AmeyoRefused, match=r"customer\.not\.found"):
        await client.call(
            "addCallback",
            {
                "campaignId": 1,
                "callBackTime": "2030-05-31 15:30:00",
                "callBackProperties": {"customerId": "1", "phone": "919820012345"},
            },
        )


async def test_get_contacts_returns_requested_columns_under_their_aliases(
    client: AmeyoClient,
) -> None:
    items = result_list(await client.call("uploadContacts", upload([{"phone1": "919820012345"}])))
    assert items is not None
    body = await client.call(
        "getContacts",
        {
            "campaignId": 1,
            "customerIds": [str(items[0]["customerId"])],
            "otherColumns": {
                "__campaign_customer_table_alias__.status": "STATUS",
                "__campaign_customer_table_alias__.attempts": "ATTEMPTS",
                "__campaign_customer_table_alias__.disposition": "DISPOSITION",
            },
        },
    )
    assert body["result"] == "Success."
    [contact] = body["beanResponse"]
    assert contact["customerData"]["phone1"] == "919820012345"
    # Null columns are left out of extraData, as the document says.
    assert contact["extraData"] == {"STATUS": "NOT_TRIED", "ATTEMPTS": 0}


async def test_get_contacts_for_a_lead_outside_the_campaign_is_refused(
    client: AmeyoClient,
) -> None:
    with pytest.raises(AmeyoRefused, match=r"lead\.not\.in\.camp"):
        await client.call("getContacts", {"campaignId": 1, "leadIds": ["2"]})


@pytest.mark.parametrize("shape", ["status", "processing", "failed", "login_page"])
async def test_every_invalid_session_shape_leads_to_one_login_and_a_replay(
    client: AmeyoClient, sim: AmeyoSimulator, shape: str
) -> None:
    assert client.session is not None
    await client.session.current()
    sim.session_error_shape = shape
    sim.expire_sessions()
    body = await client.call("getLeadsForCampaign", {"campaignId": 1})
    assert result_list(body)
    assert sim.logins == 2
    assert sim.requests["getLeadsForCampaign"] == 2


async def test_a_replay_refused_again_raises_invalid_session(
    client: AmeyoClient, sim: AmeyoSimulator
) -> None:
    sim.faults.set(Faults(invalid_session_rate=1.0))
    with pytest.raises(SessionExpiredError, match="again right after a new login"):
        await client.call("getContacts", {"campaignId": 1}, retry=False)
    assert sim.logins == 2  # one renewal per failed request, not a loop


async def test_replies_arrive_as_text_plain_and_errors_with_http_200(url: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{url}/ameyowebaccess/command",
            params={"command": "ping-session"},
            data={"data": '{"sessionId":"nope"}'},
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.json()["reason"] == "Invalid session Id: nope"


async def test_malformed_bodies_from_the_server_are_never_a_success(
    client: AmeyoClient, sim: AmeyoSimulator
) -> None:
    assert client.session is not None
    await client.session.current()
    sim.faults.set(Faults(malformed_rate=1.0, seed=4))
    for _ in range(6):
        with pytest.raises(RetryableError):
            await client.call("getLeadsForCampaign", {"campaignId": 1}, retry=False)
    assert sim.faults.injected["malformed"] == 6


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", RetryableError),
        ("   ", RetryableError),
        ("null", RetryableError),
        ("<html><body><h1>502 Bad Gateway</h1></body></html>", RetryableError),
        ("<html><form><input type='password'></form></html>", InvalidSession),
        ('{"status":"error","reason":"Invalid session Id: x","details":"x"}', InvalidSession),
        ('{"message":"Invalid session Id: x","type":"ProcessingException"}', InvalidSession),
        (
            '{"result":"Failed.","comment":["LogoutRemoterProcessorHelper.invalid.sessionid\\\\","x"]}',
            InvalidSession,
        ),
        (
            '{"result":"Failed.","comment":["CustomerManager.lead.not.in.camp.11",2,1]}',
            AmeyoRefused,
        ),
        ("{not json", RetryableError),
    ],
)
def test_parse_body_never_takes_an_error_shape_for_a_success(
    text: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        parse_body("getContacts", text)


def test_parse_body_forgives_the_documents_trailing_commas() -> None:
    body = parse_body("getContacts", '{"beanResponse":[],"result":"Success.",}')
    assert body == {"beanResponse": [], "result": "Success."}


async def test_cloud_header_auth_needs_no_login(url: str, sim: AmeyoSimulator) -> None:
    auth = {
        "mode": "headers",
        "hash_key": "test-hash-key",
        "policy_name": "syncd",
        "requesting_host": "crm.example.com",
    }
    async with make_client(timeout_s=5, verify_tls=True) as http:
        client = AmeyoClient(http, config(url, auth=auth))
        assert client.session is None
        assert result_list(await client.call("getLeadsForCampaign", {"campaignId": 1}))
        bad = AmeyoClient(http, config(url, auth={**auth, "hash_key": "wrong"}))
        with pytest.raises(SinkConfigError, match="HTTP 401"):
            await bad.call("getLeadsForCampaign", {"campaignId": 1})
    assert sim.logins == 0


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("BUSY", "busy"),
        ("NO_ANSWER", "no_answer"),
        ("AMD", "no_answer"),
        ("CONNECTED", "connected"),
        ("TRANSFERRED_TO_CAMPAIGN", "connected"),
        ("CALL_DROP", "dropped"),
        ("CALL_HANGUP", "dropped"),
        ("CALL_NOT_PICKED", "dropped"),
        ("ATTEMPT_FAILED", "failed"),
        ("NUMBER_FAILURE", "failed"),
        ("NUMBER_TEMP_FAILURE", "failed"),
        ("PROVIDER_FAILURE", "failed"),
        ("PROVIDER_TEMP_FAILURE", "failed"),
        ("SYSTEM_ERROR", "failed"),
        ("FAILED", "failed"),
        ("SIT_INTERCEPT", "failed"),
        ("SIT_VACANT", "failed"),
        ("SIT_NOCIRCUIT", "failed"),
        ("SIT_REORDER", "failed"),
        ("NOT_TRIED", "pending"),
        ("SOMETHING_NEW", "unknown"),
    ],
)
def test_the_documents_status_vocabulary_maps_to_call_status(raw: str, status: str) -> None:
    assert call_status(raw) == status
