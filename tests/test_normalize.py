"""Mapping and phones: canonical E.164, per-sink dial strings, and a reason for every refusal."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from syncd.config import RouteConfig
from syncd.core.mapping import Mapper, RowRejected, normalize_rows
from syncd.core.phones import PhoneError, format_dial, parse_dial_format, to_e164

HEADER = (
    "id",
    "phone",
    "alt",
    "first",
    "last",
    "email",
    "callback",
    "agent",
    "city",
    "deleted",
    "status",
)


def route(**extra: object) -> RouteConfig:
    data: dict[str, object] = {
        "source": "crm",
        "sink": "jodo",
        "default_region": "IN",
        "timezone": "Asia/Kolkata",
        "map": {
            "key": "id",
            "phone": "phone",
            "alt_phones": ["alt"],
            "first_name": "first",
            "last_name": "last",
            "email": "email",
            "call_at": "callback",
            "agent": "agent",
            "deleted": "deleted",
            "fields": {"city": "city"},
        },
    }
    data.update(extra)
    return RouteConfig.model_validate(data)


def row(**values: str) -> list[str]:
    base = {h: "" for h in HEADER}
    base.update(values)
    return [base[h] for h in HEADER]


@pytest.mark.parametrize(
    "text",
    ["9820012345", "+91 98200 12345", "0091-98200-12345", "09820012345", "(+91) 98200 12345"],
)
def test_indian_numbers_in_any_usual_format_become_e164(text: str) -> None:
    assert to_e164(text, "IN") == "+919820012345"


@pytest.mark.parametrize("text", ["12345", "not a number", "+91 99", "+1 555 0100"])
def test_invalid_numbers_are_refused_with_the_number_in_the_reason(text: str) -> None:
    with pytest.raises(PhoneError, match="invalid phone"):
        to_e164(text, "IN")


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("e164", "+919820012345"),
        ("00", "00919820012345"),
        ("national", "09820012345"),
        ("prefix:011", "011919820012345"),
    ],
)
def test_dial_formats_for_a_domestic_number(fmt: str, expected: str) -> None:
    assert format_dial("+919820012345", parse_dial_format(fmt), "IN") == expected


def test_national_format_dials_foreign_numbers_with_the_international_prefix() -> None:
    assert format_dial("+442079460000", parse_dial_format("national"), "IN") == "00442079460000"


def test_unknown_dial_format_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="must be one of e164, 00, national"):
        parse_dial_format("+")


def test_row_maps_to_a_lead_with_alternates_fields_and_utc_callback() -> None:
    mapper = Mapper(route(), HEADER)
    lead = mapper.to_lead(
        row(
            id=" L1 ",
            phone="98200 12345; 98200 54321",
            alt="022 2345 6789",
            first="Asha",
            last="Rao",
            email="a@x.in",
            callback="2026-12-01 10:30:00",
            agent="agent7",
            city="Pune",
        )
    )
    assert lead.key == "L1"
    assert lead.phone == "+919820012345"
    assert lead.alt_phones == ("+919820054321", "+912223456789")
    assert lead.call_at == datetime(2026, 12, 1, 5, 0, tzinfo=UTC)
    assert (lead.first_name, lead.agent, lead.fields) == ("Asha", "agent7", {"city": "Pune"})


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"id": "", "phone": "9820012345"}, "missing key (column 'id' is empty)"),
        ({"id": "L1", "phone": ""}, "missing phone (column 'phone' is empty)"),
        ({"id": "L1", "phone": "12345"}, "invalid phone '12345'"),
        ({"id": "L1", "phone": "9820012345", "callback": "tomorrow"}, "invalid date 'tomorrow'"),
        ({"id": "L1", "phone": "9820012345", "callback": "0000-00-00 00:00:00"}, "zero date"),
    ],
)
def test_bad_rows_are_rejected_with_a_reason(values: dict[str, str], reason: str) -> None:
    with pytest.raises(RowRejected, match=reason.replace("(", r"\(").replace(")", r"\)")):
        Mapper(route(), HEADER).to_lead(row(**values))


def test_soft_deleted_row_and_row_leaving_the_filter_become_deleted_leads() -> None:
    assert Mapper(route(), HEADER).to_lead(row(id="L1", phone="9820012345", deleted="1")).deleted
    filtered = Mapper(route(filter={"status": ["open"]}), HEADER)
    assert filtered.to_lead(row(id="L1", phone="9820012345", status="closed")).deleted
    assert not filtered.to_lead(row(id="L1", phone="9820012345", status="open")).deleted


def test_missing_mapped_column_is_named() -> None:
    with pytest.raises(RowRejected, match="missing column"):
        Mapper(route(), ("id", "phone"))


def test_normalize_rows_hashes_equal_content_equally_whatever_the_phone_spelling() -> None:
    route_json = route().model_dump_json()
    out = normalize_rows(
        route_json,
        HEADER,
        [
            (2, row(id="L1", phone="9820012345")),
            (3, row(id="L1", phone="+91 98200-12345")),
            (4, row(id="L2", phone="bad")),
        ],
    )
    assert out[0][2] == out[1][2] and out[0][3] == out[1][3]
    assert json.loads(out[0][3] or "")["phone"] == "+919820012345"
    assert out[2][4] is not None and "invalid phone" in out[2][4]


def test_a_chunk_is_hashed_as_its_rows_are_one_by_one() -> None:
    from syncd.core.mapping import row_hash, row_hashes

    fingerprint = b"\x01" * 16
    rows = [(2, ["L1", "98200 10001"]), (3, ["L2", "caf\udce9", ""]), (5, [])]
    assert row_hashes(fingerprint, rows) == {line: row_hash(fingerprint, v) for line, v in rows}
