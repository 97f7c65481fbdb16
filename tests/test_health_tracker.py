"""The health tracker: a failure is logged when it starts, once more when it ends."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from syncd.core.health import HealthTracker, stable_reason
from tests.support.clock import FakeClock


def logged(steps: list[str | None]) -> list[str]:
    """Feed one subject a run of outcomes (a reason, or None for success); return what showed."""
    clock = FakeClock()
    tracker = HealthTracker(clock=clock)
    with capture_logs() as logs:
        for reason in steps:
            clock.advance(1)
            if reason is None:
                tracker.recovered("poll:jodo", event="recovered")
            else:
                tracker.failed("poll:jodo", reason, event="failed")
    return [
        f"{e['event']}:{e.get('reason', e.get('was'))}" for e in logs if e["log_level"] != "debug"
    ]


@pytest.mark.parametrize(
    ("steps", "shown"),
    [
        ([None, None], []),
        (["down", "down", "down"], ["failed:down"]),
        # recovery is an info line: the reason's code, not its text (issue 29)
        (["down", "down", None, None], ["failed:down", "recovered:failing"]),
        (["HTTP 502", "HTTP 503", "HTTP 502"], ["failed:HTTP 502"]),  # one outage
        (["timeout", "bad key"], ["failed:timeout", "failed:bad key"]),  # a new problem
        (["down", None, "down"], ["failed:down", "recovered:failing", "failed:down"]),
    ],
    ids=["never fails", "repeats", "recovers", "numbers aside", "reason changes", "again"],
)
def test_what_is_logged(steps: list[str | None], shown: list[str]) -> None:
    assert logged(steps) == shown


def test_a_failure_keeps_its_start_and_counts_its_repeats() -> None:
    clock = FakeClock(100.0)
    tracker = HealthTracker(clock=clock)
    tracker.failed("sink:jodo", "ConnectError", event="x")
    clock.advance(30)
    tracker.failed("sink:jodo", "ConnectError", event="x")
    failure = tracker.failure("sink:jodo")
    assert failure is not None and (failure.since, failure.times) == (100.0, 2)
    assert set(tracker.failing("sink:")) == {"sink:jodo"}
    tracker.recovered("sink:jodo", event="y")
    assert tracker.failure("sink:jodo") is None


def test_a_failure_remembered_from_an_earlier_process_is_not_logged_as_new() -> None:
    tracker = HealthTracker(clock=FakeClock())
    tracker.remember("writeback:crm", "HTTP 401")
    with capture_logs() as logs:
        assert not tracker.failed("writeback:crm", "HTTP 401", event="failing")
    assert [e["log_level"] for e in logs] == ["debug"]


def test_volatile_parts_do_not_split_a_reason() -> None:
    assert stable_reason("session 3f9a1c0e-77 expired after 180 s") == stable_reason(
        "session 9b2d44aa-12 expired after 181 s"
    )
    assert stable_reason("check apikey") == "check apikey"


def test_status_groups_failure_reasons_that_differ_only_in_ids() -> None:
    from syncd.run.status import group_reasons

    rows = [
        ("ameyo", "session d431-a8f86302-ses-syncd-3 refused again", 4),
        ("ameyo", "session d431-f9b727ce-ses-syncd-4 refused again", 3),
        ("jodo", "Invalid mobile number", 2),
    ]
    assert group_reasons(rows) == [
        ("ameyo", "session d431-a8f86302-ses-syncd-3 refused again", 7),
        ("jodo", "Invalid mobile number", 2),
    ]
