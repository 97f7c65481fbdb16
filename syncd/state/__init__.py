"""The state store: leads per sink, the outbox, cursors, outcomes, rejects.

The protocol is :class:`syncd.state.base.StateStore`; ``[state] kind`` picks the
implementation through :func:`syncd.registry.state_stores`, so callers never name one.
"""

from __future__ import annotations

import os

from syncd import registry
from syncd.config import StateConfig
from syncd.state.base import StateStore

__all__ = ["StateStore", "open_store"]


async def open_store(where: StateConfig | str | os.PathLike[str]) -> StateStore:
    """Return an opened state store (created, private, migrated) for ``[state]`` or a path.

    A bare path means the embedded default, SQLite.
    """
    cfg = where if isinstance(where, StateConfig) else StateConfig(path=os.fspath(where))
    factory = registry.state_stores()[cfg.kind].load_factory()
    store: StateStore
    if cfg.url is not None:
        store = factory(cfg.url.get_secret_value(), schema=cfg.schema_name, lease_s=cfg.lease_s)
    else:
        store = factory(cfg.path)
    await store.open()
    return store
