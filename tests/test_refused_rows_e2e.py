"""Rows refused before are remembered by their raw content, through real runs (issue 27).

A re-sync of an export with rows it refused used to map and validate every one of them
again, every run. Now a row refused for its own content is refused again from memory
until it changes, its reject listed as before; a changed row, a changed mapping or
header, and every refusal that hangs on the clock or an outside list are screened
afresh. Observed in the run summary (rows mapped, refused before), the rejects files,
`syncd rejects` and the dialer's records.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from syncd.simulators.jodo.api import JodoSimulator, create_app
from syncd.simulators.server import running
from tests.conftest import Simulated, drop_csv, jodo_config, run_cli
from tests.support.clock import FakeClock
from tests.support.reliability import route, run_engine, settings_for, write_config
from tests.support.runs import once, rejects_file
from tests.test_consent_recheck import LIST, withdrawing_jodo
from tests.test_dnc_lists import NOW

HEADER = "id,first,last,phone,email,callback\n"


def valid(n: int) -> list[str]:
    return [f"L{i},First{i},Last{i},98200{i:05d},l{i}@x.in," for i in range(n)]


REFUSED = [
    "B1,Bad,Phone,12345,,",
    "B2,No,Phone,,,",
    "B3,Bad,Date,9820088888,,next tuesday",
]


def export(rows: list[str], header: str = HEADER) -> str:
    return header + "".join(r + "\n" for r in rows)


def test_a_resync_of_an_unchanged_export_maps_none_of_the_rows_it_refused_and_lists_them(
    jodo: Simulated, tmp_path: Path
) -> None:
    config = jodo_config(tmp_path, jodo.url)
    drop_csv(tmp_path / "inbox", "day1.csv", export([*valid(30), *REFUSED]))
    first = once(config)
    drop_csv(tmp_path / "inbox", "day2.csv", export([*valid(30), *REFUSED]))
    said = "refused before on crm->jodo: 3 of the rejected rows, unchanged since, refused"
    again = once(config, said + " again without mapping (0 rows mapped)")
    listed = run_cli("rejects", "-c", str(config))

    assert (first["mapped"], first["rejected"], first["refused_before"]) == (33, 3, 0)
    assert (again["read"], again["unchanged"], again["rejected"]) == (33, 30, 3)
    assert (again["mapped"], again["refused_before"]) == (0, 3)  # nothing validated again
    assert rejects_file(tmp_path, "day2.csv") == rejects_file(tmp_path, "day1.csv")
    assert set(rejects_file(tmp_path, "day2.csv")) == {"B1", "B2", "B3"}
    assert "invalid phone '12345'" in rejects_file(tmp_path, "day2.csv")["B1"]
    assert listed.returncode == 0, listed.stderr
    rows = list(csv.DictReader(io.StringIO(listed.stdout)))
    assert sorted((r["origin"], r["key"]) for r in rows) == sorted(
        (day, key) for day in ("day1.csv", "day2.csv") for key in ("B1", "B2", "B3")
    )
    assert {r["leadnumber"] for r in jodo.sim.records()} == {f"L{i}" for i in range(30)}


def test_a_refused_row_fixed_in_the_crm_is_delivered_on_the_next_sync(
    jodo: Simulated, tmp_path: Path
) -> None:
    config = jodo_config(tmp_path, jodo.url)
    drop_csv(tmp_path / "inbox", "day1.csv", export([*valid(30), *REFUSED]))
    once(config)
    fixed = ["B1,Bad,Phone,9820012345,,", *REFUSED[1:]]
    drop_csv(tmp_path / "inbox", "day2.csv", export([*valid(30), *fixed]))
    again = once(config)

    assert (again["mapped"], again["new"], again["rejected"], again["refused_before"]) == (
        1,
        1,
        2,
        2,
    )
    records = {r["leadnumber"]: r for r in jodo.sim.records()}
    assert records["B1"]["mobilenumber"].endswith("9820012345")
    assert set(rejects_file(tmp_path, "day2.csv")) == {"B2", "B3"}


def test_a_mapping_change_in_the_config_maps_the_refused_rows_again(
    jodo: Simulated, tmp_path: Path
) -> None:
    config = jodo_config(tmp_path, jodo.url)
    header = "id,first,last,phone,email,callback,mobile\n"
    rows = [f"{r},98201{i:05d}" for i, r in enumerate([*valid(30), "B1,No,Phone,n/a,,"])]
    drop_csv(tmp_path / "inbox", "day1.csv", export(rows, header))
    first = once(config)
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace('phone = "phone"', 'phone = "mobile"'), encoding="utf-8")
    drop_csv(tmp_path / "inbox", "day2.csv", export(rows, header))
    again = once(config)

    assert (first["rejected"], again["refused_before"], again["rejected"]) == (1, 0, 0)
    assert again["mapped"] == 31  # a new mapping reads every row afresh
    records = {r["leadnumber"]: r for r in jodo.sim.records()}
    assert records["B1"]["mobilenumber"].endswith("9820100030")


def test_a_header_that_renames_the_columns_maps_the_refused_rows_again(
    jodo: Simulated, tmp_path: Path
) -> None:
    # The same cells under other names: the route and the cells are unchanged, but the
    # number is now read from another column.
    config = jodo_config(tmp_path, jodo.url)
    rows = [*valid(30), "B1,Swapped,Columns,n/a,9820077777,"]
    drop_csv(tmp_path / "inbox", "day1.csv", export(rows))
    once(config)
    drop_csv(tmp_path / "inbox", "day2.csv", export(rows, "id,first,last,email,phone,callback\n"))
    again = once(config)

    assert again["refused_before"] == 0
    assert "B1" in {r["leadnumber"] for r in jodo.sim.records()}


async def test_rows_blocked_for_their_consent_or_a_dnc_list_are_screened_again(
    tmp_path: Path,
) -> None:
    sim = JodoSimulator(agents={"supervisor": 1})
    with running(create_app(sim)) as url:
        inbox = tmp_path / "dnc-inbox"
        inbox.mkdir()
        policy = {"consent_column": "consent", "consent_max_age_days": 365, "dnc_lists": ["ndnc"]}
        rules = route("jodo", map={"fields": {"consent": "consent"}}, policy=policy)
        path = write_config(
            tmp_path, [withdrawing_jodo(url)], routes=[rules], extra_toml=LIST.format(inbox=inbox)
        )
        drop_csv(inbox, "ndnc.csv", "number\n+919820055555\n")
        await run_engine(settings_for(path), deadline_s=60, clock=FakeClock(NOW))  # the list
        header = "id,first,last,phone,email,callback,consent\n"
        rows = [f"V{i},F,L,98200{i:05d},,,yes" for i in range(10)]
        rows += [
            "C1,F,L,9820044444,,,2024-01-01",  # consent older than 365 days: the clock's
            "D1,F,L,9820055555,,,yes",  # on the do-not-call list: an outside list's
            "B1,F,L,12345,,,yes",  # an unreadable number: the row's own
        ]
        drop_csv(tmp_path / "inbox", "day1.csv", export(rows, header))
        first = await run_engine(settings_for(path), deadline_s=60, clock=FakeClock(NOW))
        drop_csv(tmp_path / "inbox", "day2.csv", export(rows, header))
        again = await run_engine(settings_for(path), deadline_s=60, clock=FakeClock(NOW))

    before, after = first.routes["crm->jodo"], again.routes["crm->jodo"]
    assert before.blocked == after.blocked == {"consent_expired": 1, "dnc_list:ndnc": 1}
    assert (after.rejected, after.unchanged, after.refused_before) == (3, 10, 1)
    assert after.mapped == 2  # C1 and D1: screened again; B1 refused from memory
    assert again.balanced
    assert {r["key"] for r in sim.holdings()["open"]} == {f"V{i}" for i in range(10)}
