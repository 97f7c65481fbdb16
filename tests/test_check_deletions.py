"""`syncd check` warns when a route carries the CRM's deletions to a dialer that cannot
remove a lead ("no silent failure": such a lead stays dialable there).

A warning, like the calling-window ones: the configuration is valid and the check
exits 0; the line names the source, the route, the sink, what becomes of a deleted
lead and what to do.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_cli
from tests.support.reliability import (
    ameyo_sink,
    jodo_sink,
    route,
    ucontact_sink,
    vendor_env,
    write_config,
)

DELETED = {"deleted": "is_deleted"}  # the CRM's soft-delete column


def warnings(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("WARNING: ")]


def test_check_warns_of_deletions_routed_to_a_dialer_that_cannot_remove_a_lead(
    tmp_path: Path,
) -> None:
    sinks = [
        ameyo_sink("http://ameyo.test"),
        jodo_sink("http://jodo.test"),  # no dispositions.on_delete: no way to close one
        ucontact_sink("http://ucontact.test"),  # removes a lead
    ]
    routes = [route(s["name"], map=dict(DELETED)) for s in sinks]
    config = write_config(tmp_path, sinks, routes=routes)

    done = run_cli("check", "-c", str(config), env=vendor_env())

    assert done.returncode == 0, done.stdout + done.stderr  # a warning, not an invalid file
    found = [w for w in warnings(done.stdout) if "deletions" in w]
    [ameyo] = [w for w in found if w.startswith("WARNING: sink ameyo (ameyo): ")]
    assert "route crm->ameyo carries the CRM's deletions (source crm, column 'is_deleted')" in ameyo
    assert "Ameyo's Customer Manager API cannot remove a customer" in ameyo  # what happens
    assert "stays dialable" in ameyo and "by hand" in ameyo  # and what to do
    [jodo] = [w for w in found if w.startswith("WARNING: sink jodo (jodo): ")]
    assert "route crm->jodo carries the CRM's deletions (source crm, column 'is_deleted')" in jodo
    assert "Jodo cannot remove a lead; it stays in the dialer" in jodo
    assert "on_delete" in jodo
    assert not [w for w in found if "ucontact" in w], found  # it removes them


def test_check_says_nothing_of_deletions_a_dialer_can_carry_out(tmp_path: Path) -> None:
    on_delete = {"login": "supervisor", "on_delete": {"dispomasterid": 1, "disporeasonid": 2}}
    sinks = [jodo_sink("http://jodo.test", dispositions=on_delete), ameyo_sink("http://a.test")]
    routes = [route("jodo", map=dict(DELETED)), route("ameyo")]  # Ameyo's route: no deletions
    config = write_config(tmp_path, sinks, routes=routes)

    done = run_cli("check", "-c", str(config), env=vendor_env())

    assert done.returncode == 0, done.stdout + done.stderr
    assert not [w for w in warnings(done.stdout) if "deletions" in w], done.stdout
