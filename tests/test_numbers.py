"""The shared-number decisions, as tables: who is set aside, which removal waits."""

from __future__ import annotations

import pytest

from syncd.core.numbers import Candidate, Holder, removal_waits, set_aside

A, B = "+919820000001", "+919820000002"


@pytest.mark.parametrize(
    ("batch", "holders", "set_aside_keys"),
    [
        pytest.param([Candidate("L2", A, False)], [], set(), id="alone: goes"),
        pytest.param(
            [Candidate("L2", A, False)],
            [Holder("L1", "delivered", True, A)],
            {"L2"},
            id="the dialer holds another lead of the number: set aside",
        ),
        pytest.param(
            [Candidate("L2", A, True)],
            [Holder("L1", "delivered", True, A)],
            set(),
            id="already in the dialer itself: an update goes",
        ),
        pytest.param(
            [Candidate("L2", A, False)],
            [Holder("L1", "pending", False, A)],
            {"L2"},
            id="an earlier key queued holds it: replicas claiming apart agree who goes",
        ),
        pytest.param(
            [Candidate("L1", A, False)],
            [Holder("L2", "pending", False, A)],
            set(),
            id="a later key queued does not",
        ),
        pytest.param(
            [Candidate("L2", A, False)],
            [Holder("L1", "inflight", False, A)],
            {"L2"},
            id="an earlier key being sent by another worker holds it",
        ),
        pytest.param(
            [Candidate("L1", A, False)],
            [Holder("L2", "inflight", False, A)],
            set(),
            id="a later key being sent elsewhere does not (no mutual set-aside)",
        ),
        pytest.param(
            [Candidate("L1", A, False), Candidate("L2", A, False), Candidate("L3", B, False)],
            [],
            {"L2"},
            id="two of one number in a batch: the first takes it",
        ),
        pytest.param(
            [Candidate("L2", A, False)],
            [Holder("L1", "delivered", True, B, (A,))],
            set(),
            id="an alternate number is no duplicate record",
        ),
    ],
)
def test_who_is_set_aside(
    batch: list[Candidate], holders: list[Holder], set_aside_keys: set[str]
) -> None:
    waits = set_aside(batch, holders, sink="jodo")
    assert set(waits) == set_aside_keys
    for wait in waits.values():
        assert wait.reason.startswith("held (same_number): same number as lead ")


@pytest.mark.parametrize(
    ("holders", "waits_for"),
    [
        pytest.param([], None, id="nobody else: the removal goes"),
        pytest.param([Holder("L2", "delivered", True, A)], "L2", id="a live main number"),
        pytest.param([Holder("L2", "delivered", True, B, (A,))], "L2", id="a live alternate"),
        pytest.param([Holder("L2", "held", False, A)], None, id="a lead set aside is not live"),
        pytest.param([Holder("L2", "pending", False, A)], None, id="queued, never sent"),
        pytest.param([Holder("L2", "pending", True, A)], "L2", id="an update of a held lead"),
        pytest.param([Holder("L2", "inflight", False, A)], "L2", id="being sent right now"),
        pytest.param([Holder("L1", "delivered", True, A)], None, id="itself"),
    ],
)
def test_which_removal_waits(holders: list[Holder], waits_for: str | None) -> None:
    wait = removal_waits("L1", [A], holders, sink="jodo")
    assert (wait.waits_for if wait else None) == waits_for
    if wait is not None:
        assert "not withdrawn from jodo: the number is also lead L2's, still live" in wait.reason
