"""Secrets never show: not in a log line, an error, `status`/`explain` output or the store.

A full sync to all three dialers runs with known secret values (and debug logging),
then with wrong ones (so the error paths run too); every byte syncd wrote or
printed is searched for them.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.simulators.ameyo.api import AmeyoSimulator
from syncd.simulators.ameyo.api import create_app as ameyo_app
from syncd.simulators.jodo.api import JodoSimulator
from syncd.simulators.jodo.api import create_app as jodo_app
from syncd.simulators.server import running
from syncd.simulators.ucontact.api import UContactSimulator
from syncd.simulators.ucontact.api import create_app as ucontact_app
from tests.conftest import drop_csv, run_cli
from tests.support.reliability import (
    ameyo_sink,
    export,
    jodo_sink,
    ucontact_sink,
    vendor_env,
    write_config,
)

JODO_KEY = "jodoKEY-4f9a2c71e3"
AMEYO_PASSWORD = "ameyoPW-8d1e55b0c2"
UCONTACT_PASSWORD = "ucPW-31c7a9e04d"
SECRETS = (JODO_KEY, AMEYO_PASSWORD, UCONTACT_PASSWORD)


def forms(secret: str) -> list[bytes]:
    """Return the ways a secret could be written: plain, URL-encoded, base64."""
    raw = secret.encode()
    return [raw, urllib.parse.quote_plus(secret).encode(), base64.b64encode(raw)]


def leaks(data: bytes | str, secrets: tuple[str, ...] = SECRETS) -> list[str]:
    blob = data.encode("utf-8", "replace") if isinstance(data, str) else data
    return [s for s in secrets if any(form in blob for form in forms(s))]


def everything_written(folder: Path) -> Iterator[tuple[Path, bytes]]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != "syncd.toml":
            yield path, path.read_bytes()


@pytest.fixture
def dialers() -> Iterator[tuple[JodoSimulator, AmeyoSimulator, UContactSimulator, list[str]]]:
    jodo = JodoSimulator(apikey=JODO_KEY)
    ameyo = AmeyoSimulator(users={"syncd": AMEYO_PASSWORD}, dialing=False)
    ucontact = UContactSimulator(users={"api": UCONTACT_PASSWORD}, dial_delay_s=0, cdr_delay_s=0)
    with (
        running(jodo_app(jodo)) as j,
        running(ameyo_app(ameyo)) as a,
        running(ucontact_app(ucontact)) as u,
    ):
        yield jodo, ameyo, ucontact, [j, a, u]


def config_for(tmp_path: Path, urls: list[str]) -> Path:
    j, a, u = urls
    return write_config(
        tmp_path,
        [jodo_sink(j), ameyo_sink(a), ucontact_sink(u)],
        writebacks=[
            {"name": "crm-files", "kind": "csv", "outbox": str(tmp_path / "out"), "rotate_s": 0}
        ],
        log_level="debug",
    )


def test_a_full_sync_and_its_reports_never_show_a_secret(
    dialers: tuple[JodoSimulator, AmeyoSimulator, UContactSimulator, list[str]], tmp_path: Path
) -> None:
    jodo, ameyo, ucontact, urls = dialers
    config = config_for(tmp_path, urls)
    drop_csv(tmp_path / "inbox", "a.csv", export(30, extra_rows=["B1,Bad,Phone,123,,"]))
    env = vendor_env(
        TEST_JODO_APIKEY=JODO_KEY,
        TEST_AMEYO_PASSWORD=AMEYO_PASSWORD,
        TEST_UCONTACT_PASSWORD=UCONTACT_PASSWORD,
    )

    outputs = [run_cli("run", "--once", "-c", str(config), env=env)]
    assert outputs[0].returncode == 0, outputs[0].stderr[-3000:]
    assert len(jodo.records()) == 30 and len(ameyo.customer_list()) == 30  # it really ran
    assert ucontact.requests["Dialers/uploadbase"] >= 1
    for args in (
        ("status",),
        ("status", "--json"),
        ("explain", "L1"),
        ("explain", "B1"),
        ("check",),
        ("run", "--once", "--dry-run"),
        ("retry", "--sink", "jodo"),
    ):
        outputs.append(run_cli(*args, "-c", str(config), env=env))

    for result in outputs:
        assert not leaks(result.stdout), (result.args, "stdout")
        assert not leaks(result.stderr), (result.args, "stderr")
    assert '"level": "debug"' in outputs[0].stderr  # the most talkative log was searched
    for path, data in everything_written(tmp_path):
        assert not leaks(data), path


def test_refused_credentials_are_reported_without_the_secret_sent(
    dialers: tuple[JodoSimulator, AmeyoSimulator, UContactSimulator, list[str]], tmp_path: Path
) -> None:
    _, _, _, urls = dialers
    config = config_for(tmp_path, urls)
    drop_csv(tmp_path / "inbox", "a.csv", export(5))
    # syncd sends these; the dialers expect other ones and refuse.
    wrong = {
        "TEST_JODO_APIKEY": JODO_KEY[::-1],
        "TEST_AMEYO_PASSWORD": AMEYO_PASSWORD[::-1],
        "TEST_UCONTACT_PASSWORD": UCONTACT_PASSWORD[::-1],
    }
    sent = (*wrong.values(), *SECRETS)

    result = run_cli("run", "--once", "-c", str(config), env=vendor_env(**wrong))
    status = run_cli("status", "-c", str(config), env=vendor_env(**wrong))

    assert result.returncode == 1  # leads stay queued: the sinks are stopped
    assert "sink.stopped" in result.stderr or "sink.open.failed" in result.stderr
    for text in (result.stdout, result.stderr, status.stdout, status.stderr):
        assert not leaks(text, sent)
    for path, data in everything_written(tmp_path):
        assert not leaks(data, sent), path


def test_turning_tls_verification_off_needs_a_setting_and_is_logged_at_start(
    tmp_path: Path,
) -> None:
    from syncd.sinks.jodo.config import JodoSinkConfig

    assert JodoSinkConfig.model_fields["verify_tls"].default is True
    jodo = JodoSimulator()
    with running(jodo_app(jodo)) as url:
        config = write_config(tmp_path, [jodo_sink(url, verify_tls=False)])
        drop_csv(tmp_path / "inbox", "a.csv", export(2))
        result = run_cli("run", "--once", "-c", str(config), env=vendor_env())

    assert result.returncode == 0
    warning = next(line for line in result.stderr.splitlines() if "sink.tls.unverified" in line)
    assert '"level": "warning"' in warning and '"sink": "jodo"' in warning


def test_tls_verification_stays_on_by_default(tmp_path: Path) -> None:
    jodo = JodoSimulator()
    with running(jodo_app(jodo)) as url:
        config = write_config(tmp_path, [jodo_sink(url)])
        drop_csv(tmp_path / "inbox", "a.csv", export(2))
        result = run_cli("run", "--once", "-c", str(config), env=vendor_env())

    assert result.returncode == 0
    assert "sink.tls.unverified" not in result.stderr


def test_secrets_a_dialer_echoes_in_its_error_text_are_never_kept_or_shown(
    tmp_path: Path,
) -> None:
    # The dialers quote the whole request in their error answers, credentials included.
    jodo = JodoSimulator(apikey="someone-else", echo_errors=True)
    ameyo = AmeyoSimulator(users={"syncd": "another-pw"}, dialing=False, echo_errors=True)
    ucontact = UContactSimulator(users={"api": UCONTACT_PASSWORD}, dial_delay_s=0, cdr_delay_s=0)
    with (
        running(jodo_app(jodo)) as j,
        running(ameyo_app(ameyo)) as a,
        running(ucontact_app(ucontact)) as u,
    ):
        config = config_for(tmp_path, [j, a, u])
        drop_csv(tmp_path / "inbox", "a.csv", export(5))
        env = vendor_env(
            TEST_JODO_APIKEY=JODO_KEY,
            TEST_AMEYO_PASSWORD=AMEYO_PASSWORD,
            TEST_UCONTACT_PASSWORD=UCONTACT_PASSWORD,
        )
        outputs = [run_cli("run", "--once", "-c", str(config), env=env)]
        outputs += [
            run_cli(*args, "-c", str(config), env=env)
            for args in (("status",), ("status", "--json"), ("explain", "L1"))
        ]

    assert outputs[0].returncode == 1  # two sinks refused us
    said = outputs[0].stdout + outputs[0].stderr
    assert "request was:" in said  # the vendor text itself is kept (scrubbed), not dropped
    for result in outputs:
        assert not leaks(result.stdout), (result.args, "stdout")
        assert not leaks(result.stderr), (result.args, "stderr")
    for path, data in everything_written(tmp_path):
        assert not leaks(data), path
