"""What the push asks the store, on both databases (issue 27: the push's CPU per lead)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from syncd.core.model import Action, LeadWrite
from syncd.state.base import ChunkWrite
from syncd.state.sqlite import SqliteStore
from tests.support.stores import KINDS, fresh_store


@pytest.fixture(params=KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with fresh_store(request.param, tmp_path) as opened:
        yield opened


def lead(key: str, phone: str, alt: tuple[str, ...] = ()) -> str:
    return json.dumps({"key": key, "phone": phone, "alt_phones": list(alt)})


async def test_a_push_s_own_batch_is_not_among_the_holders_of_its_numbers(
    store: SqliteStore,
) -> None:
    write = ChunkWrite("run1", "crm", "a.csv")
    write.leads["jodo"] = [
        LeadWrite("A", "ha", "ra", lead("A", "+15550001"), Action.UPSERT, "new", 2),
        LeadWrite("B", "hb", "rb", lead("B", "+15550002", ("+15550001",)), Action.UPSERT,
                  "new", 3),
        LeadWrite("C", "hc", "rc", lead("C", "+15550001"), Action.UPSERT, "new", 4),
    ]  # fmt: skip
    await store.apply_chunk(write)
    numbers = ["+15550001", "+15550002"]
    assert sorted(h.key for h in await store.number_holders("jodo", numbers)) == ["A", "B", "C"]
    besides = await store.number_holders("jodo", numbers, besides={"A", "B"})
    assert [h.key for h in besides] == ["C"]
    by_alternate = await store.number_holders("jodo", ["+15550001"], alternates=True, besides={"A"})
    assert sorted(h.key for h in by_alternate) == ["B", "C"]
    assert await store.number_holders("jodo", numbers, besides={"A", "B", "C"}) == []
