"""Outcome polling: getContacts for the delivered customers a poll needs to ask, in chunks.

Which ones, and when again, is ``asking.py``'s: new and closing leads at every poll,
the others at growing gaps, final ones never again. Each poll walks the sink's
delivered leads in the store (to find new ones and forget those that left) and
asks Ameyo only about those. A chunk that failed leaves its leads due: the next
poll asks them first, so a long poll under a flaky dialer catches up instead of
starting over.

A stop or reload (``stopping``) ends the poll after the chunk being read, keeping
the outcomes read; the leads not reached stay due. The expired-lead check trusts a
poll that went through to have seen every call placed before it started: leads whose
window closes around a poll are asked at every poll until one asked them after the
close (``asking.CLOSE_MARGIN_S``), and a poll a stop or a failure ended does not count
as one that went through (``syncd.run.engine``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from syncd.core.model import CallStatus, Outcome
from syncd.errors import RetryableError, SessionExpiredError
from syncd.sinks.ameyo.asking import Watchlist
from syncd.sinks.ameyo.client import AmeyoClient
from syncd.sinks.ameyo.config import AmeyoSinkConfig
from syncd.sinks.ameyo.ledger import Ledger
from syncd.sinks.ameyo.replies import (
    call_status,
    lower_keys,
    parse_time,
    result_list,
    validity_epoch,
)
from syncd.state.base import SinkStore

ALIAS = "__campaign_customer_table_alias__"
COLUMNS = (
    "status",
    "attempts",
    "disposition",
    "last_dialed_time",
    "last_user_id",
    "num_outbound_attempted",
    "num_outbound_connected",
)
WALK_PAGE = 2000  # delivered leads read from the store at a time (no request to Ameyo)
OTHER_COLUMNS = {f"{ALIAS}.{column}": column.upper() for column in COLUMNS}


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def outcome_of(
    sink: str, key: str, contact: dict[str, Any], cfg: AmeyoSinkConfig, observed: datetime
) -> Outcome | None:
    """Return the Outcome a getContacts entry reports, or None when nothing happened yet."""
    low = lower_keys(contact)
    extra_raw = low.get("extradata")
    extra = lower_keys(extra_raw) if isinstance(extra_raw, dict) else {}
    raw_status = str(extra.get("status") or "").strip()
    attempts = _int(extra.get("attempts", low.get("numoutboundattempted", "")))
    if raw_status.upper() in ("", "NOT_TRIED") and not attempts:
        return None
    return Outcome(
        sink=sink,
        key=key,
        observed_at=observed,
        status=call_status(raw_status, cfg.status_map) if raw_status else CallStatus.UNKNOWN.value,
        raw_status=raw_status,
        disposition=str(extra.get("disposition") or ""),
        attempts=attempts,
        last_dialed_at=parse_time(
            extra.get("last_dialed_time") or low.get("lastdialed"), cfg.timezone
        ),
        agent=str(extra.get("last_user_id") or ""),
        raw={
            "customerId": low.get("customerid"),
            "leadId": low.get("leadid"),
            "extraData": extra_raw if isinstance(extra_raw, dict) else {},
            "numOutboundAttempted": low.get("numoutboundattempted"),
            "numOutboundConnected": low.get("numoutboundconnected"),
        },
    )


async def poll(
    client: AmeyoClient,
    store: SinkStore,
    cfg: AmeyoSinkConfig,
    watch: Watchlist,
    *,
    now: float,
    stopping: asyncio.Event | None = None,
    log: Any = None,
) -> int:
    """Record what Ameyo reports for the delivered leads due an ask; return how many
    outcomes changed. Raises RetryableError naming how many chunks are unread."""
    await _walk(store, cfg.name, watch)
    picked = watch.pick(now, cfg.poll_chunk)
    keys = picked.must + picked.reask
    changed = 0
    failures: list[str] = []
    chunks = 0
    for by_customer in _chunks(watch, keys, cfg.poll_chunk):
        try:
            changed += await _poll_chunk(client, store, cfg, watch, by_customer, now)
        except (RetryableError, SessionExpiredError) as exc:
            failures.append(str(exc))  # its leads stay due: asked first next time
        chunks += 1
        if stopping is not None and stopping.is_set():
            if log is not None:
                log.info("sink.poll.stopped", chunks=chunks, reason="stop")
            return changed
    await _read_closes(Ledger(store, cfg.name), cfg, watch)
    if log is not None:
        log.debug(
            "sink.poll.asked",
            chunks=chunks,
            new_or_closing=len(picked.must),
            again=len(picked.reask),
            waiting=picked.waiting,
            watched=len(watch.leads),
        )
    if failures:
        raise RetryableError(
            f"getContacts: {len(failures)} chunk(s) of customers unread, asked first at the "
            f"next poll ({failures[-1]})",
            vendor="ameyo",
        )
    return changed


async def _walk(store: SinkStore, sink: str, watch: Watchlist) -> None:
    """Tell ``watch`` which leads are delivered now (SQL only: nothing asked of Ameyo)."""
    walked: set[str] = set()
    after = ""
    while True:
        page = await store.delivered(sink, after_key=after, limit=WALK_PAGE)
        for key, customer_id, lead_json in page:
            # A new version of the lead (the CRM changed it) is a new delivery
            watch.walked(key, customer_id, hash((customer_id, lead_json)))
            walked.add(key)
        if len(page) < WALK_PAGE:
            break
        after = page[-1][0]
    watch.forget_others(walked)


def _chunks(watch: Watchlist, keys: list[str], size: int) -> Iterator[dict[str, list[str]]]:
    """Yield the leads to ask about by customer, ``size`` customers a chunk."""
    by_customer: dict[str, list[str]] = {}
    for key in keys:
        customer = watch.leads[key].customer
        if not customer:
            continue
        if customer not in by_customer and len(by_customer) == size:
            yield by_customer
            by_customer = {}
        # Two CRM leads with one phone1 are one Ameyo customer: both get its outcome.
        by_customer.setdefault(customer, []).append(key)
    if by_customer:
        yield by_customer


async def _read_closes(ledger: Ledger, cfg: AmeyoSinkConfig, watch: Watchlist) -> None:
    """Read, once per process, the validityTime of leads asked and not final whose close
    is not known here (delivered before a restart or by another replica): its ledger row
    has it. Not before their first answer: most are final by then."""
    for key in watch.close_unknown():
        held = await ledger.delivered(key)
        watch.set_close(key, validity_epoch(held.validity, cfg.timezone) if held else None)


async def _poll_chunk(
    client: AmeyoClient,
    store: SinkStore,
    cfg: AmeyoSinkConfig,
    watch: Watchlist,
    by_customer: dict[str, list[str]],
    now: float,
) -> int:
    body = await client.call(
        "getContacts",
        {
            "campaignId": cfg.campaign_id,
            "customerIds": list(by_customer),
            "chooseEnabledLeads": False,
            "otherColumns": OTHER_COLUMNS,
        },
    )
    observed = datetime.now(UTC)
    outcomes = []
    answers: dict[str, tuple[int | None, str | None]] = {}
    for contact in result_list(body) or []:
        customer_id = str(lower_keys(contact).get("customerid", ""))
        answer = hash(json.dumps(contact, sort_keys=True, default=str))
        for key in by_customer.get(customer_id, []):
            outcome = outcome_of(cfg.name, key, contact, cfg, observed)
            if outcome is not None:
                outcomes.append(outcome)
            answers[key] = (answer, outcome.status if outcome else None)
    changed = await store.record_outcomes(outcomes) if outcomes else 0
    # Only once stored: an answer lost with the store is asked again. A customer Ameyo
    # did not return was asked all the same.
    for keys in by_customer.values():
        for key in keys:
            watch.answered(key, now, *answers.get(key, (None, None)))
    return changed
