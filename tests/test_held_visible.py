"""A dialer's 429/Retry-After hold is seen, and a poll it keeps back is not a failure
(issue 30: "a hold is as wide as its cause … messages say which it was"; "no silent
failure").

While the dialer's Retry-After holds a sink, `/readyz` (a warning: leads still flow
once it ends), `syncd status`, the status page and the metrics say that the dialer
asked for the wait, in which answer, and until when. An outcome poll the hold keeps
back is a skip that names the hold (`sink.poll.held`, at info), not an error, and is
not counted as a failed poll.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from structlog.testing import capture_logs

from syncd.daemon.metrics import Metrics
from syncd.run.engine import Engine
from syncd.run.once import run_until_idle
from syncd.run.sinks import clock_text
from syncd.run.status import sink_state_line
from syncd.simulators.ameyo.api import AmeyoSimulator
from syncd.simulators.ameyo.api import create_app as create_app_ameyo
from syncd.simulators.faults import Faults
from syncd.simulators.jodo.api import JodoSimulator, create_app
from syncd.simulators.server import running
from syncd.state.sqlite import SqliteStore
from tests.conftest import daemon_config, drop_csv, run_cli
from tests.support.clock import FakeClock
from tests.support.reliability import (
    AMEYO_PASSWORD,
    RequestCounter,
    ameyo_sink,
    export,
    jodo_sink,
    run_engine,
    settings_for,
    vendor_env,
    write_config,
)
from tests.test_daemon import leads_csv, wait_until
from tests.test_health import samples

HOLD = Faults(rate_429=1.0, retry_after="120")  # every answer: 429, Retry-After: 120


def named(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == event]


async def delivered_engine(tmp_path: Path, url: str, clock: FakeClock) -> Engine:
    """Return an open engine on ``clock`` whose two leads the Jodo at ``url`` took."""
    config = write_config(tmp_path, [jodo_sink(url)])
    drop_csv(tmp_path / "inbox", "a.csv", export(2))
    settings = settings_for(config)
    store = SqliteStore(settings.state.path, clock)
    await store.open()
    engine = Engine(settings, store, clock=clock)
    await engine.open()
    await run_until_idle(engine, deadline_s=60)
    return engine


async def close(engine: Engine) -> None:
    await engine.close()
    await engine.store.close()


async def test_a_dialers_429_hold_shows_in_readiness_status_and_metrics_until_it_ends(
    tmp_path: Path,
) -> None:
    clock = FakeClock(time.time())
    sim = JodoSimulator(clock=clock)
    with running(create_app(sim)) as url:
        engine = await delivered_engine(tmp_path, url, clock)
        try:
            sim.faults.set(HOLD)
            await engine.poll("jodo")  # answered 429, Retry-After: 120: the sink is held
            until = clock.time() + 120
            sinks = engine.sinks
            held_causes = {k: str(v) for k, v in sinks.causes().items()}
            problems = sinks.problems()
            warnings = sinks.warnings()
            snapshot = engine.health_snapshot()["jodo"]
            metrics = Metrics()
            metrics.observe_live({s.name: s.sink for s in sinks}, held_causes)
            held_metrics = samples(metrics.exposition().decode())

            clock.advance(121)  # the hold is over, the dialer answers again
            sim.faults.set(Faults())
            after = await engine.poll("jodo")
            after_causes = {k: str(v) for k, v in sinks.causes().items()}
            after_warnings = sinks.warnings()
            after_snapshot = engine.health_snapshot()["jodo"]
        finally:
            await close(engine)

    # /readyz: ready (leads flow once it ends), with a warning that says who asked and until when
    assert problems == []
    [said] = warnings["jodo"]
    assert said.startswith(f"throttled until {clock_text(until)}: "), said
    assert "the dialer asked to wait 2 min (HTTP 429, Retry-After)" in said
    assert "leads stay queued" in said
    # `syncd status` (text and --json read this snapshot) and the status page
    assert snapshot["throttled"]["until"] == until
    assert "HTTP 429, Retry-After" in snapshot["throttled"]["reason"]
    line = sink_state_line(snapshot, now=until - 60)
    assert line.startswith("throttled until "), line
    assert "HTTP 429, Retry-After" in line and "leads wait without spending attempts" in line
    assert sink_state_line(snapshot, now=until + 1).startswith("working")  # over by then
    # metrics: the cause, and when it ends
    assert held_causes == {"jodo": "throttled"}
    sink = (("sink", "jodo"),)
    assert held_metrics[("syncd_sink_state", (("sink", "jodo"), ("state", "throttled")))] == 1
    assert held_metrics[("syncd_sink_state", (("sink", "jodo"), ("state", "working")))] == 0
    assert held_metrics[("syncd_sink_up", sink)] == 1  # it delivers once the wait is over
    assert held_metrics[("syncd_sink_throttled_seconds", sink)] == 120
    # once it ends, nothing says it any more
    assert after.error is None and not after.skipped
    assert after_causes == {"jodo": "working"}
    assert "jodo" not in after_warnings
    assert after_snapshot["throttled"] is None


async def test_a_poll_the_dialers_hold_keeps_back_is_an_info_skip_not_a_failure(
    tmp_path: Path,
) -> None:
    clock = FakeClock(time.time())
    sim = JodoSimulator(clock=clock)
    counter = RequestCounter(create_app(sim))
    with running(counter) as url:
        engine = await delivered_engine(tmp_path, url, clock)
        try:
            sim.faults.set(HOLD)
            asked = counter.count
            with capture_logs() as logs:
                first = await engine.poll("jodo")  # answered 429: the hold begins
                until = clock.time() + 120
                asked_first = counter.count - asked
                clock.advance(30)
                second = await engine.poll("jodo")  # kept back: nothing is asked
                asked_second = counter.count - asked - asked_first
            snapshot = engine.health_snapshot()["jodo"]
        finally:
            await close(engine)

    assert asked_first >= 1 and asked_second == 0
    for result in (first, second):
        assert result.error is None and result.skipped, result
        assert result.held is not None and "HTTP 429, Retry-After" in result.held
    assert second.retry_after == 90  # what is left of the hold
    assert not named(logs, "sink.poll.failed")  # nothing failed: the dialer asked to wait
    [held] = named(logs, "sink.poll.held")  # once per hold, not per poll
    assert held["log_level"] == "info" and held["sink"] == "jodo"
    assert held["until"] == datetime.fromtimestamp(until, UTC).isoformat()
    assert held["cause"] == "the dialer asked to wait 2 min (HTTP 429, Retry-After)"
    assert snapshot["poll_failed"] is None  # status says no poll failed


def test_readyz_status_and_metrics_show_the_dialers_429_hold_and_polls_are_not_failures(
    tmp_path: Path, start_daemon
) -> None:
    sim = JodoSimulator(faults=Faults(rate_429=1.0, retry_after="600"))
    with running(create_app(sim)) as url:
        config = daemon_config(tmp_path, url)
        text = config.read_text(encoding="utf-8")
        config.write_text(
            text.replace('kind = "jodo"\n', 'kind = "jodo"\npoll = { interval_s = 0.5 }\n', 1),
            encoding="utf-8",
        )
        daemon = start_daemon(config, env=vendor_env())
        daemon.wait_for("daemon.ready")
        base = daemon.base_url
        drop_csv(tmp_path / "inbox", "leads.csv", leads_csv(0, 3))
        daemon.wait_for("sink.throttle.hold", sink="jodo")
        wait_until(lambda: bool(httpx.get(f"{base}/readyz").json()["warnings"]))
        ready = httpx.get(f"{base}/readyz")
        m = samples(httpx.get(f"{base}/metrics").text)
        page = httpx.get(f"{base}/status").text
        daemon.wait_for("sink.poll.held", sink="jodo")

        def status_says() -> bool:
            done = run_cli("status", "-c", str(config), env=vendor_env())
            return "jodo: throttled until" in done.stdout

        wait_until(status_says)
        status = run_cli("status", "-c", str(config), env=vendor_env())
        as_json = run_cli("status", "--json", "-c", str(config), env=vendor_env())
        assert daemon.stop() == 0

    assert ready.status_code == 200, ready.text  # degraded, not down
    [warning] = ready.json()["warnings"]
    assert warning.startswith("jodo: throttled until "), warning
    assert "the dialer asked to wait 10 min (HTTP 429, Retry-After)" in warning
    sink = (("sink", "jodo"),)
    assert m[("syncd_sink_state", (("sink", "jodo"), ("state", "throttled")))] == 1
    assert 0 < m[("syncd_sink_throttled_seconds", sink)] <= 600
    assert m.get(("syncd_sink_poll_failures_total", sink), 0) == 0
    assert "throttled until" in page
    [line] = [ln for ln in status.stdout.splitlines() if ln.startswith("jodo: ")]
    assert "HTTP 429, Retry-After" in line and "3 leads pending" in line, line
    throttled = json.loads(as_json.stdout)["sinks"]["jodo"]["throttled"]
    assert "HTTP 429, Retry-After" in throttled["reason"] and throttled["until"] > 0
    assert not [e for e in daemon.events if e["event"] == "sink.poll.failed"]
    assert all(e["level"] == "info" for e in daemon.events if e["event"] == "sink.poll.held")


async def test_a_run_the_dialers_hold_outlasts_says_the_dialer_asked_to_wait_not_unreachable(
    tmp_path: Path,
) -> None:
    # The note read the hold again a moment later, found it shorter than the wait it was
    # given, and said "dialer unreachable (it keeps failing)" of a dialer that answered.
    sim = JodoSimulator(faults=Faults(rate_429=1.0, retry_after="86400"))
    with running(create_app(sim)) as url:
        config = write_config(tmp_path, [jodo_sink(url)])
        drop_csv(tmp_path / "inbox", "a.csv", export(3))
        summary = await run_engine(settings_for(config), deadline_s=10)

    counts = summary.sinks["jodo"]
    assert counts.pending == 3
    assert "the dialer asked to wait 24 h (HTTP 429, Retry-After)" in str(counts.waiting)
    assert "unreachable" not in str(counts.waiting), counts.waiting
    said = " ".join(summary.poll_failed.values())
    assert said.startswith("throttled until ") and "not polled this run" in said, said


async def test_a_keepalive_the_dialers_hold_keeps_back_is_not_a_failed_ping(
    tmp_path: Path,
) -> None:
    clock = FakeClock(time.time())
    sim = AmeyoSimulator(
        users={"syncd": AMEYO_PASSWORD}, dialing=False, ping_interval_ms=100, clock=clock
    )
    with running(create_app_ameyo(sim)) as url:
        config = write_config(tmp_path, [ameyo_sink(url, retry_max_s=0.2)])
        settings = settings_for(config)
        store = SqliteStore(settings.state.path, clock)
        await store.open()
        engine = Engine(settings, store, clock=clock)
        try:
            await engine.open()
            sim.faults.set(HOLD)
            with capture_logs() as logs:
                for _ in range(3):  # the first is answered 429, the others held back
                    clock.advance(0.1)
                    await engine.keepalive("ameyo")
            throttled = engine.sinks.throttled("ameyo")
        finally:
            await close(engine)

    assert throttled is not None  # said as the sink's state (and by sink.throttle.hold)
    assert not named(logs, "sink.session.ping.failed"), logs  # the dialer asked to wait
    assert engine.health.failure("keepalive:ameyo") is None
