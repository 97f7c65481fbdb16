"""Keys that cannot be a lead's key: refused at the pull, from every kind of source.

A key holding a control character (a tab or CR a naive strip would remove, a bell
inside it) or one a spreadsheet would run as a formula (``=KEYF(1)``, ``@SUM(A1)``)
is refused with its reason, and never reaches a dialer: the CSV writeback would
defuse it (``'=KEYF(1)``), so the CRM could not match its outcome back, and a
spreadsheet export of the dialer's list would run it. What the dialer holds is
read from its simulator after the run.
"""

from __future__ import annotations

import csv
import io
import sqlite3
from pathlib import Path
from typing import Any

from tests.conftest import Simulated, drop_csv, jodo_config, run_cli
from tests.support.configs import jodo_sink
from tests.support.reliability import export
from tests.test_daemon import wait_until
from tests.test_webhook_source import DEADLINE_S, Form, delivered, env, lead
from tests.test_webhook_source import config as webhook_config

CONTROL_REASON = "key in column 'id' holds control characters (U+"
FORMULA_REASON = "key in column 'id' would run as a spreadsheet formula"


def held(jodo: Simulated) -> set[str]:
    """Return the keys the dialer holds."""
    return set(jodo.sim.received())


def refused_rows(config: Path) -> list[dict[str, str]]:
    """Return the rows `syncd rejects` lists."""
    listed = run_cli("rejects", "-c", str(config))
    assert listed.returncode == 0, listed.stderr
    return list(csv.DictReader(io.StringIO(listed.stdout)))


def test_a_key_holding_a_control_character_is_refused_and_never_reaches_the_dialer(
    tmp_path: Path, jodo: Simulated
) -> None:
    config = jodo_config(tmp_path, jodo.url)
    rows = [
        '"\t=X1",First,Last,9812345670,a@example.in,',  # a tab a naive strip would remove
        '"\r=X2",First,Last,9812345671,b@example.in,',  # a carriage return, likewise
        '"A\x07B",First,Last,9812345672,c@example.in,',  # a bell inside the key
        '"C\tD",First,Last,9812345673,d@example.in,',  # a tab inside the key
        '"CTL\u202eKEY5",First,Last,9812345675,f@example.in,',  # a right-to-left override
        '"Z\u200bW",First,Last,9812345676,g@example.in,',  # a zero-width space
        "OK1,First,Last,9812345674,e@example.in,",
    ]
    drop_csv(tmp_path / "inbox", "keys.csv", export(0, extra_rows=rows))

    result = run_cli("run", "--once", "-c", str(config))

    assert result.returncode == 0, result.stderr[-2000:]
    assert held(jodo) == {"OK1"}
    refused = refused_rows(config)
    assert len(refused) == 6  # lines count the file's lines: the quoted CR starts one
    for row in refused:
        assert row["origin"] == "keys.csv"
        assert row["reason"].startswith(CONTROL_REASON), row
        assert "=X" not in row["reason"] and "A\x07B" not in row["reason"]
        assert "KEY5" not in row["reason"]


def test_a_key_a_spreadsheet_would_run_is_refused_and_numbers_are_still_keys(
    tmp_path: Path, jodo: Simulated
) -> None:
    config = jodo_config(tmp_path, jodo.url)
    rows = [
        '"=KEYF(1)",First,Last,9812345670,a@example.in,',
        '"@SUM(A1)",First,Last,9812345671,b@example.in,',
        '"+cmd|calc",First,Last,9812345672,c@example.in,',
        '"-1+2",First,Last,9812345673,d@example.in,',
        '" =SPACED(1)",First,Last,9812345674,e@example.in,',  # a blank a strip removes
        '"\u00a0=HIDDEN(1)",First,Last,9812345675,f@example.in,',  # a no-break space
        "-12,First,Last,9812345676,g@example.in,",  # a signed number: no formula
        '"+91 98200 12345",First,Last,9812345677,h@example.in,',  # a phone-like key
        "OK1,First,Last,9812345678,i@example.in,",
    ]
    drop_csv(tmp_path / "inbox", "formulas.csv", export(0, extra_rows=rows))

    result = run_cli("run", "--once", "-c", str(config))

    assert result.returncode == 0, result.stderr[-2000:]
    assert held(jodo) == {"-12", "+91 98200 12345", "OK1"}
    refused = refused_rows(config)
    assert sorted(int(r["line"]) for r in refused) == [2, 3, 4, 5, 6, 7]
    for row in refused:
        assert row["origin"] == "formulas.csv"
        assert row["reason"].startswith(FORMULA_REASON), row
        assert "KEYF" not in row["reason"] and "SUM" not in row["reason"]


BAD_KEYS = ["\t=S1", "=S2(1)", "A\x07B", "@S4"]
GOOD_KEYS = ["S5", "-12"]


def test_a_sql_crm_key_follows_the_same_rule(tmp_path: Path, jodo: Simulated) -> None:
    crm = tmp_path / "crm.db"
    with sqlite3.connect(crm) as db:
        db.execute("CREATE TABLE leads (id TEXT PRIMARY KEY, phone TEXT, first TEXT)")
        db.executemany(
            "INSERT INTO leads VALUES (?, ?, 'Asha')",
            [(k, f"98120000{i:02d}") for i, k in enumerate(BAD_KEYS + GOOD_KEYS)],
        )
    config = tmp_path / "syncd.toml"
    config.write_text(
        f'[state]\npath = "{tmp_path / "state" / "state.db"}"\n\n'
        '[[sources]]\nname = "crm"\nkind = "sql"\n'
        f'url = "sqlite:///{crm}"\nquery = "SELECT * FROM leads"\nkey_column = "id"\n\n'
        + jodo_sink(jodo.url)
        + '\n[[routes]]\nsource = "crm"\nsink = "jodo"\ndefault_region = "IN"\n'
        '[routes.map]\nkey = "id"\nphone = "phone"\nfirst_name = "first"\n',
        encoding="utf-8",
    )

    result = run_cli("run", "--once", "-c", str(config))

    assert result.returncode == 0, result.stderr[-2000:]
    assert held(jodo) == set(GOOD_KEYS)
    reasons = sorted(r["reason"].split(" (")[0] for r in refused_rows(config))
    assert reasons == [CONTROL_REASON.split(" (")[0]] * 2 + [FORMULA_REASON] * 2, reasons


def test_a_posted_key_follows_the_same_rule(
    tmp_path: Path, jodo: Simulated, start_daemon: Any
) -> None:
    daemon = start_daemon(webhook_config(tmp_path, jodo.url), env())
    daemon.wait_for("daemon.ready")
    form = Form(daemon)
    batch = [lead(k, f"98450123{i:02d}") for i, k in enumerate(BAD_KEYS + GOOD_KEYS)]

    answer = form.post(batch)

    assert answer.status_code == 400, answer.text
    reply = answer.json()
    assert reply["accepted"] == [4, 5]
    assert {(r["row"], r["field"]) for r in reply["refused"]} == {(i, "id") for i in range(4)}
    assert "S2" not in answer.text and "S4" not in answer.text  # the key is not echoed
    wait_until(lambda: delivered(jodo, *GOOD_KEYS), DEADLINE_S, lambda: daemon.events[-15:])
    assert held(jodo) == set(GOOD_KEYS)
    form.http.close()
    assert daemon.stop() == 0
