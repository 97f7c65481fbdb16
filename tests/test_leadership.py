"""Leadership on its own: a job is taken, kept and lost, and each change is said once.

The store here is a fake that answers ``lead`` as a shared store would when the
lease is ours or another replica's; the limits are real ``RequestLimits``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, MutableMapping
from typing import Any

import pytest
from structlog.testing import capture_logs

from syncd.net.ratelimit import RequestLimits
from syncd.run.leadership import Leadership

TTL_S = 15.0


class FakeStore:
    """A shared store's leases as another replica would leave them: ``ours`` says which
    jobs this replica may take now; ``live`` is how many replicas beat lately."""

    def __init__(self, live: int = 1) -> None:
        self.ours: set[str] = set()
        self.live = live
        self.asked: list[str] = []  # each `lead` call, in order
        self.heartbeats = 0
        self.resigned = 0
        self.replicas_asked: list[float] = []

    async def lead(self, job: str, ttl_s: float) -> bool:
        assert ttl_s == TTL_S
        self.asked.append(job)
        return job in self.ours

    async def resign(self) -> None:
        self.resigned += 1
        self.ours.clear()

    async def heartbeat(self) -> None:
        self.heartbeats += 1

    async def replicas(self, within_s: float = 60.0) -> list[dict[str, Any]]:
        self.replicas_asked.append(within_s)
        return [{"replica": f"r{i}"} for i in range(self.live)]


class Sinks:
    def __init__(self, **limits: RequestLimits) -> None:
        self._limits = limits

    def limits(self) -> Iterable[tuple[str, RequestLimits]]:
        return self._limits.items()


def said(logs: list[MutableMapping[str, Any]]) -> list[str]:
    return [f"{e['event']}:{e.get('job', e.get('sink'))}" for e in logs]


async def test_a_job_is_taken_kept_lost_and_taken_again_each_change_said_once() -> None:
    store = FakeStore()
    leadership = Leadership(store, Sinks(), ttl_s=TTL_S, shared=True)
    answers = []
    with capture_logs() as logs:
        for ours in (True, True, True, False, False, False, True, True):
            store.ours = {"pull:crm"} if ours else set()
            answers.append(await leadership.leads("pull:crm"))
    assert answers == [True, True, True, False, False, False, True, True]
    assert said(logs) == [
        "leader.took:pull:crm",
        "leader.lost:pull:crm",
        "leader.following:pull:crm",
        "leader.took:pull:crm",
    ]


async def test_a_job_another_replica_leads_is_followed_and_said_once() -> None:
    store = FakeStore()
    leadership = Leadership(store, Sinks(), ttl_s=TTL_S, shared=True)
    with capture_logs() as logs:
        assert [await leadership.leads("poll:jodo") for _ in range(3)] == [False] * 3
    assert said(logs) == ["leader.following:poll:jodo"]


async def test_on_a_store_of_one_host_every_job_is_led_without_a_word() -> None:
    store = FakeStore()
    store.ours = {"retention"}  # a store of one host answers True for every job
    leadership = Leadership(store, Sinks(), ttl_s=TTL_S, shared=False)
    with capture_logs() as logs:
        assert await leadership.leads("retention")
        await leadership.renew()
        async with leadership.kept():
            pass
    assert said(logs) == []
    assert store.replicas_asked == []  # nothing to share the limits with
    assert store.resigned == 0  # kept() hands nothing over: nobody else could take it


async def test_renew_beats_renews_only_the_led_jobs_and_keeps_them() -> None:
    store = FakeStore()
    leadership = Leadership(store, Sinks(), ttl_s=TTL_S, shared=True)
    store.ours = {"writeback:crm", "pull:crm"}
    for job in ("pull:crm", "writeback:crm", "poll:jodo"):
        await leadership.leads(job)
    store.asked.clear()
    with capture_logs() as logs:
        await leadership.renew()
    assert store.heartbeats == 1
    assert store.asked == ["pull:crm", "writeback:crm"]  # not the job another replica runs
    assert said(logs) == []  # kept: nothing changed


async def test_renew_says_so_when_another_replica_took_a_job_meanwhile() -> None:
    store = FakeStore()
    leadership = Leadership(store, Sinks(), ttl_s=TTL_S, shared=True)
    store.ours = {"pull:crm"}
    await leadership.leads("pull:crm")
    store.ours = set()  # our lease ran out and another replica took it
    with capture_logs() as logs:
        await leadership.renew()
        await leadership.renew()
    assert said(logs) == ["leader.lost:pull:crm", "leader.following:pull:crm"]
    assert store.asked == ["pull:crm", "pull:crm"]  # asked at the first renewal, then not


async def test_resign_hands_every_job_over_and_renew_no_longer_claims_them() -> None:
    store = FakeStore()
    leadership = Leadership(store, Sinks(), ttl_s=TTL_S, shared=True)
    store.ours = {"pull:crm"}
    await leadership.leads("pull:crm")
    await leadership.resign()
    store.ours = {"pull:crm"}  # free again: only a stage asking takes it back
    store.asked.clear()
    await leadership.renew()
    assert store.resigned == 1
    assert store.asked == []


async def test_the_dialers_limits_are_divided_among_the_live_replicas_said_once() -> None:
    jodo = RequestLimits("jodo", rate_per_s=10.0, max_in_flight=4)
    free = RequestLimits("ameyo")  # no limits configured: nothing to share
    store = FakeStore(live=2)
    leadership = Leadership(store, Sinks(jodo=jodo, ameyo=free), ttl_s=TTL_S, shared=True)
    with capture_logs() as logs:
        await leadership.share_limits()
        await leadership.share_limits()  # the same replicas: nothing new to say
    assert (jodo.limiter.rate_per_s, jodo.max_in_flight) == (5.0, 2)
    assert (free.limiter.rate_per_s, free.max_in_flight) == (None, None)
    assert said(logs) == ["sink.limits.shared:jodo"]
    assert logs[0]["replicas"] == 2
    assert store.replicas_asked == [TTL_S * 2] * 2  # replicas alive within two leases

    store.live = 1  # the other replica stopped: this one takes the whole limit back
    await leadership.share_limits()
    assert (jodo.limiter.rate_per_s, jodo.max_in_flight) == (10.0, 4)


@pytest.mark.parametrize("fails", [False, True], ids=["ends", "raises"])
async def test_kept_beats_at_the_start_and_hands_every_job_over_at_the_end(fails: bool) -> None:
    store = FakeStore()
    leadership = Leadership(store, Sinks(), ttl_s=TTL_S, shared=True)
    store.ours = {"pull:crm"}
    with pytest.raises(RuntimeError) if fails else contextlib.nullcontext():
        async with leadership.kept():
            assert store.heartbeats == 1
            assert await leadership.leads("pull:crm")
            if fails:
                raise RuntimeError("the pass failed")
    assert store.resigned == 1
    assert store.ours == set()
