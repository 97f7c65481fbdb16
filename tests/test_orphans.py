"""kill -9 of syncd's main process alone — what the OOM killer does — leaves nothing behind.

The pull's mapping workers used to be forked: they kept the dead process's store lock
(the next cron run exited 75 "in use by another syncd (pid N)" with N long dead) and its
PostgreSQL socket (its transaction stayed open with row locks the other replicas waited
on). The test suite's other kills take the whole process group, which hides it; these
kill the main PID only, as the kernel does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from tests.conftest import ROOT, Simulated, cli_env, database_url, drop_csv, jodo_config, run_cli
from tests.test_crash_once import big_export, wait_for

LEADS = 20_000


def children() -> dict[int, list[int]]:
    """Return each live process's children (zombies count as gone)."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if state != "Z":
            tree.setdefault(int(ppid), []).append(int(entry))
    return tree


def descendants(pid: int) -> set[int]:
    tree, found, todo = children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def workers(pid: int) -> set[int]:
    """Return the descendants of ``pid`` that are Python processes of syncd's own (a forked
    worker runs syncd's command line, a fork server's children multiprocessing's)."""
    found = set()
    for child in descendants(pid):
        try:
            line = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"syncd" in line or b"multiprocessing" in line:
            found.add(child)
    return found


def alive(pids: set[int]) -> set[int]:
    live = {p for kids in children().values() for p in kids}
    return pids & live


def pulling_config(tmp_path: Path, url: str, state: str = "") -> Path:
    path = jodo_config(tmp_path, url, chunk_rows=5000)
    text = path.read_text() + "\n[run]\nnormalize_processes = 2\n"
    if state:  # the [state] section's path line gives way to the shared store's
        head, _, rest = text.partition("[state]\n")
        text = head + "[state]\n" + state + rest.split("\n", 1)[1]
    path.write_text(text)
    return path


def kill_main_while_mapping(config: Path) -> set[int]:
    """Start `run --once`, kill -9 its main process while its mapping workers run; return
    the worker processes it had started."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "run", "--once", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=cli_env(),
        cwd=ROOT,
    )
    wait_for(lambda: len(workers(proc.pid)) >= 2, timeout=60)  # the pull's workers are up
    started = workers(proc.pid)
    proc.send_signal(signal.SIGKILL)  # the main PID alone
    proc.wait(10)
    return started


def test_the_workers_die_with_the_main_process_and_the_next_run_goes_on(
    jodo: Simulated, tmp_path: Path
) -> None:
    config = pulling_config(tmp_path, jodo.url)
    drop_csv(tmp_path / "inbox", "big.csv", big_export(LEADS))

    started = kill_main_while_mapping(config)
    wait_for(lambda: not alive(started), timeout=30)
    again = run_cli("run", "--once", "-c", str(config), timeout=300)

    assert again.returncode == 0, again.stderr[-2000:]
    assert len({r["leadnumber"] for r in jodo.sim.records()}) == LEADS


def test_on_postgresql_the_dead_process_holds_no_lock_the_next_run_waits_on(
    jodo: Simulated, tmp_path: Path
) -> None:
    url = database_url("SYNCD_TEST_PG_URL")
    schema = f"orphans_{uuid.uuid4().hex[:8]}"
    config = pulling_config(
        tmp_path,
        jodo.url,
        state=f'url = "{url}"\nschema_name = "{schema}"\nleader_ttl_s = 4\nlease_s = 5\n',
    )
    drop_csv(tmp_path / "inbox", "big.csv", big_export(LEADS))

    started = kill_main_while_mapping(config)
    wait_for(lambda: not alive(started), timeout=30)
    # The dead process still leads the pull until its lease lapses: the next runs say so,
    # then one of them reads the file (forked orphans held the dead transaction's row
    # locks, and every run after it waited on them for good).
    runs = []

    def delivered() -> bool:
        runs.append(run_cli("run", "--once", "-c", str(config), timeout=300))
        return len({r["leadnumber"] for r in jodo.sim.records()}) == LEADS

    wait_for(delivered, timeout=180)

    assert all(r.returncode == 0 for r in runs), [r.stderr[-500:] for r in runs]
    for waiting in runs[:-1]:
        assert "crm: another replica reads this source now" in waiting.stdout
