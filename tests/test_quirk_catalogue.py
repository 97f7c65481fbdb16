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
    """One catalogue row.

    ``households``: pairs of leads sharing a number (then a lead refused with a
    reason counts as accounted for: a dialer without duplicates may take only
    one); ``window_s``: the quirk's window, skipped on the dialer's clock before a
    last run; ``xfail``: what syncd does today (issue 24: …).
    """
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(
        vendor, quirk, quirks, households, window_s, id=f"{vendor}/{quirk}", marks=marks
    )


SLOW = {"store_then_slow_s": 1.5, "store_then_slow_times": 2}  # past the sinks' 1 s timeout
REVOKED = {"revoked_from_s": 0.0, "revoked_s": 30.0}

# A row: vendor, quirk, switches; xfail says what syncd does today (issue 24).
CATALOGUE = [
    row("jodo", "well_behaved", {}),
    row("ameyo", "well_behaved", {}),
    row("ucontact", "well_behaved", {}),
    row(
        "jodo", "shared_numbers", {}, households=12,
        xfail="issue 24 (removals by number, duplicate numbers): a removal by contactvalue "
        "disposes every record holding the number, closing live household members; two "
        "records with one number are both held (rung twice)",
    ),
    row(
        "ameyo", "shared_numbers", {}, households=12,
        xfail="issue 24 (duplicate-number policy): Ameyo upserts on phone1, so the second "
        "household member overwrites the first, which syncd still counts delivered",
    ),
    row(
        "ucontact", "shared_numbers", {}, households=12,
        xfail="issue 24 (duplicate-number policy): the sink keeps one contact per number, so "
        "the first household member gives its number up yet is still counted delivered",
    ),
    row(
        "jodo", "failed_records", {"failed_records": 0.1, "seed": 1},
        xfail="issue 24 (reply reading): a statuscode 001 reply listing faileddata is read "
        "as all delivered",
    ),
    row(
        "jodo", "bom", {"bom": True},
        xfail="issue 24 (reply reading): a reply starting with a UTF-8 BOM is not JSON to "
        "syncd: pushes retried until the breaker opens, leads left pending",
    ),
    row(
        "ameyo", "bom", {"bom": True},
        xfail="issue 24 (reply reading): the login reply with a BOM is not JSON to syncd: "
        "the sink never opens",
    ),
    row(
        "ucontact", "bom", {"bom": True},
        xfail="issue 24 (reply reading): the getUserToken reply with a BOM is not a key to "
        "syncd: the sink never opens",
    ),
    row("jodo", "text_plain", {"text_plain": True}),
    row("ucontact", "text_plain", {"text_plain": True}),
    row(
        "ameyo", "paused", {"pause_from_s": 0.0, "pause_s": 20.0}, window_s=21.0,
        xfail="issue 24 (campaign holds): Campaign is not running refuses every lead for "
        "good instead of holding them until the campaign runs",
    ),
    row("jodo", "max_records", {"max_records": 20}),
    row(
        "ameyo", "max_records", {"max_records": 20},
        xfail="issue 24 (413): HTTP 413 on a batch refuses its leads instead of sending "
        "smaller batches",
    ),
    row(
        "ucontact", "max_records", {"max_records": 20},
        xfail="issue 24 (413): HTTP 413 on an upload refuses its leads instead of sending "
        "smaller files",
    ),
    # Without saveDisposition the removals are refused with the reason (status, rejects).
    row("jodo", "missing", {"missing": ["saveDisposition"]}),
    row(
        "ameyo", "missing", {"missing": ["getContacts"]},
        xfail="issue 24 (optional endpoints): a server without getContacts makes every run "
        "exit 1 (poll failed) while status shows nothing left",
    ),
    row(
        "ucontact", "missing",
        {"missing": ["Supervisor/queuesummary", "Supervisor/campaignstatus", "Supervisor/convert"]},
        xfail="issue 24 (optional endpoints): Supervisor/campaignstatus answering 404 stops "
        "the sink as misconfigured; every lead stays pending",
    ),
    row(
        "ameyo", "latin1_forms", {"latin1_forms": True},
        xfail="issue 24 (forms): a server decoding forms as ISO-8859-1 stores the UTF-8 names "
        "syncd sends garbled",
    ),
    row("jodo", "revoked", REVOKED, window_s=31.0),
    row("ameyo", "revoked", REVOKED, window_s=31.0),
    row("ucontact", "revoked", REVOKED, window_s=31.0),
    row("jodo", "store_then_slow", SLOW),
    row("ameyo", "store_then_slow", SLOW),
    row("ucontact", "store_then_slow", SLOW),
]  # fmt: skip


@pytest.mark.parametrize(("vendor", "quirk", "quirks", "households", "window_s"), CATALOGUE)
def test_the_dialer_holds_each_live_lead_once_whatever_the_server_does(
    tmp_path: Path,
    vendor: str,
    quirk: str,
    quirks: dict[str, Any],
    households: int,
    window_s: float,
) -> None:
    played = play(
        tmp_path,
        VENDORS[vendor],
        quirks,
        households=households,
        window_s=window_s,
        may_refuse=households > 0,
    )
    problems = verdict(f"{vendor}/{quirk}", played)
    assert not problems, "\n".join(problems)
