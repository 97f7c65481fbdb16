"""Dead letters: leads that run out of attempts are kept with their reason and can be retried."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from syncd.simulators.faults import Faults
from tests.conftest import Simulated, drop_csv, run_cli
from tests.support.reliability import export, jodo_sink, write_config


def lead_rows(state_db: Path) -> dict[str, tuple[str, int, str | None]]:
    with sqlite3.connect(state_db) as conn:
        rows = conn.execute("SELECT key, state, attempts, last_error FROM leads").fetchall()
    return {key: (state, attempts, error) for key, state, attempts, error in rows}


def test_exhausted_leads_become_failed_then_retry_puts_them_back(
    jodo: Simulated, tmp_path: Path
) -> None:
    jodo.sim.faults.set(Faults(error_rate=1.0, seed=1))  # the dialer is down
    config = write_config(
        tmp_path, [jodo_sink(jodo.url, max_attempts=2, retry_base_s=0.05, retry_max_s=0.1)]
    )
    drop_csv(tmp_path / "inbox", "a.csv", export(3))
    state_db = tmp_path / "state" / "state.db"

    down = run_cli("run", "--once", "-c", str(config))

    assert down.returncode == 1  # leads remain failed
    rows = lead_rows(state_db)
    assert {k: (s, a) for k, (s, a, _) in rows.items()} == {
        "L0": ("failed", 2),
        "L1": ("failed", 2),
        "L2": ("failed", 2),
    }
    reason = rows["L0"][2] or ""
    assert "jodo: HTTP 50" in reason and "(gave up after 2 attempts)" in reason

    status = run_cli("status", "-c", str(config))
    assert status.returncode == 0
    assert "refused and failed leads by reason" in status.stdout
    assert "gave up after 2 attempts" in status.stdout
    assert any(" 3 " in line and "gave up" in line for line in status.stdout.splitlines())

    explain = run_cli("explain", "L1", "-c", str(config))
    assert explain.returncode == 0
    assert "failed (attempts 2" in explain.stdout
    assert "a.csv line 3" in explain.stdout  # where it was read
    assert "push.retry" in explain.stdout and "push.failed" in explain.stdout

    # The dialer is back. One lead first, by key; the others stay dead letters.
    jodo.sim.faults.set(Faults())
    one = run_cli("retry", "--sink", "jodo", "--key", "L1", "-c", str(config))
    assert one.returncode == 0 and "1 lead(s) of jodo back in the outbox" in one.stdout
    assert run_cli("run", "--once", "-c", str(config)).returncode == 0
    assert {r["leadnumber"] for r in jodo.sim.records()} == {"L1"}
    assert lead_rows(state_db)["L0"][0] == "failed"

    # Then the rest, by (part of) their reason.
    rest = run_cli("retry", "--sink", "jodo", "--reason", "gave up", "-c", str(config))
    assert "2 lead(s) of jodo back in the outbox" in rest.stdout
    again = run_cli("run", "--once", "-c", str(config))
    assert again.returncode == 0, again.stderr
    assert {r["leadnumber"] for r in jodo.sim.records()} == {"L0", "L1", "L2"}
    assert all(n == 1 for n in jodo.sim.received().values())
    assert {s for s, _, _ in lead_rows(state_db).values()} == {"delivered"}

    history = run_cli("explain", "L0", "-c", str(config)).stdout
    assert history.index("push.failed") < history.index("push.delivered")
    assert "refused and failed leads by reason" not in run_cli("status", "-c", str(config)).stdout


def test_a_retry_that_matches_nothing_says_so(jodo: Simulated, tmp_path: Path) -> None:
    config = write_config(tmp_path, [jodo_sink(jodo.url)])
    drop_csv(tmp_path / "inbox", "a.csv", export(2))
    assert run_cli("run", "--once", "-c", str(config)).returncode == 0

    result = run_cli("retry", "--sink", "jodo", "--reason", "no such reason", "-c", str(config))

    assert result.returncode == 0
    assert "0 lead(s) of jodo back in the outbox" in result.stdout


def test_retry_for_an_unknown_sink_is_a_configuration_error(
    jodo: Simulated, tmp_path: Path
) -> None:
    config = write_config(tmp_path, [jodo_sink(jodo.url)])

    result = run_cli("retry", "--sink", "nosuch", "-c", str(config))

    assert result.returncode == 2
    assert "no sink named 'nosuch'" in result.stderr


def test_retry_and_explain_before_any_run_say_there_is_no_store_yet(
    jodo: Simulated, tmp_path: Path
) -> None:
    config = write_config(tmp_path, [jodo_sink(jodo.url)])

    for args in (("retry", "--sink", "jodo"), ("explain", "L1")):
        result = run_cli(*args, "-c", str(config))
        assert result.returncode == 1
        assert "no state store" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "state").exists()  # looking did not create one
