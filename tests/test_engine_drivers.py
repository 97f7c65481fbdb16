"""One engine for `--once` and the daemon: an error means the same thing under both drivers.

The daemon's jobs and `--once` call the same engine stages (`Engine.push`, `.poll`,
`.keepalive`); these tests pin what a stage does on each kind of error.
"""

from __future__ import annotations

import json
from pathlib import Path

from syncd.run.engine import Engine
from syncd.run.sinks import SinkState
from syncd.simulators.faults import Faults
from syncd.simulators.jodo.api import JodoSimulator, create_app
from syncd.simulators.server import running
from syncd.state import open_store
from tests.conftest import drop_csv, run_cli
from tests.support.logs import events
from tests.support.reliability import (
    RequestCounter,
    export,
    jodo_sink,
    settings_for,
    vendor_env,
    write_config,
)

PUSH = b"ImportProcessData"


def revoke_key_after_the_push(sim: JodoSimulator) -> RequestCounter:
    """Serve ``sim``; once the first push is answered, the dialer no longer knows the key."""

    def revoke(n: int, when: str) -> None:
        if n == 1 and when == "after":
            sim.apikeys.clear()

    return RequestCounter(create_app(sim), hook=revoke, only=PUSH)


def test_once_a_configuration_error_in_the_outcome_poll_stops_the_sink_and_exits_3(
    tmp_path: Path,
) -> None:
    # Before one engine, `--once` only logged this and exited 0; the daemon stopped the sink.
    sim = JodoSimulator()
    with running(revoke_key_after_the_push(sim)) as url:
        config = write_config(tmp_path, [jodo_sink(url, batch_size=50)])
        drop_csv(tmp_path / "inbox", "a.csv", export(5))
        result = run_cli("run", "--once", "-c", str(config), env=vendor_env())

    assert len(sim.records("VoiceProcess")) == 5  # delivered before the key went
    assert result.returncode == 3, result.stdout  # every lead delivered: not 1
    assert "outcome poll of jodo failed" in result.stdout
    [stopped] = events(result.stderr, "sink.stopped")
    assert stopped["sink"] == "jodo" and "getProcessData" in str(stopped["reason"])


def test_a_dialer_that_fails_the_poll_after_delivering_every_lead_exits_3_and_says_why(
    tmp_path: Path,
) -> None:
    sim = JodoSimulator()

    def break_after_push(n: int, when: str) -> None:
        if n == 1 and when == "after":
            sim.faults.set(Faults(error_rate=1.0))

    with running(RequestCounter(create_app(sim), hook=break_after_push, only=PUSH)) as url:
        config = write_config(tmp_path, [jodo_sink(url, batch_size=50)])
        drop_csv(tmp_path / "inbox", "a.csv", export(5))
        result = run_cli("run", "--once", "--deadline", "5", "-c", str(config), env=vendor_env())

    assert len(sim.records("VoiceProcess")) == 5
    assert result.returncode == 3, result.stdout  # every lead delivered: not 1
    assert "outcome poll of jodo failed" in result.stdout
    assert len(events(result.stderr, "sink.poll.failed")) == 1  # logged once, not per try


async def test_the_poll_stage_the_daemon_schedules_stops_the_sink_the_same_way(
    tmp_path: Path,
) -> None:
    sim = JodoSimulator()
    with running(create_app(sim)) as url:
        config = write_config(tmp_path, [jodo_sink(url, batch_size=50)])
        settings = settings_for(config)
        store = await open_store(settings.state)
        engine = Engine(settings, store)
        try:
            await engine.open()
            assert engine.sinks["jodo"].state is SinkState.WORKING
            sim.apikeys.clear()
            result = await engine.poll("jodo")
            assert result.final and result.error is not None
            slot = engine.sinks["jodo"]
            assert slot.state is SinkState.STOPPED
            [problem] = engine.sinks.problems()  # what /readyz says: not the dialer's words
            assert problem.startswith("jodo: stopped since ") and "code 1107" in problem
            assert "API key not found" in str(slot.reason) and "API key" not in problem
            assert str(slot.reason) in str(engine.sinks.describe("jodo"))  # status says it all
            assert (await engine.poll("jodo")).skipped  # a stopped sink is not asked again
        finally:
            await engine.close()
            await store.close()


def test_status_says_why_leads_wait_for_a_stopped_sink_without_the_dialers_secret(
    tmp_path: Path,
) -> None:
    sim = JodoSimulator(apikey="someone_else")  # our key is refused: Jodo code 1107
    with running(create_app(sim)) as url:
        config = write_config(tmp_path, [jodo_sink(url, batch_size=50)])
        drop_csv(tmp_path / "inbox", "a.csv", export(5))
        ran = run_cli("run", "--once", "-c", str(config), env=vendor_env())
    assert ran.returncode == 1

    env = {k: v for k, v in vendor_env().items() if k != "TEST_JODO_APIKEY"}
    status = run_cli("status", "-c", str(config), env=env)

    assert status.returncode == 0, status.stderr
    [line] = [ln for ln in status.stdout.splitlines() if ln.startswith("jodo: ")]
    assert line.startswith("jodo: stopped since ")
    assert "API key" in line and "fix the sink's configuration" in line
    assert "5 leads pending" in line

    # explain and the dry run read the store and the sources, never the dialer.
    explain = run_cli("explain", "L0", "-c", str(config), env=env)
    assert explain.returncode == 0, explain.stderr
    dry = run_cli("run", "--once", "--dry-run", "-c", str(config), env=env)
    assert dry.returncode in (0, 1) and "is not set" not in dry.stderr, dry.stderr
    assert "jodo would create" in dry.stdout
    unknown = run_cli("explain", "NO-SUCH-LEAD", "-c", str(config), env=env)
    assert unknown.returncode == 1 and "no record of lead 'NO-SUCH-LEAD'" in unknown.stdout


def test_a_retry_after_of_a_day_ends_the_once_at_its_deadline_with_the_reason(
    tmp_path: Path,
) -> None:
    # Before, the outcome poll slept out the whole day inside its request (deaf to SIGTERM).
    sim = JodoSimulator(faults=Faults(rate_429=1.0, retry_after="86400"))
    with running(create_app(sim)) as url:
        config = write_config(tmp_path, [jodo_sink(url, batch_size=50, rate_limit_per_s=50)])
        drop_csv(tmp_path / "inbox", "a.csv", export(3))
        result = run_cli(
            "run", "--once", "--deadline", "10", "-c", str(config), env=vendor_env(), timeout=120
        )

    assert result.returncode == 1
    assert "the dialer asked to wait 24 h" in result.stdout, result.stdout
    status = run_cli("status", "--json", "-c", str(config), env=vendor_env())
    assert json.loads(status.stdout)["counts"]["jodo"]["pending"] == 3  # nothing lost


class SilentDialer:
    """A TCP server that accepts every connection and never answers a byte."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.held: list[socket.socket] = []
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_a_dialer_that_accepts_and_never_answers_cannot_hold_the_once_past_its_deadline(
    tmp_path: Path,
) -> None:
    silent = SilentDialer()
    try:
        config = write_config(tmp_path, [jodo_sink(silent.url, timeout_s=600)])  # patient
        drop_csv(tmp_path / "inbox", "a.csv", export(3))
        # Before, the run waited on the silent dialer long past its deadline.
        result = run_cli(
            "run", "--once", "--deadline", "3", "-c", str(config), env=vendor_env(), timeout=90
        )
    finally:
        silent.close()

    assert result.returncode == 1
    assert "the deadline came during the push" in result.stdout
    assert "requests in flight were cut off" in result.stdout
    status = run_cli("status", "--json", "-c", str(config), env=vendor_env())
    assert json.loads(status.stdout)["counts"]["jodo"]["pending"] == 3  # nothing lost


def test_sigterm_ends_a_once_stuck_on_a_silent_dialer_after_the_grace(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.test_daemon import wait_until

    silent = SilentDialer()
    try:
        config = write_config(tmp_path, [jodo_sink(silent.url, timeout_s=600)])
        drop_csv(tmp_path / "inbox", "a.csv", export(3))
        env = {**vendor_env(), "SYNCD_RUN__SHUTDOWN_GRACE_S": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "syncd", "run", "--once", "-c", str(config)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until(lambda: len(silent.held) >= 1, timeout=60)  # the push is out, unanswered
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=60)  # not an hour: the deadline's default
    finally:
        silent.close()

    assert proc.returncode == 1
    assert "a stop signal came during the push" in stdout
    status = run_cli("status", "--json", "-c", str(config), env=vendor_env())
    assert json.loads(status.stdout)["counts"]["jodo"]["pending"] == 3


def test_explain_shows_what_each_dialer_answered_for_the_lead(tmp_path: Path) -> None:
    from syncd.simulators.ameyo.api import AmeyoSimulator
    from syncd.simulators.ameyo.api import create_app as ameyo_app
    from syncd.simulators.ucontact.api import UContactSimulator
    from syncd.simulators.ucontact.api import create_app as ucontact_app
    from tests.support.reliability import (
        AMEYO_PASSWORD,
        UCONTACT_PASSWORD,
        ameyo_sink,
        ucontact_sink,
    )

    jodo = JodoSimulator()
    ameyo = AmeyoSimulator(users={"syncd": AMEYO_PASSWORD}, dialing=False)
    ucontact = UContactSimulator(users={"api": UCONTACT_PASSWORD}, dial_delay_s=3600)
    with (
        running(create_app(jodo)) as j,
        running(ameyo_app(ameyo)) as a,
        running(ucontact_app(ucontact)) as u,
    ):
        sinks = [jodo_sink(j), ameyo_sink(a), ucontact_sink(u)]
        config = write_config(tmp_path, sinks)
        drop_csv(tmp_path / "inbox", "a.csv", export(2))
        ran = run_cli("run", "--once", "-c", str(config), env=vendor_env())
        explained = run_cli("explain", "L1", "-c", str(config), env=vendor_env())

    assert ran.returncode == 0, ran.stderr[-2000:]
    history = explained.stdout
    [customer] = [c for c in ameyo.customer_list() if c.data.get("crm_key") == "L1"]
    assert f"Ameyo: ADDED, customerId {customer.customer_id}" in history
    assert "Jodo: status" in history
    assert "uContact: Dialers/uploadbase answered 1" in history
