"""The window stage's plan (``syncd.run.window.plan_moves``), pure: which leads a dialer
that withdraws at the close gives up, why, and when they come back. A lead whose consent
runs out first leaves for that, for good; one out for the night whose consent ends
before the next opening is not held for it. The runs through a uContact simulator are in
``tests/test_ucontact_window.py``."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from syncd.core.audit import Facts
from syncd.core.gate import CallingWindow, RouteWindow
from syncd.core.mapping import lead_to_json
from syncd.core.model import Lead
from syncd.run.window import WindowContext, plan_moves
from syncd.state.base import CLOSED, WITHDRAWN, WindowLead

HOURS = CallingWindow.parse({"mon-sat": "09:00-20:00"})
LONDON = RouteWindow(HOURS, "Europe/London", margin=timedelta(minutes=15))
CTX = WindowContext([LONDON], policy="p1", fallback_zone="Europe/London", consent=True)
LEAD = Lead(key="GB1", phone="+442071234567")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def row(stage: str, consent_until: str | None, withdrawn: str = "") -> WindowLead:
    until = utc(consent_until) if consent_until is not None else None
    lead = replace(LEAD, consent_until=until, withdrawn=withdrawn)
    return WindowLead(LEAD.key, stage, lead_to_json(lead), dialled=False)


@pytest.mark.parametrize(
    ("now", "consent_until", "ctx", "code", "reason"),
    [
        # dial_until was its consent's end (19:30), before London's close at 20:00.
        ("2026-11-30 19:31", "2026-11-30 19:30", CTX, "consent_expired",
         "blocked (consent_expired): consent ran out at 2026-11-30 19:30 UTC"),
        ("2026-11-30 20:00", "2026-11-30 20:00", CTX, "consent_expired",  # both at once
         "blocked (consent_expired): consent ran out at 2026-11-30 20:00 UTC"),
        ("2026-11-30 20:01", "2027-01-01 00:00", CTX, "window_closed",
         "withdrawn (window_closed): its calling window closed"),
        ("2026-11-30 20:01", None, CTX, "window_closed",
         "withdrawn (window_closed): its calling window closed"),
        # No route sets consent_max_age_days now: an expiry of an old rule does not count.
        ("2026-11-30 19:31", "2026-11-30 19:30", replace(CTX, consent=False), "window_closed",
         "withdrawn (window_closed): its calling window closed"),
    ],
)  # fmt: skip
def test_a_closed_lead_is_withdrawn_for_what_passed_first(
    now: str, consent_until: str | None, ctx: WindowContext, code: str, reason: str
) -> None:
    moves = plan_moves([row(CLOSED, consent_until)], ctx, utc(now).timestamp())

    [(key, marked, why, facts)] = moves.withdraw
    assert key == "GB1" and why.startswith(reason)
    assert Lead.from_json(orjson.loads(marked)).withdrawn == code  # only window_closed returns
    got = Facts.from_json(facts)
    assert (got.code, got.withdrawn, got.action) == (code, code, "delete")
    assert not moves.back and not moves.done
    # consent's withdrawal is a refusal `syncd rejects` lists; the window's is not
    assert moves.refused == ([(key, why, facts)] if code == "consent_expired" else [])


@pytest.mark.parametrize(
    ("consent_until", "ctx", "until", "reason"),
    [
        # Out since 20:00; the next opening is 09:00 (its margin: the call by 09:15).
        (None, CTX, "2026-12-01 09:00", "back at the next opening, 2026-12-01 09:00 GMT"),
        ("2026-12-02 00:00", CTX, "2026-12-01 09:00", "back at the next opening"),
        ("2026-12-01 02:00", CTX, "2026-11-30 20:01",
         "not held for the next opening: blocked (consent_expired): consent runs out at "
         "2026-12-01 02:00 UTC, before the calling window opens"),
        ("2026-12-01 09:10", CTX, "2026-11-30 20:01",  # within the margin of the opening
         "not held for the next opening: blocked (consent_expired)"),
        ("2026-12-01 02:00", replace(CTX, consent=False), "2026-12-01 09:00",
         "back at the next opening"),
    ],
)  # fmt: skip
def test_a_withdrawn_lead_waits_for_the_next_opening_unless_its_consent_ends_first(
    consent_until: str | None, ctx: WindowContext, until: str, reason: str
) -> None:
    now = utc("2026-11-30 20:01")
    moves = plan_moves([row(WITHDRAWN, consent_until, "window_closed")], ctx, now.timestamp())

    [(key, lead_json, at, why, _)] = moves.back
    assert key == "GB1" and at == utc(until).timestamp()
    assert why.startswith("held (window_closed): withdrawn from the dialer") and reason in why
    assert Lead.from_json(orjson.loads(lead_json)).withdrawn == ""  # the push gate decides
    assert not moves.withdraw and not moves.done
