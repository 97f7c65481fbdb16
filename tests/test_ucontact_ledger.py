"""uContact's memory of its leads lives in the store's sink ledger, not in ``kv``.

One typed row per (sink, lead) and a number -> lead index, instead of four JSON ``kv``
rows of string scopes per lead (issue 30, point 7: ~1 KB a lead in ``kv``); a lead's
rows go with the lead; a store upgraded from schema 14 keeps what its ``kv`` held, so a
lead whose upload was in doubt is still checked against the call records, not sent
again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from syncd.core.model import ResultKind
from syncd.sinks.ucontact.ledger import ADD, BASE, MAYBE, Placed
from syncd.state.ledger import Placement
from syncd.state.sqlite import SqliteStore
from tests.conftest import cli_env, drop_csv, run_cli
from tests.support.stores import KINDS, fresh_store, store_at_schema
from tests.support.ucontact import dialled, queued, served, sink_on, uy

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
name = "uc"
kind = "ucontact"
url = "{url}"
user = "api"
password = "env:TEST_UCONTACT_PASSWORD"
campaign = "Ventas->"
dial_format = "00"
cdr_delay_s = 0.2
retry_base_s = 0.1
retry_max_s = 0.5
backup_records_url = "{url}/backup"
[[routes]]
source = "crm"
sink = "uc"
default_region = "UY"
[routes.map]
key = "id"
phone = "phone"
first_name = "first"
"""

# The kv scopes uContact wrote per lead before migration 15 (and its own, which stays).
OLD_PER_LEAD = ("ucontact.uc.lead", "ucontact.uc.phone", "ucontact.uc.calls", "ucontact.uc.newest")


def once(config: Path) -> None:
    done = run_cli("run", "--once", "-c", str(config), env=cli_env(TEST_UCONTACT_PASSWORD="secret"))
    assert done.returncode == 0, done.stderr


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def test_a_sync_remembers_its_leads_in_the_ledger_and_none_in_kv(tmp_path: Path) -> None:
    with served(outcomes={"ANSWERED": 1.0}) as (sim, url):
        config = tmp_path / "syncd.toml"
        db = tmp_path / "state" / "state.db"
        config.write_text(CONFIG.format(state=db, inbox=tmp_path / "inbox", url=url))
        leads = "".join(f"A{n},Ana,{uy(n)}\n" for n in range(1, 6))
        drop_csv(tmp_path / "inbox", "leads.csv", "id,first,phone\n" + leads)
        once(config)
        assert sim.dial_now() == 5
        once(config)  # the calls' records: their outcomes, the call ids counted

    assert rows(db, "SELECT count(*) FROM outcomes") == [(5,)]
    # Nothing per lead in kv: only the sink's own few values (its poll, health).
    kv = rows(db, "SELECT scope, name, value FROM kv")
    assert {scope for scope, _, _ in kv if scope.startswith("ucontact")} == {"ucontact.uc"}
    assert not [r for r in kv if r[1].startswith("A") or "9899" in r[1] + r[2]], kv
    ledger = rows(
        db, "SELECT key, number, held, sent_hash IS NOT NULL, calls, newest_call FROM sink_ledger"
    )
    assert [(k, n, h, s) for k, n, h, s, _, _ in sorted(ledger)] == [
        (f"A{n}", dialled(n), "yes", 1) for n in range(1, 6)
    ]
    assert all(len(json.loads(calls)) == 1 and newest for *_, calls, newest in ledger)
    owners = dict(rows(db, "SELECT number, key FROM sink_ledger_numbers"))
    assert {owners[dialled(n)[2:]] for n in range(1, 6)} == {f"A{n}" for n in range(1, 6)}


# -- the store's ledger, on both databases ------------------------------------------


async def add_lead(store: SqliteStore, sink: str, key: str) -> None:
    async with store._tx() as db:
        await db.execute(
            "INSERT INTO leads (sink, key, hash, lead_json, state, created_at, updated_at)"
            " VALUES (?, ?, 'h', '{}', 'delivered', 0, 0)",
            (sink, key),
        )


@pytest.mark.parametrize("kind", KINDS)
async def test_the_ledger_keeps_a_placement_its_numbers_and_its_calls(
    kind: str, tmp_path: Path
) -> None:
    async with fresh_store(kind, tmp_path) as store:
        placed = Placement("00598990001", ("00598990002",), "base", None, "maybe", "add", 1.5)
        await store.ledger_place("uc", "K1", placed, ["598990001", "990001"])
        await store.ledger_set_calls("uc", "K1", ["g1", "g2"])
        await store.ledger_set_newest_call("uc", "K1", 1700000000.0)
        await store.ledger_set_disposition("uc", "K1", "d1")
        row = await store.ledger_get("uc", "K1")
        assert row is not None and row.placement == placed
        assert (row.calls, row.newest_call, row.disposition) == (("g1", "g2"), 1.7e9, "d1")
        assert await store.ledger_owner("uc", "990001") == "K1"
        assert await store.ledger_owner("other", "990001") is None
        # The number is placed for K2 since: K1's forgetting leaves it to K2.
        await store.ledger_place("uc", "K2", Placement("00598990001"), ["990001"])
        await store.ledger_forget("uc", "K1", ["598990001", "990001"])
        row = await store.ledger_get("uc", "K1")
        assert row is not None and row.placement is None and row.calls == ("g1", "g2")
        assert await store.ledger_owner("uc", "598990001") is None
        assert await store.ledger_owner("uc", "990001") == "K2"


@pytest.mark.parametrize("kind", KINDS)
async def test_a_leads_ledger_goes_with_the_lead(kind: str, tmp_path: Path) -> None:
    async with fresh_store(kind, tmp_path) as store:
        for key, number in (("K1", "111"), ("K2", "222")):
            await add_lead(store, "uc", key)
            await store.ledger_place("uc", key, Placement(number), [number])
            await store.ledger_set_calls("uc", key, ["g"])
        async with store._tx() as db:  # whatever deletes a lead (none does yet: see notes)
            await db.execute("DELETE FROM leads WHERE sink = ? AND key = ?", ("uc", "K1"))
        assert await store.ledger_get("uc", "K1") is None
        assert await store.ledger_owner("uc", "111") is None
        assert await store.ledger_get("uc", "K2") is not None
        assert await store.ledger_owner("uc", "222") == "K2"


# -- a store upgraded from schema 14 ------------------------------------------------------


def old_kv(added_at: float, hash_: str) -> list[tuple[str, str, str]]:
    """Return the kv rows the sink wrote before migration 15: K1's upload in doubt (the
    add went out, no answer came), K2 delivered, called and dispositioned."""
    k1 = Placed(dialled(1), mode=BASE, held=MAYBE, late=ADD, at=added_at, until=added_at + 1)
    k1.hash, k1.added_at = hash_, added_at
    k2 = Placed(dialled(2), held="yes", hash="h2", added_at=added_at)
    text = {
        "K1": json.dumps(_as_dict(k1)),
        "K2": json.dumps(_as_dict(k2)),
    }
    newest = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).isoformat()
    return [
        ("ucontact.uc.lead", "K1", text["K1"]),
        ("ucontact.uc.lead", "K2", text["K2"]),
        ("ucontact.uc.phone", dialled(1)[2:], "K1"),
        ("ucontact.uc.phone", dialled(1)[5:], "K1"),  # the national form
        ("ucontact.uc.phone", dialled(2)[2:], "K2"),
        ("ucontact.uc.calls", "K2", '["g1", "g2"]'),
        ("ucontact.uc.newest", "K2", newest),
        ("ucontact.dispositions", "uc/K2", "digest2"),
        ("ucontact.uc", "cdr", '{"cursor": null}'),  # the sink's own: stays
    ]


def _as_dict(p: Placed) -> dict[str, Any]:
    return {
        "destination": p.destination, "alternatives": p.alternatives, "mode": p.mode,
        "calldate": p.calldate, "held": p.held, "late": p.late, "at": p.at, "until": p.until,
        "hash": p.hash, "added_at": p.added_at, "check_at": p.check_at,
    }  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
async def test_an_upgraded_store_keeps_its_leads_in_doubt_checked_not_sent_again(
    kind: str, tmp_path: Path
) -> None:
    again = queued("K1", uy(1), attempts=2)
    sent = time.time() - 30  # the upload whose answer never came
    with served() as (sim, url):
        async with store_at_schema(kind, tmp_path, 14, old_kv(sent, again.hash)) as store:
            left = {s for s, _, _ in await kv_rows(store)}
            row = await store.ledger_get("uc", "K2")
            # It landed and was dialled: the call records are the only witness.
            calldate = (datetime.now(UTC) - timedelta(seconds=5)).strftime("%Y-%m-%d %H:%M:%S")
            sim.add_record(dialled(1), calldate=calldate)
            async with sink_on(url, tmp_path, store=store) as sink:
                [result] = await sink.push([again])
                history = await store.lead_history("K1")
    assert left == {"ucontact.uc"}  # per-lead rows moved out of kv; the sink's own stay
    assert row is not None and row.placement is not None
    assert (row.placement.number, row.placement.held, row.placement.sent_hash) == (
        dialled(2),
        "yes",
        "h2",
    )
    assert (row.calls, row.disposition) == (("g1", "g2"), "digest2")
    assert row.newest_call == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    assert result.kind is ResultKind.DELIVERED, result
    assert sim.snapshot()["requests"].get("Dialers/uploadbase", 0) == 0  # not sent again
    assert any(e["kind"] == "ucontact.already_dialled" for e in history["events"])


async def kv_rows(store: SqliteStore) -> list[tuple[str, str, str]]:
    async with store._lock, store.db.execute("SELECT scope, name, value FROM kv") as cur:
        return [tuple(r) for r in await cur.fetchall()]  # type: ignore[misc]
