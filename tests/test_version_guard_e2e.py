"""An older version of a lead never replaces a newer one (the route's `updated_at`).

A CRM that retries late sends a lead's 10:00 version after its 10:05 one; a CSV export
dropped again, or a SQL re-read, brings back a version syncd already replaced. With
`[routes.map] updated_at` naming the CRM's change time, such a row is not applied: it
is listed as superseded (a webhook's answer, the rejects) and the dialer keeps the
newer version. Through the daemon (a webhook POST) and `syncd run --once` (a CSV drop),
with the Jodo simulator as the dialer.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from tests.conftest import Simulated, drop_csv, jodo_config, run_cli
from tests.support.configs import daemon_head, jodo_sink, route
from tests.support.runs import once, rejects_file
from tests.test_daemon import wait_until
from tests.test_webhook_source import DEADLINE_S, SOURCE, Form, delivered, env, lead

OLDER = "superseded: an older version than the one syncd holds"

ROUTE = route(
    "form",
    "jodo",
    key="id",
    phone="phone",
    first_name="first",
    last_name="last",
    updated_at="updated",
)


def webhook_config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "syncd.toml"
    source = SOURCE.format(max_body_bytes=65536, max_backlog=10000)
    text = daemon_head(tmp_path / "state" / "state.db") + source + jodo_sink(url) + ROUTE
    path.write_text(text, encoding="utf-8")
    return path


def held(jodo: Simulated) -> dict[str, dict[str, Any]]:
    """Return what the dialer would ring, by the lead's key."""
    return {row["key"]: row for row in jodo.sim.holdings()["open"]}


def test_a_late_retry_of_an_older_version_is_answered_202_superseded_and_the_dialer_keeps_the_newer(
    tmp_path: Path, jodo: Simulated, start_daemon: Any
) -> None:
    config = webhook_config(tmp_path, jodo.url)
    daemon = start_daemon(config, env())
    daemon.wait_for("daemon.ready")
    form = Form(daemon)
    try:
        newer = form.post(lead("V1", first="Newer", updated="2026-12-04T10:05:00Z"))
        assert newer.status_code == 202, newer.text
        wait_until(lambda: delivered(jodo, "V1"), DEADLINE_S, lambda: daemon.events[-15:])

        # the same lead, as it was five minutes earlier (written in another zone)
        older = form.post(lead("V1", first="Older", updated="2026-12-04T15:30:00+05:30"))
        # pushed after anything the older version could have queued
        assert form.post(lead("V2", "9845012346")).status_code == 202
        wait_until(lambda: delivered(jodo, "V2"), DEADLINE_S, lambda: daemon.events[-15:])

        assert older.status_code == 202, older.text  # nothing to send again
        said = older.json()
        assert said["accepted"] == [0] and said["refused"] == []
        assert said["superseded"] == [
            {"row": 0, "field": "updated", "reason": OLDER, "sink": "jodo"}
        ]
        assert held(jodo)["V1"]["first_name"] == "Newer"
        assert jodo.sim.received()["V1"] == 1

        listed = run_cli("rejects", "--source", "form", "-c", str(config), env=env())
        assert listed.returncode == 0, listed.stderr
        assert f"{OLDER} (column 'updated': 2026-12-04T10:00:00+00:00" in listed.stdout

        # an equal version is applied as before; a newer one too
        same = form.post(lead("V1", first="Same", updated="2026-12-04T10:05:00+00:00"))
        assert same.status_code == 202 and "superseded" not in same.json(), same.text
        wait_until(lambda: held(jodo)["V1"]["first_name"] == "Same", DEADLINE_S)
        newest = form.post(lead("V1", first="Newest", updated="2026-12-04T10:06:00Z"))
        assert newest.status_code == 202, newest.text
        wait_until(lambda: held(jodo)["V1"]["first_name"] == "Newest", DEADLINE_S)

        # a version time syncd cannot read is refused, naming the field
        bad = form.post(lead("V3", "9845012347", updated="next tuesday"))
        assert bad.status_code == 400, bad.text
        refused = bad.json()["refused"]
        assert [(r["row"], r["field"]) for r in refused] == [(0, "updated")]
        assert "next tuesday" not in bad.text
    finally:
        form.http.close()
    assert daemon.stop() == 0


HEADER = "id,first,last,phone,email,callback,modified\n"


def versioned_config(tmp_path: Path, url: str) -> Path:
    path = jodo_config(tmp_path, url)
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace('call_at = "callback"\n', 'call_at = "callback"\nupdated_at = "modified"\n'),
        encoding="utf-8",
    )
    return path


def test_a_csv_dropped_again_with_an_older_version_leaves_the_dialer_with_the_newer(
    jodo: Simulated, tmp_path: Path
) -> None:
    config = versioned_config(tmp_path, jodo.url)
    drop_csv(
        tmp_path / "inbox",
        "day1.csv",
        HEADER
        + "K1,Newer,Rao,9820012345,,,2026-12-04 10:05:00\n"
        + "K2,Asha,Rao,9820012346,,,2026-12-04 10:05:00\n"
        + "K3,Ravi,Rao,9820012347,,,\n"
        + "K4,Bad,Time,9820012348,,,soon\n",
    )
    first = once(config)
    # an older export dropped again: K1 older, K2 as old but changed, K3 never versioned
    drop_csv(
        tmp_path / "inbox",
        "day0.csv",
        HEADER
        + "K1,Older,Rao,9820012345,,,2026-12-04 09:59:59.999999\n"
        + "K2,Asha,Changed,9820012346,,,2026-12-04 10:05:00\n"
        + "K3,Ravi,Older,9820012347,,,2026-12-01 08:00:00\n",
    )
    again = once(config)

    assert (first["new"], first["rejected"]) == (3, 1)
    assert "invalid date 'soon'" in rejects_file(tmp_path, "day1.csv")["K4"]
    assert "in column 'modified'" in rejects_file(tmp_path, "day1.csv")["K4"]
    assert (again["read"], again["changed"], again["rejected"]) == (3, 2, 1)
    assert again["older_versions"] == 1
    day0 = rejects_file(tmp_path, "day0.csv")
    assert set(day0) == {"K1"}
    assert day0["K1"] == (
        f"[jodo] {OLDER} (column 'modified': 2026-12-04T09:59:59.999999+00:00 is before "
        "2026-12-04T10:05:00+00:00)"
    )
    records = {r["leadnumber"]: r for r in jodo.sim.records()}
    assert records["K1"]["fname"] == "Newer"
    assert records["K2"]["lname"] == "Changed"
    assert records["K3"]["lname"] == "Older"  # no version held: applied as before
    assert jodo.sim.received()["K1"] == 1
    listed = run_cli("rejects", "-c", str(config))
    rows = list(csv.DictReader(io.StringIO(listed.stdout)))
    assert [(r["origin"], r["key"]) for r in rows if r["reason"].startswith(OLDER)] == [
        ("day0.csv", "K1")
    ]
