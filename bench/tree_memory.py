"""The peak memory of a whole process tree, sampled while it runs (Linux).

PSS (proportional set size) shares each page among the processes mapping it, so the
sum over a parent and its worker processes counts a forked worker's shared pages once,
where adding RSS would count them twice. A thread samples the tree every ``every_s``
seconds and keeps the largest sum seen; a process that lived and died between two
samples is missed, which at 0.1 s only a short helper can be.
"""

from __future__ import annotations

import threading
from pathlib import Path


def tree(pid: int) -> list[int]:
    """Return ``pid`` and its descendants alive now."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def pss_kb(pid: int) -> int:
    """Return a process's PSS in kB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class TreePss:
    """Sample a process tree's summed PSS until stopped; ``peak_mb`` is the largest seen."""

    def __init__(self, pid: int, every_s: float = 0.1) -> None:
        self.pid, self.every_s = pid, every_s
        self.peak_kb = 0
        self.processes = 0  # the most processes the tree held at once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> TreePss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def peak_mb(self) -> float:
        return self.peak_kb / 1024

    def _sample(self) -> None:
        while not self._stop.is_set():
            pids = tree(self.pid)
            self.processes = max(self.processes, len(pids))
            self.peak_kb = max(self.peak_kb, sum(pss_kb(p) for p in pids))
            self._stop.wait(self.every_s)
