"""The uContact simulator answers like the document's server (raw HTTP, no syncd client)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from syncd.simulators.ucontact.api import UContactSimulator
from tests.support.ucontact import CAMPAIGN, served

API = "/Integra/resources/"
Api = tuple[UContactSimulator, httpx.Client]


@pytest.fixture
def api() -> Iterator[Api]:
    with served() as (sim, url), httpx.Client(base_url=url) as client:
        token = client.post(API + "auth/getUserToken", data={"user": "api", "password": "secret"})
        client.headers["Authorization"] = "Basic " + token.json()[-1]
        yield sim, client


def upload(client: httpx.Client, text: str, cant: int) -> httpx.Response:
    return client.post(
        API + "Dialers/uploadbase",
        data={
            "filename": "base.txt",
            "fileb64": base64.b64encode(text.encode()).decode(),
            "campaign": CAMPAIGN,
            "cant": str(cant),
            "username": "api",
        },
    )


def test_uploadbase_takes_good_lines_and_skips_malformed_ones(api: Api) -> None:
    sim, client = api
    text = (
        f"{CAMPAIGN};098344484;var1=val1:var2=val2;099124484:099111111;9999;1001\n"
        f"{CAMPAIGN};098344485\n"
        f"{CAMPAIGN};098344486;note=10:30;\n"  # an unclean value: the pair breaks
        f"{CAMPAIGN};098344487;a=b;c=d\n"  # a variable where the alternatives go
        "Otra->;098344488;;\n"
        f"{CAMPAIGN};not-a-phone;;\n"
        f"{CAMPAIGN};098344489;;;;;extra\n"
    )
    assert upload(client, text, 7).text == "1"
    [made] = sim.uploads_made()
    assert made["accepted"] == 2
    assert [i["line"] for i in made["ignored"]] == [3, 4, 5, 6, 7]
    assert set(sim.dial_list()) == {"098344484", "098344485"}


def test_a_bad_key_is_refused_and_an_ended_session_stays_ended(api: Api) -> None:
    sim, client = api
    key = client.headers["Authorization"][6:]
    assert (
        client.post(API + "Supervisor/campaignstatus", data={"queue": CAMPAIGN}).json()[CAMPAIGN][
            "campaign"
        ]
        == CAMPAIGN
    )
    ended = client.post(API + "auth/EndSession", data={"user": "api", "token": key})
    assert ended.text == "1"
    refused = client.post(API + "Supervisor/campaignstatus", data={"queue": CAMPAIGN})
    assert refused.status_code == 401
    wrong = client.post(API + "auth/getUserToken", data={"user": "api", "password": "nope"})
    assert wrong.text == "0"
    sim.apply_settings({"legacy_auth": True})
    old = client.post(API + "auth/getUserToken", data={"user": "api", "password": "secret"})
    assert old.status_code == 404
    legacy = client.post(API + "auth/UserLogin", data={"user": "api", "password": "secret"})
    assert isinstance(legacy.json()[2], str)


def test_dialer_calls_answer_1_or_0(api: Api) -> None:
    sim, client = api

    def say(resource: str, **form: str) -> str:
        return client.post(API + resource, data=form).text

    call = {
        "calldate": None,
        "campaign": CAMPAIGN,
        "destination": "098344484",
        "alternatives": "",
        "agent": "",
        "data": "idcustomer=7",
        "source": "crm",
        "bulk": True,
        "automatic": False,
    }
    assert say("Dialers/DialerTask", call=json.dumps(call)) == "1"
    partial = {k: v for k, v in call.items() if k != "automatic"}
    assert say("Dialers/DialerTask", call=json.dumps(partial)) == "0"
    schedule = {
        "calldate": "2031-01-01 10:00:00",
        "campaign": CAMPAIGN,
        "destination": "098344485",
        "alternatives": "",
        "agentphone": "",
        "data": "",
    }
    assert say("Dialers/ScheduleDialerCall", callschedule=json.dumps(schedule)) == "1"
    bad = {**schedule, "calldate": "tomorrow"}
    assert say("Dialers/ScheduleDialerCall", callschedule=json.dumps(bad)) == "0"
    window = {"from": "2031-01-01 00:00:00", "to": "2031-01-01 23:59:59"}
    removed = say(
        "Dialers/RemoveScheduleDialerCall", campaign=CAMPAIGN, destination="098344485", **window
    )
    assert removed == "1" and sim.scheduled() == []
    assert say("Dialers/RemoveContact", campaign=CAMPAIGN, number="098344484") == "1"
    assert sim.dial_list()["098344484"]["present"] == 0
    black = json.dumps({"phone": "098344484", "campaign": "*", "name": "Ana"})
    assert say("admin/addblack", black=black) == "1"
    assert "already exists" in say("admin/addblack", black=black)


def test_call_records_page_with_lastrow_and_recordings_are_served(api: Api) -> None:
    sim, client = api
    for n in range(5):
        sim.add_record(f"09834448{n}", calldate=f"2026-01-18 10:0{n}:00", recording="telephony_day")
    sim.add_record("098344489", calldate="2026-01-18 10:09:00", visible=False)
    flt = json.dumps({"calldatei": "2026-01-18 00:00:00", "calldatef": "2026-01-18 23:59:59"})

    def page(lastrow: int) -> list[dict[str, Any]]:
        form = {"lastrow": str(lastrow), "searchLimit": "2", "filter": flt, "Random": "1"}
        rows: list[dict[str, Any]] = client.post(API + "Cdr/getrecords", data=form).json()
        return rows

    pages = [page(0), page(2), page(4)]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [r["destination"] for p in pages for r in p] == [f"09834448{n}" for n in range(5)]
    guid = pages[0][0]["guid"]
    assert client.head(f"/records/20260118/{guid}.mp3").status_code == 200
    assert client.head(f"/records/{guid}.mp3").status_code == 404
    sim.reveal()
    assert len(page(4)) == 2


def test_a_paced_campaign_dials_at_its_calls_per_minute_not_all_at_once() -> None:
    # A soak at a contact center's pace: 60 calls a minute is one a second, however many
    # contacts one upload brings.
    now = 1_000_000.0
    with served(calls_per_minute=60, dial_delay_s=2.0, clock=lambda: now) as (sim, url):
        with httpx.Client(base_url=url) as client:
            answer = client.post(
                API + "auth/getUserToken", data={"user": "api", "password": "secret"}
            )
            client.headers["Authorization"] = "Basic " + answer.json()[-1]
            lines = "".join(f"{CAMPAIGN};09834448{i}\n" for i in range(5))
            assert upload(client, lines, 5).text == "1"
        assert sim.tick(now + 1.9) == 0  # none before the dial delay
        assert sim.tick(now + 2.0) == 1
        assert sim.tick(now + 3.5) == 1  # one a second
        assert sim.tick(now + 10.0) == 3
