"""The audit's facts and the policy version: pure, table-tested."""

from __future__ import annotations

from typing import Any

import pytest

from syncd.config import PolicyConfig, RouteConfig
from syncd.core.audit import Facts, policy_version, route_policy_version, sink_policy_version

BASE: dict[str, Any] = {"windows": {"mon-fri": "09:00-20:00"}, "dnc_lists": []}


def version(**changes: Any) -> str:
    return policy_version(PolicyConfig.model_validate({**BASE, **changes}), "Asia/Kolkata")


def test_the_same_settings_give_the_same_short_version() -> None:
    assert version() == version()
    assert len(version()) == 12 and int(version(), 16) >= 0
    assert policy_version(None) == ""


@pytest.mark.parametrize(
    "change",
    [
        {"windows": {"mon-fri": "08:00-20:00"}},
        {"holidays": ["2026-12-25"]},
        {"min_minutes_left": 30},
        {"zone_overrides": [{"prefix": "+52614", "zones": ["America/Chihuahua"]}]},
        {"require_consent": True},
        {"consent_max_age_days": 365},
        {"dnc_column": "dnc"},
        {"block_number_types": ["toll_free"]},
        {"call_at_outside_window": "refuse"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_any_gate_setting_changes_the_version(change: dict[str, Any]) -> None:
    assert version(**change) != version()


def test_the_routes_zone_for_unplaced_numbers_is_part_of_the_version() -> None:
    policy = PolicyConfig.model_validate(BASE)
    assert policy_version(policy, "UTC") != policy_version(policy, "Asia/Kolkata")


def route(sink: str, windows: str) -> RouteConfig:
    return RouteConfig.model_validate(
        {
            "source": "crm",
            "sink": sink,
            "default_region": "IN",
            "map": {"key": "id", "phone": "phone"},
            "policy": {"windows": {"all": windows}},
        }
    )


def test_a_sink_fed_by_one_route_has_that_routes_version_and_by_two_both() -> None:
    a, b = route("jodo", "09:00-20:00"), route("jodo", "10:00-18:00")
    assert sink_policy_version([a], "jodo") == route_policy_version(a)
    both = sink_policy_version([a, b], "jodo")
    assert both == sink_policy_version([b, a], "jodo")
    assert set(both.split("+")) == {route_policy_version(a), route_policy_version(b)}
    assert sink_policy_version([a], "ucontact") == ""


def test_facts_keep_what_is_set_and_read_back_the_same() -> None:
    facts = Facts(numbers=("+12125550100",), zones=("America/New_York",), code="window_closed")
    text = facts.to_json()
    assert text == (
        '{"code":"window_closed","numbers":["+12125550100"],"zones":["America/New_York"]}'
    )
    assert Facts.from_json(text) == facts
    assert Facts().to_json() == ""


@pytest.mark.parametrize("text", [None, "", "not json", "[1, 2]", '{"numbers": "x", "n": 1}'])
def test_unreadable_facts_read_as_none(text: str | None) -> None:
    assert Facts.from_json(text) == Facts()
