"""Agent provisioning into Jodo: the CRM row → agent mapping, the simulator's user module
(the document's request and reply shapes) and the agent sink's handling of each reply."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncd.config import AgentRouteConfig
from syncd.core.agent_mapping import AgentMapper
from syncd.core.agents import Agent, Language, Skill, agents_outbox
from syncd.core.mapping import RowRejected, lead_hash, lead_to_json
from syncd.core.model import Action, LeadWrite
from syncd.core.summary import SinkCounts
from syncd.run.push import Pusher
from syncd.simulators.jodo.api import JodoSimulator
from syncd.sinks.base import SinkContext
from syncd.sinks.jodo.config import JodoSinkConfig
from syncd.sinks.jodo.provisioning import JodoAgentSink, md5_hex
from syncd.state.base import ChunkWrite
from syncd.state.sqlite import SqliteStore
from tests.support.jodo_outcomes import WS, canned, serve

ROUTE = AgentRouteConfig.model_validate(
    {
        "source": "users",
        "sink": "jodo",
        "media": ["Voice Out"],
        "language_ids": {"English": "1", "Hindi": "2"},
        "map": {
            "login": "login",
            "username": "name",
            "skills": "skills",
            "languages": "langs",
            "groups": "groups",
            "active": "active",
            "profile": {"dob": "dob"},
        },
    }
)
HEADER = ("login", "name", "skills", "langs", "groups", "active", "dob")


def row(**cells: str) -> list[str]:
    base = {"login": "asha", "name": "Asha", "skills": "", "langs": "", "groups": "",
            "active": "yes", "dob": ""}  # fmt: skip
    base.update(cells)
    return [base[c] for c in HEADER]


def agent_of(**cells: str) -> Agent:
    return AgentMapper(ROUTE, HEADER).to_agent(row(**cells))


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        ({}, {"login": "asha", "username": "Asha", "media": ("Voice Out",), "deleted": False}),
        ({"name": ""}, {"username": "asha"}),  # no name: the login
        ({"groups": "Sales; Hindi desk, Sales"}, {"groups": ("Sales", "Hindi desk")}),
        ({"skills": "language:hindi:4|product:old:0"},
         {"skills": (Skill("language", "hindi", 4), Skill("product", "old", 0))}),
        ({"langs": "english; 7:Tamil"},
         {"languages": (Language("1", "English"), Language("7", "Tamil"))}),
        ({"dob": "1990-11-13T00:00:00"}, {"profile": {"dob": "1990-11-13"}}),
        ({"active": "No"}, {"deleted": True}),  # deactivated in the CRM: removed
        ({"active": "disabled", "skills": "junk"}, {"deleted": True}),  # a removal needs no skills
        ({"login": " asha\x00 "}, {"login": "asha"}),  # control characters and spaces trimmed
    ],
)  # fmt: skip
def test_a_crm_user_row_maps_to_an_agent(cells: dict[str, str], expected: dict[str, Any]) -> None:
    agent = agent_of(**cells)
    for name, value in expected.items():
        assert getattr(agent, name) == value


@pytest.mark.parametrize(
    ("cells", "reason"),
    [
        ({"login": ""}, "missing login (column 'login' is empty)"),
        ({"login": "asha rao"}, "login in column 'login' has spaces"),
        ({"skills": "language:hindi"}, "is not name:detail:proficiency"),
        ({"skills": "language:hindi:high"}, "proficiency 'high' is not a whole number"),
        ({"skills": "language:hindi:11"}, "from 0 to 10"),
        ({"langs": "Tamil"}, "language 'Tamil' in column 'langs' has no language id"),
        ({"dob": "13/11/1990"}, "dob '13/11/1990' in column 'dob' is not a date"),
        ({"name": "caf\udce9"}, "column 'name' is not valid text in the file's encoding"),
    ],
)
def test_a_user_row_that_cannot_be_an_agent_is_refused_with_the_reason(
    cells: dict[str, str], reason: str
) -> None:
    with pytest.raises(RowRejected) as caught:
        agent_of(**cells)
    assert reason in str(caught.value)


def test_an_agent_keeps_one_text_through_the_outbox() -> None:
    agent = agent_of(skills="language:hindi:4", langs="Hindi", groups="A;B")
    lead = agent.to_lead()
    assert Agent.from_lead(lead) == agent
    again = agent_of(skills="language:hindi:4", langs="Hindi", groups="A;B")
    assert lead_to_json(again.to_lead()) == lead_to_json(lead)  # same content, same hash


# -- the simulator's user module: the document's requests and replies ----------------


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    payload = {"apikey": "test_org", "reqdatetime": "2018-11-12 14:00:05", **body}
    reply = httpx.post(f"{url}{WS}", data={"data": json.dumps(payload)})
    result: dict[str, Any] = reply.json()
    return result


ADD = {
    "method": "addEditUser",
    "action": "add",
    "username": "Batman12",
    "loginid": "Batman12@avhan.com",
    "usertype": "user",
    "newpassword": "ecc4208a7778c1d76e7e89c5253128c5",
    "confirmpassword": "ecc4208a7778c1d76e7e89c5253128c5",
    "mediadetails": [{"media": "Email In"}, {"media": "Email Out"}],
    "customercode": 100783,
    "groups": ["Avhan_group", "Batman_group"],
}


def test_the_simulator_answers_add_edit_and_delete_as_the_document_shows() -> None:
    sim = JodoSimulator()
    with serve(sim) as jodo:
        added = post(jodo.url, ADD)
        edited = post(jodo.url, {**ADD, "action": "edit", "username": "Batman13"})
        deleted = post(jodo.url, {"method": "deleteUser", "loginid": "Batman12@avhan.com"})
    assert added["method"] == "addUser"  # the reply names another method than the request
    assert (added["status"], added["statusdesc"], added["revisionno"]) == (3, "success", 1)
    assert isinstance(added["userid"], int) and added["resdatetime"]
    assert (edited["method"], edited["status"], edited["userid"]) == (
        "addEditUser", 3, added["userid"]
    )  # fmt: skip
    assert edited["revisionno"] == 2
    assert (deleted["method"], deleted["status"], deleted["statusdesc"]) == (
        "deleteUser", 1, "success"
    )  # fmt: skip
    assert sim.users() == {}


@pytest.mark.parametrize(
    ("body", "desc"),
    [
        ({**ADD, "mediadetails": [{"media": "Fax"}]}, "Invalid media Fax"),
        ({**ADD, "loginid": ""}, "loginid is mandatory"),
        ({**ADD, "action": "edit", "loginid": "nobody"}, "Login id does not exist"),
        ({"method": "deleteUser", "loginid": "nobody"}, "Login id does not exist"),
        ({**ADD, "confirmpassword": "0" * 32}, "Password and confirm password do not match"),
        ({**ADD, "newpassword": "secret", "confirmpassword": "secret"}, "Invalid password"),
    ],
)
def test_the_simulator_refuses_what_the_document_refuses(body: dict[str, Any], desc: str) -> None:
    with serve(JodoSimulator()) as jodo:
        reply = post(jodo.url, body)
    assert (reply["status"], reply["statusdesc"]) == (5, desc)


def test_the_simulator_refuses_a_second_add_of_a_login_and_lists_users_to_userstatus() -> None:
    sim = JodoSimulator()
    with serve(sim) as jodo:
        post(jodo.url, ADD)
        again = post(jodo.url, ADD)
        status = post(
            jodo.url,
            {"method": "userStatus", "servicekey": "VoiceProcess",
             "loginids": ["Batman12@avhan.com"]},
        )  # fmt: skip
    assert (again["status"], again["statusdesc"]) == (5, "Login id already exists")
    assert status["statusdata"][0]["status"] == 3  # the new user is an agent (logged out)
    assert status["statusdata"][0]["currentstatus"] == 0


# -- the agent sink against the simulator ------------------------------------------------


def agent_sink(url: str, store: SqliteStore, tmp_path: Path, **provisioning: Any) -> JodoAgentSink:
    config = JodoSinkConfig.model_validate(
        {
            "name": "jodo",
            "url": f"{url}{WS}",
            "apikey": "test_org",
            "servicekey": "VoiceProcess",
            "retry_base_s": 0.05,
            "retry_max_s": 0.2,
            "provisioning": {"passwords_file": str(tmp_path / "passwords"), **provisioning},
        }
    ).agents_outbox()
    return JodoAgentSink(config, SinkContext(store=store))


async def enqueue(store: SqliteStore, agents: list[Agent], action: Action = Action.UPSERT) -> None:
    writes = []
    for i, agent in enumerate(agents, start=1):
        text = lead_to_json(agent.to_lead())
        writes.append(LeadWrite(agent.login, lead_hash(text), None, text, action, "new", i))
    outbox = agents_outbox("jodo")
    await store.apply_chunk(ChunkWrite("run", "users", "test", leads={outbox: writes}))


async def push(sink: JodoAgentSink, store: SqliteStore, agents: list[Agent], **kw: Any) -> None:
    await enqueue(store, agents, **kw)
    await Pusher(sink, store, SinkCounts()).run_until_idle(time.time() + 30)


async def history(store: SqliteStore, login: str) -> dict[str, Any]:
    return await store.lead_history(login)


ASHA = Agent(login="asha", username="Asha", media=("voice out",))


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    s = SqliteStore(tmp_path / "state.db")
    await s.open()
    yield s
    await s.close()


async def test_an_add_jodo_already_holds_becomes_an_edit_without_a_new_password(
    store: SqliteStore, tmp_path: Path
) -> None:
    sim = JodoSimulator()
    with serve(sim) as jodo:
        post(jodo.url, {**ADD, "loginid": "asha", "mediadetails": [{"media": "Voice Out"}]})
        sink = agent_sink(jodo.url, store, tmp_path)
        await push(sink, store, [ASHA])  # the dialer took it before a crash: add → exists
        await sink.close()
    user = sim.users()["asha"]
    assert user["username"] == "Asha" and user["revisionno"] == 2
    assert user["password"] == ADD["newpassword"]  # not reset by the repeat
    assert user["mediadetails"] == [{"media": "Voice Out"}]  # the document's spelling
    lead = (await history(store, "asha"))["leads"][0]
    assert lead["state"] == "delivered"
    assert "already there: edited" in json.dumps(await history(store, "asha"))


async def test_an_edit_of_an_agent_removed_at_the_dialer_adds_it_again(
    store: SqliteStore, tmp_path: Path
) -> None:
    sim = JodoSimulator()
    with serve(sim) as jodo:
        sink = agent_sink(jodo.url, store, tmp_path)
        await push(sink, store, [ASHA])
        post(jodo.url, {"method": "deleteUser", "loginid": "asha"})  # by hand, at the dialer
        await push(sink, store, [Agent(login="asha", username="Asha R", media=("Voice Out",))])
        await sink.close()
    assert sim.users()["asha"]["username"] == "Asha R"
    kept = (tmp_path / "passwords").read_text().splitlines()
    assert [line.split("\t")[0] for line in kept] == ["asha", "asha"]  # the last line is current
    assert sim.users()["asha"]["password"] == md5_hex(kept[-1].split("\t")[1])


async def test_a_delete_of_a_login_jodo_does_not_have_is_done(
    store: SqliteStore, tmp_path: Path
) -> None:
    sim = JodoSimulator()
    with serve(sim) as jodo:
        sink = agent_sink(jodo.url, store, tmp_path, initial_password="Welcome-1")
        await push(sink, store, [ASHA])
        post(jodo.url, {"method": "deleteUser", "loginid": "asha"})
        gone = Agent(login="asha", username="asha", deleted=True)
        await push(sink, store, [gone], action=Action.DELETE)
        await sink.close()
    lead = (await history(store, "asha"))["leads"][0]
    assert lead["state"] == "removed"
    assert sim.directory.deleted == ["asha"]  # once: by hand


async def test_a_user_jodo_refuses_keeps_its_reason_and_unknown_media_is_refused_before_sending(
    store: SqliteStore, tmp_path: Path
) -> None:
    sim = JodoSimulator()
    with serve(sim) as jodo:
        sink = agent_sink(jodo.url, store, tmp_path, initial_password="Welcome-1")
        boss = Agent(login="boss", username="Boss", usertype="emperor", media=("Voice Out",))
        fax = Agent(login="fax", username="Fax", media=("Fax",))
        await push(sink, store, [boss, fax])
        await sink.close()
    assert sim.users() == {}
    assert sim.requests.get("addEditUser") == 1  # the fax user never left syncd
    reasons = {r[1]: r[0] for r in await store.failure_reasons()}
    assert any("Invalid usertype" in reason for reason in reasons)
    assert any("unknown media ['Fax']" in reason for reason in reasons)
    assert "Welcome-1" not in json.dumps(reasons)


async def test_an_initial_password_is_sent_as_its_md5_and_never_echoed(
    store: SqliteStore, tmp_path: Path
) -> None:
    secret = "Welcome-To-The-Floor-1"
    digest = hashlib.md5(secret.encode()).hexdigest()
    failure = json.dumps({"method": "addUser", "status": 5,
                          "statusdesc": f"Invalid password {digest} for {secret}"})  # fmt: skip
    with canned({"addEditUser": failure}) as url:
        sink = agent_sink(url, store, tmp_path, initial_password=secret)
        await push(sink, store, [ASHA])
        await sink.close()
    reasons = json.dumps(await store.failure_reasons()) + json.dumps(await history(store, "asha"))
    assert "Invalid password" in reasons
    assert secret not in reasons and digest not in reasons
    assert not (tmp_path / "passwords").exists()  # the configured password: nothing generated


# -- configuration ---------------------------------------------------------------------

BASE = {
    "sources": [{"name": "users", "kind": "csv_drop", "inbox": "/tmp"},
                {"name": "crm", "kind": "csv_drop", "inbox": "/tmp"}],
    "sinks": [{"name": "jodo", "kind": "jodo", "url": "http://127.0.0.1:1/ws", "apikey": "k",
               "servicekey": "VoiceProcess"},
              {"name": "uc", "kind": "ucontact", "url": "http://127.0.0.1:1", "user": "u",
               "password": "p", "campaign": "Sales->"}],
}  # fmt: skip
AGENTS = {"kind": "agents", "source": "users", "sink": "jodo", "map": {"login": "login"}}
LEADS = {"source": "crm", "sink": "jodo", "default_region": "IN",
         "map": {"key": "id", "phone": "phone"}}  # fmt: skip


@pytest.mark.parametrize(
    ("routes", "problem"),
    [
        ([{**AGENTS, "sink": "uc"}], "is a ucontact dialer, which syncd cannot provision agents"),
        ([{**AGENTS, "map": {"username": "name"}}], "routes[0].map.login"),
        ([LEADS, {**AGENTS, "source": "crm"}], "feeds both leads and agents"),
        ([{**AGENTS, "kind": "users"}], "routes[0].kind: must be leads or agents"),
        ([{**AGENTS, "map": {"login": "l", "profile": {"shoe": "s"}}}], "unknown profile field"),
    ],
)
def test_an_agents_route_that_cannot_work_is_refused_when_the_config_loads(
    routes: list[dict[str, Any]], problem: str
) -> None:
    from syncd.config import validate_settings
    from syncd.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        validate_settings({**BASE, "routes": routes}, environ={})
    assert problem in str(caught.value)


def test_an_agents_route_adds_the_outbox_its_agents_are_pushed_from() -> None:
    from syncd.config import validate_settings

    settings = validate_settings({**BASE, "routes": [LEADS, AGENTS]}, environ={})
    assert [s.name for s in settings.sinks] == ["jodo", "uc", "jodo/agents"]
    assert settings.sink("jodo/agents").entity == "agents"
    assert settings.route_names() == ["crm->jodo", "users->jodo/agents"]
