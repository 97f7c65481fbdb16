"""Recording links for outcomes: customer_multiple_recordings / customer_recording.

A recording often does not exist yet when the call's outcome first shows up
(per-call status 67, "Data not found"). Such outcomes wait in a ledger (one kv
entry, one entry per lead: a newer call replaces an older one) and are asked for
again on later polls until ``recordings.max_age_s``. The link found goes into the
lead's stored outcome with its call id, so an unchanged row seen again keeps it (and
it goes with the lead).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from syncd.core.model import Outcome
from syncd.core.reasons import DIALER_FAILED, log_reason
from syncd.errors import RetryableError, SinkConfigError, VendorError
from syncd.sinks.features import OptionalFeatures
from syncd.sinks.jodo.client import (
    RECORDING_NOT_READY,
    SUCCESS,
    JodoClient,
    items_of,
    status_of,
)
from syncd.sinks.jodo.config import RecordingSettings
from syncd.sinks.jodo.outcome_rows import outcome_from_json, outcome_to_json
from syncd.state.base import SinkStore


def _path(item: dict[str, Any]) -> str:
    return str(item.get("recordingfilepath") or "").strip()


RECORDINGS = "recordings (customer_multiple_recordings)"
# An awaited recording is asked for at once, again after ``recordings.ask_again_s``, then
# at gaps as long as its age, up to RECORDING_ASK_MAX_S: one the dialer never publishes
# costs a request every few minutes, not one at every poll.
RECORDING_ASK_MAX_S = 300.0
RECORDINGS_OFF = (
    "outcomes are written back without recording links; set recordings.enabled = false "
    "to silence this, or ask Jodo to open the recording methods to this API key"
)


class RecordingClient:
    """Asks Jodo for recording links of calls by systemcallid."""

    def __init__(self, client: JodoClient, batch_size: int) -> None:
        self.client = client
        self.batch_size = batch_size

    async def links(self, call_ids: Sequence[str]) -> dict[str, str]:
        """Return call_id -> link for the calls whose recording exists; the rest are absent."""
        found: dict[str, str] = {}
        for start in range(0, len(call_ids), self.batch_size):
            part = list(call_ids[start : start + self.batch_size])
            if len(part) == 1:
                found.update(await self._one(part[0]))
            else:
                found.update(await self._many(part))
        return found

    async def _one(self, call_id: str) -> dict[str, str]:
        try:
            reply = await self.client.call(
                "customer_recording", {"systemcallid": call_id}, accept=(RECORDING_NOT_READY,)
            )
        except (SinkConfigError, RetryableError):
            raise
        except VendorError:
            return {}  # a refusal for this one call: asked again later, up to max_age_s
        if reply.code in SUCCESS and _path(reply.body):
            return {call_id: _path(reply.body)}
        return {}

    async def _many(self, call_ids: list[str]) -> dict[str, str]:
        reply = await self.client.call(
            "customer_multiple_recordings", {"systemcallids": call_ids}, per_item=True
        )
        if reply.code is not None:
            return {}  # a success without items
        body = reply.body
        found: dict[str, str] = {}
        for item in items_of(body):
            code, _ = status_of(item)
            call_id = str(item.get("systemcallid", "")).strip()
            if call_id in call_ids and code in SUCCESS and _path(item):
                found[call_id] = _path(item)
        return found


class Recordings:
    """Attaches recording links to outcomes, keeping the ones still awaited across polls."""

    def __init__(
        self,
        client: JodoClient,
        store: SinkStore,
        sink: str,
        settings: RecordingSettings,
        log: Any,
        features: OptionalFeatures | None = None,
    ) -> None:
        self.api = RecordingClient(client, settings.batch_size)
        self.features = features or OptionalFeatures(log)
        self.store = store
        self.sink = sink
        self.settings = settings
        self.log = log
        self.scope = f"jodo:{sink}"

    async def attach(
        self, outcomes: list[Outcome], now: datetime, *, ask: bool = True
    ) -> list[Outcome]:
        """Return ``outcomes`` with known links set, plus older outcomes whose link came now.

        Without ``ask`` the dialer is not asked: new calls join those awaited, for the
        next attach that asks (one ask a poll, however many reads the poll made).
        """
        if self.features.is_off(RECORDINGS):
            return outcomes
        pending = await self._load()
        fresh: dict[str, Outcome] = {}
        known = await self.store.recording_links(self.sink, [o.key for o in outcomes if o.call_id])
        for o in outcomes:
            if not o.call_id:
                pending.pop(o.key, None)  # a link belongs to the lead's latest call only
                continue
            call_id, link = known.get(o.key, ("", ""))
            if call_id == o.call_id:
                o.recording_url = link
                pending.pop(o.key, None)
                continue
            fresh[o.key] = o
            previous = pending.get(o.key)
            since = (
                previous["since"]
                if previous and previous.get("call_id") == o.call_id
                else now.timestamp()
            )
            entry = {"call_id": o.call_id, "since": since, "outcome": outcome_to_json(o)}
            if previous and previous.get("call_id") == o.call_id and "ask_at" in previous:
                entry["ask_at"] = previous["ask_at"]
            pending[o.key] = entry
        self._expire(pending, now)
        result = list(outcomes)
        due = [p for p in pending.values() if p.get("ask_at", 0.0) <= now.timestamp()]
        if due and ask:
            for entry in due:
                entry["ask_at"] = self._ask_again_at(entry["since"], now.timestamp())
            try:
                links = await self.api.links(sorted({p["call_id"] for p in due}))
            except SinkConfigError as exc:
                if not self.features.turn_off(RECORDINGS, exc, action=RECORDINGS_OFF):
                    raise
                links = {}
            except VendorError as exc:
                log_reason(
                    self.log,
                    "warning",
                    "sink.recordings.failed",
                    str(exc),
                    DIALER_FAILED,
                    waiting=len(pending),
                )
                links = {}
            for key, entry in list(pending.items()):
                url = links.get(entry["call_id"])
                if not url:
                    continue
                outcome = fresh.get(key)
                if outcome is None:  # seen on an earlier poll; report it again with its link
                    outcome = outcome_from_json(self.sink, entry["outcome"], now)
                    result.append(outcome)
                outcome.recording_url = url  # kept with the outcome: known next time
                del pending[key]
            if links:
                self.log.info("sink.recordings.found", found=len(links), waiting=len(pending))
        await self._save(pending)
        return result

    def _ask_again_at(self, since: float, now: float) -> float:
        """Return when to ask again for a recording awaited since ``since``, asked ``now``."""
        age = max(now - since, 0.0)
        return now + min(max(age, self.settings.ask_again_s), RECORDING_ASK_MAX_S)

    def _expire(self, pending: dict[str, dict[str, Any]], now: datetime) -> None:
        oldest_allowed = now.timestamp() - self.settings.max_age_s
        for key, entry in list(pending.items()):
            if entry["since"] < oldest_allowed:
                del pending[key]
                self.log.info("sink.recording.gave_up", key=key, call_id=entry["call_id"])
        overflow = len(pending) - self.settings.max_pending
        if overflow > 0:
            for key, entry in sorted(pending.items(), key=lambda kv: kv[1]["since"])[:overflow]:
                del pending[key]
                self.log.warning(
                    "sink.recording.dropped",
                    key=key,
                    call_id=entry["call_id"],
                    reason="more recordings awaited than recordings.max_pending",
                )

    async def _load(self) -> dict[str, dict[str, Any]]:
        text = await self.store.kv_get(self.scope, "recordings.pending")
        return dict(json.loads(text)) if text else {}

    async def _save(self, pending: dict[str, dict[str, Any]]) -> None:
        await self.store.kv_set(
            self.scope, "recordings.pending", json.dumps(pending, default=str) if pending else None
        )
