"""Where a number may ring, in time zones: corrections of coarse data, CRM zones that
narrow, every number of the lead, and the window that follows (decision tables)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from syncd.core.gate import CallingWindow, RouteWindow, Verdict, calling_decision, lead_zones
from syncd.core.zones import ZoneError, ZoneTable, check_zone
from tests.conftest import run_cli

NINE_TO_EIGHT = CallingWindow.parse({"all": "09:00-20:00"})


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("number", "zones"),
    [
        pytest.param("+6281234567890", {"Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura"},
                     id="an Indonesian mobile may be in any of the zones"),
        pytest.param("+5581987654321", {"America/Recife"}, id="Recife's area 81, not Noronha"),
        pytest.param("+526141234567", {"America/Chihuahua"}, id="Chihuahua keeps UTC-6"),
        pytest.param("+74012123456", {"Europe/Kaliningrad"}, id="Kaliningrad, no DST"),
        pytest.param("+12125550100", {"America/New_York"}, id="the library's answer stands"),
    ],
)  # fmt: skip
def test_the_shipped_corrections_place_numbers_the_library_gets_wrong(
    number: str, zones: set[str]
) -> None:
    assert zones <= set(lead_zones(number, "", "UTC"))
    assert "America/Noronha" not in lead_zones(number, "", "UTC")


def test_an_australian_mobile_is_on_the_mainland_s_clocks_not_the_islands() -> None:
    zones = set(lead_zones("+61412345678", "", "UTC"))
    assert {"Australia/Perth", "Australia/Sydney", "Australia/Darwin"} <= zones
    assert not zones & {"Indian/Cocos", "Indian/Christmas", "Australia/Lord_Howe"}


def test_a_crm_zone_narrows_the_library_s_old_name_for_it() -> None:
    # the library says Asia/Calcutta; the CRM's Asia/Kolkata is the same zone
    assert lead_zones("+919820012345", "Asia/Kolkata", "UTC") == ("Asia/Calcutta",)


@pytest.mark.parametrize(
    ("name", "said"),
    [("America/Honolulu", "this system knows"), ("asia/kolkata", "did you mean Asia/Kolkata?")],
)
def test_a_misspelt_zone_is_refused_as_unknown_not_as_an_abbreviation(name: str, said: str) -> None:
    with pytest.raises(ZoneError) as refused:
        check_zone(name)
    assert said in str(refused.value) and "abbreviation" not in str(refused.value)


def test_a_russian_mobile_is_in_russia_s_zones_none_with_daylight_saving() -> None:
    zones = lead_zones("+79161234567", "", "UTC")
    assert "Europe/Moscow" in zones and "Asia/Kamchatka" in zones
    assert "Europe/Bucharest" not in zones and "Asia/Almaty" not in zones


@pytest.mark.parametrize(
    ("number", "now", "verdict"),
    [
        # 22:44 in Jayapura (UTC+9) is 20:44 in Jakarta: closed for an Indonesian mobile.
        ("+6281234567890", "2026-11-30 13:44", Verdict.HOLD),
        ("+6281234567890", "2026-11-30 02:00", Verdict.ALLOW),  # 09:00 Jakarta, 11:00 Jayapura
        # 08:00 in Recife (UTC-3) is 11:00 UTC: closed; 09:00 Recife is open.
        ("+5581987654321", "2026-11-30 11:00", Verdict.HOLD),
        ("+5581987654321", "2026-11-30 12:00", Verdict.ALLOW),
    ],
)
def test_the_window_follows_the_corrected_zones(number: str, now: str, verdict: Verdict) -> None:
    window = [RouteWindow(NINE_TO_EIGHT, "UTC")]
    assert calling_decision(number, "", window, utc(now)).verdict is verdict


def test_a_user_override_wins_over_the_shipped_table_and_the_library() -> None:
    table = ZoneTable({"+5281": ["America/Monterrey"], "+5581": ["America/Noronha"]})
    assert lead_zones("+528112345678", "", "UTC", table) == ("America/Monterrey",)
    assert lead_zones("+5581987654321", "", "UTC", table) == ("America/Noronha",)


def test_a_hawaii_number_with_new_york_in_the_crm_waits_for_both() -> None:
    window = [RouteWindow(NINE_TO_EIGHT, "UTC")]
    # 09:00 in New York is 04:00 in Honolulu: held until 09:00 Honolulu (19:00 UTC).
    decided = calling_decision("+18085550100", "America/New_York", window, utc("2026-11-30 14:00"))
    assert decided.verdict is Verdict.HOLD and decided.until == utc("2026-11-30 19:00")


def test_an_alternate_number_s_zone_holds_the_lead_too() -> None:
    window = [RouteWindow(NINE_TO_EIGHT, "UTC")]
    numbers = ("+12125550100", "+18085550100")  # New York, and an alternate in Hawaii
    decided = calling_decision(numbers, "", window, utc("2026-11-30 14:10"))
    assert decided.verdict is Verdict.HOLD and "Pacific/Honolulu" in decided.zones


@pytest.mark.parametrize("name", ["EST", "IST", "CET", "GMT+5", "Mars/Base", "est5edt"])
def test_only_iana_zone_names_are_read(name: str) -> None:
    with pytest.raises(ZoneError, match=r"not an IANA zone name|not known"):
        check_zone(name)


@pytest.mark.parametrize("name", ["America/New_York", "Asia/Kolkata", "UTC"])
def test_iana_zone_names_are_accepted(name: str) -> None:
    assert check_zone(name) == name


def test_gate_explain_prints_the_zones_the_window_in_each_and_the_decision(
    tmp_path: Path,
) -> None:
    config = tmp_path / "syncd.toml"
    config.write_text(
        GATE_CONFIG.format(state=tmp_path / "state.db", inbox=tmp_path), encoding="utf-8"
    )
    shown = run_cli(
        "gate", "explain", "-c", str(config), "+18085550100",
        "--tz", "America/New_York", "--at", "2026-11-30T14:00",
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "Pacific/Honolulu: Mon 2026-11-30 04:00 HST closed" in shown.stdout
    assert "America/New_York: Mon 2026-11-30 09:00 EST open" in shown.stdout
    assert "is not among them: both are kept" in shown.stdout
    assert "held (window_closed)" in shown.stdout
    refused = run_cli("gate", "explain", "-c", str(config), "2125550100", "--tz", "EST")
    assert refused.returncode == 2 and "'EST' is not an IANA zone name" in refused.stderr


def test_gate_explain_refuses_what_the_screens_refuse_whatever_the_window(
    tmp_path: Path,
) -> None:
    config = tmp_path / "syncd.toml"
    text = GATE_CONFIG.format(state=tmp_path / "state.db", inbox=tmp_path)
    config.write_text(text + 'block_number_types = ["premium_rate"]\n', encoding="utf-8")
    at = ("--at", "2026-11-30T10:00:00-05:00")  # 15:00 UTC: 10:00 in New York, open

    placeholder = run_cli("gate", "explain", "-c", str(config), "+919999999999", *at)
    premium = run_cli("gate", "explain", "-c", str(config), "+19005550100", *at)
    both = run_cli("gate", "explain", "-c", str(config), "+19005550100", "2125550100", *at)

    assert "decision: blocked (placeholder_number)" in placeholder.stdout, placeholder.stdout
    assert "decision: blocked (number_type:premium_rate)" in premium.stdout, premium.stdout
    assert "the lead is called on +12125550100" in both.stdout, both.stdout
    assert "decision at 2026-11-30 15:00 UTC: allowed" in both.stdout  # the offset counted


GATE_CONFIG = """
[state]
path = "{state}"
[[sources]]
name = "crm"
kind = "csv_drop"
inbox = "{inbox}"
[[sinks]]
name = "jodo"
kind = "jodo"
url = "http://127.0.0.1:9/CustomerWebServices/handleCustomerWS"
apikey = "env:TEST_JODO_APIKEY"
servicekey = "VoiceProcess"
media = 12
[[routes]]
source = "crm"
sink = "jodo"
default_region = "US"
[routes.map]
key = "id"
phone = "phone"
[policy]
windows = {{ "mon-sat" = "09:00-20:00" }}
"""
