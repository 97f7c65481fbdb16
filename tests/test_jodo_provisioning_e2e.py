"""End to end: CRM users become Jodo agents with `syncd run --once` — added, renamed, removed.

The simulator holds exactly the CRM's users afterwards, a repeat run sends nothing,
generated passwords are in the one file meant for them and nowhere else, and a lead
may name only an agent the dialer has.
"""

from __future__ import annotations

import hashlib
import stat
import time
from pathlib import Path

import httpx

from syncd.simulators.jodo.api import JodoSimulator
from tests.conftest import cli_env, drop_csv, run_cli
from tests.support.jodo_outcomes import records_by_phone, serve

CONFIG = """\
[state]
path = "{tmp}/state/state.db"

[log]
level = "info"
format = "json"

[[sources]]
name = "users"
kind = "csv_drop"
inbox = "{tmp}/users"

[[sources]]
name = "crm"
kind = "csv_drop"
inbox = "{tmp}/inbox"

[[sinks]]
name = "jodo"
kind = "jodo"
url = "{url}/CustomerWebServices/handleCustomerWS"
apikey = "env:TEST_JODO_APIKEY"
servicekey = "VoiceProcess"
media = 12
dial_format = "00"
retry_base_s = 0.1
retry_max_s = 0.5
[sinks.provisioning]
passwords_file = "{tmp}/secret/agent-passwords"
{provisioning}

[[routes]]
kind = "agents"
source = "users"
sink = "jodo"
media = ["Voice Out"]
language_ids = {{ English = "1", Hindi = "2" }}
[routes.map]
login = "login"
username = "name"
usertype = "role"
groups = "teams"
skills = "skills"
languages = "languages"
active = "active"
contacts = {{ "mobile number" = "mobile" }}
profile = {{ doj = "joined", city = "city" }}

[[routes]]
source = "crm"
sink = "jodo"
default_region = "IN"
[routes.map]
key = "id"
phone = "phone"
first_name = "first"
agent = "agent"
"""

HEAD = "login,name,role,teams,skills,languages,active,mobile,joined,city\n"
ASHA = "asha@cc.example,{name},user,Sales; Hindi desk,language:hindi:4,English; Hindi,yes,"
ASHA += "8465982541,2024-03-01,Pune\n"
USERS = (
    HEAD
    + ASHA.format(name="Asha Rao")
    + """\
ravi@cc.example,Ravi Iyer,user,Sales,product:old:3,English,yes,,2024-05-10,Mumbai
meera@cc.example,Meera Das,supervisor,Sales,,Hindi,yes,,2023-01-15,Pune
"""
)

# asha renamed, meera deactivated, ravi unchanged
USERS_LATER = (
    HEAD
    + ASHA.format(name="Asha Rao-Menon")
    + """\
ravi@cc.example,Ravi Iyer,user,Sales,product:old:3,English,yes,,2024-05-10,Mumbai
meera@cc.example,Meera Das,supervisor,Sales,,Hindi,no,,2023-01-15,Pune
"""
)


def write_config(tmp_path: Path, url: str, provisioning: str = "") -> Path:
    (tmp_path / "secret").mkdir(mode=0o700)
    (tmp_path / "inbox").mkdir()
    (tmp_path / "users").mkdir(exist_ok=True)
    path = tmp_path / "syncd.toml"
    path.write_text(CONFIG.format(tmp=tmp_path, url=url, provisioning=provisioning), "utf-8")
    return path


def passwords(tmp_path: Path) -> dict[str, str]:
    lines = (tmp_path / "secret" / "agent-passwords").read_text().splitlines()
    return {line.split("\t")[0]: line.split("\t")[1] for line in lines}


def test_crm_users_are_added_renamed_and_removed_in_jodo_and_a_repeat_sends_nothing(
    tmp_path: Path,
) -> None:
    sim = JodoSimulator()
    outputs: list[str] = []
    with serve(sim) as jodo:
        config = write_config(tmp_path, jodo.url)
        drop_csv(tmp_path / "users", "users-1.csv", USERS)
        first = run_cli("run", "--once", "-c", str(config))
        outputs += [first.stdout, first.stderr]
        assert first.returncode == 0, first.stderr
        added = sim.users()
        assert sorted(added) == ["asha@cc.example", "meera@cc.example", "ravi@cc.example"]

        drop_csv(tmp_path / "users", "users-2.csv", USERS_LATER)
        second = run_cli("run", "--once", "-c", str(config))
        outputs += [second.stdout, second.stderr]
        assert second.returncode == 0, second.stderr
        sent = (sim.requests.get("addEditUser", 0), sim.requests.get("deleteUser", 0))

        drop_csv(tmp_path / "users", "users-3.csv", USERS_LATER)  # the same users again
        third = run_cli("run", "--once", "-c", str(config))
        status = run_cli("status", "-c", str(config))
        explained = run_cli("explain", "asha@cc.example", "-c", str(config))
        outputs += [third.stdout, third.stderr, status.stdout, status.stderr, explained.stdout]
        assert third.returncode == 0, third.stderr

    held = sim.users()
    assert sorted(held) == ["asha@cc.example", "ravi@cc.example"]  # meera deleted
    asha = held["asha@cc.example"]
    assert asha["username"] == "Asha Rao-Menon" and asha["revisionno"] == 2
    assert asha["usertype"] == "user"
    assert asha["mediadetails"] == [{"media": "Voice Out"}]
    assert asha["groups"] == ["Sales", "Hindi desk"]
    assert asha["skilldetails"] == [
        {"skillname": "language", "skilldetail": "hindi", "proficiencyvalue": "4"}
    ]
    assert asha["language"] == [
        {"languageid": "1", "language": "English"},
        {"languageid": "2", "language": "Hindi"},
    ]
    assert asha["contactdetails"] == [{"contactid": "mobile number", "contacttype": "8465982541"}]
    assert asha["doj"] == "2024-03-01" and asha["city"] == "Pune"
    assert held["ravi@cc.example"]["revisionno"] == 1  # unchanged: never edited
    assert sim.directory.deleted == ["meera@cc.example"]
    # 3 adds + 1 edit, 1 delete; the third run sent nothing at all
    assert sent == (4, 1)
    assert (sim.requests.get("addEditUser", 0), sim.requests.get("deleteUser", 0)) == sent

    # Each agent's generated password is in the passwords file, and Jodo has its MD5.
    file = tmp_path / "secret" / "agent-passwords"
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    kept = passwords(tmp_path)
    assert sorted(kept) == ["asha@cc.example", "meera@cc.example", "ravi@cc.example"]
    for login in held:
        digest = hashlib.md5(kept[login].encode()).hexdigest()
        assert held[login]["password"] == digest  # the edit did not reset it
    # ... and in no output, no log and no file of syncd's but that one.
    secrets = [*kept.values(), *(hashlib.md5(p.encode()).hexdigest() for p in kept.values())]
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p != file]
    blobs = [*outputs, *(p.read_bytes().decode("latin1") for p in files)]
    for secret in secrets:
        assert not any(secret in blob for blob in blobs), "a password leaked"
    assert "jodo/agents" in status.stdout
    assert "addEditUser" in explained.stdout or "Jodo: status 3" in explained.stdout


LEADS = """id,phone,first,agent
L1,9820000001,Kiran,asha@cc.example
L2,9820000002,Tara,nobody@cc.example
L3,9820000003,Dev,
"""


def test_a_lead_may_name_only_an_agent_the_dialer_has(tmp_path: Path) -> None:
    sim = JodoSimulator()
    with serve(sim) as jodo:
        config = write_config(tmp_path, jodo.url)
        drop_csv(tmp_path / "users", "users.csv", USERS)
        drop_csv(tmp_path / "inbox", "leads.csv", LEADS)  # pulled in the same run
        result = run_cli("run", "--once", "-c", str(config))
        assert result.returncode == 0, result.stderr
        explained = run_cli("explain", "L2", "-c", str(config))

    held = records_by_phone(sim)
    assert held["00919820000001"]["userlogin"] == "asha@cc.example"  # provisioned first
    assert "userlogin" not in held["00919820000002"]  # unknown: sent to nobody in particular
    assert "userlogin" not in held["00919820000003"]
    assert "jodo.agent.unknown" in result.stderr
    assert "sent unassigned: agent 'nobody@cc.example'" in explained.stdout


def test_refusing_leads_whose_agent_is_unknown_keeps_the_reason(tmp_path: Path) -> None:
    sim = JodoSimulator()
    with serve(sim) as jodo:
        config = write_config(tmp_path, jodo.url, provisioning='unknown_agent = "refuse"')
        drop_csv(tmp_path / "users", "users.csv", USERS)
        drop_csv(tmp_path / "inbox", "leads.csv", LEADS)
        result = run_cli("run", "--once", "-c", str(config))
        status = run_cli("status", "-c", str(config))
        explained = run_cli("explain", "L2", "-c", str(config))

    held = records_by_phone(sim)
    assert sorted(held) == ["00919820000001", "00919820000003"]
    assert result.returncode == 0, result.stderr  # refused with a reason: settled, not pending
    why = "agent 'nobody@cc.example' is no login the dialer has"
    assert why in status.stdout and why in explained.stdout


def test_provisioning_without_a_way_to_give_passwords_stops_only_the_agents(
    tmp_path: Path,
) -> None:
    sim = JodoSimulator()
    with serve(sim) as jodo:
        config = write_config(tmp_path, jodo.url)
        text = config.read_text().replace('passwords_file = "', '# passwords_file = "')
        config.write_text(text)
        drop_csv(tmp_path / "users", "users.csv", USERS)
        drop_csv(tmp_path / "inbox", "leads.csv", "id,phone,first,agent\nL9,9820000009,Ana,\n")
        result = run_cli("run", "--once", "-c", str(config), env=cli_env())

    assert result.returncode != 0
    assert "initial_password" in result.stdout + result.stderr
    assert sim.users() == {}
    assert "00919820000009" in records_by_phone(sim)  # the leads still went


def test_the_daemon_provisions_users_dropped_while_it_runs(tmp_path: Path, start_daemon) -> None:  # type: ignore[no-untyped-def]
    sim = JodoSimulator()
    with serve(sim) as jodo:
        config = write_config(tmp_path, jodo.url)
        text = config.read_text().replace(
            'kind = "csv_drop"\n', 'kind = "csv_drop"\nschedule = { interval_s = 0.5 }\n'
        )
        config.write_text('[health]\nlisten = "127.0.0.1:0"\n\n' + text)
        daemon = start_daemon(config)
        daemon.wait_for("daemon.ready")
        drop_csv(tmp_path / "users", "users.csv", USERS)
        deadline = time.monotonic() + 60  # a bound on waiting, not a timing assertion
        while len(sim.users()) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        metrics = httpx.get(daemon.base_url + "/metrics").text
        code = daemon.stop()
    assert code == 0
    assert sorted(sim.users()) == ["asha@cc.example", "meera@cc.example", "ravi@cc.example"]
    assert 'sink="jodo/agents"' in metrics
