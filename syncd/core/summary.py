"""Run accounting: what a `--once` run read, decided and delivered, and whether it adds up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

# `run --once` exit codes, one meaning each (README, docs/operating.md).
EXIT_OK = 0  # every lead delivered or refused with a reason, outcomes read and written back
# leads remain failed or pending, rows were not read, or an old number stays dialable
EXIT_UNDELIVERED = 1
EXIT_FOLLOW_UP = 3  # every lead delivered or refused, but an outcome poll or writeback failed


@dataclass
class RouteCounts:
    """Per route (source → sink): every row read lands in exactly one bucket."""

    read: int = 0
    rejected: int = 0
    skipped: int = 0
    unchanged: int = 0
    new: int = 0
    changed: int = 0
    deleted: int = 0
    # of the rejected and deleted: what the safety gate blocked, by reason code
    blocked: dict[str, int] = field(default_factory=dict)
    # versions enqueued before that left the outbox unsent, replaced or taken back by a
    # row of this run (not a bucket of the rows read: see ChunkPlan.superseded)
    superseded: int = 0
    # rows handed to mapping and phone validation (not a bucket: the rest were settled
    # by their raw hash, as unchanged or as refused before)
    mapped: int = 0
    # of the rejected: refused before with the same raw content and fingerprint, refused
    # again from memory without mapping (syncd.core.refusals)
    refused_before: int = 0
    # of the rejected: older than the version of their lead syncd holds (the route's
    # map.updated_at), not applied (syncd.core.versions)
    older_versions: int = 0

    def add(self, bucket: str, n: int = 1) -> None:
        setattr(self, bucket, getattr(self, bucket) + n)

    @property
    def balanced(self) -> bool:
        return self.read == (
            self.rejected + self.skipped + self.unchanged + self.new + self.changed + self.deleted
        )

    @property
    def enqueued(self) -> int:
        return self.new + self.changed + self.deleted


@dataclass
class SinkCounts:
    """Per sink: every lead that entered the outbox ends in exactly one bucket."""

    carried: int = 0  # pending from an earlier run and not touched by this one's pull
    delivered: int = 0
    refused: int = 0  # the dialer refused the record, with a reason
    failed: int = 0  # attempts exhausted (dead letter)
    pending: int = 0  # still queued at the end (sink stopped, deadline, backoff)
    held: int = 0  # held by the safety gate (outside the calling window) at the end
    released_at: float | None = None  # when the first held lead's window opens
    stopped: str | None = None
    waiting: str | None = None  # why pushing ended before the outbox was empty (a hold)


@dataclass
class RunSummary:
    run_id: str
    routes: dict[str, RouteCounts] = field(default_factory=dict)
    sinks: dict[str, SinkCounts] = field(default_factory=dict)
    files_failed: list[str] = field(default_factory=list)
    files_waiting: list[str] = field(default_factory=list)  # not settled yet: read next time
    outcomes: dict[str, int] = field(default_factory=dict)  # per sink: new or changed outcomes
    written: dict[str, int] = field(default_factory=dict)  # per writeback: outcomes written
    poll_failed: dict[str, str] = field(default_factory=dict)  # per sink: why its poll failed
    # per writeback: why its pass ended with outcomes still to write
    writeback_failed: dict[str, str] = field(default_factory=dict)
    warnings: dict[str, list[str]] = field(default_factory=dict)  # per sink: to fix, not failing
    dnc: dict[str, dict[str, int]] = field(default_factory=dict)  # per do-not-call list: counts
    # per sink: leads it still holds under a former number too, an alert until `syncd ack`
    numbers_left: dict[str, int] = field(default_factory=dict)
    deadline: str | None = None  # what the deadline cut off
    dry_run: bool = False

    def route(self, name: str) -> RouteCounts:
        return self.routes.setdefault(name, RouteCounts())

    def sink(self, name: str) -> SinkCounts:
        return self.sinks.setdefault(name, SinkCounts())

    def enqueued_for(self, sink: str) -> int:
        return sum(c.enqueued for name, c in self.routes.items() if name.endswith(f"->{sink}"))

    def sink_balanced(self, sink: str) -> bool:
        c = self.sinks[sink]
        done = c.delivered + c.refused + c.failed + c.pending + c.held
        return self.enqueued_for(sink) + c.carried == done

    @property
    def balanced(self) -> bool:
        if self.dry_run:
            return all(r.balanced for r in self.routes.values())
        return all(r.balanced for r in self.routes.values()) and all(
            self.sink_balanced(s) for s in self.sinks
        )

    def exit_code(self) -> int:
        """Return the exit code of `run --once`; each code has one meaning.

        1: leads were not delivered (failed or pending: a stopped sink, the deadline,
        backoff), rows were not read (a file set aside), or a dialer still holds a lead
        under a former number too (``numbers_left``: as a refused withdrawal, a number
        that stays dialable, every run until someone acknowledges it). 3: every lead is delivered
        or refused with a reason, but what follows failed (an outcome poll, a
        writeback): outcomes wait at the dialer or in the store. 0: all done.
        """
        if self.files_failed or self.deadline:
            return EXIT_UNDELIVERED
        if any(c.failed or c.pending for c in self.sinks.values()):
            return EXIT_UNDELIVERED
        if any(self.numbers_left.values()):
            return EXIT_UNDELIVERED
        if self.poll_failed or self.writeback_failed:
            return EXIT_FOLLOW_UP
        return EXIT_OK

    def rows_read(self) -> int:
        """Return the rows the sources read (each row once, however many dialers it feeds)."""
        return rows_read({name: c.read for name, c in self.routes.items()})

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.routes.values():
            for k, v in asdict(c).items():
                if isinstance(v, int):
                    out[k] = out.get(k, 0) + v
        for s in self.sinks.values():
            for k, v in asdict(s).items():
                if isinstance(v, int):
                    out[k] = out.get(k, 0) + v
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "routes": {k: asdict(v) for k, v in self.routes.items()},
            "sinks": {k: asdict(v) for k, v in self.sinks.items()},
            "files_failed": self.files_failed,
            "outcomes": self.outcomes,
            "written": self.written,
            "files_waiting": self.files_waiting,
            "poll_failed": self.poll_failed,
            "writeback_failed": self.writeback_failed,
            "warnings": self.warnings,
            "numbers_left": self.numbers_left,
            "deadline": self.deadline,
            "balanced": self.balanced,
            "dry_run": self.dry_run,
        }


def rows_read(read_by_route: Mapping[str, int]) -> int:
    """Return the rows read over every source, from each route's count (``source->sink``).

    Each route of a source counts the same rows (a file read for three dialers is read
    once): summing the routes would count a row once per dialer.
    """
    per_source: dict[str, int] = {}
    for route, n in read_by_route.items():
        source = route.partition("->")[0]
        per_source[source] = max(per_source.get(source, 0), n)
    return sum(per_source.values())
