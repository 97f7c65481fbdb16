"""What a Jodo outcome poll costs while and after a large import is pushed.

The Jodo simulator runs in a child process (as in ``bench/soak.py``: another process
than syncd's), dialling ``--calls-per-minute`` records a minute, recordings never
appearing (the soak's plan). A first set of leads is pushed and dialled, then a
``--rows`` import is pushed while the sink's outcome poller polls every ``--interval``
seconds, for ``--seconds`` after the import began. One line a poll:

    poll 12 t=55.0s took=0.67s rows=20500 requests=1 changed=25 push=done
         match=0.01s recordings=0.08s search=0.17s store=0.01s

``took``: the whole poll (outcomes, then agent statuses, as the daemon's poll job);
``rows``: the rows getProcessData served for it (what was transferred, decoded and
filtered); ``requests``: its getProcessData requests; ``changed``: outcomes stored;
then the time in its parts (search includes the simulator's answer). The last lines
give the worst and the mean, while the import is pushed and after.
``--profile N`` prints a cProfile of poll N; ``--outcomes '{"overlap_s": 600}'``
sets the sink's outcome settings.

    python bench/bench_jodo_poll.py [--rows 20000] [--calls-per-minute 300] [--seconds 150]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import pstats
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
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

from syncd.core.summary import SinkCounts  # noqa: E402
from syncd.run.push import Pusher  # noqa: E402
from syncd.simulators.jodo.api import DialPlan, JodoSimulator, create_app  # noqa: E402
from syncd.simulators.server import serve  # noqa: E402
from syncd.state.sqlite import SqliteStore  # noqa: E402
from tests.support.jodo_outcomes import enqueue, lead, make_sink  # noqa: E402


def simulator(sock: socket.socket, calls_per_minute: float) -> None:
    """Serve a dialling Jodo simulator that counts the getProcessData rows it served."""
    pace = 60.0 / calls_per_minute if calls_per_minute else 0.05
    sim = JodoSimulator(dial=DialPlan(interval_s=pace, recording_delay_s=None), agents={"a": 1})
    served = {"rows": 0, "requests": 0}
    answer = sim.get_process_data

    def counting(process: Any, body: dict[str, Any]) -> dict[str, Any]:
        reply = answer(process, body)
        served["requests"] += 1
        served["rows"] += len(reply.get("data") or [])
        return reply

    sim.get_process_data = counting  # type: ignore[method-assign]

    async def counts(request: Request) -> Response:
        return JSONResponse({**served, "all": dict(sim.requests)})

    app = create_app(sim)
    app.router.routes.append(Route("/_bench/served", counts, methods=["GET"]))
    serve(app, sock)


def served(url: str) -> dict[str, Any]:
    return get_json(f"{url}/_bench/served")


class Phases:
    """Time spent in each part of a poll, reset per poll."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self.worked = 0

    def wrap(self, name: str, call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return await call(*args, **kwargs)
            finally:
                self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - began

        return timed

    def take(self) -> dict[str, float]:
        spent, self.spent = self.spent, {}
        return spent


async def run(args: argparse.Namespace, url: str, work: Path) -> None:
    store = SqliteStore(work / "state.db")
    await store.open()
    sink = make_sink(
        url,
        store,
        batch_size=50,
        timeout_s=5.0,
        max_attempts=8,
        outcomes=json.loads(args.outcomes) if args.outcomes else {},
    )
    poller = sink.outcomes
    phases = Phases()
    poller.search = phases.wrap("search", poller.search)  # type: ignore[method-assign]
    poller.match = phases.wrap("match", poller.match)  # type: ignore[method-assign]
    store.record_outcomes = phases.wrap("store", store.record_outcomes)  # type: ignore[method-assign]
    if poller.recordings is not None:
        recordings = poller.recordings
        recordings.attach = phases.wrap("recordings", recordings.attach)  # type: ignore[method-assign]

    async def push(first: int, n: int) -> None:
        await enqueue(store, [lead(i) for i in range(first, first + n)])
        await Pusher(sink, store, SinkCounts()).run_until_idle(time.time() + 3600)

    # Before: leads already at the dialer, dialled, and polls caught up with them.
    await push(1, args.before)
    for _ in range(3):
        await sink.poll_outcomes()
        await asyncio.sleep(args.interval)
    phases.take()

    began = time.monotonic()
    importing = asyncio.create_task(push(args.before + 1, args.rows))
    pushed_at: float | None = None
    lines: list[dict[str, Any]] = []
    last = served(url)
    n = 0
    while time.monotonic() - began < args.seconds:
        n += 1
        at = time.monotonic()
        profile = cProfile.Profile() if n == args.profile else None
        if profile is not None:
            profile.enable()
        changed = await sink.poll_outcomes()
        took = time.monotonic() - at
        if profile is not None:
            profile.disable()
            pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
        now = served(url)
        spent = phases.take()
        if pushed_at is None and importing.done():
            pushed_at = time.monotonic() - began
        line = {
            "poll": n,
            "t": at - began,
            "took": took,
            "rows": now["rows"] - last["rows"],
            "requests": now["requests"] - last["requests"],
            "changed": changed,
            "pushing": pushed_at is None,
            **spent,
        }
        last = now
        lines.append(line)
        print(
            f"poll {n} t={line['t']:.1f}s took={took:.2f}s rows={line['rows']} "
            f"requests={line['requests']} changed={changed} "
            f"push={'on' if line['pushing'] else 'done'} "
            + " ".join(f"{k}={v:.2f}s" for k, v in sorted(spent.items())),
            flush=True,
        )
        await asyncio.sleep(max(0.0, args.interval - (time.monotonic() - at)))
    await importing
    await sink.close()
    await store.close()
    print(f"import of {args.rows} pushed in {pushed_at or 0:.0f} s", flush=True)
    for label, part in (
        ("while pushing", [x for x in lines if x["pushing"]]),
        ("after", [x for x in lines if not x["pushing"]]),
    ):
        if not part:
            continue
        print(
            f"{label}: {len(part)} polls, took max {max(x['took'] for x in part):.2f}s "
            f"mean {sum(x['took'] for x in part) / len(part):.2f}s; rows max "
            f"{max(x['rows'] for x in part)} mean {sum(x['rows'] for x in part) / len(part):.0f}; "
            f"requests max {max(x['requests'] for x in part)}",
            flush=True,
        )
    print("bench.json " + json.dumps({"rows": args.rows, "polls": lines}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the large import")
    parser.add_argument("--before", type=int, default=500, help="leads pushed before it")
    parser.add_argument("--calls-per-minute", type=float, default=300.0)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between polls")
    parser.add_argument("--seconds", type=float, default=150.0, help="polling after the import")
    parser.add_argument("--profile", type=int, default=0, help="profile this poll (cProfile)")
    parser.add_argument("--outcomes", default="", help="the sink's outcomes settings, JSON")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with (
        forked_server(simulator, args.calls_per_minute, ready_path="/_bench/served") as url,
        tempfile.TemporaryDirectory(prefix="syncd-jodo-poll-") as tmp,
    ):
        asyncio.run(run(args, url, Path(tmp)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
