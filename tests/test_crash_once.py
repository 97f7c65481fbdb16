"""kill -9 in the middle of `run --once`, run again: nothing lost, nothing corrupt."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from syncd.simulators.faults import Faults
from tests.conftest import ROOT, Simulated, cli_env, drop_csv, jodo_config, run_cli


def big_export(n: int) -> str:
    rows = [f"L{i},F{i},L{i},98{i:08d},,\n" for i in range(n)]
    return "id,first,last,phone,email,callback\n" + "".join(rows)


def start_once(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "syncd", "run", "--once", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        env=cli_env(),
        cwd=ROOT,
    )


def wait_for(condition: object, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def assert_store_intact(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "state" / "state.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_kill_9_while_pushing_then_rerun_delivers_every_lead(
    jodo: Simulated, tmp_path: Path
) -> None:
    n = 2000
    jodo.sim.faults.set(Faults(latency_ms=40))
    config = jodo_config(tmp_path, jodo.url, batch_size=50)
    drop_csv(tmp_path / "inbox", "big.csv", big_export(n))

    proc = start_once(config)
    wait_for(lambda: 300 <= len(jodo.sim.records()))
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    held = len(jodo.sim.records())
    assert held < n, "the run finished before it could be killed"
    assert_store_intact(tmp_path)

    jodo.sim.faults.set(Faults())
    result = run_cli("run", "--once", "-c", str(config))
    assert result.returncode == 0, result.stderr
    keys = {r["leadnumber"] for r in jodo.sim.records()}
    assert keys == {f"L{i}" for i in range(n)}
    # At-least-once: only batches in flight at the kill may be sent twice, never more.
    received = jodo.sim.received()
    assert sum(received.values()) - n <= 2 * 50 * 2
    assert max(received.values()) <= 2
    assert_store_intact(tmp_path)
    assert (tmp_path / "inbox" / "done" / "big.csv").exists()


def test_kill_9_while_reading_a_file_resumes_where_it_committed(
    jodo: Simulated, tmp_path: Path
) -> None:
    n = 30000
    config = jodo_config(tmp_path, jodo.url, chunk_rows=500, batch_size=500)
    drop_csv(tmp_path / "inbox", "big.csv", big_export(n))
    proc = start_once(config)

    def some_chunks_committed() -> bool:
        try:
            with sqlite3.connect(tmp_path / "state" / "state.db", timeout=1) as conn:
                return bool(conn.execute("SELECT COUNT(*) FROM leads").fetchone()[0] >= 2000)
        except sqlite3.Error:
            return False

    wait_for(some_chunks_committed)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert (tmp_path / "inbox" / "processing" / "big.csv").exists()

    result = run_cli("run", "--once", "-c", str(config), timeout=300)
    assert result.returncode == 0, result.stderr
    assert {r["leadnumber"] for r in jodo.sim.records()} == {f"L{i}" for i in range(n)}
    assert max(jodo.sim.received().values()) <= 2
    assert (tmp_path / "inbox" / "done" / "big.csv").exists()
    assert_store_intact(tmp_path)
