"""A lead whose number changes, at a dialer that keeps the old one: syncd says so until told.

Ameyo upserts a customer by ``phone1`` and its API has no delete; Jodo upserting by
number (``updateparam = "mobilenumber"``) closes a record only with
``dispositions.on_delete``. At either, a renumbered lead goes in as a second record and
the one under its old number stays dialable, rung for someone who may no longer hold
that number. syncd cannot remove it; it raises an alert instead: `syncd status` names
the sink, the lead's key and what to do (never the number), the `--once` run exits 1
as it does for a withdrawal the dialer refuses, and both stay so, run after run, until
someone has removed the old record by hand and says so with `syncd ack`.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncd.simulators.jodo.api import JodoSimulator, create_app
from syncd.simulators.server import running
from syncd.sinks.ameyo.ledger import Delivered
from syncd.sinks.ameyo.sink import left_behind
from tests.conftest import daemon_config, drop_csv, run_cli
from tests.support.quirks import (
    JODO_BY_NUMBER_UNCLOSED,
    SINK,
    VENDORS,
    Vendor,
    crm_leads,
    env,
    export,
    once,
    served,
    write_config,
)
from tests.test_daemon import HEADER, leads_csv, wait_until
from tests.test_health import samples

RENUMBERED = "L0002"


def syncd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, "-c", str(config), env=env(), timeout=60)


@pytest.mark.parametrize(
    "vendor",
    [
        pytest.param(VENDORS["ameyo"], id="ameyo"),
        pytest.param(JODO_BY_NUMBER_UNCLOSED, id="jodo_by_number_without_on_delete"),
    ],
)
def test_an_old_number_the_dialer_keeps_is_an_alert_until_acknowledged(
    tmp_path: Path, vendor: Vendor
) -> None:
    crm = crm_leads(4)
    old = next(c for c in crm if c.key == RENUMBERED)
    later = [replace(c, phone="+919840000002") if c is old else c for c in crm]
    with served(vendor, {}) as (sim, url, _clock):
        config = write_config(tmp_path, vendor, url)
        drop_csv(tmp_path / "inbox", "monday.csv", export(crm))
        first = once(config)
        drop_csv(tmp_path / "inbox", "tuesday.csv", export(later))
        renumbered = once(config)
        held = sim.holdings()["open"]
        status = syncd(config, "status")
        said = json.loads(syncd(config, "status", "--json").stdout)
        again = once(config)  # cron's next run: nothing new, the old record still there
        still = json.loads(syncd(config, "status", "--json").stdout)
        ack = syncd(config, "ack", "--sink", SINK, "--key", RENUMBERED)
        after = once(config)
        cleared = json.loads(syncd(config, "status", "--json").stdout)

    assert first.returncode == 0, first.stderr[-2000:]
    # The fact: the dialer holds the lead under its old number as well as its new one.
    under = sorted(n[-10:] for r in held if r["key"] == RENUMBERED for n in r["numbers"])
    assert under == sorted([old.phone[-10:], "9840000002"]), held
    # What the engineer sees: the sink, the key, what to do; never the number.
    assert renumbered.returncode == 1, renumbered.stderr[-2000:]
    assert status.returncode == 0, status.stderr
    assert "ALERT" in status.stdout and RENUMBERED in status.stdout, status.stdout
    assert "by hand" in status.stdout and "syncd ack" in status.stdout, status.stdout
    assert old.phone[-10:] not in status.stdout + json.dumps(said)
    alerts = said["numbers_left"]
    assert [(a["sink"], a["key"]) for a in alerts] == [(SINK, RENUMBERED)], alerts
    assert "by hand" in alerts[0]["action"], alerts
    # The run's log says it at warning level, with the key and without the number.
    assert "sink.number.left" in renumbered.stderr and RENUMBERED in renumbered.stderr
    assert old.phone[-10:] not in renumbered.stderr
    # Kept across runs until acknowledged: a --once run from cron keeps exiting 1.
    assert again.returncode == 1, again.stderr[-2000:]
    assert [a["key"] for a in still["numbers_left"]] == [RENUMBERED]
    assert ack.returncode == 0, ack.stderr
    assert RENUMBERED in ack.stdout
    assert cleared["numbers_left"] == []
    assert after.returncode == 0, after.stderr[-2000:]


def test_a_lead_renumbered_twice_before_the_ack_keeps_both_old_records_in_its_alert(
    tmp_path: Path,
) -> None:
    """Ameyo keeps a customer per former phone1: the alert names each one left open, so
    removing what it says and acknowledging leaves none dialable."""
    vendor = VENDORS["ameyo"]
    crm = crm_leads(3)
    numbers = ["+919840000002", "+919840000003"]
    with served(vendor, {}) as (sim, url, _clock):
        config = write_config(tmp_path, vendor, url)
        drop_csv(tmp_path / "inbox", "monday.csv", export(crm))
        once(config)
        for day, number in zip(("tuesday", "wednesday"), numbers, strict=True):
            moved = [replace(c, phone=number) if c.key == RENUMBERED else c for c in crm]
            drop_csv(tmp_path / "inbox", f"{day}.csv", export(moved))
            once(config)
        held = sim.holdings()["open"]
        said = json.loads(syncd(config, "status", "--json").stdout)

    # the lead under each of its three numbers
    assert len({n for r in held if r["key"] == RENUMBERED for n in r["numbers"]}) == 3, held
    [alert] = said["numbers_left"]
    named = sorted(set(re.findall(r"customer (\w+)", alert["action"])))
    assert len(named) == 2, alert  # the customers of both former numbers


def test_acknowledging_a_lead_without_an_alert_says_so(tmp_path: Path) -> None:
    with served(VENDORS["ameyo"], {}) as (_sim, url, _clock):
        config = write_config(tmp_path, VENDORS["ameyo"], url)
        drop_csv(tmp_path / "inbox", "monday.csv", export(crm_leads(2)))
        assert once(config).returncode == 0
    ack = syncd(config, "ack", "--sink", SINK, "--key", "L0000")
    unknown = syncd(config, "ack", "--sink", "nowhere", "--all")

    assert ack.returncode == 1 and "no alert" in ack.stdout, (ack.stdout, ack.stderr)
    assert unknown.returncode == 2, (unknown.stdout, unknown.stderr)


def test_the_daemon_says_it_on_readyz_and_in_the_metrics_without_the_number(
    tmp_path: Path, start_daemon: Any
) -> None:
    """/readyz and /metrics may be read without a token: the key and a count, no number."""
    sim = JodoSimulator()
    with running(create_app(sim)) as url:
        config = daemon_config(tmp_path, url)
        text = config.read_text(encoding="utf-8")
        config.write_text(text.replace('"crmuniquefield"', '"mobilenumber"'), encoding="utf-8")
        daemon = start_daemon(config)
        daemon.wait_for("daemon.ready")
        drop_csv(tmp_path / "inbox", "a.csv", leads_csv(0, 2))
        wait_until(lambda: len(sim.received()) == 2, message=lambda: daemon.events[-10:])
        drop_csv(tmp_path / "inbox", "b.csv", HEADER + "L00001,9845099999,Asha,Rao,,\n")
        daemon.wait_for("sink.number.left", sink="jodo")
        base = daemon.base_url
        wait_until(lambda: bool(httpx.get(f"{base}/readyz").json()["warnings"]))
        ready = httpx.get(f"{base}/readyz")
        metrics = httpx.get(f"{base}/metrics").text
        assert daemon.stop() == 0

    assert ready.status_code == 200  # the leads flow; the old record is what to fix
    [warning] = ready.json()["warnings"]
    assert warning.startswith("jodo: the dialer still holds lead L00001 under a former"), warning
    assert "by hand" in warning and "syncd ack --sink jodo" in warning
    assert samples(metrics)[("syncd_numbers_left_dialable", (("sink", "jodo"),))] == 1
    assert "9845000001" not in ready.text + metrics  # the old number


OLD = Delivered(customer="17823", record="d1", call_at=None, phone1="+919820000002", validity=None)


@pytest.mark.parametrize(
    ("record", "left"),
    [
        ({"phone1": "+919820000002"}, None),  # the same number: the same customer, updated
        ({"phone1": "+919840000002"}, OLD),  # a second customer; the first stays
        # still theirs, as an alternate: the first customer rings them a second time
        ({"phone1": "+919840000002", "phone2": "+919820000002"}, OLD),
        ({"phone1": "+919840000002", "phonetype": "+919820000002"}, OLD),  # not a phone column
    ],
)
def test_ameyo_leaves_the_customer_of_a_former_phone1_that_is_no_longer_the_leads(
    record: dict[str, str], left: Delivered | None
) -> None:
    assert left_behind(OLD, record) == left
    assert left_behind(None, record) is None  # never delivered: nothing left


async def test_an_ack_takes_a_key_as_readyz_shows_it_and_lists_say_how_many_are_left_out(
    tmp_path: Path,
) -> None:
    """Keys that look like numbers are hashed on /readyz: `syncd ack` takes that form. A
    list cut at 20 says how many more stand, so `ack --all` clears nothing unseen."""
    from syncd.core.model import PushResult
    from syncd.core.reasons import shown_key
    from syncd.run import numbers_left
    from syncd.state import open_store

    store = await open_store(str(tmp_path / "state.db"))
    try:
        keys = [f"+91982000{i:04d}" for i in range(25)]
        found = [replace(PushResult.delivered(k), left_open="remove it by hand") for k in keys]
        await numbers_left.record(store, "jodo", found, 1.0)
        shown = await numbers_left.standing(store, "jodo")
        total = (await numbers_left.counts(store, ["jodo"]))["jodo"]
        more = numbers_left.more_line("jodo", len(shown), total)
        cleared = await numbers_left.acknowledge(store, "jodo", [shown_key(keys[3])])
        left = (await numbers_left.counts(store, ["jodo"]))["jodo"]
    finally:
        await store.close()

    assert (len(shown), total) == (numbers_left.SHOWN, 25)
    assert more is not None and "and 5 more" in more and "syncd status --json" in more
    assert numbers_left.more_line("jodo", 25, 25) is None
    assert shown_key(keys[3]).startswith("sha256:")
    assert cleared == [keys[3]] and left == 24
