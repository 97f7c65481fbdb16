"""How far a dialer can be held to the calling window once a lead sits in its queue.

syncd decides the window when it pushes (``syncd.core.gate``); a lead then waits in
the dialer's queue until the dialer reaches it. Whether that call still falls inside
the window depends on what the vendor's API lets syncd say with the record:

- ``start``: a time before which the dialer does not dial it (a callback time);
- ``close``: ``"expiry"`` — a time after which the dialer does not dial it (a
  validity time), ``"withdraw"`` — syncd takes it out of the dialer at the window's
  close and sends it again at the next opening, or ``""`` — neither.

A sink is *held* when both ends are covered. One that is not is named by
``syncd check``, with what must be set in the dialer itself (its own calling hours)
and ``queue_ahead_minutes`` (send no more than the dialer reaches in that span).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Close = Literal["expiry", "withdraw", ""]
# The gate's code of a closed window; a lead taken out of a dialer at its window's close
# carries it as ``Lead.withdrawn`` (``syncd.run.window``), so its sink knows the removal.
WINDOW_CODE = "window_closed"


@dataclass(frozen=True, slots=True)
class WindowHold:
    """What one sink can enforce of the calling window at the dialer (see module doc)."""

    start: bool
    close: Close
    how: str  # what syncd sends, in the vendor's words
    in_dialer: str  # what must be configured in the dialer itself for the rest
    # The vendor takes the close once per request, not per record: the push sends one
    # request per distinct close (QueuedLead.dial_until) of a batch.
    per_request: bool = False

    @property
    def held(self) -> bool:
        """Return True when the dialer cannot ring a lead outside its window."""
        return self.start and bool(self.close)

    def describe(self) -> str:
        """Return the line `syncd check` prints for this sink."""
        ends = {
            "expiry": "expires at the window's close",
            "withdraw": "withdrawn at the window's close, sent again at the next opening",
            "": "NOT held to the window's close",
        }[self.close]
        start = "held to the opening" if self.start else "NOT held to the opening"
        text = f"{start}; {ends} ({self.how})"
        return f"{text}; in the dialer: {self.in_dialer}" if self.in_dialer else text


NOT_HELD = WindowHold(
    start=False,
    close="",
    how="the vendor's API takes no time with a record",
    in_dialer="set the campaign's calling hours to the window, and queue_ahead_minutes here",
)
