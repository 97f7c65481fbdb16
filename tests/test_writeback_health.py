"""A writeback that never succeeds is a warning, not "ready" (issue 29, point 6)."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from syncd.run.status import writeback_alert
from syncd.simulators.jodo.api import DialPlan, JodoSimulator, create_app
from syncd.simulators.server import running
from tests.conftest import cli_env, daemon_config, drop_csv, run_cli
from tests.support.reliability import wait_until
from tests.test_daemon import leads_csv


def redirecting_crm() -> Starlette:
    """A CRM webhook that moved: every request is answered with a redirect."""

    async def moved(request: Request) -> Response:
        return RedirectResponse("http://127.0.0.1:9/new/hook", status_code=307)

    return Starlette(routes=[Route("/crm/hook", moved, methods=["POST"])])


def writing_back_to(tmp_path: Path, dialer: str, crm: str) -> tuple[Path, dict[str, str]]:
    """Return a daemon's config (Jodo at ``dialer``, outcomes polled every 0.5 s) with a
    webhook writeback ``crm-hook`` to ``crm``/crm/hook, and the environment it needs."""
    config = daemon_config(tmp_path, dialer)
    text = config.read_text(encoding="utf-8").replace(
        'kind = "jodo"\n', 'kind = "jodo"\npoll = { interval_s = 0.5 }\n', 1
    )
    text += (
        '\n[[writebacks]]\nname = "crm-hook"\nkind = "webhook"\n'
        f'url = "{crm}/crm/hook"\nsecret = "env:CRM_HOOK_SECRET"\n'
        "schedule = { interval_s = 0.5 }\n"
    )
    config.write_text(text, encoding="utf-8")
    return config, cli_env(CRM_HOOK_SECRET="hook-secret")


def test_a_webhook_stuck_on_a_redirect_is_a_readyz_warning_a_page_line_and_a_status_line(
    tmp_path: Path, start_daemon: Any
) -> None:
    sim = JodoSimulator(dial=DialPlan(interval_s=0, recording_delay_s=None), agents={"ann": 1})
    with running(create_app(sim)) as url, running(redirecting_crm()) as crm:
        config, env = writing_back_to(tmp_path, url, crm)
        daemon = start_daemon(config, env=env)
        daemon.wait_for("daemon.ready")
        drop_csv(tmp_path / "inbox", "leads.csv", leads_csv(0, 3))
        daemon.wait_for("writeback.failing", writeback="crm-hook", timeout=60)

        def warned() -> bool:
            body = httpx.get(f"{daemon.base_url}/readyz").json()
            return any("crm-hook" in w for w in body["warnings"])

        assert wait_until(warned, timeout=30), httpx.get(f"{daemon.base_url}/readyz").text
        readyz = httpx.get(f"{daemon.base_url}/readyz")
        page = httpx.get(f"{daemon.base_url}/status").text
        status = run_cli("status", "-c", str(config), env=env)
        assert daemon.stop() == 0
    assert readyz.status_code == 200  # leads flow; the outcomes wait
    (said,) = [w for w in readyz.json()["warnings"] if "crm-hook" in w]
    assert "nothing written since syncd started" in said
    assert "127.0.0.1:9" not in said  # the CRM's reply stays off the open probe
    assert "nothing written since syncd started" in page
    assert "since its last full pass" not in page  # it never had one
    assert status.returncode == 0, status.stderr
    out = " ".join(status.stdout.split())
    assert "warning: writeback crm-hook: nothing written since syncd started" in out
    assert "redirects (HTTP 307)" in out  # the reason, on the host


def refusing_crm() -> Starlette:
    """A CRM webhook that answers 400 to every record: each is refused on its own."""

    async def refuse(request: Request) -> Response:
        return Response('{"error": "unknown field outcome"}', status_code=400)

    return Starlette(routes=[Route("/crm/hook", refuse, methods=["POST"])])


def test_a_webhook_refusing_every_record_is_a_readyz_warning_not_healthy(
    tmp_path: Path, start_daemon: Any
) -> None:
    # Each refusal is marked on its record, so the pass itself "succeeds": before, the
    # page said "10 s since its last full pass" and /readyz nothing, with none written.
    sim = JodoSimulator(dial=DialPlan(interval_s=0, recording_delay_s=None), agents={"ann": 1})
    with running(create_app(sim)) as url, running(refusing_crm()) as crm:
        config, env = writing_back_to(tmp_path, url, crm)
        daemon = start_daemon(config, env=env)
        daemon.wait_for("daemon.ready")
        drop_csv(tmp_path / "inbox", "leads.csv", leads_csv(0, 3))
        daemon.wait_for("writeback.pass", writeback="crm-hook", timeout=60)

        def warned() -> bool:
            body = httpx.get(f"{daemon.base_url}/readyz").json()
            return any("crm-hook" in w for w in body["warnings"])

        assert wait_until(warned, timeout=30), httpx.get(f"{daemon.base_url}/readyz").text
        readyz = httpx.get(f"{daemon.base_url}/readyz").json()
        page = httpx.get(f"{daemon.base_url}/status").text
        assert daemon.stop() == 0
    (said,) = [w for w in readyz["warnings"] if "crm-hook" in w]
    assert "refused every outcome" in said and "nothing written since syncd started" in said
    assert "refused every outcome" in page
    assert "unknown field" not in said + page  # the CRM's words stay off the open probes


def test_when_a_failing_writeback_is_an_alert() -> None:
    start, now = 1_000.0, 10_000.0
    failing = {"error": "HTTP 500", "started_at": start, "failing_since": now - 60}
    assert writeback_alert("w", {"error": None, "ok_at": now}, now, 600) is None
    # never written since the start (passes with nothing to write do not count): at once
    assert writeback_alert("w", {**failing, "ok_at": now - 61}, now, 600) is not None
    assert writeback_alert("w", {**failing, "wrote_at": start - 5}, now, 600) is not None
    # written since the start, failing a minute: not yet; past the threshold: yes
    assert writeback_alert("w", {**failing, "wrote_at": now - 61}, now, 600) is None
    # every record refused, none written since the start: at once; some written: no
    refusing = {"error": None, "started_at": start, "written": 0, "refused": 12}
    alert = str(writeback_alert("w", refusing, now, 600))
    # where the reasons are: syncd status lists a writeback's refusals, syncd rejects not
    assert "refused every outcome" in alert and "syncd status has the reasons" in alert
    assert "syncd rejects" not in alert
    assert writeback_alert("w", {**refusing, "wrote_at": now - 30}, now, 600) is None
    assert writeback_alert("w", {**refusing, "written": 3, "wrote_at": now}, now, 600) is None
    long = {**failing, "wrote_at": now - 700, "failing_since": now - 650}
    assert "failing for 10.8 min" in str(writeback_alert("w", long, now, 600))
    # past a short threshold, under a minute: in seconds (it said "failing for 0 min")
    brief = {**failing, "wrote_at": now - 700, "failing_since": now - 29}
    assert "failing for 29 s" in str(writeback_alert("w", brief, now, 20))


def last_passes(config: Path, env: dict[str, str]) -> dict[str, Any]:
    """Return each writeback's last pass as `syncd status --json` shows it."""
    status = run_cli("status", "--json", "-c", str(config), env=env)
    assert status.returncode == 0, status.stderr[-1000:]
    passes: dict[str, Any] = json.loads(status.stdout)["writebacks"]
    return passes


def test_a_reload_keeps_the_time_syncd_started_and_a_writeback_it_adds_counts_from_it(
    tmp_path: Path, start_daemon: Any
) -> None:
    sim = JodoSimulator(dial=DialPlan(interval_s=0, recording_delay_s=None), agents={"ann": 1})
    with running(create_app(sim)) as url, running(redirecting_crm()) as crm:
        config, env = writing_back_to(tmp_path, url, crm)
        daemon = start_daemon(config, env=env)
        daemon.wait_for("daemon.ready")
        drop_csv(tmp_path / "inbox", "leads.csv", leads_csv(0, 3))
        daemon.wait_for("writeback.failing", writeback="crm-hook", timeout=60)
        before = last_passes(config, env)["crm-hook"]
        page_before = httpx.get(f"{daemon.base_url}/status").text
        # the reload adds a second writeback to the same CRM
        text = config.read_text(encoding="utf-8")
        added = text[text.index("[[writebacks]]") :].replace('"crm-hook"', '"crm-hook-2"', 1)
        config.write_text(text + "\n" + added, encoding="utf-8")

        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for("config.reloaded", timeout=60)
        seen = last_passes(config, env)["crm-hook"]["at"]

        def passed_again() -> bool:  # a pass of the reloaded configuration wrote its record
            now = last_passes(config, env)
            return now["crm-hook"].get("at") != seen and bool(now["crm-hook-2"].get("error"))

        assert wait_until(passed_again, timeout=60), last_passes(config, env)
        after = last_passes(config, env)
        page_after = httpx.get(f"{daemon.base_url}/status").text
        assert daemon.stop() == 0
    assert after["crm-hook"]["error"] and after["crm-hook"]["started_at"] == before["started_at"]
    # a writeback the reload added has been there since the reload, not since the start
    assert after["crm-hook-2"]["started_at"] > before["at"]
    started = re.search(r"nothing written since syncd started \(([^)]+)\)", page_before)
    assert started is not None, page_before
    assert f"nothing written since syncd started ({started.group(1)})" in page_after
