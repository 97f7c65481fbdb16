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

from tests.support.quirks import (
    JODO_BY_NUMBER,
    JODO_BY_NUMBER_UNCLOSED,
    SINK,
    VENDORS,
    left_open_under,
    play,
    play_renumbered,
    verdict,
)

pytestmark = pytest.mark.slow


def row(
    vendor: str,
    quirk: str,
    quirks: dict[str, Any],
    *,
    households: int = 0,
    window_s: float = 0.0,
    dialer_refuses: bool = False,
    removals_stay: bool = False,
    xfail: str | None = None,
) -> Any:
    """One catalogue row.

    ``households``: pairs of leads sharing a number (the second waits its turn, or
    is refused with a reason); ``window_s``: the quirk's window, skipped on the
    dialer's clock before a last run; ``dialer_refuses``: the dialer itself refuses
    some records for good (syncd refuses exactly those, with its reason);
    ``removals_stay``: the dialer cannot remove at all, so removals stay queued with
    an alert and the run exits 1; ``xfail``: what syncd does today.
    """
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    expect = {"may_refuse": households > 0 or dialer_refuses, "removals_stay": removals_stay}
    return pytest.param(
        vendor, quirk, quirks, households, window_s, expect, id=f"{vendor}/{quirk}", marks=marks
    )


SLOW = {"store_then_slow_s": 1.5, "store_then_slow_times": 2}  # past the sinks' 1 s timeout
# Every batch stored and answered late for a minute: the first run ends with its uploads
# in doubt, the second run's drop deletes some of them, the run after the window gets
# the answers. A lead deleted while in doubt may be in the dialer: it must be removed.
IN_DOUBT = {"store_then_slow_s": 1.5, "store_then_slow_for_s": 60.0}
REVOKED = {"revoked_from_s": 0.0, "revoked_s": 30.0}
ECHOED = {"refuse_echoing": "9820000037"}  # one lead's number (tests.support.quirks)

# A row: vendor, quirk, switches; xfail says what syncd does today (issue 24).
CATALOGUE = [
    row("jodo", "well_behaved", {}),
    row("ameyo", "well_behaved", {}),
    row("ucontact", "well_behaved", {}),
    row(
        "jodo", "shared_numbers", {}, households=12,
    ),
    row(
        "ameyo", "shared_numbers", {}, households=12,
    ),
    row(
        "ucontact", "shared_numbers", {}, households=12,
    ),
    row(
        "jodo", "failed_records", {"failed_records": 0.1, "seed": 1}, dialer_refuses=True,
    ),
    row(
        "jodo", "bom", {"bom": True},
    ),
    row(
        "ameyo", "bom", {"bom": True},
    ),
    row(
        "ucontact", "bom", {"bom": True},
    ),
    row("jodo", "text_plain", {"text_plain": True}),
    row("ucontact", "text_plain", {"text_plain": True}),
    row(
        "ameyo", "paused", {"pause_from_s": 0.0, "pause_s": 20.0}, window_s=21.0,
    ),
    row("jodo", "max_records", {"max_records": 20}),
    row(
        "ameyo", "max_records", {"max_records": 20},
    ),
    row(
        "ucontact", "max_records", {"max_records": 20},
    ),
    # Without saveDisposition nothing can be withdrawn: the removals stay queued, tried
    # again and raised as an alert (status, /readyz, metrics); the run exits 1.
    row("jodo", "missing", {"missing": ["saveDisposition"]}, removals_stay=True),
    row(
        "ameyo", "missing", {"missing": ["getContacts"]},
    ),
    row(
        "ucontact", "missing",
        {"missing": ["Supervisor/queuesummary", "Supervisor/campaignstatus", "Supervisor/convert"]},
    ),
    row(
        "ameyo", "latin1_forms", {"latin1_forms": True},
    ),
    # One record refused with an error that echoes it (names, the number): the dialer's
    # refusal of that one lead, never a hold of the others sent with it.
    row("jodo", "refuse_echoing", ECHOED, dialer_refuses=True),
    row("ameyo", "refuse_echoing", ECHOED, dialer_refuses=True),
    row("ucontact", "refuse_echoing", ECHOED, dialer_refuses=True),
    row("jodo", "revoked", REVOKED, window_s=31.0),
    row("ameyo", "revoked", REVOKED, window_s=31.0),
    row("ucontact", "revoked", REVOKED, window_s=31.0),
    row("jodo", "store_then_slow", SLOW),
    row("ameyo", "store_then_slow", SLOW),
    row("ucontact", "store_then_slow", SLOW),
    row("jodo", "deleted_in_doubt", IN_DOUBT, window_s=61.0),
    row("ameyo", "deleted_in_doubt", IN_DOUBT, window_s=61.0),
    row("ucontact", "deleted_in_doubt", IN_DOUBT, window_s=61.0),
]  # fmt: skip


@pytest.mark.parametrize(
    ("vendor", "quirk", "quirks", "households", "window_s", "expect"), CATALOGUE
)
def test_the_dialer_holds_each_live_lead_once_whatever_the_server_does(
    tmp_path: Path,
    vendor: str,
    quirk: str,
    quirks: dict[str, Any],
    households: int,
    window_s: float,
    expect: dict[str, bool],
) -> None:
    played = play(
        tmp_path,
        VENDORS[vendor],
        quirks,
        households=households,
        window_s=window_s,
        may_refuse=expect["may_refuse"],
    )
    problems = verdict(f"{vendor}/{quirk}", played, removals_stay=expect["removals_stay"])
    assert not problems, "\n".join(problems)


# Every batch stored and answered 10 s late, the sinks waiting 30 s: the run's 2 s
# deadline cuts the push mid-request (both batches of the 60 leads go at once). The
# dialer holds what was sent; a lead the CRM deletes next must be removed from it, not
# settled as never delivered.
CUT_MID_REQUEST = {"store_then_slow_s": 10.0, "store_then_slow_for_s": 60.0}


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_a_push_the_runs_deadline_cuts_mid_request_leaves_its_leads_in_doubt(
    tmp_path: Path, vendor: str
) -> None:
    played = play(
        tmp_path,
        VENDORS[vendor],
        CUT_MID_REQUEST,
        leads=60,
        window_s=61.0,
        timeout_s=30.0,
        deadline_s=2.0,
    )
    problems = verdict(f"{vendor}/cut_mid_request", played)
    assert not problems, "\n".join(problems)


# Held under its old number too, Ameyo's API having no delete: what syncd can do is say
# so (the test below); the row stays xfail for as long as the dialer keeps it.
RENUMBERED_AT_AMEYO = pytest.mark.xfail(
    strict=True,
    reason="Ameyo: a renumbered lead is uploaded as a second customer beside the first "
    "(which Ameyo's API cannot remove); syncd raises an alert for it (numbers_left) "
    "until someone removes it by hand and runs `syncd ack`",
)


@pytest.mark.parametrize(
    "vendor",
    [
        pytest.param(v, marks=[RENUMBERED_AT_AMEYO] if name == "ameyo" else [], id=name)
        for name, v in [*VENDORS.items(), ("jodo_by_number", JODO_BY_NUMBER)]
    ],
)
def test_a_lead_whose_number_changes_is_held_under_its_new_number_only(
    tmp_path: Path, vendor: Any
) -> None:
    """The CRM changes some leads' numbers: the dialer holds each under its new number
    and nothing under the old one (which may be someone else's now)."""
    played, old = play_renumbered(tmp_path, vendor)
    problems = verdict(f"{vendor.name}/number_changed", played)
    stale = left_open_under(played, old)
    assert not problems, "\n".join(problems)
    assert not stale, f"open under their old number: {stale}"


@pytest.mark.parametrize(
    "vendor",
    [
        pytest.param(v, id=name)
        for name, v in [
            *VENDORS.items(),
            ("jodo_by_number", JODO_BY_NUMBER),
            ("jodo_by_number_without_on_delete", JODO_BY_NUMBER_UNCLOSED),
        ]
    ],
)
def test_a_renumbered_lead_the_dialer_still_holds_under_its_old_number_is_reported(
    tmp_path: Path, vendor: Any
) -> None:
    """Whatever a dialer cannot close, the engineer hears of: every lead it still holds
    under its old number is named by `syncd status` (its key, what to do), the run exits
    1; and no lead is named that it does not hold so."""
    played, old = play_renumbered(tmp_path, vendor)
    stale = set(left_open_under(played, old))
    reported = {(a["sink"], a["key"]) for a in played.status.get("numbers_left", [])}
    assert reported == {(SINK, key) for key in stale}
    assert all(a["action"] for a in played.status.get("numbers_left", []))
    assert played.runs[-1].returncode == (1 if stale else 0), played.runs[-1].stderr[-2000:]
