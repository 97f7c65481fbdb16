"""The safety gate through real runs: leads held outside their calling window and released
when it opens (a fake clock, a real Jodo simulator), blocked leads refused and withdrawn."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from syncd.simulators.ameyo.api import AmeyoSimulator
from syncd.simulators.ameyo.api import create_app as ameyo_app
from syncd.simulators.jodo.api import JodoSimulator, create_app
from syncd.simulators.quirks import Quirks
from syncd.simulators.server import running
from syncd.simulators.ucontact.api import UContactSimulator
from syncd.simulators.ucontact.api import create_app as ucontact_app
from tests.conftest import drop_csv, run_cli
from tests.support.clock import FakeClock
from tests.support.reliability import (
    AMEYO_PASSWORD,
    BEFORE_A_RETRY_S,
    UCONTACT_PASSWORD,
    ameyo_sink,
    jodo_sink,
    route,
    run_engine,
    settings_for,
    ucontact_sink,
    vendor_env,
    write_config,
)

HEADER = "id,first,last,phone,email,callback\n"
LEADS = {
    "IN": "+919820012345",  # Mumbai, UTC+5:30
    "NY": "+12125550100",  # New York, UTC-5
    "LA": "+13105550100",  # Los Angeles, UTC-8
    "GB": "+442071234567",  # London, UTC+0
    "AU": "+61212345678",  # Sydney, UTC+11 in summer
}


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def config(tmp_path: Path, url: str, **policy: Any) -> Path:
    rules = {"windows": {"mon-sat": "09:00-20:00"}, **policy}
    return write_config(tmp_path, [jodo_sink(url)], routes=[route("jodo", policy=rules)])


async def run_at(config: Path, clock: FakeClock, deadline_s: float = 60) -> Any:
    return await run_engine(settings_for(config), deadline_s=deadline_s, clock=clock)


def withdrawing_jodo(url: str) -> dict[str, Any]:
    """Return a Jodo sink that disposes a withdrawn lead (Jodo cannot delete one)."""
    on_delete = {"dispomasterid": 7, "disporeasonid": 3}
    return jodo_sink(url, dispositions={"login": "supervisor", "on_delete": on_delete})


def held_by(sim: JodoSimulator) -> set[str]:
    return {str(r["leadnumber"]) for r in sim.records()}


async def test_leads_wait_for_their_own_calling_hours_and_go_when_they_open(
    tmp_path: Path,
) -> None:
    sim = JodoSimulator()
    clock = FakeClock(at("2026-11-30 15:00"))  # a Monday: 20:30 in Mumbai, 07:00 in LA
    with running(create_app(sim)) as url:
        path = config(tmp_path, url)
        rows = "".join(f"{k},F,L,{phone},,\n" for k, phone in LEADS.items())
        drop_csv(tmp_path / "inbox", "leads.csv", HEADER + rows)

        first = await run_at(path, clock)
        after_first = held_by(sim)
        status = run_cli("status", "-c", str(path))
        explained = run_cli("explain", "IN", "-c", str(path))
        clock.now = at("2026-11-30 17:00")  # 09:00 in Los Angeles
        second = await run_at(path, clock)
        after_second = held_by(sim)
        clock.now = at("2026-12-01 04:00")  # 09:30 in Mumbai, 15:00 in Sydney
        third = await run_at(path, clock)
        audit = run_cli("audit", "--since", "2026-11-01", "-c", str(path))

    assert after_first == {"NY", "GB"}
    counts = first.sinks["jodo"]
    assert (counts.delivered, counts.held, counts.pending) == (2, 3, 0)
    assert counts.released_at == at("2026-11-30 17:00")  # LA opens first
    assert first.balanced and second.balanced and third.balanced
    assert "jodo: safety gate: held window_closed 3" in status.stdout
    assert "held (window_closed): outside the calling window in Asia/Calcutta" in explained.stdout
    assert after_second == {"NY", "GB", "LA"}
    assert held_by(sim) == set(LEADS)
    assert all(n == 1 for n in sim.received().values())  # nobody pushed twice
    assert third.sinks["jodo"].held == 0
    # The compliance view: every hold and push, with the zone the lead lives in.
    assert audit.returncode == 0, audit.stderr
    lines = list(csv.DictReader(io.StringIO(audit.stdout)))
    events = {(r["key"], r["event"], r["zones"]) for r in lines}
    assert ("LA", "gate.held", "America/Los_Angeles") in events
    assert ("LA", "push.delivered", "America/Los_Angeles") in events
    assert ("IN", "gate.held", "Asia/Calcutta") in events
    assert ("NY", "push.delivered", "America/New_York") in events
    assert not [r for r in lines if r["key"] == "NY" and r["event"] == "gate.held"]
    held_la = next(r for r in lines if r["key"] == "LA" and r["event"] == "gate.held")
    assert held_la["at_local"].endswith(("PST", "PDT")) and held_la["at_utc"].endswith("UTC")


async def test_blocked_leads_are_refused_with_their_code_and_a_delivered_one_is_withdrawn(
    tmp_path: Path,
) -> None:
    sim = JodoSimulator(agents={"supervisor": 1})
    clock = FakeClock(at("2026-11-30 06:00"))  # 11:30 in Mumbai
    with running(create_app(sim)) as url:
        path = write_config(
            tmp_path,
            [withdrawing_jodo(url)],
            routes=[
                route(
                    "jodo",
                    map={"fields": {"dnc": "dnc", "consent": "consent"}},
                    policy={
                        "dnc_column": "dnc",
                        "consent_column": "consent",
                        "require_consent": True,
                        "block_number_types": ["toll_free"],
                    },
                )
            ],
        )
        header = "id,first,last,phone,email,callback,dnc,consent\n"
        drop_csv(
            tmp_path / "inbox",
            "a.csv",
            header
            + "OK1,F,L,9820012345,,,,yes\n"
            + "DNC1,F,L,9820012346,,,yes,yes\n"
            + "NOC1,F,L,9820012347,,,,\n"
            + "JUNK1,F,L,9999999999,,,,yes\n"
            + "SHEET1,F,L,9.820012348E+09,,,,yes\n"
            + "LOST1,F,L,9.82001E+09,,,,yes\n",
        )
        first = await run_at(path, clock)
        # Later the person asks to be left alone: the CRM flags OK1 as do-not-call.
        drop_csv(tmp_path / "inbox", "b.csv", header + "OK1,F,L,9820012345,,,yes,yes\n")
        second = await run_at(path, clock)
        rejects = run_cli("rejects", "-c", str(path))
        status = run_cli("status", "-c", str(path))
        audit = run_cli("audit", "--since", "2026-11-30", "-c", str(path))  # the run's day

    assert held_by(sim) >= {"OK1", "SHEET1"}
    assert "DNC1" not in held_by(sim) and "NOC1" not in held_by(sim)
    assert first.routes["crm->jodo"].blocked == {
        "dnc_crm": 1,
        "no_consent": 1,
        "placeholder_number": 1,
    }
    assert second.routes["crm->jodo"].deleted == 1  # OK1 withdrawn
    assert second.routes["crm->jodo"].blocked == {"dnc_crm": 1}
    [disposed] = [d for d in sim.dispositions if d.get("contactvalue", "").endswith("9820012345")]
    assert disposed  # Jodo got the do-not-call disposition for the delivered lead
    assert "blocked (dnc_crm): the CRM marks it do-not-call" in rejects.stdout
    assert "its withdrawal from the dialer is queued" in rejects.stdout
    assert "blocked (placeholder_number)" in rejects.stdout
    assert "digits lost" in rejects.stdout
    assert "jodo: safety gate: blocked dnc_crm 2, blocked no_consent 1" in status.stdout
    blocked = [r for r in csv.DictReader(io.StringIO(audit.stdout)) if r["key"] == "DNC1"]
    assert [r["event"] for r in blocked] == ["gate.blocked"]
    # The lead's own zone (its number's), recorded with the block: not the route's UTC.
    assert blocked[0]["zones"] == "Asia/Calcutta"
    assert blocked[0]["numbers"] == "+919820012346"


async def test_a_dialer_that_cannot_take_a_lead_back_says_so_and_refuses_the_withdrawal(
    tmp_path: Path,
) -> None:
    sim = AmeyoSimulator(users={"syncd": AMEYO_PASSWORD}, dialing=False)
    with running(ameyo_app(sim)) as url:
        path = write_config(
            tmp_path,
            [ameyo_sink(url)],
            routes=[route("ameyo", map={"fields": {"dnc": "dnc"}}, policy={"dnc_column": "dnc"})],
        )
        header = "id,first,last,phone,email,callback,dnc\n"
        drop_csv(tmp_path / "inbox", "a.csv", header + "A1,F,L,9820012345,,,\n")
        first = await run_at(path, FakeClock(at("2026-11-30 06:00")))
        drop_csv(tmp_path / "inbox", "b.csv", header + "A1,F,L,9820012345,,,yes\n")
        second = await run_at(path, FakeClock(at("2026-11-30 06:00")))
        explained = run_cli("explain", "A1", "-c", str(path), env=vendor_env())

    assert first.sinks["ameyo"].delivered == 1
    [warning] = second.warnings["ameyo"]
    assert warning.startswith("this dialer cannot take a lead back")
    assert second.sinks["ameyo"].refused == 1  # the withdrawal, refused with its reason
    assert "cannot remove a customer" in explained.stdout
    assert "blocked (dnc_crm)" in explained.stdout


DNC_LIST = """
[[sources]]
name = "ndnc"
kind = "csv_drop"
inbox = "{inbox}"

[[dnc_lists]]
name = "ndnc"
source = "ndnc"
column = "number"
default_region = "IN"
"""


async def test_a_number_listed_while_its_upload_is_in_doubt_is_withdrawn_from_the_dialer(
    tmp_path: Path,
) -> None:
    jodo = JodoSimulator(agents={"supervisor": 1})
    lists = tmp_path / "dnc-inbox"
    lists.mkdir()
    with running(create_app(jodo)) as url:
        path = write_config(
            tmp_path,
            [withdrawing_jodo(url) | {"timeout_s": 1.0}],
            routes=[route("jodo", policy={"dnc_lists": ["ndnc"]})],
            extra_toml=DNC_LIST.format(inbox=lists),
        )
        # The dialer stores each upload and answers after syncd stopped waiting.
        jodo.quirks.set(Quirks(store_then_slow_s=3.0))
        drop_csv(tmp_path / "inbox", "day1.csv", HEADER + "L1,F,L,9820012341,,\n")
        first = await run_at(path, FakeClock(at("2026-11-30 06:00")), deadline_s=4)
        jodo.quirks.set(Quirks())
        drop_csv(lists, "ndnc.csv", "number\n+919820012341\n")
        second = await run_at(path, FakeClock(at("2026-11-30 06:00")))

    assert first.sinks["jodo"].delivered == 0 and held_by(jodo) == {"L1"}  # in doubt
    assert second.dnc["ndnc"]["withdrawn"] == 1
    assert "00919820012341" in {d["contactvalue"] for d in jodo.dispositions}


async def test_a_number_added_to_a_do_not_call_list_after_delivery_is_withdrawn_everywhere(
    tmp_path: Path,
) -> None:
    jodo = JodoSimulator(agents={"supervisor": 1})
    uc = UContactSimulator(users={"api": UCONTACT_PASSWORD}, dial_delay_s=3600.0)
    lists = tmp_path / "dnc-inbox"
    lists.mkdir()
    with running(create_app(jodo)) as jodo_url, running(ucontact_app(uc)) as uc_url:
        path = write_config(
            tmp_path,
            [
                withdrawing_jodo(jodo_url),
                ucontact_sink(uc_url),
            ],
            routes=[
                route(sink, map={"alt_phones": ["alt"]}, policy={"dnc_lists": ["ndnc"]})
                for sink in ("jodo", "ucontact")
            ],
            extra_toml=DNC_LIST.format(inbox=lists),
        )
        header = "id,first,last,phone,email,callback,alt\n"
        crm = tmp_path / "inbox"
        rows = "L1,F,L,9820012341,,,\nL2,F,L,9820012342,,,9820012352\nL3,F,L,9820012343,,,\n"
        drop_csv(crm, "day1.csv", header + rows)
        first = await run_at(path, FakeClock(at("2026-11-30 06:00")))
        # The regulator's list arrives: L1's number, and L2's alternate number.
        drop_csv(lists, "ndnc.csv", "number\n+919820012341\n09820012352\nnot-a-number\n")
        second = await run_at(path, FakeClock(at("2026-11-30 06:00")))
        # The CRM still sends L1 (changed): it must not reach any dialer again.
        drop_csv(crm, "day2.csv", header + "L1,Renamed,L,9820012341,,,\n")
        third = await run_at(path, FakeClock(at("2026-11-30 06:00")))
        explained = run_cli("explain", "L2", "-c", str(path), env=vendor_env())
        audit = run_cli(
            "audit", "--since", "2026-11-30", "--format", "jsonl", "-c", str(path),
            env=vendor_env(),
        )  # fmt: skip

    assert first.sinks["jodo"].delivered == first.sinks["ucontact"].delivered == 3
    assert second.dnc["ndnc"]["withdrawn"] == 4  # L1 and L2, at both dialers
    assert second.balanced and third.balanced
    listed = uc.dial_list()
    assert listed["00919820012341"]["present"] == 0 and listed["00919820012342"]["present"] == 0
    assert listed["00919820012343"]["present"] == 1
    blacklisted = set(uc.snapshot()["campaigns"]["Ventas->"]["blacklist"])
    assert {"00919820012341", "00919820012342", "00919820012352"} <= blacklisted
    withdrawn = {d["contactvalue"] for d in jodo.dispositions}
    assert {"00919820012341", "00919820012342"} <= withdrawn
    assert third.routes["crm->jodo"].blocked == {"dnc_list:ndnc": 1}
    assert jodo.received()["L1"] == 1  # never sent again
    assert "blocked (dnc_list:ndnc): +919820012352 is on the do-not-call list" in explained.stdout
    refused = (lists / "done" / "ndnc.csv.rejects.csv").read_text()
    assert "not-a-number" in refused
    # Each dialer's answer to the withdrawal is in the audit, with the list that decided.
    records = [json.loads(line) for line in audit.stdout.splitlines()]
    withdrawn = {(r["sink"], r["key"]): r for r in records if r["decision"] == "withdrawn"}
    assert set(withdrawn) == {(s, k) for s in ("jodo", "ucontact") for k in ("L1", "L2")}
    assert all(r["rule"] == "dnc_list:ndnc" and r["dialer_answer"] for r in withdrawn.values())
    assert withdrawn[("jodo", "L1")]["dialer_answer"].startswith("saveDisposition 7/3: Jodo")
    assert withdrawn[("ucontact", "L2")]["numbers"] == ["+919820012352"]  # the listed one


async def test_a_lead_whose_window_closes_within_the_margin_waits_for_the_next_opening(
    tmp_path: Path,
) -> None:
    # 19:50 in London, 10 minutes before the window closes: a dialer given the lead now
    # could place the call after 20:00 (min_minutes_left is 15 by default).
    sim = JodoSimulator()
    with running(create_app(sim)) as url:
        path = config(tmp_path, url)
        drop_csv(tmp_path / "inbox", "leads.csv", HEADER + f"GB,F,L,{LEADS['GB']},,\n")
        summary = await run_at(path, FakeClock(at("2026-11-30 19:50")))

    assert held_by(sim) == set()
    assert summary.sinks["jodo"].held == 1
    assert summary.sinks["jodo"].released_at == at("2026-12-01 09:00")


async def test_a_withdrawal_the_dialer_refuses_is_tried_again_and_raised_until_it_lands(
    tmp_path: Path,
) -> None:
    sim = JodoSimulator(agents={"supervisor": 1})
    clock = FakeClock(at("2026-11-30 06:00"))  # 11:30 in Mumbai
    with running(create_app(sim)) as url:
        # Fewer tries than max_attempts: a refusal (not a fault in the wire) leaves the
        # number dialable, so it is an alert from the first one.
        sink = withdrawing_jodo(url) | {"max_attempts": 8}
        sink["dispositions"] = {**sink["dispositions"], "login": "gone.supervisor"}
        rules = {"dnc_column": "dnc"}
        path = write_config(
            tmp_path, [sink], routes=[route("jodo", map={"fields": {"dnc": "dnc"}}, policy=rules)]
        )
        header = "id,first,last,phone,email,callback,dnc\n"
        drop_csv(tmp_path / "inbox", "a.csv", header + "OK1,F,L,9820012345,,,\n")
        await run_at(path, clock)
        drop_csv(tmp_path / "inbox", "b.csv", header + "OK1,F,L,9820012345,,,yes\n")
        refused = []
        with capture_logs() as logs:
            for _ in range(3):  # the dialer says "Invalid login"; each run tries once
                refused.append(await run_at(path, clock, deadline_s=BEFORE_A_RETRY_S))
                clock.advance(60)
        status = run_cli("status", "-c", str(path))
        sim.floor.set_agent("gone.supervisor", 1)  # the supervisor's login is back
        clock.advance(3600)
        landed = await run_at(path, clock)
        after = run_cli("status", "--json", "-c", str(path))

    assert all(r.sinks["jodo"].pending == 1 for r in refused), "a refused withdrawal is final"
    said = [e for e in logs if e["event"] == "sink.withdrawal.refused"]
    assert said and said[0]["log_level"] == "warning" and said[0]["size"] == 1  # in the log
    assert all(r.exit_code() == 1 for r in refused)
    assert "ALERT: withdrawals the dialer keeps refusing" in status.stdout
    assert "OK1" in status.stdout and "Invalid login" in status.stdout
    assert landed.sinks["jodo"].delivered == 1 and landed.exit_code() == 0
    assert [d["contactvalue"] for d in sim.dispositions] == ["00919820012345"]
    assert '"withdrawals_failing": []' in after.stdout


async def test_a_run_does_not_wait_an_hour_for_a_failing_withdrawal_and_retry_sends_it_now(
    tmp_path: Path,
) -> None:
    """Past max_attempts a withdrawal is tried again in an hour. A cron run started within
    that hour waited for it (its deadline, an hour from its own start, came later): it
    held the store's lock, so every other run exited 75 and no deletion, do-not-call
    flag or new lead went meanwhile. A run ends instead, saying when the next try is; and
    `syncd retry` sends it with the next run once the cause is mended (it re-queued only
    refused leads: the withdrawal waited out its hour, the number still dialable)."""
    sim = JodoSimulator(agents={"supervisor": 1})
    clock = FakeClock(at("2026-11-30 06:00"))
    with running(create_app(sim)) as url:
        sink = withdrawing_jodo(url) | {"max_attempts": 1}
        sink["dispositions"] = {**sink["dispositions"], "login": "gone.supervisor"}
        path = write_config(
            tmp_path,
            [sink],
            routes=[route("jodo", map={"fields": {"dnc": "dnc"}}, policy={"dnc_column": "dnc"})],
        )
        header = "id,first,last,phone,email,callback,dnc\n"
        drop_csv(tmp_path / "inbox", "a.csv", header + "OK1,F,L,9820012345,,,\n")
        await run_at(path, clock)
        drop_csv(tmp_path / "inbox", "b.csv", header + "OK1,F,L,9820012345,,,yes\n")
        await run_at(path, clock, deadline_s=3600)  # refused: tried again in an hour
        clock.advance(300)  # the next cron run, five minutes later
        started = clock.time()
        # A hang guard only: before, the run slept towards the retry in real time.
        later = await asyncio.wait_for(run_at(path, clock, deadline_s=3600), 60)
        # The operator mends the cause and sends the withdrawal at once, not in an hour
        sim.floor.set_agent("gone.supervisor", 1)
        retried = run_cli("retry", "--sink", "jodo", "-c", str(path))
        landed = await run_at(path, clock)

    assert clock.time() - started < 60  # it did not wait for the retry
    assert later.sinks["jodo"].pending == 1 and later.exit_code() == 1
    assert "next try at" in (later.sinks["jodo"].waiting or "")
    assert retried.returncode == 0 and retried.stdout.startswith("1 lead(s) of jodo")
    assert landed.sinks["jodo"].delivered == 1 and landed.exit_code() == 0
    assert [d["contactvalue"] for d in sim.dispositions] == ["00919820012345"]


async def test_a_held_lead_the_crm_deletes_is_in_the_audit_as_cancelled_never_sent(
    tmp_path: Path,
) -> None:
    """The compliance view after a complaint: held at 20:30 in Mumbai, deleted in the
    CRM before the morning. The audit must say it never went, not stop at "held"."""
    sim = JodoSimulator()
    clock = FakeClock(at("2026-11-30 15:00"))  # 20:30 in Mumbai: outside its window
    header = "id,first,last,phone,email,callback,gone\n"
    with running(create_app(sim)) as url:
        rules = {"windows": {"mon-sat": "09:00-20:00"}}
        path = write_config(
            tmp_path,
            [jodo_sink(url)],
            routes=[route("jodo", policy=rules, map={"deleted": "gone"})],
        )
        drop_csv(tmp_path / "inbox", "a.csv", header + f"IN,F,L,{LEADS['IN']},,,\n")
        await run_at(path, clock)
        clock.now = at("2026-11-30 16:00")
        drop_csv(tmp_path / "inbox", "b.csv", header + f"IN,F,L,{LEADS['IN']},,,yes\n")
        await run_at(path, clock)
        clock.now = at("2026-12-01 04:00")  # its window opens: nothing goes
        await run_at(path, clock)
        audit = run_cli("audit", "--since", "2026-11-01", "-c", str(path))
        explained = run_cli("explain", "IN", "-c", str(path))

    assert sim.records() == [] and sim.received() == {}
    lines = list(csv.DictReader(io.StringIO(audit.stdout)))
    assert [(r["event"], r["decision"]) for r in lines] == [
        ("gate.held", "held"),
        ("push.cancelled", "cancelled"),
    ]
    cancelled = lines[-1]
    assert cancelled["numbers"] == LEADS["IN"] and cancelled["zones"] == "Asia/Calcutta"
    assert "deleted in the CRM before it was sent" in cancelled["reason"]
    assert cancelled["at_utc"] == "2026-11-30 16:00:00 UTC"
    assert "push.cancelled" in explained.stdout
