"""Plug-ins by config ``kind``: sources, sinks, writebacks and state stores.

Each entry names ``module:Class`` for the plug-in's config model and for the
implementation, so a driver is imported only when a config uses it. A new dialer
adds one line here (or a ``syncd.sinks`` entry point) and touches no core code.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any


@dataclass(frozen=True)
class Plugin:
    config: str  # "module:ConfigClass"
    factory: str  # "module:ImplementationClass"

    def load_config_class(self) -> Any:
        return _load(self.config)

    def load_factory(self) -> Any:
        return _load(self.factory)


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


SOURCES: dict[str, Plugin] = {
    "csv_drop": Plugin(
        "syncd.sources.csv_drop:CsvDropConfig", "syncd.sources.csv_drop:CsvDropSource"
    ),
    "sql": Plugin("syncd.sources.sql:SqlSourceConfig", "syncd.sources.sql:SqlSource"),
    "webhook": Plugin(
        "syncd.sources.webhook:WebhookSourceConfig", "syncd.sources.webhook:WebhookSource"
    ),
}

SINKS: dict[str, Plugin] = {
    "jodo": Plugin("syncd.sinks.jodo.config:JodoSinkConfig", "syncd.sinks.jodo.sink:JodoSink"),
    "ameyo": Plugin("syncd.sinks.ameyo.config:AmeyoSinkConfig", "syncd.sinks.ameyo.sink:AmeyoSink"),
    "ucontact": Plugin(
        "syncd.sinks.ucontact.config:UContactSinkConfig", "syncd.sinks.ucontact.sink:UContactSink"
    ),
}

# Dialers syncd provisions agents (users) into: kind -> "module:Class" of the outbox's sink.
AGENT_SINKS: dict[str, str] = {
    "jodo": "syncd.sinks.jodo.provisioning:JodoAgentSink",
}

# Each dialer's own reading of its refusals as reason codes (syncd.core.reasons): kind ->
# "module:function" taking a stored reason, returning a code or None.
REASON_CODES: dict[str, str] = {
    "jodo": "syncd.sinks.jodo.codes:reason_code",
    "ameyo": "syncd.sinks.ameyo.codes:reason_code",
    "ucontact": "syncd.sinks.ucontact.codes:reason_code",
}


def reason_coder(kind: str) -> Any:
    """Return the dialer's ``reason_code(reason) -> str | None``, None when it has none."""
    ref = REASON_CODES.get(kind)
    return _load(ref) if ref else None


WRITEBACKS: dict[str, Plugin] = {
    "sql": Plugin("syncd.writeback.sql:SqlWritebackConfig", "syncd.writeback.sql:SqlWriteback"),
    "csv": Plugin(
        "syncd.writeback.csv_file:CsvWritebackConfig", "syncd.writeback.csv_file:CsvWriteback"
    ),
    "webhook": Plugin(
        "syncd.writeback.webhook:WebhookWritebackConfig", "syncd.writeback.webhook:WebhookWriteback"
    ),
}

STATE_STORES: dict[str, Plugin] = {
    "sqlite": Plugin("syncd.config:StateConfig", "syncd.state.sqlite:SqliteStore"),
    "postgresql": Plugin("syncd.config:StateConfig", "syncd.state.postgres:PostgresStore"),
}

SIMULATORS: dict[str, str] = {
    "jodo": "syncd.simulators.jodo.api:create_app",
    "ameyo": "syncd.simulators.ameyo.api:create_app",
    "ucontact": "syncd.simulators.ucontact.api:create_app",
}


@functools.cache
def _entry_points(group: str) -> tuple[EntryPoint, ...]:
    """Return a group's entry points, read once a process: reading them opens every
    installed distribution's metadata, and a run asks for each table several times."""
    return tuple(entry_points(group=group))


def _with_entry_points(group: str, table: dict[str, Plugin]) -> dict[str, Plugin]:
    # Third-party plug-ins register "kind = module:Config|module:Factory".
    merged = dict(table)
    for ep in _entry_points(group):
        config, _, factory = ep.value.partition("|")
        merged.setdefault(ep.name, Plugin(config, factory))
    return merged


def sources() -> dict[str, Plugin]:
    return _with_entry_points("syncd.sources", SOURCES)


def sinks() -> dict[str, Plugin]:
    return _with_entry_points("syncd.sinks", SINKS)


def agent_sinks() -> dict[str, str]:
    return dict(AGENT_SINKS)


def load_agent_sink(kind: str) -> Any:
    return _load(AGENT_SINKS[kind])


def writebacks() -> dict[str, Plugin]:
    return _with_entry_points("syncd.writebacks", WRITEBACKS)


def state_stores() -> dict[str, Plugin]:
    return _with_entry_points("syncd.state_stores", STATE_STORES)


def load_simulator(kind: str) -> Any:
    if kind not in SIMULATORS:
        raise KeyError(kind)
    return _load(SIMULATORS[kind])
