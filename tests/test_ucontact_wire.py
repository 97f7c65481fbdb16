"""uContact wire formats without I/O: the upload file, cleaning, replies, dates, recordings."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from syncd.core.model import CallStatus
from syncd.errors import RetryableError
from syncd.sinks.ucontact.client import read_flag, token_from
from syncd.sinks.ucontact.config import UContactSinkConfig
from syncd.sinks.ucontact.ledger import match_forms
from syncd.sinks.ucontact.outcomes import call_status, disposition_of, rows_of
from syncd.sinks.ucontact.wire import (
    Call,
    UnsafeValue,
    clean,
    data_string,
    parse_server_time,
    phone_digits,
    recording_candidates,
    server_time,
    upload_file,
    upload_line,
)


def test_upload_line_has_the_documented_columns_in_order() -> None:
    call = Call("098344484", ("099124484", "099111111"), "var1=val1:var2=val2", "1001", 9999)
    assert upload_line("prueba1", call) == (
        "prueba1;098344484;var1=val1:var2=val2;099124484:099111111;9999;1001"
    )


def test_upload_line_leaves_off_empty_optional_columns_but_keeps_their_place() -> None:
    assert upload_line("C->", Call("0991", (), "")) == "C->;0991;;"
    assert upload_line("C->", Call("0991", (), "a=b", priority=5)) == "C->;0991;a=b;;5"
    assert upload_line("C->", Call("0991", (), "", agentphone="1001")) == "C->;0991;;;;1001"


def test_upload_file_is_base64_utf8_with_one_line_per_lead_and_its_count() -> None:
    calls = [Call("0991", (), "name=José"), Call("0992", ("0993",), "")]
    fileb64, count = upload_file("Ventas->", calls)
    assert count == 2
    assert base64.b64decode(fileb64).decode("utf-8") == (
        "Ventas->;0991;name=José;\nVentas->;0992;;0993\n"
    )


@pytest.mark.parametrize(
    ("value", "cleaned"),
    [
        ("10:30", "10.30"),
        ("a=b", "a-b"),
        ("one; two", "one, two"),
        ("line1\nline2\r\nline3", "line1 line2 line3"),
        ("plain text", "plain text"),
        ("  padded\t", "padded"),
    ],
)
def test_clean_replaces_each_separator_with_its_documented_stand_in(
    value: str, cleaned: str
) -> None:
    assert clean(value, replace=True, what="field 'x'") == cleaned


def test_clean_in_reject_mode_names_the_field_and_the_character() -> None:
    with pytest.raises(UnsafeValue, match=r"field 'note' contains ':'"):
        clean("at 10:30", replace=False, what="field 'note'")
    assert clean("fine", replace=False, what="field 'note'") == "fine"


def test_data_string_cleans_names_and_values_and_skips_empty_values() -> None:
    pairs = {"crmkey": "K:1", "first_name": "", "a=b": "x;y"}
    assert data_string(pairs, replace=True) == "crmkey=K.1:a-b=x,y"


@pytest.mark.parametrize(
    ("body", "legacy", "key"),
    [
        ('"QWRtaW46OTgz"', False, "QWRtaW46OTgz"),
        ('["api", "Supervisor", "", "QWRtaW46OTgz"]', False, "QWRtaW46OTgz"),
        ('["api", "Supervisor", "QWRtaW46OTgz", "1001"]', True, "QWRtaW46OTgz"),
        ("QWRtaW46OTgz", False, "QWRtaW46OTgz"),
        ("0", False, None),
        ("[0]", False, None),
    ],
)
def test_token_is_read_from_every_login_answer_shape(
    body: str, legacy: bool, key: str | None
) -> None:
    assert token_from(body, legacy=legacy) == key


@pytest.mark.parametrize("body", ["", "<html><body>Error</body></html>", "[]", "{}"])
def test_a_login_answer_without_a_key_is_a_transient_error(body: str) -> None:
    with pytest.raises(RetryableError):
        token_from(body, legacy=False)


@pytest.mark.parametrize(
    ("body", "value"), [("1", True), (" OK\n", True), ("0", False), ("ERROR", False), ('"1"', True)]
)
def test_flags_are_read_strictly(body: str, value: bool) -> None:
    assert read_flag(body, "Dialers/RemoveContact") is value


@pytest.mark.parametrize("body", ["", "null", "true", "2", "<html></html>", "1 row"])
def test_anything_but_a_flag_is_a_broken_answer_not_a_success(body: str) -> None:
    with pytest.raises(RetryableError, match="expected 1 or 0"):
        read_flag(body, "Dialers/uploadbase")


def test_server_time_round_trips_through_the_server_time_zone() -> None:
    when = datetime(2026, 1, 18, 13, 0, tzinfo=UTC)
    text = server_time(when, "America/Montevideo")
    assert text == "2026-01-18 10:00:00"
    assert parse_server_time(text, "America/Montevideo") == when
    assert parse_server_time("2026-01-18 10:00:00.0", "UTC") == datetime(
        2026, 1, 18, 10, tzinfo=UTC
    )
    assert parse_server_time("yesterday", "UTC") is None


def test_phone_forms_match_whatever_way_the_dialer_wrote_the_number() -> None:
    forms = match_forms("+59898344484", "0059898344484")
    assert phone_digits("+598 98 344 484") in forms
    assert phone_digits("0059898344484") in forms
    assert phone_digits("098344484") in forms  # national, with the trunk prefix


def test_recording_candidates_are_the_four_documented_places() -> None:
    urls = recording_candidates("7e4e", "2016-01-18 10:11:12", "https://tel", "https://bak")
    assert urls == [
        "https://tel/records/20160118/7e4e.mp3",
        "https://tel/records/7e4e.mp3",
        "https://bak/records/20160118/7e4e.mp3",
        "https://bak/records/7e4e.mp3",
    ]
    assert recording_candidates("g", "2016-01-18", "https://tel", None, "gsm") == [
        "https://tel/records/20160118/g.gsm",
        "https://tel/records/g.gsm",
    ]


def test_cdr_fields_are_read_whatever_their_casing_and_container() -> None:
    rows = rows_of({"records": [{"GUID": "g", "Disposition": "NO ANSWER"}, "junk"]})
    assert len(rows) == 1
    assert call_status("no answer", {}) is CallStatus.NO_ANSWER
    assert call_status("CANCEL", {}) is CallStatus.DROPPED
    assert call_status("VOICEMAIL", {"voicemail": CallStatus.NO_ANSWER}) is CallStatus.NO_ANSWER
    assert call_status("SOMETHING", {}) is CallStatus.UNKNOWN
    assert disposition_of({"l1": "Venta", "l2": "Contado", "l3": ""}) == "Venta / Contado"
    assert disposition_of({"typification": "Callback"}) == "Callback"


def test_config_requires_a_dialer_campaign_and_normalises_the_url() -> None:
    cfg = UContactSinkConfig(
        name="uc",
        url="https://acme.ucontactcloud.com/Integra/resources/",
        user="api",
        password="x",
        campaign="Ventas->",
    )
    assert cfg.url == "https://acme.ucontactcloud.com"
    assert cfg.uploader == "api"
    with pytest.raises(ValueError, match="'->' suffix"):
        UContactSinkConfig(name="uc", url="https://a", user="u", password="x", campaign="Ventas<-")
    with pytest.raises(ValueError, match="may not contain"):
        UContactSinkConfig(name="uc", url="https://a", user="u", password="x", campaign="a;b->")
