"""Who may read the status page, and where the health server listens: pure decisions
over the ``[health]`` settings, used by the server (syncd.daemon.probes) and by
`syncd check`, which says them without loading the web server."""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

from syncd.config import HealthConfig
from syncd.errors import ConfigError

COOKIE = "syncd_status"  # the sign-in cookie of a browser (GET/POST /login)
SESSION_S = 12 * 3600  # how long a sign-in lasts: a working day, then the token again


@dataclass(frozen=True)
class StatusAccess:
    """Who may read /status: anyone on loopback; elsewhere only with the token, sent as
    ``Authorization: Bearer`` or signed in once at /login (a browser's cookie)."""

    loopback: bool
    token: str | None

    def refusal(self, authorization: str, cookie: str = "", now: float = 0.0) -> str | None:
        """Return why a request with this Authorization header and sign-in cookie is
        refused (at ``now``, wall time), None if allowed."""
        if self.loopback:
            return None
        if self.token is None:
            return "the health server is not on loopback: set health.status_token to see /status"
        given = authorization.removeprefix("Bearer ").strip()
        if authorization.startswith("Bearer ") and self.signs_in(given):
            return None
        if cookie and self.session_ok(cookie, now):
            return None
        return "send Authorization: Bearer <health.status_token>, or sign in at /login"

    def signs_in(self, given: str) -> bool:
        """Return True when ``given`` is the token (compared in constant time)."""
        if self.token is None:
            return False
        return hmac.compare_digest(given.encode(), self.token.encode())

    def session(self, now: float) -> str:
        """Return the cookie of a sign-in at ``now``: its end and a MAC of it keyed with the
        token. The token never leaves in it, and a new token ends every sign-in."""
        until = int(now + SESSION_S)
        return f"{until}.{self._mac(until)}"

    def session_ok(self, cookie: str, now: float) -> bool:
        """Return True for a sign-in cookie this token made that has not ended."""
        until, _, mac = cookie.partition(".")
        if self.token is None or not (until.isascii() and until.isdigit()) or int(until) <= now:
            return False
        return hmac.compare_digest(mac.encode(), self._mac(int(until)).encode())

    def _mac(self, until: int) -> str:
        key = (self.token or "").encode()
        return hmac.new(key, f"syncd status sign-in until {until}".encode(), "sha256").hexdigest()


def is_loopback(host: str) -> bool:
    """Return True for an address only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def status_access(health: HealthConfig) -> StatusAccess:
    """Return who may read /status, from where the health server listens and its token."""
    host, _ = parse_listen(health.listen)
    token = health.status_token.get_secret_value() if health.status_token else None
    return StatusAccess(loopback=is_loopback(host), token=token)


def parse_listen(value: str) -> tuple[str, int]:
    """Return (host, port) of ``host:port``, ``[v6]:port`` or ``:port``; raise ConfigError."""
    text = value.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"health.listen: {value!r} is not host:port (e.g. 127.0.0.1:9310)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"health.listen: write an IPv6 address in brackets: [{host}]:{port_text}")
    return host or "0.0.0.0", int(port_text)
