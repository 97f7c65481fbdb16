"""Personal data only where it is needed (issue 29, point 1).

A person is planted in every CRM field of the source rows (a CSV drop and a SQL
table) and every dialer echoes the record it refuses (the `refuse_echoing` quirk of
all three simulators). After a sync through the daemon, the shared surfaces — the
status page, /readyz, /metrics and the info and warning log lines — show codes and
counts only: not the name, the e-mail, the number in any format, or a custom field.
`syncd explain` (read by whoever can read the store) still shows the full reason.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx

from syncd.simulators.ameyo.api import AmeyoSimulator
from syncd.simulators.ameyo.api import create_app as ameyo_app
from syncd.simulators.jodo.api import JodoSimulator
from syncd.simulators.jodo.api import create_app as jodo_app
from syncd.simulators.quirks import Quirks
from syncd.simulators.server import running
from syncd.simulators.ucontact.api import UContactSimulator
from syncd.simulators.ucontact.api import create_app as ucontact_app
from tests.conftest import drop_csv, run_cli
from tests.support.reliability import (
    AMEYO_PASSWORD,
    UCONTACT_PASSWORD,
    ameyo_sink,
    jodo_sink,
    route,
    vendor_env,
    wait_until,
    write_config,
)

FIRST, LAST = "Asha", "Sharma"
EMAIL = "asha.sharma@example.org"
E164, NATIONAL = "+919820012345", "09820012345"
CUSTOM = "Bandra Kurla flat 12"  # a custom field: an address
# What must not be found: each piece alone, and the number in every way it is written.
PLANTED = ("Asha", "Sharma", "asha.sharma", "example.org", "9820012345", "98200 12345", "Bandra")

HEADER = "id,first,last,phone,email,callback,city\n"
CSV_ROWS = [
    # valid leads: each dialer refuses them, echoing the record
    f"P1,{FIRST},{LAST},{E164},{EMAIL},,{CUSTOM}",
    f"P2,{FIRST},{LAST} ({EMAIL}),{NATIONAL},{EMAIL},,{CUSTOM}",
    # refused rows whose reasons quote their cells
    f"P3,{FIRST},{LAST},{FIRST} {LAST} {EMAIL},{EMAIL},,{CUSTOM}",  # not a phone
    f'P4,{FIRST},{LAST},98200 12345,{EMAIL},"{FIRST} {LAST}",{CUSTOM}',  # not a date
    f"P5,{FIRST},{LAST},98200 1234,{EMAIL},,{CUSTOM}",  # one digit short
    f",{FIRST},{LAST},{E164},{EMAIL},,{CUSTOM}",  # no key
    # a CRM keyed by e-mail address or by mobile number: the key is personal too
    f"{EMAIL},{FIRST},{LAST},{E164},{EMAIL},,{CUSTOM}",
    f"{E164},{FIRST},{LAST},{FIRST},{EMAIL},,{CUSTOM}",  # not a phone
]


def crm_database(path: Path) -> None:
    """Write a SQL CRM holding the same person, valid and invalid."""
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE leads (id TEXT PRIMARY KEY, first TEXT, last TEXT, phone TEXT,"
            " email TEXT, callback TEXT, city TEXT)"
        )
        db.executemany(
            "INSERT INTO leads VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                ("S1", FIRST, LAST, NATIONAL, EMAIL, None, CUSTOM),
                ("S2", FIRST, LAST, f"{FIRST} {LAST}", EMAIL, None, CUSTOM),
                ("S3", FIRST, LAST, E164, EMAIL, f"{FIRST} {LAST} {EMAIL}", CUSTOM),
                (NATIONAL, FIRST, LAST, EMAIL, EMAIL, None, CUSTOM),  # keyed by number
            ],
        )


def sql_source(db: Path) -> str:
    return (
        '[[sources]]\nname = "crmsql"\nkind = "sql"\n'
        f'url = "sqlite:///{db}"\nquery = "SELECT * FROM leads"\nkey_column = "id"\n'
        "schedule = { interval_s = 0.5 }\n"
    )


def found(text: str) -> list[str]:
    """Return which planted pieces ``text`` holds (case-insensitive)."""
    low = text.lower()
    return [p for p in PLANTED if p.lower() in low]


def shared_logs(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the log lines an info- or warning-level log shipper keeps."""
    return [e for e in events if e.get("level") in ("info", "warning")]


def test_a_person_echoed_by_every_dialer_and_planted_in_every_crm_field_is_on_no_shared_surface(
    tmp_path: Path, start_daemon: Any
) -> None:
    echo = Quirks(refuse_echoing=LAST)
    jodo = JodoSimulator(quirks=Quirks(refuse_echoing=LAST), echo_errors=True)
    ameyo = AmeyoSimulator(users={"syncd": AMEYO_PASSWORD}, dialing=False, quirks=echo)
    ucontact = UContactSimulator(
        users={"api": UCONTACT_PASSWORD}, dial_delay_s=3600.0, quirks=Quirks(refuse_echoing=LAST)
    )
    # a dialer that refuses the key and echoes the whole request (the records with it)
    revoked = JodoSimulator(quirks=Quirks(revoked_s=3600.0), echo_errors=True)
    crm = tmp_path / "crm.db"
    crm_database(crm)
    with (
        running(jodo_app(jodo)) as jodo_url,
        running(ameyo_app(ameyo)) as ameyo_url,
        running(ucontact_app(ucontact)) as ucontact_url,
        running(jodo_app(revoked)) as revoked_url,
    ):
        sinks = [
            jodo_sink(jodo_url, max_attempts=2),
            ameyo_sink(ameyo_url, max_attempts=2),
            {**_ucontact_sink(ucontact_url), "max_attempts": 2},
            jodo_sink(revoked_url, name="revoked"),
        ]
        fields = {"map": {"fields": {"city": "city"}}}
        routes = [route(s["name"], **dict(fields)) for s in sinks]
        routes += [route(s["name"], source="crmsql", **dict(fields)) for s in sinks]
        config = write_config(
            tmp_path,
            sinks,
            routes=routes,
            source={"schedule": {"interval_s": 0.5}},
            run={"sink_recheck_s": 1.0, "shutdown_grace_s": 10.0},
            extra_toml='[health]\nlisten = "127.0.0.1:0"\nsnapshot_s = 0.5\n\n' + sql_source(crm),
        )
        daemon = start_daemon(config, env=vendor_env())
        daemon.wait_for("daemon.ready")
        drop_csv(tmp_path / "inbox", "leads.csv", HEADER + "\n".join(CSV_ROWS) + "\n")
        store = tmp_path / "state" / "state.db"
        seen: list[tuple[str, str, int]] = []

        def settled() -> bool:
            # every valid lead refused by every dialer for good, the bad rows of both sources kept
            nonlocal seen
            seen = _states(store)
            done = {sink for sink, state, _ in seen if state in ("rejected", "failed")}
            busy = [s for s in seen if s[1] in ("pending", "inflight", "held") and s[0] in done]
            return done == {"jodo", "ameyo", "ucontact"} and not busy and _rejects(store) >= 2

        assert wait_until(settled, timeout=180), seen
        stopped = daemon.wait_for("sink.stopped", timeout=60, sink="revoked")
        assert "API key not found" in str(stopped["reason"])  # an error line: the whole reason
        base = daemon.base_url
        # a snapshot taken after the refusals: the page's store part is a few seconds old
        page = ""

        def page_shows_refusals() -> bool:
            nonlocal page
            page = httpx.get(f"{base}/status", timeout=30).text
            return "leads.csv" in page and "refused" in page.lower() and "stopped" in page

        assert wait_until(page_shows_refusals, timeout=60), page
        readyz = httpx.get(f"{base}/readyz", timeout=30).text
        metrics = httpx.get(f"{base}/metrics", timeout=30).text
        assert daemon.stop() == 0
        explained = run_cli("explain", "P1", "-c", str(config), env=vendor_env())

    assert found(page) == [], _around(page)
    assert found(readyz) == [], readyz
    assert "revoked: stopped since" in readyz and "code 1107" in readyz
    assert "API key not found" not in readyz + page  # the dialer's words stay in the log
    assert found(metrics) == [], _around(metrics)
    leaking = [e for e in shared_logs(daemon.events) if found(repr(e))]
    # the stopped dialer on the page: syncd's words for it, not the request it echoed
    assert "the dialer refused the sink&#x27;s settings or credentials, code 1107" in page
    assert leaking == [], sorted({e["event"] for e in leaking}) + leaking[:3]
    # The page still says what happened, by code and count.
    assert "leads.csv" in page
    # each dialer's refusal by the code its package reads off the dialer's words
    assert "refused by the dialer: invalid record (INVALID_RECORD_FAILED)" in page  # Ameyo
    assert "refused by the dialer: duplicate in dialer" in page  # Jodo
    # uContact's refusal in words ("ERROR: Duplicate customer …") is a refusal of that
    # lead (its batch split until it stood alone), not an answer in doubt given up on
    assert "unreadable answer" not in page and "gave up after its attempts" not in page
    assert "invalid phone" in page and "invalid date" in page
    # explain, for whoever can read the store, has the dialers' whole words
    assert explained.returncode == 0, explained.stderr
    assert "Sharma" in explained.stdout and EMAIL in explained.stdout


def _states(store: Path) -> list[tuple[str, str, int]]:
    """Return (sink, state, leads) as the store holds them now."""
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as db:
            rows = db.execute("SELECT sink, state, COUNT(*) FROM leads GROUP BY sink, state")
            return [(str(a), str(b), int(c)) for a, b, c in rows]
    except sqlite3.Error:  # not made yet, or busy: ask again
        return []


def _rejects(store: Path) -> int:
    """Return how many sources have refused rows kept."""
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute("SELECT COUNT(DISTINCT source) FROM rejects").fetchone()[0])
    except sqlite3.Error:
        return 0


def _around(text: str) -> str:
    """Return the bits of ``text`` around each planted piece (for a failure's message)."""
    low = text.lower()
    spots = []
    for piece in found(text):
        i = low.index(piece.lower())
        spots.append(text[max(0, i - 120) : i + 80])
    return "\n---\n".join(spots)


def _ucontact_sink(url: str) -> dict[str, Any]:
    from tests.support.reliability import ucontact_sink

    return ucontact_sink(url)


def test_a_dialer_refusal_that_rewords_the_customer_is_logged_by_its_code_at_warning(
    tmp_path: Path,
) -> None:
    # A real Jodo formats its own refusal: the customer in capitals, the number spaced,
    # the e-mail spelled out. Nothing of it matches what syncd sent, so cutting the values
    # sent out of it leaves the person whole. At info and warning only a code may say why.
    reworded = (
        "Customer ASHA SHARMA with mobile 98200 12345 and mail ASHA.SHARMA AT EXAMPLE DOT"
        " ORG already exists in list Bandra-West"
    )
    jodo = JodoSimulator(quirks=Quirks(failed_keys=["P1", "P2"], failed_reason=reworded))
    with running(jodo_app(jodo)) as url:
        config = write_config(tmp_path, [jodo_sink(url)])
        rows = [
            f"P1,Asha,Sharma,{E164},{EMAIL},,",  # refused alone
            f"P2,Asha,Sharma,{NATIONAL},{EMAIL},,",  # refused beside a stored lead
            "Q3,Ravi,Kumar,9820099001,ravi@x.in,,",
        ]
        drop_csv(tmp_path / "inbox", "leads.csv", HEADER + "\n".join(rows) + "\n")
        result = run_cli("run", "--once", "-c", str(config), env=vendor_env())
        explained = run_cli("explain", "P1", "-c", str(config), env=vendor_env())
    assert result.returncode in (0, 1), result.stderr
    held = {r["key"] for r in jodo.holdings()["open"]}
    assert held == {"Q3"}  # the dialer refused the two, as the test means it to
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    leaking = [e for e in shared_logs(events) if found(repr(e))]
    assert leaking == [], leaking[:3]
    assert any(e.get("event") == "jodo.push.records_failed" for e in events)
    # whoever reads the store still has the dialer's words
    assert "ASHA SHARMA" in explained.stdout
