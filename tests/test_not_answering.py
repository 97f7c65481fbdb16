"""A dialer that stops answering shows within seconds, not when its breaker opens
(issue 30: "no silent failure").

A dialer that takes connections and never answers (a hung process, a dead network
path), or refuses them (its process gone), used to read ``working`` on /readyz, in
``syncd_sink_state`` and in `syncd status` until the breaker opened, minutes later
with the default settings. Now each says "dialer not answering since …" once the
dialer has answered nothing since: two requests unanswered (a read timeout, a refused
or reset connection), or one that waited its whole read timeout; and it clears with
the dialer's first answer. A dialer that answers with an error (a 500, a vendor code)
is answering: that stays the breaker's business.

Every test sets ``breaker_failures`` out of reach: what they see is not the breaker.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from syncd.simulators.faults import Faults
from syncd.simulators.jodo.api import JodoSimulator, create_app
from syncd.simulators.server import running
from tests.conftest import daemon_config, drop_csv, run_cli
from tests.test_daemon import leads_csv, wait_until
from tests.test_health import free_port, samples, sink_state


def hung_dialer_config(tmp_path: Path, url: str) -> Path:
    """A Jodo sink with a 1 s read timeout, polled often, whose breaker never opens."""
    config = daemon_config(tmp_path, url, max_attempts=50)
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace("max_attempts = 50\n", "max_attempts = 50\ntimeout_s = 1.0\n"
                     "breaker_failures = 1000\npoll = { interval_s = 0.5 }\n"),
        encoding="utf-8",
    )  # fmt: skip
    return config


@contextmanager
def hole() -> Iterator[int]:
    """Yield a loopback port that takes connections (the kernel's backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def not_answering(url: str) -> str | None:
    """Return /readyz's reason that the Jodo dialer is not answering, if it says so."""
    ready = httpx.get(f"{url}/readyz")
    said = [r for r in ready.json()["reasons"] if r.startswith("jodo: dialer not answering")]
    if said:
        assert ready.status_code == 503, ready.text
    return said[0] if said else None


def status_line(config: Path) -> str:
    done = run_cli("status", "-c", str(config))
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("jodo: ")]
    assert lines, done.stdout
    return lines[0]  # its state; a later one may list its queues


def named(events: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("event") == event and e.get("sink") == "jodo"]


def test_a_dialer_that_takes_connections_and_never_answers_reads_not_answering_until_it_does(
    tmp_path: Path, start_daemon
) -> None:
    with hole() as port:
        config = hung_dialer_config(tmp_path, f"http://127.0.0.1:{port}")
        daemon = start_daemon(config)
        daemon.wait_for("daemon.ready")
        url = daemon.base_url
        drop_csv(tmp_path / "inbox", "leads.csv", leads_csv(0, 3))
        wait_until(lambda: not_answering(url) is not None, message=lambda: daemon.events[-8:])
        reason = str(not_answering(url))
        m = samples(httpx.get(f"{url}/metrics").text)
        wait_until(lambda: "not answering" in status_line(config))
        line = status_line(config)
        warned = daemon.wait_for("sink.not_answering", sink="jodo")

    assert re.search(r"\(\d+ requests? unanswered: [^)]*read timeout", reason), reason
    assert "leads wait, nothing is lost" in reason, reason
    assert sink_state(m, "jodo") == ["unreachable"]
    assert m[("syncd_sink_up", (("sink", "jodo"),))] == 0
    assert m[("syncd_sink_breaker_state", (("sink", "jodo"),))] == 0  # not the breaker
    assert m[("syncd_sink_unanswered_requests", (("sink", "jodo"),))] >= 1
    assert "dialer not answering since" in line and "read timeout" in line, line
    assert warned["level"] == "warning"

    sim = JodoSimulator()
    with running(create_app(sim), port=port):  # it answers again
        wait_until(lambda: not_answering(url) is None, message=lambda: daemon.events[-8:])
        wait_until(lambda: sink_state(samples(httpx.get(f"{url}/metrics").text), "jodo")
                   == ["working"])  # fmt: skip
        daemon.wait_for("sink.answering", sink="jodo")
        m = samples(httpx.get(f"{url}/metrics").text)
        assert m[("syncd_sink_unanswered_requests", (("sink", "jodo"),))] == 0
        wait_until(lambda: "not answering" not in status_line(config))
        assert daemon.stop() == 0
    assert len(named(daemon.events, "sink.not_answering")) == 1  # said once, not per request


def test_a_dialer_that_refuses_connections_reads_not_answering_before_its_breaker_opens(
    tmp_path: Path, start_daemon
) -> None:
    port = free_port()  # nothing listens there: every request is refused
    config = hung_dialer_config(tmp_path, f"http://127.0.0.1:{port}")
    daemon = start_daemon(config)
    daemon.wait_for("daemon.ready")
    url = daemon.base_url
    drop_csv(tmp_path / "inbox", "leads.csv", leads_csv(0, 1))
    wait_until(lambda: not_answering(url) is not None, message=lambda: daemon.events[-8:])
    reason = str(not_answering(url))
    m = samples(httpx.get(f"{url}/metrics").text)
    assert daemon.stop() == 0

    assert "requests unanswered: connection refused" in reason, reason
    assert sink_state(m, "jodo") == ["unreachable"]
    assert m[("syncd_sink_breaker_state", (("sink", "jodo"),))] == 0


def test_a_dialer_that_answers_with_errors_is_not_said_to_be_not_answering(
    tmp_path: Path, start_daemon
) -> None:
    sim = JodoSimulator(faults=Faults(error_rate=1.0))  # every answer a 500, 502 or 503
    with running(create_app(sim)) as url:
        config = hung_dialer_config(tmp_path, url)
        daemon = start_daemon(config)
        daemon.wait_for("daemon.ready")
        base = daemon.base_url
        drop_csv(tmp_path / "inbox", "leads.csv", leads_csv(0, 1))
        # a few answers in a row, more than the two unanswered requests that would say it
        wait_until(lambda: sim.faults.injected.get("5xx", 0) >= 6,
                   message=lambda: daemon.events[-8:])  # fmt: skip
        ready = httpx.get(f"{base}/readyz").json()
        assert daemon.stop() == 0

    assert not [r for r in ready["reasons"] if "not answering" in r], ready
    assert not named(daemon.events, "sink.not_answering")


async def test_the_outage_reads_since_the_dialer_stopped_answering_once_the_breaker_opens(
    tmp_path: Path,
) -> None:
    from syncd.run.engine import Engine
    from syncd.run.sinks import clock_text
    from syncd.state.sqlite import SqliteStore
    from tests.support.clock import FakeClock
    from tests.support.reliability import jodo_sink, settings_for, write_config

    clock = FakeClock(1_800_000_000.0)
    settings = settings_for(write_config(tmp_path, [jodo_sink("http://127.0.0.1:9")]))
    store = SqliteStore(settings.state.path, clock)
    await store.open()
    engine = Engine(settings, store, clock=clock)
    await engine.open()  # a Jodo sink opens without a request
    try:
        guard = engine.sinks["jodo"].sink.guard
        began = clock.time()
        for _ in range(2):  # refused twice: not answering
            guard.limits.answers.ended(guard.limits.answers.sent(30.0), "connection refused")
        said = engine.sinks.describe("jodo", public=True)
        assert said == (
            f"jodo: dialer not answering since {clock_text(began)} (2 requests unanswered: "
            "connection refused); leads wait, nothing is lost"
        )
        clock.advance(7)  # the pushes' in-call retries, then the breaker opens
        for _ in range(guard.breaker.failure_threshold):
            guard.breaker.record_failure("ConnectError talking to the dialer", "ConnectError")
        said = engine.sinks.describe("jodo", public=True)
        assert said == f"jodo: dialer unreachable since {clock_text(began)} (ConnectError)"
        assert engine.health_snapshot()["jodo"]["since"] == began
    finally:
        await engine.close()
        await store.close()
