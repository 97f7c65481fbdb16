"""Quirks of real dialer servers, switchable in every simulator (issue 24's catalogue).

Where :mod:`syncd.simulators.faults` makes a server fail at random, a quirk makes
it answer the way some real server always (or for a while) does: a success that
lists records it did not store, a byte-order mark before the JSON, JSON sent as
``text/plain``, a campaign that is not running for a while, 413 above N records,
optional endpoints that do not exist, forms decoded as ISO-8859-1, credentials
refused for a while, and a batch stored but answered after the client stopped
waiting. Each switch says which vendors it applies to; setting one on a vendor it
does not apply to is refused with the reason (:meth:`Quirks.check`).

Windows (``pause_*``, ``revoked_*``, ``store_then_slow_for_s``) are measured on the
simulator's clock from the moment the quirks were set (start-up, or
``POST /_sim/quirks``), so a test with a fake clock moves through them without sleeping.

Set them at start-up (``syncd simulate VENDOR --quirks JSON``, the simulators'
``quirks=``) or at run time with ``POST /_sim/quirks``; docs/simulators.md lists them.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

VENDORS = ("jodo", "ameyo", "ucontact")
BOM = b"\xef\xbb\xbf"
TOO_LARGE = (
    "<html><head><title>413 Request Entity Too Large</title></head><body>"
    "<center><h1>413 Request Entity Too Large</h1></center><hr><center>nginx</center>"
    "</body></html>"
)

# The optional endpoints each vendor's servers may lack, in the vendor's own names:
# Jodo methods, Ameyo commands, uContact resources.
OPTIONAL_ENDPOINTS: dict[str, frozenset[str]] = {
    "jodo": frozenset(
        {
            "customer_recording",
            "customer_multiple_recordings",
            "userStatus",
            "reallocatedata",
            "saveDisposition",
        }
    ),
    "ameyo": frozenset(
        {"getContacts", "addCallback", "uploadContactAndAddCallback", "ping-session"}
    ),
    "ucontact": frozenset(
        {
            "Supervisor/queuesummary",
            "Supervisor/campaignstatus",
            "Supervisor/convert",
            "api/DispositionCall",
            "Dialers/DialerTask",
            "Dialers/ScheduleDialerCall",
            "Dialers/RemoveScheduleDialerCall",
            "admin/addblack",
        }
    ),
}

# switch -> vendors it applies to; the others name why it does not apply.
APPLIES: dict[str, frozenset[str]] = {
    "failed_records": frozenset({"jodo"}),
    "failed_keys": frozenset({"jodo"}),
    "failed_reason": frozenset({"jodo"}),
    "bom": frozenset(VENDORS),
    "text_plain": frozenset({"jodo", "ucontact"}),
    "pause_from_s": frozenset({"ameyo"}),
    "pause_s": frozenset({"ameyo"}),
    "max_records": frozenset(VENDORS),
    "missing": frozenset(VENDORS),
    "latin1_forms": frozenset({"ameyo"}),
    "revoked_from_s": frozenset(VENDORS),
    "revoked_s": frozenset(VENDORS),
    "store_then_slow_s": frozenset(VENDORS),
    "store_then_slow_times": frozenset(VENDORS),
    "store_then_slow_for_s": frozenset(VENDORS),
    "seed": frozenset(VENDORS),
    "refuse_echoing": frozenset(VENDORS),
}
WHY_NOT = {
    ("failed_records", "ameyo"): "Ameyo answers every record on its own (force_result)",
    ("failed_records", "ucontact"): "uploadbase answers only 1 or 0, never per record",
    ("text_plain", "ameyo"): "the Ameyo simulator always answers JSON as text/plain",
    ("pause_s", "jodo"): "a Jodo process has no paused state in its API",
    ("pause_s", "ucontact"): "uContact keeps a paused campaign's uploads",
    ("latin1_forms", "jodo"): "Jodo reads its form as UTF-8",
    ("latin1_forms", "ucontact"): "uContact's upload file is base64 of UTF-8",
}


@dataclass
class Quirks:
    """The switches; every default is the well-behaved server."""

    # Jodo: this share of each ImportProcessData batch is not stored and listed in
    # the success reply's `faileddata` (statuscode still "001").
    failed_records: float = 0.0
    failed_keys: list[str] = field(default_factory=list)  # these update-key values fail too
    failed_reason: str = "Duplicate record in process"
    # Every reply starts with a UTF-8 byte-order mark (EF BB BF).
    bom: bool = False
    # JSON replies carry Content-Type text/plain.
    text_plain: bool = False
    # Ameyo: uploads and callbacks answer "Campaign is not running" (nothing stored)
    # from pause_from_s after the quirks were set, for pause_s seconds.
    pause_from_s: float = 0.0
    pause_s: float = 0.0
    # A batch of more than max_records records is answered HTTP 413 (0: no limit).
    max_records: int = 0
    # Optional endpoints the server lacks (the vendor's names; see OPTIONAL_ENDPOINTS).
    missing: list[str] = field(default_factory=list)
    # Ameyo: form bodies are decoded as ISO-8859-1, so UTF-8 names arrive garbled.
    latin1_forms: bool = False
    # Credentials are refused from revoked_from_s after the quirks were set, for revoked_s.
    revoked_from_s: float = 0.0
    revoked_s: float = 0.0
    # A batch is stored, then answered store_then_slow_s later (past the client's
    # timeout); only the first store_then_slow_times batches (0: every batch), and only
    # for store_then_slow_for_s after the quirks were set (0: no end), so a run can end
    # with uploads in doubt and a later one, past the window, get its answers.
    store_then_slow_s: float = 0.0
    store_then_slow_times: int = 0
    store_then_slow_for_s: float = 0.0
    seed: int = 0  # which records failed_records picks
    # Records whose submitted text holds this string are refused, and the refusal quotes
    # the record as it came (a duplicate check that names the customer): Jodo lists them
    # in `faileddata`, Ameyo answers INVALID_RECORD_FAILED with the record in its
    # exception, uContact answers the upload with its error text instead of 1.
    refuse_echoing: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any], vendor: str | None = None) -> Quirks:
        """Return the quirks in ``data``; ValueError names unknown or inapplicable switches."""
        if not isinstance(data, dict):
            raise ValueError("quirks must be a JSON object of switches")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown quirk(s): {', '.join(sorted(unknown))}")
        quirks = cls(**data)
        if not isinstance(quirks.missing, list):
            quirks.missing = sorted(quirks.missing)
        if vendor is not None:
            quirks.check(vendor)
        return quirks

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self, vendor: str) -> None:
        """Raise ValueError when a switch that is on does not apply to ``vendor``."""
        default = Quirks()
        problems = []
        for name, vendors in APPLIES.items():
            if getattr(self, name) == getattr(default, name) or vendor in vendors:
                continue
            why = WHY_NOT.get((name, vendor)) or WHY_NOT.get((_pair(name), vendor))
            problems.append(
                f"{name} does not apply to {vendor}" + (f" ({why})" if why else "")
                + f"; it applies to {', '.join(sorted(vendors))}"
            )  # fmt: skip
        optional = OPTIONAL_ENDPOINTS[vendor]
        wrong = sorted(set(self.missing) - optional)
        if wrong:
            problems.append(
                f"missing: {', '.join(wrong)} not an optional {vendor} endpoint "
                f"(one of {', '.join(sorted(optional))})"
            )
        if not 0.0 <= self.failed_records <= 1.0:
            problems.append("failed_records is a share between 0 and 1")
        if problems:
            raise ValueError("; ".join(problems))


def _pair(name: str) -> str:
    """Return the switch a companion switch belongs to (pause_from_s -> pause_s)."""
    companions = {
        "pause_from_s": "pause_s",
        "failed_reason": "failed_records",
        "failed_keys": "failed_records",
        "revoked_from_s": "revoked_s",
        "store_then_slow_times": "store_then_slow_s",
        "store_then_slow_for_s": "store_then_slow_s",
    }
    return companions.get(name, name)


class QuirkState:
    """The quirks a simulator runs with, and the decisions they make per request."""

    def __init__(
        self, vendor: str, quirks: Quirks | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.vendor = vendor
        self.clock = clock
        self.lock = threading.Lock()
        self.applied: dict[str, int] = {}  # quirk -> how many times it changed an answer
        self.set(quirks or Quirks())

    def set(self, quirks: Quirks) -> None:
        quirks.check(self.vendor)
        with self.lock:
            self.quirks = quirks
            self.since = self.clock()
            self.rng = random.Random(quirks.seed)
            self.slow_left = quirks.store_then_slow_times

    def count(self, name: str) -> None:
        with self.lock:
            self.applied[name] = self.applied.get(name, 0) + 1

    # -- decisions ----------------------------------------------------------------

    def _within(self, start: float, length: float) -> bool:
        if length <= 0:
            return False
        elapsed = self.clock() - self.since
        return start <= elapsed < start + length

    def paused(self) -> bool:
        """Is the campaign not running now (Ameyo)?"""
        q = self.quirks
        hit = self._within(q.pause_from_s, q.pause_s)
        if hit:
            self.count("pause_s")
        return hit

    def revoked(self) -> bool:
        """Are the credentials refused now?"""
        q = self.quirks
        hit = self._within(q.revoked_from_s, q.revoked_s)
        if hit:
            self.count("revoked_s")
        return hit

    def missing(self, endpoint: str) -> bool:
        hit = endpoint in self.quirks.missing
        if hit:
            self.count("missing")
        return hit

    def too_large(self, records: int) -> Response | None:
        """Return the 413 a proxy answers for a batch above max_records, or None."""
        limit = self.quirks.max_records
        if limit <= 0 or records <= limit:
            return None
        self.count("max_records")
        return HTMLResponse(TOO_LARGE, status_code=413)

    def failing(self, keys: list[str]) -> frozenset[int]:
        """Return the indexes of a batch's records (by update key) the server will not store."""
        rate, named = self.quirks.failed_records, set(self.quirks.failed_keys)
        if rate <= 0 and not named:
            return frozenset()
        with self.lock:
            picked = frozenset(
                i for i, key in enumerate(keys) if key in named or self.rng.random() < rate
            )
        if picked:
            self.count("failed_records")
        return picked

    def echoed_refusal(self, record: Any) -> str | None:
        """Return the error text refusing ``record`` (it quotes the record), or None when
        ``refuse_echoing`` does not pick it."""
        needle = self.quirks.refuse_echoing
        if isinstance(record, dict):  # the values as a server's message joins them: unquoted
            text = " ".join(str(v) for v in record.values() if v not in (None, ""))
        else:
            text = str(record)
        if not needle or needle not in text:
            return None
        self.count("refuse_echoing")
        return f"Duplicate customer {text} already exists"

    def slow_after_store(self) -> float:
        """Return how long to wait before answering a batch already stored (0: answer now)."""
        q = self.quirks
        if q.store_then_slow_s <= 0:
            return 0.0
        if q.store_then_slow_for_s > 0 and not self._within(0.0, q.store_then_slow_for_s):
            return 0.0
        with self.lock:
            if q.store_then_slow_times:
                if self.slow_left <= 0:
                    return 0.0
                self.slow_left -= 1
            self.applied["store_then_slow_s"] = self.applied.get("store_then_slow_s", 0) + 1
        return q.store_then_slow_s

    async def after_store(self) -> None:
        delay = self.slow_after_store()
        if delay:
            await asyncio.sleep(delay)  # stored already: only the answer is late

    def form_text(self, raw: bytes, content_type: str = "") -> tuple[str, str]:
        """Return a form body as the server reads it, and the encoding of its escapes.

        With ``latin1_forms`` the server decodes a form that names no charset as
        ISO-8859-1 (a servlet container's default); a named charset is honoured.
        """
        if self.quirks.latin1_forms:
            self.count("latin1_forms")  # in play; a client naming its charset gets past it
            if "charset=" not in content_type.lower():
                return raw.decode("latin-1"), "latin-1"
        return raw.decode("utf-8", "replace"), "utf-8"

    def dress(self, response: Response) -> Response:
        """Return ``response`` with a BOM and/or text/plain, as the quirks say."""
        q = self.quirks
        if not (q.bom or q.text_plain) or not hasattr(response, "body"):
            return response  # a streamed answer (a reset fault) has no body to change
        body = bytes(response.body)
        media = response.headers.get("content-type", "")
        if q.text_plain and media.startswith("application/json"):
            media = "text/plain; charset=utf-8"
            self.count("text_plain")
        if q.bom and body:
            body = BOM + body
            self.count("bom")
        headers = {
            k: v
            for k, v in response.headers.items()
            if k.lower() not in ("content-length", "content-type")
        }
        return Response(body, status_code=response.status_code, headers=headers, media_type=media)


def quirks_route(state: QuirkState) -> Route:
    """Return ``POST /_sim/quirks``: set the quirks at run time (the body: all switches)."""

    async def set_quirks(request: Request) -> Response:
        try:
            state.set(Quirks.from_dict(await request.json(), state.vendor))
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(state.quirks.to_dict())

    return Route("/_sim/quirks", set_quirks, methods=["POST"])


def holdings_of(
    open_rows: list[dict[str, Any]],
    closed: list[dict[str, Any]],
    finished: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Return a simulator's holdings in the one shape every simulator answers.

    ``open``: the records it would ring (``key``, ``numbers``, names); ``closed``:
    records a removal took out; ``finished``: records dialled to the end;
    ``open_per_number``: how many open records hold each number (2: rung twice).
    """
    per_number: dict[str, int] = {}
    for row in open_rows:
        for number in row["numbers"]:
            per_number[number] = per_number.get(number, 0) + 1
    return {
        "open": open_rows,
        "closed": closed,
        "finished": finished or [],
        "open_per_number": per_number,
    }
