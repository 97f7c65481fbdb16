"""Two `syncd run` replicas on one PostgreSQL store; one freezes (SIGSTOP: a VM pause, a
long stall) holding a claimed batch it has not sent yet, past its lease. The other takes
the batch over and delivers it; the frozen one, woken, finds its claim lost and sends
nothing of it: every lead reaches the dialer once."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

from syncd.simulators.jodo.api import JodoSimulator
from tests.conftest import drop_csv
from tests.support.jodo_outcomes import serve
from tests.support.stores import drop_schema, new_schema
from tests.test_replicas_e2e import Store, pid_of, replica_config, wait_until

LEADS = 120  # six batches of 20: more than the four both replicas' pushers claim at once
# Requests a second the dialer allows, both replicas together: a claimed batch waits its
# turn (each replica's second pusher about 1.7 s) before it is sent, the moment a freeze
# finds it claimed, not sent. Lower, the run only waits longer for the same proof.
RATE = 1.2
# What the woken replica logs of the batch it held: its claim lost (fenced), or, had it
# sent the batch, the results it could no longer write.
WOKEN = ("push.claim.lost", "push.result.stale")


def test_a_replica_frozen_past_its_lease_sends_nothing_another_took_over(
    tmp_path: Path, start_daemon: Any
) -> None:
    schema = new_schema()
    sim = JodoSimulator()
    store = Store(schema)
    try:
        with serve(sim) as jodo:
            config = replica_config(tmp_path, jodo.url, schema)
            text = config.read_text().replace(
                "batch_size = 100\n", f"batch_size = 20\nrate_limit_per_s = {RATE}\n", 1
            )
            config.write_text(text)
            daemons = [start_daemon(config) for _ in range(2)]
            for d in daemons:  # each has seen the other and taken half the rate
                d.wait_for("sink.limits.shared", timeout=60, replicas=2)
            by_pid = {d.proc.pid: d for d in daemons}
            rows = "".join(f"F{i:04d},98{i:08d},F,L,,\n" for i in range(LEADS))
            drop_csv(tmp_path / "inbox", "leads.csv", "id,phone,first,last,email,callback\n" + rows)

            # A replica holds a claimed batch the dialer has not had: freeze it there.
            holder, unsent = wait_until(
                "a replica holding a claimed batch not sent yet",
                lambda: claimed_not_sent(store, sim),
                bound_s=120,
                every_s=0.01,
            )
            frozen = by_pid[pid_of(holder)]
            frozen.proc.send_signal(signal.SIGSTOP)
            unsent = [k for k in unsent if k not in sim.received()]  # sent before the stop
            assert unsent, "the freeze came after the batch left; nothing to test"

            # Its lease runs out; the other replica takes the batch over and sends it.
            wait_until(
                "the other replica to deliver the frozen one's batch",
                lambda: all(k in sim.received() for k in unsent),
                bound_s=120,
                every_s=0.1,
            )
            frozen.proc.send_signal(signal.SIGCONT)
            woke = wait_until(
                "the woken replica to come to its claimed batch",
                lambda: next((e for e in list(frozen.events) if e["event"] in WOKEN), None),
                bound_s=60,
                every_s=0.1,
            )
            wait_until(
                "every lead delivered",
                lambda: store.get("SELECT count(*) FROM leads WHERE state = 'delivered'") == LEADS,
                bound_s=300,
                every_s=0.2,
            )
            for d in daemons:
                assert d.stop() == 0
    finally:
        asyncio.run(drop_schema(schema))

    received = sim.received()
    assert len(received) == LEADS
    twice = sorted(k for k, n in received.items() if n > 1)
    assert twice == [], f"sent twice: {twice[:10]} ({len(twice)})"
    assert woke["event"] == "push.claim.lost", woke  # it checked its lease, and sent nothing
    assert sorted(r["leadnumber"] for r in sim.records()) == sorted(received)


def claimed_not_sent(store: Store, sim: JodoSimulator) -> tuple[str, list[str]] | None:
    """Return a replica and the keys it holds in flight that the dialer has not received."""
    rows = store.get_rows(
        "SELECT lease_holder, key FROM leads WHERE state = 'inflight' ORDER BY lease_holder"
    )
    received = sim.received()
    by_holder: dict[str, list[str]] = {}
    for holder, key in rows or []:
        if key not in received:
            by_holder.setdefault(holder, []).append(key)
    if not by_holder:
        return None
    holder = max(by_holder, key=lambda h: len(by_holder[h]))
    return holder, by_holder[holder]
