"""Outcome polling: getContacts for the customers syncd delivered, in chunks.

A stop or reload (``stopping``) ends the walk after the chunk being read, keeping the
outcomes read. The next poll walks every delivered lead again, as each poll does: a
walk resumed halfway would not be a poll that went through (the expired-lead check
trusts one to have seen every call placed before it started).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from syncd.core.model import CallStatus, Outcome
from syncd.errors import RetryableError, SessionExpiredError
from syncd.sinks.ameyo.client import AmeyoClient
from syncd.sinks.ameyo.config import AmeyoSinkConfig
from syncd.sinks.ameyo.replies import call_status, lower_keys, parse_time, result_list
from syncd.state.base import StateStore

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
    store: StateStore,
    cfg: AmeyoSinkConfig,
    unread: set[str],
    *,
    stopping: asyncio.Event | None = None,
    log: Any = None,
) -> int:
    """Record what Ameyo reports for every delivered lead; return how many outcomes changed.

    ``unread`` holds where the pages a failed request left unread start: the next
    poll reads those first and alone, so a long poll under a flaky dialer catches up
    instead of starting over. Raises RetryableError naming how many pages are unread.
    """
    changed = 0
    failures: list[str] = []
    walk = not unread  # a full pass, or a catch-up of the pages left unread
    starts = sorted(unread) if unread else [""]
    unread.clear()
    chunks = 0
    for start in starts:
        after = start
        while True:
            page = await store.delivered(cfg.name, after_key=after, limit=cfg.poll_chunk)
            if not page:
                break
            by_customer: dict[str, list[str]] = {}
            for key, customer_id, _ in page:
                if customer_id:
                    # Two CRM leads with one phone1 are one Ameyo customer: both get its outcome.
                    by_customer.setdefault(customer_id, []).append(key)
            if by_customer:
                try:
                    changed += await _poll_chunk(client, store, cfg, by_customer)
                except (RetryableError, SessionExpiredError) as exc:
                    unread.add(after)
                    failures.append(str(exc))
            after = page[-1][0]
            chunks += 1
            if not walk or len(page) < cfg.poll_chunk:
                break
            if stopping is not None and stopping.is_set():
                if log is not None:
                    log.info("sink.poll.stopped", chunks=chunks, reason="stop")
                return changed
    if failures:
        raise RetryableError(
            f"getContacts: {len(failures)} page(s) of outcomes unread, read first at the next "
            f"poll ({failures[-1]})",
            vendor="ameyo",
        )
    return changed


async def _poll_chunk(
    client: AmeyoClient,
    store: StateStore,
    cfg: AmeyoSinkConfig,
    by_customer: dict[str, list[str]],
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
    for contact in result_list(body) or []:
        customer_id = str(lower_keys(contact).get("customerid", ""))
        for key in by_customer.get(customer_id, []):
            outcome = outcome_of(cfg.name, key, contact, cfg, observed)
            if outcome is not None:
                outcomes.append(outcome)
    if not outcomes:
        return 0
    return await store.record_outcomes(outcomes)
