"""`syncd run` as a long-running daemon, driven as a subprocess against the Jodo simulator."""

from __future__ import annotations

import csv
import io
import json
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from syncd.simulators.faults import Faults
from syncd.simulators.jodo.api import DialPlan, JodoSimulator, create_app
from syncd.simulators.server import running
from tests.conftest import Simulated, daemon_config, drop_csv, run_cli

HEADER = "id,phone,first,last,email,callback\n"


def leads_csv(start: int, count: int) -> str:
    rows = (f"L{i:05d},98450{i:05d},Asha,Rao,a{i}@example.com,\n" for i in range(start, count))
    return HEADER + "".join(rows)


def wait_until(
    what: Callable[[], bool], timeout: float = 20, message: Callable[[], object] | str = ""
) -> None:
    """Return once ``what()`` is true; fail with ``message`` (called late: the log so far)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return
        time.sleep(0.05)
    raise AssertionError((message() if callable(message) else message) or "condition not met")


def in_flight(config: Path) -> int:
    """Return how many leads `syncd status` shows as sent and not yet answered."""
    status = run_cli("status", "--json", "-c", str(config))
    if status.returncode != 0:  # no store yet
        return 0
    return sum(c.get("inflight", 0) for c in json.loads(status.stdout)["counts"].values())


def test_csv_dropped_in_the_inbox_is_delivered_by_the_running_daemon(
    tmp_path: Path, jodo: Simulated, start_daemon
) -> None:
    daemon = start_daemon(daemon_config(tmp_path, jodo.url))
    daemon.wait_for("daemon.ready")

    drop_csv(tmp_path / "inbox", "leads.csv", leads_csv(0, 25))

    wait_until(lambda: len(jodo.sim.received()) == 25, message=lambda: daemon.events)
    assert set(jodo.sim.received().values()) == {1}
    assert daemon.stop() == 0
    daemon.wait_for("daemon.stopped")


def test_sigterm_during_a_large_push_exits_0_and_a_restart_delivers_the_rest_exactly_once(
    tmp_path: Path, jodo: Simulated, start_daemon
) -> None:
    total = 1000
    jodo.sim.faults.set(Faults(latency_ms=100))
    config = daemon_config(tmp_path, jodo.url, batch_size=20)
    daemon = start_daemon(config)
    daemon.wait_for("daemon.ready")
    drop_csv(tmp_path / "inbox", "big.csv", leads_csv(0, total))
    wait_until(lambda: len(jodo.sim.received()) >= 100, message="the push did not start")

    assert daemon.stop(signal.SIGTERM, timeout=10 + 5) == 0  # grace is 10 s in daemon_config
    interrupted = jodo.sim.received()
    assert 0 < len(interrupted) < total, "SIGTERM should have landed mid-push"

    jodo.sim.faults.set(Faults())
    again = start_daemon(config)
    wait_until(lambda: len(jodo.sim.received()) == total, message="the rest was not delivered")
    assert again.stop() == 0
    received = jodo.sim.received()
    assert sorted(received) == [f"L{i:05d}" for i in range(total)]
    assert set(received.values()) == {1}, "a lead was pushed twice"


def test_a_second_signal_exits_at_once_and_nothing_is_lost(
    tmp_path: Path, jodo: Simulated, start_daemon
) -> None:
    jodo.sim.faults.set(Faults(latency_ms=3000))  # every batch hangs well past our patience
    config = daemon_config(tmp_path, jodo.url, batch_size=10, run={"shutdown_grace_s": 60})
    daemon = start_daemon(config)
    daemon.wait_for("daemon.ready")
    drop_csv(tmp_path / "inbox", "leads.csv", leads_csv(0, 30))
    wait_until(lambda: in_flight(config) > 0, message="no batch went out")

    daemon.proc.send_signal(signal.SIGTERM)
    daemon.wait_for("daemon.stopping")
    assert daemon.stop(signal.SIGTERM, timeout=10) == 128 + signal.SIGTERM
    daemon.wait_for("daemon.stop.forced")

    jodo.sim.faults.set(Faults())
    again = start_daemon(config)
    wait_until(lambda: len(jodo.sim.received()) == 30, message="leads in flight were lost")
    assert again.stop() == 0


def test_run_once_while_the_daemon_runs_exits_75_and_status_still_answers(
    tmp_path: Path, jodo: Simulated, start_daemon
) -> None:
    config = daemon_config(tmp_path, jodo.url)
    daemon = start_daemon(config)
    daemon.wait_for("daemon.ready")

    once = run_cli("run", "--once", "-c", str(config))
    status = run_cli("status", "--json", "-c", str(config))

    assert once.returncode == 75
    assert f"pid {daemon.proc.pid}" in once.stderr
    assert status.returncode == 0, status.stderr  # looking does not need the lock
    last_run = json.loads(status.stdout)["last_run"]
    assert last_run["mode"] == "daemon" and last_run["finished_at"] is None
    assert daemon.stop() == 0


def test_sighup_applies_a_valid_config_and_refuses_an_invalid_one(
    tmp_path: Path, jodo: Simulated, start_daemon
) -> None:
    config = daemon_config(tmp_path, jodo.url)
    daemon = start_daemon(config)
    daemon.wait_for("daemon.ready")
    good = config.read_text(encoding="utf-8")

    config.write_text(good.replace("batch_size = 50", "batch_size = 7"), encoding="utf-8")
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for("config.reloaded")

    config.write_text(good.replace('kind = "jodo"', 'kind = "nope"'), encoding="utf-8")
    daemon.proc.send_signal(signal.SIGHUP)
    refused = daemon.wait_for("config.reload.refused")
    assert any("sinks[0].kind" in p for p in refused["problems"])

    drop_csv(tmp_path / "inbox", "after.csv", leads_csv(0, 12))  # the running config still works
    wait_until(lambda: len(jodo.sim.received()) == 12)
    assert daemon.stop() == 0


def test_a_dialer_outage_does_not_stop_the_daemon(
    tmp_path: Path, jodo: Simulated, start_daemon
) -> None:
    jodo.sim.faults.set(Faults(error_rate=1.0))
    daemon = start_daemon(daemon_config(tmp_path, jodo.url, max_attempts=1000))
    daemon.wait_for("daemon.ready")
    drop_csv(tmp_path / "inbox", "leads.csv", leads_csv(0, 10))
    daemon.wait_for("sink.push.retry")

    jodo.sim.faults.set(Faults())

    wait_until(lambda: len(jodo.sim.received()) == 10, timeout=60)
    assert daemon.proc.poll() is None
    assert daemon.stop() == 0


def test_outcomes_are_polled_and_written_back_on_their_schedules(
    tmp_path: Path, start_daemon
) -> None:
    sim = JodoSimulator(dial=DialPlan(interval_s=0, recording_delay_s=None), agents={"ann": 1})
    with running(create_app(sim)) as url:
        polled_and_written_back(tmp_path, url, start_daemon)


def polled_and_written_back(tmp_path: Path, url: str, start_daemon: Any) -> None:
    config = daemon_config(tmp_path, url)
    text = config.read_text(encoding="utf-8").replace(
        'kind = "jodo"\n', 'kind = "jodo"\npoll = { interval_s = 0.5 }\n', 1
    )
    outbox = tmp_path / "crm-outcomes"
    text += (
        '\n[[writebacks]]\nname = "crm-files"\nkind = "csv"\n'
        f'outbox = "{outbox}"\nrotate_s = 0\nschedule = {{ interval_s = 0.5 }}\n'
    )
    config.write_text(text, encoding="utf-8")
    daemon = start_daemon(config)
    daemon.wait_for("daemon.ready")

    drop_csv(tmp_path / "inbox", "leads.csv", leads_csv(0, 6))

    def written_keys() -> set[str]:
        files = [io.StringIO(f.read_text(encoding="utf-8")) for f in outbox.glob("*.csv")]
        return {row["key"] for f in files for row in csv.DictReader(f)}

    wanted = {f"L{i:05d}" for i in range(6)}
    wait_until(lambda: written_keys() == wanted, timeout=30, message=lambda: daemon.events[-12:])
    written = 'syncd_writeback_outcomes_written_total{writeback="crm-files"} 6.0'
    wait_until(lambda: written in httpx.get(f"{daemon.base_url}/metrics").text)
    metrics = httpx.get(f"{daemon.base_url}/metrics").text
    assert 'syncd_sink_outcomes_received_total{sink="jodo"} 6.0' in metrics
    assert 'syncd_writeback_lag_seconds{writeback="crm-files"}' in metrics
    assert daemon.stop() == 0


def test_the_outbox_counters_add_up_when_a_queued_lead_is_replaced_before_it_is_sent(
    tmp_path: Path, start_daemon: Any
) -> None:
    sim = JodoSimulator(apikey="someone_else")  # refuses our key: leads wait in the outbox
    with running(create_app(sim)) as url:
        daemon = start_daemon(daemon_config(tmp_path, url))

        def sample(name: str) -> float:
            text = httpx.get(f"{daemon.base_url}/metrics").text
            found = re.search(rf'^{name}\{{[^}}]*sink="jodo"[^}}]*\}} (\S+)$', text, re.M)
            return float(found.group(1)) if found else -1.0

        daemon.wait_for("daemon.ready")
        drop_csv(tmp_path / "inbox", "a.csv", leads_csv(0, 10))
        daemon.wait_for("sink.stopped")
        # A second export changes four of the leads while they wait unsent.
        drop_csv(tmp_path / "inbox", "b.csv", leads_csv(0, 4).replace(",Asha,", ",Meera,"))
        wait_until(lambda: sample("syncd_source_rows_enqueued_total") == 14, timeout=30)
        sim.add_process("test_org", "VoiceProcess")  # the dialer takes our key again

        def settled() -> dict[str, float]:
            names = (
                "syncd_source_rows_enqueued_total",
                "syncd_sink_leads_delivered_total",
                "syncd_sink_leads_rejected_total",
                "syncd_sink_leads_failed_total",
                "syncd_source_versions_superseded_total",
                "syncd_outbox_pending",  # from a store snapshot a few seconds old at most
            )
            return {name.split("_", 2)[2]: sample(name) for name in names}

        wait_until(
            lambda: (n := settled())["leads_delivered_total"] == 10 and n["pending"] == 0,
            timeout=30,
            message=lambda: (settled(), daemon.events[-10:]),
        )
        n = settled()
        assert n["versions_superseded_total"] == 4
        # 14 enqueued = 10 delivered + 4 replaced before they went (+ 0 refused, failed, pending)
        assert (
            n["rows_enqueued_total"]
            == 14
            == sum(v for k, v in n.items() if k != "rows_enqueued_total")
        )
        named = {r["leadnumber"]: set(map(str, r.values())) for r in sim.records("VoiceProcess")}
        assert [("Meera" in named[f"L{i:05d}"]) for i in range(5)] == [True] * 4 + [False]
        assert daemon.stop() == 0


def test_the_outcome_poll_lag_counts_from_the_last_good_poll_across_a_restart(
    tmp_path: Path, jodo: Simulated, start_daemon: Any
) -> None:
    def with_poll(url: str) -> Path:
        config = daemon_config(tmp_path, url)
        text = config.read_text(encoding="utf-8").replace(
            'kind = "jodo"\n', 'kind = "jodo"\npoll = { interval_s = 0.5 }\n', 1
        )
        config.write_text(text, encoding="utf-8")
        return config

    def lag(daemon: Any) -> float:
        text = httpx.get(f"{daemon.base_url}/metrics").text
        found = re.search(r'^syncd_sink_outcome_poll_lag_seconds\{sink="jodo"\} (\S+)$', text, re.M)
        return float(found.group(1)) if found else -1.0

    def polled_at(config: Path) -> float | None:
        status = run_cli("status", "--json", "-c", str(config))
        if status.returncode != 0:
            return None
        return (json.loads(status.stdout).get("outcomes", {}).get("jodo") or {}).get("polled_at")

    first_config = with_poll(jodo.url)
    first = start_daemon(first_config)
    first.wait_for("daemon.ready")
    wait_until(lambda: polled_at(first_config) is not None, timeout=30)  # a poll went through
    assert first.stop() == 0
    stopped_at = time.time()  # the last good poll was before this

    # The dialer is gone when the daemon comes back (a crash loop, a restart by systemd).
    second = start_daemon(with_poll("http://127.0.0.1:9"))
    second.wait_for("daemon.ready")
    asked = time.time()  # the first scrape: its store snapshot is taken after this
    seen = lag(second)

    assert seen >= asked - stopped_at - 0.5, seen  # not counted from this start
