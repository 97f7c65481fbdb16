"""Run a command and tell its peak memory: ``python peak_rss.py OUT -- CMD ARGS…``.

A process's RUSAGE_CHILDREN counts every child it ever waited for, so a test that
measured it directly would count each earlier `syncd` it ran. This wrapper is a fresh
process whose only child is the command: it runs it (stdin, stdout and stderr passed
through), writes the child's peak resident set size in bytes to OUT, and exits with the
command's exit code.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path


def run_measured(
    command: list[str], *, env: dict[str, str], cwd: Path, timeout: float, scratch: Path
) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run ``command`` under this wrapper; return how it ended and its peak RSS in bytes."""
    out = scratch / "peak_rss.txt"
    done = subprocess.run(
        [sys.executable, __file__, str(out), "--", *command],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )
    return done, int(out.read_text(encoding="utf-8"))


def main(argv: list[str]) -> int:
    out, sep, *command = argv
    assert sep == "--" and command, "usage: peak_rss.py OUT -- CMD ARGS…"
    code = subprocess.run(command, check=False).returncode
    kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    Path(out).write_text(str(kib * 1024), encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
