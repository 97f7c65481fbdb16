"""One syncd per state store: a second `run --once` (cron overlapping itself) exits 75."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from syncd.errors import StoreLockedError
from syncd.run.lock import StoreLock
from syncd.simulators.faults import Faults
from tests.conftest import ROOT, Simulated, cli_env, drop_csv, jodo_config, run_cli


def test_two_run_once_at_the_same_time_one_runs_and_the_other_exits_75(
    tmp_path: Path, jodo: Simulated
) -> None:
    jodo.sim.faults.set(Faults(latency_ms=2000))  # the run that gets the lock takes a while
    config = jodo_config(tmp_path, jodo.url)
    rows = "".join(f"K{i},98450{i:05d},A,B,a@example.com,\n" for i in range(5))
    drop_csv(tmp_path / "inbox", "leads.csv", "id,phone,first,last,email,callback\n" + rows)
    command = [sys.executable, "-m", "syncd", "run", "--once", "-c", str(config)]

    runs = [
        subprocess.Popen(command, env=cli_env(), cwd=ROOT, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(p.wait(120), p.communicate()[1]) for p in runs]

    codes = sorted(code for code, _ in results)
    assert codes == [0, 75], results
    (winner,) = [p for p, (code, _) in zip(runs, results, strict=True) if code == 0]
    (message,) = [err for code, err in results if code == 75]
    assert f"in use by another syncd (pid {winner.pid})" in message
    assert "Traceback" not in message
    assert jodo.sim.received() == {f"K{i}": 1 for i in range(5)}


def test_the_lock_names_its_holder_and_is_free_again_after_release(tmp_path: Path) -> None:
    store = tmp_path / "state" / "state.db"
    with StoreLock(store):
        with pytest.raises(StoreLockedError) as caught:
            StoreLock(store).acquire()
        assert caught.value.holder == str(os.getpid())
    with StoreLock(store):
        pass


def test_the_lock_dies_with_its_holder(tmp_path: Path) -> None:
    store = tmp_path / "state" / "state.db"
    holder = (
        "import sys, time; from syncd.run.lock import StoreLock\n"
        f"StoreLock({str(store)!r}).acquire(); print('locked', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    with proc.stdout:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLockedError):
            StoreLock(store).acquire()
        proc.kill()  # kill -9: no chance to clean up
        proc.wait(10)
    with StoreLock(store):
        pass


def test_a_loser_arriving_before_the_holder_wrote_its_pid_still_names_it(tmp_path: Path) -> None:
    import fcntl
    import threading

    store = tmp_path / "state" / "state.db"
    store.parent.mkdir()
    lock_file = store.parent / "syncd.lock"
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # won, PID not written yet
    late_write = threading.Timer(0.1, lambda: os.pwrite(fd, b"4242\n", 0))
    late_write.start()
    try:
        with pytest.raises(StoreLockedError) as caught:
            StoreLock(store).acquire()
        assert caught.value.holder == "4242"
    finally:
        late_write.join()
        os.close(fd)


def test_a_state_path_that_cannot_be_written_is_a_clear_error(tmp_path: Path) -> None:
    # A folder nobody can create (its parent is a regular file) stands in for a read-only
    # file system: it fails the same way for root, which writes anywhere else.
    (tmp_path / "a-file").write_text("")
    config = tmp_path / "syncd.toml"
    config.write_text(f'[state]\npath = "{tmp_path}/a-file/state/state.db"\n', encoding="utf-8")

    result = run_cli("run", "--once", "-c", str(config))

    assert result.returncode == 1
    assert "cannot create the lock file" in result.stderr, result.stderr
    assert "state.path must point into a folder syncd can write" in result.stderr
    assert "Traceback" not in result.stderr
