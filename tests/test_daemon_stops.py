"""What a stop leaves behind: writeback files the CRM can read, polls that end at a safe point."""

from __future__ import annotations

import csv
import io
import json
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

from syncd.simulators.faults import Faults
from syncd.simulators.jodo.api import DialPlan, JodoSimulator, create_app
from syncd.simulators.quirks import Quirks
from syncd.simulators.server import running
from syncd.simulators.ucontact.api import UContactSimulator
from tests.conftest import cli_env, daemon_config, drop_csv, run_cli
from tests.support.ucontact import dialled, served, uy
from tests.test_daemon import leads_csv, wait_until


def rows_in(paths: list[Path]) -> list[dict[str, str]]:
    return [row for p in paths for row in csv.DictReader(io.StringIO(p.read_text("utf-8")))]


def writeback_daemon_config(
    tmp_path: Path, url: str, outbox: Path, sink_extra: str = "", **run: float
) -> Path:
    """Write a Jodo daemon config polling every 0.5 s, with a CSV writeback to ``outbox``
    whose files publish only after an hour (rotate_s) or at a stop."""
    config = daemon_config(tmp_path, url, run=run or None)
    text = config.read_text(encoding="utf-8").replace(
        'kind = "jodo"\n', f'kind = "jodo"\n{sink_extra}poll = {{ interval_s = 0.5 }}\n', 1
    )
    text += (
        '\n[[writebacks]]\nname = "crm-files"\nkind = "csv"\n'
        f'outbox = "{outbox}"\nrotate_s = 3600\nschedule = {{ interval_s = 0.5 }}\n'
    )
    config.write_text(text, encoding="utf-8")
    return config


def keys_in_part_files(outbox: Path) -> set[str]:
    return {row["key"] for row in rows_in(list(outbox.glob("*.csv.part")))}


def test_sigterm_publishes_the_csv_writeback_file_being_written(
    tmp_path: Path, start_daemon: Any
) -> None:
    # rotate_s is an hour: without the stop, the rows would sit in the .part file that
    # the CRM never reads until an hour after the next start.
    sim = JodoSimulator(dial=DialPlan(interval_s=0, recording_delay_s=None), agents={"ann": 1})
    outbox = tmp_path / "crm-outcomes"
    with running(create_app(sim)) as url:
        daemon = start_daemon(writeback_daemon_config(tmp_path, url, outbox))
        daemon.wait_for("daemon.ready")
        drop_csv(tmp_path / "inbox", "leads.csv", leads_csv(0, 6))
        wanted = {f"L{i:05d}" for i in range(6)}

        wait_until(
            lambda: keys_in_part_files(outbox) == wanted, timeout=30, message=lambda: daemon.events
        )
        assert not list(outbox.glob("*.csv")), "rotate_s = 3600 published a file early"

        assert daemon.stop() == 0

    published = rows_in(sorted(outbox.glob("*.csv")))
    assert sorted(row["key"] for row in published) == sorted(wanted)
    assert not list(outbox.glob("*.part"))
    assert [e for e in daemon.events if e.get("event") == "writeback.csv.published"]
    assert not [e for e in daemon.events if e.get("event") == "writeback.unpublished"]


def test_a_stop_publishes_the_writeback_file_before_waiting_for_a_slow_push(
    tmp_path: Path, start_daemon: Any
) -> None:
    # A supervisor that kills at its own timeout (docker stop: 10 s) must find the
    # outcomes published, whatever a push still waits for: here the daemon's grace (2 s)
    # runs out while the upload waits for its answer (40 s).
    sim = JodoSimulator(dial=DialPlan(interval_s=0, recording_delay_s=None), agents={"ann": 1})
    outbox = tmp_path / "crm-outcomes"
    with running(create_app(sim)) as url:
        config = writeback_daemon_config(
            tmp_path, url, outbox, "timeout_s = 60.0\n", shutdown_grace_s=2.0
        )
        daemon = start_daemon(config)
        daemon.wait_for("daemon.ready")
        drop_csv(tmp_path / "inbox", "leads.csv", leads_csv(0, 3))
        wanted = {f"L{i:05d}" for i in range(3)}

        wait_until(
            lambda: keys_in_part_files(outbox) == wanted, timeout=30, message=lambda: daemon.events
        )
        sim.quirks.set(Quirks(store_then_slow_s=40.0))  # the next upload waits 40 s
        drop_csv(tmp_path / "inbox", "more.csv", leads_csv(3, 4))
        wait_until(
            lambda: sim.requests.get("ImportProcessData", 0) >= 2,
            timeout=30,
            message=lambda: (sim.requests, daemon.events[-8:]),
        )
        assert daemon.stop(timeout=60) == 0

    names = [e.get("event") for e in daemon.events]
    assert "daemon.drain.cancelled" in names  # the push waited out the grace
    assert names.index("writeback.csv.published") < names.index("daemon.drain.cancelled")
    assert {row["key"] for row in rows_in(sorted(outbox.glob("*.csv")))} == wanted


def test_a_stop_sends_the_dialer_no_further_retry_of_an_unanswered_upload(
    tmp_path: Path, start_daemon: Any
) -> None:
    # The dialer stores each upload and answers 40 s later; syncd waits 1 s a request.
    # In-call retries went on after SIGTERM, each another request, until the grace.
    sim = JodoSimulator(quirks=Quirks(store_then_slow_s=40.0))
    with running(create_app(sim)) as url:
        config = daemon_config(tmp_path, url, run={"shutdown_grace_s": 30.0})
        text = config.read_text(encoding="utf-8")
        config.write_text(text.replace('kind = "jodo"\n', 'kind = "jodo"\ntimeout_s = 1.0\n', 1))
        daemon = start_daemon(config)
        daemon.wait_for("daemon.ready")
        drop_csv(tmp_path / "inbox", "leads.csv", leads_csv(0, 2))
        daemon.wait_for("http.retry", timeout=30)
        daemon.proc.send_signal(signal.SIGTERM)
        daemon.wait_for("daemon.stop.requested", timeout=10)
        sent_at_stop = sim.requests.get("ImportProcessData", 0)
        assert daemon.proc.wait(60) == 0
        daemon.stop()  # collects the last log lines
        sent = sim.requests.get("ImportProcessData", 0)

    stop = next(i for i, e in enumerate(daemon.events) if e.get("event") == "daemon.stop.requested")
    assert not [e for e in daemon.events[stop:] if e.get("event") == "http.retry"]
    assert sent - sent_at_stop <= 1  # at most an attempt that was waiting its turn
    assert not events(daemon, "daemon.drain.cancelled"), "the stop waited out the grace"


UCONTACT_CONFIG = """\
[health]
listen = "127.0.0.1:0"

[run]
shutdown_grace_s = 10
sink_recheck_s = 1

[state]
path = "{state}"

[log]
level = "info"
format = "json"

[[sources]]
name = "crm"
kind = "csv_drop"
inbox = "{inbox}"
schedule = {{ interval_s = 0.5 }}

[[sinks]]
name = "uc"
kind = "ucontact"
url = "{url}"
user = "api"
password = "env:TEST_UCONTACT_PASSWORD"
campaign = "Ventas->"
dial_format = "00"
timeout_s = 5
cdr_delay_s = 0
cdr_page_size = 10
probe_recordings = false
retry_base_s = 0.1
retry_max_s = 0.5
poll = {{ interval_s = 1 }}

[[routes]]
source = "crm"
sink = "uc"
default_region = "UY"
[routes.map]
key = "id"
phone = "phone"
"""
LEADS = 30
CALLS = 400  # 40 pages of 10: far more than a stop's grace at the latency below


def ucontact_daemon(tmp_path: Path, url: str) -> Path:
    (tmp_path / "inbox").mkdir(exist_ok=True)
    path = tmp_path / "syncd.toml"
    path.write_text(
        UCONTACT_CONFIG.format(
            state=tmp_path / "state" / "state.db", inbox=tmp_path / "inbox", url=url
        ),
        encoding="utf-8",
    )
    return path


def calls_recorded(tmp_path: Path) -> tuple[int, int]:
    """Return (leads with an outcome, calls counted in them) as the store holds them."""
    db = tmp_path / "state" / "state.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        leads, calls = conn.execute(
            "SELECT count(*), coalesce(sum(attempts), 0) FROM outcomes WHERE sink = 'uc'"
        ).fetchone()
    return int(leads), int(calls)


def delivered(config: Path) -> int:
    status = run_cli("status", "--json", "-c", str(config), env=uc_env())
    if status.returncode != 0:
        return 0
    return int(json.loads(status.stdout)["counts"].get("uc", {}).get("delivered", 0))


def uc_env() -> dict[str, str]:
    return cli_env(TEST_UCONTACT_PASSWORD="secret")


def events(daemon: Any, name: str) -> list[dict[str, Any]]:
    return [e for e in daemon.events if e.get("event") == name]


def mid_poll(tmp_path: Path, sim: UContactSimulator, url: str, start_daemon: Any) -> Any:
    """Return a daemon whose outcome poll is reading a long, slow list of call records."""
    config = ucontact_daemon(tmp_path, url)
    daemon = start_daemon(config, env=uc_env())
    daemon.wait_for("daemon.ready")
    text = "id,phone\n" + "".join(f"K{n:03d},{uy(n)}\n" for n in range(LEADS))
    drop_csv(tmp_path / "inbox", "leads.csv", text)
    wait_until(lambda: delivered(config) == LEADS, timeout=60, message=lambda: daemon.events[-15:])
    now = time.time()
    for i in range(CALLS):
        calldate = sim.local(now - 600 + i)
        sim.add_record(dialled(i % LEADS), calldate=calldate, guid=f"c{i:04d}", visible=False)
    sim.faults.set(Faults(latency_ms=400))
    before = sim.requests["Cdr/getrecords"]
    sim.reveal()  # all at once: a poll sees every call or none
    wait_until(lambda: sim.requests["Cdr/getrecords"] >= before + 3, timeout=60)
    return daemon


def test_sigterm_stops_an_outcome_poll_at_the_next_page_and_the_next_start_resumes_it(
    tmp_path: Path, start_daemon: Any
) -> None:
    with served() as (sim, url):
        daemon = mid_poll(tmp_path, sim, url, start_daemon)

        assert daemon.stop() == 0
        stopped = events(daemon, "sink.poll.stopped")
        assert not events(daemon, "daemon.drain.cancelled"), "the poll waited out the grace"
        assert len(stopped) == 1 and stopped[0]["pages"] >= 1
        read = stopped[0]["records"]
        assert read == 10 * stopped[0]["pages"] < CALLS
        # What the stopped poll read is recorded: every call of its pages, once.
        assert calls_recorded(tmp_path)[1] == read

        sim.faults.set(Faults())
        again = start_daemon(ucontact_daemon(tmp_path, url), env=uc_env())
        resumed = again.wait_for("sink.poll.resumed", timeout=30)
        assert resumed["lastrow"] == read  # where the stopped poll left off, not from 0
        wait_until(
            lambda: calls_recorded(tmp_path) == (LEADS, CALLS),
            timeout=60,
            message=lambda: (calls_recorded(tmp_path), again.events[-10:]),
        )
        assert again.stop() == 0


def test_a_reload_stops_an_outcome_poll_at_the_next_page_and_the_new_config_resumes_it(
    tmp_path: Path, start_daemon: Any
) -> None:
    with served() as (sim, url):
        daemon = mid_poll(tmp_path, sim, url, start_daemon)

        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for("config.reloaded", timeout=30)
        assert not events(daemon, "daemon.drain.cancelled"), "the poll waited out the grace"
        stopped = events(daemon, "sink.poll.stopped")
        assert len(stopped) == 1 and stopped[0]["records"] < CALLS
        sim.faults.set(Faults())
        resumed = daemon.wait_for("sink.poll.resumed", timeout=30)
        assert resumed["lastrow"] == stopped[0]["records"]
        wait_until(
            lambda: calls_recorded(tmp_path) == (LEADS, CALLS),
            timeout=60,
            message=lambda: (calls_recorded(tmp_path), daemon.events[-10:]),
        )
        assert daemon.stop() == 0


def test_a_stop_does_not_wait_on_a_dialer_that_never_answers_its_logout(
    tmp_path: Path, start_daemon: Any
) -> None:
    """A dialer that accepts the connection but never answers (a hung server) must not
    hold the stop past the grace: a supervisor kills at its own timeout (systemd's 45 s),
    so the logout is given a few seconds and then given up, saying so."""
    with served() as (sim, url):
        config = ucontact_daemon(tmp_path, url)
        text = config.read_text(encoding="utf-8").replace("timeout_s = 5\n", "timeout_s = 120\n")
        config.write_text(text, encoding="utf-8")
        daemon = start_daemon(config, env=uc_env())
        daemon.wait_for("daemon.ready")
        wait_until(lambda: sim.requests["Cdr/getrecords"] >= 1, timeout=30)  # logged in
        sim.faults.set(Faults(slow_rate=1.0, slow_s=600))  # every answer hangs from now on

        assert daemon.stop(timeout=60) == 0
        [gave_up] = events(daemon, "sink.close.timed_out")
        assert gave_up["sink"] == "uc" and "action" in gave_up
        assert events(daemon, "daemon.stopped")
