"""A lead the CRM deletes while a push has it in flight, and that push fails.

The pull cannot mark it gone while a push holds it (the request may land): it queues a
removal instead. When the push then fails, the dialer never had the lead: there is
nothing to withdraw, and the removal must not go to the dialer (it has no number to
name there) nor be retried for ever. Found when `--once` began pushing while it pulls:
a batch stopped by a revoked key left such removals pending, tried every run.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from syncd.config import load_settings
from syncd.core.model import Action, LeadWrite
from syncd.state import open_store
from syncd.state.base import ChunkWrite
from tests.conftest import run_cli
from tests.support.quirks import SINK, VENDORS, env, served, write_config


async def _deleted_while_in_flight(config: Path) -> None:
    """Queue L1, claim it, have the CRM delete it, then give the claim back unsent."""
    store = await open_store(load_settings(config, env()).state)
    try:
        first = ChunkWrite("run1", "crm", "monday.csv")
        lead = '{"key": "L1", "phone": "+15550101", "first_name": "Asha"}'
        first.leads[SINK] = [LeadWrite("L1", "h1", "r1", lead, Action.UPSERT, "new", 2)]
        await store.apply_chunk(first)
        (claimed,) = await store.claim(SINK, 10, 30)
        second = ChunkWrite("run2", "crm", "tuesday.csv")
        gone = '{"deleted": true, "key": "L1"}'
        second.leads[SINK] = [
            LeadWrite("L1", "h2", "r2", gone, Action.DELETE, "skipped", 2, state="removed")
        ]
        await store.apply_chunk(second)
        await store.requeue(SINK, ["L1"], 0.0, "the dialer refused the key", claim=claimed.claim)
    finally:
        await store.close()


async def _state_of(config: Path, key: str) -> str:
    store = await open_store(load_settings(config, env()).state)
    try:
        return (await store.lookup(SINK, [key]))[key].state
    finally:
        await store.close()


def test_a_removal_of_a_lead_the_dialer_never_had_is_settled_without_a_request(
    tmp_path: Path,
) -> None:
    with served(VENDORS["jodo"], {}) as (sim, url, _clock):
        config = write_config(tmp_path, VENDORS["jodo"], url)
        asyncio.run(_deleted_while_in_flight(config))

        result = run_cli("run", "--once", "-c", str(config), env=env(), timeout=60)

        assert result.returncode == 0, result.stdout + result.stderr[-3000:]
        assert asyncio.run(_state_of(config, "L1")) == "removed"
        assert sim.dispositions == [] and sim.records() == []  # nothing asked of the dialer
