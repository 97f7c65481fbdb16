"""Reading uContact's call records (``Cdr/getrecords``) page by page.

The document pages with ``lastrow`` (the offset) and ``searchLimit`` (the page size,
"if search limit is 50"), and filters by a JSON object: the call-date range, the
campaign, the destination and more. It does not say how large a page a server
serves: a server may serve fewer rows than asked without saying so, so a page
shorter than asked is the end only when it is shorter than what the server has
already shown it serves (or than the document's 50, which every server serves).
Otherwise the next page is read to tell; a non-empty one reveals the server's own
limit, which is kept for later reads. Nothing is read twice and nothing is missed
whatever limit the server has.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from syncd.errors import VendorError
from syncd.sinks.ucontact.client import VENDOR, UContactClient
from syncd.sinks.ucontact.config import UContactSinkConfig
from syncd.sinks.ucontact.wire import server_time

DOCUMENT_PAGE = 50  # the document's example page: every server serves at least this


def first(record: dict[str, Any], *names: str) -> str:
    """Return the first non-empty of ``names`` in a record (servers differ in casing)."""
    lowered = {str(k).lower(): v for k, v in record.items()}
    for name in names:
        value = lowered.get(name.lower())
        if value not in (None, ""):
            return str(value).strip()
    return ""


def rows_of(body: Any) -> list[dict[str, Any]]:
    """Return the records of a getrecords answer (a list, or a list under a key)."""
    if isinstance(body, dict):
        for name in ("records", "data", "rows", "result"):
            if isinstance(body.get(name), list):
                body = body[name]
                break
        else:
            return []
    if not isinstance(body, list):
        raise VendorError("Cdr/getrecords answered JSON that is not a list", vendor=VENDOR)
    return [r for r in body if isinstance(r, dict)]


class PageSize:
    """How many records a page of this server holds: asked for, and learned."""

    def __init__(self, ask: int) -> None:
        self.ask = ask
        self.limit: int | None = None  # the server's own limit, once a read revealed it
        self.floor = min(ask, DOCUMENT_PAGE)  # the server is known to serve this many a page

    def full(self, rows: int) -> bool:
        """Return True when a page of ``rows`` may have more after it."""
        return rows >= min(self.ask, self.limit or self.ask)

    def last(self, rows: int) -> bool:
        """Return True when a page of ``rows`` (not full) is surely the last."""
        return rows < self.floor


def record_filter(
    cfg: UContactSinkConfig, start: datetime, end: datetime, destination: str = ""
) -> dict[str, str]:
    """Return the document's filter object for the campaign's records in a window."""
    return {
        "calldatei": server_time(start, cfg.server_timezone),
        "calldatef": server_time(end, cfg.server_timezone),
        "agent": "",
        "campaign": cfg.campaign,
        "source": "",
        "destination": destination,
        "data": "",
        "range": "",
        "rating": "",
        "mindur": "",
        "exclude": "",
        "type": "record",
        "cont": "",
    }


async def call_records(
    client: UContactClient,
    cfg: UContactSinkConfig,
    start: datetime,
    end: datetime,
    log: Any,
    *,
    lastrow: int = 0,
    size: PageSize | None = None,
    destination: str = "",
) -> AsyncIterator[list[dict[str, Any]]]:
    """Yield the campaign's call records between two times, page by page, from row
    ``lastrow`` of the window on (only those to ``destination`` when given)."""
    size = size or PageSize(cfg.cdr_page_size)
    flt = json.dumps(record_filter(cfg, start, end, destination))

    async def read(row: int) -> list[dict[str, Any]]:
        form = {"lastrow": str(row), "searchLimit": str(size.ask), "filter": flt, "Random": "1"}
        return rows_of(await client.json("Cdr/getrecords", form, empty=[]))

    page = await read(lastrow)
    previous: list[str] | None = None
    while True:
        ids = [first(r, "guid", "uniqueid") for r in page]
        if page and ids == previous:
            # A server that ignores lastrow would page forever.
            log.warning("sink.poll.paging_ignored", lastrow=lastrow)
            return
        if not page or size.last(len(page)):
            yield page
            return
        following: list[dict[str, Any]] | None = None
        if not size.full(len(page)):
            # The end, or the server's own limit: the next page tells.
            following = await read(lastrow + len(page))
            if not following:
                size.floor = max(size.floor, len(page))
                yield page
                return
            size.limit = size.floor = len(page)
            log.info("sink.poll.page_limit", asked=size.ask, served=len(page))
        yield page
        lastrow += len(page)
        previous = ids
        page = following if following is not None else await read(lastrow)
