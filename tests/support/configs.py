"""TOML pieces the daemon tests' configurations share, so each test file writes only
what is its own (its source, its route's map) and the rest reads the same everywhere."""

from __future__ import annotations

from pathlib import Path


def daemon_head(state: Path, *, push_tick_s: float = 300, grace_s: float = 10) -> str:
    """Return [state], [log] (JSON at info, what the tests read), [health] on a free port
    and [run]: a push tick long enough that only a wake-up pushes within a test."""
    return f"""\
[state]
path = "{state}"

[log]
level = "info"
format = "json"

[health]
listen = "127.0.0.1:0"

[run]
shutdown_grace_s = {grace_s}
sink_recheck_s = 1
push_tick_s = {push_tick_s}
"""


def jodo_sink(url: str, *, name: str = "jodo", batch_size: int = 50) -> str:
    """Return a [[sinks]] table for the Jodo simulator at ``url`` (quick retries)."""
    return f"""\
[[sinks]]
name = "{name}"
kind = "jodo"
url = "{url}/CustomerWebServices/handleCustomerWS"
apikey = "env:TEST_JODO_APIKEY"
servicekey = "VoiceProcess"
media = 12
updateparam = "crmuniquefield"
dial_format = "00"
batch_size = {batch_size}
retry_base_s = 0.1
retry_max_s = 0.5
"""


def route(source: str, sink: str, *, default_region: str = "IN", **columns: str) -> str:
    """Return a [[routes]] table from ``source`` to ``sink`` whose [routes.map] maps each
    lead field (keyword) to the CRM column (value), in the order given."""
    mapped = "".join(f'{field} = "{column}"\n' for field, column in columns.items())
    return f"""
[[routes]]
source = "{source}"
sink = "{sink}"
default_region = "{default_region}"
[routes.map]
{mapped}"""
