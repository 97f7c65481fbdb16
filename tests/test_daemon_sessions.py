"""The daemon keeps a vendor session alive between pushes and logs out when it stops."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from syncd.simulators.ameyo.api import AmeyoSimulator, create_app
from syncd.simulators.server import running
from tests.conftest import cli_env, drop_csv
from tests.test_daemon import wait_until

CONFIG = """\
[state]
path = "{state}"

[log]
format = "json"

[health]
listen = "127.0.0.1:0"

[run]
shutdown_grace_s = 10

[[sources]]
name = "crm"
kind = "csv_drop"
inbox = "{inbox}"
schedule = {{ interval_s = 0.5 }}

[[sinks]]
name = "ameyo"
kind = "ameyo"
url = "{url}"
auth = {{ mode = "session", user_id = "syncd", password = "env:TEST_AMEYO_PASSWORD" }}
campaign_id = 1
lead_id = 1
timezone = "Asia/Kolkata"
dial_format = "national"
ping_interval_s = 0.3
retry_base_s = 0.1
retry_max_s = 0.5

[[routes]]
source = "crm"
sink = "ameyo"
default_region = "IN"
[routes.map]
key = "id"
phone = "phone"
first_name = "first"
"""


@pytest.fixture
def ameyo() -> Iterator[tuple[AmeyoSimulator, str]]:
    sim = AmeyoSimulator(timezone="Asia/Kolkata")
    with running(create_app(sim)) as url:
        yield sim, url


def test_the_session_is_pinged_on_schedule_counted_once_and_logged_out_on_stop(
    tmp_path: Path, ameyo: tuple[AmeyoSimulator, str], start_daemon
) -> None:
    sim, url = ameyo
    (tmp_path / "inbox").mkdir()
    config = tmp_path / "syncd.toml"
    config.write_text(
        CONFIG.format(state=tmp_path / "state" / "state.db", inbox=tmp_path / "inbox", url=url),
        encoding="utf-8",
    )
    daemon = start_daemon(config, env=cli_env(TEST_AMEYO_PASSWORD="secret"))
    daemon.wait_for("daemon.ready")
    drop_csv(tmp_path / "inbox", "leads.csv", "id,phone,first\nA1,98200 10001,Asha\n")

    wait_until(lambda: sim.uploads() != {} and sim.pings >= 3, message=lambda: daemon.events)
    metrics = httpx.get(f"{daemon.base_url}/metrics").text
    assert 'syncd_sink_session_logins_total{sink="ameyo"} 1.0' in metrics
    assert 'syncd_sink_leads_delivered_total{sink="ameyo"} 1.0' in metrics
    assert httpx.get(f"{daemon.base_url}/readyz").status_code == 200

    assert daemon.stop() == 0
    assert sim.counts["logouts"] == 1
    assert sim.logins == 1
