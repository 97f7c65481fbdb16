"""The webhook source: a CRM, a web form backend or a workflow tool POSTs leads to syncd.

Nothing is pulled: the daemon's listener (:mod:`syncd.daemon.webhook`) hands each
POST to the same path as every source's chunk (mapping, phones, reconcile, the
safety gate, one transaction) and answers once it is committed. This module holds
the source's settings and its pure decisions: who may post (an HMAC-SHA256
signature over the timestamp and body, the scheme of :mod:`syncd.core.signing`
that syncd's webhook writeback signs with, or a bearer token), which requests are
replays, what a body holds (one JSON object, or an array of them), and what the
sender is told (row index, field and a reason that quotes no value).
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from syncd.config import SourceConfig
from syncd.core.mapping import clean_cell
from syncd.core.model import Reject
from syncd.core.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, fresh, verify
from syncd.core.versions import OLDER_VERSION, is_older_reason
from syncd.secrets import Secret
from syncd.sources.base import Chunk


class WebhookSourceConfig(SourceConfig):
    """``[[sources]] kind = "webhook"``: where it listens and who may post."""

    scheduled: ClassVar[bool] = False  # nothing to pull: the sender brings the rows

    kind: Literal["webhook"] = "webhook"
    listen: str = Field("127.0.0.1:8090", pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):\d+$")
    path: str = Field("/leads", pattern=r"^/[A-Za-z0-9/_.-]*$")
    secret: Secret | None = None  # HMAC-SHA256 key shared with the sender
    token: Secret | None = None  # or: Authorization: Bearer <token>
    tolerance_s: float = Field(300.0, gt=0, le=3600)  # a signature's timestamp, either way
    max_body_bytes: int = Field(1_048_576, ge=256, le=64 * 1_048_576)
    max_rows: int = Field(500, ge=1, le=1000)  # leads in one POST
    max_backlog: int = Field(10_000, ge=1)  # leads waiting in a routed sink's outbox: 429 past it
    retry_after_s: int = Field(30, ge=1, le=3600)  # what a 429 or 503 asks the sender to wait
    body_timeout_s: float = Field(10.0, gt=0, le=300)  # the whole body, or 408
    # as [health]'s: connections kept at once (unset: a share of the open-file limit), and
    # the time a request head has to come whole
    max_connections: int | None = Field(None, ge=1, le=1_000_000)
    head_timeout_s: float = Field(5.0, gt=0, le=300)
    signature_header: str = SIGNATURE_HEADER
    timestamp_header: str = TIMESTAMP_HEADER

    @field_validator("listen")
    @classmethod
    def _port(cls, value: str) -> str:
        if int(value.rpartition(":")[2]) > 65535:
            raise ValueError("the port must be at most 65535")
        return value

    @model_validator(mode="after")
    def _one_way_in(self) -> WebhookSourceConfig:
        if (self.secret is None) == (self.token is None):
            raise ValueError("set exactly one of secret (HMAC signatures) or token (bearer)")
        for name in ("secret", "token"):
            value = getattr(self, name)
            if value is not None and not value.get_secret_value():
                raise ValueError(f"{name}: must not be empty")
        return self


class WebhookSource:
    """The registry's source object: it yields nothing, since the listener brings the rows."""

    def __init__(
        self,
        config: WebhookSourceConfig,
        *,
        required_columns: set[str] | None = None,
        load_rejects: Any = None,
    ) -> None:
        self.config = config
        self.name = config.name

    async def chunks(self, cursor: str | None, *, full: bool = False) -> AsyncIterator[Chunk]:
        return
        yield  # an async generator that yields nothing

    async def fail_origin(self, origin: str, reason: str) -> None:
        return None

    def progress_total(self) -> int | None:
        return None

    def progress_done(self) -> int:
        return 0

    async def probe(self) -> str:
        """`syncd check --online`: nothing to reach; the sender connects to syncd."""
        way = "HMAC signatures" if self.config.secret is not None else "a bearer token"
        return (
            f"listens on {self.config.listen}{self.config.path} while the daemon runs "
            f"(senders authenticate with {way}); nothing to reach from here"
        )

    async def close(self) -> None:
        return None


# -- who may post ------------------------------------------------------------------------


def refusal(
    config: WebhookSourceConfig, headers: Mapping[str, str], body: bytes, now: float
) -> str | None:
    """Return why a request is not authenticated (for the log, never the sender), or None.

    ``headers`` must look names up case-insensitively (Starlette's do).
    """
    if config.token is not None:
        given = headers.get("authorization", "")
        token = config.token.get_secret_value().encode()
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer":  # an HTTP auth scheme is case-insensitive
            return "no bearer token"
        if not hmac.compare_digest(value.strip().encode(), token):
            return "wrong bearer token"
        return None
    assert config.secret is not None
    stamp = headers.get(config.timestamp_header, "")
    signature = headers.get(config.signature_header, "")
    if not stamp or not signature:
        return "unsigned"
    if not fresh(stamp, now, config.tolerance_s):
        return f"timestamp outside the tolerance of {config.tolerance_s:g} s"
    if not verify(config.secret.get_secret_value().encode(), stamp, body, signature):
        return "bad signature"
    return None


@dataclass(frozen=True)
class Answer:
    """What a request was answered: its HTTP status and JSON document."""

    status: int
    document: dict[str, Any]


@dataclass
class _Seen:
    at: float
    answer: Answer | None  # None: the first request is still being processed


class Replays:
    """Signatures seen within the tolerance window, and what each was answered.

    A request whose signature was seen (the same bytes, the same timestamp) is a
    replay: it gets the first one's answer and commits nothing. The memory is this
    process's: after a restart the key and content hash still keep a replay from
    making a second lead (see docs/webhook-source.md).
    """

    def __init__(self, tolerance_s: float) -> None:
        # A timestamp may be tolerance_s in the future: its signature is fresh for 2x.
        self.keep_s = 2 * tolerance_s
        self._seen: dict[str, _Seen] = {}

    def begin(self, signature: str, now: float) -> _Seen | None:
        """Return what is known of a signature seen before; None: new (now being processed)."""
        self._expire(now)
        seen = self._seen.get(signature)
        if seen is None:
            self._seen[signature] = _Seen(now, None)
        return seen

    def finish(self, signature: str, answer: Answer) -> None:
        seen = self._seen.get(signature)
        if seen is not None:
            seen.answer = answer

    def forget(self, signature: str) -> None:
        """Drop a request that committed nothing (429, 503): its retry is no replay."""
        self._seen.pop(signature, None)

    def _expire(self, now: float) -> None:
        while self._seen:
            oldest, seen = next(iter(self._seen.items()))  # insertion order is time order
            if now - seen.at <= self.keep_s:
                return
            del self._seen[oldest]


# -- what a body holds ---------------------------------------------------------------------


class BodyRefused(ValueError):
    """The whole body is refused (not JSON, not leads, too many): the status and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Refusal:
    """A row refused, as the sender is told: its index in the batch, the field, why."""

    row: int
    field: str | None
    reason: str
    sink: str | None = None  # refused on the way to this sink (others may take it)
    # the row's fields that could be read, kept with the refusal (`syncd rejects`,
    # `syncd explain` by its key); never said back to the sender
    values: dict[str, str] = dataclasses.field(default_factory=dict, compare=False)


@dataclass
class Batch:
    """The leads of one POST, by row index, and the rows refused before mapping."""

    count: int
    rows: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)


NOT_FLAT = "must be text, a number, true/false, null or a list of those"
# JSON's "\\ud800" escapes half of a character: text no store, dialer or UTF-8 holds
TORN = "holds half of a character (a lone \\ud800-\\udfff escape); send the text whole"
_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_leads(body: bytes, max_rows: int) -> Batch:
    """Return the leads of a body: one JSON object, or an array of objects.

    Each value becomes the text a CSV cell would hold (numbers as written, true/false,
    null empty, a list joined with "; " as several numbers in one cell). Raise
    BodyRefused for a body that holds no leads at all.
    """
    try:
        # Numbers stay as written (1.10 is not 1.1, 1e2 not 100.0); NaN is not JSON.
        document = json.loads(body, parse_float=str, parse_int=str, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError):
        raise BodyRefused(400, "the body is not JSON") from None
    except RecursionError:
        raise BodyRefused(400, "the body is not JSON syncd reads: nested too deeply") from None
    items = document if isinstance(document, list) else [document]
    if not isinstance(document, list | dict):
        raise BodyRefused(400, "the body must be a JSON object (a lead) or an array of them")
    if not items:
        raise BodyRefused(400, "the array holds no lead")
    if len(items) > max_rows:
        raise BodyRefused(413, f"{len(items)} leads in one request; at most {max_rows}")
    batch = Batch(len(items))
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            batch.refusals.append(Refusal(i, None, "a lead must be a JSON object"))
            continue
        values = {name: _cell(value) for name, value in item.items()}
        refusal = _refusal(i, values)
        if refusal is not None:
            batch.refusals.append(refusal)
            continue
        batch.rows.append((i, {name: cell or "" for name, cell in values.items()}))
    return batch


def _refusal(row: int, values: Mapping[str, str | None]) -> Refusal | None:
    """Return why a lead's fields cannot be taken (the first field found), None if they can."""
    bad = next((name for name, cell in values.items() if cell is None), None)
    if bad is not None:
        return Refusal(row, bad, NOT_FLAT, values=_readable(values))
    for name, cell in values.items():
        if _SURROGATE.search(name):  # the name itself cannot be said back
            return Refusal(row, None, f"a field's name {TORN}", values=_readable(values))
        if _SURROGATE.search(cell or ""):
            return Refusal(row, name, TORN, values=_readable(values))
    return None


def _readable(values: Mapping[str, str | None]) -> dict[str, str]:
    """Return the fields of a refused row that can be kept as text (name and value)."""
    return {
        name: cell
        for name, cell in values.items()
        if cell is not None and not _SURROGATE.search(name) and not _SURROGATE.search(cell)
    }


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _cell(value: Any) -> str | None:
    """Return a JSON value as a cell's text; None for an object (or a list holding one)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, list):
        cells = [_cell(v) for v in value if not isinstance(v, list)]
        if len(cells) != len(value) or any(c is None for c in cells):
            return None
        return "; ".join(c for c in cells if c)
    return None


def to_chunk(
    batch: Batch,
    source: str,
    origin: str,
    required: Iterable[str],
    key_fields: Iterable[str] = (),
) -> Chunk:
    """Return the chunk the pull reconciles: a header of every field (the routes' first),
    one row per lead (line = row index + 1), the rows refused kept as rejects, with what
    could be read of them and their key (a route's ``key_fields``), as a file's are."""
    names = set(required)
    for _, values in batch.rows:
        names.update(values)
    header = tuple(sorted(names))  # sorted: the same lead hashes the same whatever the order
    rows = [(i + 1, [values.get(n, "") for n in header]) for i, values in batch.rows]
    keys = tuple(key_fields)
    rejects = [
        Reject(
            source,
            f"{r.field}: {r.reason}" if r.field else r.reason,
            r.row + 1,
            origin,
            dict(r.values),
            next((k for f in keys if (k := clean_cell(r.values.get(f, "")))), ""),
        )
        for r in batch.refusals
    ]
    # A row refused here is still the sender's latest of its lead: an earlier row of its
    # key in this POST is superseded by it (last row wins), as in a file.
    last_lines = {
        f: {k: r.row + 1 for r in batch.refusals if (k := r.values.get(f, "").strip())}
        for f in keys
    }
    return Chunk(
        origin=origin,
        header=header,
        rows=rows,
        rejects=rejects,
        last_lines={f: lines for f, lines in last_lines.items() if lines},
    )


# -- which POSTs commit together -------------------------------------------------------------

GROUP_ROWS = 2000  # leads in one group commit at most (each POST holds max_rows or fewer)


def batch_keys(batch: Batch, key_fields: Iterable[str]) -> frozenset[str]:
    """Return the keys a batch's leads carry, read as mapping reads them (any route's key)."""
    fields = tuple(key_fields)
    keys = {clean_cell(values.get(f, "")) for _, values in batch.rows for f in fields}
    keys.discard("")
    return frozenset(keys)


def next_group(
    waiting: Sequence[tuple[frozenset[str], int]], max_rows: int = GROUP_ROWS
) -> list[int]:
    """Return which of the POSTs waiting (each its keys and rows, in arrival order) the next
    commit takes: in order, while the rows stay within ``max_rows`` (the first always),
    skipping each that carries a key an earlier one waiting or taken carries.

    Each POST of a group is planned against the store as it was before the group's
    commit: two carrying one key would both plan it as new (or the older would win).
    A POST skipped keeps its place: it leads the next group, still before any later one
    carrying its keys.
    """
    taken: list[int] = []
    seen: set[str] = set()
    rows = 0
    for i, (keys, count) in enumerate(waiting):
        if taken and rows + count > max_rows:
            break
        clash = not keys.isdisjoint(seen)
        seen.update(keys)
        if not clash:
            taken.append(i)
            rows += count
    return taken


# -- what the sender is told ---------------------------------------------------------------

_COLUMN = re.compile(r"column '([^']*)'")
_LINE = re.compile(r"\bline (\d+)")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"\+?\d[\d ()./-]{4,}\d")


def public_reason(reason: str) -> tuple[str | None, str]:
    """Return the field a mapping reason names and the reason without any value in it.

    The reasons kept in the store quote what was refused (a number, a key); the
    sender is told the field and the kind of problem only.
    """
    found = _COLUMN.search(reason)
    text = _COLUMN.sub(lambda m: f"field {m.group(1)}", reason)
    text = _LINE.sub(lambda m: f"row {int(m.group(1)) - 1}", text)
    text = _QUOTED.sub("…", text)
    return (found.group(1) if found else None), _NUMBER.sub("…", text)


def answer(batch: Batch, rejects: Iterable[tuple[str, Reject]], source: str) -> Answer:
    """Return the answer to a committed batch: 202 when every row went through, else
    400 naming each refused row (the others are committed all the same).

    A row older than the version syncd holds of its lead went through: it is accepted
    and listed under ``superseded`` (the sender has nothing to send again; a refusal
    would have a retry loop send it again and again)."""
    refused = list(batch.refusals)
    superseded: list[Refusal] = []
    for sink, reject in rejects:
        if not sink or reject.line is None or reject.source != source:
            continue  # the source's own refusals are in batch.refusals already
        name, text = public_reason(reject.reason)
        if is_older_reason(reject.reason):  # the times stay in the store (syncd rejects)
            superseded.append(Refusal(reject.line - 1, name, OLDER_VERSION, sink))
        else:
            refused.append(Refusal(reject.line - 1, name, text, sink))
    refused.sort(key=lambda r: (r.row, r.sink or ""))
    bad = {r.row for r in refused}
    document: dict[str, Any] = {
        "accepted": [i for i in range(batch.count) if i not in bad],
        "refused": [_shown(r) for r in refused],
        "replayed": False,
    }
    if superseded:
        superseded.sort(key=lambda r: (r.row, r.sink or ""))
        document["superseded"] = [_shown(r) for r in superseded]
    return Answer(400 if refused else 202, document)


def _shown(refused: Refusal) -> dict[str, Any]:
    """Return a refusal as the sender reads it (``sink`` only when a sink refused it)."""
    shown = asdict(refused)
    del shown["values"]  # the sender's own data: the answer names fields, never values
    if shown["sink"] is None:
        del shown["sink"]
    return shown
