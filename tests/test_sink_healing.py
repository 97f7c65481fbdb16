"""A stopped sink heals without a human: re-checked from a few seconds, backing off to
``run.sink_recheck_s``, and saying once that it works again (issue 24)."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from syncd.run.engine import Engine
from syncd.run.sinks import FIRST_RECHECK_S, recheck_wait
from syncd.simulators.ameyo.api import AmeyoSimulator, create_app
from syncd.simulators.server import running
from syncd.state import open_store
from tests.support.clock import FakeClock
from tests.support.reliability import AMEYO_PASSWORD, ameyo_sink, settings_for, write_config

WAITS = [
    # (failures in a row, cap, wait)
    (1, 300.0, 5.0),
    (2, 300.0, 10.0),
    (3, 300.0, 20.0),
    (7, 300.0, 300.0),  # 320 capped
    (50, 300.0, 300.0),
    (1, 2.0, 2.0),  # a recheck interval shorter than the first wait wins
]


@pytest.mark.parametrize(("failures", "cap", "wait"), WAITS)
def test_a_stopped_sink_is_asked_again_from_a_few_seconds_doubling_up_to_the_cap(
    failures: int, cap: float, wait: float
) -> None:
    assert recheck_wait(failures, cap) == wait


async def test_a_password_revoked_for_a_while_heals_by_itself_within_seconds_and_says_so_once(
    tmp_path: Path,
) -> None:
    sim = AmeyoSimulator(users={"syncd": AMEYO_PASSWORD}, dialing=False)
    clock = FakeClock(1_800_000_000.0)
    with running(create_app(sim)) as url:
        config = write_config(tmp_path, [ameyo_sink(url)], run={"sink_recheck_s": 300})
        settings = settings_for(config)
        store = await open_store(str(settings.state.path))
        engine = Engine(settings, store, clock=clock)
        try:
            with sim.lock:
                sim.users = {}  # the user's password revoked at the dialer
            with capture_logs() as logs:
                await engine.open()
                slot = engine.sinks["ameyo"]
                assert not slot.working

                clock.advance(FIRST_RECHECK_S - 1)
                assert await engine.recheck() == []  # not yet
                clock.advance(1)
                assert await engine.recheck() == []  # asked, still revoked: next in 10 s
                assert not engine.sinks["ameyo"].working

                with sim.lock:
                    sim.users = {"syncd": AMEYO_PASSWORD}  # the dialer's admin puts it back
                clock.advance(2 * FIRST_RECHECK_S - 1)
                assert await engine.recheck() == []
                clock.advance(1)
                assert await engine.recheck() == ["ameyo"]  # 15 s after the revocation
                assert engine.sinks["ameyo"].working
                assert await engine.recheck() == []
        finally:
            await engine.close()
            await store.close()

    stopped = [e for e in logs if e["event"] == "sink.stopped" and e["log_level"] != "debug"]
    recovered = [e for e in logs if e["event"] == "sink.recovered"]
    assert len(stopped) == 1  # the second refusal is the same failure: not logged again
    assert len(recovered) == 1 and recovered[0]["sink"] == "ameyo"
