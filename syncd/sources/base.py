"""The source interface: a source yields chunks of raw rows and owns its cursor."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from syncd.core.model import Reject


@dataclass(slots=True)
class Chunk:
    """A slice of one origin (a file, a table) with the cursor to commit alongside it.

    ``after_commit`` runs once the chunk's leads, rejects and cursor are durable
    (the CSV source moves a finished file to ``done/`` there).
    """

    origin: str
    header: tuple[str, ...]
    # (line, values in header order); the CSV line reader's: core.raw_rows.RawRows
    rows: Sequence[tuple[int, list[str]]]
    rejects: list[Reject] = field(default_factory=list)  # rows the source itself refused
    cursor: str | None = None
    after_commit: Callable[[], Awaitable[None]] | None = None
    failed: str | None = None  # the whole origin is unreadable; the reason why
    waiting: str | None = None  # the origin is not ready (still being written); read later
    received_at: float | None = None  # when a POST brought it (epoch): speed to lead's start
    # Per key column: the keys that repeat in the whole origin, with the line of their last
    # row there (core.repeats), so a row superseded by a chunk not read yet is never queued.
    # Empty when the source does not know (a row's key then repeats only within a chunk).
    last_lines: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    @property
    def rows_read(self) -> int:
        return len(self.rows) + len(self.rejects)


class Source(Protocol):
    """Yields chunks; a later call resumes from the committed cursor."""

    name: str

    def chunks(self, cursor: str | None, *, full: bool = False) -> AsyncIterator[Chunk]: ...

    async def fail_origin(self, origin: str, reason: str) -> None:
        """Set aside an origin that cannot be processed at all, keeping the reason."""
        ...

    def progress_total(self) -> int | None:
        """Return the size of the pending work (bytes, rows), if known, for progress bars."""
        ...

    def progress_done(self) -> int:
        """Return how much of ``progress_total`` has been read so far."""
        ...

    async def close(self) -> None: ...


SourceRejects = Callable[[str], Awaitable[list[tuple[int | None, str, str, str]]]]
"""Returns the stored rejects (line, sink, reason, row JSON) of an origin."""
