"""Dispositions set in the CRM reach uContact once (api/DispositionCall), on the lead's
last call, and a dispositioned lead is not placed again."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest

from syncd.config import load_settings
from syncd.core.model import Lead
from syncd.sinks.ucontact.config import DispositionFields
from syncd.sinks.ucontact.dispositions import CrmDisposition, disposition_of
from tests.conftest import cli_env, drop_csv, run_cli
from tests.support.ucontact import CAMPAIGN, dialled, served, uy

CONFIG = """\
[state]
path = "{state}"
[log]
level = "info"
format = "json"
[[sources]]
name = "crm"
kind = "csv_drop"
inbox = "{inbox}"
settle_s = 0
[[sinks]]
name = "uc"
kind = "ucontact"
url = "{url}"
user = "api"
password = "env:TEST_UCONTACT_PASSWORD"
campaign = "Ventas->"
dial_format = "00"
server_timezone = "America/Montevideo"
cdr_delay_s = 0.2
retry_base_s = 0.1
retry_max_s = 0.5
backup_records_url = "{url}/backup"
[sinks.dispositions]
l1 = "result"
l2 = "reason"
comment = "notes"
schedule = "call_again"
[[routes]]
source = "crm"
sink = "uc"
default_region = "UY"
[routes.map]
key = "id"
phone = "phone"
first_name = "first"
email = "email"
[routes.map.fields]
result = "result"
reason = "reason"
notes = "notes"
call_again = "call_again"
"""
HEADER = "id,first,phone,email,result,reason,notes,call_again\n"


def export(rows: dict[str, str]) -> str:
    """Return the CRM export: leads A1…A3 (and any more), ``rows`` their disposition cells."""
    lines = [HEADER]
    for n, key in enumerate(["A1", "A2", "A3", *[k for k in rows if k not in ("A1", "A2", "A3")]]):
        cells = rows.get(key, ",,,")
        lines.append(f"{key},Ana,{uy(n + 1)},{key.lower()}@example.uy,{cells}\n")
    return "".join(lines)


def once(config: Path) -> subprocess.CompletedProcess[str]:
    result = run_cli(
        "run", "--once", "-c", str(config), env=cli_env(TEST_UCONTACT_PASSWORD="secret")
    )
    return result


def test_a_crm_disposition_reaches_the_call_once_and_the_lead_is_not_dialled_again(
    tmp_path: Path,
) -> None:
    with served(outcomes={"ANSWERED": 1.0}, timezone="America/Montevideo") as (sim, url):
        config = tmp_path / "syncd.toml"
        (tmp_path / "inbox").mkdir()
        config.write_text(
            CONFIG.format(state=tmp_path / "state.db", inbox=tmp_path / "inbox", url=url),
            encoding="utf-8",
        )
        drop_csv(tmp_path / "inbox", "day1.csv", export({}))
        assert once(config).returncode == 0
        assert sim.dial_now() == 3
        assert once(config).returncode == 0  # the calls' records come back: each has a guid
        uploads = len(sim.uploads_made())

        # The agents record what happened in the CRM; a new lead is closed before any call.
        drop_csv(
            tmp_path / "inbox",
            "day2.csv",
            export({
                "A1": "SALE,,paid by card,",
                "A2": "RESCHEDULE,busy,call after lunch,2026-12-24 14:00",
                "A4": "NOT INTERESTED,,,",
            }),
        )  # fmt: skip
        second = once(config)
        assert second.returncode == 0, second.stderr[-3000:] + second.stdout
        calls = {r["destination"]: r["guid"] for r in sim.records()}
        sent = sorted(sim.dispositions, key=lambda d: d["guid"] == calls[dialled(2)])
        assert [(d["guid"], d["l1"], d["comment"]) for d in sent] == [
            (calls[dialled(1)], "SALE", "paid by card"),
            (calls[dialled(2)], "RESCHEDULE", "call after lunch"),
        ]
        assert sent[1]["l2"] == "busy" and sent[1]["schedule"] == "2026-12-24 14:00:00"
        assert sent[0]["callerid"] == dialled(1) and sent[0]["campaign"] == CAMPAIGN
        assert [s["phone"] for s in sim.scheduled()] == [dialled(2)]  # uContact calls again
        assert len(sim.uploads_made()) == uploads  # A1 and A2 not placed again; A4 refused

        # The same export again, then one with only an e-mail changed: nothing more is sent.
        again = export(
            {
                "A1": "SALE,,paid by card,",
                "A2": "RESCHEDULE,busy,call after lunch,2026-12-24 14:00",
                "A4": "NOT INTERESTED,,,",
            }
        )
        drop_csv(tmp_path / "inbox", "day3.csv", again.replace("a1@example.uy", "ana@example.uy"))
        third = once(config)
        assert third.returncode == 0, third.stdout
        assert len(sim.dispositions) == 2 and len(sim.uploads_made()) == uploads

        explained = " ".join(run_cli("explain", "A4", "-c", str(config)).stdout.split())
    assert "dispositioned in the CRM (NOT INTERESTED) before uContact called it" in explained
    with sqlite3.connect(tmp_path / "state.db") as db:
        states = dict(db.execute("SELECT key, state FROM leads").fetchall())
    assert states["A1"] == states["A2"] == "delivered" and states["A4"] == "rejected"


def test_the_simulator_takes_the_documents_parameters_and_refuses_what_it_cannot_place() -> None:
    with served() as (sim, url):
        base = f"{url}/Integra/resources"
        token = httpx.post(f"{base}/auth/getUserToken", data={"user": "api", "password": "secret"})
        auth = {"Authorization": f"Basic {token.json()[-1]}"}
        call = sim.add_record(dialled(7), calldate="2026-12-01 10:00:00")

        def dispose(**form: str) -> str:
            return httpx.post(f"{base}/api/DispositionCall", data=form, headers=auth).text

        good = {"campaign": CAMPAIGN, "agent": "ana", "callerid": dialled(7), "guid": call["guid"]}
        assert dispose(**good, l1="SALE", l2="card", comment="ok") == "1"
        assert dispose(**{**good, "guid": "no-such-call"}, l1="SALE") == "0"
        assert dispose(**{**good, "campaign": "Otra->"}, l1="SALE") == "0"
        assert dispose(**good) == "0"  # no disposition
        assert dispose(**good, l1="RESCHEDULE", schedule="2026-12-24 14:00:00") == "1"
        assert dispose(**good, l1="RESCHEDULE", schedule="tomorrow") == "0"
    assert [(d["l1"], d["l2"]) for d in sim.dispositions] == [("SALE", "card"), ("RESCHEDULE", "")]
    assert [s["phone"] for s in sim.scheduled()] == [dialled(7)]


FIELDS = DispositionFields(l1="result", l2="reason", comment="notes", schedule="call_again")
CASES = [
    ({}, None),
    ({"result": "  "}, None),
    ({"result": "SALE", "notes": "x"}, CrmDisposition("SALE", comment="x")),
    ({"result": "reschedule", "call_again": "2026-12-24 14:00"},
     CrmDisposition("reschedule", schedule="2026-12-24 14:00:00")),
    ({"result": "RESCHEDULE", "call_again": "2026-12-24T16:00+00:00"},
     CrmDisposition("RESCHEDULE", schedule="2026-12-24 13:00:00")),  # Montevideo is UTC-3
]  # fmt: skip


@pytest.mark.parametrize(("fields", "expected"), CASES)
def test_which_disposition_a_lead_carries(fields: dict[str, str], expected: object) -> None:
    lead = Lead(key="A1", phone=uy(1), fields=fields)
    assert disposition_of(lead, FIELDS, "America/Montevideo") == expected


@pytest.mark.parametrize("when", ["", "next week"])
def test_a_reschedule_without_a_readable_time_is_refused(when: str) -> None:
    lead = Lead(key="A1", phone=uy(1), fields={"result": "RESCHEDULE", "call_again": when})
    with pytest.raises(ValueError, match="reschedule"):
        disposition_of(lead, FIELDS, "America/Montevideo")


def test_the_config_names_the_disposition_fields(tmp_path: Path) -> None:
    config = tmp_path / "syncd.toml"
    config.write_text(
        CONFIG.format(state=tmp_path / "s.db", inbox=tmp_path, url="http://127.0.0.1:9"),
        encoding="utf-8",
    )
    settings = load_settings(config, environ={"TEST_UCONTACT_PASSWORD": "x"})
    assert settings.sinks[0].dispositions.l1 == "result"  # type: ignore[attr-defined]
