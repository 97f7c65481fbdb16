"""The webhook source: a web form's POST reaches the dialer without waiting for a tick.

The daemon runs as a process (`syncd run`), the dialer is the Jodo simulator on
loopback, and the sender is plain httpx: what a CRM or a form backend would do.
Every test configures a push tick of 300 s, so a lead that arrives within the
tests' deadlines was pushed because its commit woke the push.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncd.core.signing import sign
from syncd.simulators.faults import Faults
from tests.conftest import Simulated, cli_env, run_cli
from tests.support.configs import daemon_head, jodo_sink, route
from tests.support.flood import half_sent, open_files
from tests.support.stores import drop_schema, new_schema, pg_url
from tests.test_daemon import wait_until

SECRET = "whsec-form-0123456789"
DEADLINE_S = 60.0  # far below the 300 s push tick: only a wake-up delivers within it

SOURCE = """
[[sources]]
name = "form"
kind = "webhook"
listen = "127.0.0.1:0"
secret = "env:TEST_WEBHOOK_SECRET"
max_body_bytes = {max_body_bytes}
max_backlog = {max_backlog}
retry_after_s = 7

"""

ROUTE = route(
    "form", "jodo", key="id", phone="phone", first_name="first", last_name="last", email="email"
)


def config(
    tmp_path: Path,
    url: str,
    *,
    max_body_bytes: int = 65536,
    max_backlog: int = 10000,
    bearer: bool = False,
    body_timeout_s: float = 10,
) -> Path:
    path = tmp_path / "syncd.toml"
    source = SOURCE.format(max_body_bytes=max_body_bytes, max_backlog=max_backlog)
    text = (
        daemon_head(tmp_path / "state" / "state.db")
        + source.replace("max_backlog = ", f"body_timeout_s = {body_timeout_s}\nmax_backlog = ", 1)
        + jodo_sink(url)
        + ROUTE
    )
    if bearer:
        text = text.replace("secret = ", "token = ", 1)
    path.write_text(text, encoding="utf-8")
    return path


def env() -> dict[str, str]:
    return cli_env(TEST_WEBHOOK_SECRET=SECRET)


def lead(key: str, phone: str = "9845012345", **extra: Any) -> dict[str, Any]:
    return {"id": key, "phone": phone, "first": "Asha", "last": "Rao", **extra}


def signed(body: bytes, stamp: int | None = None) -> dict[str, str]:
    """Return the headers a sender adds: the same scheme as syncd's webhook writeback."""
    when = str(int(time.time()) if stamp is None else stamp)
    return {
        "Content-Type": "application/json",
        "X-Syncd-Timestamp": when,
        "X-Syncd-Signature": sign(SECRET.encode(), when, body),
    }


class Form:
    """The sender: posts JSON to the daemon's webhook address."""

    def __init__(self, daemon: Any) -> None:
        port = daemon.wait_for("webhook.listening", source="form")["port"]
        self.url = f"http://127.0.0.1:{port}/leads"
        self.http = httpx.Client(timeout=30)

    def post(self, document: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        body = json.dumps(document).encode()
        return self.http.post(self.url, content=body, headers=headers or signed(body))

    def raw(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return self.http.post(self.url, content=body, headers=headers)


@pytest.fixture
def started(start_daemon: Any) -> Iterator[Callable[[Path], tuple[Any, Form]]]:
    """Start `syncd run` with a config and return it with a sender posting to it."""
    forms: list[Form] = []

    def start(path: Path) -> tuple[Any, Form]:
        daemon = start_daemon(path, env())
        daemon.wait_for("daemon.ready")
        forms.append(Form(daemon))
        return daemon, forms[-1]

    yield start
    for form in forms:
        form.http.close()


def delivered(jodo: Simulated, *keys: str) -> bool:
    got = jodo.sim.received()
    return all(k in got for k in keys)


def test_a_single_posted_lead_is_answered_202_and_pushed_at_once(
    tmp_path: Path, jodo: Simulated, started: Any
) -> None:
    daemon, form = started(config(tmp_path, jodo.url))
    # the phone library is loaded before the daemon is ready, not by the first POST
    events = [e["event"] for e in daemon.events]
    assert events.index("phones.backend") < events.index("daemon.ready")

    answer = form.post(lead("W1"))

    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == [0]
    assert answer.json()["refused"] == []
    wait_until(lambda: delivered(jodo, "W1"), DEADLINE_S, lambda: daemon.events[-15:])
    assert jodo.sim.records()[-1]["fname"] == "Asha"
    assert daemon.stop() == 0


def test_half_sent_requests_past_the_file_limit_leave_a_sender_its_way_in(
    tmp_path: Path, jodo: Simulated, start_daemon: Any
) -> None:
    # issue 29: the webhook port holds the process's files as the health port does
    daemon = start_daemon(config(tmp_path, jodo.url), env(), preexec=open_files(256))
    daemon.wait_for("daemon.ready")
    form = Form(daemon)
    port = int(daemon.wait_for("webhook.listening", source="form")["port"])
    with half_sent(port, 400, b"POST /leads HTTP/1.1\r\nHost: crm.example\r\nX-a: ") as flood:
        assert len(flood) > 256
        answer = form.post(lead("W1"))
        wait_until(lambda: delivered(jodo, "W1"), DEADLINE_S, lambda: daemon.events[-15:])
    form.http.close()
    assert answer.status_code == 202, answer.text
    # authenticated, and a JSON reply: still nothing a browser may frame, sniff or keep
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["content-security-policy"].startswith("default-src 'none'")
    assert daemon.stop() == 0
    assert len([e for e in daemon.events if e.get("event") == "(text)"]) < 10
    full = [e for e in daemon.events if e.get("event") == "webhook.connections.full"]
    assert full and full[0]["port"] == "form"


def test_a_batch_is_committed_whole_and_every_lead_reaches_the_dialer_once(
    tmp_path: Path, jodo: Simulated, started: Any
) -> None:
    daemon, form = started(config(tmp_path, jodo.url))
    batch = [lead(f"B{i:03d}", f"98450{i:05d}") for i in range(30)]

    answer = form.post(batch)

    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == list(range(30))
    keys = [f"B{i:03d}" for i in range(30)]
    wait_until(lambda: delivered(jodo, *keys), DEADLINE_S, lambda: daemon.events[-15:])
    assert set(jodo.sim.received().values()) == {1}
    assert jodo.sim.requests["ImportProcessData"] == 1  # one commit, claimed as one batch
    assert daemon.stop() == 0


def test_bad_rows_are_refused_by_row_and_field_and_the_good_rows_of_the_batch_delivered(
    tmp_path: Path, jodo: Simulated, started: Any
) -> None:
    daemon, form = started(config(tmp_path, jodo.url))
    batch = [
        lead("G1"),
        lead("X1", phone="12ab"),  # not a phone number
        lead("", phone="9845012399"),  # no key
        lead("X3", first={"nested": "object"}),  # not a flat value
        "not an object",
        lead("G2", phone="9845012398"),
    ]

    answer = form.post(batch)

    assert answer.status_code == 400, answer.text
    reply = answer.json()
    assert reply["accepted"] == [0, 5]
    refused = {(r["row"], r["field"]) for r in reply["refused"]}
    assert refused == {(1, "phone"), (2, "id"), (3, "first"), (4, None)}
    assert "12ab" not in answer.text  # reasons name fields, never quote the values
    wait_until(lambda: delivered(jodo, "G1", "G2"), DEADLINE_S, lambda: daemon.events[-15:])
    assert not {"X1", "X3"} & set(jodo.sim.received())
    logged = json.dumps(daemon.events)
    assert "12ab" not in logged and "Asha" not in logged  # no lead data in the log
    status = run_cli("status", "--json", "-c", str(tmp_path / "syncd.toml"), env=env())
    assert status.returncode == 0, status.stderr
    kept = {(r["line"], r["sink"]) for r in json.loads(status.stdout)["rejects"]}
    assert kept == {(2, "jodo"), (3, "jodo"), (4, ""), (5, "")}  # the store keeps why, by line
    assert daemon.stop() == 0


def test_a_lone_surrogate_in_a_field_refuses_that_row_and_the_rest_is_delivered(
    tmp_path: Path, jodo: Simulated, started: Any
) -> None:
    """JSON may carry "\\ud800", half of a character no text can hold: the row is
    refused naming its field, the others go, the daemon goes on."""
    daemon, form = started(config(tmp_path, jodo.url))

    answer = form.post(
        [
            lead("S1", phone="9845012301"),
            lead("S2", phone="9845012302", first="Asha \ud800"),
            lead("S3", phone="9845012303"),
        ]
    )

    assert answer.status_code == 400, answer.text
    reply = answer.json()
    assert reply["accepted"] == [0, 2]
    assert {(r["row"], r["field"]) for r in reply["refused"]} == {(1, "first")}
    wait_until(lambda: delivered(jodo, "S1", "S3"), DEADLINE_S, lambda: daemon.events[-15:])
    assert "S2" not in set(jodo.sim.received())
    assert form.post(lead("S4", phone="9845012304")).status_code == 202  # and the next POST
    wait_until(lambda: delivered(jodo, "S4"), DEADLINE_S, lambda: daemon.events[-15:])
    assert daemon.stop() == 0
    # Kept with its key and what could be read of it, found as any refused row is
    cfg = str(tmp_path / "syncd.toml")
    listed = run_cli("rejects", "--source", "form", "-c", cfg, env=env())
    [row] = [line for line in listed.stdout.splitlines() if ",S2," in line]
    assert "first: holds half of a character" in row and "9845012302" in row, row
    explained = run_cli("explain", "S2", "-c", cfg, env=env())
    assert "holds half of a character" in explained.stdout, explained.stdout


def test_a_later_row_refused_before_mapping_still_supersedes_an_earlier_row_of_its_lead(
    tmp_path: Path, jodo: Simulated, started: Any
) -> None:
    """Last row wins within a POST whatever refused the later row: the earlier one is
    the lead as it was, not to be dialled (as when the later row's phone is invalid)."""
    daemon, form = started(config(tmp_path, jodo.url))

    answer = form.post(
        [
            lead("V1", phone="9845012321"),
            lead("V1", phone="9845012322", first="Asha \ud800"),
            lead("V2", phone="9845012323"),
        ]
    )

    assert answer.status_code == 400, answer.text
    reply = answer.json()
    assert reply["accepted"] == [2]
    refused = {r["row"]: r for r in reply["refused"]}
    assert set(refused) == {0, 1} and "superseded" in refused[0]["reason"], refused
    wait_until(lambda: delivered(jodo, "V2"), DEADLINE_S, lambda: daemon.events[-15:])
    assert "V1" not in set(jodo.sim.received())
    assert daemon.stop() == 0


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_key_holding_a_nul_refuses_its_row_on_either_store(
    tmp_path: Path, jodo: Simulated, start_daemon: Any, store: str
) -> None:
    """A NUL in a key (JSON's "\\u0000") is a key with a control character, refused by
    row; on PostgreSQL it reached the database's look-up, which took no NUL, and the
    whole POST was answered 500 "send them again"."""
    schema = new_schema()
    path = config(tmp_path, jodo.url)
    if store == "postgresql":
        state = f'[state]\nurl = "{pg_url()}"\nschema_name = "{schema}"\n'
        text = path.read_text(encoding="utf-8")
        path.write_text(re.sub(r'\[state\]\npath = "[^"]*"\n', lambda _: state, text), "utf-8")
    try:
        daemon = start_daemon(path, env())
        daemon.wait_for("daemon.ready", timeout=60)
        form = Form(daemon)
        answer = form.post([lead("Z1", phone="9845012311"), lead("Z2\u0000", phone="9845012312")])
        assert answer.status_code == 400, answer.text
        reply = answer.json()
        assert reply["accepted"] == [0]
        [refused] = reply["refused"]
        assert refused["row"] == 1 and "control character" in refused["reason"], refused
        wait_until(lambda: delivered(jodo, "Z1"), DEADLINE_S, lambda: daemon.events[-15:])
        assert daemon.stop() == 0
        form.http.close()
    finally:
        if store == "postgresql":
            asyncio.run(drop_schema(schema))


def test_unsigned_badly_signed_and_stale_requests_get_401_without_detail(
    tmp_path: Path, jodo: Simulated, started: Any
) -> None:
    daemon, form = started(config(tmp_path, jodo.url))
    body = json.dumps(lead("U1")).encode()
    stale = signed(body, stamp=int(time.time()) - 3600)
    forged = {**signed(body), "X-Syncd-Signature": "sha256=" + "0" * 64}

    answers = [
        form.raw(body, {"Content-Type": "application/json"}),
        form.raw(body, forged),
        form.raw(body, stale),
    ]

    assert [a.status_code for a in answers] == [401, 401, 401]
    assert all(a.json() == {"error": "unauthorized"} for a in answers)
    assert form.post(lead("U2")).status_code == 202
    wait_until(lambda: delivered(jodo, "U2"), DEADLINE_S, lambda: daemon.events[-15:])
    assert "U1" not in jodo.sim.received()
    metrics = httpx.get(f"{daemon.base_url}/metrics").text
    assert 'syncd_webhook_requests_total{source="form",status="401"} 3.0' in metrics
    assert SECRET not in metrics
    assert daemon.stop() == 0
    assert SECRET not in json.dumps(daemon.events)


def test_a_bearer_token_from_a_secret_lets_a_sender_in_and_a_wrong_one_gets_401(
    tmp_path: Path, jodo: Simulated, started: Any
) -> None:
    daemon, form = started(config(tmp_path, jodo.url, bearer=True))
    body = json.dumps(lead("T1")).encode()

    wrong = form.raw(body, {"Authorization": "Bearer not-the-token"})
    right = form.raw(body, {"Authorization": f"Bearer {SECRET}"})

    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == "Bearer"
    assert right.status_code == 202, right.text
    wait_until(lambda: delivered(jodo, "T1"), DEADLINE_S, lambda: daemon.events[-15:])
    assert daemon.stop() == 0


def test_a_replayed_or_retried_post_creates_no_second_lead(
    tmp_path: Path, jodo: Simulated, started: Any
) -> None:
    daemon, form = started(config(tmp_path, jodo.url))
    body = json.dumps(lead("R1")).encode()
    headers = signed(body)
    first = form.raw(body, headers)
    assert first.status_code == 202
    wait_until(lambda: delivered(jodo, "R1"), DEADLINE_S, lambda: daemon.events[-15:])

    replay = form.raw(body, headers)  # the very same request: same timestamp and signature
    again = json.dumps(lead("R1")).encode()
    retry = form.raw(again, signed(again, int(headers["X-Syncd-Timestamp"]) + 1))  # re-signed
    assert form.post(lead("R2", "9845012346")).status_code == 202  # pushed after the others
    wait_until(lambda: delivered(jodo, "R2"), DEADLINE_S, lambda: daemon.events[-15:])

    assert replay.status_code == 202
    assert replay.json()["replayed"] is True
    assert retry.status_code == 202
    assert retry.json()["replayed"] is False  # a new request: the content hash finds R1 unchanged
    assert jodo.sim.received()["R1"] == 1
    assert daemon.stop() == 0


def test_a_body_past_the_size_limit_gets_413_with_or_without_a_content_length(
    tmp_path: Path, jodo: Simulated, started: Any
) -> None:
    daemon, form = started(config(tmp_path, jodo.url, max_body_bytes=4096))
    big = json.dumps([lead(f"S{i:04d}") for i in range(200)]).encode()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    announced = form.raw(big, signed(big))
    streamed = form.http.post(form.url, content=chunks(), headers=signed(big))

    assert announced.status_code == 413
    assert streamed.status_code == 413
    assert not jodo.sim.received()
    assert daemon.stop() == 0


def test_a_backlog_past_the_bound_gets_429_with_retry_after(
    tmp_path: Path, jodo: Simulated, started: Any
) -> None:
    jodo.sim.faults.set(Faults(error_rate=1.0))  # the dialer fails: leads wait in the outbox
    daemon, form = started(config(tmp_path, jodo.url, max_backlog=2))

    assert form.post([lead("K1"), lead("K2", "9845012346")]).status_code == 202
    refused = form.post(lead("K3", "9845012347"))

    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "7"
    jodo.sim.faults.set(Faults())
    wait_until(lambda: delivered(jodo, "K1", "K2"), DEADLINE_S, lambda: daemon.events[-15:])
    assert "K3" not in jodo.sim.received()
    assert daemon.stop() == 0


def test_a_reload_opens_the_listener_again_with_the_new_configuration(
    tmp_path: Path, jodo: Simulated, started: Any
) -> None:
    daemon, form = started(config(tmp_path, jodo.url))
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for("config.reloaded")
    ports = [e["port"] for e in daemon.events if e.get("event") == "webhook.listening"]
    form.url = f"http://127.0.0.1:{ports[-1]}/leads"  # port 0: the new listener's own

    assert len(ports) == 2
    assert form.post(lead("H1")).status_code == 202
    wait_until(lambda: delivered(jodo, "H1"), DEADLINE_S, lambda: daemon.events[-15:])
    assert daemon.stop() == 0


def test_a_request_replayed_after_a_reload_is_still_a_replay_and_undoes_nothing(
    tmp_path: Path, jodo: Simulated, started: Any
) -> None:
    daemon, form = started(config(tmp_path, jodo.url))
    old = json.dumps(lead("RV1", first="Old")).encode()
    captured = signed(old)
    assert form.raw(old, captured).status_code == 202
    assert form.post(lead("RV1", first="New")).status_code == 202  # the lead changed
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for("config.reloaded")
    ports = [e["port"] for e in daemon.events if e.get("event") == "webhook.listening"]
    form.url = f"http://127.0.0.1:{ports[-1]}/leads"

    replay = form.raw(old, captured)  # the captured request, within the tolerance

    assert replay.status_code == 202 and replay.json()["replayed"] is True
    wait_until(lambda: delivered(jodo, "RV1"), DEADLINE_S, lambda: daemon.events[-15:])
    [record] = [r for r in jodo.sim.records("VoiceProcess") if r["leadnumber"] == "RV1"]
    assert "New" in map(str, record.values()) and "Old" not in map(str, record.values())
    assert daemon.stop() == 0


def test_only_post_to_the_path_is_served_and_a_trickled_body_gets_408(
    tmp_path: Path, jodo: Simulated, started: Any
) -> None:
    daemon, form = started(config(tmp_path, jodo.url, body_timeout_s=1))
    slash = form.http.post(form.url + "/", content=b"{}", follow_redirects=False)
    port = int(form.url.split(":")[2].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(b"POST /leads HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        answer = conn.recv(4096)  # the server answers, not the client's patience

    assert slash.status_code in (404, 405)  # never a 307 to another path
    assert answer.startswith(b"HTTP/1.1 408")
    assert daemon.stop() == 0


def test_kill_9_right_after_a_202_loses_nothing(
    tmp_path: Path, jodo: Simulated, started: Any
) -> None:
    jodo.sim.faults.set(Faults(error_rate=1.0))  # nothing can be delivered before the kill
    path = config(tmp_path, jodo.url)
    daemon, form = started(path)

    answer = form.post(lead("C1"))
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(10)

    assert answer.status_code == 202
    jodo.sim.faults.set(Faults())
    again, _ = started(path)
    wait_until(lambda: delivered(jodo, "C1"), DEADLINE_S, lambda: again.events[-15:])
    assert again.stop() == 0


def test_the_time_from_post_to_dialer_is_a_histogram_by_source_and_sink_and_its_p50_p99_are_shown(
    tmp_path: Path, jodo: Simulated, started: Any
) -> None:
    path = config(tmp_path, jodo.url)
    daemon, form = started(path)

    assert form.post([lead(f"L{i}", f"98450123{i:02d}") for i in range(5)]).status_code == 202
    wait_until(lambda: delivered(jodo, *(f"L{i}" for i in range(5))), DEADLINE_S)

    def scraped() -> str:
        return httpx.get(f"{daemon.base_url}/metrics", timeout=30).text

    count = 'syncd_lead_latency_seconds_count{sink="jodo",source="form"} 5.0'
    wait_until(lambda: count in scraped(), DEADLINE_S, lambda: daemon.events[-10:])
    metrics = scraped()
    # every one of them reached the dialer within the deadline it was waited for
    assert 'syncd_lead_latency_seconds_bucket{le="60.0",sink="jodo",source="form"} 5.0' in metrics
    status = run_cli("status", "--json", "-c", str(path), env=env())
    assert status.returncode == 0, status.stderr
    speed = json.loads(status.stdout)["speed_to_lead"]
    [jodo_speed] = [s for s in speed if s["sink"] == "jodo"]
    assert jodo_speed["leads"] == 5
    assert 0 <= jodo_speed["p50_s"] <= jodo_speed["p99_s"] <= DEADLINE_S
    text = run_cli("status", "-c", str(path), env=env()).stdout
    assert "speed to lead" in text and "p99" in text, text
    page = httpx.get(f"{daemon.base_url}/status", timeout=30).text
    assert "Speed to lead" in page and "p99" in page
    assert daemon.stop() == 0


def test_any_replica_takes_a_post_and_the_lead_reaches_the_dialer_once_at_once(
    tmp_path: Path, jodo: Simulated, start_daemon: Any
) -> None:
    schema = new_schema()
    path = config(tmp_path, jodo.url)
    state = f'[state]\nurl = "{pg_url()}"\nschema_name = "{schema}"\n'
    text = path.read_text(encoding="utf-8")
    path.write_text(re.sub(r'\[state\]\npath = "[^"]*"\n', lambda _: state, text), "utf-8")
    try:
        replicas = [start_daemon(path, env()) for _ in range(2)]
        for replica in replicas:
            replica.wait_for("daemon.ready", timeout=60)
        first, second = (Form(r) for r in replicas)

        retried = json.dumps([lead("R1")]).encode()
        headers = signed(retried)
        assert second.raw(retried, headers).status_code == 202
        wait_until(lambda: delivered(jodo, "R1"), DEADLINE_S, lambda: replicas[1].events[-10:])
        assert first.post([lead("R2", "9845012399")]).status_code == 202
        wait_until(lambda: delivered(jodo, "R2"), DEADLINE_S, lambda: replicas[0].events[-10:])

        # the sender's retry reaches the other replica: no second lead either way
        assert first.raw(retried, headers).status_code in (202, 409)
        assert first.post([lead("R3", "9845012398")]).status_code == 202
        wait_until(lambda: delivered(jodo, "R3"), DEADLINE_S, lambda: replicas[0].events[-10:])
        assert jodo.sim.received() == {"R1": 1, "R2": 1, "R3": 1}
        for replica in replicas:
            assert replica.stop() == 0
        first.http.close()
        second.http.close()
    finally:
        asyncio.run(drop_schema(schema))


def test_a_lead_posted_while_the_dialer_sits_on_another_request_goes_out_at_once(
    tmp_path: Path, jodo: Simulated, started: Any
) -> None:
    path = config(tmp_path, jodo.url)
    # the sink waits up to 200 s for an answer: only a push that does not wait on the
    # slow request delivers the second lead within the deadline. The stop at the end
    # cuts that request after a second's grace, not the default 10 s.
    text = path.read_text().replace("retry_base_s = 0.1", "timeout_s = 200\nretry_base_s = 0.1")
    path.write_text(text.replace("shutdown_grace_s = 10", "shutdown_grace_s = 1"), encoding="utf-8")
    daemon, form = started(path)
    httpx.post(
        f"{jodo.url}/_sim/quirks", json={"store_then_slow_s": 150, "store_then_slow_times": 1}
    ).raise_for_status()

    assert form.post(lead("S1")).status_code == 202
    wait_until(lambda: delivered(jodo, "S1"), DEADLINE_S)  # stored; its answer is 150 s away
    assert form.post(lead("S2", "9845012377")).status_code == 202

    wait_until(lambda: delivered(jodo, "S2"), DEADLINE_S, lambda: daemon.events[-10:])
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.proc.wait(60)


def test_concurrent_posts_are_committed_together_and_each_is_answered_after_its_commit(
    tmp_path: Path, jodo: Simulated, started: Any
) -> None:
    daemon, form = started(config(tmp_path, jodo.url))
    posts = 100
    bad = 7  # one POST whose lead is refused: it still gets its own answer

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=posts)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:

            async def one(i: int) -> httpx.Response:
                document = [lead(f"G{i:03d}", "12" if i == bad else f"98451{i:05d}")]
                body = json.dumps(document).encode()
                return await http.post(form.url, content=body, headers=signed(body))

            return await asyncio.gather(*(one(i) for i in range(posts)))

    answers = asyncio.run(burst())

    assert [a.status_code for i, a in enumerate(answers) if i != bad] == [202] * (posts - 1)
    assert answers[bad].status_code == 400
    assert answers[bad].json()["refused"][0]["field"] == "phone"
    keys = [f"G{i:03d}" for i in range(posts) if i != bad]
    wait_until(lambda: delivered(jodo, *keys), DEADLINE_S, lambda: daemon.events[-15:])
    # far fewer commits than POSTs: as the daemon counts them, and as the store saw them
    # (each commit is one run: its leads carry its run id)
    metrics = httpx.get(f"{daemon.base_url}/metrics", timeout=30).text
    counted = re.search(r'^syncd_webhook_commits_total\{source="form"\} (\S+)$', metrics, re.M)
    assert counted is not None, metrics
    commits = int(float(counted.group(1)))
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "state.db")) as db:
        [(runs,)] = db.execute(
            "SELECT count(DISTINCT run_id) FROM leads WHERE source = 'form'"
        ).fetchall()
    assert 1 <= runs <= commits <= posts // 4, (runs, commits)
    assert daemon.stop() == 0


def test_status_shows_a_webhook_sources_last_post_and_the_leads_it_took_and_refused(
    tmp_path: Path, jodo: Simulated, started: Any
) -> None:
    path = config(tmp_path, jodo.url)
    daemon, form = started(path)

    assert form.post([lead("P1"), lead("P2", "9845012346"), lead("P3", "12")]).status_code == 400
    assert form.post(lead("P4", "9845012347")).status_code == 202

    status = run_cli("status", "--json", "-c", str(path), env=env())
    assert status.returncode == 0, status.stderr
    [source] = [s for s in json.loads(status.stdout)["sources"] if s["name"] == "form"]
    assert source["posts"] == {"posts": 2, "accepted": 3, "refused": 1}
    assert time.time() - 600 < source["read_at"] <= time.time()  # the last POST's commit
    text = run_cli("status", "-c", str(path), env=env()).stdout
    assert "none yet" not in text and "cursor" not in text, text
    assert re.search(r"2 POSTs.*3 leads accepted.*1 refused", " ".join(text.split())), text
    page = httpx.get(f"{daemon.base_url}/status", timeout=30).text
    assert "none yet" not in page
    assert re.search(r"2 POSTs.*3 leads accepted.*1 refused", page), page
    assert daemon.stop() == 0
