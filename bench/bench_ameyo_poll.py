"""What an Ameyo outcome poll costs as the store grows (issue 30).

The Ameyo simulator runs in a child process (as in ``bench/soak.py``), dialling every
new customer at once (``--dials-per-s`` a second), half of them answering and the
others redialled after ``--redial-s`` up to the lead's maxAttempt. Every
``--interval`` seconds ``--wave`` more leads are pushed, then the sink polls. One line
a poll:

    poll 40 delivered=8000 took=0.09s requests=2 asked=212 changed=180 waiting=0

``delivered``: the leads the store holds delivered; ``took``: the whole poll (the walk
of the store, getContacts, the outcomes stored); ``requests``/``asked``: its
getContacts requests and the customer ids they named; ``changed``: outcomes stored;
``waiting``: leads due a re-ask but left to later polls (``asking.REASK_CHUNKS``).
``--all`` polls as syncd did before: every delivered lead at every poll (the
sink's asking state is dropped before each poll). The last lines compare the first
and last quarter of the polls.

    python bench/bench_ameyo_poll.py [--polls 60] [--wave 200] [--interval 2] [--all]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402
from forked_server import forked_server, get_json  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

from syncd.core.mapping import lead_hash, lead_to_json  # noqa: E402
from syncd.core.model import Action, Lead, LeadWrite  # noqa: E402
from syncd.core.summary import SinkCounts  # noqa: E402
from syncd.run.push import Pusher  # noqa: E402
from syncd.simulators.ameyo.api import AmeyoSimulator, create_app  # noqa: E402
from syncd.simulators.server import serve  # noqa: E402
from syncd.sinks.ameyo.asking import Watchlist  # noqa: E402
from syncd.sinks.ameyo.config import AmeyoSinkConfig  # noqa: E402
from syncd.sinks.ameyo.sink import AmeyoSink  # noqa: E402
from syncd.sinks.base import SinkContext  # noqa: E402
from syncd.state.base import ChunkWrite  # noqa: E402
from syncd.state.sqlite import SqliteStore  # noqa: E402


def simulator(sock: socket.socket, dials_per_s: int, redial_s: float) -> None:
    """Serve a dialling Ameyo simulator that says what getContacts was asked."""
    sim = AmeyoSimulator(dials_per_tick=dials_per_s, redial_after_s=redial_s, seed=7)

    async def asked(request: Request) -> Response:
        with sim.lock:
            return JSONResponse(
                {"requests": len(sim.contacts_asked), "asked": sum(sim.contacts_asked)}
            )

    app = create_app(sim)
    app.router.routes.append(Route("/_bench/asked", asked, methods=["GET"]))
    serve(app, sock)


def asked(url: str) -> dict[str, Any]:
    return get_json(f"{url}/_bench/asked")


def lead(n: int) -> Lead:
    return Lead(key=f"B{n:07d}", phone=f"+91982{n:07d}")


async def enqueue(store: SqliteStore, first: int, n: int) -> None:
    write = ChunkWrite("bench", "crm", "leads.csv")
    write.leads["ameyo"] = [
        LeadWrite(item.key, lead_hash(text), None, text, Action.UPSERT, "new", None)
        for item in (lead(i) for i in range(first, first + n))
        for text in [lead_to_json(item)]
    ]
    await store.apply_chunk(write)


async def run(args: argparse.Namespace, url: str, work: Path) -> None:
    store = SqliteStore(work / "state.db")
    await store.open()
    cfg = AmeyoSinkConfig(
        name="ameyo",
        url=url,
        auth={"mode": "session", "user_id": "syncd", "password": "secret"},
        campaign_id=1,
        lead_id=1,
        batch_size=200,
        poll={"interval_s": args.interval},
        poll_chunk=args.chunk,
    )
    sink = AmeyoSink(cfg, SinkContext(store=store, region="IN"))
    await sink.open()
    lines: list[dict[str, Any]] = []
    last = asked(url)
    delivered = 0
    for n in range(1, args.polls + 1):
        at = time.monotonic()
        await enqueue(store, delivered, args.wave)
        counts = SinkCounts()
        await Pusher(sink, store, counts).run_until_idle(time.time() + 600)
        delivered += counts.delivered
        if args.all:  # as before issue 30: every delivered lead asked at every poll
            sink.watch = Watchlist(cfg.poll.interval_s)
        began = time.monotonic()
        changed = await sink.poll_outcomes()
        took = time.monotonic() - began
        now = asked(url)
        clock = time.time()
        left = sum(1 for w in sink.watch.leads.values() if not w.final and w.due <= clock)
        line = {
            "poll": n,
            "delivered": delivered,
            "took": took,
            "requests": now["requests"] - last["requests"],
            "asked": now["asked"] - last["asked"],
            "changed": changed,
            "waiting": left,
        }
        last = now
        lines.append(line)
        print(
            f"poll {n} delivered={delivered} took={took:.2f}s requests={line['requests']} "
            f"asked={line['asked']} changed={changed} waiting={line['waiting']}",
            flush=True,
        )
        await asyncio.sleep(max(0.0, args.interval - (time.monotonic() - at)))
    await sink.close()
    await store.close()
    quarter = max(1, len(lines) // 4)
    for label, part in (("first quarter", lines[:quarter]), ("last quarter", lines[-quarter:])):
        took = [x["took"] for x in part]
        said = [x["asked"] for x in part]
        print(
            f"{label}: delivered {part[0]['delivered']}-{part[-1]['delivered']}, poll took max "
            f"{max(took):.2f}s mean {sum(took) / len(part):.2f}s; asked max {max(said)} mean "
            f"{sum(said) / len(part):.0f}; requests max {max(x['requests'] for x in part)}",
            flush=True,
        )
    print("bench.json " + json.dumps({"all": args.all, "polls": lines}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=60)
    parser.add_argument("--wave", type=int, default=200, help="leads pushed before each poll")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between polls")
    parser.add_argument("--chunk", type=int, default=200, help="poll_chunk")
    parser.add_argument("--dials-per-s", type=int, default=500)
    parser.add_argument("--redial-s", type=float, default=60.0)
    parser.add_argument("--all", action="store_true", help="ask every lead at every poll")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with (
        forked_server(
            simulator, args.dials_per_s, args.redial_s, ready_path="/_bench/asked"
        ) as url,
        tempfile.TemporaryDirectory(prefix="syncd-ameyo-poll-") as tmp,
    ):
        asyncio.run(run(args, url, Path(tmp)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
