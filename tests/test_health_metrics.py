"""The metrics module on its own: counters from push results and pulls, gauges per sink."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from syncd.config import load_settings
from syncd.core.model import ResultKind
from syncd.core.summary import RunSummary
from syncd.daemon.metrics import Metrics
from syncd.errors import ConfigError
from syncd.state.base import Completion
from tests.conftest import jodo_config


def values(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_push_results_count_each_outcome_once() -> None:
    m = Metrics()
    m.push_results(
        "jodo",
        [
            Completion("a", "h", ResultKind.DELIVERED),
            Completion("b", "h", ResultKind.REJECTED, "bad number"),
            Completion("c", "h", ResultKind.RETRY, "timeout", next_at=1.0),
            Completion("d", "h", ResultKind.RETRY, "timeout", final=True),
        ],
    )
    m.push_latency("jodo", 0.2)

    v, sink = values(m), frozenset({("sink", "jodo")})
    assert v[("syncd_sink_leads_pushed_total", sink)] == 4
    assert v[("syncd_sink_leads_delivered_total", sink)] == 1
    assert v[("syncd_sink_leads_rejected_total", sink)] == 1
    assert v[("syncd_sink_push_retries_total", sink)] == 1
    assert v[("syncd_sink_leads_failed_total", sink)] == 1
    assert v[("syncd_sink_push_latency_seconds_count", sink)] == 1
    assert m.delivered_total == 1


def test_a_pull_is_counted_as_it_grows_and_names_the_sinks_that_gained_leads() -> None:
    m = Metrics()
    summary = RunSummary("run")
    meter = m.pull_meter("crm", summary)
    route = summary.route("crm->jodo")
    other = summary.route("crm->ameyo")

    route.read, route.new, route.rejected = 100, 90, 10
    other.read, other.unchanged = 100, 100
    assert meter.update() == {"jodo"}
    route.read, route.changed = 150, 50
    other.read, other.unchanged = 150, 150
    assert meter.update() == {"jodo"}
    assert meter.update() == set()

    v = values(m)
    assert v[("syncd_source_rows_read_total", frozenset({("source", "crm")}))] == 150
    jodo = frozenset({("source", "crm"), ("sink", "jodo")})
    assert v[("syncd_source_rows_enqueued_total", jodo)] == 140
    assert v[("syncd_source_rows_rejected_total", jodo)] == 10


def test_session_logins_are_read_from_the_sink_and_survive_a_rebuilt_sink() -> None:
    m = Metrics()
    first = SimpleNamespace(logins=3)
    m.observe_logins("ameyo", first)
    first.logins = 5
    m.observe_logins("ameyo", first)
    m.observe_logins("ameyo", SimpleNamespace(logins=1))  # re-opened: a new object from 0
    m.observe_logins("jodo", SimpleNamespace())  # no sessions: nothing to count

    v = values(m)
    assert v[("syncd_sink_session_logins_total", frozenset({("sink", "ameyo")}))] == 6


def test_every_configured_series_exists_at_zero_and_a_removed_sink_leaves_no_gauges() -> None:
    m = Metrics()
    m.declare(["crm"], [("crm", "jodo")], ["jodo", "old"], ["crm-files"])
    m.pending.labels("old").set(7)
    m.throttled.labels("old").set(30)
    m.declare(["crm"], [("crm", "jodo")], ["jodo"], ["crm-files"])

    v = values(m)
    assert v[("syncd_sink_leads_delivered_total", frozenset({("sink", "jodo")}))] == 0
    assert (
        v[("syncd_writeback_outcomes_written_total", frozenset({("writeback", "crm-files")}))] == 0
    )
    assert ("syncd_outbox_pending", frozenset({("sink", "old")})) not in v
    assert ("syncd_sink_throttled_seconds", frozenset({("sink", "old")})) not in v


def test_a_bad_cron_schedule_is_a_configuration_error(tmp_path: Path) -> None:
    config = jodo_config(tmp_path, "http://127.0.0.1:1")
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace(
            'kind = "csv_drop"\n', 'kind = "csv_drop"\nschedule = { cron = "61 * * * *" }\n'
        ),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={"TEST_JODO_APIKEY": "k"})
    assert any(
        p.startswith("sources[0].schedule.cron: not a cron expression")
        for p in caught.value.problems
    )


def test_session_logins_are_also_read_from_the_sink_health_details() -> None:
    from syncd.sinks.base import SinkHealth

    m = Metrics()
    health = SinkHealth(session="valid", details={"logins": 2})
    m.observe_logins("ucontact", SimpleNamespace(health=lambda: health))

    v = values(m)
    assert v[("syncd_sink_session_logins_total", frozenset({("sink", "ucontact")}))] == 2


def test_a_sink_removed_by_a_reload_takes_its_queue_gauges_along() -> None:
    from syncd.sinks.base import QueueFigures, SinkHealth

    m = Metrics()
    m.declare([], [], ["uc"], [])
    health = SinkHealth(
        queues=[QueueFigures("Ventas->", logged_in=2, available=1, callers_waiting=0)]
    )
    m.observe_health("uc", SimpleNamespace(health=lambda: health))
    queue = frozenset({("sink", "uc"), ("queue", "Ventas->")})
    assert values(m)[("syncd_sink_agents_logged_in", queue)] == 2
    m.declare([], [], [], [])  # the reload dropped the sink
    assert ("syncd_sink_agents_logged_in", queue) not in values(m)


def test_the_sink_state_is_one_series_per_cause_with_exactly_one_set() -> None:
    m = Metrics()
    m.declare(["crm"], [("crm", "jodo")], ["jodo", "old"], [])
    m.observe_state("jodo", "unreachable")
    m.observe_state("old", "held")

    v = values(m)
    jodo = {
        state: v[("syncd_sink_state", frozenset({("sink", "jodo"), ("state", state)}))]
        for state in ("working", "held", "unreachable", "config_refused", "internal_error")
    }
    assert jodo == {
        "working": 0,
        "held": 0,
        "unreachable": 1,
        "config_refused": 0,
        "internal_error": 0,
    }
    assert v[("syncd_sink_up", frozenset({("sink", "jodo")}))] == 0
    assert v[("syncd_sink_up", frozenset({("sink", "old")}))] == 1  # held: works, waits

    m.observe_state("jodo", "config_refused")
    v = values(m)
    assert v[("syncd_sink_state", frozenset({("sink", "jodo"), ("state", "unreachable")}))] == 0
    assert v[("syncd_sink_state", frozenset({("sink", "jodo"), ("state", "config_refused")}))] == 1

    m.declare(["crm"], [("crm", "jodo")], ["jodo"], [])  # a reload removed "old"
    assert not [k for k in values(m) if k[0] == "syncd_sink_state" and ("sink", "old") in k[1]]
