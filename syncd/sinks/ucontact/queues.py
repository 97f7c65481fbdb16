"""uContact's queue figures (``Supervisor/queuesummary``), and the hold they can put on pushes.

A progressive campaign with nobody logged in would ring people with no agent to
talk to: with ``hold_without_agents_min`` set, pushes to the campaign wait once it
has had no agent for that long, and go again as soon as one logs in.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from syncd.sinks.base import QueueFigures


def parse_queue_summary(body: Any, queue: str) -> QueueFigures | None:
    """Return the figures of ``queue`` from a queuesummary answer, None if it is not listed.

    The answer is a list of queues; its last element carries only the request's id
    and date. Numbers may come as text.
    """
    items = body if isinstance(body, list) else [body] if isinstance(body, dict) else []
    for item in items:
        if isinstance(item, dict) and item.get("queue") == queue:
            return QueueFigures(
                queue=queue,
                logged_in=_int(item.get("loggedIn")),
                available=_int(item.get("available")),
                callers_waiting=_int(item.get("callers")),
                hold_s=_float(item.get("holdTime")),
                talk_s=_float(item.get("talkTime")),
                longest_hold_s=_float(item.get("longestHoldTime")),
            )
    return None


def _int(value: Any) -> int:
    try:
        return max(int(float(value)), 0)
    except (TypeError, ValueError):
        return 0


def _float(value: Any) -> float:
    try:
        return max(float(value), 0.0)
    except (TypeError, ValueError):
        return 0.0


def no_agents_since(figures: QueueFigures, before: float | None, now: float) -> float | None:
    """Return since when the queue has had no agent logged in (None: someone is)."""
    if figures.logged_in > 0:
        return None
    return before if before is not None else now


def hold_reason(
    queue: str, since: float | None, now: float, hold_after_min: float | None
) -> str | None:
    """Return why pushes to ``queue`` wait, or None while they may go."""
    if hold_after_min is None or since is None or now - since < hold_after_min * 60:
        return None
    when = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"no agent logged in to campaign {queue} since {when} "
        f"(hold_without_agents_min = {hold_after_min:g}): leads wait until one logs in"
    )
