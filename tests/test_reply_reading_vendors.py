"""Ameyo and uContact replies with a BOM or a relabelled type; names with accents intact.

A .NET front end writes a byte-order mark before its JSON; some label JSON
text/plain. Every form body says charset=UTF-8, so a server that would otherwise
decode it as ISO-8859-1 keeps "José" as it is.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from syncd.core.model import Action, Lead, QueuedLead, ResultKind
from syncd.errors import RetryableError
from syncd.simulators.ameyo.api import AmeyoSimulator
from syncd.simulators.ameyo.api import create_app as ameyo_app
from syncd.simulators.server import running
from syncd.sinks.ameyo.config import AmeyoSinkConfig
from syncd.sinks.ameyo.sink import AmeyoSink
from syncd.sinks.base import SinkContext
from syncd.sinks.jodo.config import JodoSinkConfig
from syncd.sinks.jodo.sink import JodoSink
from syncd.state.sqlite import SqliteStore
from tests.conftest import Simulated
from tests.support.reply_rewriter import Exchange, bom, content_type, jodo_method, rewriting
from tests.support.ucontact import queued, served, sink_on, uy

FORM = "application/x-www-form-urlencoded; charset=UTF-8"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "state.db")
    await s.open()
    yield s
    await s.close()


def ameyo_sink(url: str, store: SqliteStore) -> AmeyoSink:
    config = AmeyoSinkConfig(
        name="ameyo",
        url=url,
        auth={"mode": "session", "user_id": "syncd", "password": "secret"},  # type: ignore[arg-type]
        campaign_id=1,
        lead_id=1,
        retry_base_s=0.1,
        retry_max_s=0.5,
        timezone="Asia/Kolkata",
    )
    return AmeyoSink(config, SinkContext(store=store, region="IN"))


def upsert(sink: str, key: str, phone: str, **lead: Any) -> QueuedLead:
    return QueuedLead(sink, key, f"h-{key}", Action.UPSERT, Lead(key=key, phone=phone, **lead), 1)


async def test_ameyo_behind_a_front_end_that_writes_a_bom_logs_in_and_takes_the_leads(
    store: SqliteStore,
) -> None:
    sim = AmeyoSimulator(dialing=False, timezone="Asia/Kolkata")
    with running(ameyo_app(sim)) as upstream, rewriting(upstream) as rewriter:
        rewriter.after(bom()).after(content_type("text/plain"))
        sink = ameyo_sink(rewriter.url, store)
        try:
            await sink.open()
            results = await sink.push(
                [upsert("ameyo", "L1", "+919820012345", first_name="José", last_name="Müller")]
            )
        finally:
            await sink.close()
    assert [r.kind for r in results] == [ResultKind.DELIVERED]
    [customer] = sim.customer_list()
    assert customer.data["name"] == "José Müller"
    # login, upload and logout: each once; nothing was sent again for the BOM.
    commands = [e.path.split("command=")[-1] for e in rewriter.seen]
    assert commands.count("login") == 1
    assert len([c for c in commands if "upload" in c.lower()]) == 1
    assert all(e.headers["content-type"] == FORM for e in rewriter.seen if e.body)


async def test_ucontact_replies_with_a_bom_are_read_and_accents_arrive_intact(
    tmp_path: Path,
) -> None:
    with served() as (sim, upstream), rewriting(upstream) as rewriter:
        rewriter.after(bom())
        async with sink_on(rewriter.url, tmp_path, backup_records_url=f"{upstream}/backup") as sink:
            results = await sink.push([queued("K1", uy(1), first_name="Ñandú")])
        assert [r.kind for r in results] == [ResultKind.DELIVERED]
        [upload] = sim.uploads_made()
        assert "first_name=Ñandú" in upload["text"]
        uploads = [e for e in rewriter.seen if "uploadbase" in e.path]
        assert len(uploads) == 1
        assert all(e.headers["content-type"] == FORM for e in rewriter.seen if e.body)


async def test_jodo_form_bodies_name_their_charset_and_accents_arrive_intact(
    jodo: Simulated, store: SqliteStore
) -> None:
    with rewriting(jodo.url) as rewriter:
        config = JodoSinkConfig.model_validate(
            {
                "name": "jodo",
                "url": f"{rewriter.url}/CustomerWebServices/handleCustomerWS",
                "apikey": "test_org",
                "servicekey": "VoiceProcess",
                "media": 12,
                "updateparam": "crmuniquefield",
                "timezone": "Asia/Kolkata",
            }
        )
        sink = JodoSink(config, SinkContext(store=store, region="IN"))
        try:
            results = await sink.push(
                [upsert("jodo", "L1", "+919820012345", first_name="Zoë", last_name="Ñúñez")]
            )
        finally:
            await sink.close()
    assert [r.kind for r in results] == [ResultKind.DELIVERED]
    [record] = jodo.sim.records()
    assert record["name"] == "Zoë Ñúñez"
    assert all(e.headers["content-type"] == FORM for e in rewriter.seen)
    [imported] = [e for e in rewriter.seen if jodo_method(e) == "ImportProcessData"]
    assert json.loads(imported.reply)["statuscode"] == "001"


async def test_an_ameyo_upload_whose_reply_cannot_be_read_is_sent_once_more_then_in_doubt(
    store: SqliteStore,
) -> None:
    def cut_uploads(exchange: Exchange) -> None:
        if "upload" in exchange.path.lower():
            exchange.reply = exchange.reply[: len(exchange.reply) // 2]

    sim = AmeyoSimulator(dialing=False, timezone="Asia/Kolkata")
    with running(ameyo_app(sim)) as upstream, rewriting(upstream) as rewriter:
        rewriter.after(cut_uploads)
        sink = ameyo_sink(rewriter.url, store)
        try:
            await sink.open()
            with pytest.raises(RetryableError, match="in doubt"):
                await sink.push([upsert("ameyo", "L1", "+919820012345", first_name="Asha")])
        finally:
            await sink.close()
    assert len([e for e in rewriter.seen if "upload" in e.path.lower()]) == 2
    assert len(sim.customer_list()) == 1  # stored once, upserted by phone on the resend
