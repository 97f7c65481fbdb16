"""The collector during a `--once` pass (syncd.run.heap): start-up frozen for the pass only."""

from __future__ import annotations

import gc

import pytest

from syncd.run.heap import started_up


def test_start_up_is_frozen_for_the_pass_only() -> None:
    gc.unfreeze()
    with started_up():
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_a_failing_pass_unfreezes_too() -> None:
    gc.unfreeze()
    with pytest.raises(RuntimeError), started_up():
        raise RuntimeError("the store failed")
    assert gc.get_freeze_count() == 0
