"""`python -m syncd.daemon.healthcheck [PATH]`: exit 0 when the daemon answers PATH (/healthz).

For container HEALTHCHECKs and scripts. It finds the address the way the daemon
does, without validating the whole configuration: ``$SYNCD_HEALTH__LISTEN``,
else ``[health] listen`` of ``$SYNCD_CONFIG``, else the default. A wildcard
address (0.0.0.0, [::]) is probed on loopback. Standard library only, so it is quick.
"""

from __future__ import annotations

import os
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

DEFAULT_LISTEN = "127.0.0.1:9310"
TIMEOUT_S = 5.0


def listen_address(environ: Mapping[str, str]) -> str:
    """Return the health server's configured ``host:port``."""
    if environ.get("SYNCD_HEALTH__LISTEN"):
        return environ["SYNCD_HEALTH__LISTEN"]
    path = environ.get("SYNCD_CONFIG")
    if path:
        try:
            with open(path, "rb") as fh:
                health = tomllib.load(fh).get("health", {})
        except (OSError, tomllib.TOMLDecodeError):
            health = {}
        if isinstance(health, dict) and isinstance(health.get("listen"), str):
            return str(health["listen"])
    return DEFAULT_LISTEN


def probe_url(listen: str, path: str = "/healthz") -> str:
    """Return the URL to probe for a ``host:port`` listen address."""
    host, _, port = listen.strip().rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{path}"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    url = probe_url(listen_address(os.environ), args[0] if args else "/healthz")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        print(f"syncd healthcheck: {url}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"syncd healthcheck: {url}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
