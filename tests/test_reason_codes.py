"""Reason codes: what the status page, /readyz, metrics and info logs say of a reason."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from syncd.core.keys import key_refusal
from syncd.core.reasons import (
    DIALER_FAILED,
    REFUSED_ROW,
    group_by_code,
    looks_personal,
    reason_code,
    shown_key,
)
from syncd.sinks.ucontact.server_clock import zone_mismatch

PERSON = ("Asha", "Sharma", "asha.sharma@example.org", "9820012345")


@pytest.mark.parametrize(
    ("reason", "other", "code"),
    [
        # syncd's own templates: the code, never the cell they quote
        ("invalid phone 'Asha Sharma' in column 'phone'", REFUSED_ROW, "invalid phone"),
        ("invalid phone '98200 1234' for region IN in column 'phone'", REFUSED_ROW,
         "invalid phone"),
        ("phone '9.8200123E9' was turned into a rounded number by a spreadsheet (digits lost)",
         REFUSED_ROW, "invalid phone"),
        ("invalid date 'Asha Sharma' (expected ISO 8601)", REFUSED_ROW, "invalid date"),
        ("missing key (column 'id' is empty)", REFUSED_ROW, "missing key"),
        ("missing phone (column 'phone' is empty)", REFUSED_ROW, "missing phone"),
        ("missing column(s) 'phone'", REFUSED_ROW, "missing column"),
        ("key longer than 200 characters in column 'id'", REFUSED_ROW, "key too long"),
        ("duplicate key 'asha.sharma@example.org': superseded by line 9 (last wins)",
         REFUSED_ROW, "superseded by a later row"),
        ("column 'first' is not valid text in the file's encoding (is the file latin1?)",
         REFUSED_ROW, "not valid text in the file's encoding"),
        ("blocked (dnc_crm): +919820012345 is on the CRM's do-not-call flag", REFUSED_ROW,
         "blocked (dnc_crm)"),
        ("held (same_number): same number as lead P1, which jodo holds", REFUSED_ROW,
         "held (same_number)"),
        ("blocked (number_type:landline): +919820012345 is a landline number", REFUSED_ROW,
         "blocked (number_type:landline)"),
        ("blocked (dnc_list:ndnc): its main number is on the do-not-call list ndnc", REFUSED_ROW,
         "blocked (dnc_list:ndnc)"),
        ("blocked (Asha Sharma): made up", REFUSED_ROW, REFUSED_ROW),
        # a template syncd does not know: the caller's code, nothing of the text
        ("Asha Sharma has no row", REFUSED_ROW, REFUSED_ROW),
        # a dialer's words: its result type, status code or HTTP status only
        ("INVALID_RECORD_FAILED: Duplicate customer Asha Sharma asha.sharma@example.org",
         "refused by the dialer", "refused by the dialer (INVALID_RECORD_FAILED)"),
        ("ameyo: NOT_MIGRATED: customer Asha Sharma lives in lead 4", "refused by the dialer",
         "refused by the dialer (NOT_MIGRATED)"),
        ("jodo: ImportProcessData: Duplicate customer Asha Sharma already exists (code 002)",
         "refused by the dialer", "refused by the dialer (code 002)"),
        ("jodo: HTTP 503", DIALER_FAILED, f"{DIALER_FAILED} (HTTP 503)"),
        ("Dialers/uploadbase answered 'ERROR: Duplicate customer Asha Sharma' (gave up after "
         "2 attempts)", DIALER_FAILED, f"{DIALER_FAILED}, gave up after its attempts"),
        ("Duplicate customer Asha Sharma already exists", "refused by the dialer",
         "refused by the dialer"),
        # a name in capitals with an underscore is not a result type unless it leads
        ("Duplicate customer ASHA_SHARMA", "refused by the dialer", "refused by the dialer"),
        ("", REFUSED_ROW, REFUSED_ROW),
        ("jodo: ImportProcessData: HTTP 413 (code 413): this one record is larger than the "
         "dialer takes in a request", "refused by the dialer",
         "one record too large for the dialer (HTTP 413)"),
        # the store's own words name its path or URL: the code alone is shown
        ("the disk holding the state store /var/lib/syncd/state.db is full (database or "
         "disk is full); free space there: nothing was written, nothing is lost, syncd "
         "carries on once it can write", "failing", "the state store's disk is full"),
        ("the state store postgresql://syncd@db.example.org/crm cannot be reached: "
         "connection refused", "failing", "the state store cannot be reached"),
        ("the state store /srv/state.db is read-only (attempt to write a readonly "
         "database)", "failing", "the state store is read-only"),
        # a server clock check's words (sinks/ucontact/server_clock.py), as it says them
        (zone_mismatch(datetime(2026, 12, 5, 17, 30), datetime(2026, 12, 5, 12, tzinfo=UTC),
                       "UTC"), "failing", "the dialer's clock is in another zone than "
         "server_timezone"),
        (zone_mismatch(datetime(2026, 12, 5, 12, 40), datetime(2026, 12, 5, 12, tzinfo=UTC),
                       "UTC"), "failing", "the dialer's clock is off"),
    ],
)  # fmt: skip
def test_a_reason_becomes_its_code_without_a_word_from_outside(
    reason: str, other: str, code: str
) -> None:
    assert reason_code(reason, other) == code
    assert not [p for p in PERSON if p.lower() in code.lower()]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("\t=KEYF(1)", "key with control characters"),
        ("A\x07B", "key with control characters"),
        ("=KEYF(1)", "key like a spreadsheet formula"),
        ("\u00a0@SUM(A1)", "key like a spreadsheet formula"),
        ("\u200b@SUM(A1)", "key with control characters"),
        ("CTL\u202eKEY5", "key with control characters"),
        ("  ", "missing key"),
        ("K" * 129, "key too long"),
    ],
)
def test_a_refused_key_has_a_code_and_its_reason_never_quotes_it(raw: str, code: str) -> None:
    reason = key_refusal(raw, "id")

    assert reason is not None and reason_code(reason, REFUSED_ROW) == code
    assert not raw.strip() or raw.strip() not in reason
    assert "KEYF" not in reason and "SUM" not in reason


@pytest.mark.parametrize("raw", ["L1", " L1 ", "-12", "+91 98200 12345", "0065g00000Xyz"])
def test_a_key_a_crm_may_use_is_a_key(raw: str) -> None:
    assert key_refusal(raw, "id") is None


def test_reasons_are_grouped_and_counted_by_code_per_sink() -> None:
    rows = [
        ("ameyo", "INVALID_RECORD_FAILED: Duplicate customer Asha Sharma", 2),
        ("ameyo", "INVALID_RECORD_FAILED: Duplicate customer Ravi Iyer", 3),
        ("jodo", "Duplicate customer Asha Sharma already exists", 1),
        ("jodo", "Duplicate customer Ravi Iyer already exists", 1),
    ]
    assert group_by_code(rows) == [
        ("ameyo", "refused by the dialer (INVALID_RECORD_FAILED)", 5),
        ("jodo", "refused by the dialer", 2),
    ]


@pytest.mark.parametrize(
    ("key", "personal"),
    [
        ("L1", False),
        ("10042", False),
        ("0065g00000XyzAbC", False),  # a CRM's record id
        ("20261204-000017", True),  # digits and separators only, 10 or more: in doubt, hashed
        ("asha.sharma@example.org", True),
        ("+919820012345", True),
        ("+1 (808) 555-0100", True),
        ("09820012345", True),
        ("98200 12345", True),
        ("9820012345", True),
        # a whole number inside a key (a CRM that keys leads by their phone)
        ("LEAD9820057779", True),
        ("cust_919820057779", True),
        ("L00000001", False),  # nine digits in a row: an id's padding, not a number
    ],
)
def test_a_key_that_is_an_e_mail_or_a_phone_number_is_named_by_its_hash(
    key: str, personal: bool
) -> None:
    assert looks_personal(key) is personal
    shown = shown_key(key)
    if looks_personal(key):
        assert shown.startswith("sha256:") and len(shown) == 19
        assert shown == shown_key(key)  # the same in every line: lines can be matched
    else:
        assert shown == key


def test_info_and_warning_lines_name_a_personal_key_by_its_hash_debug_lines_keep_it() -> None:
    from syncd.logs import _personal_keys

    info = _personal_keys(None, "info", {"level": "info", "key": "+919820012345"})
    debug = _personal_keys(None, "debug", {"level": "debug", "key": "+919820012345"})
    listed = _personal_keys(None, "warning", {"level": "warning", "keys": ["L1", "a@b.org"]})
    assert info["key"] == shown_key("+919820012345") != "+919820012345"
    assert debug["key"] == "+919820012345"
    assert listed["keys"] == ["L1", shown_key("a@b.org")]


@pytest.mark.parametrize(
    ("kind", "reason", "code"),
    [
        ("jodo", "Jodo refused the record: Duplicate customer already exists",
         "refused by the dialer: duplicate in dialer"),
        ("jodo", "Jodo refused the record: Invalid mobile number",
         "refused by the dialer: invalid phone at the dialer"),
        ("jodo", "Jodo refused the record: Asha Sharma is not welcome", "refused by the dialer"),
        ("ameyo", "INVALID_RECORD_FAILED: Duplicate customer Asha Sharma",
         "refused by the dialer: invalid record (INVALID_RECORD_FAILED)"),
        ("ameyo", "NOT_MIGRATED: the customer is in lead 4",
         "refused by the dialer: customer in another lead (NOT_MIGRATED)"),
        ("ameyo", "SOMETHING_NEW: Asha", "refused by the dialer (SOMETHING_NEW)"),
        ("ucontact", "no phone number to dial", "no phone number to dial"),
        ("ucontact", "ucontact: Dialers/uploadbase answered 'ERROR: Asha Sharma', expected 1 or 0"
         " (gave up after 2 attempts)",
         "failed at the dialer, gave up after its attempts: unreadable answer (in doubt)"),
    ],
)  # fmt: skip
def test_each_dialer_names_the_code_of_its_own_refusals(kind: str, reason: str, code: str) -> None:
    from syncd.registry import reason_coder

    other = "failed at the dialer" if "gave up" in reason else "refused by the dialer"
    assert reason_code(reason, other, reason_coder(kind)) == code


def test_a_plug_ins_code_that_is_not_a_short_phrase_is_not_shown() -> None:
    def chatty(reason: str) -> str:
        return "duplicate: " + reason + "\n" * 3

    assert reason_code("Asha Sharma exists", coder=chatty) == "refused by the dialer"


def test_gate_metrics_take_label_values_only_from_the_gates_codes() -> None:
    from syncd.daemon.metrics import Metrics

    metrics = Metrics()
    metrics.gate_decisions(
        "jodo",
        [
            "blocked (dnc_list:ndnc): its main number is on the do-not-call list ndnc",
            "held (window_closed): outside the calling window",
            "Asha Sharma asha.sharma@example.org (9820012345)",  # not the gate's words
        ],
    )
    text = metrics.exposition().decode()
    assert 'code="dnc_list:ndnc"' in text
    assert 'code="window_closed"' in text and 'decision="other"' in text
    assert not [p for p in PERSON if p.lower() in text.lower()]
