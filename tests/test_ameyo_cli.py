"""End to end through the `syncd` command: CSV drop → Ameyo simulator → outcomes in the store."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncd.simulators.ameyo.api import AmeyoSimulator, create_app
from syncd.simulators.server import running
from syncd.state.sqlite import SqliteStore
from tests.conftest import ROOT, cli_env, drop_csv, run_cli
from tests.support.logs import events

CONFIG = """\
[state]
path = "{state}"

[log]
level = "info"
format = "json"

[[sources]]
name = "crm"
kind = "csv_drop"
inbox = "{inbox}"

[[sinks]]
name = "ameyo"
kind = "ameyo"
url = "{url}"
auth = {{ mode = "session", user_id = "syncd", password = "env:TEST_AMEYO_PASSWORD" }}
campaign_id = 1
lead_id = {lead_id}
timezone = "Asia/Kolkata"
dial_format = "national"
key_column = "crm_key"
retry_base_s = 0.1
retry_max_s = 0.5
batch_size = {batch_size}
{sink_extra}
[[routes]]
source = "crm"
sink = "ameyo"
default_region = "IN"
timezone = "Asia/Kolkata"
[routes.map]
key = "id"
phone = "phone"
first_name = "first"
last_name = "last"
email = "email"
call_at = "callback"
"""

CSV = """\
id,phone,first,last,email,callback
A1,98200 10001,Asha,Rao,asha@example.com,
A2,98200 10002,Ravi,Iyer,ravi@example.com,
A3,98200 10003,Meena,Das,meena@example.com,2020-01-01 09:30
A4,not a phone,Bad,Row,bad@example.com,
"""


def write_config(tmp_path: Path, url: str, **overrides: Any) -> Path:
    values = {
        "state": tmp_path / "state" / "state.db",
        "inbox": tmp_path / "inbox",
        "url": url,
        "lead_id": 1,
        "batch_size": 50,
        "sink_extra": "",
        **overrides,
    }
    (tmp_path / "inbox").mkdir(exist_ok=True)
    path = tmp_path / "syncd.toml"
    path.write_text(CONFIG.format(**values), encoding="utf-8")
    return path


def env() -> dict[str, str]:
    return cli_env(TEST_AMEYO_PASSWORD="secret")


async def stored_outcomes(path: Path) -> list[dict[str, Any]]:
    store = SqliteStore(path)
    await store.open()
    try:
        return await store.outcome_dump()
    finally:
        await store.close()


@pytest.fixture
def dialer() -> Iterator[tuple[AmeyoSimulator, str]]:
    sim = AmeyoSimulator(
        timezone="Asia/Kolkata",
        dial_every_s=0.01,
        redial_after_s=0.02,
        dial_outcomes=["NO_ANSWER", "CONNECTED"],
    )
    with running(create_app(sim)) as url:
        yield sim, url


def test_run_once_uploads_and_a_second_run_polls_the_dialled_outcomes(
    tmp_path: Path, dialer: tuple[AmeyoSimulator, str]
) -> None:
    sim, url = dialer
    config = write_config(tmp_path, url)
    drop_csv(tmp_path / "inbox", "leads.csv", CSV)
    first = run_cli("run", "--once", "-c", str(config), env=env())
    assert first.returncode == 0, first.stderr
    customers = {c.data["crm_key"]: c for c in sim.customer_list()}
    assert sorted(customers) == ["A1", "A2", "A3"]
    assert customers["A1"].data["phone1"] == "09820010001"
    assert [cb.customer_id for cb in sim.callbacks] == [customers["A3"].customer_id]
    deadline = time.monotonic() + 5
    while any(c.status != "CONNECTED" for c in sim.customer_list()):
        assert time.monotonic() < deadline, "the simulator did not dial"
        time.sleep(0.05)
    second = run_cli("run", "--once", "-c", str(config), env=env())
    assert second.returncode == 0, second.stderr
    outcomes = asyncio.run(stored_outcomes(tmp_path / "state" / "state.db"))
    assert {o["key"]: o["status"] for o in outcomes} == {
        "A1": "connected",
        "A2": "connected",
        "A3": "connected",
    }
    assert all(o["attempts"] >= 1 and o["agent"] for o in outcomes)
    assert sim.logins == 2 and sim.counts["logouts"] == 2
    assert sim.uploads() == {"09820010001": 1, "09820010002": 1, "09820010003": 1}


def test_a_session_expiring_mid_run_costs_one_login_per_expiry(tmp_path: Path) -> None:
    # No pings (a ping_interval_s of 60 set by hand wins over keeping a 0.3 s session
    # alive): the retry of a lead after its ADD_FAILED waits 0.5 s, so the session lapses.
    sim = AmeyoSimulator(dialing=False, session_timeout_s=0.3, ping_interval_ms=60_000)
    sim.force_result("09820010002", "ADD_FAILED", times=1)
    with running(create_app(sim)) as url:
        config = write_config(tmp_path, url, batch_size=1, sink_extra="ping_interval_s = 60")
        drop_csv(tmp_path / "inbox", "leads.csv", CSV)
        result = run_cli("run", "--once", "-c", str(config), env=env())
    assert result.returncode == 0, result.stderr
    assert len(sim.customer_list()) == 3
    assert sim.counts["expired"] == 1
    relogins = [e for e in events(result.stderr, "sink.session.login") if e["reason"] == "expired"]
    assert len(relogins) == sim.counts["expired"]
    assert sim.logins == 1 + sim.counts["expired"]


def test_a_disabled_lead_stops_the_sink_and_leads_stay_queued(
    tmp_path: Path, dialer: tuple[AmeyoSimulator, str]
) -> None:
    sim, url = dialer
    config = write_config(tmp_path, url, lead_id=35)
    drop_csv(tmp_path / "inbox", "leads.csv", CSV)
    result = run_cli("run", "--once", "-c", str(config), env=env())
    assert result.returncode == 1
    [stopped] = events(result.stderr, "sink.stopped")
    assert "lead 35 of campaign 1 is disabled" in stopped["reason"]
    assert sim.customer_list() == []
    status = run_cli("status", "--json", "-c", str(config), env=env())
    assert json.loads(status.stdout)["counts"]["ameyo"]["pending"] == 3


def test_the_example_config_passes_check() -> None:
    result = run_cli(
        "check", "-c", str(ROOT / "config" / "ameyo.example.toml"), env=cli_env(AMEYO_PASSWORD="x")
    )
    assert result.returncode == 0, result.stderr


def test_the_secret_never_reaches_the_log_or_the_store(
    tmp_path: Path, dialer: tuple[AmeyoSimulator, str]
) -> None:
    _, url = dialer
    config = write_config(tmp_path, url)
    drop_csv(tmp_path / "inbox", "leads.csv", CSV)
    result = run_cli(
        "run", "--once", "-c", str(config), env=cli_env(TEST_AMEYO_PASSWORD="s3cr3t-pw")
    )
    assert result.returncode == 1  # the simulator knows the password "secret": refused
    assert "s3cr3t-pw" not in result.stderr + result.stdout
    [stopped] = events(result.stderr, "sink.stopped")
    assert "login as 'syncd' refused" in stopped["reason"]
    assert b"s3cr3t-pw" not in (tmp_path / "state" / "state.db").read_bytes()


def test_syncd_simulate_ameyo_serves_the_api(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "syncd",
            "simulate",
            "ameyo",
            "--port",
            str(port),
            "--faults",
            '{"seed": 1}',
        ],
        cwd=ROOT,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                reply = httpx.post(
                    f"http://127.0.0.1:{port}/ameyowebaccess/command?command=login",
                    data={"data": json.dumps({"userId": "syncd", "password": "secret"})},
                )
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "syncd simulate did not start"
                time.sleep(0.1)
        assert "sessionId" in reply.json()
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_login_answered_with_null_is_a_wrong_password_that_stops_the_sink_once(
    tmp_path: Path,
) -> None:
    # Some Ameyo servers answer a wrong user or password with HTTP 200 and `null`.
    sim = AmeyoSimulator(users={"syncd": "secret"}, dialing=False, refused_login="null")
    with running(create_app(sim)) as url:
        config = write_config(tmp_path, url)
        drop_csv(tmp_path / "inbox", "leads.csv", CSV)
        result = run_cli("run", "--once", "-c", str(config), env=cli_env(TEST_AMEYO_PASSWORD="x"))

    assert result.returncode == 1
    [stopped] = events(result.stderr, "sink.stopped")
    assert "login as 'syncd' refused" in stopped["reason"]
    assert "check auth.user_id, auth.password" in stopped["reason"]
    assert events(result.stderr, "sink.open.failed") == []
    assert sim.requests["login"] == 2  # confirmed once, not retried as if temporary
    assert sim.customer_list() == []
