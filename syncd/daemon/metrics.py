"""Prometheus metrics of the daemon, in a registry of its own (not the process-global one).

Counters grow from what the engine reports (rows read, leads pushed, outcomes
received); gauges (outbox depth, oldest pending lead, sink up, writeback lag) are
read from the store and the sinks when ``/metrics`` is scraped.
"""

from __future__ import annotations

import contextlib
import platform
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from syncd import __version__
from syncd.core.model import ResultKind
from syncd.core.summary import RunSummary
from syncd.net.retry import RETRIES
from syncd.run import numbers_left
from syncd.run.dnc_lists import ListState
from syncd.run.sinks import SinkCause
from syncd.run.status import alerting
from syncd.state.base import POLLED_SCOPE, Completion, StateStore

# Every value of ``syncd_sink_state``'s ``state`` label: one series per state, exactly
# one of them 1, the way Prometheus exports an enum (alerts match on the label).
SINK_STATES = tuple(cause.value for cause in SinkCause)
# States in which a sink delivers nothing (``syncd_sink_up`` 0).
SINK_DOWN = frozenset({SinkCause.UNREACHABLE, SinkCause.CONFIG_REFUSED, SinkCause.INTERNAL_ERROR})

_GATE_DECISION = re.compile(
    r"(held|blocked|allowed)(?: \(([a-z][a-z0-9_]{0,30}(?::[A-Za-z0-9_.\-]{1,40})?)\))?"
)

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# Speed to lead: sub-second for a POST woken push, minutes to hours for a scheduled
# pull or a lead held for its calling window.
LEAD_LATENCY_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    *(300, 900, 3600, 14400, 86400),
)


class Metrics:
    """Every metric syncd exports; also the push observer (``push_latency``, ``push_results``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rows_read = Counter(
            "syncd_source_rows_read", "Rows read from a source", ["source"], registry=r
        )
        self.rows_rejected = Counter(
            "syncd_source_rows_rejected",
            "Rows refused on their way to a sink (unmappable, bad phone, duplicate key)",
            ["source", "sink"],
            registry=r,
        )
        self.rows_enqueued = Counter(
            "syncd_source_rows_enqueued",
            "New, changed or deleted leads put in a sink's outbox",
            ["source", "sink"],
            registry=r,
        )
        self.superseded = Counter(
            "syncd_source_versions_superseded",
            "Versions put in a sink's outbox that left it unsent: a newer version of the "
            "lead replaced them, or the CRM took the lead back (enqueued = delivered + "
            "rejected + failed + superseded + pending + in flight)",
            ["source", "sink"],
            registry=r,
        )
        self.webhook_requests = Counter(
            "syncd_webhook_requests",
            "POSTs a webhook source answered, by HTTP status (202, 400, 401, 413, 429…)",
            ["source", "status"],
            registry=r,
        )
        self.webhook_commits = Counter(
            "syncd_webhook_commits",
            "Commits of a webhook source's POSTs (those arriving during one go in the next)",
            ["source"],
            registry=r,
        )
        self.files_failed = Counter(
            "syncd_source_files_failed",
            "Source files (origins) that could not be read at all",
            ["source"],
            registry=r,
        )
        self.pushed = Counter(
            "syncd_sink_leads_pushed", "Leads sent to a dialer (each attempt)", ["sink"], registry=r
        )
        self.delivered = Counter(
            "syncd_sink_leads_delivered", "Leads the dialer accepted", ["sink"], registry=r
        )
        self.rejected = Counter(
            "syncd_sink_leads_rejected",
            "Leads the dialer refused, with a reason (permanent)",
            ["sink"],
            registry=r,
        )
        self.failed = Counter(
            "syncd_sink_leads_failed",
            "Leads given up on after their last attempt (dead letter)",
            ["sink"],
            registry=r,
        )
        self.retries = Counter(
            "syncd_sink_push_retries", "Leads scheduled for another attempt", ["sink"], registry=r
        )
        self.latency = Histogram(
            "syncd_sink_push_latency_seconds",
            "Time one push call (one batch) took",
            ["sink"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.lead_latency_s = Histogram(
            "syncd_lead_latency_seconds",
            "Time from a lead's receipt (a POST committed, a pull's chunk) to the dialer"
            " accepting it",
            ["source", "sink"],
            buckets=LEAD_LATENCY_BUCKETS,
            registry=r,
        )
        self.logins = Counter(
            "syncd_sink_session_logins", "Vendor session logins", ["sink"], registry=r
        )
        self.outcomes = Counter(
            "syncd_sink_outcomes_received",
            "New or changed call outcomes read from a dialer",
            ["sink"],
            registry=r,
        )
        self.pending = Gauge(
            "syncd_outbox_pending", "Leads waiting in a sink's outbox", ["sink"], registry=r
        )
        self.oldest_age = Gauge(
            "syncd_outbox_oldest_pending_age_seconds",
            "Age of the oldest lead waiting in a sink's outbox (0 when empty)",
            ["sink"],
            registry=r,
        )
        self.sink_up = Gauge(
            "syncd_sink_up",
            "1 when the sink delivers, 0 when it cannot (syncd_sink_state says why)",
            ["sink"],
            registry=r,
        )
        self.sink_state = Gauge(
            "syncd_sink_state",
            "1 for the sink's current state, 0 for the others: working, held (the dialer"
            " refuses records for now), throttled (the dialer asked every request to wait:"
            " a 429 or 503 with Retry-After; syncd_sink_throttled_seconds says how long),"
            " unreachable (cannot connect, not answering, breaker open or probing),"
            " config_refused (fix the configuration), internal_error (a bug; see the log)",
            ["sink", "state"],
            registry=r,
        )
        self.throttled = Gauge(
            "syncd_sink_throttled_seconds",
            "Seconds left of the wait the dialer asked for (Retry-After on a 429 or 503):"
            " every request of the sink waits until then; 0 when none",
            ["sink"],
            registry=r,
        )
        self.unanswered = Gauge(
            "syncd_sink_unanswered_requests",
            "Requests the dialer left unanswered (timeouts, refused or reset connections)"
            " with no answer to any request since, while that says it is not answering"
            " (syncd_sink_state reads unreachable); 0 while it answers",
            ["sink"],
            registry=r,
        )
        self.breaker = Gauge(
            "syncd_sink_breaker_state",
            "The sink's circuit breaker: 0 closed, 1 half-open (probing), 2 open (paused)",
            ["sink"],
            registry=r,
        )
        self.withdrawals_failing = Gauge(
            "syncd_withdrawals_failing",
            "Removals (CRM deletes, do-not-call, consent) the dialer keeps refusing past"
            " max_attempts: their numbers stay dialable; syncd status names the leads",
            ["sink"],
            registry=r,
        )
        self.numbers_left = Gauge(
            "syncd_numbers_left_dialable",
            "Leads the dialer still holds under a former number too (a second record made"
            " when the number changed, which the sink cannot close): an alert until"
            " removed by hand and acknowledged (`syncd ack`); syncd status names the leads",
            ["sink"],
            registry=r,
        )
        self.sink_warnings = Gauge(
            "syncd_sink_warnings",
            "Things to fix although leads flow (e.g. the dialer's clock is off); see /readyz",
            ["sink"],
            registry=r,
        )
        self.clock_skew = Gauge(
            "syncd_sink_clock_skew_seconds",
            "The dialer's clock minus ours, from the times its answers carry (0 until known)",
            ["sink"],
            registry=r,
        )
        self.gate = Counter(
            "syncd_gate_decisions",
            "Leads the safety gate held (outside the calling window) or blocked, by reason code",
            ["sink", "decision", "code"],
            registry=r,
        )
        self.written = Counter(
            "syncd_writeback_outcomes_written",
            "Outcomes written back to the CRM",
            ["writeback"],
            registry=r,
        )
        self.writeback_lag = Gauge(
            "syncd_writeback_lag_seconds",
            "Seconds since the writeback last completed a pass: no outcome waits longer",
            ["writeback"],
            registry=r,
        )
        self.job_failures = Counter(
            "syncd_job_failures", "Scheduled jobs that ended with an error", ["job"], registry=r
        )
        self.poll_failures = Counter(
            "syncd_sink_poll_failures",
            "Outcome polls that failed (outcomes wait at the dialer until a poll succeeds)",
            ["sink"],
            registry=r,
        )
        self.agents_logged_in = Gauge(
            "syncd_sink_agents_logged_in", "Agents logged in to a dialer queue", ["sink", "queue"],
            registry=r,
        )  # fmt: skip
        self.agents_available = Gauge(
            "syncd_sink_agents_available",
            "Agents of a dialer queue free to take a call",
            ["sink", "queue"],
            registry=r,
        )
        self.callers_waiting = Gauge(
            "syncd_sink_callers_waiting", "Callers waiting in a dialer queue", ["sink", "queue"],
            registry=r,
        )  # fmt: skip
        self.poll_lag = Gauge(
            "syncd_sink_outcome_poll_lag_seconds",
            "Seconds since the sink's outcome poll last succeeded: no outcome is older at the "
            "dialer unread",
            ["sink"],
            registry=r,
        )
        self.dnc_age = Gauge(
            "syncd_dnc_list_age_seconds",
            "Age of a do-not-call list's newest file (its date: in its name, else its mtime)",
            ["list"],
            registry=r,
        )
        self.dnc_stale = Gauge(
            "syncd_dnc_list_stale",
            "1 while a do-not-call list is older than its max_age_days (or never loaded)",
            ["list"],
            registry=r,
        )
        self.source_listening = Gauge(
            "syncd_source_listening",
            "1 while a SQL source's LISTEN connection to its CRM is up, 0 while it is lost"
            " (its pulls wait for the schedule)",
            ["source"],
            registry=r,
        )
        self.store_bytes = Gauge(
            "syncd_state_store_bytes", "Disk space the state store takes", registry=r
        )
        self.replicas = Gauge(
            "syncd_replicas_live",
            "Replicas seen on the shared store in the last minute (0: a store of one host)",
            registry=r,
        )
        self.leading = Gauge(
            "syncd_leader",
            "1 while this replica leads the job (a pull, poll, writeback), 0 otherwise",
            ["job"],
            registry=r,
        )
        self.lease_left = Gauge(
            "syncd_leader_lease_seconds_left",
            "Seconds left on the job's leader lease (whichever replica holds it)",
            ["job"],
            registry=r,
        )
        self.build = Gauge(
            "syncd_build_info",
            "Always 1; the labels say which syncd and Python are running",
            ["version", "python"],
            registry=r,
        )
        self.build.labels(__version__, platform.python_version()).set(1)
        r.register(_HttpRetries())
        self._sinks: set[str] = set()
        self._jobs_seen: set[str] = set()
        self.delivered_total = 0  # all sinks, for the daemon's "delivered today"
        self._writeback_ok: dict[str, float] = {}
        self._polled_ok: dict[str, float] = {}
        self._polled_here: set[str] = set()  # sinks with a good poll since this process began
        self._queues_seen: set[tuple[str, str]] = set()  # (sink, queue) series set so far
        self._logins_seen: dict[str, tuple[int, int]] = {}  # sink -> (id(sink object), value)
        self._listening_seen: set[str] = set()  # sources with a syncd_source_listening series

    # -- configuration ---------------------------------------------------------

    def declare(
        self,
        sources: Iterable[str],
        routes: Iterable[tuple[str, str]],
        sinks: Iterable[str],
        writebacks: Iterable[str],
    ) -> None:
        """Create every labelled series at zero so dashboards see them before any traffic."""
        now = time.time()
        sinks = set(sinks)
        for gone in self._sinks - sinks:  # a reload removed it: its gauges must not linger
            for gauge in (
                self.pending,
                self.oldest_age,
                self.sink_up,
                self.breaker,
                self.unanswered,
                self.throttled,
                self.sink_warnings,
                self.withdrawals_failing,
                self.numbers_left,
                self.clock_skew,
                self.poll_lag,
            ):
                with contextlib.suppress(KeyError):
                    gauge.remove(gone)
            for state in SINK_STATES:
                with contextlib.suppress(KeyError):
                    self.sink_state.remove(gone, state)
        self._sinks = sinks
        for source in sources:
            self.rows_read.labels(source)
            self.files_failed.labels(source)
        for source, sink in routes:
            self.rows_rejected.labels(source, sink)
            self.rows_enqueued.labels(source, sink)
            self.superseded.labels(source, sink)
            self.lead_latency_s.labels(source, sink)
        for sink in sinks:
            for metric in (self.pushed, self.delivered, self.rejected, self.failed):
                metric.labels(sink)
            for metric in (self.retries, self.logins, self.outcomes):
                metric.labels(sink)
            self.latency.labels(sink)
            self._polled_ok.setdefault(sink, now)
        for gone in set(self._polled_ok) - sinks:
            del self._polled_ok[gone]
        for sink, queue in {pair for pair in self._queues_seen if pair[0] not in sinks}:
            for gauge in (self.agents_logged_in, self.agents_available, self.callers_waiting):
                with contextlib.suppress(KeyError):
                    gauge.remove(sink, queue)
            self._queues_seen.discard((sink, queue))
        names = set(writebacks)
        for gone in set(self._writeback_ok) - names:
            del self._writeback_ok[gone]
            with contextlib.suppress(KeyError):
                self.writeback_lag.remove(gone)
        for name in names:
            self.written.labels(name)
            self._writeback_ok.setdefault(name, now)

    # -- push observer (syncd.run.push.Pusher calls these) --------------------------

    def push_latency(self, sink: str, seconds: float) -> None:
        self.latency.labels(sink).observe(seconds)

    def lead_latency(self, source: str, sink: str, seconds: float) -> None:
        self.lead_latency_s.labels(source, sink).observe(seconds)

    def push_results(self, sink: str, completions: Sequence[Completion]) -> None:
        self.pushed.labels(sink).inc(len(completions))
        for c in completions:
            if c.kind is ResultKind.DELIVERED:
                self.delivered.labels(sink).inc()
                self.delivered_total += 1
            elif c.kind is ResultKind.REJECTED:
                self.rejected.labels(sink).inc()
            elif c.final:
                self.failed.labels(sink).inc()
            else:
                self.retries.labels(sink).inc()

    # -- other stages -------------------------------------------------------------

    def pull_meter(self, source: str, summary: RunSummary) -> PullMeter:
        """Return a meter that turns a pull's growing summary into counter increments."""
        return PullMeter(self, source, summary)

    def webhook_answered(self, source: str, status: int) -> None:
        """Count one POST to a webhook source by the status it was answered."""
        self.webhook_requests.labels(source, str(status)).inc()

    def webhook_committed(self, source: str) -> None:
        """Count one commit of a webhook source's POSTs (one or several)."""
        self.webhook_commits.labels(source).inc()

    def outcomes_received(self, sink: str, count: int) -> None:
        """Count a successful outcome poll's outcomes (it succeeded even with none)."""
        self._polled_ok[sink] = time.time()
        self._polled_here.add(sink)
        if count > 0:
            self.outcomes.labels(sink).inc(count)

    def writeback_pass(self, name: str, written: int, *, complete: bool) -> None:
        """Count a writeback pass; ``complete``: nothing was left pending by an error."""
        if written > 0:
            self.written.labels(name).inc(written)
        if complete:
            self._writeback_ok[name] = time.time()

    def gate_decisions(self, sink: str, reasons: Iterable[str]) -> None:
        """Count the push-time decisions of the gate (``held (code): …``/``blocked (…)``)."""
        for reason in reasons:
            # label values from a closed alphabet only: a reason that is not the gate's
            # template (it could quote anything) counts under ``other``/``gate``
            found = _GATE_DECISION.match(reason)
            decision, code = found.groups() if found else ("other", None)
            self.gate.labels(sink, decision, code or "gate").inc()

    def gate_blocked(self, sink: str, code: str, n: int) -> None:
        """Count leads blocked when they were read (do-not-call, consent, junk numbers)."""
        self.gate.labels(sink, "blocked", code).inc(n)

    def polled_at(self) -> dict[str, float]:
        """Return when each sink's outcome poll last succeeded (or the daemon started)."""
        return dict(self._polled_ok)

    async def _recall_polls(self, store: StateStore, now: float) -> None:
        """Date a sink's last good poll from the store until one succeeds in this process:
        a restarted daemon (a crash loop) must not count the lag from its own start."""
        for name in set(self._polled_ok) - self._polled_here:
            stored = await store.kv_get(POLLED_SCOPE, name)
            if stored is None:
                continue  # never polled in this store: from this start, as before
            with contextlib.suppress(ValueError):
                # stamped on the store's clock (a shared store's is the database's)
                at = now - (store.clock.time() - float(stored))
                self._polled_ok[name] = min(self._polled_ok[name], at)

    def written_at(self) -> dict[str, float]:
        """Return when each writeback last completed a pass (or the daemon started)."""
        return dict(self._writeback_ok)

    def poll_failed(self, sink: str) -> None:
        self.poll_failures.labels(sink).inc()

    def job_failed(self, job: str) -> None:
        self.job_failures.labels(job).inc()

    # -- scrape time --------------------------------------------------------------

    async def refresh(
        self, store: StateStore, sinks: Mapping[str, Any], states: Mapping[str, str]
    ) -> None:
        """Read the gauges' current values from the store and the sinks.

        ``states``: each sink's cause (``SINK_STATES``), as the engine's sinks know it.
        """
        await self.refresh_store(store, sinks)
        self.observe_live(sinks, states)

    async def refresh_store(self, store: StateStore, sinks: Mapping[str, Any]) -> None:
        """Read the gauges the store holds (the daemon does it once per snapshot)."""
        oldest = await store.oldest_pending()
        for name in sinks:
            self.pending.labels(name).set(await store.pending_count(name))
            since = oldest.get(name)
            # stamped on the store's clock (a shared store's is the database's)
            age = store.clock.time() - since if since else 0.0
            self.oldest_age.labels(name).set(max(age, 0.0))
        await self.observe_withdrawals(store, sinks)
        for name, n in (await numbers_left.counts(store, sinks)).items():
            self.numbers_left.labels(name).set(n)
        self.store_bytes.set(await store.size_bytes())
        await self.observe_replicas(store)
        await self._recall_polls(store, time.time())

    def observe_live(self, sinks: Mapping[str, Any], states: Mapping[str, str]) -> None:
        """Set the gauges the daemon knows in memory: states, breakers, sessions, lags."""
        now = time.time()
        for name, sink in sinks.items():
            self.observe_state(name, states.get(name, "working"))
            self.breaker.labels(name).set(sink.guard.breaker.state_value)
            self.throttled.labels(name).set(round(sink.guard.limits.limiter.held_for(), 3))
            quiet = sink.guard.limits.answers.silence()
            self.unanswered.labels(name).set(quiet.unanswered if quiet is not None else 0)
            self.observe_health(name, sink)
            self.observe_logins(name, sink)
        for name, at in self._writeback_ok.items():
            self.writeback_lag.labels(name).set(max(now - at, 0.0))
        for name, at in self._polled_ok.items():
            self.poll_lag.labels(name).set(max(now - at, 0.0))

    def observe_state(self, name: str, state: str) -> None:
        """Set ``syncd_sink_state`` (1 for ``state``, 0 for the others) and ``syncd_sink_up``."""
        for each in SINK_STATES:
            self.sink_state.labels(name, each).set(1 if each == state else 0)
        self.sink_up.labels(name).set(0 if state in SINK_DOWN else 1)

    async def observe_withdrawals(self, store: StateStore, sinks: Mapping[str, Any]) -> None:
        """Count per sink the withdrawals still queued past the sink's max_attempts."""
        limits = {name: int(sink.config.max_attempts) for name, sink in sinks.items()}
        if not limits:
            return
        found = await store.failing_withdrawals(min(limits.values()), 10_000)
        for name, limit in limits.items():
            count = sum(1 for w in found if w["sink"] == name and alerting(w, limit))
            self.withdrawals_failing.labels(name).set(count)

    def observe_lists(self, states: Iterable[ListState]) -> None:
        """Set each do-not-call list's age and staleness, as the engine last checked them."""
        for state in states:
            if state.age_s is not None:
                self.dnc_age.labels(state.name).set(state.age_s)
            self.dnc_stale.labels(state.name).set(1 if state.stale else 0)

    def observe_listening(self, listening: Mapping[str, bool]) -> None:
        """Set whether each source with ``listen`` listens now; drop a source a reload removed."""
        for gone in self._listening_seen - set(listening):
            with contextlib.suppress(KeyError):
                self.source_listening.remove(gone)
        for source, up in listening.items():
            self.source_listening.labels(source).set(1 if up else 0)
        self._listening_seen = set(listening)

    async def observe_replicas(self, store: StateStore) -> None:
        """Set the live replicas, the jobs this one leads and every leader's lease left."""
        replicas = await store.replicas()
        self.replicas.set(len(replicas))
        for replica in replicas:
            for job in replica["leads"]:
                self._jobs_seen.add(job["job"])
                self.lease_left.labels(job["job"]).set(job["lease_left_s"])
        mine = {j["job"] for r in replicas if r["this"] for j in r["leads"]}
        for job in self._jobs_seen:
            self.leading.labels(job).set(1 if job in mine else 0)

    def observe_health(self, name: str, sink: Any) -> None:
        """Set the warning count and the clock skew a sink's health reports."""
        try:
            health = sink.health()
        except Exception:  # shown by /readyz; a scrape must not fail on it
            return
        features = getattr(sink, "features", None)  # helper calls turned off (403/404)
        off = len(features.warnings()) if features is not None else 0
        guard = getattr(sink, "guard", None)
        held = 1 if guard is not None and guard.held.reason is not None else 0  # a paused campaign
        # the dialer's Retry-After hold, a /readyz warning while it lasts
        throttled = 1 if guard is not None and guard.limits.limiter.held_for() > 0 else 0
        self.sink_warnings.labels(name).set(len(health.warnings) + off + held + throttled)
        for q in health.queues:
            self._queues_seen.add((name, q.queue))
            self.agents_logged_in.labels(name, q.queue).set(q.logged_in)
            self.agents_available.labels(name, q.queue).set(q.available)
            self.callers_waiting.labels(name, q.queue).set(q.callers_waiting)
        skew = health.details.get("clock_skew_s")
        self.clock_skew.labels(name).set(float(skew) if isinstance(skew, int | float) else 0.0)

    def observe_logins(self, name: str, sink: Any) -> None:
        """Count the logins ``sink.logins`` gained since last seen (a new sink starts at 0)."""
        value = getattr(sink, "logins", None)
        if value is None:  # most sinks report it among their health details
            try:
                value = sink.health().details.get("logins")
            except Exception:  # a sink's broken health() must not break the scrape
                value = None
        if not isinstance(value, int) or isinstance(value, bool):
            return
        previous_id, previous = self._logins_seen.get(name, (id(sink), 0))
        if previous_id != id(sink):
            previous = 0
        if value > previous:
            self.logins.labels(name).inc(value - previous)
        self._logins_seen[name] = (id(sink), value)

    def exposition(self) -> bytes:
        """Return the registry in Prometheus text format."""
        return generate_latest(self.registry)


class PullMeter:
    """Adds what a pull's summary gained since the last update to the source counters."""

    def __init__(self, metrics: Metrics, source: str, summary: RunSummary) -> None:
        self.metrics = metrics
        self.source = source
        self.summary = summary
        self._seen: dict[str, tuple[int, int, int, int]] = {}
        self._read = 0
        self._files_failed = 0

    def update(self) -> set[str]:
        """Return the sinks whose outbox grew since the last update."""
        m = self.metrics
        read = 0
        grew: set[str] = set()
        for route, counts in self.summary.routes.items():
            source, _, sink = route.partition("->")
            if source != self.source:
                continue
            # Every route of a source sees every row: the source read the largest count.
            read = max(read, counts.read)
            before = self._seen.get(route, (0, 0, 0, 0))
            now = (counts.read, counts.rejected, counts.enqueued, counts.superseded)
            if now[1] > before[1]:
                m.rows_rejected.labels(source, sink).inc(now[1] - before[1])
            if now[2] > before[2]:
                m.rows_enqueued.labels(source, sink).inc(now[2] - before[2])
                grew.add(sink)
            if now[3] > before[3]:
                m.superseded.labels(source, sink).inc(now[3] - before[3])
            self._seen[route] = now
        if read > self._read:
            m.rows_read.labels(self.source).inc(read - self._read)
            self._read = read
        failed = len(self.summary.files_failed)
        if failed > self._files_failed:
            m.files_failed.labels(self.source).inc(failed - self._files_failed)
            self._files_failed = failed
        return grew


class _HttpRetries(Collector):
    """``syncd_http_retries_total``: retries inside one call, by vendor and request."""

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "syncd_http_retries",
            "Requests retried inside one call (reset, timeout, 5xx, 429), by vendor and request",
            labels=["vendor", "what"],
        )
        for (vendor, what), n in sorted(RETRIES.items()):
            family.add_metric([vendor, what], n)
        yield family
