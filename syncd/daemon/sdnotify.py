"""The systemd notify protocol, spoken directly: one datagram to ``$NOTIFY_SOCKET``.

``READY=1`` once syncd can work, ``WATCHDOG=1`` from the event loop (a stuck loop
stops pinging and systemd restarts the service), ``STATUS=`` with a one-line
summary for ``systemctl status``, ``RELOADING=1`` / ``STOPPING=1`` around a
reload and a shutdown. Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger("syncd.sdnotify")


def socket_address(value: str) -> str | None:
    """Return the address to send to: a path, or an abstract name starting with NUL."""
    if not value:
        return None
    if value.startswith("@"):
        # systemd writes Linux abstract sockets with a leading '@' for the NUL byte.
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock: and other transports are not used by systemd for services


def watchdog_period(environ: Mapping[str, str] | None = None) -> float | None:
    """Return seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when off."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None  # the watchdog is meant for another process (we were forked)
    return int(usec) / 2 / 1_000_000


class Notifier:
    """Sends notify messages to systemd; never raises, because notifying is best effort."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = socket_address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_s = watchdog_period(env)
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: str | int) -> bool:
        """Return True if the message ``KEY=value`` lines went out (False outside systemd)."""
        if self.address is None:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                )
            self._sock.sendto(message.encode("utf-8", "replace"), self.address)
        except OSError as exc:
            if not self._warned:  # once: a missing socket would otherwise log every ping
                log.warning("sdnotify.failed", reason=exc.strerror or str(exc))
                self._warned = True
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        fields: dict[str, str | int] = {"READY": 1}
        if status:
            fields["STATUS"] = _one_line(status)
        return self.notify(**fields)

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd (Type=notify-reload) match this to the SIGHUP it sent.
        return self.notify(
            RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        )

    def stopping(self, status: str | None = None) -> bool:
        fields: dict[str, str | int] = {"STOPPING": 1}
        if status:
            fields["STATUS"] = _one_line(status)
        return self.notify(**fields)

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1)

    def status(self, text: str) -> bool:
        return self.notify(STATUS=_one_line(text))

    def close(self) -> None:
        if self._sock is not None:
            sock, self._sock = self._sock, None
            sock.close()


def _one_line(text: str) -> str:
    return " ".join(text.split())
