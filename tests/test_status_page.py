"""The daemon's status page, as a person reads it in a real (headless) browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncd import __version__
from syncd.core.keys import key_refusal
from syncd.core.reasons import reason_code
from syncd.daemon.probes import SESSION_S, StatusAccess, is_loopback
from syncd.daemon.status_page import PageData, mask, render
from syncd.simulators.jodo.api import JodoSimulator, create_app
from syncd.simulators.server import running
from tests.conftest import cli_env, daemon_config, drop_csv, run_cli
from tests.support.reliability import export, wait_until

BAD_ROWS = [
    "X1,Asha,Rao,98200 1234,asha@example.in,",  # one digit short: refused, quoting the number
    "X2,Ravi,Iyer,not a phone,ravi@example.in,",
    # a CRM keyed by mobile number (Jodo's updateparam = mobilenumber): the key is one too
    "+919833344455,Mina,Das,12345,mina@example.in,",
]


def browser() -> str:
    """Return the path of Chromium; fail under CI (skip elsewhere) when it is missing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium")
        pytest.skip("chromium is not installed")
    return found


def rendered(url: str, *, screenshot: Path | None = None) -> str:
    """Return the page's text as the browser rendered it (scripts and styles applied)."""
    args = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    if screenshot is not None:
        subprocess.run(
            [*args, f"--screenshot={screenshot}", "--window-size=1200,1400", url],
            capture_output=True,
            timeout=60,
        )
    dom = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = re.sub(r"<(script|style)[^>]*>.*?</\1>", "", dom.stdout, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))


def csp_refusals(url: str) -> list[str]:
    """Return what the browser's console says the page's Content-Security-Policy blocked
    (a style, an image, a script): the page must need nothing it forbids."""
    args = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    run = subprocess.run(
        [*args, "--enable-logging=stderr", "--v=0", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return [line for line in run.stderr.splitlines() if "Content Security Policy" in line]


def test_the_page_shows_a_stopped_dialer_the_leads_and_masked_rejects(
    tmp_path: Path, start_daemon: Any
) -> None:
    # A dialer that refuses syncd's apikey: the sink stops with the vendor's reason.
    sim = JodoSimulator(apikey="another_org")
    with running(create_app(sim)) as url:
        daemon = start_daemon(daemon_config(tmp_path, url))
        daemon.wait_for("daemon.ready")
        drop_csv(tmp_path / "inbox", "leads.csv", export(4, extra_rows=BAD_ROWS))
        daemon.wait_for("sink.stopped", timeout=30)
        page_url = f"{daemon.base_url}/status"
        # The page's store part is a snapshot of a few seconds: wait for one taken after
        # the pull (its refused rows), not only for the sink's state, which is live.
        assert wait_until(
            lambda: "stopped" in (page := httpx.get(page_url).text) and "leads.csv" in page,
            timeout=60,
            every=0.2,
        ), daemon.events[-15:]
        text = rendered(page_url, screenshot=tmp_path / "status.png")
        assert daemon.stop() == 0

    assert "syncd status" in text and f"syncd {__version__}" in text
    assert "Leads are not flowing" in text
    # the reason as syncd says it (a code), not the dialer's words (issue 29)
    stopped = (
        r"jodo stopped stopped since 2026-\S+ \S+ "
        r"\(the dialer refused the sink's settings or credentials, code 1107\)"
    )
    assert re.search(stopped, text), text
    assert "API key not found" not in text
    assert "fix the sink's configuration; its leads stay queued" in text
    assert re.search(r"jodo( \d+){7} ", text)  # the row of counts by state
    # four waiting, none sent: pending, or in flight while a re-check's push is refused
    assert re.search(r"jodo (4 0|0 4) 0 0 0 0 0", text), text
    assert "Delivered today: 0" in text
    assert "outcome poll of jodo" in text
    assert "leads.csv" in text and "X1" in text  # the refused rows, with file and key
    assert "98200" not in text and "1234" not in text  # no phone number on the page
    assert "98333" not in text  # not even as a lead's key
    assert "Asha" not in text and "Rao" not in text
    assert (tmp_path / "status.png").stat().st_size > 10_000


def test_beyond_loopback_the_page_needs_the_bearer_token(tmp_path: Path, start_daemon: Any) -> None:
    sim = JodoSimulator()
    with running(create_app(sim)) as url:
        config = daemon_config(tmp_path, url)
        text = config.read_text(encoding="utf-8").replace(
            'listen = "127.0.0.1:0"',
            'listen = "0.0.0.0:0"\nstatus_token = "env:STATUS_TOKEN"',
        )
        config.write_text(text, encoding="utf-8")
        env = cli_env(STATUS_TOKEN="s3cret-page-token")
        checked = run_cli("check", "-c", str(config), env=env)
        daemon = start_daemon(config, env=env)
        daemon.wait_for("daemon.ready")
        base = daemon.base_url
        anonymous = httpx.get(f"{base}/status")
        wrong = httpx.get(f"{base}/status", headers={"Authorization": "Bearer nope"})
        right = httpx.get(f"{base}/status", headers={"Authorization": "Bearer s3cret-page-token"})
        readyz = httpx.get(f"{base}/readyz")
        assert daemon.stop() == 0
    assert checked.returncode == 0, checked.stderr
    assert "status page: /status on 0.0.0.0:0 needs Authorization: Bearer" in checked.stdout
    assert anonymous.status_code == 401 and "Bearer" in anonymous.text
    assert wrong.status_code == 401
    assert right.status_code == 200 and "syncd status" in right.text
    assert "s3cret-page-token" not in right.text
    assert readyz.status_code == 200  # probes stay open for the orchestrator


def test_a_browser_signs_in_with_the_token_once_and_reads_the_page_by_its_cookie(
    tmp_path: Path, start_daemon: Any
) -> None:
    token = "s3cret-page-token"
    sim = JodoSimulator()
    with running(create_app(sim)) as url:
        config = daemon_config(tmp_path, url)
        text = config.read_text(encoding="utf-8").replace(
            'listen = "127.0.0.1:0"',
            'listen = "0.0.0.0:0"\nstatus_token = "env:STATUS_TOKEN"',
        )
        config.write_text(text, encoding="utf-8")
        daemon = start_daemon(config, env=cli_env(STATUS_TOKEN=token))
        daemon.wait_for("daemon.ready")
        # A plain browser: no header to set, only forms, redirects and cookies.
        with httpx.Client(base_url=daemon.base_url) as browser:
            refused = browser.get("/status")
            form = browser.get("/login")
            wrong = browser.post("/login", data={"token": "nope-" + token})
            signed = browser.post("/login", data={"token": token})
            page = browser.get("/status")  # the cookie the sign-in set
        # behind a TLS proxy on this host (uvicorn trusts X-Forwarded-Proto from loopback)
        proxied = httpx.post(
            f"{daemon.base_url}/login",
            data={"token": token},
            headers={"X-Forwarded-Proto": "https"},
        )
        forged = httpx.get(f"{daemon.base_url}/status", cookies={"syncd_status": "1." + "0" * 64})
        assert daemon.stop() == 0

    assert refused.status_code == 401 and 'href="login"' in refused.text  # the way in
    assert form.status_code == 200 and '<form method="post" action="login">' in form.text
    assert 'type="password" name="token"' in form.text and "<script" not in form.text
    # a wrong token: 401, nothing said about why, no cookie
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    assert "nope" not in wrong.text and token not in wrong.text
    # the right one: a cookie JavaScript cannot read, sent back to this site only
    assert signed.status_code == 303 and signed.headers["location"] == "status"
    cookie = signed.headers["set-cookie"]
    assert cookie.startswith("syncd_status=") and token not in cookie
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert "secure" not in cookie.lower()  # over plain http a Secure cookie is never sent back
    assert "secure" in proxied.headers["set-cookie"].lower()
    assert page.status_code == 200 and "syncd status" in page.text
    assert forged.status_code == 401
    # never in a URL or a log line
    assert all(token not in str(r.url) for r in (refused, form, wrong, signed, page))
    assert token not in json.dumps(daemon.events)
    assert any(e["event"] == "status.login.refused" for e in daemon.events)


def test_check_warns_when_the_page_is_exposed_without_a_token(tmp_path: Path) -> None:
    config = daemon_config(tmp_path, "http://127.0.0.1:9")
    text = config.read_text(encoding="utf-8").replace(
        'listen = "127.0.0.1:0"', 'listen = "0.0.0.0:9310"'
    )
    config.write_text(text, encoding="utf-8")
    checked = run_cli("check", "-c", str(config))
    assert checked.returncode == 0, checked.stderr
    assert "status page: refused on 0.0.0.0:9310: set health.status_token" in checked.stdout


ACCESS_CASES = [
    # (loopback, token, Authorization header, allowed)
    (True, None, "", True),
    (False, None, "", False),
    (False, None, "Bearer anything", False),
    (False, "t0ken", "", False),
    (False, "t0ken", "Bearer t0ken", True),
    (False, "t0ken", "Bearer t0ken2", False),
    (False, "t0ken", "Basic t0ken", False),
]


@pytest.mark.parametrize(("loopback", "token", "header", "allowed"), ACCESS_CASES)
def test_who_may_read_the_page(
    loopback: bool, token: str | None, header: str, allowed: bool
) -> None:
    assert (StatusAccess(loopback, token).refusal(header) is None) is allowed


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("10.0.0.5", False), ("::", False), ("crm.example", False)],
)  # fmt: skip
def test_which_addresses_are_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


MASK_CASES = [
    ("invalid phone '98200 1234' in column 'phone'", "invalid phone '…' in column '…'"),
    ("blocked (dnc_list:reg): +919820012345 is on the do-not-call list",
     "blocked (dnc_list:reg): •••45 is on the do-not-call list"),
    ("call (555) 123-4567 later", "call •••67 later"),
    ("line 12 of 3400 rows", "line 12 of 3400 rows"),  # counts are not phone numbers
    ("since 2026-12-01 16:24:33Z", "since 2026-12-01 16:24:33Z"),  # nor are times
]  # fmt: skip


@pytest.mark.parametrize(("text", "shown"), MASK_CASES)
def test_phone_numbers_and_quoted_cells_are_masked(text: str, shown: str) -> None:
    assert mask(text) == shown


def test_a_sign_in_cookie_opens_the_page_until_it_ends_and_only_for_its_token() -> None:
    access = StatusAccess(False, "t0ken")
    cookie = access.session(now=1_000.0)
    assert "t0ken" not in cookie
    assert access.refusal("", cookie, now=1_000.0 + SESSION_S - 1) is None
    assert access.refusal("", cookie, now=1_000.0 + SESSION_S) is not None  # ended
    assert StatusAccess(False, "an0ther").refusal("", cookie, now=1_000.0) is not None
    until, _, mac = cookie.partition(".")
    longer = f"{int(until) + 3600}.{mac}"  # its end moved: the MAC no longer fits
    for forged in (longer, "", ".", "²." + mac, until, f"{until}.{mac[:-1]}"):
        assert access.refusal("", forged, now=1_000.0) is not None, forged


def test_a_refused_key_of_any_length_is_shown_short() -> None:
    huge = "K" * 300_000  # a POSTed key far past the 128 a lead may have: refused, kept
    page = render(
        PageData(
            status={"rejects": [{"at": 0, "source": "form", "key": huge, "reason": "too long"}]},
            version="test",
            delivered_today=0,
        )
    )

    assert len(page) < 50_000 and "K" * 65 not in page and "K" * 64 + "…" in page


@pytest.mark.parametrize("raw", ["=KEYF(1)", "\t=KEYF(2)", "KEYF\x07(3)"])
def test_a_key_refused_for_what_it_holds_is_not_shown_on_the_page(raw: str) -> None:
    reason = key_refusal(raw, "id")
    rejects = [{"at": 0, "source": "crm", "origin": "a.csv", "line": 2, "key": raw.strip(),
                "reason": reason}]  # fmt: skip
    page = render(PageData(status={"rejects": rejects}, version="test", delivered_today=0))

    assert "KEYF" not in page and "a.csv" in page
    assert reason_code(str(reason)) in page  # the code, the file and the line say which row


def test_a_row_refused_for_each_of_its_dialers_is_listed_once_per_dialer_naming_it() -> None:
    rejects = [
        {"at": 0, "source": "crm", "sink": sink, "origin": "a.csv", "line": 7, "key": "L7",
         "reason": "phone: not a number"}
        for sink in ("jodo", "ameyo")
    ]  # fmt: skip
    page = render(PageData(status={"rejects": rejects}, version="test", delivered_today=0))

    assert "<th>dialer</th>" in page
    assert re.search(r"<td>crm</td>\s*<td>jodo</td>", page), page
    assert re.search(r"<td>crm</td>\s*<td>ameyo</td>", page), page
