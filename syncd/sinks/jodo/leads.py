"""Reading the leads a Jodo sink has delivered, page by page (never all at once)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from syncd.core.model import Lead
from syncd.state.base import SinkStore

PAGE = 500


async def delivered_leads(
    store: SinkStore, sink: str
) -> AsyncIterator[tuple[str, str | None, Lead]]:
    """Yield (key, number the dialer holds, lead) for every delivered lead, in key order."""
    after = ""
    while True:
        page = await store.delivered(sink, after_key=after, limit=PAGE)
        if not page:
            return
        for key, ref, lead_json in page:
            yield key, ref, Lead.from_json(json.loads(lead_json))
        after = page[-1][0]
