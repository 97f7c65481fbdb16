"""Ameyo's memory of its leads lives in the store's sink ledger, not in ``kv``.

What the sink delivered per lead (the customer id, a digest of the record, the callback
time, phone1, the validityTime) is one typed row that goes with the lead, instead of a
JSON ``kv`` row per lead (issue 30, point 7). A store upgraded from schema 15 keeps what
its ``kv`` held: an unchanged lead is still not sent again, its callback not repeated.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from syncd.core.mapping import lead_hash, lead_to_json
from syncd.core.model import Action, Lead, LeadWrite, ResultKind
from syncd.core.summary import SinkCounts
from syncd.run.push import Pusher
from syncd.simulators.ameyo.api import AmeyoSimulator, create_app
from syncd.simulators.server import running
from syncd.sinks.ameyo.config import AmeyoSinkConfig
from syncd.sinks.ameyo.ledger import record_digest
from syncd.sinks.ameyo.sink import AmeyoSink
from syncd.sinks.base import SinkContext
from syncd.state.base import ChunkWrite, Completion
from syncd.state.sqlite import SqliteStore
from tests.conftest import cli_env, drop_csv, run_cli
from tests.support.stores import KINDS, store_at_schema

CONFIG = """\
[state]
path = "{state}"
[log]
level = "info"
format = "json"
[[sources]]
name = "crm"
kind = "csv_drop"
inbox = "{inbox}"
[[sinks]]
name = "am"
kind = "ameyo"
url = "{url}"
auth = {{ mode = "session", user_id = "syncd", password = "env:TEST_AMEYO_PASSWORD" }}
campaign_id = 1
lead_id = 1
timezone = "Asia/Kolkata"
dial_format = "national"
retry_base_s = 0.1
retry_max_s = 0.5
[[routes]]
source = "crm"
sink = "am"
default_region = "IN"
timezone = "Asia/Kolkata"
[routes.map]
key = "id"
phone = "phone"
first_name = "first"
last_name = "last"
call_at = "callback"
fields = {{ note = "note" }}
"""

HEADER = "id,phone,first,last,callback,note\n"
FIRST = (
    "A1,98200 10001,Asha,Rao,,x\n"
    "A2,98200 10002,Ravi,Iyer,,x\n"
    "A3,98200 10003,Meena,Das,2030-01-01 09:30,x\n"
)
# A1: only a field Ameyo does not hold (nothing to send); A2: its record (an upload);
# A3: only its callback (one addCallback for the customer it has).
SECOND = (
    "A1,98200 10001,Asha,Rao,,y\n"
    "A2,98200 10002,Ravi,Menon,,x\n"
    "A3,98200 10003,Meena,Das,2030-01-02 09:30,x\n"
)


@pytest.fixture
def dialer() -> Iterator[tuple[AmeyoSimulator, str]]:
    sim = AmeyoSimulator(dialing=False, timezone="Asia/Kolkata")
    with running(create_app(sim)) as url:
        yield sim, url


def once(config: Path) -> None:
    done = run_cli("run", "--once", "-c", str(config), env=cli_env(TEST_AMEYO_PASSWORD="secret"))
    assert done.returncode == 0, done.stderr


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def ameyo_kv(db: Path) -> list[tuple[Any, ...]]:
    """Return the kv rows that are Ameyo's or name one of the leads."""
    kv = rows(db, "SELECT scope, name FROM kv")
    return [r for r in kv if "ameyo" in r[0] or r[0].startswith("am") or r[1].startswith("A")]


def test_a_sync_remembers_what_it_delivered_in_the_ledger_and_none_in_kv(
    tmp_path: Path, dialer: tuple[AmeyoSimulator, str]
) -> None:
    sim, url = dialer
    config = tmp_path / "syncd.toml"
    db = tmp_path / "state" / "state.db"
    config.write_text(CONFIG.format(state=db, inbox=tmp_path / "inbox", url=url))
    drop_csv(tmp_path / "inbox", "first.csv", HEADER + FIRST)
    once(config)
    customers = {c.data["phone1"]: str(c.customer_id) for c in sim.customer_list()}
    assert len(customers) == 3
    assert ameyo_kv(db) == []
    ledger = {
        key: (number, ref, schedule, len(sent_hash or ""))
        for key, number, ref, schedule, sent_hash in rows(
            db, "SELECT key, number, ref, schedule, sent_hash FROM sink_ledger WHERE sink = 'am'"
        )
    }
    callback = datetime(2030, 1, 1, 4, 0, tzinfo=UTC).isoformat()  # 09:30 in Kolkata
    assert ledger == {
        "A1": ("09820010001", customers["09820010001"], None, 20),
        "A2": ("09820010002", customers["09820010002"], None, 20),
        "A3": ("09820010003", customers["09820010003"], callback, 20),
    }

    drop_csv(tmp_path / "inbox", "second.csv", HEADER + SECOND)
    once(config)
    assert sim.uploads() == {"09820010001": 1, "09820010002": 2, "09820010003": 1}
    assert sim.requests.get("addCallback") == 1
    assert len(sim.callbacks) == 2  # A3's first, and its new one
    assert rows(db, "SELECT key, state FROM leads ORDER BY key") == [
        ("A1", "delivered"),
        ("A2", "delivered"),
        ("A3", "delivered"),
    ]
    assert ameyo_kv(db) == []
    [(schedule,)] = rows(db, "SELECT schedule FROM sink_ledger WHERE key = 'A3'")
    assert schedule == datetime(2030, 1, 2, 4, 0, tzinfo=UTC).isoformat()


# -- a store upgraded from schema 15 --------------------------------------------------------

CALL_AT = datetime(2030, 1, 2, 4, 30, tzinfo=UTC)
SCOPE = "ameyo.delivered:am"  # the kv scope the sink wrote per lead before migration 16


def sink_config(url: str) -> AmeyoSinkConfig:
    return AmeyoSinkConfig(
        name="am",
        url=url,
        auth={"mode": "session", "user_id": "syncd", "password": "secret"},
        campaign_id=1,
        lead_id=1,
        retry_base_s=0.1,
        retry_max_s=0.5,
        timezone="Asia/Kolkata",
    )


def lead(n: int, **changes: Any) -> Lead:
    values: dict[str, Any] = {
        "key": f"L{n}",
        "phone": f"+9198200{n:05d}",
        "first_name": "Asha",
        "last_name": f"Rao{n}",
        **changes,
    }
    return Lead(**values)


async def old_kv(url: str, leads: list[Lead]) -> list[tuple[str, str, str]]:
    """Return the kv rows the sink wrote for ``leads`` delivered before migration 16."""
    sink = AmeyoSink(sink_config(url), SinkContext(store=SqliteStore(":memory:"), region="IN"))
    try:
        kv = []
        for n, one in enumerate(leads, start=1):
            record = sink.record(one)
            held = {
                "customer": f"{700 + n}",
                "record": record_digest(record),
                "call_at": one.call_at.isoformat() if one.call_at else None,
                "phone1": record["phone1"],
                "validity": None,
            }
            kv.append((SCOPE, one.key, json.dumps(held)))
        return kv
    finally:
        await sink.close()


async def enqueue(store: SqliteStore, leads: list[Lead]) -> None:
    write = ChunkWrite("run-1", "crm", "leads.csv")
    write.leads["am"] = [
        LeadWrite(one.key, lead_hash(text), None, text, Action.UPSERT, "new", None)
        for one in leads
        for text in [lead_to_json(one)]
    ]
    await store.apply_chunk(write)


async def delivered_before(store: SqliteStore, leads: list[Lead]) -> None:
    """Put ``leads`` in the store as the old syncd left them: delivered (the customer id
    only in kv, as when the result's id was not written with it)."""
    await enqueue(store, leads)
    claimed = await store.claim("am", 100, 60)
    done = [Completion(q.key, q.hash, ResultKind.DELIVERED, claim=q.claim) for q in claimed]
    assert await store.complete("am", done) == []
    for q in claimed:
        store.settle(q.claim)


@pytest.mark.parametrize("kind", KINDS)
async def test_an_upgraded_store_sends_an_unchanged_lead_nothing(kind: str, tmp_path: Path) -> None:
    sim = AmeyoSimulator(dialing=False, timezone="Asia/Kolkata")
    leads = [lead(1), lead(2, call_at=CALL_AT)]
    with running(create_app(sim)) as url:
        kv = [*await old_kv(url, leads), ("jodo:jd", "outcomes.window_end", "x")]
        async with store_at_schema(kind, tmp_path, 15, kv) as store:
            left = await kv_scopes(store)
            moved = {key: await store.ledger_get("am", key) for key in ("L1", "L2")}
            await delivered_before(store, leads)
            # A new version Ameyo holds nothing of: a field the record does not carry.
            await enqueue(store, [replace_fields(one) for one in leads])
            sink = AmeyoSink(sink_config(url), SinkContext(store=store, region="IN"))
            await sink.open()
            try:
                counts = SinkCounts()
                await Pusher(sink, store, counts).run_until_idle(time.time() + 20)
            finally:
                await sink.close()
            refs = {key: (await store.lead_history(key))["leads"][0]["vendor_ref"] for key in moved}
    assert left == {"jodo:jd"}  # Ameyo's per-lead rows moved out of kv; others stay
    placed = {k: r.placement for k, r in moved.items() if r is not None}
    assert {k: (p.number, p.ref, p.schedule) for k, p in placed.items() if p} == {
        "L1": ("+919820000001", "701", None),
        "L2": ("+919820000002", "702", CALL_AT.isoformat()),
    }
    assert counts.delivered == 2
    assert sim.requests.get("uploadContactAndAddCallback", 0) == 0  # not sent again
    assert sim.requests.get("addCallback", 0) == 0  # the callback not repeated
    assert refs == {"L1": "701", "L2": "702"}  # the customer ids the ledger kept


def replace_fields(one: Lead) -> Lead:
    return replace(one, fields={"note": "changed"})


async def kv_scopes(store: SqliteStore) -> set[str]:
    async with store._lock, store.db.execute("SELECT scope FROM kv") as cur:
        return {str(r[0]) for r in await cur.fetchall()}
