"""The calling window at the dialer, swept: two days across the US autumn change, every
30 minutes, the whole pipeline on a fake clock, each dialer asked who it could ring.

A dialer syncd can hold to the window (a start and an expiry or a withdrawal per record)
rings nobody outside it; one it cannot hold is named by ``syncd check``. The 17-day
sweep of issue 25 is ``bench/bench_window_sweep.py``; ``tests/support/sweep.py`` says how
the truth is kept apart from syncd's own zone table.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from tests.conftest import run_cli
from tests.support.reliability import vendor_env
from tests.support.sweep import dialers, report, sweep, sweep_config

TWO_DAYS = ((date(2026, 10, 31), 2),)  # Saturday, then Sunday 1 November (US clocks back)


async def test_a_dialer_held_to_the_window_rings_nobody_outside_it(tmp_path: Path) -> None:
    result = await sweep(tmp_path, TWO_DAYS, step_minutes=30)
    text = report(result)
    held = {name for name, t in result.sinks.items() if t.held}

    assert held == {"ameyo", "ucontact"}, text
    for name in held:
        tally = result.sinks[name]
        assert tally.outside_minutes == 0, text
        assert tally.ringable_steps > 0, text  # it was given leads to ring, inside
    # Jodo takes a start time but no end: its leads stay ringable after the close; the
    # sweep sees it, and that is why `syncd check` names it.
    assert result.sinks["jodo"].outside_minutes > 0, text


def test_check_names_every_sink_it_cannot_hold_to_the_window(tmp_path: Path) -> None:
    from tests.support.clock import FakeClock

    with dialers(FakeClock()) as (_, urls):
        path = sweep_config(tmp_path, urls)
        done = run_cli("check", "-c", str(path), env=vendor_env())

    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stdout.splitlines() if line.startswith("WARNING: ")]
    [window] = [w for w in warnings if "calling window" in w]
    assert window.startswith("WARNING: sink jodo (jodo): calling window"), done.stdout
    assert "NOT held to the window's close" in window and "queue_ahead_minutes" in window
    [withdrawals] = [w for w in warnings if "withdrawals" in w]  # this Jodo cannot dispose
    assert "sink jodo" in withdrawals and "on_delete" in withdrawals
    held = [line for line in done.stdout.splitlines() if line.startswith("sink ")]
    assert [line.split()[1] for line in held] == ["ameyo", "ucontact"], done.stdout
