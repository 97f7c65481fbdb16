"""The stores' schema steps: numbered SQL files, one folder per database.

``sqlite/0001_initial.sql``, ``sqlite/0002_….sql``…: each file moves a store's schema one
version up and is applied once, in order. A file is never edited once released (a store
that ran it would not run it again, and would silently differ from a new one): a change
is a new file at the end. Each store records the sha256 of every file it applied, so a
file edited after release is named (:func:`edited`), and tests/test_migrations.py holds
the checksum of every released file.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

DATABASES = ("sqlite", "postgres")
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    """One shipped schema step."""

    number: int
    name: str  # the file's name, e.g. 0001_initial.sql
    sql: str
    sha256: str


@dataclass(frozen=True)
class Applied:
    """A step as the store recorded it; ``sha256`` is None for one applied before syncd
    recorded checksums."""

    number: int
    name: str
    sha256: str | None


@functools.cache
def load(database: str) -> tuple[Migration, ...]:
    """Return ``database``'s migrations in order; a gap or a stray file is a packaging bug."""
    if database not in DATABASES:
        raise ValueError(f"no migrations for {database!r}")
    folder = resources.files(__package__).joinpath(database)
    found: list[Migration] = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _NAME.match(entry.name)
        if match is None:
            raise RuntimeError(f"migration file {database}/{entry.name}: not NNNN_name.sql")
        data = entry.read_bytes()
        found.append(
            Migration(
                int(match.group(1)),
                entry.name,
                data.decode("utf-8"),
                hashlib.sha256(data).hexdigest(),
            )
        )
    found.sort(key=lambda m: m.number)
    numbers = [m.number for m in found]
    if numbers != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{database} migrations are not numbered 1..{len(found)}: {numbers}")
    return tuple(found)


def too_old(path: str, known: int, at: int) -> str | None:
    """Return why a syncd knowing ``known`` steps must not open a store at ``at``."""
    if at <= known:
        return None
    return (
        f"this syncd knows schema {known}, the state store {path} is at schema {at}: "
        f"upgrade syncd to one that knows schema {at} (a newer syncd migrated the store; "
        "there is no downgrade)"
    )


def edited(database: str, applied: Iterable[Applied]) -> list[str]:
    """Return a warning per applied step whose shipped file differs from what ran."""
    shipped = {m.number: m for m in load(database)}
    out = []
    for step in applied:
        now = shipped.get(step.number)
        if now is None or step.sha256 is None or step.sha256 == now.sha256:
            continue
        out.append(
            f"migration {database}/{now.name} was edited after release: the store ran "
            f"sha256 {step.sha256[:12]}, this syncd ships {now.sha256[:12]}; the store "
            "may lack what the file now makes"
        )
    return out
