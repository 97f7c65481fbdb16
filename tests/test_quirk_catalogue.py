"""The quirk catalogue: every vendor x every quirk of real servers, one invariant over all.

Each row starts the vendor's simulator with one quirk, drops a CRM export (a few
hundred leads, non-ASCII names), runs `syncd run --once`, drops a second export
deleting some leads, runs again (and once more after the quirk's window, on the
dialer's clock), then asks the dialer what it holds: every live lead held exactly
once, none closed that the CRM still has, no number held twice, names intact, and
an exit code and `syncd status` that say what is left.

Adding a quirk is one row. A row marked xfail names what syncd does today (issue
24); remove the mark when the fix merges (strict: an unexpected pass fails).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.quirks import VENDORS, play, verdict

pytestmark = pytest.mark.slow


def row(
    vendor: str,
    quirk: str,
    quirks: dict[str, Any],
    *,
    households: int = 0,
    window_s: float = 0.0,
    xfail: str | None = None,
) -> Any:
    """One catalogue row; ``xfail`` says what syncd does today (issue 24 part N: …)."""
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(
        vendor, quirk, quirks, households, window_s, id=f"{vendor}/{quirk}", marks=marks
    )


SLOW = {"store_then_slow_s": 1.5, "store_then_slow_times": 2}  # past the sinks' 1 s timeout
REVOKED = {"revoked_from_s": 0.0, "revoked_s": 30.0}

CATALOGUE = [
    row("jodo", "well_behaved", {}),
    row("ameyo", "well_behaved", {}),
    row("ucontact", "well_behaved", {}),
    row("jodo", "shared_numbers", {}, households=12),
    row("ameyo", "shared_numbers", {}, households=12),
    row("ucontact", "shared_numbers", {}, households=12),
    row("jodo", "failed_records", {"failed_records": 0.1, "seed": 1}),
    row("jodo", "bom", {"bom": True}),
    row("ameyo", "bom", {"bom": True}),
    row("ucontact", "bom", {"bom": True}),
    row("jodo", "text_plain", {"text_plain": True}),
    row("ucontact", "text_plain", {"text_plain": True}),
    row("ameyo", "paused", {"pause_from_s": 0.0, "pause_s": 20.0}, window_s=21.0),
    row("jodo", "max_records", {"max_records": 20}),
    row("ameyo", "max_records", {"max_records": 20}),
    row("ucontact", "max_records", {"max_records": 20}),
    row(
        "jodo",
        "missing",
        {"missing": ["customer_recording", "customer_multiple_recordings", "userStatus"]},
    ),
    row("ameyo", "missing", {"missing": ["getContacts", "ping-session"]}),
    row(
        "ucontact",
        "missing",
        {"missing": ["Supervisor/queuesummary", "Supervisor/campaignstatus", "Supervisor/convert"]},
    ),
    row("ameyo", "latin1_forms", {"latin1_forms": True}),
    row("jodo", "revoked", REVOKED, window_s=31.0),
    row("ameyo", "revoked", REVOKED, window_s=31.0),
    row("ucontact", "revoked", REVOKED, window_s=31.0),
    row("jodo", "store_then_slow", SLOW),
    row("ameyo", "store_then_slow", SLOW),
    row("ucontact", "store_then_slow", SLOW),
]


@pytest.mark.parametrize(("vendor", "quirk", "quirks", "households", "window_s"), CATALOGUE)
def test_the_dialer_holds_each_live_lead_once_whatever_the_server_does(
    tmp_path: Path,
    vendor: str,
    quirk: str,
    quirks: dict[str, Any],
    households: int,
    window_s: float,
) -> None:
    played = play(tmp_path, VENDORS[vendor], quirks, households=households, window_s=window_s)
    problems = verdict(f"{vendor}/{quirk}", played)
    assert not problems, "\n".join(problems)
