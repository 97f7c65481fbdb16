"""The writeback interface: outcome (or agent status) versions out, into the CRM.

The runner feeds a writeback batches of :class:`Item` read from the state store and
marks each version written once ``write`` returns, so every change reaches the CRM
once and a crash re-writes at most the batch that was in flight. ``write`` answers
in one of four ways: it returns (written), raises ``RetryableError`` (try again
later), ``ItemsRefused`` (the CRM refused these records: the runner halves the batch
until the record at fault stands alone, then keeps its reason) or
``WritebackStopped`` (the writeback itself cannot work: fix its configuration).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

from pydantic import Field

from syncd.config import WritebackConfig
from syncd.errors import PermanentError, SyncdError

# The values each kind of record offers (SQL parameters, CSV columns, JSON fields).
OUTCOME_FIELDS = (
    "key",
    "sink",
    "version",
    "status",
    "raw_status",
    "disposition",
    "attempts",
    "last_dialed_at",
    "agent",
    "call_id",
    "recording_url",
    "observed_at",
    "raw",
    "writeback",
)
AGENT_FIELDS = (
    "login",
    "key",
    "sink",
    "version",
    "status",
    "description",
    "duration_s",
    "changed_at",
    "observed_at",
    "raw",
    "writeback",
)
DEFAULT_COLUMNS = {
    "outcomes": (
        "key",
        "sink",
        "status",
        "disposition",
        "attempts",
        "last_dialed_at",
        "agent",
        "recording_url",
        "call_id",
        "raw_status",
        "observed_at",
        "version",
    ),
    "agents": (
        "login",
        "sink",
        "status",
        "description",
        "duration_s",
        "changed_at",
        "observed_at",
        "version",
    ),
}


def fields_for(what: str) -> tuple[str, ...]:
    """Return the value names a writeback of ``what`` can use."""
    return OUTCOME_FIELDS if what == "outcomes" else AGENT_FIELDS


class ItemsRefused(PermanentError):
    """The CRM refused the records of this batch; the same batch will never succeed."""


class WritebackStopped(SyncdError):
    """The writeback itself cannot work (bad URL, credentials, statement); records stay pending."""


class BaseWritebackConfig(WritebackConfig):
    """Settings every built-in writeback has."""

    what: Literal["outcomes", "agents"] = "outcomes"
    sinks: list[str] = Field(default_factory=list)  # only these sinks' records; empty: all
    batch_size: int = Field(500, ge=1, le=10_000)

    def check_names(self, names: Sequence[str], setting: str) -> None:
        """Raise ValueError naming any value ``names`` uses that ``what`` does not offer."""
        offered = fields_for(self.what)
        unknown = [n for n in names if n not in offered]
        if unknown:
            raise ValueError(
                f"{setting} uses {', '.join(repr(u) for u in unknown)}, which "
                f"{self.what} do not have; available: {', '.join(offered)}"
            )


@dataclass(frozen=True, slots=True)
class Item:
    """One version of one outcome (or agent status) to write back."""

    sink: str
    key: str
    version: int
    values: dict[str, Any]  # every name of fields_for(what); times as aware UTC datetimes

    @property
    def mark(self) -> tuple[str, str, int]:
        return (self.sink, self.key, self.version)


def _utc(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch is not None else None


def item_from_row(row: dict[str, Any], what: str, writeback: str) -> Item:
    """Return the Item for a row of ``store.pending_writeback``."""
    try:
        raw = json.loads(row["raw_json"]) if row.get("raw_json") else {}
    except ValueError:
        raw = {}
    values: dict[str, Any] = {
        "sink": row["sink"],
        "key": row["key"],
        "version": int(row["version"]),
        "status": row.get("status") or "",
        "observed_at": _utc(row.get("observed_at")),
        "raw": raw,
        "writeback": writeback,
    }
    if what == "outcomes":
        values.update(
            raw_status=row.get("raw_status") or "",
            disposition=row.get("disposition") or "",
            attempts=row.get("attempts"),
            last_dialed_at=_utc(row.get("last_dialed_at")),
            agent=row.get("agent") or "",
            call_id=row.get("call_id") or "",
            recording_url=row.get("recording_url") or "",
        )
    else:
        values.update(
            login=row["key"],
            description=row.get("description") or "",
            duration_s=row.get("duration_s"),
            changed_at=_utc(row.get("changed_at")),
        )
    return Item(row["sink"], row["key"], int(row["version"]), values)


def local_time(value: datetime | None, zone: str) -> datetime | None:
    """Return an aware datetime converted to ``zone`` (None stays None)."""
    return value.astimezone(ZoneInfo(zone)) if value is not None else None


class Writeback(Protocol):
    """One configured writeback target."""

    name: str
    config: BaseWritebackConfig

    async def open(self, state: str | None) -> None:
        """Connect and recover from ``state`` (what :meth:`state` last returned, committed)."""
        ...

    async def write(self, items: Sequence[Item]) -> None:
        """Write the items durably, or raise (see the module docstring)."""
        ...

    async def probe(self) -> str:
        """Try the target without writing to it (`syncd check --online`); return what that
        proved, or raise CheckFailed naming the settings to fix. Called without ``open``."""
        ...

    def state(self) -> str | None:
        """Return the state to commit with the marks of the last write (None: nothing kept)."""
        ...

    async def committed(self) -> None:
        """Called once the marks of the last write are durable."""
        ...

    async def end_pass(self) -> None:
        """Called after the last batch of a pass (the CSV writeback publishes old files)."""
        ...

    async def publish(self) -> None:
        """Called at a stop or reload: make every row marked written visible to the CRM now
        (the CSV writeback publishes its current file); raise WritebackStopped if it cannot."""
        ...

    async def close(self) -> None: ...


class StatelessWriteback:
    """Defaults for a writeback that keeps no recovery state and commits as it writes."""

    def state(self) -> str | None:
        return None

    async def committed(self) -> None:
        return None

    async def end_pass(self) -> None:
        return None

    async def publish(self) -> None:
        return None
