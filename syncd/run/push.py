"""The push side: claim a batch from the outbox → the sink → per-lead results.

Delivered, refused (permanent for the record, reason kept), retried with backoff,
or failed once attempts run out. A batch the dialer refuses as a whole is split
in halves until the bad lead stands alone, so the good ones still go through.

Before a push, the safety gate's calling window (``syncd.core.gate``): a lead
outside it is held (state ``held``) until it opens, not pushed and not counted as
an attempt.

Every push passes the sink's guard (``sink.guard``, see ``syncd.net.guard``): the circuit breaker
stops pushing to a dialer that keeps failing (leads wait without spending their
attempts), and a Retry-After holds back every worker of the sink, not just one.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from syncd.config import SinkConfig
from syncd.core.clock import SYSTEM_CLOCK, Clock
from syncd.core.gate import RouteWindow, Verdict, calling_decision
from syncd.core.model import Action, PushResult, QueuedLead, ResultKind
from syncd.core.numbers import Candidate, Holder, removal_waits, set_aside
from syncd.core.summary import SinkCounts
from syncd.errors import (
    PermanentError,
    RetryableError,
    SinkConfigError,
    VendorError,
    public_reason,
)
from syncd.net.breaker import BreakerState
from syncd.net.http import human_seconds
from syncd.run.dnc_lists import STALE_RECHECK_S
from syncd.run.progress import PushProgress
from syncd.sinks.base import BatchRejected, Sink
from syncd.state.base import Completion, StateStore

LEASE_S = 300.0
# A lead held behind another of its number is looked at again this often even if the
# other one's leaving was not seen (its number changed, it left at a pull).
NUMBER_RECHECK_S = 300.0


def backoff(
    attempts: int,
    cfg: SinkConfig,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Return seconds until the next try: full jitter, capped; Retry-After when asked."""
    if retry_after is not None:
        return max(retry_after, 1.0)
    ceiling = min(cfg.retry_max_s, cfg.retry_base_s * 2 ** max(attempts - 1, 0))
    return max((rng or random).uniform(0, ceiling), 0.5)


class Pusher:
    """Drives one sink's outbox until it is empty, stopped or out of time."""

    def __init__(
        self,
        sink: Sink,
        store: StateStore,
        counts: SinkCounts,
        *,
        stop: asyncio.Event | None = None,
        observer: Any = None,
        windows: Sequence[RouteWindow] = (),
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.sink = sink
        self.windows = tuple(windows)  # the calling windows of the routes feeding the sink
        self.clock = clock
        self.cfg = sink.config
        self.store = store
        self.counts = counts
        self.stop = stop or asyncio.Event()
        self.observer = observer  # metrics hooks (daemon), optional
        self.log = structlog.get_logger("syncd.push").bind(sink=sink.name)
        self.stopped_by: SinkConfigError | None = None  # the refusal that stopped the sink
        self.guard = sink.guard
        self.progress = PushProgress(clock, self.cfg.progress_every_s)
        self.dnc_stale: str | None = None  # set by the engine: a strict list is stale

    async def run_until_idle(self, deadline: float) -> None:
        """Push until nothing is due before ``deadline``, the sink stops, or stop is set."""
        workers = [
            asyncio.create_task(self._worker(deadline)) for _ in range(self.cfg.push_concurrency)
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()

    async def _worker(self, deadline: float) -> None:
        breaker = self.guard.breaker
        while not self.stop.is_set() and self.stopped_by is None:
            if not await self._gate(deadline):
                return
            held = self.sink.paused()
            if held is not None:  # the dialer answers, but nobody should be rung now
                self.counts.waiting = held  # the engine logs it once (sink.push.paused)
                return
            probing = breaker.state is BreakerState.HALF_OPEN
            batch = await self.store.claim(self.sink.name, self.cfg.batch_size, LEASE_S)
            if batch:
                batch = await self._within_window(batch)
                if batch and self.dnc_stale is not None:
                    batch = await self._while_list_stale(batch, self.dnc_stale)
                if batch:
                    batch = await self._one_per_number(batch)
                if batch:
                    await self.push_batch(batch)
                elif probing:
                    breaker.cancel()  # every lead was held: nothing probed the dialer
                continue
            if probing:
                breaker.cancel()  # nothing to probe with: let another try later
            due = await self.store.next_due(self.sink.name)
            if due is None or due >= deadline:
                return
            await self._sleep(min(due - time.time(), deadline - time.time(), 5.0))

    async def _within_window(self, batch: Sequence[QueuedLead]) -> list[QueuedLead]:
        """Return the leads whose calling window is open now; hold the rest until it opens.

        Checked right before the push, not when the lead was read: a lead queued at
        19:59 and retried at 20:01 must wait for tomorrow. Removals go at any time.
        """
        if not self.windows:
            return list(batch)
        now = datetime.fromtimestamp(self.clock.time(), UTC)
        allowed: list[QueuedLead] = []
        holds: list[tuple[str, float, str]] = []
        refused: list[PushResult] = []
        memo: dict[Any, Any] = {}
        for q in batch:
            if q.action is Action.DELETE:
                allowed.append(q)
                continue
            numbers = (q.lead.phone, *q.lead.alt_phones)  # the dialer may ring any of them
            decision = calling_decision(numbers, q.lead.zone, self.windows, now, memo)
            if decision.verdict is Verdict.ALLOW:
                allowed.append(q)
            elif decision.verdict is Verdict.HOLD and decision.until is not None:
                holds.append((q.key, decision.until.timestamp(), decision.text))
            else:
                refused.append(PushResult.rejected(q.key, decision.text))
        if holds:
            await self.store.hold(self.sink.name, holds)
            first = min(until for _, until, _ in holds)
            self.log.info(
                "gate.held",
                count=len(holds),
                first_release=datetime.fromtimestamp(first, UTC).isoformat(),
                reason=holds[0][2],
            )
        if refused:
            await self._complete([q for q in batch if q.key in {r.key for r in refused}], refused)
        if self.observer is not None and (holds or refused):
            self.observer.gate_decisions(
                self.sink.name, [r[2] for r in holds] + [r.reason for r in refused]
            )
        return allowed

    async def _while_list_stale(self, batch: Sequence[QueuedLead], why: str) -> list[QueuedLead]:
        """Return the removals only: a strict do-not-call list of this sink's routes is too
        old to rely on, so every other lead is held (``why``) until a fresh copy loads."""
        until = self.clock.time() + STALE_RECHECK_S
        holds = [(q.key, until, why) for q in batch if q.action is not Action.DELETE]
        if holds:
            await self.store.hold(self.sink.name, holds)
            self.log.warning("gate.held", count=len(holds), reason=why)
            if self.observer is not None:
                self.observer.gate_decisions(self.sink.name, [why] * len(holds))
        return [q for q in batch if q.action is Action.DELETE]

    async def _one_per_number(self, batch: Sequence[QueuedLead]) -> list[QueuedLead]:
        """Return the leads that may go; hold those another lead's number blocks.

        A new lead whose main number another live lead of this sink holds is set aside
        (``duplicates = "one_per_number"``), and a removal the dialer would apply to a
        whole number waits while another live lead holds that number (see
        ``syncd.core.numbers``). Both come back when the lead they wait for leaves.
        """
        checked = self.cfg.duplicates == "one_per_number" and self.cfg.entity == "leads"
        upserts = [q for q in batch if q.action is Action.UPSERT] if checked else []
        closing = {q.key: numbers for q in batch if (numbers := self.sink.closes_numbers(q))}
        if not upserts and not closing:
            return list(batch)
        wanted = [q.lead.phone for q in upserts] + [n for ns in closing.values() for n in ns]
        mine = {q.key for q in batch}
        stored = await self.store.number_holders(self.sink.name, wanted, alternates=bool(closing))
        holders = [h for h in stored if h.key not in mine]
        candidates = [Candidate(q.key, q.lead.phone, q.delivered_hash is not None) for q in upserts]
        waits = set_aside(candidates, holders, sink=self.sink.name)
        if closing:
            # What this batch sends counts too: its imports go out before its removals.
            going = [
                Holder(q.key, "inflight", True, q.lead.phone, q.lead.alt_phones)
                for q in batch
                if q.action is Action.UPSERT and q.key not in waits and q.key not in closing
            ]
            for key, numbers in closing.items():
                wait = removal_waits(key, numbers, [*holders, *going], sink=self.sink.name)
                if wait is not None:
                    waits[key] = wait
        if not waits:
            return list(batch)
        until = self.clock.time() + NUMBER_RECHECK_S
        await self.store.set_aside(
            self.sink.name, [(w.key, until, w.reason, w.waits_for) for w in waits.values()]
        )
        self.log.info(
            "push.number.waits",
            count=len(waits),
            reason=next(iter(waits.values())).reason.split(":")[0],
        )
        return [q for q in batch if q.key not in waits]

    async def _gate(self, deadline: float) -> bool:
        """Return True once the breaker and any Retry-After hold let a push go.

        False when that moment falls after ``deadline`` or stop is set: claimed
        nothing, spent no attempt.
        """
        breaker, limits = self.guard.breaker, self.guard.limits
        while not self.stop.is_set():
            wait = max(breaker.wait_s(), limits.limiter.held_for())
            if wait <= 0:
                if breaker.allow():
                    return True
                wait = 0.05  # another worker's probe is out
            if time.time() + wait >= deadline:
                self.counts.waiting = self._why_waiting(wait)
                return False
            await self._sleep(min(wait, 5.0))
        return False

    def _why_waiting(self, wait: float) -> str:
        """Return why no push may go before the deadline: a Retry-After hold or the breaker."""
        if self.guard.limits.limiter.held_for() >= wait:
            return f"the dialer asked to wait {human_seconds(wait)} (Retry-After); leads wait"
        reason = self.guard.breaker.last_reason or "it keeps failing"
        return f"dialer unreachable ({reason}); next try in {human_seconds(wait)}"

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stop.wait(), timeout=max(0.05, seconds))
        except TimeoutError:
            pass

    async def push_batch(self, batch: Sequence[QueuedLead]) -> None:
        started = time.monotonic()
        try:
            results = await self._push(batch)
        except SinkConfigError as exc:
            self.guard.breaker.cancel()
            await self._stop_sink(batch, exc)
            return
        except BatchRejected as exc:
            self._answered()
            if len(batch) == 1:
                await self._complete(batch, [PushResult.rejected(batch[0].key, exc.reason)])
                return
            self.log.info("sink.push.bisect", size=len(batch), reason=exc.reason)
            middle = len(batch) // 2
            await self.push_batch(batch[:middle])
            await self.push_batch(batch[middle:])
            return
        except PermanentError as exc:
            self._answered()
            results = [PushResult.rejected(q.key, exc.reason) for q in batch]
        except RetryableError as exc:
            self.log.warning("sink.push.retry", size=len(batch), reason=str(exc))
            self._unanswered(exc)
            results = [PushResult.retry(q.key, str(exc), exc.retry_after) for q in batch]
        except VendorError as exc:
            self.log.error("sink.push.failed", size=len(batch), reason=str(exc))
            self._unanswered(exc)
            results = [PushResult.retry(q.key, str(exc)) for q in batch]
        except Exception as exc:
            # A sink bug must not end the run or lose the batch: the leads go back with
            # backoff and, if it persists, become dead letters with this reason.
            reason = f"internal error in the {self.cfg.kind} sink: {type(exc).__name__}: {exc}"
            self.log.error("sink.push.crashed", size=len(batch), reason=reason, exc_info=True)
            self._unanswered(exc)
            results = [PushResult.retry(q.key, reason) for q in batch]
        else:
            if results and all(r.kind is ResultKind.RETRY for r in results):
                # A sink that turns a failed call into a retry per lead: for the breaker
                # and the hold that is the dialer failing, not answering.
                waits = [r.retry_after for r in results if r.retry_after is not None]
                if waits:
                    self.guard.limits.hold(max(waits))
                self.guard.breaker.record_failure(
                    results[0].reason, public="the dialer failed or could not be reached"
                )
                self._publish()
            else:
                self._answered()
        if self.observer is not None:
            self.observer.push_latency(self.sink.name, time.monotonic() - started)
        await self._complete(batch, results)

    async def _push(self, batch: Sequence[QueuedLead]) -> list[PushResult]:
        limits = self.guard.limits
        if limits.per_request:  # the sink's HTTP client applies the limits to each request
            return await self.sink.push(batch)
        async with limits.slot():
            return await self.sink.push(batch)

    def _answered(self) -> None:
        """The dialer answered (whatever it said): the breaker closes."""
        self.guard.breaker.record_success()
        self._publish()

    def _unanswered(self, exc: Exception) -> None:
        """The dialer failed or could not be reached: count it; honour its Retry-After."""
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            self.guard.limits.hold(retry_after)
        if getattr(exc, "code", None) == "429":
            self.guard.breaker.cancel()  # told to slow down, not failing: the hold covers it
        else:
            self.guard.breaker.record_failure(str(exc), public=public_reason(exc))
        self._publish()

    def _publish(self) -> None:
        # Status pages and /readyz read SinkHealth.details; metrics read guard.breaker.state.
        try:
            self.sink.health().details.update(self.guard.details())
        except Exception as exc:  # a sink's health() must not break pushing
            self.log.debug("sink.health.unavailable", reason=str(exc))

    async def _complete(self, batch: Sequence[QueuedLead], results: list[PushResult]) -> None:
        by_key = {q.key: q for q in batch}
        completions: list[Completion] = []
        for result in results:
            queued = by_key.get(result.key)
            if queued is None:
                continue
            completion = Completion(
                result.key,
                queued.hash,
                result.kind,
                result.reason,
                result.vendor_ref,
                reply=result.reply,
            )
            if result.kind is ResultKind.RETRY:
                if queued.attempts >= self.cfg.max_attempts:
                    completion.final = True
                    completion.reason = (
                        f"{result.reason} (gave up after {queued.attempts} attempts)"
                    )
                else:
                    completion.next_at = time.time() + backoff(
                        queued.attempts, self.cfg, result.retry_after
                    )
            completions.append(completion)
        missing = set(by_key) - {r.key for r in results}
        for key in missing:  # a sink that forgot a lead must not lose it
            completions.append(
                Completion(
                    key,
                    by_key[key].hash,
                    ResultKind.RETRY,
                    "no result from the sink",
                    next_at=time.time() + 5,
                )
            )
        await self.store.complete(self.sink.name, completions)
        self._count(completions)
        gone = [
            c.key
            for c in completions
            if c.kind is ResultKind.REJECTED
            or c.final
            or (c.kind is ResultKind.DELIVERED and by_key[c.key].action is Action.DELETE)
        ]
        if gone:  # leads set aside behind these, or removals waiting for them, go again
            await self.store.release_waiting(self.sink.name, gone)
        delivered = sum(c.kind is ResultKind.DELIVERED for c in completions)
        if self.progress.add(delivered):
            line = self.progress.report(await self.store.pending_count(self.sink.name))
            self.log.info("push.progress", **line)

    def _count(self, completions: list[Completion]) -> None:
        for c in completions:
            if c.kind is ResultKind.DELIVERED:
                self.counts.delivered += 1
            elif c.kind is ResultKind.REJECTED:
                self.counts.refused += 1
                self.log.info("sink.push.refused", key=c.key, reason=c.reason)
            elif c.final:
                self.counts.failed += 1
                self.log.error("sink.push.gave_up", key=c.key, reason=c.reason)
        if self.observer is not None:
            self.observer.push_results(self.sink.name, completions)

    async def _stop_sink(self, batch: Sequence[QueuedLead], exc: SinkConfigError) -> None:
        # The engine stops the sink (and logs `sink.stopped` once) when the pusher returns.
        self.stopped_by = exc
        self.counts.stopped = str(exc)
        await self.store.requeue(self.sink.name, [q.key for q in batch], time.time(), str(exc))
