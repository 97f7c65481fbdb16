"""Helpers for the writeback tests: a state store holding outcomes, settings, CLI configs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from syncd.config import Settings, validate_settings
from syncd.core.model import Outcome
from syncd.state.sqlite import SqliteStore

DIALED = datetime(2026, 11, 22, 9, 30, 0, tzinfo=UTC)


def outcome(key: str, sink: str = "jodo", **fields: Any) -> Outcome:
    """Return an outcome as a sink would record it."""
    values: dict[str, Any] = {
        "status": "connected",
        "raw_status": "Connected",
        "disposition": "Interested",
        "attempts": 1,
        "last_dialed_at": DIALED,
        "agent": "asha",
        "call_id": f"call-{key}",
        "recording_url": f"https://rec.example/{key}.mp3",
        "raw": {"vendor": "sim", "key": key},
        **fields,
    }
    observed = values.pop("observed_at", datetime.now(UTC))
    return Outcome(sink=sink, key=key, observed_at=observed, **values)


def keys(n: int, prefix: str = "L") -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(1, n + 1)]


async def store_with(path: Path, outcomes: list[Outcome]) -> SqliteStore:
    """Return an opened store at ``path`` holding ``outcomes``."""
    store = SqliteStore(path)
    await store.open()
    for start in range(0, len(outcomes), 2000):
        await store.record_outcomes(outcomes[start : start + 2000])
    return store


async def change(store: SqliteStore, key: str, sink: str = "jodo", **fields: Any) -> None:
    """Record a newer outcome for ``key`` (a new version)."""
    later = datetime.now(UTC) + timedelta(seconds=1)
    await store.record_outcomes([outcome(key, sink, observed_at=later, **fields)])


def settings(tmp_path: Path, *writebacks: dict[str, Any]) -> Settings:
    """Return settings with only a state store and the given writebacks."""
    return validate_settings(
        {"state": {"path": str(tmp_path / "state" / "state.db")}, "writebacks": list(writebacks)}
    )


def cli_config(tmp_path: Path, *writebacks: dict[str, Any]) -> Path:
    """Write a TOML config with only writebacks (for `syncd run --once` as a subprocess)."""
    lines = [
        "[state]",
        f'path = "{tmp_path / "state" / "state.db"}"',
        "",
        "[log]",
        'level = "info"',
        'format = "json"',
    ]
    for wb in writebacks:
        lines += ["", "[[writebacks]]"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in wb.items()]
    path = tmp_path / "syncd.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def status(store: SqliteStore, name: str) -> dict[str, Any]:
    """Return the stored status of a writeback's last pass."""
    raw = await store.kv_get("writeback.status", name)
    assert raw is not None
    result: dict[str, Any] = json.loads(raw)
    return result
