"""Is the dialer answering at all? Every request of a sink, answered or not.

The breaker counts failed *pushes* and opens after several in a row, each one a
whole read timeout plus the retries' waits: minutes for a dialer that takes
connections and never answers (a hung process, a dead network path). Meanwhile
/readyz, ``syncd_sink_state`` and `syncd status` read "working". This watch sees
every request the sink's HTTP client sends (pushes, polls, logins, keep-alives) and
says "not answering" as soon as the dialer has answered nothing since:

- two requests went unanswered (a timeout, a refused or reset connection), or
- one waited its whole read timeout without an answer (timed out, or still waiting).

Any answer clears it at once, an error status included: a dialer that answers 500
or a vendor error code is answering (that is the breaker's business). A request
sent before the latest answer proves nothing either way: the dialer answered after
it left, so its timeout is one slow request, not silence.

:func:`silence` is the pure decision; :class:`AnswerWatch` keeps its inputs.
"""

from __future__ import annotations

import itertools
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import httpx

UNANSWERED_IN_A_ROW = 2  # requests unanswered with no answer since: not answering
WAITING = "no answer within the read timeout"  # a request still out past its read timeout

# What each transport failure says of the dialer, in an operator's words. Those not
# listed (a full connection pool, a proxy's own error, a bad URL) say nothing of it.
_KINDS: tuple[tuple[type[httpx.TransportError], str], ...] = (
    (httpx.PoolTimeout, ""),  # local: every connection busy (those requests are counted)
    (httpx.ConnectTimeout, "connect timeout"),
    (httpx.ReadTimeout, "read timeout"),
    (httpx.WriteTimeout, "write timeout"),
    (httpx.RemoteProtocolError, "connection closed without an answer"),
    (httpx.ReadError, "connection reset"),
    (httpx.WriteError, "connection reset"),
)
TIMEOUTS = frozenset({"connect timeout", "read timeout", "write timeout", WAITING})


def unanswered_kind(exc: BaseException) -> str | None:
    """Return how a request that raised ``exc`` went unanswered, or None when ``exc``
    says nothing of the dialer (a cancelled request, a local limit, a certificate the
    dialer did present)."""
    if not isinstance(exc, httpx.TransportError):
        return None
    chain = _chain(exc)
    if any(isinstance(e, ssl.SSLError) for e in chain):
        return None  # the dialer answered the handshake (a bad certificate stops the sink)
    for kind, said in _KINDS:
        if isinstance(exc, kind):
            return said or None
    if isinstance(exc, httpx.ConnectError):
        # anyio says "All connection attempts failed"; the OS's error is further down
        refused = any(isinstance(e, ConnectionRefusedError) for e in chain)
        return (
            "connection refused" if refused or "refused" in str(exc).lower() else "cannot connect"
        )
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    """Return ``exc`` and the exceptions it was raised from or during, in order."""
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not e for e in found):
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


@dataclass
class Misses:
    """The requests unanswered since the dialer's latest answer (sent after it)."""

    count: int = 0
    first_sent: float | None = None  # clock time the earliest of them left
    kinds: dict[str, int] = field(default_factory=dict)  # kind -> how many, in order seen

    def add(self, sent: float, kind: str) -> None:
        self.count += 1
        self.first_sent = sent if self.first_sent is None else min(self.first_sent, sent)
        self.kinds[kind] = self.kinds.get(kind, 0) + 1


@dataclass(frozen=True)
class Silence:
    """A dialer that answers nothing: since when (clock time), how many requests, how."""

    since: float
    unanswered: int
    kinds: tuple[str, ...]

    def reason(self) -> str:
        """Return ``2 requests unanswered: read timeout, connection refused``."""
        plural = "s" if self.unanswered != 1 else ""
        return f"{self.unanswered} request{plural} unanswered: {', '.join(self.kinds)}"


def silence(
    misses: Misses,
    waiting: Iterable[tuple[float, float | None]],
    last_answer: float | None,
    now: float,
    *,
    in_a_row: int = UNANSWERED_IN_A_ROW,
) -> Silence | None:
    """Return the dialer's silence, or None while it may still be answering.

    ``misses`` are the requests unanswered since ``last_answer``; ``waiting`` the
    requests still out, as (sent, read timeout or None). One still out past its read
    timeout, and sent after the latest answer, counts as unanswered (a timeout).
    """
    overdue = [
        sent
        for sent, timeout in waiting
        if timeout is not None
        and now - sent >= timeout
        and (last_answer is None or sent >= last_answer)
    ]
    total = misses.count + len(overdue)
    timed_out = bool(overdue) or any(kind in TIMEOUTS for kind in misses.kinds)
    if total == 0 or (total < in_a_row and not timed_out):
        return None
    kinds = list(misses.kinds)
    if overdue and WAITING not in kinds:
        kinds.append(WAITING)
    firsts = [t for t in (misses.first_sent, *overdue) if t is not None]
    return Silence(since=min(firsts), unanswered=total, kinds=tuple(kinds))


class AnswerWatch:
    """One sink's requests, answered or not (see the module docstring); no I/O."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.last_answer: float | None = None
        self.misses = Misses()
        self._waiting: dict[int, tuple[float, float | None]] = {}
        self._tickets = itertools.count()

    def sent(self, read_timeout: float | None) -> int:
        """Note a request leaving now; return its ticket for :meth:`answered` or :meth:`ended`."""
        ticket = next(self._tickets)
        self._waiting[ticket] = (self._clock(), read_timeout)
        return ticket

    def answered(self, ticket: int) -> None:
        """The dialer answered (whatever it said): it is answering again."""
        self._waiting.pop(ticket, None)
        self.last_answer = self._clock()
        self.misses = Misses()

    def ended(self, ticket: int, kind: str | None) -> None:
        """The request ended without an answer: ``kind`` says how (None: not the dialer's doing)."""
        out = self._waiting.pop(ticket, None)
        if out is None or kind is None:
            return
        sent = out[0]
        if self.last_answer is not None and sent < self.last_answer:
            return  # the dialer answered after it left: one slow request, not silence
        self.misses.add(sent, kind)

    def silence(self) -> Silence | None:
        """Return the dialer's silence now, or None while it may be answering."""
        return silence(self.misses, self._waiting.values(), self.last_answer, self._clock())
