"""Jodo dispositions: a lead the CRM closes (or removes) is disposed so the dialer stops."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from syncd.core.model import Action, Lead
from syncd.simulators.jodo.api import DialPlan, DialResult, JodoSimulator
from syncd.sinks.jodo.config import JodoSinkConfig
from syncd.state.sqlite import SqliteStore
from tests.conftest import ROOT, cli_env, run_cli
from tests.support.jodo_outcomes import (
    canned,
    dialled,
    lead,
    make_sink,
    outcomes,
    push,
    records_by_phone,
    serve,
)

RULES = [
    {
        "field": "crm_status",
        "values": ["Not interested", "DNC"],
        "dispomasterid": 3,
        "disporeasonid": 7,
        "remarks": "DNC in the CRM",
    }
]
CLOSING = {"login": "alice", "rules": RULES}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "state.db")
    await s.open()
    yield s
    await s.close()


def busy_floor() -> JodoSimulator:
    """Return a simulator that dials every due record on every request, never reaching anyone."""
    plan = DialPlan(
        interval_s=0,
        retry_s=0,
        max_attempts=100,
        recording_delay_s=None,
        results=(DialResult("Busy"),),
    )
    return JodoSimulator(dial=plan, agents={"alice": 1})


def open_lead(n: int, status: str = "open") -> Lead:
    return lead(n, fields={"crm_status": status})


async def lead_row(store: SqliteStore, key: str) -> dict[str, Any]:
    history = await store.lead_history(key)
    row: dict[str, Any] = history["leads"][0]
    return row


async def test_a_lead_the_crm_closes_is_disposed_and_no_longer_dialled(
    store: SqliteStore,
) -> None:
    sim = busy_floor()
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store, dispositions=CLOSING)
        await push(sink, store, [open_lead(1), open_lead(2)])
        sim.advance()
        counts = await push(sink, store, [open_lead(2, "dnc")])
        sent = sim.last_body["saveDisposition"]
        attempts = {n: records_by_phone(sim)[dialled(n)]["attempts"] for n in (1, 2)}
        for _ in range(3):
            sim.advance()
        await sink.poll_outcomes()
        await sink.close()
    assert counts.delivered == 1
    assert sim.received() == {"L1": 1, "L2": 1}  # closing sent no ImportProcessData
    assert {k: sent[k] for k in ("login", "dispomasterid", "disporeasonid", "remarks")} == {
        "login": "alice",
        "dispomasterid": 3,
        "disporeasonid": 7,
        "remarks": "DNC in the CRM",
    }
    assert sent["contactvalue"] == dialled(2) and sent["media"] == "Voice Out"
    datetime.strptime(sent["selecteddatetime"], "%Y-%m-%d %H:%M:%S")
    held = records_by_phone(sim)
    assert held[dialled(2)]["attempts"] == attempts[2]  # no call since
    assert int(held[dialled(1)]["attempts"]) > int(attempts[1])  # the other one goes on
    got = await outcomes(store)
    assert (got["L2"]["status"], got["L2"]["disposition"]) == ("closed", "DNC in the CRM")
    history = await store.lead_history("L2")
    assert any(
        e["kind"] == "jodo.disposed" and "crm_status=dnc" in e["detail"] for e in history["events"]
    )


async def test_a_lead_closed_before_the_dialer_had_it_is_refused_and_never_sent(
    store: SqliteStore,
) -> None:
    sim = busy_floor()
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store, dispositions=CLOSING)
        counts = await push(sink, store, [open_lead(3, "Not Interested")])
        await sink.close()
    assert (counts.delivered, counts.refused) == (0, 1)
    assert sim.received() == {} and "saveDisposition" not in sim.requests
    row = await lead_row(store, "L3")
    assert row["state"] == "rejected"
    assert "closed in the CRM (crm_status=Not Interested)" in row["last_error"]


async def test_a_lead_the_crm_reopens_is_imported_and_dialled_again(store: SqliteStore) -> None:
    sim = busy_floor()
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store, dispositions=CLOSING)
        await push(sink, store, [open_lead(1)])
        await push(sink, store, [open_lead(1, "DNC")])
        closed_at = records_by_phone(sim)[dialled(1)]["attempts"]
        sim.advance()
        assert records_by_phone(sim)[dialled(1)]["attempts"] == closed_at
        await push(sink, store, [open_lead(1, "call again")])
        sim.advance()
        await sink.close()
    assert int(records_by_phone(sim)[dialled(1)]["attempts"]) > int(closed_at)


async def test_a_lead_removed_in_the_crm_is_disposed_when_on_delete_is_set(
    store: SqliteStore,
) -> None:
    sim = busy_floor()
    closing = {**CLOSING, "on_delete": {"dispomasterid": 9, "disporeasonid": 1}}
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store, dispositions=closing)
        await push(sink, store, [open_lead(1)])
        removed = Lead(key="L1", phone="", deleted=True)  # what a pull makes of a removed row
        counts = await push(sink, store, [removed], action=Action.DELETE)
        before = records_by_phone(sim)[dialled(1)]["attempts"]
        sim.advance()
        await sink.close()
    assert counts.delivered == 1
    assert sim.dispositions[-1] == {
        "contactvalue": dialled(1),  # the number the dialer holds, kept from the push
        "login": "alice",
        "ids": [9, 1],
        "remarks": "Removed from the CRM",
    }
    assert records_by_phone(sim)[dialled(1)]["attempts"] == before
    assert (await lead_row(store, "L1"))["state"] == "removed"


async def test_without_on_delete_a_removal_is_refused_with_a_reason(store: SqliteStore) -> None:
    sim = busy_floor()
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store, dispositions=CLOSING)
        await push(sink, store, [open_lead(1)])
        counts = await push(
            sink, store, [Lead(key="L1", phone="", deleted=True)], action=Action.DELETE
        )
        await sink.close()
    assert counts.refused == 1 and "saveDisposition" not in sim.requests
    assert (await lead_row(store, "L1"))["last_error"] == (
        "Jodo cannot remove a lead; it stays in the dialer"
    )


async def test_a_disposition_the_dialer_refuses_keeps_the_dialers_reason(
    store: SqliteStore,
) -> None:
    sim = busy_floor()
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store, dispositions={**CLOSING, "login": "nobody"})
        await push(sink, store, [open_lead(1)])
        counts = await push(sink, store, [open_lead(1, "DNC")])
        await sink.close()
    assert counts.refused == 1
    reason = (await lead_row(store, "L1"))["last_error"]
    assert "Invalid login" in reason and "reasonid 31" in reason


async def test_without_a_login_to_dispose_with_the_lead_is_refused(store: SqliteStore) -> None:
    sim = busy_floor()
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store, dispositions={"rules": RULES})
        await push(sink, store, [open_lead(1)])
        counts = await push(sink, store, [open_lead(1, "DNC")])
        await sink.close()
    assert counts.refused == 1 and "saveDisposition" not in sim.requests
    assert "needs a login" in (await lead_row(store, "L1"))["last_error"]


async def test_the_leads_own_agent_disposes_when_no_login_is_configured(
    store: SqliteStore,
) -> None:
    sim = busy_floor()
    with serve(sim) as jodo:
        sink = make_sink(jodo.url, store, dispositions={"rules": RULES})
        await push(sink, store, [lead(1, agent="alice", fields={"crm_status": "open"})])
        await push(sink, store, [lead(1, agent="alice", fields={"crm_status": "DNC"})])
        await sink.close()
    assert sim.dispositions[-1]["login"] == "alice"


DOC_OK = """{
"method":"saveDisposition",
 "statusdesc":"success",
"status":3,
"resdatetime":"2018-11-01 17:00:00"
 }"""
DOC_FAIL = """{
"method":"savedisposition",
"reasonid":31,
"statusdesc":"fail",
 "status":4,
 "resdatetime":"2018-11-01 17:00:00"
}"""


@pytest.mark.parametrize(("reply", "kind"), [(DOC_OK, "delivered"), (DOC_FAIL, "rejected")])
async def test_the_documents_save_disposition_replies_are_read(
    store: SqliteStore, reply: str, kind: str
) -> None:
    from syncd.core.model import QueuedLead
    from syncd.sinks.jodo.dispositions import closing_rule

    with canned({"saveDisposition": reply}) as url:
        sink = make_sink(url, store, dispositions=CLOSING)
        queued = QueuedLead("jodo", "L1", "h", Action.UPSERT, open_lead(1, "DNC"), 1, dialled(1))
        disposal = closing_rule(queued.lead, sink.cfg.dispositions.rules)
        assert disposal is not None
        [result] = await sink.disposer.dispose([(queued, disposal)], {})
        await sink.close()
    assert result.kind.value == kind
    if kind == "rejected":
        assert result.reason == "saveDisposition refused: fail (reasonid 31)"


def test_on_delete_without_a_login_is_a_configuration_error() -> None:
    with pytest.raises(ValidationError, match=r"on_delete needs dispositions\.login"):
        JodoSinkConfig.model_validate(
            {
                "name": "j",
                "url": "http://x",
                "apikey": "k",
                "servicekey": "s",
                "dispositions": {"on_delete": {"dispomasterid": 1, "disporeasonid": 1}},
            }
        )


def test_the_example_config_with_every_jodo_setting_passes_check() -> None:
    result = run_cli(
        "check", "-c", str(ROOT / "config" / "jodo.example.toml"), env=cli_env(JODO_APIKEY="x")
    )
    assert result.returncode == 0, result.stderr


def test_the_example_configs_optional_jodo_blocks_are_valid_when_uncommented(
    tmp_path: Path,
) -> None:
    import re

    text = (ROOT / "config" / "jodo.example.toml").read_text(encoding="utf-8")
    uncommented = re.sub(r"(?m)^# (?=\[|[a-z_]+ = |\")", "", text)
    assert "[sinks.reallocation]" in uncommented.splitlines()
    path = tmp_path / "full.toml"
    path.write_text(uncommented, encoding="utf-8")
    # the secrets the uncommented lines name
    secrets = cli_env(JODO_APIKEY="x", SYNCD_STATUS_TOKEN="a-long-enough-status-token-0123")
    result = run_cli("check", "-c", str(path), env=secrets)
    assert result.returncode == 0, result.stderr
