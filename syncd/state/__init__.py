"""The state store: leads per sink, the outbox, cursors, outcomes, rejects."""

from syncd.state.base import StateStore
from syncd.state.sqlite import SqliteStore

__all__ = ["SqliteStore", "StateStore", "open_store"]


async def open_store(path: str) -> SqliteStore:
    """Return an opened SQLite store at ``path`` (created, 0600, migrated)."""
    store = SqliteStore(path)
    await store.open()
    return store
