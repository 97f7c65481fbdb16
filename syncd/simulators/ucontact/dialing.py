"""The uContact simulator's dial lists: contacts queued or scheduled per campaign.

Every number's presence is counted as it changes (now, ever added, peak, dialled),
so tests can prove nobody is in a list, or called, twice.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Entry:
    """One contact waiting in a campaign: queued (dial list) or scheduled."""

    phone: str
    alternatives: list[str] = field(default_factory=list)
    data: str = ""
    priority: int | None = None
    agentphone: str = ""
    source: str = ""  # upload file name, "task" or "schedule"
    ready_at: float = 0.0
    calldate: str | None = None
    added_at: float = 0.0
    timezone: str | None = None  # the upload's (uploadbasewithtimezone): the campaign's hours


@dataclass
class Campaign:
    name: str
    queued: list[Entry] = field(default_factory=list)
    scheduled: list[Entry] = field(default_factory=list)
    added: Counter[str] = field(default_factory=Counter)
    peak: Counter[str] = field(default_factory=Counter)
    dialed: Counter[str] = field(default_factory=Counter)
    blacklisted_skips: Counter[str] = field(default_factory=Counter)
    live: Counter[str] = field(default_factory=Counter)  # present now, kept incrementally

    def present(self) -> Counter[str]:
        return +self.live

    def add(self, entry: Entry, *, scheduled: bool = False) -> None:
        entry.added_at = time.time()
        (self.scheduled if scheduled else self.queued).append(entry)
        self.added[entry.phone] += 1
        self.live[entry.phone] += 1
        self.peak[entry.phone] = max(self.peak[entry.phone], self.live[entry.phone])

    def take(self, drop: Callable[[Entry], bool], *, scheduled: bool = False) -> list[Entry]:
        """Remove and return the entries ``drop`` selects."""
        entries = self.scheduled if scheduled else self.queued
        taken = [e for e in entries if drop(e)]
        if taken:
            kept = [e for e in entries if not drop(e)]
            if scheduled:
                self.scheduled = kept
            else:
                self.queued = kept
            for e in taken:
                self.live[e.phone] -= 1
        return taken
