"""/healthz, /readyz and /metrics of the running daemon, and the container's health probe."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from syncd.daemon.healthcheck import probe_url
from syncd.daemon.probes import parse_listen
from syncd.errors import ConfigError
from tests.conftest import ROOT, Simulated, cli_env, daemon_config, drop_csv, run_cli
from tests.test_daemon import leads_csv, wait_until


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Return every sample of a Prometheus exposition by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def set_apikeys(jodo: Simulated, *keys: str) -> None:
    with jodo.sim.lock:
        jodo.sim.apikeys = set(keys)


SINK_STATES = ("working", "held", "throttled", "unreachable", "config_refused", "internal_error")


def sink_state(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], sink: str) -> list[str]:
    """Return the states ``syncd_sink_state`` sets to 1 for ``sink`` (exactly one is)."""
    states = {
        state: m[("syncd_sink_state", (("sink", sink), ("state", state)))] for state in SINK_STATES
    }
    assert set(states.values()) <= {0.0, 1.0}, states
    return [state for state, value in states.items() if value == 1]


def test_readyz_is_503_while_the_dialer_refuses_the_api_key_and_200_once_fixed(
    tmp_path: Path, jodo: Simulated, start_daemon
) -> None:
    daemon = start_daemon(daemon_config(tmp_path, jodo.url))
    daemon.wait_for("daemon.ready")
    url = daemon.base_url
    assert httpx.get(f"{url}/readyz").status_code == 200

    set_apikeys(jodo, "someone_else")  # Jodo answers 1107: API key not found
    jodo.sim.echo_errors = True  # and quotes the whole request (the key too) in its answer
    drop_csv(tmp_path / "inbox", "leads.csv", leads_csv(0, 5))
    daemon.wait_for("sink.stopped", sink="jodo")
    refused = httpx.get(f"{url}/readyz")
    assert refused.status_code == 503
    [reason] = refused.json()["reasons"]
    # Anyone may ask /readyz: it names the kind of failure and the code, never the
    # dialer's own words (`syncd status` shows those, scrubbed, to whoever reads the store).
    assert reason.startswith("jodo: stopped since "), reason
    assert "refused the sink's settings or credentials, code 1107" in reason
    assert "API key not found" not in refused.text and "request was" not in refused.text
    jodo.sim.echo_errors = False
    assert httpx.get(f"{url}/healthz").status_code == 200  # alive, just not ready

    set_apikeys(jodo, "test_org")
    # sink_recheck_s = 1 in daemon_config: the sink is opened again and its leads go out.
    wait_until(lambda: len(jodo.sim.received()) == 5, message=lambda: daemon.events[-10:])
    wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 200)
    assert daemon.stop() == 0


def test_metrics_parse_and_count_what_the_dialer_received(
    tmp_path: Path, jodo: Simulated, start_daemon
) -> None:
    daemon = start_daemon(daemon_config(tmp_path, jodo.url, batch_size=10))
    daemon.wait_for("daemon.ready")
    bad_row = "X1,not-a-phone,Bad,Row,x@example.com,\n"
    drop_csv(tmp_path / "inbox", "leads.csv", leads_csv(0, 42) + bad_row)
    wait_until(lambda: len(jodo.sim.received()) == 42)

    def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return samples(httpx.get(f"{daemon.base_url}/metrics").text)

    sink, source = (("sink", "jodo"),), (("source", "crm"),)
    wait_until(lambda: scraped()[("syncd_sink_leads_delivered_total", sink)] == 42)
    m = scraped()
    received = sum(jodo.sim.received().values())
    assert m[("syncd_sink_leads_delivered_total", sink)] == received == 42
    assert m[("syncd_sink_leads_pushed_total", sink)] == 42
    assert m[("syncd_sink_leads_failed_total", sink)] == 0
    assert m[("syncd_source_rows_read_total", source)] == 43
    assert m[("syncd_source_rows_rejected_total", (("sink", "jodo"), ("source", "crm")))] == 1
    assert m[("syncd_sink_push_latency_seconds_count", sink)] == 5  # 42 leads in batches of 10
    assert m[("syncd_outbox_pending", sink)] == 0
    assert m[("syncd_outbox_oldest_pending_age_seconds", sink)] == 0
    assert m[("syncd_sink_up", sink)] == 1
    assert daemon.stop() == 0


def test_outbox_gauges_show_leads_waiting_for_a_stopped_sink(
    tmp_path: Path, jodo: Simulated, start_daemon
) -> None:
    set_apikeys(jodo, "someone_else")
    daemon = start_daemon(daemon_config(tmp_path, jodo.url, run={"sink_recheck_s": 600}))
    daemon.wait_for("daemon.ready")
    daemon.wait_for("sink.stopped", sink="jodo")
    drop_csv(tmp_path / "inbox", "leads.csv", leads_csv(0, 8))
    daemon.wait_for("source.pulled")

    m = samples(httpx.get(f"{daemon.base_url}/metrics").text)

    assert m[("syncd_outbox_pending", (("sink", "jodo"),))] == 8
    assert m[("syncd_outbox_oldest_pending_age_seconds", (("sink", "jodo"),))] > 0
    assert m[("syncd_sink_up", (("sink", "jodo"),))] == 0
    assert sink_state(m, "jodo") == ["config_refused"]
    assert daemon.stop() == 0


def test_a_refused_api_key_reads_config_refused_also_once_the_sink_is_opened_again(
    tmp_path: Path, jodo: Simulated, start_daemon
) -> None:
    set_apikeys(jodo, "someone_else")  # Jodo answers 1107: API key not found
    config = daemon_config(tmp_path, jodo.url)  # sink_recheck_s = 1
    daemon = start_daemon(config)
    daemon.wait_for("daemon.ready")
    url = daemon.base_url
    daemon.wait_for("sink.stopped", sink="jodo")  # the first outcome poll was refused
    m = samples(httpx.get(f"{url}/metrics").text)
    assert sink_state(m, "jodo") == ["config_refused"]
    assert m[("syncd_sink_up", (("sink", "jodo"),))] == 0

    # Re-checked: a Jodo sink opens without a request, so nothing has refused it again
    # yet (the next poll is a minute away). It has not answered either: still refused,
    # not "working" until the next refusal (which would reset an alert's `for`).
    daemon.wait_for("sink.reopened", sink="jodo")
    m = samples(httpx.get(f"{url}/metrics").text)
    assert sink_state(m, "jodo") == ["config_refused"]
    assert m[("syncd_sink_up", (("sink", "jodo"),))] == 0
    assert m[("syncd_sink_breaker_state", (("sink", "jodo"),))] == 0  # no outage either
    # `syncd status` and the page say the same as the metric: refused, re-opened, waiting
    # for the dialer's answer; never "working" (the CLI said so until the next refusal).
    said: list[str] = []

    def status_says_refused() -> bool:
        out = run_cli("status", "-c", str(config))
        assert out.returncode == 0, out.stderr
        line = next(x for x in out.stdout.splitlines() if x.startswith("jodo: "))
        said.append(line)
        assert not line.startswith("jodo: working"), said
        return "re-opened" in line

    wait_until(status_says_refused, message=lambda: said[-3:])
    assert "stopped since" in said[-1] and "API key" in said[-1], said[-1]
    page = httpx.get(f"{url}/status").text
    assert re.search(r'<td>jodo</td><td class="bad">stopped</td><td>[^<]*re-opened', page), page
    ready = httpx.get(f"{url}/readyz")
    assert ready.status_code == 503 and "re-opened" in ready.text, ready.text

    set_apikeys(jodo, "test_org")
    drop_csv(tmp_path / "inbox", "leads.csv", leads_csv(0, 3))
    wait_until(lambda: len(jodo.sim.received()) == 3, message=lambda: daemon.events[-10:])
    wait_until(lambda: sink_state(samples(httpx.get(f"{url}/metrics").text), "jodo") == ["working"])
    daemon.wait_for("sink.recovered", sink="jodo")  # said once, when the dialer answered
    assert daemon.stop() == 0
    said = [e["event"] for e in daemon.events if e.get("sink") == "jodo"]
    assert said.count("sink.recovered") == 1, said  # not at each re-open of a wrong key
    assert said.index("sink.recovered") > said.index("sink.reopened")


def test_a_dialer_that_stops_answering_reads_unreachable_through_every_half_open_probe(
    tmp_path: Path, start_daemon
) -> None:
    import socket

    from syncd.simulators.jodo.api import JodoSimulator, create_app
    from syncd.simulators.server import running

    # A dialer behind a dead network path: connections are taken (the kernel's backlog)
    # and never answered, so each half-open probe hangs until its timeout (0.5 s: each
    # try waits it out, and a scrape takes milliseconds) and a scrape sees the breaker
    # half-open (1) between open (2) spells.
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(128)
    port = hole.getsockname()[1]
    config = daemon_config(tmp_path, f"http://127.0.0.1:{port}", max_attempts=50)
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace("max_attempts = 50\n", "max_attempts = 50\ntimeout_s = 0.5\n"
                     "breaker_failures = 1\nbreaker_reset_s = 0.5\n"),
        encoding="utf-8",
    )  # fmt: skip
    daemon = start_daemon(config)
    daemon.wait_for("daemon.ready")
    url = daemon.base_url
    drop_csv(tmp_path / "inbox", "leads.csv", leads_csv(0, 1))
    daemon.wait_for("sink.breaker.opened", sink="jodo", timeout=60)

    breaker: list[float] = []

    def down_through_a_probe() -> bool:
        m = samples(httpx.get(f"{url}/metrics").text)
        state = m[("syncd_sink_breaker_state", (("sink", "jodo"),))]
        # On every scrape, the half-open ones included: unreachable, never refused.
        assert sink_state(m, "jodo") == ["unreachable"], (state, daemon.events[-5:])
        assert m[("syncd_sink_up", (("sink", "jodo"),))] == 0
        breaker.append(state)
        return 1.0 in breaker and 2.0 in breaker[breaker.index(1.0) :]

    try:
        wait_until(down_through_a_probe, timeout=60, message=lambda: (breaker, daemon.events[-10:]))
    finally:
        hole.close()

    sim = JodoSimulator()
    with running(create_app(sim), port=port):  # the dialer answers again
        wait_until(lambda: len(sim.received()) == 1, message=lambda: daemon.events[-10:])
        m = samples(httpx.get(f"{url}/metrics").text)
        assert sink_state(m, "jodo") == ["working"]
        assert m[("syncd_sink_up", (("sink", "jodo"),))] == 1
        assert daemon.stop() == 0


def test_the_container_health_probe_exits_0_against_a_live_daemon_and_1_without_one(
    tmp_path: Path, jodo: Simulated, start_daemon
) -> None:
    daemon = start_daemon(daemon_config(tmp_path, jodo.url))
    daemon.wait_for("daemon.ready")
    port = daemon.wait_for("health.listening")["port"]

    def probe(listen: str) -> int:
        env = {**cli_env(), "SYNCD_HEALTH__LISTEN": listen}
        cmd = [sys.executable, "-m", "syncd.daemon.healthcheck"]
        return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, timeout=30).returncode

    assert probe(f"0.0.0.0:{port}") == 0
    assert daemon.stop() == 0
    assert probe(f"0.0.0.0:{port}") == 1


def test_health_probe_reads_the_listen_address_from_the_config_file(tmp_path: Path) -> None:
    from syncd.daemon.healthcheck import listen_address

    config = tmp_path / "syncd.toml"
    config.write_text('[health]\nlisten = "0.0.0.0:9999"\n', encoding="utf-8")

    assert listen_address({"SYNCD_CONFIG": str(config)}) == "0.0.0.0:9999"
    assert (
        listen_address({"SYNCD_HEALTH__LISTEN": "[::]:1", "SYNCD_CONFIG": str(config)}) == "[::]:1"
    )
    assert listen_address({}) == "127.0.0.1:9310"
    assert probe_url("0.0.0.0:9999") == "http://127.0.0.1:9999/healthz"
    assert probe_url("[::]:9310", "/readyz") == "http://[::1]:9310/readyz"


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9310", ("127.0.0.1", 9310)),
        (":9310", ("0.0.0.0", 9310)),
        ("[::1]:9310", ("::1", 9310)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_health_listen_address_forms(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["9310", "host:port", "::1:9310", "127.0.0.1:70000"])
def test_a_bad_health_listen_address_is_a_config_error(listen: str) -> None:
    with pytest.raises(ConfigError, match=r"health\.listen"):
        parse_listen(listen)


def test_a_busy_health_port_fails_the_start_with_a_clear_message(
    tmp_path: Path, jodo: Simulated
) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = daemon_config(tmp_path, jodo.url)
        env = {**cli_env(), "SYNCD_HEALTH__LISTEN": f"127.0.0.1:{port}"}
        result = subprocess.run(
            [sys.executable, "-m", "syncd", "run", "-c", str(config)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"health.listen 127.0.0.1:{port}: cannot listen" in result.stderr
    assert "Traceback" not in result.stderr
    # The config logs JSON: the reason it ends is a JSON line a log shipper keeps.
    last = json.loads(result.stderr.strip().splitlines()[-1])
    assert (last["event"], last["exit_code"]) == ("syncd.fatal", 1)
    assert "cannot listen" in last["reason"]
    assert os.path.exists(tmp_path / "state" / "state.db")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_dialer_down_from_the_start_reads_unreachable_and_recovers_when_it_comes_back(
    tmp_path: Path, start_daemon
) -> None:
    from syncd.simulators.jodo.api import JodoSimulator, create_app
    from syncd.simulators.server import running

    port = free_port()  # nothing listens there yet: every push is a ConnectError
    config = daemon_config(tmp_path, f"http://127.0.0.1:{port}", max_attempts=50)
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace("max_attempts = 50\n", "max_attempts = 50\nbreaker_failures = 1\n"
                     "breaker_reset_s = 0.5\n"),
        encoding="utf-8",
    )  # fmt: skip
    daemon = start_daemon(config)
    daemon.wait_for("daemon.ready")
    url = daemon.base_url
    drop_csv(tmp_path / "inbox", "leads.csv", leads_csv(0, 1))
    daemon.wait_for("sink.breaker.opened", sink="jodo")

    down = httpx.get(f"{url}/readyz")
    assert down.status_code == 503
    [reason] = down.json()["reasons"]
    assert reason.startswith("jodo: dialer unreachable since ")
    assert "ConnectError" in reason and reason.endswith("1 lead waiting"), reason
    m = samples(httpx.get(f"{url}/metrics").text)
    assert m[("syncd_sink_up", (("sink", "jodo"),))] == 0

    sim = JodoSimulator()
    with running(create_app(sim), port=port):  # the dialer is back
        wait_until(lambda: len(sim.received()) == 1, message=lambda: daemon.events[-10:])
        wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 200)
        m = samples(httpx.get(f"{url}/metrics").text)
        assert m[("syncd_sink_up", (("sink", "jodo"),))] == 1
        assert daemon.stop() == 0


def test_a_dialer_clock_that_runs_late_is_a_warning_on_readyz_and_in_the_metrics(
    tmp_path: Path, start_daemon
) -> None:
    from syncd.simulators.jodo.api import JodoSimulator, create_app
    from syncd.simulators.server import running

    sim = JodoSimulator(clock_offset_s=-1800)  # the server's clock is half an hour late
    with running(create_app(sim)) as jodo_url:
        daemon = start_daemon(daemon_config(tmp_path, jodo_url))
        daemon.wait_for("daemon.ready")
        drop_csv(tmp_path / "inbox", "leads.csv", leads_csv(0, 1))
        daemon.wait_for("sink.clock.skew", sink="jodo")
        ready = httpx.get(f"{daemon.base_url}/readyz")
        m = samples(httpx.get(f"{daemon.base_url}/metrics").text)
        assert daemon.stop() == 0

    assert ready.status_code == 200  # leads still flow: polls follow the dialer's clock
    [warning] = ready.json()["warnings"]
    assert warning.startswith("jodo: the dialer's clock is 30 min behind ours"), warning
    assert "NTP" in warning
    assert m[("syncd_sink_warnings", (("sink", "jodo"),))] == 1
    assert -1802 <= m[("syncd_sink_clock_skew_seconds", (("sink", "jodo"),))] <= -1798


def test_a_stale_do_not_call_list_is_a_warning_on_readyz_and_in_the_metrics(
    tmp_path: Path, start_daemon
) -> None:
    from syncd.simulators.jodo.api import JodoSimulator, create_app
    from syncd.simulators.server import running

    lists = tmp_path / "dnc-inbox"
    drop_csv(lists, "ndnc-2026-01-01.csv", "number\n+919820012341\n")  # months old
    with running(create_app(JodoSimulator())) as jodo_url:
        config = daemon_config(tmp_path, jodo_url)
        with config.open("a", encoding="utf-8") as fh:
            fh.write(
                f'\n[[sources]]\nname = "ndnc"\nkind = "csv_drop"\ninbox = "{lists}"\n'
                'schedule = { interval_s = 0.5 }\n\n[[dnc_lists]]\nname = "ndnc"\n'
                'source = "ndnc"\ncolumn = "number"\ndefault_region = "IN"\n'
            )
        daemon = start_daemon(config)
        daemon.wait_for("dnc.list.stale", dnc_list="ndnc")
        url = daemon.base_url
        wait_until(lambda: bool(httpx.get(f"{url}/readyz").json()["warnings"]))
        ready = httpx.get(f"{url}/readyz")
        m = samples(httpx.get(f"{url}/metrics").text)
        assert daemon.stop() == 0

    assert ready.status_code == 200  # leads still flow: a warning, not strict
    [warning] = ready.json()["warnings"]
    assert warning.startswith("do-not-call list ndnc is "), warning
    assert "(ndnc-2026-01-01.csv, dated 2026-01-01; max_age_days = 31)" in warning
    assert m[("syncd_dnc_list_stale", (("list", "ndnc"),))] == 1
    assert m[("syncd_dnc_list_age_seconds", (("list", "ndnc"),))] > 31 * 86400
