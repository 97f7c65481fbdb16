"""Putting leads into a uContact campaign and taking them out, without dialling anyone twice.

uploadbase gives a contact no id and the API cannot list the dial list; the only
way out is ``RemoveContact`` one number at a time. So the sink keeps a record per
lead (the ledger) and follows three rules:

1. A failed call the server *answered* (an error status, a refusal) did nothing:
   it is sent again (inside the call, then from the outbox) and nothing is removed.
2. A call that got *no answer* (``NoAnswer``: a timeout, a dropped connection, a
   body that is no answer) may have taken effect, or may still. Its leads go back
   to the outbox until ``settle_s`` has passed; then whatever the dialer may hold
   of them is removed before they are added again.
3. A removal counts once it is answered. A removal that got no answer, even if a
   repeat of it was answered, holds the lead back for ``settle_s`` too, so that
   it cannot land after the lead's new upload and take it out.
4. The same version sent again after an add nobody confirmed (rule 2, or a crash
   after the add was answered but before the push was recorded) may already have
   been dialled, and a dialled number is no longer in the list to remove. So the
   call records decide: a call since the add means it was delivered, and it is not
   sent again; otherwise the number is removed and, once ``cdr_delay_s`` has shown
   no call made before that removal, the lead is added again.

Every add and removal is written to the ledger before its call and its outcome
after it, so a crash mid-call is a call without an answer (rule 2).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from syncd.core.durations import human_seconds
from syncd.core.model import PushResult, QueuedLead, ResultKind
from syncd.core.reasons import DIALER_FAILED, log_reason
from syncd.errors import (
    BatchTooLarge,
    PermanentError,
    RetryableError,
    SinkConfigError,
    SinkHeld,
    VendorError,
)
from syncd.sinks.base import BatchRejected
from syncd.sinks.ucontact.client import VENDOR, NoAnswer, UContactClient, describe
from syncd.sinks.ucontact.config import UContactSinkConfig
from syncd.sinks.ucontact.dialled import DialledCheck
from syncd.sinks.ucontact.ledger import (
    ADD,
    BASE,
    DNC,
    MAYBE,
    NO,
    REMOVE,
    SCHEDULE,
    YES,
    Ledger,
    Placed,
)
from syncd.sinks.ucontact.outcomes import first
from syncd.sinks.ucontact.settle import Plan, plan_add, plan_delete
from syncd.sinks.ucontact.wire import Call, black_json, schedule_json, task_json, upload_file
from syncd.state.base import SinkStore

CALL_CONCURRENCY = 4  # single calls (removals, schedules, blacklist) in flight per batch
SETTLING = (
    "waiting {wait}: an earlier call for this lead got no answer and may still take effect "
    "(settle_s)"
)
# syncd's own wait before it trusts the call records, not the dialer's: said as such.
RECORDS_PENDING = "waiting {wait} for uContact's call records to settle (cdr_delay_s)"
WIDE_FROM, WIDE_TO = "2000-01-01 00:00:00", "2099-12-31 23:59:59"  # schedule of unknown date


class Placer:
    """Adds, removes and blacklists the leads of one uContact sink, keeping its ledger."""

    def __init__(
        self,
        cfg: UContactSinkConfig,
        client: UContactClient,
        ledger: Ledger,
        store: SinkStore,
        log: Any,
        dial: Callable[[str], str],
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.client = client
        self.ledger = ledger
        self.store = store
        self.log = log
        self.dial = dial
        self.settle_s = cfg.settle_delay_s
        self._slots = asyncio.Semaphore(CALL_CONCURRENCY)

    # -- what the dialer may hold ---------------------------------------------

    async def _own(self, q: QueuedLead) -> Placed | None:
        """Return the ledger's record of the lead, or a guess when the dialer held a version.

        No record and no delivered version means nothing was ever sent for the lead:
        every add is recorded before its call.
        """
        placed = await self.ledger.placed(q.key)
        if placed is not None or q.delivered_hash is None:
            return placed
        destination = q.vendor_ref or (self.dial(q.lead.phone) if q.lead.phone else "")
        if not destination:
            return None
        # Unknown mode and date: remove both a queued contact and any schedule.
        return Placed(destination=destination, mode=SCHEDULE, calldate=None, held=MAYBE)

    async def _owns(self, key: str, number: str) -> bool:
        return await self.ledger.owner(number) in (None, key)

    def _plan_args(self) -> dict[str, float]:
        return {"timeout_s": self.cfg.timeout_s, "settle_s": self.settle_s}

    def _defer(self, q: QueuedLead, until: float, why: str = SETTLING) -> PushResult:
        """Return a retry for when ``until`` has passed, saying why (default: settle_s).

        The wait is syncd's own, not the dialer's: the push loop neither holds the
        sink for it nor counts it against the dialer.
        """
        wait = max(until - time.time(), 0.05)
        self.log.debug("sink.push.settling", key=q.key, wait_s=round(wait, 3))
        return PushResult.defer(q.key, why.format(wait=human_seconds(wait)), wait)

    async def prepare(
        self, q: QueuedLead, destination: str | None, dialled: DialledCheck | None = None
    ) -> PushResult | None:
        """Return None once the lead may be added; else why it waits, is retried or is done.

        Removes (answered) what the dialer may hold of the lead, and ``destination``
        when another lead's record holds it: in a campaign a number is one contact,
        and the lead sent last owns it. ``dialled`` is the call-record check the
        push's leads in doubt share (rule 4).
        """
        now = time.time()
        own = await self._own(q)
        if own is not None and _unconfirmed(own, q):
            verdict = await self._confirm(q, own, now, dialled or self.dialled_check())
            if verdict is not None:
                return verdict
            own = await self.ledger.placed(q.key)
        targets: list[Placed] = []
        own_is_target = False
        if own is not None:
            plan, own = await self._plan_add(q, own, now)
            if plan.wait_until is not None:
                return self._defer(q, plan.wait_until)
            if plan.remove:
                if await self._owns(q.key, own.destination):
                    targets.append(own)
                    own_is_target = True
                else:
                    self.log.info("sink.remove.shared_number", key=q.key)
        taken_from: str | None = None
        if destination is not None and all(t.destination != destination for t in targets):
            owner = await self.ledger.owner(destination)
            other = await self.ledger.placed(owner) if owner not in (None, q.key) else None
            if other is not None and owner is not None:
                plan = plan_add(other, now, **self._plan_args())
                if plan.wait_until is not None:
                    return self._defer(q, plan.wait_until)
                if plan.remove:
                    targets.append(Placed(destination, mode=other.mode, calldate=other.calldate))
                    taken_from = owner
        if not targets:
            return None
        blocked = await self._remove_first(q, own, targets, own_is_target)
        if blocked is None and taken_from is not None:
            detail = f"number now belongs to lead {q.key}"
            await self.store.add_event(self.name, taken_from, "ucontact.number_taken", detail)
        return blocked

    async def _plan_add(self, q: QueuedLead, own: Placed, now: float) -> tuple[Plan, Placed]:
        """Return the plan for re-adding the lead and its record, storing a rewritten one."""
        plan = plan_add(own, now, **self._plan_args())
        if plan.record is not None:
            own = plan.record
            await self.ledger.mark(q.key, own)
        return plan, own

    def dialled_check(self) -> DialledCheck:
        """Return a fresh call-record check, to be shared by the leads of one batch."""
        return DialledCheck(self.cfg, self.client, self.log)

    async def _confirm(
        self, q: QueuedLead, own: Placed, now: float, dialled: DialledCheck
    ) -> PushResult | None:
        """Return None when the lead is to be added again; else its wait, retry or delivery.

        Rule 4: the lead's last add carried this very version and nobody confirmed
        it reached the dialer and was not yet dialled.
        """
        plan, own = await self._plan_add(q, own, now)
        if plan.wait_until is not None:
            return self._defer(q, plan.wait_until)
        if own.check_at is not None and now < own.check_at:
            return self._defer(q, own.check_at, RECORDS_PENDING)
        call = await dialled.call_after_upload(own)
        if call is not None:
            return await self._already_dialled(q, own, call)
        if own.check_at is not None:
            # Removed, and no call was made before the removal: nothing holds it.
            await self.ledger.mark(q.key, replace(own, held=NO, check_at=None))
            return None
        if await self._owns(q.key, own.destination):
            blocked = await self._remove_first(q, own, [own], own_is_target=True)
            if blocked is not None:
                return blocked
        own = await self.ledger.placed(q.key) or own
        check_at = time.time() + self.cfg.cdr_delay_s
        await self.ledger.mark(q.key, replace(own, held=NO, check_at=check_at))
        return self._defer(q, check_at, RECORDS_PENDING)

    async def _already_dialled(
        self, q: QueuedLead, own: Placed, call: dict[str, Any]
    ) -> PushResult:
        """Return the lead as delivered: the unconfirmed add landed and was dialled."""
        # Not removed yet: the dialer may still hold it for its own retries.
        held = MAYBE if own.check_at is None else NO
        await self.ledger.mark(
            q.key, replace(own, held=held, late=None, at=None, until=None, check_at=None)
        )
        sent = datetime.fromtimestamp(own.added_at or 0, UTC).isoformat(timespec="seconds")
        detail = (
            f"the upload of {sent} reached the dialer and was dialled "
            f"(call {first(call, 'guid', 'uniqueid')} at {first(call, 'calldate')}, "
            f"{first(call, 'disposition', 'status') or 'no status'}); not sent again"
        )
        await self.store.add_event(self.name, q.key, "ucontact.already_dialled", detail)
        self.log.info("sink.push.already_dialled", key=q.key)
        return PushResult.delivered(q.key, own.destination)

    async def _remove_first(
        self, q: QueuedLead, own: Placed | None, targets: list[Placed], own_is_target: bool
    ) -> PushResult | None:
        """Return None once every target is removed (answered), else the lead's wait or retry."""
        first = targets[0]
        base = own or Placed(first.destination, mode=first.mode, calldate=first.calldate, held=NO)
        sent = time.time()
        await self.ledger.mark(q.key, replace(base, late=REMOVE, at=sent, until=None))
        doubt: float | None = None
        try:
            for target in targets:
                unanswered_at = await self._remove(target)
                if unanswered_at is not None:
                    doubt = max(doubt or 0.0, unanswered_at)
        except NoAnswer as exc:
            until = time.time() + self.settle_s
            held = MAYBE if own_is_target else base.held
            await self.ledger.mark(
                q.key, replace(base, held=held, late=REMOVE, at=sent, until=until)
            )
            self.log.warning("sink.remove.unanswered", key=q.key, settle_s=self.settle_s)
            return PushResult.retry(
                q.key, f"{exc}; removed again after {self.settle_s:g}s", self.settle_s
            )
        except VendorError:
            # Answered (or never sent): nothing was removed; the record stands as it was.
            # Anything else (a cancel) leaves the marker: the next try treats it as a crash.
            await self.ledger.mark(q.key, replace(base, late=None, at=None, until=None))
            raise
        held = NO if own_is_target else base.held
        if doubt is None:
            await self.ledger.mark(q.key, replace(base, held=held, late=None, at=None, until=None))
            return None
        # Removed, but an unanswered try of it may still land: not before it has.
        until = doubt + self.settle_s
        await self.ledger.mark(q.key, replace(base, held=held, late=REMOVE, at=doubt, until=until))
        return self._defer(q, until)

    async def _remove(self, placed: Placed) -> float | None:
        """Remove a number (and its schedule); return when a try went unanswered, if one did."""
        campaign = self.cfg.campaign
        async with self._slots:
            reply = await self.client.command(
                "Dialers/RemoveContact",
                {"campaign": campaign, "number": placed.destination},
                repeat_unanswered=True,
            )
            doubt, found = reply.unanswered_at, reply.ok
            if placed.mode == SCHEDULE:
                reply = await self.client.command(
                    "Dialers/RemoveScheduleDialerCall",
                    {
                        "campaign": campaign,
                        "destination": placed.destination,
                        "from": placed.calldate or WIDE_FROM,
                        "to": placed.calldate or WIDE_TO,
                    },
                    repeat_unanswered=True,
                )
                doubt = max(doubt or 0.0, reply.unanswered_at or 0.0) or None
                found = found or reply.ok
        self.log.debug("sink.remove.done", mode=placed.mode, found=found)
        return doubt

    # -- the ways a lead goes out ---------------------------------------------------

    async def delete(self, q: QueuedLead) -> PushResult:
        """Return the result of taking a deleted lead out of the campaign."""
        own = await self._own(q)
        numbers = [q.vendor_ref] if q.vendor_ref else []
        if own is None:
            # Nothing says which number the dialer holds: there is nothing to remove.
            self.log.warning("sink.remove.unknown", key=q.key)
            await self.ledger.forget(q.key, None, numbers)
            return PushResult.delivered(q.key, reply="nothing held at the dialer to remove")
        planned = await self._planned_removal(q, own)
        if isinstance(planned, PushResult):
            return planned
        own, remove = planned
        doubt: float | None = None
        if remove and await self._owns(q.key, own.destination):
            sent = time.time()
            await self.ledger.mark(q.key, replace(own, late=REMOVE, at=sent, until=None))
            try:
                doubt = await self._remove(own)
            except NoAnswer:
                until = time.time() + self.settle_s
                await self.ledger.mark(
                    q.key, replace(own, held=MAYBE, late=REMOVE, at=sent, until=until)
                )
                raise
            except VendorError:
                await self.ledger.mark(q.key, replace(own, late=None, at=None, until=None))
                raise
        await self.ledger.forget(q.key, own, numbers)
        if doubt is not None:
            # A removal may still land: a re-added lead must wait for it.
            await self.ledger.mark(
                q.key, replace(own, held=NO, late=REMOVE, at=doubt, until=doubt + self.settle_s)
            )
        return PushResult.delivered(q.key, reply="uContact: removed from the campaign")

    async def _planned_removal(
        self, q: QueuedLead, own: Placed
    ) -> tuple[Placed, bool] | PushResult:
        """Return the record as the removal's plan leaves it and whether to remove it, or
        the deferral while a late effect of a call may still land (``settle.plan_delete``)."""
        plan = plan_delete(own, time.time(), **self._plan_args())
        if plan.record is not None:
            own = plan.record
            await self.ledger.mark(q.key, own)
        if plan.wait_until is not None:
            return self._defer(q, plan.wait_until)
        return own, plan.remove

    async def withdraw(self, q: QueuedLead) -> PushResult:
        """Return the result of taking a lead out at its calling window's close.

        Removed as a deleted lead is, but its record and number index stay (held: no):
        a call record of it polled later still finds the lead (a call since its upload
        keeps it from being sent again), and its return is a plain add.
        """
        own = await self._own(q)
        if own is None:
            return PushResult.delivered(q.key, reply="nothing held at the dialer to withdraw")
        planned = await self._planned_removal(q, own)
        if isinstance(planned, PushResult):
            return planned
        own, remove = planned
        if not remove:
            return PushResult.delivered(q.key, reply="not held at the dialer: nothing to withdraw")
        if not await self._owns(q.key, own.destination):
            # Another lead holds the number now: removing it would take that one out.
            self.log.info("sink.remove.shared_number", key=q.key)
            return PushResult.delivered(q.key, reply="its number belongs to another lead now")
        blocked = await self._remove_first(q, own, [own], own_is_target=True)
        if blocked is not None:
            return blocked
        removal = "RemoveContact" + (" + RemoveScheduleDialerCall" if own.mode == SCHEDULE else "")
        return PushResult.delivered(
            q.key, reply=f"uContact: {removal} answered at the window's close"
        )

    async def blacklist(self, q: QueuedLead, call: Call) -> PushResult:
        """Return the result of putting a do-not-call lead's numbers on the blacklist."""
        blocked = await self.prepare(q, None)
        if blocked is not None:
            return blocked
        campaign = self.cfg.dnc_campaign
        name = " ".join(p for p in (q.lead.first_name, q.lead.last_name) if p)
        numbers = [call.destination, *call.alternatives]
        await self._add_black(numbers, name)
        await self.ledger.place(
            q.key, Placed(call.destination, list(call.alternatives), DNC, held=NO), []
        )
        await self.store.add_event(
            self.name,
            q.key,
            "ucontact.dnc",
            f"{len(numbers)} number(s) on the do-not-call list of {campaign}; not uploaded",
        )
        return PushResult.delivered(q.key, call.destination)

    async def _add_black(self, numbers: list[str], name: str) -> None:
        """Put numbers on the campaign's blacklist (one already there is fine)."""
        campaign = self.cfg.dnc_campaign
        for number in numbers:
            async with self._slots:
                text = await self.client.text(
                    "admin/addblack",
                    {"black": black_json(number, campaign, self.cfg.user, name)},
                )
            answer = text.strip().strip('"').strip()
            if answer in ("1", "OK") or "exist" in answer.lower():
                continue
            if answer in ("0", "ERROR"):
                raise PermanentError(
                    f"admin/addblack refused {number} for campaign {campaign}", vendor=VENDOR
                )
            raise RetryableError(f"admin/addblack answered {describe(text)}", vendor=VENDOR)

    async def withdraw_dnc(self, q: QueuedLead) -> PushResult:
        """Return the result of taking a lead the gate blocks as do-not-call out, for good.

        Removed from the dial list like a deleted lead, then every number the dialer
        had for it goes on the blacklist, so no other list or campaign dials it either.
        """
        own = await self._own(q)
        result = await self.delete(q)
        if result.kind is not ResultKind.DELIVERED or own is None:
            return result
        numbers = [own.destination, *own.alternatives]
        await self._add_black(numbers, "")
        await self.store.add_event(
            self.name,
            q.key,
            "ucontact.dnc",
            f"{len(numbers)} number(s) removed and put on the do-not-call list of "
            f"{self.cfg.dnc_campaign} ({q.lead.withdrawn})",
        )
        return PushResult.delivered(
            q.key, reply="uContact: removed from the campaign and blacklisted"
        )

    async def single(
        self, q: QueuedLead, call: Call, mode: str, dialled: DialledCheck | None = None
    ) -> PushResult:
        """Return the result of placing one lead as a scheduled call or a dialer task."""
        blocked = await self.prepare(q, call.destination, dialled)
        if blocked is not None:
            return blocked
        campaign = self.cfg.campaign
        if mode == SCHEDULE:
            resource, form = (
                "Dialers/ScheduleDialerCall",
                {"callschedule": schedule_json(campaign, call)},
            )
        else:
            resource, form = (
                "Dialers/DialerTask",
                {"call": task_json(campaign, call, self.cfg.task_source)},
            )
        sending = _sending(q, call, mode)
        await self.ledger.place(q.key, sending, _numbers(q, call))

        async def send() -> bool:
            async with self._slots:
                reply = await self.client.command(resource, form, repeat_unanswered=False)
            return reply.ok

        outcome = await self._added([(q, sending)], send())
        if isinstance(outcome, list):
            return outcome[0]
        if not outcome:
            when = f" for {call.calldate}" if call.calldate else ""
            return PushResult.rejected(
                q.key, f"{resource} refused the call{when} (answered 0; is the dialer enabled?)"
            )
        return PushResult.delivered(
            q.key, call.destination, reply=f"uContact: {resource} answered 1"
        )

    async def upload_zones(
        self,
        uploads: dict[str | None, list[tuple[QueuedLead, Call]]],
        dialled: DialledCheck | None = None,
    ) -> list[PushResult]:
        """Return the results of sending leads in one file per upload zone, one at a time.

        In turn, not at once: each file's number index is written in order (``upload``).
        """
        results: list[PushResult] = []
        for zone in sorted(uploads, key=lambda z: z or ""):
            results += await self.upload(uploads[zone], dialled, timezone=zone)
        return results

    async def upload(
        self,
        uploads: list[tuple[QueuedLead, Call]],
        dialled: DialledCheck | None = None,
        *,
        timezone: str | None = None,
    ) -> list[PushResult]:
        """Return the results of sending leads in one uploadbase file.

        ``timezone``: sent with ``Dialers/uploadbasewithtimezone``; None: ``uploadbase``.
        """
        dialled = dialled or self.dialled_check()
        prepared = await asyncio.gather(
            *(guard(q, self.prepare(q, call.destination, dialled)) for q, call in uploads),
            return_exceptions=True,
        )
        results: list[PushResult] = []
        ready: list[tuple[QueuedLead, Call]] = []
        for (q, call), outcome in zip(uploads, prepared, strict=True):
            if isinstance(outcome, BaseException):
                raise outcome
            if outcome is None:
                ready.append((q, call))
            else:
                results.append(outcome)
        if not ready:
            return results
        # A number appears once in a file: the last lead with it owns it.
        by_number: dict[str, tuple[QueuedLead, Call]] = {}
        for q, call in ready:
            earlier = by_number.get(call.destination)
            if earlier is not None:
                await self.store.add_event(
                    self.name,
                    earlier[0].key,
                    "ucontact.number_taken",
                    f"same number as lead {q.key} in one upload; uContact holds it once",
                )
            by_number[call.destination] = (q, call)
        sent: list[tuple[QueuedLead, Placed]] = []
        # One send time for the file (taken before it goes out): should it go unanswered,
        # one read of the call records since then serves all its leads (``dialled``).
        now = time.time()
        for q, call in ready:  # in order, so the number index ends with each number's owner
            sent.append((q, _sending(q, call, BASE, now)))
        await self.ledger.place_many([(q.key, p, _numbers(q, c)) for (q, p), (_, c) in
                                      zip(sent, ready, strict=True)])  # fmt: skip
        calls = [call for _, call in by_number.values()]
        answer = await self._added(sent, self._upload(calls, timezone))
        resource = _upload_resource(timezone)
        if isinstance(answer, list):
            return results + answer
        if not answer:
            zone = f", timezone {timezone!r}" if timezone else ""
            raise SinkConfigError(
                f"{resource} refused the file for campaign {self.cfg.campaign!r}{zone} "
                "(answered 0, also with a fresh key): check the campaign and the user's rights"
                + (", and that uContact knows the zone" if timezone else ""),
                vendor=VENDOR,
            )
        said = f"uContact: {resource} answered 1" + (f" ({timezone})" if timezone else "")
        return results + [
            PushResult.delivered(q.key, call.destination, reply=said) for q, call in ready
        ]

    async def _added(
        self, sent: list[tuple[QueuedLead, Placed]], call: Awaitable[bool]
    ) -> bool | list[PushResult]:
        """Return an add call's answer, recording it; or the leads' results if it failed."""
        try:
            ok = await call
        except NoAnswer as exc:
            until = time.time() + self.settle_s
            await self.ledger.mark_many([(q.key, replace(p, until=until)) for q, p in sent])
            # The unread answer may echo the upload (names, numbers): its code at warning.
            log_reason(
                self.log,
                "warning",
                "sink.push.unanswered",
                str(exc),
                DIALER_FAILED,
                leads=len(sent),
                settle_s=self.settle_s,
            )
            reason = f"{exc}; removed and sent again after {self.settle_s:g}s"
            return [PushResult.retry(q.key, reason, self.settle_s) for q, _ in sent]
        except VendorError as exc:
            # Answered (an error status, a refusal) or never sent: nothing was added.
            # Anything else (a cancel) leaves the marker: the next try treats it as a crash.
            await self.ledger.mark_many([(q.key, _settled(p, NO)) for q, p in sent])
            if isinstance(exc, SinkConfigError | BatchTooLarge | SinkHeld):
                raise  # the sink's or the request's problem: the push loop decides
            if isinstance(exc, PermanentError) and len(sent) > 1:
                # The file refused for one record it does not name: the push loop splits
                # it until that lead stands alone, and the others go.
                raise BatchRejected(exc.reason, vendor=VENDOR, code=exc.code) from exc
            if isinstance(exc, PermanentError):
                return [PushResult.rejected(q.key, str(exc)) for q, _ in sent]
            retry_after = exc.retry_after if isinstance(exc, RetryableError) else None
            return [PushResult.retry(q.key, str(exc), retry_after) for q, _ in sent]
        await self.ledger.mark_many([(q.key, _settled(p, YES if ok else NO)) for q, p in sent])
        return ok

    async def _upload(self, calls: list[Call], timezone: str | None) -> bool:
        fileb64, count = upload_file(self.cfg.campaign, calls)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        filename = f"syncd-{self.name}-{stamp}-{uuid.uuid4().hex[:8]}.txt"
        form = {
            "filename": filename,
            "fileb64": fileb64,
            "campaign": self.cfg.campaign,
            "cant": str(count),
            "username": self.cfg.uploader,
        }
        if timezone:
            form["timezone"] = timezone
        resource = _upload_resource(timezone)
        reply = await self.client.command(resource, form, repeat_unanswered=False)
        self.log.info(
            "sink.push.uploaded", filename=filename, rows=count, accepted=reply.ok, zone=timezone
        )
        return reply.ok


def _upload_resource(timezone: str | None) -> str:
    return "Dialers/uploadbasewithtimezone" if timezone else "Dialers/uploadbase"


async def guard(q: QueuedLead, step: Awaitable[PushResult | None]) -> PushResult | None:
    """Return the step's result, or the lead's retry/refusal when the step failed."""
    try:
        return await step
    except (SinkConfigError, SinkHeld):
        raise
    except PermanentError as exc:
        return PushResult.rejected(q.key, str(exc))
    except RetryableError as exc:
        return PushResult.retry(q.key, str(exc), exc.retry_after)
    except VendorError as exc:
        return PushResult.retry(q.key, str(exc))


def _sending(q: QueuedLead, call: Call, mode: str, now: float | None = None) -> Placed:
    """Return the record written before an add call: maybe held, the add may land late."""
    now = time.time() if now is None else now
    return Placed(
        call.destination,
        list(call.alternatives),
        mode,
        call.calldate,
        held=MAYBE,
        late=ADD,
        at=now,
        until=None,
        hash=q.hash,
        added_at=now,
    )


def _unconfirmed(own: Placed, q: QueuedLead) -> bool:
    """Return True when ``own`` is an add of this very version that may have been dialled."""
    return (
        own.hash is not None
        and own.hash == q.hash
        and own.added_at is not None
        and own.mode != DNC
        and (own.held != NO or own.check_at is not None)
    )


def _settled(placed: Placed, held: str) -> Placed:
    return replace(placed, held=held, late=None, at=None, until=None)


def _numbers(q: QueuedLead, call: Call) -> list[str]:
    return [call.destination, *call.alternatives, q.lead.phone, *q.lead.alt_phones]
