"""`syncd run --once` on a terminal: the progress bars and the log lines share the screen.

Run the way a person runs it: a subprocess on a pseudo-terminal, console logs, a
simulated dialer. What reaches the terminal is read back and checked line by line.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest

from syncd.simulators.jodo.api import JodoSimulator, create_app
from syncd.simulators.server import running
from tests.conftest import ROOT, cli_env, drop_csv, jodo_config, run_cli

HEADER = "id,first,last,phone,email,callback\n"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
# A console log line begins with its ISO timestamp, then the level in brackets.
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[.\d]*Z \[\s*(info|warning|error)\s*\]")


def leads(n: int) -> str:
    rows = (f"L{i},First{i},Last{i},98200{i:05d},l{i}@x.in," for i in range(n))
    return HEADER + "".join(r + "\n" for r in rows)


def on_terminal(*args: str, timeout: float = 120) -> tuple[int, str]:
    """Run `syncd ARGS` on a pseudo-terminal (stdin, stdout, stderr); return its exit code
    and everything it wrote there."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", *args],
        stdin=secondary, stdout=secondary, stderr=secondary,
        env=cli_env(COLUMNS="200", LINES="50", TERM="xterm"), cwd=ROOT, close_fds=True,
    )  # fmt: skip
    os.close(secondary)
    seen = bytearray()
    try:
        while True:
            ready, _, _ = select.select([primary], [], [], timeout)
            if not ready:
                raise AssertionError(f"nothing on the terminal for {timeout} s: {seen[-2000:]!r}")
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the process closed the terminal's last descriptor
                break
            if not chunk:
                break
            seen += chunk
        code = proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(primary)
    return code, seen.decode("utf-8", "replace")


def screen_pieces(raw: str) -> list[str]:
    """Return the text runs a terminal starts at the left margin: ANSI sequences removed,
    split at each newline and carriage return."""
    return [p for line in ANSI.sub("", raw).split("\n") for p in line.split("\r")]


def broken_log_lines(raw: str) -> list[str]:
    """Return the pieces holding a log line that does not start at the left margin —
    a bar's redraw or another fragment printed in front of (or into) it."""
    return [p for p in screen_pieces(raw) if LOG_LINE.search(p) and not LOG_LINE.match(p)]


def run_on_terminal(
    tmp_path: Path, n: int, log_format: str = "console", terminal: bool = True
) -> tuple[int, str]:
    """Deliver ``n`` leads with `syncd run --once`; return its exit code and what it wrote
    (on a pseudo-terminal, or else on pipes: stderr, then stdout)."""
    sim = JodoSimulator()
    with running(create_app(sim)) as url:
        config = jodo_config(tmp_path, url, chunk_rows=200)
        text = config.read_text(encoding="utf-8")
        config.write_text(text.replace('format = "json"', f'format = "{log_format}"'), "utf-8")
        drop_csv(tmp_path / "inbox", "leads.csv", leads(n))
        if terminal:
            code, raw = on_terminal("run", "--once", "-c", str(config))
        else:
            piped = run_cli("run", "--once", "-c", str(config))
            code, raw = piped.returncode, piped.stderr + piped.stdout
        assert len(sim.records()) == n, raw[-3000:]
    return code, raw


def test_log_lines_print_whole_above_the_bars(tmp_path: Path) -> None:
    code, raw = run_on_terminal(tmp_path, 3000)
    assert code == 0, raw[-3000:]
    pieces = screen_pieces(raw)
    logged = [p for p in pieces if LOG_LINE.match(p)]
    assert any("run.phase" in p for p in logged), raw[-3000:]  # lines were logged
    assert any("pull crm" in p for p in pieces), raw[-3000:]  # while the bar showed
    assert broken_log_lines(raw) == []


def test_the_push_has_a_bar_per_sink_with_its_rate(tmp_path: Path) -> None:
    code, raw = run_on_terminal(tmp_path, 3000)
    assert code == 0, raw[-3000:]
    pushes = [p for p in screen_pieces(raw) if p.startswith("push jodo")]
    assert pushes, raw[-3000:]
    assert any(re.search(r" 3000/3000 leads ", p) for p in pushes), pushes[-3:]
    assert any(re.search(r" [\d,]+ leads/s ", p) for p in pushes), pushes[-3:]


@pytest.mark.parametrize(("log_format", "terminal"), [("json", True), ("console", False)])
def test_no_bars_for_json_logs_or_off_a_terminal(
    tmp_path: Path, log_format: str, terminal: bool
) -> None:
    # JSON lines are read by a machine, and off a terminal nobody sees a bar: its
    # redraws would only be noise in the log.
    code, raw = run_on_terminal(tmp_path, 300, log_format, terminal)
    assert code == 0, raw[-3000:]
    assert "run.finished" in raw  # the logs are there
    assert "pull crm" not in raw and "push jodo" not in raw, raw[-3000:]
