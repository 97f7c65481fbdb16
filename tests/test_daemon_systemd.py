"""The shipped systemd unit passes `systemd-analyze verify` and keeps its hardening."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

UNIT = ROOT / "systemd" / "syncd.service"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (apt-get install systemd)")
    # verify checks that ExecStart exists: point it at this checkout's syncd.
    syncd = Path(sys.executable).parent / "syncd"
    text = UNIT.read_text(encoding="utf-8").replace("/opt/syncd/bin/syncd", str(syncd))
    unit = tmp_path / "syncd.service"
    unit.write_text(text, encoding="utf-8")

    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )

    # Unknown or unparsable settings are only warnings ("…, ignoring"): treat them as failures.
    problems = [line for line in result.stderr.splitlines() if "syncd.service" in line]
    assert result.returncode == 0, result.stderr
    assert problems == []


def test_the_unit_is_a_hardened_notify_service_with_a_watchdog() -> None:
    s = unit_settings()
    assert s["Type"] == ["notify"]
    assert s["WatchdogSec"] and s["Restart"] == ["on-failure"]
    assert s["User"] == ["syncd"] and s["StateDirectory"] == ["syncd"]
    assert s["ProtectSystem"] == ["strict"] and s["NoNewPrivileges"] == ["yes"]
    assert s["PrivateTmp"] == ["yes"]
    assert s["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert any(c.startswith("jodo_apikey:") for c in s["LoadCredential"])
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
