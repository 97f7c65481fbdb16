"""The audit's facts, the policy version and how a stored event reads: pure, table-tested."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from syncd.cli.audit import COLUMNS, audit_record, csv_cells, decision_of
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


def stored(kind: str, detail: str = "", **row: Any) -> dict[str, Any]:
    at = datetime(2026, 11, 30, 15, 0, tzinfo=UTC).timestamp()
    return {"at": at, "sink": "jodo", "key": "L1", "kind": kind, "detail": detail, **row}


@pytest.mark.parametrize(
    ("kind", "facts", "decision"),
    [
        ("gate.held", Facts(code="window_closed"), "held"),
        ("gate.blocked", Facts(code="dnc_crm"), "blocked"),
        ("gate.withdrawn", Facts(code="dnc_list:ndnc"), "withdrawal_queued"),
        ("gate.call_at_moved", Facts(code="call_at_moved"), "call_at_moved"),
        ("push.delivered", Facts(action="upsert"), "pushed"),
        ("push.delivered", Facts(action="delete", withdrawn="dnc_crm"), "withdrawn"),
        ("push.delivered", Facts(action="delete"), "removed"),
        ("push.waits", Facts(action="delete"), "removal_waiting"),
        ("push.waits", Facts(action="upsert"), "set_aside"),
        ("push.rejected", Facts(action="upsert"), "refused_by_dialer"),
        ("push.rejected", Facts(action="upsert", code="window_never_open"), "blocked"),
        ("push.retry", Facts(), "retry"),
        ("push.failed", Facts(), "failed"),
    ],
)
def test_each_event_reads_as_a_decision(kind: str, facts: Facts, decision: str) -> None:
    assert decision_of(kind, facts) == decision


def test_an_event_from_before_the_facts_reads_the_lead_and_its_reason() -> None:
    lead = '{"key":"L1","phone":"+12125550100","alt_phones":[]}'
    detail = "held (window_closed): outside the calling window"
    record = audit_record(stored("gate.held", detail, lead_json=lead), {"jodo": "UTC"})
    assert record["numbers"] == ["+12125550100"] and record["zones"] == ["America/New_York"]
    assert record["at_local"] == ["2026-11-30 10:00:00 EST"]
    assert (record["rule"], record["policy_version"]) == ("window_closed", "")


def test_a_removal_shows_the_numbers_and_zones_of_the_leads_earlier_decision() -> None:
    earlier = Facts(numbers=("+919820012345",), zones=("Asia/Calcutta",), policy="v1")
    removal = Facts(action="delete", withdrawn="dnc_crm", policy="v2", reply="status 3")
    row = stored("push.delivered", facts=removal.to_json(), known=earlier.to_json())
    record = audit_record(row, {"jodo": "UTC"})
    assert record["numbers"] == ["+919820012345"] and record["zones"] == ["Asia/Calcutta"]
    assert record["at_local"] == ["2026-11-30 20:30:00 IST"]
    assert (record["decision"], record["rule"], record["policy_version"]) == (
        "withdrawn",
        "dnc_crm",
        "v2",
    )
    assert record["dialer_answer"] == "status 3"


def test_csv_cells_defuse_formulas_but_leave_numbers_readable() -> None:
    facts = Facts(numbers=("+12125550100", "+12125550101"), zones=("America/New_York",))
    row = stored("gate.blocked", "=HYPERLINK(1)", facts=facts.to_json())
    cells = dict(zip(COLUMNS, csv_cells(audit_record(row, {})), strict=True))
    assert cells["numbers"] == "+12125550100 +12125550101"
    assert cells["reason"] == "'=HYPERLINK(1)"
