"""The safety gate's decisions, case by case, at fixed times (no I/O, no real clock)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from pydantic import ValidationError

from syncd.config import RouteConfig
from syncd.core.gate import (
    CallingWindow,
    RouteWindow,
    Screening,
    Verdict,
    calling_decision,
    lead_zones,
    screen,
    window_decision,
)
from syncd.core.mapping import LeadBlocked, Mapper, RowRejected
from syncd.core.phones import PhoneError, to_e164, unmangle

WEEKDAYS_9_TO_8 = CallingWindow.parse({"mon-sat": "09:00-20:00"})


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# -- calling windows in the lead's local time ----------------------------------------------

# Monday 2026-11-30. India is UTC+5:30; New York UTC-5, Los Angeles UTC-8 (no DST in
# winter); London UTC+0; Sydney UTC+11 (summer time).
CASES = [
    # phone, now (UTC), verdict, release (UTC) when held
    ("+919820012345", "2026-11-30 04:00", Verdict.ALLOW, None),  # 09:30 in Mumbai
    ("+919820012345", "2026-11-30 03:00", Verdict.HOLD, "2026-11-30 03:30"),  # 08:30
    ("+919820012345", "2026-11-30 15:00", Verdict.HOLD, "2026-12-01 03:30"),  # 20:30
    ("+12125550100", "2026-11-30 14:00", Verdict.ALLOW, None),  # 09:00 in New York
    ("+12125550100", "2026-11-30 13:59", Verdict.HOLD, "2026-11-30 14:00"),  # 08:59
    ("+13105550100", "2026-11-30 14:00", Verdict.HOLD, "2026-11-30 17:00"),  # 06:00 in LA
    ("+442071234567", "2026-11-30 19:59", Verdict.ALLOW, None),  # 19:59 in London
    ("+442071234567", "2026-11-30 20:00", Verdict.HOLD, "2026-12-01 09:00"),  # closes at 20:00
    ("+61212345678", "2026-11-30 21:00", Verdict.HOLD, "2026-11-30 22:00"),  # 08:00 in Sydney
    # Saturday 20:00 in London: Sunday has no window, Monday 09:00 is next.
    ("+442071234567", "2026-12-05 20:00", Verdict.HOLD, "2026-12-07 09:00"),
    # Idaho's 208 spans Boise (UTC-7) and the Pacific panhandle (UTC-8): 09:00 in Boise
    # is 08:00 there, so the call waits for 09:00 Pacific.
    ("+12085550123", "2026-11-30 16:00", Verdict.HOLD, "2026-11-30 17:00"),
    # An Australian mobile can be in Perth (UTC+8) or Sydney (UTC+11): open in both only
    # from 01:00 UTC (09:00 Perth) to 09:00 UTC (20:00 Sydney), on Perth's Monday too.
    ("+61412345678", "2026-11-30 23:00", Verdict.HOLD, "2026-12-01 01:00"),
]


@pytest.mark.parametrize(("phone", "now", "verdict", "release"), CASES)
def test_the_calling_window_is_kept_in_the_lead_s_local_time(
    phone: str, now: str, verdict: Verdict, release: str | None
) -> None:
    zones = lead_zones(phone, "", "UTC")
    decision = window_decision(WEEKDAYS_9_TO_8, zones, utc(now))
    assert decision.verdict is verdict, decision
    if release is not None:
        assert decision.until == utc(release)
        assert decision.code == "window_closed" and "held until" in decision.reason


def test_a_multi_zone_prefix_needs_the_window_open_in_every_zone() -> None:
    zones = lead_zones("+61412345678", "", "UTC")
    assert {"Australia/Perth", "Australia/Sydney"} <= set(zones)
    # 09:30 in Sydney, but 06:30 in Perth: held.
    assert window_decision(WEEKDAYS_9_TO_8, zones, utc("2026-11-30 22:30")).verdict is Verdict.HOLD


def test_a_mapped_zone_narrows_the_number_s_zones_and_never_replaces_them() -> None:
    # Idaho's 208 spans two zones: the CRM's Boise narrows it to one.
    assert lead_zones("+12085550123", "America/Boise", "UTC") == ("America/Boise",)
    # A New York number with Los Angeles in the CRM may be rung in either place.
    both = lead_zones("+12125550100", "America/Los_Angeles", "UTC")
    assert both == ("America/New_York", "America/Los_Angeles")
    assert lead_zones("+12125550100", "Mars/Base", "UTC") == ("America/New_York",)
    assert lead_zones("", "", "Asia/Kolkata") == ("Asia/Kolkata",)


def test_dst_is_the_zone_database_s_business() -> None:
    # New York leaves summer time on Sunday 2026-11-01: 09:00 is 13:00 UTC the Saturday
    # before and 14:00 UTC the Monday after.
    window = CallingWindow.parse({"all": "09:00-20:00"})
    zones = ("America/New_York",)
    assert window_decision(window, zones, utc("2026-10-31 13:00")).verdict is Verdict.ALLOW
    after = window_decision(window, zones, utc("2026-11-02 13:00"))
    assert after.verdict is Verdict.HOLD and after.until == utc("2026-11-02 14:00")
    # On the change day itself, 09:00 local is 14:00 UTC (the clocks went back at 02:00).
    day = window_decision(window, zones, utc("2026-11-01 12:00"))
    assert day.until == utc("2026-11-01 14:00")


def test_holidays_have_no_calling_hours() -> None:
    window = CallingWindow.parse({"mon-fri": "09:00-20:00"}, [date(2026, 12, 25)])
    decision = window_decision(window, ("Europe/London",), utc("2026-12-25 10:00"))
    assert decision.until == utc("2026-12-28 09:00")  # Friday holiday, weekend, Monday


def test_a_window_open_in_none_of_the_zones_blocks_with_a_reason() -> None:
    short = CallingWindow.parse({"all": "09:00-10:00"})
    decision = window_decision(short, ("Pacific/Honolulu", "Asia/Tokyo"), utc("2026-11-30 00:00"))
    assert decision.verdict is Verdict.BLOCK and decision.code == "window_never_open"


def test_several_routes_feeding_one_sink_must_all_be_open() -> None:
    evenings = CallingWindow.parse({"all": "17:00-21:00"})
    windows = [RouteWindow(WEEKDAYS_9_TO_8, "UTC"), RouteWindow(evenings, "UTC")]
    decision = calling_decision("+442071234567", "", windows, utc("2026-11-30 12:00"))
    assert decision.verdict is Verdict.HOLD and decision.until == utc("2026-11-30 17:00")


@pytest.mark.parametrize(
    "spec",
    [{"someday": "09:00-20:00"}, {"mon": "9-20"}, {"mon": "20:00-09:00"}, {"mon": "09:00-25:00"}],
)
def test_a_bad_window_setting_is_refused_naming_it(spec: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="windows"):
        CallingWindow.parse(spec)


# -- screening what the CRM sent ---------------------------------------------------------

NOW = utc("2026-11-30 10:00")
RULES = Screening(
    dnc_values=frozenset({"1", "yes", "dnc"}),
    require_consent=True,
    consent_max_age=timedelta(days=365),
    placeholders=frozenset({"+919820000000"}),
    block_types=frozenset({"premium_rate", "toll_free"}),
)


@pytest.mark.parametrize(
    ("phone", "dnc", "consent", "code"),
    [
        ("+919820012345", "", "yes", ""),
        ("+919820012345", "DNC", "yes", "dnc_crm"),
        ("+919999999999", "", "yes", "placeholder_number"),  # one digit repeated
        ("+911234567890", "", "yes", "placeholder_number"),  # a run
        ("+919820000000", "", "yes", "placeholder_number"),  # the configured list
        ("+18005550123", "", "yes", "number_type:toll_free"),
        ("+919820012345", "", "", "no_consent"),
        ("+919820012345", "", "no", "no_consent"),
        ("+919820012345", "", "whenever", "no_consent"),
        ("+919820012345", "", "2026-01-15", ""),
        ("+919820012345", "", "2025-06-01", "consent_expired"),
    ],
)
def test_a_lead_is_blocked_for_the_first_rule_it_breaks(
    phone: str, dnc: str, consent: str, code: str
) -> None:
    decision = screen(phone, RULES, dnc=dnc, consent=consent, now=NOW)
    assert decision.code == code, decision
    assert decision.verdict is (Verdict.BLOCK if code else Verdict.ALLOW)
    if code:
        assert decision.text.startswith(f"blocked ({code}): ")


def test_without_a_consent_column_consent_is_not_asked() -> None:
    assert screen("+919820012345", RULES, dnc=None, consent=None, now=NOW).code == ""


# -- numbers a spreadsheet rewrote -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("8.123456789E+09", "8123456789"),
        ("8123456789.0", "8123456789"),
        ("9820012345", "9820012345"),
    ],
)
def test_a_spreadsheet_number_is_recovered_when_no_digit_was_lost(text: str, digits: str) -> None:
    assert unmangle(text) == digits


def test_a_spreadsheet_number_that_lost_digits_is_refused_not_guessed() -> None:
    with pytest.raises(PhoneError, match="digits lost"):
        to_e164("9.18123E+11", "IN")
    assert to_e164("9.820012345E+09", "IN") == "+919820012345"


def test_a_window_closing_sooner_than_the_margin_counts_as_closed() -> None:
    # 19:55 in London with ten minutes needed to place the call: tomorrow 09:00.
    late = window_decision(
        WEEKDAYS_9_TO_8, ("Europe/London",), utc("2026-11-30 19:55"), timedelta(minutes=10)
    )
    assert late.verdict is Verdict.HOLD and late.until == utc("2026-12-01 09:00")
    early = window_decision(
        WEEKDAYS_9_TO_8, ("Europe/London",), utc("2026-11-30 19:49"), timedelta(minutes=10)
    )
    assert early.verdict is Verdict.ALLOW


SPLIT_DAY = CallingWindow.parse({"mon-sat": "09:00-12:00, 12:05-20:00"})


@pytest.mark.parametrize(
    ("now", "verdict", "release"),
    [
        ("2026-11-30 11:44", Verdict.ALLOW, None),  # 11:44-11:59 lies in the morning
        ("2026-11-30 11:55", Verdict.HOLD, "2026-11-30 12:05"),  # the span crosses the gap
        ("2026-11-30 12:00", Verdict.HOLD, "2026-11-30 12:05"),  # in the gap
        ("2026-11-30 19:50", Verdict.HOLD, "2026-12-01 09:00"),  # the span passes 20:00
    ],
)
def test_min_minutes_left_means_the_whole_span_lies_in_one_opening(
    now: str, verdict: Verdict, release: str | None
) -> None:
    decided = window_decision(SPLIT_DAY, ("Europe/London",), utc(now), timedelta(minutes=15))
    assert decided.verdict is verdict
    assert decided.until == (utc(release) if release else None)


@pytest.mark.parametrize(
    ("zones", "now", "closes"),
    [
        # London 10:00: the morning opening ends at 12:00, not at 20:00
        (("Europe/London",), "2026-11-30 10:00", "2026-11-30 12:00"),
        (("Europe/London",), "2026-11-30 13:00", "2026-11-30 20:00"),
        # New York and Chicago both open: the first to close (New York, 12:00 EST) ends it
        (("America/New_York", "America/Chicago"), "2026-11-30 15:30", "2026-11-30 17:00"),
        # the US change day (Sunday 2026-11-01 has no window; Saturday 10-31 is EDT)
        (("America/New_York",), "2026-10-31 22:00", "2026-11-01 00:00"),
        # a closed window has no close
        (("Europe/London",), "2026-11-30 12:01", None),
    ],
)
def test_an_allowed_lead_knows_when_its_opening_closes(
    zones: tuple[str, ...], now: str, closes: str | None
) -> None:
    decided = window_decision(SPLIT_DAY, zones, utc(now))
    assert decided.closes == (utc(closes) if closes else None)


def test_several_routes_close_when_the_first_of_their_windows_does() -> None:
    early = RouteWindow(CallingWindow.parse({"mon-sat": "09:00-17:00"}), "Europe/London")
    late = RouteWindow(WEEKDAYS_9_TO_8, "Europe/London")
    decided = calling_decision("+442071234567", "", [late, early], utc("2026-11-30 10:00"))
    assert decided.verdict is Verdict.ALLOW
    assert decided.closes == utc("2026-11-30 17:00")


# -- a CRM callback time outside the window ------------------------------------------------


def mapper(**policy: object) -> Mapper:
    route = RouteConfig.model_validate(
        {
            "source": "crm",
            "sink": "jodo",
            "default_region": "GB",
            "map": {"key": "id", "phone": "phone", "call_at": "callback"},
            "policy": {"windows": {"mon-sat": "09:00-20:00"}, **policy},
        }
    )
    return Mapper(route, ("id", "phone", "callback"))


def test_a_callback_outside_the_window_moves_to_its_next_opening() -> None:
    lead = mapper().to_lead(["L1", "02071234567", "2026-11-30T21:30:00+00:00"])
    assert lead.call_at == utc("2026-12-01 09:00")
    inside = mapper().to_lead(["L2", "02071234567", "2026-11-30T15:00:00+00:00"])
    assert inside.call_at == utc("2026-11-30 15:00")


def test_a_callback_outside_the_window_can_refuse_the_lead_instead() -> None:
    with pytest.raises(LeadBlocked, match=r"blocked \(call_at_outside_window\)"):
        mapper(call_at_outside_window="refuse").to_lead(
            ["L1", "02071234567", "2026-11-30T21:30:00+00:00"]
        )


def test_a_bad_policy_is_a_configuration_error_naming_the_setting() -> None:
    with pytest.raises(ValidationError, match="windows"):
        mapper(windows={"mon": "9 to 5"})
    with pytest.raises(ValidationError, match="unknown number type"):
        mapper(block_number_types=["robocall"])


# -- every number the dialer may ring is screened --------------------------------------------


def alt_mapper(**policy: object) -> Mapper:
    route = RouteConfig.model_validate(
        {
            "source": "crm",
            "sink": "jodo",
            "default_region": "IN",
            "map": {"key": "id", "phone": "phone", "alt_phones": ["alt"]},
            "policy": {"block_number_types": ["premium_rate"], **policy},
        }
    )
    return Mapper(route, ("id", "phone", "alt"))


@pytest.mark.parametrize(
    ("phone", "alt", "main", "alternates", "note"),
    [
        pytest.param("9820012345", "9820012346", "+919820012345", ("+919820012346",), None,
                     id="both usable"),
        pytest.param("9820012345", "9999999999", "+919820012345", (),
                     "alternate left out: blocked (placeholder_number)", id="placeholder alt"),
        pytest.param("2125550100", "+19005550100", "+912125550100", (),
                     "alternate left out: blocked (number_type:premium_rate)", id="premium alt"),
        pytest.param("", "9820012346", "+919820012346", (),
                     "called on alternate +919820012346: main number refused (missing phone",
                     id="no main number: called on the alternate"),
        pytest.param("9999999999", "9820012346", "+919820012346", (),
                     "called on alternate +919820012346: main number refused (blocked "
                     "(placeholder_number)", id="a placeholder main gives way"),
        pytest.param("9820012345", "9.18123E+11", "+919820012345", (),
                     "alternate left out: ", id="a spreadsheet-rounded alternate is said"),
    ],
)  # fmt: skip
def test_every_number_the_dialer_may_ring_passes_the_number_screens(
    phone: str, alt: str, main: str, alternates: tuple[str, ...], note: str | None
) -> None:
    lead = alt_mapper().to_lead(["L1", phone, alt])
    assert (lead.phone, lead.alt_phones) == (main, alternates)
    if note is None:
        assert lead.notes == ()
    else:
        assert lead.notes[0].startswith(note), lead.notes
    assert "notes" not in lead.to_json() or note is not None


def test_a_lead_whose_every_number_is_refused_is_blocked_for_its_main_number() -> None:
    with pytest.raises(LeadBlocked, match="placeholder_number"):
        alt_mapper().to_lead(["L1", "9999999999", "1234567890"])


def test_a_time_zone_abbreviation_in_the_crm_refuses_the_row_with_the_column() -> None:
    route = RouteConfig.model_validate(
        {
            "source": "crm",
            "sink": "jodo",
            "default_region": "US",
            "map": {"key": "id", "phone": "phone"},
            "policy": {"timezone_column": "tz", "windows": {"all": "09:00-20:00"}},
        }
    )
    with pytest.raises(RowRejected, match=r"'EST' is not an IANA zone name.*column 'tz'"):
        Mapper(route, ("id", "phone", "tz")).to_lead(["L1", "2125550100", "EST"])
    lead = Mapper(route, ("id", "phone", "tz")).to_lead(["L1", "2125550100", "America/New_York"])
    assert lead.zone == "America/New_York"
