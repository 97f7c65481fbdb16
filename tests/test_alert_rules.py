"""The shipped alert rules, unit-tested by promtool the way Prometheus evaluates them.

The cases are in tests/prometheus/syncd-alerts.test.yml: syncd down (and its own series
gone), a network outage against a refused configuration through half-open probes,
outcomes that do not come back, a failing writeback, a stale do-not-call list, and the
rest. Here: promtool runs them, and every alert has a case where it fires and one where
it stays quiet.
"""

from __future__ import annotations

import re
import subprocess

from tests.conftest import ROOT, promtool

RULES = ROOT / "deploy" / "prometheus" / "syncd-alerts.yml"
CASES = ROOT / "tests" / "prometheus" / "syncd-alerts.test.yml"


def test_the_alert_rules_pass_their_promtool_unit_tests() -> None:
    out = subprocess.run(
        [promtool(), "test", "rules", str(CASES)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr


def expectations() -> dict[str, set[bool]]:
    """Return, per alert name the cases check, whether they expect it firing (True) or not."""
    found: dict[str, set[bool]] = {}
    lines = CASES.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        named = re.match(r"\s+alertname: (\w+)\s*$", line)
        if named is None:
            continue
        expected = re.match(r"\s+exp_alerts:\s*(.*)$", lines[i + 1])
        assert expected is not None, f"line {i + 2}: exp_alerts must follow alertname"
        firing = expected.group(1).split("#")[0].strip() != "[]"
        found.setdefault(named.group(1), set()).add(firing)
    return found


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_does_not() -> None:
    alerts = set(re.findall(r"^\s+- alert: (\w+)\s*$", RULES.read_text(encoding="utf-8"), re.M))
    checked = expectations()
    assert len(alerts) >= 13
    assert alerts == set(checked), (alerts ^ set(checked), "an alert without a test, or a typo")
    for alert in sorted(alerts):
        assert checked[alert] == {True, False}, f"{alert}: {checked[alert]}"
