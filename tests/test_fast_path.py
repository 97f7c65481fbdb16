"""The fast path changes nothing a user can see: the same dialer records, the same reasons.

Phone numbers may be validated by rphonenumbers (the Rust port of libphonenumber)
instead of phonenumbers, and lead texts are written by orjson instead of json. Both
are checked against the slow path here: byte for byte for the stored lead text (its
hash decides what is sent again), and as the dialer and `syncd rejects` see them
for every phone format the test suite uses.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import types
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.config import RouteConfig
from syncd.core import phones
from syncd.core.mapping import lead_to_json, normalize_rows
from syncd.core.model import Lead
from syncd.net.http import wire_json
from syncd.simulators.jodo.api import JodoSimulator, create_app
from syncd.simulators.server import running
from tests.conftest import drop_csv, run_cli
from tests.support.reliability import jodo_sink, route, vendor_env, write_config

rphonenumbers = pytest.importorskip("rphonenumbers")  # in the dev extra: present under CI

# Every written form of a number the suite feeds syncd, and the ones spreadsheets make.
PHONE_FORMS = [
    "(+91) 98200 12345", "+1 555 0100", "+12085550123", "+12125550100", "+18005550123",
    "+442071234567", "+598 98 344 484", "+59898344484", "+61212345678", "+61412345678",
    "+91 98200 12345", "+91 98200-12345", "+911234567890", "+912223456789", "+919999999999",
    "00442079460000", "0059800000000", "0059898344484", "0091-98200-12345", "00918452892308",
    "011919820012345", "02071234567", "022 2345 6789", "09820012345", "098344484", "099111111",
    "1234567890", "12345678901", "12345678901234567890123", "8123456789", "8123456789.0",
    "8.123456789E+09", "9.18123E+11", "919820012345", "98200 12345", "98200-12345 / 98200 54321",
    "9820012345;9820054321", "tel:+91-98200-12345", "+91 98200 12345 ext. 12", "1-800-FLOWERS",
    "९८२००१२३४५", "９８２００１２３４５", "", "N/A", "0", "+", "abc", "12", "+99912345",
    "+91 ", "00", "000123", "+0 123", "98200\u00a012345", "+91\t9820012345",
]  # fmt: skip
REGIONS = ["IN", "US", "GB", "UY", "AU"]


def route_for(region: str) -> RouteConfig:
    return RouteConfig.model_validate(
        {
            "source": "crm",
            "sink": "jodo",
            "default_region": region,
            "map": {"key": "id", "phone": "phone", "alt_phones": ["alt"], "first_name": "name"},
        }
    )


def mapped(backend: str, region: str) -> list[Any]:
    phones.use_backend(backend, [region])
    rows: list[tuple[int, list[str]]] = []
    for i, main in enumerate(PHONE_FORMS):  # each alone, and with another as alternate
        for alt in ("", PHONE_FORMS[i * 7 % len(PHONE_FORMS)]):
            rows.append((len(rows) + 2, [f"L{len(rows)}", main, alt, "Ана"]))
    try:
        header = ("id", "phone", "alt", "name")
        return normalize_rows(route_for(region).model_dump_json(), header, rows)
    finally:
        phones.use_backend("phonenumbers")


@pytest.mark.parametrize("region", REGIONS)
def test_the_fast_phone_library_maps_every_row_as_phonenumbers_does(region: str) -> None:
    slow, fast = mapped("phonenumbers", region), mapped("rphonenumbers", region)
    assert fast == slow
    assert any(row[4] for row in slow) and any(row[3] for row in slow)  # refused and mapped


leads = st.builds(
    Lead,
    key=st.text(min_size=1, max_size=8),
    phone=st.text(max_size=8),
    alt_phones=st.lists(st.text(max_size=4), max_size=2).map(tuple),
    first_name=st.text(max_size=12),
    last_name=st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
    email=st.text(max_size=8),
    agent=st.text(max_size=4),
    fields=st.dictionaries(st.text(max_size=6), st.text(max_size=10), max_size=3),
    zone=st.sampled_from(["", "Asia/Kolkata"]),
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(leads)
def test_a_lead_text_is_byte_for_byte_what_json_writes(lead: Lead) -> None:
    # Stored hashes were taken over json.dumps text: a different byte would re-send a lead.
    slow = json.dumps(lead.to_json(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert lead_to_json(lead) == slow


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.dictionaries(st.text(max_size=6), st.text(max_size=10) | st.integers(), max_size=4))
def test_a_request_body_reads_back_as_what_was_sent(body: dict[str, Any]) -> None:
    text = wire_json({"data": [body]})
    assert text.isascii()  # the form encoding's fast path
    assert json.loads(text) == {"data": [body]}


def test_auto_keeps_phonenumbers_when_the_fast_library_disagrees() -> None:
    # A build of the fast library with other metadata: it refuses a valid Indian mobile.
    def parse(text: str, region: str) -> Any:
        if text.endswith("12345"):
            raise rphonenumbers.NumberParseException(1, "not a number")
        return rphonenumbers.parse(text, region)

    other = types.ModuleType("rphonenumbers")
    vars(other).update({k: v for k, v in vars(rphonenumbers).items() if not k.startswith("__")})
    other.parse = parse  # type: ignore[attr-defined]
    differs = phones.disagreement(other, ("IN",))
    assert differs is not None and "region IN" in differs
    assert phones.disagreement(rphonenumbers, ("IN", "US", "GB", "UY")) is None


def test_check_says_which_library_validates_numbers(tmp_path: Path) -> None:
    config = write_config(tmp_path, [jodo_sink("http://127.0.0.1:9")])
    out = run_cli("check", "-c", str(config), env=vendor_env())
    assert out.returncode == 0, out.stderr
    assert "phone numbers validated by rphonenumbers" in out.stdout


def export() -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", "first", "last", "phone", "email", "callback"])
    for i, form in enumerate(PHONE_FORMS):
        writer.writerow([f"L{i}", "Ravi", "Kumar", form, f"r{i}@example.com", ""])
        writer.writerow([f"M{i}", "Ана", "Kumar", f"+1 {form}", "", "2026-12-24 10:00"])
    return buf.getvalue()


def synced(tmp_path: Path, backend: str) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]]]:
    """Return (records the dialer holds, refused rows with their reasons) after one run."""
    sim = JodoSimulator()
    with running(create_app(sim)) as url:
        # The sample repeats numbers on purpose: every record goes, one per lead.
        sinks = [jodo_sink(url, duplicates="allow")]
        config = write_config(
            tmp_path, sinks, routes=[route("jodo")], run={"phone_backend": backend}
        )
        drop_csv(tmp_path / "inbox", "leads.csv", export())
        result = run_cli("run", "--once", "-c", str(config), env=vendor_env())
        assert result.returncode in (0, 1), result.stderr
        assert f'"backend": "{backend}"' in result.stderr
        # What syncd sent, without the times of the run: when the simulator stored it,
        # and an ordinary lead's callDateTime (the push moment).
        held = [
            {k: v for k, v in r.items() if k != "storedatetime"}
            | ({"callDateTime": "now"} if "calltype" not in r else {})
            for r in sim.records()
        ]
        records = sorted(held, key=lambda r: str(r["leadnumber"]))
    with sqlite3.connect(tmp_path / "state" / "state.db") as db:
        refused = db.execute("SELECT line, key, reason FROM rejects ORDER BY line").fetchall()
    return records, refused


def test_the_dialer_holds_the_same_records_and_the_same_rows_are_refused(tmp_path: Path) -> None:
    slow = synced(tmp_path / "slow", "phonenumbers")
    fast = synced(tmp_path / "fast", "rphonenumbers")
    assert orjson.dumps(fast[0]) == orjson.dumps(slow[0])
    assert fast[1] == slow[1]
    assert len(slow[0]) > 20 and len(slow[1]) > 5  # the sample has both kinds
