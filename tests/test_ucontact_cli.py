"""uContact end to end through the CLI: run --once, dial, run again; kill -9 mid-upload."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from syncd.simulators.ucontact.api import UContactSimulator
from tests.conftest import ROOT, cli_env, drop_csv, run_cli
from tests.support.ucontact import CAMPAIGN, dialled, served, uy

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
name = "uc"
kind = "ucontact"
url = "{url}"
user = "api"
password = "env:TEST_UCONTACT_PASSWORD"
campaign = "Ventas->"
dial_format = "00"
timeout_s = {timeout_s}
settle_s = {settle_s}
cdr_delay_s = 0.2
retry_base_s = 0.1
retry_max_s = 0.5
backup_records_url = "{url}/backup"
[sinks.dnc]
field = "dnc"

[[routes]]
source = "crm"
sink = "uc"
default_region = "UY"
[routes.map]
key = "id"
phone = "phone"
first_name = "first"
call_at = "callback"
deleted = "gone"
[routes.map.fields]
note = "note"
dnc = "dnc"
"""

HEADER = "id,first,phone,note,dnc,callback,gone\n"


def write_config(tmp_path: Path, url: str, timeout_s: float = 5.0, settle_s: float = 1.0) -> Path:
    (tmp_path / "inbox").mkdir(exist_ok=True)
    path = tmp_path / "syncd.toml"
    path.write_text(
        CONFIG.format(
            state=tmp_path / "state" / "state.db",
            inbox=tmp_path / "inbox",
            url=url,
            timeout_s=timeout_s,
            settle_s=settle_s,
        ),
        encoding="utf-8",
    )
    return path


def env() -> dict[str, str]:
    return cli_env(TEST_UCONTACT_PASSWORD="secret")


def once(config: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("run", "--once", "-c", str(config), env=env())


def stored(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / "state" / "state.db") as conn:
        return conn.execute(sql).fetchall()


def wait_for(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def test_run_once_uploads_then_a_second_run_turns_calls_into_outcomes(tmp_path: Path) -> None:
    with served(outcomes={"ANSWERED": 1.0}, recording_places=("backup_day",)) as (sim, url):
        config = write_config(tmp_path, url)
        drop_csv(
            tmp_path / "inbox",
            "leads.csv",
            HEADER
            + f'A1,Ana,{uy(1)},"call at 10:30; floor=2",,,\n'
            + f"A2,Bruno,{uy(2)},,,2031-05-04 12:00:00,\n"
            + f"A3,Carla,{uy(3)},,yes,,\n",
        )
        first = once(config)
        assert first.returncode == 0, first.stderr
        [upload] = sim.uploads_made()
        assert upload["text"] == (
            f"{CAMPAIGN};{dialled(1)};crmkey=A1:first_name=Ana:note=call at 10.30, floor-2;\n"
        )
        assert [s["phone"] for s in sim.scheduled()] == [dialled(2)]
        assert sim.snapshot()["campaigns"][CAMPAIGN]["blacklist"] == [dialled(3)]

        assert sim.dial_now() == 2
        second = once(config)
        assert second.returncode == 0, second.stderr
        assert "outcomes from uc: 2 new or changed" in second.stdout
        rows = stored(
            tmp_path, "SELECT key, status, attempts, call_id, recording_url FROM outcomes"
        )
        calls = {r["destination"]: r for r in sim.records()}
        by_key = {r[0]: r for r in rows}
        assert set(by_key) == {"A1", "A2"}
        guid = calls[dialled(1)]["guid"]
        day = calls[dialled(1)]["calldate"][:10].replace("-", "")
        assert by_key["A1"][1:] == (
            "connected",
            1,
            guid,
            f"{url}/backup/records/{day}/{guid}.mp3",
        )
        assert sim.snapshot()["sessions_active"] == 0  # each run ended its session


def test_a_lead_deleted_in_the_crm_is_removed_from_the_campaign(tmp_path: Path) -> None:
    with served() as (sim, url):
        config = write_config(tmp_path, url)
        drop_csv(tmp_path / "inbox", "a.csv", HEADER + f"A1,Ana,{uy(1)},,,,\nA2,Bo,{uy(2)},,,,\n")
        assert once(config).returncode == 0
        drop_csv(tmp_path / "inbox", "b.csv", HEADER + f"A1,Ana,{uy(1)},,,,1\n")
        result = once(config)
        assert result.returncode == 0, result.stderr
        listed = sim.dial_list()
        assert listed[dialled(1)]["present"] == 0
        assert listed[dialled(2)]["present"] == 1
        assert stored(tmp_path, "SELECT state FROM leads WHERE key = 'A1'") == [("removed",)]


@pytest.mark.parametrize("phone_cell", ["N/A", "-", "unknown", "0"])
def test_a_deleted_lead_whose_phone_cell_is_junk_is_still_removed(
    tmp_path: Path, phone_cell: str
) -> None:
    # A CRM that deletes a lead often blanks or junks its number on the way: the
    # removal needs the key and what was delivered, not a valid phone. It was refused
    # as "invalid phone" and the person stayed on the dial list for good.
    with served() as (sim, url):
        config = write_config(tmp_path, url)
        drop_csv(tmp_path / "inbox", "a.csv", HEADER + f"A1,Ana,{uy(1)},,,,\n")
        assert once(config).returncode == 0
        drop_csv(tmp_path / "inbox", "b.csv", HEADER + f"A1,Ana,{phone_cell},,,,1\n")
        result = once(config)
        assert result.returncode == 0, result.stderr
        assert sim.dial_list()[dialled(1)]["present"] == 0
        assert stored(tmp_path, "SELECT state FROM leads WHERE key = 'A1'") == [("removed",)]
        assert stored(tmp_path, "SELECT COUNT(*) FROM rejects") == [(0,)]


def start_syncd(*args: str, environ: dict[str, str]) -> subprocess.Popen[bytes]:
    """Return `syncd ARGS` started in the background, its output discarded."""
    return subprocess.Popen(
        [sys.executable, "-m", "syncd", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environ,
        cwd=ROOT,
    )


def kill_once_the_dialer_took_the_upload(
    tmp_path: Path, sim: UContactSimulator, url: str, n: int
) -> Path:
    """Return the config of a `run --once` killed after the dialer took its file of n leads.

    The simulator answers uploads late, so syncd is still waiting for the answer.
    """
    # A file sent just before the kill may still land: the rerun waits settle_s first.
    config = write_config(tmp_path, url, timeout_s=30.0, settle_s=0.5)
    rows = "".join(f"L{i},N{i},{uy(i)},,,,\n" for i in range(1, n + 1))
    drop_csv(tmp_path / "inbox", "leads.csv", HEADER + rows)
    proc = start_syncd("run", "--once", "-c", str(config), environ=env())
    wait_for(lambda: any(u["accepted"] for u in sim.uploads_made()))
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    return config


def rerun_until_all_delivered(
    tmp_path: Path, sim: UContactSimulator, config: Path, n: int
) -> dict[str, dict[str, int]]:
    """Return the dial list after a prompt rerun delivered all n leads and the dialer dialled."""
    sim.apply_settings({"upload_answer_delay_s": 0.0})
    result = once(config)
    assert result.returncode == 0, result.stderr
    assert stored(tmp_path, "SELECT COUNT(*) FROM leads WHERE state = 'delivered'") == [(n,)]
    sim.dial_now()
    return sim.dial_list()


def test_kill_9_between_upload_and_answer_then_rerun_leaves_each_lead_once(
    tmp_path: Path,
) -> None:
    n = 20
    with served(upload_answer_delay_s=2.0) as (sim, url):
        config = kill_once_the_dialer_took_the_upload(tmp_path, sim, url, n)
        assert stored(tmp_path, "SELECT COUNT(*) FROM leads WHERE state = 'delivered'") == [(0,)]

        listed = rerun_until_all_delivered(tmp_path, sim, config, n)
        assert set(listed) == {dialled(i) for i in range(1, n + 1)}
        for number, seen in listed.items():
            assert seen["added"] == 2, number  # the killed run's file did reach the dialer
            assert seen["peak"] == 1, number  # but never twice in the list
            assert seen["dialed"] == 1, number  # and nobody was called twice
        assert sim.snapshot()["requests"]["Dialers/RemoveContact"] == n


def test_kill_9_after_the_upload_landed_and_was_dialled_then_rerun_calls_nobody_twice(
    tmp_path: Path,
) -> None:
    n = 10
    with served(upload_answer_delay_s=2.0) as (sim, url):
        config = kill_once_the_dialer_took_the_upload(tmp_path, sim, url, n)
        # While syncd is down the dialer calls everyone: their numbers leave the list,
        # so removing them first would find nothing.
        sim.dial_now()

        listed = rerun_until_all_delivered(tmp_path, sim, config, n)
        for number, seen in listed.items():
            assert seen == {"present": 0, "added": 1, "peak": 1, "dialed": 1}, number
        assert len(sim.uploads_made()) == 1
        explained = run_cli("explain", "L1", "-c", str(config), env=env())
        assert "reached the dialer and was dialled" in explained.stdout, explained.stdout


def test_the_example_config_passes_check() -> None:
    result = run_cli(
        "check",
        "-c",
        str(ROOT / "config" / "ucontact.example.toml"),
        env=cli_env(UCONTACT_PASSWORD="x"),
    )
    assert result.returncode == 0, result.stderr
    assert "configuration ok: 1 source(s), 1 sink(s)" in result.stdout


def test_syncd_simulate_ucontact_serves_the_api(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = start_syncd("simulate", "ucontact", "--port", str(port), environ=cli_env())
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                with urllib.request.urlopen(base + "/_sim/state", timeout=1) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_for(up, timeout=30)
        request = urllib.request.Request(
            base + "/Integra/resources/auth/getUserToken",
            data=b"user=api&password=secret",
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as r:
            assert isinstance(json.loads(r.read())[-1], str)
    finally:
        proc.terminate()
        proc.wait(10)


def test_syncds_own_waits_spend_no_attempt_a_lead_in_doubt_is_not_given_up_while_it_settles(
    tmp_path: Path,
) -> None:
    """An upload whose answer is lost puts its leads in doubt; their next pushes wait
    settle_s (and the call records' delay) before looking at what the dialer holds.
    Those waits are syncd's, not tries at the dialer: with max_attempts = 2 the lead
    must not become a dead letter ("gave up after 2 attempts") while it only waited."""
    n = 3
    with served(upload_answer_delay_s=3.0) as (sim, url):
        config = write_config(tmp_path, url, timeout_s=0.5, settle_s=4.0)
        text = config.read_text(encoding="utf-8").replace(
            "retry_max_s = 0.5\n", "retry_max_s = 0.5\nmax_attempts = 2\n"
        )
        config.write_text(text, encoding="utf-8")
        rows = "".join(f"L{i},N{i},{uy(i)},,,,\n" for i in range(1, n + 1))
        drop_csv(tmp_path / "inbox", "leads.csv", HEADER + rows)

        # One upload, its answer lost (the run ends before the lead's next turn).
        first = run_cli("run", "--once", "--deadline", "1", "-c", str(config), env=env())
        sim.apply_settings({"upload_answer_delay_s": 0.0})
        again = run_cli("run", "--once", "--deadline", "20", "-c", str(config), env=env())
        sim.dial_now()
        listed = sim.dial_list()

    states = stored(tmp_path, "SELECT state, COUNT(*) FROM leads GROUP BY state")
    assert states == [("delivered", n)], (states, first.stdout[-1500:], again.stdout[-1500:])
    assert stored(tmp_path, "SELECT COUNT(*) FROM leads WHERE last_error LIKE '%gave up%'") == [
        (0,)
    ]
    assert set(listed) == {dialled(i) for i in range(1, n + 1)}
    assert all(seen["peak"] == 1 for seen in listed.values()), listed


def test_a_server_timezone_that_is_not_the_dialers_holds_every_upload_until_it_is(
    tmp_path: Path,
) -> None:
    """The dialer reads a window's and a callback's dates in its own clock. Its clock
    reads UTC+05:30 (queuesummary's dateReceived) while server_timezone says UTC: a window
    of 09:00 to 18:00 would reach it as 03:30 to 12:30 — rung at 03:30. Nothing goes
    until server_timezone is the server's; `syncd check` names the setting."""
    with served(timezone="Asia/Kolkata") as (sim, url):
        config = write_config(tmp_path, url)
        drop_csv(
            tmp_path / "inbox",
            "leads.csv",
            HEADER + f"A1,Ana,{uy(1)},,,,\n" + f"A2,Bruno,{uy(2)},,,2031-05-04 12:00:00,\n",
        )
        held = once(config)
        assert held.returncode == 1, held.stdout + held.stderr
        assert sim.uploads_made() == [] and sim.scheduled() == []
        said = held.stdout + held.stderr
        assert "server_timezone" in said and "UTC+05:30" in said, said

        check = run_cli("check", "--online", "-c", str(config), env=env())
        assert check.returncode != 0
        assert "server_timezone" in check.stdout + check.stderr

        text = config.read_text(encoding="utf-8")
        config.write_text(
            text.replace(
                'dial_format = "00"', 'dial_format = "00"\nserver_timezone = "Asia/Kolkata"'
            ),
            encoding="utf-8",
        )
        sent = once(config)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "server_timezone" not in sent.stdout + sent.stderr
        assert len(sim.uploads_made()) == 1
        [schedule] = sim.scheduled()
        assert schedule["phone"] == dialled(2)


def test_a_server_without_queuesummary_says_server_timezone_goes_unchecked(
    tmp_path: Path,
) -> None:
    with served(timezone="Asia/Kolkata", missing_endpoints={"Supervisor/queuesummary"}) as (
        _sim,
        url,
    ):
        config = write_config(tmp_path, url)
        check = run_cli("check", "--online", "-c", str(config), env=env())
        drop_csv(tmp_path / "inbox", "leads.csv", HEADER + f"A1,Ana,{uy(1)},,,,\n")
        run = once(config)

    assert check.returncode == 0, check.stdout + check.stderr
    assert "server_timezone not checked" in check.stdout
    assert "server_timezone cannot be checked" in run.stdout + run.stderr


def test_the_daemon_refuses_a_ucontact_sink_whose_server_timezone_is_not_the_servers(
    tmp_path: Path, start_daemon: Any
) -> None:
    """Found at start, it is a sink refused as misconfigured: /readyz is 503 with the
    reason, the sink's state is config_refused (the shipped rule pages), nothing goes."""
    import httpx

    with served(timezone="Asia/Kolkata") as (sim, url):
        config = write_config(tmp_path, url)
        text = config.read_text(encoding="utf-8")
        config.write_text(text + '\n[health]\nlisten = "127.0.0.1:0"\n', encoding="utf-8")
        drop_csv(tmp_path / "inbox", "leads.csv", HEADER + f"A1,Ana,{uy(1)},,,,\n")
        daemon = start_daemon(config, env=env())
        stopped = daemon.wait_for("sink.stopped", sink="uc", timeout=60)
        daemon.wait_for("daemon.ready", timeout=60)  # /readyz says "starting" before
        ready = httpx.get(f"{daemon.base_url}/readyz")
        metrics = httpx.get(f"{daemon.base_url}/metrics").text
        assert daemon.stop() == 0

    assert "server_timezone" in stopped["reason"]
    assert ready.status_code == 503
    [reason] = ready.json()["reasons"]
    assert "UTC+05:30 but server_timezone = 'UTC'" in reason, reason
    assert 'syncd_sink_state{sink="uc",state="config_refused"} 1.0' in metrics
    assert sim.uploads_made() == []


def test_a_daemon_whose_ucontact_server_turns_to_another_zone_shows_the_sink_held(
    tmp_path: Path, start_daemon: Any
) -> None:
    """Found while running (the server's zone changed under it), the pushes wait; the
    sink's state says so wherever an operator looks: held, with the reason, not working."""
    from zoneinfo import ZoneInfo

    import httpx

    with served(timezone="UTC") as (sim, url):
        config = write_config(tmp_path, url)
        text = config.read_text(encoding="utf-8")
        text = text.replace("backup_records_url", "queue_poll_s = 0.5\nbackup_records_url")
        config.write_text(text + '\n[health]\nlisten = "127.0.0.1:0"\n', encoding="utf-8")
        daemon = start_daemon(config, env=env())
        daemon.wait_for("daemon.ready", timeout=60)
        sim.zone = ZoneInfo("Asia/Kolkata")  # the server's clock now reads UTC+05:30
        drop_csv(tmp_path / "inbox", "leads.csv", HEADER + f"A1,Ana,{uy(1)},,,,\n")
        paused = daemon.wait_for("sink.push.paused", sink="uc", timeout=60)
        metrics = httpx.get(f"{daemon.base_url}/metrics").text
        ready = httpx.get(f"{daemon.base_url}/readyz").json()
        status = run_cli("status", "--json", "-c", str(config), env=env())
        said = run_cli("status", "-c", str(config), env=env())
        assert daemon.stop() == 0

    assert paused["reason"] == "the dialer's clock is in another zone than server_timezone"
    assert 'syncd_sink_state{sink="uc",state="held"} 1.0' in metrics
    assert 'syncd_sink_state{sink="uc",state="working"} 0.0' in metrics
    assert any("UTC+05:30" in w for w in ready["warnings"]), ready
    sink = json.loads(status.stdout)["sinks"]["uc"]
    assert "UTC+05:30" in sink["held"], sink
    assert "uc: held" in said.stdout, said.stdout
    assert sim.uploads_made() == []
