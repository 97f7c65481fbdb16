"""An older version of a lead is not applied: the decision, the mapping, the chunk's split,
the webhook's answer and the store, without a daemon (tests/test_version_guard_e2e.py runs
them through one)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from syncd.config import RouteConfig
from syncd.core.mapping import Mapper, RowRejected, normalize_rows, route_fingerprint
from syncd.core.model import Action, Lead, LeadWrite, Reject, StoredLead
from syncd.core.reasons import reason_code
from syncd.core.reconcile import MappedRow, older_rows, plan_chunk
from syncd.core.versions import OLDER_VERSION, is_older, older_reason, read_version
from syncd.sources.webhook import Batch, answer
from syncd.state.base import ChunkWrite
from syncd.state.sqlite import SqliteStore
from tests.support.stores import KINDS, fresh_store


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


# -- the decision ------------------------------------------------------------------------

DECISIONS = [
    # (name, the row's time, the time held, older?)
    ("older", "2026-12-04T10:00:00+00:00", "2026-12-04T10:05:00+00:00", True),
    ("equal", "2026-12-04T10:05:00+00:00", "2026-12-04T10:05:00+00:00", False),
    ("newer", "2026-12-04T10:06:00+00:00", "2026-12-04T10:05:00+00:00", False),
    ("none stored", "2026-12-04T10:00:00+00:00", None, False),
    ("none given", None, "2026-12-04T10:05:00+00:00", False),
    ("neither", None, None, False),
    ("a microsecond older", "2026-12-04T10:04:59.999999+00:00", "2026-12-04T10:05:00+00:00", True),
    ("older, written in another zone", "2026-12-04T15:30:00+05:30", "2026-12-04T10:05:00Z", True),
    ("equal, written in another zone", "2026-12-04T15:35:00+05:30", "2026-12-04T10:05:00Z", False),
    ("newer, written in another zone", "2026-12-04T05:06:00-05:00", "2026-12-04T10:05:00Z", False),
    ("older across midnight in UTC", "2026-12-04T23:30:00-01:00", "2026-12-05T00:45:00Z", True),
]


@pytest.mark.parametrize(
    ("given", "held", "older"), [c[1:] for c in DECISIONS], ids=[c[0] for c in DECISIONS]
)
def test_a_row_is_older_only_when_both_times_are_known_and_it_is_before(
    given: str | None, held: str | None, older: bool
) -> None:
    assert is_older(at(given) if given else None, at(held) if held else None) is older


@pytest.mark.parametrize(
    ("text", "read"),
    [
        ("2026-12-04T10:05:00+00:00", at("2026-12-04T10:05:00+00:00")),
        (None, None),
        ("", None),
        ("not a time", None),
        ("2026-12-04T10:05:00", None),  # no zone: never written by syncd, decides nothing
    ],
)
def test_a_stored_version_time_that_is_not_one_decides_nothing(
    text: str | None, read: datetime | None
) -> None:
    assert read_version(text) == read


def test_the_reason_says_superseded_with_both_times_and_has_a_code_of_its_own() -> None:
    reason = older_reason("modified", at("2026-12-04T15:30:00+05:30"), at("2026-12-04T10:05Z"))
    assert reason == (
        f"{OLDER_VERSION} (column 'modified': 2026-12-04T10:00:00+00:00 is before "
        "2026-12-04T10:05:00+00:00)"
    )
    assert reason_code(reason) == "superseded: an older version"


# -- the mapping -------------------------------------------------------------------------

HEADER = ("id", "phone", "first", "modified")


def route(updated_at: str | None = "modified", **extra: Any) -> RouteConfig:
    mapping = {"key": "id", "phone": "phone", "first_name": "first"}
    if updated_at:
        mapping["updated_at"] = updated_at
    return RouteConfig.model_validate(
        {"source": "crm", "sink": "jodo", "default_region": "IN", "map": mapping, **extra}
    )


def test_a_rows_version_time_is_kept_with_its_lead_in_utc() -> None:
    mapper = Mapper(route(timezone="Asia/Kolkata"), HEADER)
    zoned = mapper.to_lead(["A1", "9845012345", "Asha", "2026-12-04T10:05:00Z"])
    local = mapper.to_lead(["A1", "9845012345", "Asha", "2026-12-04 15:35:00"])
    empty = mapper.to_lead(["A1", "9845012345", "Asha", ""])

    assert zoned.version_at == local.version_at == datetime(2026, 12, 4, 10, 5, tzinfo=UTC)
    assert zoned.to_json()["version_at"] == "2026-12-04T10:05:00+00:00"
    assert Lead.from_json(zoned.to_json()) == zoned
    assert empty.version_at is None and "version_at" not in empty.to_json()


@pytest.mark.parametrize("cell", ["soon", "2026-13-01 10:00", "0000-00-00 00:00:00", "1764842700"])
def test_a_version_time_that_cannot_be_read_refuses_the_row_naming_the_column(cell: str) -> None:
    mapper = Mapper(route(), HEADER)
    with pytest.raises(RowRejected, match=r"^invalid date .* in column 'modified'$"):
        mapper.to_lead(["A1", "9845012345", "Asha", cell])


def test_the_content_hash_leaves_the_version_time_out() -> None:
    rows = [
        (2, ["A1", "9845012345", "Asha", "2026-12-04 10:05:00"]),
        (3, ["A1", "9845012345", "Asha", "2026-12-04 11:00:00"]),
        (4, ["A1", "9845012345", "Asha", ""]),
    ]
    versioned = normalize_rows(route().model_dump_json(), HEADER, rows)
    plain = normalize_rows(route(None).model_dump_json(), HEADER, rows[:1])

    assert len({r[2] for r in versioned}) == 1  # the same content at any time: unchanged
    assert versioned[0][2] == plain[0][2]  # and as it hashed before versions were kept
    assert json.loads(versioned[0][3] or "")["version_at"] == "2026-12-04T10:05:00+00:00"
    assert "version_at" not in (plain[0][3] or "")


def test_a_lead_the_gate_blocks_carries_its_version_time_in_its_removal() -> None:
    blocked = route(policy={"dnc_column": "first"})
    [row] = normalize_rows(
        blocked.model_dump_json(), HEADER, [(2, ["A1", "9845012345", "yes", "2026-12-04 10:05"])]
    )
    [plain] = normalize_rows(
        route(None, policy={"dnc_column": "first"}).model_dump_json(),
        HEADER,
        [(2, ["A1", "9845012345", "yes", "2026-12-04 10:05"])],
    )
    assert row[4] is not None and row[4].startswith("blocked (dnc_crm)")
    assert json.loads(row[3] or "")["version_at"] == "2026-12-04T10:05:00+00:00"
    assert row[2] == plain[2]  # the removal's hash is the one it always had


def test_a_route_without_a_version_column_reads_as_it_did_before_the_setting() -> None:
    before = route(None).model_dump(exclude={"map": {"updated_at"}})
    text = RouteConfig.model_validate(before).model_dump_json(exclude={"map": {"updated_at"}})
    assert route_fingerprint(route(None)) == route_fingerprint(RouteConfig.model_validate(before))
    assert "updated_at" not in text
    assert route_fingerprint(route()) != route_fingerprint(route(None))  # set: mapped again


# -- the chunk's split -------------------------------------------------------------------


def held(version: str | None) -> StoredLead:
    return StoredLead("h", "raw", "delivered", "a.csv", 2, "run1", "new", True, version)


def row(line: int, key: str, version: str | None, *, deleted: bool = False) -> MappedRow:
    data: dict[str, Any] = {"key": key, "deleted": True} if deleted else {"key": key, "phone": "+1"}
    if version:
        data["version_at"] = version
    text = orjson.dumps(data).decode()
    return (line, key, f"h{line}", text, None, deleted, "")


REFUSED: MappedRow = (5, "E", None, None, "invalid phone 'x' in column 'phone'", False, "")

T1000, T1005, T1006 = "2026-12-04T10:00:00+00:00", "2026-12-04T10:05:00+00:00", "2026-12-04T10:06Z"

SPLITS = [
    # (name, mapped row, what the store holds of its key, older?)
    ("older than held", row(2, "A", T1000), held(T1005), True),
    ("as old as held", row(2, "A", T1005), held(T1005), False),
    ("newer than held", row(2, "A", T1006), held(T1005), False),
    ("held without a time", row(2, "A", T1000), held(None), False),
    ("never held", row(2, "A", T1000), None, False),
    ("a row without a time", row(2, "A", None), held(T1005), False),
    ("an older removal", row(2, "A", T1000, deleted=True), held(T1005), True),
    ("a row mapping refused", REFUSED, held(T1005), False),
]


@pytest.mark.parametrize(
    ("mapped", "stored", "older"), [c[1:] for c in SPLITS], ids=[c[0] for c in SPLITS]
)
def test_older_rows_are_set_aside_and_the_rest_keep_their_times(
    mapped: MappedRow, stored: StoredLead | None, older: bool
) -> None:
    line, key = mapped[0], mapped[1]
    split = older_rows([mapped], {line: [key, "x"]}, {key: stored}, "modified")
    assert [r.line for r in split.older] == ([line] if older else [])
    assert split.current == ([] if older else [mapped])
    if older:
        assert split.older[0].reason.startswith(f"{OLDER_VERSION} (column 'modified': ")
        assert split.older[0].values == [key, "x"]
        assert split.times == {}


def test_a_row_of_unchanged_content_still_records_its_newer_time() -> None:
    mapped = (2, "A", "h", '{"key":"A","version_at":"2026-12-04T11:00:00+00:00"}', None, False, "")
    split = older_rows([mapped], {2: ["A"]}, {"A": held("2026-12-04T10:05:00+00:00")}, "m")
    plan = plan_chunk(
        split.current,
        {2: ["A"]},
        {2: "raw2"},
        {"A": held("2026-12-04T10:05:00+00:00")},
        origin="b.csv",
        run_id="run2",
        versions=split.times,
    )
    [write] = plan.writes
    assert (write.klass, write.enqueue, write.version_at) == (
        "unchanged",
        False,
        "2026-12-04T11:00:00+00:00",
    )


# -- the webhook's answer ----------------------------------------------------------------


def older_reject(line: int) -> Reject:
    reason = older_reason("updated", at("2026-12-04T10:00Z"), at("2026-12-04T10:05Z"))
    return Reject("form", reason, line, "post-1", [], "A")


def test_a_post_whose_row_is_older_is_a_202_listing_it_superseded() -> None:
    said = answer(Batch(2, rows=[(0, {}), (1, {})]), [("jodo", older_reject(2))], "form")
    assert said.status == 202
    assert said.document == {
        "accepted": [0, 1],
        "refused": [],
        "replayed": False,
        "superseded": [{"row": 1, "field": "updated", "reason": OLDER_VERSION, "sink": "jodo"}],
    }


def test_a_post_with_an_older_row_and_a_refused_one_is_a_400_listing_each() -> None:
    refused = Reject("form", "invalid phone '1' in column 'phone'", 1, "post-1")
    said = answer(
        Batch(2, rows=[(0, {}), (1, {})]), [("jodo", refused), ("jodo", older_reject(2))], "form"
    )
    assert said.status == 400
    assert said.document["accepted"] == [1]
    assert [r["row"] for r in said.document["refused"]] == [0]
    assert [r["row"] for r in said.document["superseded"]] == [1]


# -- the store: the time held, read where reconcile reads the stored row -----------------


@pytest.fixture(params=KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with fresh_store(request.param, tmp_path) as s:
        yield s


async def write(store: SqliteStore, *leads: LeadWrite) -> None:
    chunk = ChunkWrite("run1", "crm", "a.csv")
    chunk.leads["jodo"] = list(leads)
    await store.apply_chunk(chunk)


def stored_json(key: str, version: str | None = None, **extra: Any) -> str:
    lead = Lead(key=key, phone="+919845012345", first_name="Asha", **extra)
    lead.version_at = at(version) if version else None
    return orjson.dumps(lead.to_json(), option=orjson.OPT_SORT_KEYS).decode()


async def test_the_lookup_reads_the_version_time_of_the_stored_lead(store: SqliteStore) -> None:
    await write(
        store,
        LeadWrite("A", "h", "r1", stored_json("A", "2026-12-04T10:05Z"), Action.UPSERT, "new", 2),
        LeadWrite("B", "h", "r1", stored_json("B"), Action.UPSERT, "new", 3),
    )
    found = await store.lookup_changed("jodo", [("A", "r2"), ("B", "r2"), ("C", "r2")], "b.csv")
    assert found["A"] is not None and found["A"].version_at == "2026-12-04T10:05:00+00:00"
    assert found["B"] is not None and found["B"].version_at is None
    assert found["C"] is None


async def test_a_refresh_at_a_newer_time_sets_the_time_alone(store: SqliteStore) -> None:
    marked = stored_json("A", "2026-12-04T10:05Z", withdrawn="window_closed")
    await write(
        store,
        LeadWrite("A", "h", "r1", marked, Action.UPSERT, "new", 2),
        LeadWrite("C", "h", "r1", stored_json("C"), Action.UPSERT, "new", 4),
    )
    await write(  # two refreshes at once: PostgreSQL takes them as one statement
        store,
        LeadWrite("A", "h", "r2", stored_json("A", "2026-12-04T11:00Z"), Action.UPSERT,
                  "unchanged", 2, False, version_at="2026-12-04T11:00:00+00:00"),
        LeadWrite("B", "h", "r2", stored_json("B"), Action.UPSERT, "new", 3),
        LeadWrite("C", "h", "r2", stored_json("C", "2026-12-04T09:00Z"), Action.UPSERT,
                  "unchanged", 4, False, version_at="2026-12-04T09:00:00+00:00"),
    )  # fmt: skip

    found = await store.lookup_changed("jodo", [("A", "r3"), ("C", "r3")], "b.csv")
    assert found["C"] is not None and found["C"].version_at == "2026-12-04T09:00:00+00:00"
    [history] = (await store.lead_history("A"))["leads"]
    kept = json.loads(history["lead_json"])
    assert found["A"] is not None and found["A"].version_at == "2026-12-04T11:00:00+00:00"
    assert found["A"].raw_hash == "r2" and found["A"].hash == "h"
    assert kept["withdrawn"] == "window_closed" and kept["first_name"] == "Asha"
