"""What the push writes of each lead it sends, computed the cheap way (issue 27): the
same facts text as ``Facts.to_json``, the same zones as looking each number up afresh,
the same Jodo times as ``strftime``, the same history line of a push."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from syncd.core.audit import Facts, decision_json, list_of, numbers_of
from syncd.core.model import ResultKind
from syncd.core.zones import ZoneTable
from syncd.sinks.jodo.client import jodo_time
from syncd.state.base import Completion
from syncd.state.sqlite import _push_detail

CASES: list[dict[str, Any]] = [
    {},
    {"numbers": ("+919820012345",), "zones": ("Asia/Calcutta",), "action": "upsert"},
    {
        "numbers": ("+919820012345", "+12125550100"),
        "zones": ("Asia/Calcutta", "America/New_York"),
        "policy": "0123456789ab",
        "action": "upsert",
        "reply": "Jodo: 500 records imported",
    },
    {"numbers": ("+919820012345",), "code": "dnc_list:register", "list_version": "v3 of …"},
    {"numbers": ("+919820012345",), "code": "window_closed", "zones": ("Asia/Kolkata",)},
    {"numbers": (), "action": "delete", "withdrawn": "consent_expired", "reply": "José ñ"},
    {"code": "consent_expired", "policy": "p+q", "action": "upsert"},
]


@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
def test_the_push_s_facts_read_as_the_facts_of_the_audit(case: dict[str, Any]) -> None:
    numbers, zones = case.get("numbers", ()), case.get("zones", ())
    rest = {k: v for k, v in case.items() if k not in ("numbers", "zones")}
    facts = Facts(numbers=numbers, zones=zones, dnc_list=list_of(case.get("code", "")), **rest)
    assert decision_json(numbers, zones, **rest) == facts.to_json()
    assert Facts.from_json(decision_json(numbers, zones, **rest)) == facts


@pytest.mark.parametrize(
    ("phone", "alternates", "numbers"),
    [
        ("+911", (), ("+911",)),
        ("", (), ()),
        ("+911", ("+912", "+911", ""), ("+911", "+912")),
        ("", ("+912",), ("+912",)),
    ],
)
def test_a_lead_s_numbers_main_first_without_blanks_or_repeats(
    phone: str, alternates: tuple[str, ...], numbers: tuple[str, ...]
) -> None:
    assert numbers_of(phone, alternates) == numbers


NUMBERS = [
    "+919820012345",
    "+919820099999",  # the same five digits as the one before
    "+12125550100",
    "+12125550199",
    "+18085550100",  # Hawaii
    "+13125550100",
    "+6281234567890",  # an Indonesian mobile: a correction
    "+6221234567",
    "+79161234567",  # a Russian mobile: a correction
    "+74012123456",  # Kaliningrad: five digits of correction
    "+61412345678",  # an Australian mobile
    "+61212345678",
    "+5581987654321",
    "+5511987654321",
    "+526141234567",
    "+526561234567",
    "+442079460000",
    "+4420",  # too short to be anyone's: never remembered by its prefix
    "+44207946",
    "+999123456",  # no country
    "+",
]


def test_numbers_remembered_by_prefix_place_as_each_looked_up_afresh() -> None:
    remembered = ZoneTable({"+9198200999": ["Asia/Dubai"], "+1808": ["Pacific/Honolulu"]})
    for number in NUMBERS * 2:  # the second time from the memo
        fresh = ZoneTable({"+9198200999": ["Asia/Dubai"], "+1808": ["Pacific/Honolulu"]})
        assert remembered.zones_of(number) == fresh.zones_of(number), number
    assert remembered.zones_of("+919820099999") == ("Asia/Dubai",)  # an override of 10 digits
    assert remembered.zones_of("+919820012345") != ("Asia/Dubai",)


def test_a_short_number_s_zones_do_not_stand_for_a_longer_one_s() -> None:
    table = ZoneTable({"+12125": ["Asia/Tokyo"]})
    assert table.zones_of("+1212") == ZoneTable().zones_of("+1212")
    assert table.zones_of("+12125") == ("Asia/Tokyo",)
    assert table.zones_of("+12125550100") == ("Asia/Tokyo",)


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "America/New_York", "Australia/Lord_Howe", "UTC"])
def test_a_jodo_time_reads_as_strftime_wrote_it(zone: str) -> None:
    start = datetime(2026, 3, 7, 23, 59, 59, 999_999, tzinfo=UTC)
    for step in range(0, 60 * 24 * 400, 97):  # minutes over a year and DST changes
        when = start + timedelta(minutes=step, microseconds=step)
        expected = when.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")
        assert jodo_time(when, zone) == expected
    assert jodo_time(datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC), "UTC")[-14:] == "01-02 03:04:05"


@pytest.mark.parametrize("reason", ["", "timeout", "ADDED"])
@pytest.mark.parametrize("reply", ["", "ADDED", "vendor ref 0091"])
@pytest.mark.parametrize("ref", [None, "", "0091"])
def test_a_push_s_history_line_names_reason_answer_and_id_once_each(
    reason: str, reply: str, ref: str | None
) -> None:
    parts = [p for p in (reason, reply, f"vendor ref {ref}" if ref else "") if p]
    kind = ResultKind.RETRY if reason else ResultKind.DELIVERED
    done = Completion("K", "h", kind, reason, ref, reply=reply)
    assert _push_detail(done) == "; ".join(dict.fromkeys(parts))
