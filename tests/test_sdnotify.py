"""The systemd notify protocol: READY, WATCHDOG, STATUS and STOPPING reach $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd import __version__
from syncd.daemon.sdnotify import Notifier, socket_address, watchdog_period
from tests.conftest import Simulated, cli_env, daemon_config


@pytest.fixture
def abstract_socket() -> Iterator[tuple[str, socket.socket]]:
    """A unix datagram socket in the abstract namespace, as '@name' the way systemd writes it."""
    name = f"syncd-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(0.2)
    with sock:
        yield f"@{name}", sock


def receive(sock: socket.socket, until: str, timeout: float = 20) -> list[str]:
    """Return the messages received up to and including one containing ``until``."""
    messages: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            message = sock.recv(4096).decode()
        except TimeoutError:
            continue
        messages.append(message)
        if until in message.splitlines():
            return messages
    raise AssertionError(f"no {until} among {messages}")


def test_the_daemon_notifies_ready_pings_the_watchdog_and_says_it_is_stopping(
    tmp_path: Path, jodo: Simulated, start_daemon, abstract_socket: tuple[str, socket.socket]
) -> None:
    address, sock = abstract_socket
    env = cli_env(NOTIFY_SOCKET=address, WATCHDOG_USEC="200000")  # a ping every 0.1 s
    daemon = start_daemon(daemon_config(tmp_path, jodo.url), env=env)

    until_ready = receive(sock, "READY=1")
    ready = until_ready[-1].splitlines()
    status = next(line for line in ready if line.startswith("STATUS="))
    assert "pending" in status and status.endswith(f"(syncd {__version__})")
    after_ready = receive(sock, "WATCHDOG=1")
    after_ready += receive(sock, "WATCHDOG=1")  # periodic, not a single ping
    daemon.proc.send_signal(signal.SIGTERM)
    stopping = receive(sock, "STOPPING=1")

    assert daemon.proc.wait(20) == 0
    assert sum("WATCHDOG=1" in m.splitlines() for m in after_ready) >= 2
    assert "READY=1" not in "\n".join(stopping)


def test_a_notifier_sends_to_a_socket_path() -> None:
    folder = tempfile.mkdtemp(prefix="sdn")  # short: unix socket paths are limited to 108 bytes
    path = os.path.join(folder, "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(2)
        notifier = Notifier({"NOTIFY_SOCKET": path})

        assert notifier.ready("3 pending,\n0 delivered today")
        assert notifier.status("working")
        assert notifier.stopping()
        notifier.close()

        assert sock.recv(4096).decode() == "READY=1\nSTATUS=3 pending, 0 delivered today"
        assert sock.recv(4096).decode() == "STATUS=working"
        assert sock.recv(4096).decode() == "STOPPING=1"
    os.unlink(path)
    os.rmdir(folder)


def test_outside_systemd_notifying_does_nothing() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog_s is None


def test_a_vanished_notify_socket_is_not_an_error(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.watchdog() is False
    assert notifier.watchdog() is False
    notifier.close()


def test_abstract_socket_names_get_a_leading_nul() -> None:
    assert socket_address("@syncd/notify") == "\0syncd/notify"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("") is None


def test_the_watchdog_pings_at_half_its_timeout_and_only_in_its_own_process() -> None:
    assert watchdog_period({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_period({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert watchdog_period({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_period({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_period({}) is None
