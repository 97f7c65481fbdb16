"""The push side: claim a batch from the outbox → the sink → per-lead results.

Delivered, refused (permanent for the record, reason kept), retried with backoff,
or failed once attempts run out. A batch the dialer refuses as a whole is split
in halves until the bad lead stands alone, so the good ones still go through.

Two answers are about the sink, not the records. A hold (``SinkHeld``: a campaign
not running, a locked account) puts the batch back without spending attempts and
holds the sink's pushes with a growing backoff, its reason shown in the log (once
when it begins, once when it ends) and in status. A 413 (``BatchTooLarge``) halves
the batch, whatever the vendor; the size that went through is remembered and later
claims take no more than that.

Before a push, the safety gate checks again what may have changed since the row was
read (``syncd.core.gate``): a lead holding a number now on one of its routes'
do-not-call lists is refused (``dnc_list:<name>``); a lead whose consent ran out, or
would run out before its window opens, is refused (``consent_expired``); a lead
outside its calling window is held (state ``held``) until it opens, not pushed and
not counted as an attempt.

Every push passes the sink's guard (``sink.guard``, see ``syncd.net.guard``): the circuit breaker
stops pushing to a dialer that keeps failing (leads wait without spending their
attempts), and a Retry-After holds back every worker of the sink, not just one.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from syncd.config import SinkConfig
from syncd.core.audit import decision_json, list_of, numbers_of
from syncd.core.clock import SYSTEM_CLOCK, Clock
from syncd.core.durations import human_seconds
from syncd.core.feed import QUEUED_HORIZON_S, Feed, feed, pace_span_s
from syncd.core.gate import (
    ALLOWED,
    GateDecision,
    RouteWindow,
    Verdict,
    callback_close,
    calling_decision,
    consent_at_push,
    lead_zones,
)
from syncd.core.health import HealthTracker
from syncd.core.model import Action, PushResult, QueuedLead, ResultKind
from syncd.core.numbers import Candidate, Holder, removal_waits, set_aside
from syncd.core.reasons import DIALER_FAILED, DIALER_REFUSED, log_reason, shown_key
from syncd.core.summary import SinkCounts
from syncd.errors import (
    BatchTooLarge,
    ClaimLost,
    PermanentError,
    RetryableError,
    SinkConfigError,
    SinkHeld,
    StoreError,
    VendorError,
    public_reason,
)
from syncd.net.breaker import BreakerState
from syncd.net.fence import fenced
from syncd.net.http import HeldBack
from syncd.registry import reason_coder
from syncd.run import numbers_left
from syncd.run.claims import ClaimFence, stamp
from syncd.run.dnc_lists import STALE_RECHECK_S, version_labels
from syncd.run.progress import PushProgress
from syncd.sinks.base import BatchRejected, Sink
from syncd.state.base import WITHDRAWAL_REFUSED, Completion, StateStore

LEASE_S = 300.0
NUDGE_CHECK_S = 1.0  # an idle worker waiting on a busy one looks at the stop this often
# A lead held behind another of its number is looked at again this often even if the
# other one's leaving was not seen (its number changed, it left at a pull).
NUMBER_RECHECK_S = 300.0
NEVER_DELIVERED = "the dialer never had this lead: nothing to withdraw, no request sent"
# A push a stop or the run's deadline cancelled while its request was out: the dialer
# may hold what was sent (Pusher._cut_off).
CUT_OFF = "cut off by a stop or the run's deadline before the dialer answered; it may hold the lead"
# A withdrawal past max_attempts: tried again (WITHDRAWAL_RETRY_S), never a dead letter
# (the number stays dialable until the dialer lets it go); `status` and /readyz say so.
WITHDRAWAL_FAILING = "withdrawal failed"
# …tried again hourly from then on: often enough for a dialer that comes round. A pass
# does not wait for that try (PASS_WAITS_AT_MOST_S): a cron run would hold the store.
WITHDRAWAL_RETRY_S = 3600.0
# The longest a pass waits for a lead's next try (a backoff, a dialer's Retry-After) when
# the sink's retry_max_s is shorter: past it, the run ends and the next one tries.
PASS_WAITS_AT_MOST_S = 900.0
HOLD_MAX_S = 60.0  # a held sink (a paused campaign) is asked again at least this often
# A batch's results the store cannot take (the database restarts) are kept and offered
# again this long: the dialer holds those leads now, and sending them again would be the
# only other way to find out. Past it they return to the outbox at the next push.
RESULTS_KEPT_S = 120.0


def never_delivered(q: QueuedLead) -> bool:
    """Return True for a removal of a lead the dialer cannot hold: none delivered, and no
    version sent in doubt (such a removal carries that version's number)."""
    return q.action is Action.DELETE and q.delivered_hash is None and not q.lead.phone


def claim_of(batch: Sequence[QueuedLead]) -> str | None:
    """Return the token of the claim ``batch`` was taken under (one claim per batch)."""
    return batch[0].claim if batch else None


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
        health: HealthTracker | None = None,
        policy: str = "",
        fallback_zone: str = "UTC",
        working: Callable[[], bool] | None = None,
    ) -> None:
        self.sink = sink
        self.working = working or (lambda: True)  # False once the sink is stopped elsewhere
        self.windows = tuple(windows)  # the calling windows of the routes feeding the sink
        self.policy = policy  # the version of the gate settings deciding here (the audit's)
        self.fallback_zone = fallback_zone  # the zone of a lead whose numbers place nowhere
        self._zones: dict[str, tuple[str, ...]] = {}  # by key: the zones the window was checked in
        self._refusals: dict[str, str] = {}  # by key: the gate's code of a refusal at push time
        self._list_versions: dict[str, str] = {}  # do-not-call list -> its version's label
        self.clock = clock
        self.cfg = sink.config
        self._coder = reason_coder(self.cfg.kind)  # the dialer's refusals as codes, for logs
        self.store = store
        self.counts = counts
        self.stop = stop or asyncio.Event()
        self.observer = observer  # metrics hooks (daemon), optional
        self.log = structlog.get_logger("syncd.push").bind(sink=sink.name)
        self.stopped_by: SinkConfigError | None = None  # the refusal that stopped the sink
        self.failed: Exception | None = None  # a worker's (the store's): the others claim no more
        self.guard = sink.guard
        self.progress = PushProgress(clock, self.cfg.progress_every_s)
        # Logs a hold once when it begins and once when it ends (the engine's tracker).
        self.health = health or HealthTracker(structlog.get_logger("syncd.push"), clock)
        self.deferred: str | None = None  # why the last batch's leads wait (syncd's own delay)
        self.dnc_stale: str | None = None  # set by the engine: a strict list is stale
        self.dnc_lists: list[str] = []  # set by the engine: its routes' do-not-call lists
        self.consent = False  # set by the engine: a route of this sink ages consent
        # Feed, don't flood (core.feed): new leads this pass may still send (None: no cap),
        # and whether updates or removals are due that go whatever the cap
        self.feed_left: int | None = None
        self.feed_others = False
        self._feed: Feed | None = None  # the feed as measured at the start of this pass
        self._feed_sent = 0  # new leads let go since
        self.fed_up: str | None = None  # set when new leads were due and had to wait
        self.gave_up = False  # this pass gave up on an unreachable dialer (see _give_up)
        # Fencing (run.claims): the lease a claim gets, and when each running claim was
        # taken or last confirmed (monotonic, wall)
        self.lease_s = min(LEASE_S, store.lease_s or LEASE_S)
        self._confirmed: dict[str | None, tuple[float, float]] = {}
        # Workers with a batch out now, and a count of what could give an idle worker
        # work (a new lead committed: ``nudge``; a batch ended): a worker that finds the
        # outbox empty while another waits on a slow dialer stays for new leads.
        self._busy = 0
        self._nudges = 0
        self._nudged = asyncio.Event()

    async def run_until_idle(self, deadline: float) -> None:
        """Push until nothing is due before ``deadline``, the sink stops, or stop is set."""
        await self._measure_feed()
        workers = [
            asyncio.create_task(self._worker(deadline)) for _ in range(self.cfg.push_concurrency)
        ]
        try:
            # One worker's failure (the store went away) does not cut the others off:
            # they finish the batch in hand (a request to the dialer cut off mid-way
            # leaves its leads in doubt) and claim no more; then the failure is the run's.
            ended = await asyncio.gather(*workers, return_exceptions=True)
        finally:
            for w in workers:
                w.cancel()
        for result in ended:
            if isinstance(result, BaseException):
                raise result

    async def _worker(self, deadline: float) -> None:
        try:
            await self._work(deadline)
        except Exception as exc:
            self.failed = self.failed or exc
            raise

    async def _work(self, deadline: float) -> None:
        breaker = self.guard.breaker
        while (
            not self.stop.is_set()
            and self.stopped_by is None
            and self.failed is None
            and self.working()
        ):
            if not await self._gate(deadline):
                return
            held = self.sink.paused()
            if held is not None:  # the dialer answers, but nobody should be rung now
                self.counts.waiting = held  # the engine logs it once (sink.push.paused)
                return
            probing = breaker.state is BreakerState.HALF_OPEN
            size = self.guard.sizes.limit(self.cfg.batch_size)
            if self.feed_left is not None:
                if self.feed_left <= 0 and not self.feed_others:
                    await self._fed_up()
                    if probing:
                        breaker.cancel()
                    return
                size = min(size, self.feed_left) if self.feed_left > 0 else size
            seen = self._nudges
            batch = await self.store.claim(self.sink.name, size, LEASE_S)
            if batch:
                claim = batch[0].claim
                self._confirmed[claim] = stamp(self.clock)
                self._busy += 1
                try:
                    pushed = await self._push_claimed(batch)
                finally:
                    # Its results are written, or given up: its leases are renewed no
                    # more, and what was not written lapses for another push to take.
                    self.store.settle(claim)
                    self._confirmed.pop(claim, None)
                    self._busy -= 1
                    self.nudge()
                if not pushed and probing:
                    breaker.cancel()  # every lead was held: nothing probed the dialer
                continue
            if probing:
                breaker.cancel()  # nothing to probe with: let another try later
            if self._busy and await self._new_work(seen):
                continue  # a lead came while another worker waits on the dialer: send it
            due = await self.store.next_due(self.sink.name)
            if due is None or due >= deadline:
                if due is not None and self.deferred and not self.counts.waiting:
                    self.counts.waiting = self.deferred
                return
            if due - self.clock.time() > max(self.cfg.retry_max_s, PASS_WAITS_AT_MOST_S):
                # Longer than any backoff: a withdrawal past max_attempts, tried again
                # in an hour. A pass waiting for it would hold the store (a cron run's
                # lock, every other run exiting 75) while nothing else goes.
                when = datetime.fromtimestamp(due, UTC).isoformat(timespec="seconds")
                self.counts.waiting = self.counts.waiting or f"next try at {when}"
                return
            await self._sleep(min(due - self.clock.time(), deadline - self.clock.time(), 5.0))

    async def _push_claimed(self, batch: list[QueuedLead]) -> bool:
        """Screen a claimed batch at push time and push what may go; return True when a
        request was sent (or tried)."""
        batch = await self._nothing_to_withdraw(batch)
        if self.feed_left is not None:
            batch = await self._fed(batch)
            if not batch:
                return False  # all went back: the feed's check ends the pass
        batch = await self._not_listed(batch)
        if batch:
            batch = await self._within_window(batch)
        if batch and self.dnc_stale is not None:
            batch = await self._while_list_stale(batch, self.dnc_stale)
        if batch:
            batch = await self._one_per_number(batch)
        for part in self._per_close(batch):
            await self.push_batch(part)
        return bool(batch)

    async def _nothing_to_withdraw(self, batch: list[QueuedLead]) -> list[QueuedLead]:
        """Settle the removals of leads the dialer never had; return the rest of the batch.

        The pull marks a lead it never delivered gone at once, unless a push holds it
        then (the request may land): it queues a removal. When that push failed, the
        dialer never had the lead: nothing to withdraw, and nothing to name it by there.
        A removal that carries a number is of a version sent whose answer never came
        (``StoredLead.in_doubt``, ``Completion.attempted``): the dialer may hold it.
        """
        never = [q for q in batch if never_delivered(q)]
        if not never:
            return batch
        results = [PushResult.delivered(q.key, reply=NEVER_DELIVERED) for q in never]
        await self._complete(never, results)
        settled = {q.key for q in never}
        return [q for q in batch if q.key not in settled]

    async def _not_listed(self, batch: Sequence[QueuedLead]) -> list[QueuedLead]:
        """Return the leads none of whose numbers is on a do-not-call list of the sink's
        routes; refuse the others, naming the list (one look-up per batch).

        The pull blocks a listed lead and a list's load withdraws the leads it names,
        but a lead may reach the push without either seeing it: a dead letter sent again
        by ``syncd retry`` after its number was listed, a push that claims it while the
        list is loading. Removals go whatever the lists say.
        """
        upserts = [q for q in batch if q.action is Action.UPSERT]
        if not self.dnc_lists or not upserts:
            return list(batch)
        numbers = {q.key: numbers_of(q.lead.phone, q.lead.alt_phones) for q in upserts}
        wanted = [n for ns in numbers.values() for n in ns]
        listed = await self.store.dnc_matches(self.dnc_lists, wanted)
        if not listed:
            return list(batch)
        self._list_versions.update(await version_labels(self.store, set(listed.values())))
        refused: list[PushResult] = []
        for q in upserts:
            hit = next((n for n in numbers[q.key] if n in listed), None)
            if hit is None:
                continue
            name = listed[hit]
            # The reason goes to the log (sink.push.refused): it names which number, not
            # the number itself; the audit's facts hold the numbers.
            which = "its main number" if hit == q.lead.phone else "an alternate number"
            decision = GateDecision(
                Verdict.BLOCK, f"dnc_list:{name}", f"{which} is on the do-not-call list {name}"
            )
            refused.append(PushResult.rejected(q.key, decision.text))
            self._refusals[q.key] = decision.code
        gone = {r.key for r in refused}
        codes = sorted({self._refusals[key] for key in gone})  # _complete takes them
        await self._complete([q for q in batch if q.key in gone], refused)
        self.log.warning("gate.refused", count=len(refused), codes=codes)
        if self.observer is not None:
            self.observer.gate_decisions(self.sink.name, [r.reason for r in refused])
        return [q for q in batch if q.key not in gone]

    async def _measure_feed(self) -> None:
        """Work out how many new leads this pass may send (``queue_ahead_minutes``)."""
        ahead = self.cfg.queue_ahead_minutes
        if ahead is None or self.cfg.entity != "leads":
            return
        now = self.clock.time()
        counts = await self.store.feed_counts(
            self.sink.name,
            reached_since=now - pace_span_s(ahead),
            delivered_since=now - QUEUED_HORIZON_S,
            now=now,
        )
        decided = feed(ahead, self.cfg.queue_start or self.cfg.batch_size, counts)
        self.feed_left, self.feed_others = decided.allowance, counts.others_due > 0
        self._feed, self._feed_sent = decided, 0
        self.log.debug(
            "push.feed",
            allowance=decided.allowance,
            queued=decided.queued,
            pace_per_min=decided.pace_per_min,
            others_due=counts.others_due,
        )

    async def _fed_up(self) -> None:
        """The allowance is spent: say so in status when new leads are due (they wait)."""
        due = await self.store.next_due(self.sink.name)
        if due is not None and due <= self.clock.time() and self._feed is not None:
            # What waits in the dialer now: what it held, and what this pass sent it.
            queued = self._feed.queued + self._feed_sent
            reason = replace(self._feed, queued=queued).reason()
            if self.fed_up is None:
                self.log.info("push.feeding", reason=reason)
            self.fed_up = reason
            self.counts.waiting = self.counts.waiting or reason

    async def _fed(self, batch: Sequence[QueuedLead]) -> list[QueuedLead]:
        """Return what may go of a claimed batch; new leads past the allowance go back.

        Updates of leads the dialer holds and removals add nothing to its queue: they
        always go (a removal must never wait for the dialer to catch up). The others
        go back to the outbox as they were, without spending an attempt.
        """
        going: list[QueuedLead] = []
        over: list[str] = []
        for q in batch:
            if q.action is Action.DELETE or q.delivered_hash is not None:
                going.append(q)
            elif self.feed_left is not None and self.feed_left > 0:
                self.feed_left -= 1
                self._feed_sent += 1
                going.append(q)
            else:
                over.append(q.key)
        if over:
            self.feed_others = False  # looked: the next pass measures again
            await self.store.requeue(
                self.sink.name,
                over,
                self.clock.time(),
                "feeding the dialer: its queue is full",
                claim=claim_of(batch),
            )
            await self._fed_up()
        return going

    async def _within_window(self, batch: Sequence[QueuedLead]) -> list[QueuedLead]:
        """Return the leads whose calling window is open now and whose consent holds;
        hold the rest until the window opens, refuse those whose consent ran out.

        Checked right before the push, not when the lead was read: a lead queued at
        19:59 and retried at 20:01 must wait for tomorrow, and one read with a day of
        consent left must not be pushed (or held) past that day. Removals go at any time.
        """
        consent = self.consent and any(q.lead.consent_until is not None for q in batch)
        if not self.windows and not consent:
            return list(batch)
        margin = max((w.margin for w in self.windows), default=timedelta(0))
        now = datetime.fromtimestamp(self.clock.time(), UTC)
        allowed: list[QueuedLead] = []
        holds: list[tuple[str, float, str]] = []
        refused: list[PushResult] = []
        memo: dict[Any, Any] = {}
        codes: dict[str, str] = {}
        for q in batch:
            if q.action is Action.DELETE:
                allowed.append(q)
                continue
            numbers = (q.lead.phone, *q.lead.alt_phones)  # the dialer may ring any of them
            decision = (
                calling_decision(numbers, q.lead.zone, self.windows, now, memo)
                if self.windows
                else ALLOWED
            )
            if self.consent:
                decision = consent_at_push(decision, q.lead.consent_until, now, margin)
            if decision.zones:
                self._zones[q.key] = decision.zones
            if decision.verdict is Verdict.ALLOW:
                until = self._dial_until(q, decision.closes)
                allowed.append(replace(q, dial_until=until, dial_zones=decision.zones))
            elif decision.verdict is Verdict.HOLD and decision.until is not None:
                holds.append((q.key, decision.until.timestamp(), decision.text))
                codes[q.key] = decision.code
            else:
                refused.append(PushResult.rejected(q.key, decision.text))
                self._refusals[q.key] = decision.code
        if holds:
            by_key = {q.key: q for q in batch}
            facts = {key: self._facts(by_key[key], code=codes[key]) for key, _, _ in holds}
            await self.store.hold(self.sink.name, holds, facts, claim=claim_of(batch))
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

    def _dial_until(self, q: QueuedLead, closes: datetime | None) -> datetime | None:
        """Return until when the dialer may ring ``q``: the close of the opening it is
        pushed in, or of its callback's opening when the CRM's call_at falls after that."""
        call_at = q.lead.call_at
        if closes is None or call_at is None or call_at < closes:
            return closes
        numbers = (q.lead.phone, *q.lead.alt_phones)
        later = callback_close(numbers, q.lead.zone, self.windows, call_at)
        until = later if later is not None and later > closes else closes
        consent = q.lead.consent_until
        return min(until, consent) if consent is not None else until  # never past consent

    async def _while_list_stale(self, batch: Sequence[QueuedLead], why: str) -> list[QueuedLead]:
        """Return the removals only: a strict do-not-call list of this sink's routes is too
        old to rely on, so every other lead is held (``why``) until a fresh copy loads."""
        until = self.clock.time() + STALE_RECHECK_S
        holds = [(q.key, until, why) for q in batch if q.action is not Action.DELETE]
        if holds:
            await self.store.hold(self.sink.name, holds, claim=claim_of(batch))
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
        holders = await self.store.number_holders(
            self.sink.name, wanted, alternates=bool(closing), besides=mine
        )
        candidates = [Candidate(q.key, q.lead.phone, q.delivered_hash is not None) for q in upserts]
        # A removal not yet landed still holds its number at the dialer: a lead of that
        # number waits for it (else a failing removal leaves two open records, and the
        # removal would then wait for the newcomer for good).
        closers = [*(await self._queued_closings(mine) if upserts else []), *closing.items()]
        removing = [Holder(key, "inflight", True, n) for key, ns in closers for n in ns]
        waits = set_aside(candidates, [*holders, *removing], sink=self.sink.name)
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
        by_key = {q.key: q for q in batch}
        await self.store.set_aside(
            self.sink.name,
            [(w.key, until, w.reason, w.waits_for) for w in waits.values()],
            {key: self._facts(by_key[key], closing.get(key, ())) for key in waits},
            claim=claim_of(batch),
        )
        self.log.info(
            "push.waits",
            count=len(waits),
            reason=next(iter(waits.values())).reason.split(":")[0],
        )
        return [q for q in batch if q.key not in waits]

    def _per_close(self, batch: list[QueuedLead]) -> list[list[QueuedLead]]:
        """Return the batch as the requests it goes in: one per window close when the
        dialer takes the close per request, not per record (``WindowHold.per_request``)."""
        if not batch or not self.cfg.window_hold().per_request:
            return [batch] if batch else []
        parts: dict[datetime | None, list[QueuedLead]] = {}
        for q in batch:
            parts.setdefault(q.dial_until, []).append(q)
        return list(parts.values())

    async def _queued_closings(self, mine: set[str]) -> list[tuple[str, list[str]]]:
        """Return (key, numbers) of this sink's queued removals that close a number."""
        found = []
        for q in await self.store.queued_removals(self.sink.name):
            if q.key not in mine and (numbers := self.sink.closes_numbers(q)):
                found.append((q.key, numbers))
        return found

    async def _gate(self, deadline: float) -> bool:
        """Return True once the breaker and any Retry-After hold let a push go.

        False when that moment falls after ``deadline`` or stop is set: claimed
        nothing, spent no attempt.
        """
        breaker, limits = self.guard.breaker, self.guard.limits
        while not self.stop.is_set():
            held = self.guard.held.left(self.clock.monotonic())
            throttled = limits.limiter.held_for()
            wait = max(breaker.wait_s(), throttled, held)
            if wait <= 0:
                if breaker.allow():
                    return True
                wait = 0.05  # another worker's probe is out
            if self.clock.time() + wait >= deadline:
                self.counts.waiting = self._why_waiting(wait, held=held, throttled=throttled)
                return False
            if breaker.state is BreakerState.OPEN and breaker.opened > 1:
                self._give_up(wait)
                return False
            await self._sleep(min(wait, 5.0))
        return False

    def _give_up(self, wait: float) -> None:
        """End this pass: the breaker opened and its probe failed too (the dialer is down).

        Probing on until the deadline would keep a cron run (``run --once``, an hour by
        default) sitting on a dead dialer; the leads stay pending for the next run. (The
        daemon's passes end at once anyway and it probes again at its next push.)
        """
        breaker = self.guard.breaker
        reason = breaker.last_reason or "it keeps failing"
        self.counts.waiting = (
            f"dialer unreachable ({reason}); gave up for this run after its breaker opened "
            f"and the probe {human_seconds(breaker.reset_s)} later failed too; leads wait "
            "for the next run"
        )
        if self.gave_up:
            return  # said once per pass, whichever worker saw it first
        self.gave_up = True
        self.log.warning(
            "sink.push.unreachable",
            reason=reason,
            failures=breaker.failures,
            action="leads wait for the next run (pending, no attempts spent)",
        )

    def _why_waiting(self, wait: float, *, held: float, throttled: float) -> str:
        """Return why no push may go before the deadline: a hold (its cause) or the breaker.

        ``held`` and ``throttled`` are the waits ``wait`` was made of, read once: read
        again here, a moment later, a hold is shorter than ``wait`` and the dialer that
        asked for it was said to be unreachable.
        """
        hold = self.guard.held
        if hold.public is not None and held >= wait:
            return f"{hold.public}; next try in {human_seconds(wait)}; leads wait"
        if throttled >= wait:
            return f"{self.guard.limits.hold_text(wait)}; leads wait"
        reason = self.guard.breaker.last_reason or "it keeps failing"
        return f"dialer unreachable ({reason}); next try in {human_seconds(wait)}"

    def nudge(self) -> None:
        """Say there may be work for an idle worker: a lead was committed (the daemon's
        wake-up while this pass runs), or a batch ended."""
        self._nudges += 1
        self._nudged.set()

    async def _new_work(self, seen: int) -> bool:
        """Wait while another worker has a batch out; return True when something nudged
        since ``seen`` (look at the outbox again), False once no batch is out (the pass
        may end) or the pass is stopping.

        Without it a worker that found the outbox empty ended, and the pass with it only
        when the slowest request came back: a lead committed meanwhile waited for a
        dialer that sat on another batch (up to the sink's timeout)."""
        while self._busy and not self.stop.is_set():
            if self._nudges != seen:
                return True
            self._nudged.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudged.wait(), timeout=NUDGE_CHECK_S)
        return self._nudges != seen and not self.stop.is_set()

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stop.wait(), timeout=max(0.05, seconds))
        except TimeoutError:
            pass

    async def push_batch(self, batch: Sequence[QueuedLead]) -> None:
        started = time.monotonic()
        claim = claim_of(batch)
        fence = ClaimFence(
            self.store,
            self.sink.name,
            batch,
            self._confirmed.get(claim) or stamp(self.clock),
            self.lease_s,
            self.clock,
        )
        try:
            with fenced(fence):
                results = await self.sink.push(batch)
        except asyncio.CancelledError:
            await self._cut_off(batch)
            raise
        except ClaimLost as exc:
            await self._claim_lost(batch, exc)
            return
        except SinkConfigError as exc:
            self.guard.breaker.cancel()
            await self._stop_sink(batch, exc)
            return
        except SinkHeld as exc:
            await self._hold_sink(batch, exc)
            return
        except BatchTooLarge as exc:
            self._answered()
            await self._too_large(batch, exc)
            return
        except BatchRejected as exc:
            self._answered()
            if len(batch) == 1:
                await self._complete(batch, [PushResult.rejected(batch[0].key, exc.reason)])
                return
            self._said("info", "sink.push.bisect", exc.reason, size=len(batch))
            middle = len(batch) // 2
            await self.push_batch(batch[:middle])
            await self.push_batch(batch[middle:])
            return
        except PermanentError as exc:
            self._answered()
            results = [PushResult.rejected(q.key, exc.reason) for q in batch]
        except RetryableError as exc:
            self._said("warning", "sink.push.retry", str(exc), DIALER_FAILED, size=len(batch))
            self._unanswered(exc)
            answered = exc.answered
            results = [
                PushResult.retry(q.key, str(exc), exc.retry_after, answered=answered) for q in batch
            ]
        except VendorError as exc:
            self._said("error", "sink.push.failed", str(exc), DIALER_FAILED, size=len(batch))
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
            own = [r for r in results if r.kind is ResultKind.RETRY and r.deferred]
            if own and len(own) == len(results):
                # Every lead waits on syncd's own delay (the sink said so): not a failure
                # of the dialer, no hold of the sink.
                self.guard.breaker.cancel()
                self.deferred = own[0].reason
            elif results and all(r.kind is ResultKind.RETRY for r in results):
                # A sink that turns a failed call into a retry per lead: for the breaker
                # that is the dialer failing, not answering. Each lead's own wait (an
                # unanswered upload settling) holds that lead only, in the outbox: the
                # sink's other leads and its polls go on. A real Retry-After was held
                # for the whole sink by its transport when the answer came.
                failed = [r for r in results if not r.deferred]  # syncd's own waits aside
                self.guard.breaker.record_failure(
                    failed[0].reason, public="the dialer failed or could not be reached"
                )
                self._publish()
            else:
                self._answered()
                self._unheld()
                self._learned(len(batch))
        finally:
            self._confirmed[claim] = max(fence.confirmed, self._confirmed.get(claim, (0.0, 0.0)))
        if self.observer is not None:
            self.observer.push_latency(self.sink.name, time.monotonic() - started)
        await self._complete(batch, results)

    async def _cut_off(self, batch: Sequence[QueuedLead]) -> None:
        """Return a batch whose request was cut off to the outbox, due at once, in doubt.

        The request may have reached the dialer: each lead's attempt stays spent and the
        number sent is kept, so a removal the CRM queues before the next push names the
        record the dialer may hold (``StoredLead.in_doubt``) instead of settling it as
        never delivered. Unrecorded (the store is gone too), the next start releases the
        claim, its attempt still spent.
        """
        now = self.clock.time()
        completions = [
            Completion(
                q.key,
                q.hash,
                ResultKind.RETRY,
                CUT_OFF,
                next_at=now,
                claim=q.claim,
                attempted=q.lead.phone if q.action is Action.UPSERT else "",
            )
            for q in batch
        ]
        try:
            await self.store.complete(self.sink.name, completions)
        except StoreError as exc:
            self.log.warning(
                "push.cut_off.unrecorded",
                leads=len(batch),
                reason=str(exc),
                action="none: the next start returns them to the outbox, in doubt",
            )

    async def _claim_lost(self, batch: Sequence[QueuedLead], exc: ClaimLost) -> None:
        """Another replica took some of the batch over (this one froze past their lease):
        they are its to send now. Push the rest, still this claim's."""
        self.guard.breaker.cancel()  # nothing was sent
        lost = set(exc.keys)
        self.log.warning(
            "push.claim.lost",
            leads=len(lost),
            reason=str(exc),
            action="none: the replica that took them over sends them",
        )
        rest = [q for q in batch if q.key not in lost]
        if rest:
            await self.push_batch(rest)

    async def _hold_sink(self, batch: Sequence[QueuedLead], exc: SinkHeld) -> None:
        """The dialer refuses records for now: the batch goes back untouched; the sink waits."""
        self.guard.breaker.cancel()  # it answered; the hold, not the breaker, keeps it waiting
        held = self.guard.held
        held.times += 1
        if held.reason is None:
            held.since = self.clock.time()
        held.reason, held.public = str(exc), exc.public
        wait = held.wait_s(
            self.cfg.retry_base_s, min(self.cfg.retry_max_s, HOLD_MAX_S), exc.retry_after
        )
        # Pushes only: polls and keep-alives go on while a campaign is paused.
        held.until = self.clock.monotonic() + wait
        self.health.failed(
            f"held:{self.sink.name}",
            str(exc),
            event="sink.held",
            level="warning",
            sink=self.sink.name,
            why=exc.public,
            action="leads wait in the outbox without spending attempts; syncd asks again "
            "with a growing backoff",
        )
        self.log.debug("sink.held.wait", wait_s=round(wait, 3), times=held.times)
        self._publish()
        keys = [q.key for q in batch]
        await self.store.requeue(
            self.sink.name, keys, self.clock.time() + wait, str(held.public), claim=claim_of(batch)
        )

    def _unheld(self) -> None:
        """The dialer took records again: a hold is over (logged once)."""
        held = self.guard.held
        if held.reason is None:
            return
        held.reason = held.public = held.since = None
        held.times, held.until = 0, 0.0
        self.health.recovered(
            f"held:{self.sink.name}", event="sink.held.ended", sink=self.sink.name
        )

    def _learned(self, size: int) -> None:
        """A batch went through: after a 413, its size is the new limit (said once)."""
        if self.guard.sizes.went_through(size):
            self.log.warning(
                "sink.batch.limited",
                size=size,
                reason=f"the dialer takes at most {size} records a request; batches are now {size}",
                action=f"set batch_size = {size} for this sink to skip the 413s",
            )

    async def _too_large(self, batch: Sequence[QueuedLead], exc: BatchTooLarge) -> None:
        """HTTP 413: halve the batch and push the halves; one record alone is refused."""
        self.guard.sizes.too_large(len(batch))
        if len(batch) == 1:
            reason = f"{exc}: this one record is larger than the dialer takes in a request"
            await self._complete(batch, [PushResult.rejected(batch[0].key, reason)])
            return
        self.log.info("sink.push.halved", size=len(batch), reason=str(exc))
        middle = len(batch) // 2
        await self.push_batch(batch[:middle])
        await self.push_batch(batch[middle:])

    def _answered(self) -> None:
        """The dialer answered (whatever it said): the breaker closes."""
        self.guard.breaker.record_success()
        self._publish()

    def _unanswered(self, exc: Exception) -> None:
        """The dialer failed or could not be reached: count it; honour its Retry-After."""
        if isinstance(exc, HeldBack):
            # Not sent: the sink's hold refused it. Neither a failure of the dialer nor
            # a new hold (taken up again, it would lose what the hold's cause says).
            self.guard.breaker.cancel()
            self._publish()
            return
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            code = getattr(exc, "code", None)
            self.guard.limits.hold(retry_after, answer=f"HTTP {code}" if code else None)
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
        now = self.clock.time()
        # One wait per batch (per attempt count and Retry-After): jitter spreads batches
        # apart, not the leads of one batch, which would go back in scattered bits.
        waits: dict[tuple[int, float | None], float] = {}

        def retry_in(attempts: int, retry_after: float | None = None) -> float:
            key = (attempts, retry_after)
            if key not in waits:
                waits[key] = backoff(attempts, self.cfg, retry_after)
            return waits[key]

        withdrawals_refused: list[str] = []
        for result in results:
            queued = by_key.get(result.key)
            if queued is None:
                continue
            withdrawal = queued.action is Action.DELETE and self.sink.can_remove
            refused = withdrawal and result.kind is ResultKind.REJECTED
            if refused:
                # A lead the CRM removed or the gate withdrew stays dialable until the
                # dialer lets it go: its refusal is tried again, never final.
                result = PushResult.retry(result.key, f"{WITHDRAWAL_REFUSED}: {result.reason}")
            completion = Completion(
                result.key,
                queued.hash,
                result.kind,
                result.reason,
                result.vendor_ref,
                reply=result.reply,
                facts=self._facts(
                    queued, code=self._refusals.pop(result.key, ""), reply=result.reply
                ),
                dial_until=queued.dial_until.timestamp() if queued.dial_until else None,
                claim=queued.claim,
            )
            if result.kind is ResultKind.RETRY and queued.action is Action.UPSERT:
                # sent, its answer lost (syncd's own wait sent nothing; a failure the
                # dialer answered took nothing)
                lost = not (result.deferred or result.answered)
                completion.attempted = queued.lead.phone if lost else ""
            if result.kind is ResultKind.RETRY:
                if result.deferred:
                    # syncd's own wait (a lead in doubt settling, call records not in
                    # yet): no try at the dialer, so it spends no attempt and gives up on none
                    completion.spent = False
                    completion.next_at = now + (result.retry_after or 0.0)
                elif withdrawal and queued.attempts >= self.cfg.max_attempts:
                    wait = max(self.cfg.retry_max_s, WITHDRAWAL_RETRY_S)
                    completion.next_at = now + wait
                    completion.reason = (
                        f"{result.reason} ({WITHDRAWAL_FAILING} {queued.attempts} times;"
                        " syncd keeps trying)"
                    )
                elif refused:
                    # The dialer said no (not a fault in the wire): the number stays
                    # dialable, so it is an alert from the first refusal, tried again with
                    # the usual backoff meanwhile.
                    withdrawals_refused.append(result.reason)
                    completion.next_at = now + retry_in(queued.attempts)
                    completion.reason = (
                        f"{result.reason} ({WITHDRAWAL_FAILING} {queued.attempts} times;"
                        " syncd keeps trying)"
                    )
                elif queued.attempts >= self.cfg.max_attempts:
                    completion.final = True
                    completion.reason = (
                        f"{result.reason} (gave up after {queued.attempts} attempts)"
                    )
                else:
                    completion.next_at = now + retry_in(queued.attempts, result.retry_after)
            completions.append(completion)
        if withdrawals_refused:  # an alert in status and /readyz too (withdrawals_failing)
            self._said(
                "warning",
                "sink.withdrawal.refused",
                withdrawals_refused[0],
                size=len(withdrawals_refused),
                action="the numbers stay dialable until the dialer lets them go; syncd keeps "
                "trying: see `syncd status` and `syncd explain KEY`",
            )
        missing = set(by_key) - {r.key for r in results}
        for key in missing:  # a sink that forgot a lead must not lose it
            completions.append(
                Completion(
                    key,
                    by_key[key].hash,
                    ResultKind.RETRY,
                    "no result from the sink",
                    next_at=self.clock.time() + 5,
                    claim=by_key[key].claim,
                )
            )
        await self._numbers_left([r for r in results if r.key in by_key])
        stale = await self._keep_results(completions)
        if stale:
            self.log.warning(
                "push.result.stale",
                leads=len(stale),
                reason="another replica claimed these leads since this push took them",
                action="none: this push's results were dropped; the other replica's stand",
            )
            completions = [c for c in completions if c.key not in stale]
        self._count(completions)
        self._speed_to_lead(completions, by_key)
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

    async def _numbers_left(self, results: Sequence[PushResult]) -> None:
        """Keep an alert for each lead the dialer still holds under a former number.

        Kept before the results: a push whose results are lost goes again, and the sink
        may not say it twice (it knows the number changed only once)."""
        found = numbers_left.left_open(results)
        if not found:
            return
        await numbers_left.record(self.store, self.sink.name, found, self.clock.time())
        self.log.warning(
            "sink.number.left",
            leads=len(found),
            keys=[shown_key(r.key) for r in found[:10]],
            reason="the dialer still holds these leads under a former number too (it may "
            "be someone else's now); syncd cannot close those records",
            action="remove those records by hand at the dialer (`syncd status` says how, "
            f"per lead); then {numbers_left.ACK.format(sink=self.sink.name)}",
        )

    async def _keep_results(self, completions: Sequence[Completion]) -> set[str]:
        """Write a batch's results, offering them again while the store cannot take them.

        The dialer answered: it holds these leads now. Were the results dropped, the
        leads would go out again once the store is back. A stop does not end the
        waiting (the daemon's grace does, by cancelling).
        """
        give_up = self.clock.monotonic() + RESULTS_KEPT_S
        wait = 0.2
        while True:
            try:
                stale = await self.store.complete(self.sink.name, completions)
            except StoreError as exc:
                if self.clock.monotonic() >= give_up:
                    raise
                self.health.failed(
                    f"results:{self.sink.name}",
                    str(exc),
                    event="push.results.waiting",
                    level="warning",
                    sink=self.sink.name,
                    leads=len(completions),
                    action="the results are kept and written once the store answers",
                )
                await asyncio.sleep(wait)
                wait = min(wait * 2, 2.0)
            else:
                self.health.recovered(
                    f"results:{self.sink.name}", event="push.results.written", sink=self.sink.name
                )
                return set(stale)

    def _facts(
        self, q: QueuedLead, closes: Sequence[str] = (), *, code: str = "", reply: str = ""
    ) -> str:
        """Return the audit's facts of a decision on ``q`` (a hold, a wait, a push).

        A removal's own record names no number: the numbers it closes at the dialer
        stand for them where the sink says (the audit shows the lead's earlier ones).
        """
        if q.action is Action.DELETE:
            numbers = tuple(closes or self.sink.closes_numbers(q))
            zones: tuple[str, ...] = ()
        else:
            numbers = numbers_of(q.lead.phone, q.lead.alt_phones)
            zones = self._zones.pop(q.key, ()) or lead_zones(
                numbers, q.lead.zone, self.fallback_zone
            )
        return decision_json(
            numbers,
            zones,
            code=code,
            policy=self.policy,
            list_version=self._list_versions.get(list_of(code), "") if code else "",
            action=q.action.value,
            withdrawn=q.lead.withdrawn,
            reply=reply,
        )

    def _speed_to_lead(
        self, completions: Sequence[Completion], by_key: Mapping[str, QueuedLead]
    ) -> None:
        """Tell the observer how long each lead delivered took from its read (the store's
        commit of its version: a POST's receipt, a pull's chunk) to the dialer's yes.
        Removals are not leads reaching the dialer; a lead read before a clock step
        back counts as 0 (``lead_ages``)."""
        if self.observer is None:
            return
        now = self.clock.time()
        for source, age in lead_ages(completions, by_key, now):
            self.observer.lead_latency(source, self.sink.name, age)

    def _said(
        self, level: str, event: str, reason: str, other: str = DIALER_REFUSED, **context: Any
    ) -> None:
        """Log ``event``: at info and warning with the reason's code (syncd.core.reasons)."""
        log_reason(self.log, level, event, reason, other, self._coder, **context)

    def _count(self, completions: list[Completion]) -> None:
        for c in completions:
            if c.kind is ResultKind.DELIVERED:
                self.counts.delivered += 1
            elif c.kind is ResultKind.REJECTED:
                self.counts.refused += 1
                self._said("info", "sink.push.refused", c.reason, key=c.key)
            elif c.final:
                self.counts.failed += 1
                self._said("error", "sink.push.gave_up", c.reason, DIALER_FAILED, key=c.key)
        if self.observer is not None:
            self.observer.push_results(self.sink.name, completions)

    async def _stop_sink(self, batch: Sequence[QueuedLead], exc: SinkConfigError) -> None:
        # The engine stops the sink (and logs `sink.stopped` once) when the pusher returns.
        self.stopped_by = exc
        self.counts.stopped = str(exc)
        await self.store.requeue(
            self.sink.name,
            [q.key for q in batch],
            self.clock.time(),
            str(exc),
            claim=claim_of(batch),
        )


def lead_ages(
    completions: Sequence[Completion], by_key: Mapping[str, QueuedLead], now: float
) -> list[tuple[str, float]]:
    """Return (source, seconds from read to ``now``) of each lead ``completions`` delivered:
    upserts only, of leads whose read time the claim returned."""
    ages: list[tuple[str, float]] = []
    for c in completions:
        q = by_key.get(c.key)
        if c.kind is not ResultKind.DELIVERED or q is None or q.action is Action.DELETE:
            continue
        if q.read_at is not None:
            ages.append((q.source or "unknown", max(0.0, now - q.read_at)))
    return ages
