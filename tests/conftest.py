"""Shared fixtures: real simulators on loopback, temp configs, the CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from syncd.simulators.jodo.api import JodoSimulator, create_app
from syncd.simulators.server import running
from tests.support.files import settled

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Simulated:
    sim: Any
    url: str


@pytest.fixture
def jodo() -> Iterator[Simulated]:
    """A Jodo simulator served over real loopback HTTP (apikey test_org, VoiceProcess)."""
    sim = JodoSimulator()
    with running(create_app(sim)) as url:
        yield Simulated(sim, url)


JODO_CONFIG = """\
[state]
path = "{state}"

[log]
level = "info"
format = "json"

[[sources]]
name = "crm"
kind = "csv_drop"
inbox = "{inbox}"
chunk_rows = {chunk_rows}

[[sinks]]
name = "jodo"
kind = "jodo"
url = "{url}/CustomerWebServices/handleCustomerWS"
apikey = "env:TEST_JODO_APIKEY"
servicekey = "{servicekey}"
media = 12
updateparam = "crmuniquefield"
dial_format = "{dial_format}"
batch_size = {batch_size}
retry_base_s = 0.1
retry_max_s = 0.5
max_attempts = {max_attempts}

[[routes]]
source = "crm"
sink = "jodo"
default_region = "IN"
[routes.map]
key = "id"
phone = "phone"
first_name = "first"
last_name = "last"
email = "email"
call_at = "callback"
"""


def jodo_config(tmp_path: Path, url: str, **overrides: Any) -> Path:
    """Write a CSV-drop → Jodo config under tmp_path and return its path."""
    values = {
        "state": str(tmp_path / "state" / "state.db"),
        "inbox": str(tmp_path / "inbox"),
        "url": url,
        "servicekey": "VoiceProcess",
        "dial_format": "00",
        "batch_size": 50,
        "chunk_rows": 1000,
        "max_attempts": 5,
        **overrides,
    }
    (tmp_path / "inbox").mkdir(exist_ok=True)
    path = tmp_path / "syncd.toml"
    path.write_text(JODO_CONFIG.format(**values), encoding="utf-8")
    return path


def drop_csv(inbox: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    """Drop a CSV the documented way (write name.part, then rename), finished a while ago."""
    inbox.mkdir(parents=True, exist_ok=True)
    part = inbox / f"{name}.part"
    part.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    final = inbox / name
    part.rename(final)
    return settled(final)


def cli_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SYNCD_") or k.startswith("SYNCD_TEST_")
    }
    env.update({"TEST_JODO_APIKEY": "test_org", "PYTHONUNBUFFERED": "1"}, **extra)
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `syncd ARGS` as a subprocess (the way cron or a user runs it)."""
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        capture_output=True,
        text=True,
        env=env or cli_env(),
        timeout=timeout,
        cwd=ROOT,
    )


def promtool() -> str:
    """Return promtool's path, failing under CI (and skipping elsewhere) when it is missing.

    `.ci/run` installs it (Debian's prometheus package): CI must check the alert rules.
    """
    import shutil

    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is not installed; CI must test the alert rules with it")
        pytest.skip("promtool is not installed")
    return found


def database_url(name: str) -> str:
    """Return the URL in $name, failing under CI (and skipping elsewhere) when it is unset."""
    url = os.environ.get(name)
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not set; CI must run the real-database tests")
        pytest.skip(f"{name} not set")
    return url


# -- the daemon (`syncd run`) as a subprocess ------------------------------------------


def daemon_config(
    tmp_path: Path,
    url: str,
    *,
    interval_s: float = 0.5,
    run: dict[str, float] | None = None,
    **overrides: Any,
) -> Path:
    """Write jodo_config() plus a short pull schedule, an ephemeral health port and [run]."""
    run_table = {"shutdown_grace_s": 10.0, "sink_recheck_s": 1.0, **(run or {})}
    path = jodo_config(tmp_path, url, **overrides)
    schedule = f"schedule = {{ interval_s = {interval_s} }}"
    text = path.read_text(encoding="utf-8").replace(
        'kind = "csv_drop"\n', f'kind = "csv_drop"\n{schedule}\n', 1
    )
    header = (
        '[health]\nlisten = "127.0.0.1:0"\n\n'
        "[run]\n" + "".join(f"{k} = {v}\n" for k, v in run_table.items()) + "\n"
    )
    path.write_text(header + text, encoding="utf-8")
    return path


class DaemonProcess:
    """`syncd run` in a subprocess; its JSON log lines are collected as they come."""

    def __init__(
        self,
        config: Path,
        env: dict[str, str] | None = None,
        preexec: Callable[[], None] | None = None,
    ) -> None:
        import threading

        self.events: list[dict[str, Any]] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "syncd", "run", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env or cli_env(),
            cwd=ROOT,
            preexec_fn=preexec,  # e.g. a lower limit of open files (tests.support.flood)
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        import json

        assert self.proc.stderr is not None
        with self.proc.stderr:
            for line in self.proc.stderr:
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if not isinstance(event, dict):
                    event = {"event": "(text)", "text": line.rstrip()}
                self.events.append(event)

    def wait_for(self, event: str, timeout: float = 20, **match: Any) -> dict[str, Any]:
        """Return the first log event named ``event`` (with ``match`` fields); fail on timeout."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in list(self.events):
                if e.get("event") == event and all(e.get(k) == v for k, v in match.items()):
                    return e
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no {event} {match or ''} in the daemon's log: {self.events[-15:]}")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.wait_for('health.listening')['port']}"

    def stop(self, sig: int = 15, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code


@pytest.fixture
def start_daemon() -> Iterator[Any]:
    """Start `syncd run` subprocesses: ``start_daemon(config, env=None, preexec=None)``;
    killed at the end."""
    started: list[DaemonProcess] = []

    def start(
        config: Path,
        env: dict[str, str] | None = None,
        preexec: Callable[[], None] | None = None,
    ) -> DaemonProcess:
        daemon = DaemonProcess(config, env, preexec)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait(10)
        daemon._reader.join(5)


JODO_FULL_CONFIG = """\
[state]
path = "{state}"

[log]
level = "info"
format = "json"

[[sources]]
name = "crm"
kind = "csv_drop"
inbox = "{inbox}"

[[sinks]]
name = "jodo"
kind = "jodo"
url = "{url}/CustomerWebServices/handleCustomerWS"
apikey = "env:TEST_JODO_APIKEY"
servicekey = "VoiceProcess"
media = 12
updateparam = "{updateparam}"
dial_format = "00"
batch_size = 50
retry_base_s = 0.1
retry_max_s = 0.5
max_attempts = 5
{sink_extra}

[[routes]]
source = "crm"
sink = "jodo"
default_region = "IN"
[routes.map]
key = "id"
phone = "phone"
first_name = "first"
last_name = "last"
{map_extra}
"""


def jodo_full_config(
    tmp_path: Path,
    url: str,
    *,
    sink_extra: str = "",
    map_extra: str = "",
    updateparam: str = "crmuniquefield",
) -> Path:
    """Write a CSV-drop → Jodo config with extra sink settings (sub-tables allowed) and columns.

    ``sink_extra`` goes at the end of the ``[[sinks]]`` table (e.g. ``[sinks.reallocation]``);
    ``map_extra`` at the end of ``[routes.map]`` (e.g. ``agent = "agent"``).
    """
    (tmp_path / "inbox").mkdir(exist_ok=True)
    path = tmp_path / "syncd.toml"
    path.write_text(
        JODO_FULL_CONFIG.format(
            state=tmp_path / "state" / "state.db",
            inbox=tmp_path / "inbox",
            url=url,
            updateparam=updateparam,
            sink_extra=sink_extra,
            map_extra=map_extra,
        ),
        encoding="utf-8",
    )
    return path
