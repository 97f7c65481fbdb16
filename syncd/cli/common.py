"""What the commands share: the config loaded with logging set up from it, the store
looked for before it is opened."""

from __future__ import annotations

import argparse
from pathlib import Path

from syncd import logs
from syncd.config import Settings, load_settings
from syncd.errors import StoreError

ALL_SECTIONS = ("sources", "sinks", "writebacks")


def settings_of(args: argparse.Namespace, *, without_secrets: tuple[str, ...] = ()) -> Settings:
    settings = load_settings(args.config, without_secrets=without_secrets)
    logs.configure_from(settings.log)
    return settings


def require_store(settings: Settings) -> None:
    """Raise StoreError when there is no state store yet (looking must not create one)."""
    if not settings.state.shared and not Path(settings.state.path).exists():
        raise StoreError(
            f"no state store at {settings.state.path} yet: run `syncd run --once` first"
        )


def store_exists(settings: Settings) -> bool:
    return settings.state.shared or Path(settings.state.path).exists()
