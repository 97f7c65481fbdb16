"""The simulators' quirks: switched at start or run time, refused where they do not apply."""

from __future__ import annotations

import json

import httpx
import pytest

from syncd.simulators.ameyo.api import AmeyoSimulator
from syncd.simulators.ameyo.api import create_app as ameyo_app
from syncd.simulators.jodo.api import JodoSimulator
from syncd.simulators.jodo.api import create_app as jodo_app
from syncd.simulators.quirks import Quirks
from syncd.simulators.server import running
from tests.conftest import run_cli
from tests.support.clock import FakeClock

WS = "/CustomerWebServices/handleCustomerWS"


def test_a_quirk_that_does_not_apply_to_the_vendor_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match=r"text_plain does not apply to ameyo \(.*text/plain"):
        Quirks.from_dict({"text_plain": True}, "ameyo")
    with pytest.raises(ValueError, match="unknown quirk"):
        Quirks.from_dict({"bomb": True}, "jodo")
    with pytest.raises(ValueError, match="not an optional ucontact endpoint"):
        Quirks.from_dict({"missing": ["Dialers/uploadbase"]}, "ucontact")


def test_simulate_refuses_an_inapplicable_quirk_before_serving() -> None:
    done = run_cli("simulate", "ucontact", "--port", "0", "--quirks", '{"latin1_forms": true}')
    assert done.returncode == 2
    assert "--quirks: latin1_forms does not apply to ucontact" in done.stderr


def _import(url: str, records: list[dict[str, str]]) -> httpx.Response:
    body = {
        "method": "ImportProcessData",
        "apikey": "test_org",
        "servicekey": "VoiceProcess",
        "reqdatetime": "2026-01-01 10:00:00",
        "media": 12,
        "updateparam": "crmuniquefield",
        "data": records,
    }
    return httpx.post(url + WS, data={"data": json.dumps(body)})


def test_quirks_set_at_run_time_change_the_next_answers() -> None:
    sim = JodoSimulator()
    with running(jodo_app(sim)) as url:
        assert httpx.post(url + "/_sim/quirks", json={"pause_s": 5}).status_code == 400
        assert httpx.post(url + "/_sim/quirks", json={"bom": True, "max_records": 1}).is_success
        record = {"leadnumber": "L1", "mobilenumber": "+919820000001"}
        too_large = _import(url, [record, {**record, "leadnumber": "L2"}])
        assert too_large.status_code == 413
        stored = _import(url, [record])
        assert stored.content.startswith(b"\xef\xbb\xbf")
        assert json.loads(stored.content[3:])["statuscode"] == "001"
    assert [r["key"] for r in sim.holdings()["open"]] == ["L1"]


def test_a_jodo_removal_by_number_closes_every_record_holding_it_as_main_or_alternate() -> None:
    sim = JodoSimulator(agents={"supervisor": 1})
    shared = "+919820000001"
    with running(jodo_app(sim)) as url:
        _import(
            url,
            [
                {"leadnumber": "A", "mobilenumber": shared},
                {"leadnumber": "B", "mobilenumber": "+919820000002", "alternatenumber1": shared},
                {"leadnumber": "C", "mobilenumber": "+919820000003"},
            ],
        )
        assert sim.holdings()["open_per_number"][shared] == 2
        body = {
            "method": "saveDisposition",
            "apikey": "test_org",
            "servicekey": "VoiceProcess",
            "reqdatetime": "2026-01-01 10:00:00",
            "login": "supervisor",
            "dispomasterid": 3,
            "disporeasonid": 9,
            "media": "voice out",
            "contactvalue": shared,
        }
        assert httpx.post(url + WS, data={"data": json.dumps(body)}).json()["status"] == 3
    holdings = sim.holdings()
    assert sorted(r["key"] for r in holdings["closed"]) == ["A", "B"]
    assert [r["key"] for r in holdings["open"]] == ["C"]


def test_jodo_lists_the_records_it_did_not_store_in_a_success_reply() -> None:
    sim = JodoSimulator(quirks=Quirks(failed_keys=["L2"], failed_reason="Duplicate"))
    with running(jodo_app(sim)) as url:
        reply = _import(
            url,
            [
                {"leadnumber": "L1", "mobilenumber": "+919820000001"},
                {"leadnumber": "L2", "mobilenumber": "+919820000002"},
            ],
        ).json()
    assert reply["statuscode"] == "001"
    assert reply["faileddata"] == [
        {"leadnumber": "L2", "mobilenumber": "+919820000002", "reason": "Duplicate"}
    ]
    assert [r["key"] for r in sim.holdings()["open"]] == ["L1"]


def test_an_ameyo_campaign_is_not_running_for_the_window_on_the_simulators_clock() -> None:
    clock = FakeClock()
    sim = AmeyoSimulator(
        clock=clock, dialing=False, quirks=Quirks(pause_from_s=0, pause_s=20, latin1_forms=True)
    )

    def command(url: str, name: str, data: dict[str, object]) -> object:
        reply = httpx.post(
            f"{url}/ameyowebaccess/command/?command={name}",
            data={"data": json.dumps(data, ensure_ascii=False)},
        )
        return json.loads(reply.text)

    upload = {
        "campaignId": 1,
        "leadId": 1,
        "properties": {"update.customer": "true"},
        "customerRecords": [{"phone1": "9820000001", "name": "José", "crm_key": "L1"}],
    }
    with running(ameyo_app(sim)) as url:
        session = command(url, "login", {"userId": "syncd", "password": "secret"})
        assert isinstance(session, dict)
        upload["sessionId"] = session["sessionId"]
        assert command(url, "uploadContacts", upload) == {
            "result": "Failed.",
            "comment": ["Campaign is not running", 1],
        }
        clock.advance(20)
        command(url, "uploadContacts", upload)
    assert [(r["key"], r["name"]) for r in sim.holdings()["open"]] == [("L1", "JosÃ©")]
