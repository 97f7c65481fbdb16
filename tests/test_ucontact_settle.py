"""The rules deciding when a uContact lead may be added again, and what is removed first (pure)."""

from __future__ import annotations

from syncd.sinks.ucontact.ledger import ADD, DNC, MAYBE, NO, REMOVE, YES, Placed
from syncd.sinks.ucontact.settle import plan_add, plan_delete
from syncd.state.ledger import Placement

LIMITS = {"timeout_s": 5.0, "settle_s": 10.0}
NOW = 1_000_000.0


def test_a_lead_the_dialer_holds_is_removed_before_it_is_added_again() -> None:
    plan = plan_add(Placed("0059899000001", held=YES), NOW, **LIMITS)
    assert plan.remove and plan.wait_until is None and plan.record is None


def test_a_lead_the_dialer_refused_is_added_again_without_removal() -> None:
    plan = plan_add(Placed("0059899000001", held=NO), NOW, **LIMITS)
    assert not plan.remove and plan.wait_until is None


def test_a_blacklisted_lead_is_never_removed_from_the_dial_list() -> None:
    assert not plan_add(Placed("0059899000001", mode=DNC, held=MAYBE), NOW, **LIMITS).remove


def test_a_lead_waits_while_an_unanswered_call_may_still_land() -> None:
    for late in (ADD, REMOVE):
        placed = Placed("0059899000001", held=MAYBE, late=late, at=NOW - 1, until=NOW + 3)
        plan = plan_add(placed, NOW, **LIMITS)
        assert plan.wait_until == NOW + 3 and not plan.remove, late
        after = plan_add(placed, NOW + 3, **LIMITS)
        assert after.wait_until is None and after.remove, late


def test_a_call_cut_short_by_a_crash_settles_from_when_its_client_gave_up() -> None:
    # Sent 2 s before the restart: the client would have waited until at + timeout_s.
    crashed = Placed("0059899000001", held=MAYBE, late=ADD, at=NOW - 2, until=None)
    plan = plan_add(crashed, NOW, **LIMITS)
    assert plan.wait_until == NOW + 10.0  # the process stopped at the latest now
    assert plan.record is not None and plan.record.until == NOW + 10.0
    # Sent long ago: it has landed by now, or never will.
    old = Placed("0059899000001", held=MAYBE, late=REMOVE, at=NOW - 3600, until=None)
    plan = plan_add(old, NOW, **LIMITS)
    assert plan.wait_until is None and plan.remove


def test_a_delete_waits_for_a_late_upload_but_not_for_a_late_removal() -> None:
    upload = Placed("0059899000001", held=MAYBE, late=ADD, at=NOW, until=NOW + 10)
    removal = Placed("0059899000001", held=MAYBE, late=REMOVE, at=NOW, until=NOW + 10)
    assert plan_delete(upload, NOW, **LIMITS).wait_until == NOW + 10
    assert plan_delete(removal, NOW, **LIMITS).wait_until is None
    assert plan_delete(removal, NOW, **LIMITS).remove


def test_a_record_from_before_the_held_field_is_taken_as_maybe_held() -> None:
    # As migration 15 carries such a kv record over: no held column value.
    old = Placed.from_placement(Placement("0059899000001", mode="base"))
    assert old.held == MAYBE and old.late is None
    assert plan_add(old, NOW, **LIMITS).remove
    assert Placed.from_placement(Placed("1", held=YES, late=ADD, at=1.5).to_placement()) == (
        Placed("1", held=YES, late=ADD, at=1.5)
    )
