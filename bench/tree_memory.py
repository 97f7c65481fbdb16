"""The peak memory of a whole process tree, sampled while it runs (Linux).

PSS (proportional set size) shares each page among the processes mapping it, so the
sum over a parent and its worker processes counts a forked worker's shared pages once,
where adding RSS would count them twice. A thread samples the tree every ``every_s``
seconds and keeps the largest sum seen; a process that lived and died between two
samples is missed, which at 0.1 s only a short helper can be. ``measured_child`` runs a
command under a probe that times it too (wall, CPU of the children it waited for, peak
RSS), as the benches measure syncd and the prototypes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass
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


def cpu_of(pid: int) -> float:
    """Return the CPU seconds (user + system) of a process so far, 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


# Run in a child of its own so that its children's resource usage is the command's alone.
_PROBE = (
    "import resource, subprocess, sys, time;"
    "t = time.perf_counter(); rc = subprocess.call(sys.argv[1:]);"
    "w = time.perf_counter() - t; u = resource.getrusage(resource.RUSAGE_CHILDREN);"
    "print(w, u.ru_maxrss, rc, u.ru_utime + u.ru_stime)"
)


@dataclass
class Child:
    """What a command run under the probe cost, and what it printed."""

    wall: float  # seconds
    rss_mb: float  # peak RSS of its largest process
    rc: int
    cpu: float  # user + sys seconds of the command and the children it waited for
    pss_mb: float  # peak PSS of its whole process tree
    processes: int  # the most processes the tree held at once (the probe not counted)
    stdout: str  # without the probe's own last line
    stderr: str


def measured_child(cmd: list[str], env: dict[str, str]) -> Child:
    """Run ``cmd`` in a fresh child, sampling its tree's PSS; raise if the probe fails."""
    child = subprocess.Popen(
        [sys.executable, "-c", _PROBE, *cmd],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with TreePss(child.pid) as memory:
        stdout, stderr = child.communicate()
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, cmd, stdout, stderr)
    *printed, last = stdout.splitlines()
    wall, rss, rc, cpu = last.split()
    return Child(
        float(wall),
        int(rss) / 1024,
        int(rc),
        float(cpu),
        memory.peak_mb,
        memory.processes - 1,
        "\n".join(printed),
        stderr,
    )
