"""The stores' schema steps: numbered SQL files never edited once released, each step a
store applied recorded with its checksum, a syncd older than its store refused, and the
repair of a PostgreSQL store an early migration 1 made."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from syncd import __version__
from syncd.errors import StoreError
from syncd.state import migrations
from syncd.state.postgres import PostgresStore, dsn_of
from syncd.state.sqlite import SqliteStore
from tests.conftest import cli_env, jodo_config, run_cli
from tests.support.stores import drop_schema, new_schema, pg_url

FOLDER = Path(migrations.__file__).parent

# The sha256 of every released migration file. A released file is never edited: a store
# that ran it will not run it again, so an edit reaches only new stores and the two then
# differ silently (issue 26: PostgreSQL's migration 1 gained an index in place). A change
# is a NEW file at the end, with its line added here; a line here is never changed.
RELEASED: dict[str, str] = {
    "sqlite/0001_initial.sql": "7909ea5cb2a932e03322337d82fa8ba4b4eb8dd34623b0b121b3cc1fe41d61d5",
    "sqlite/0002_writeback_refused.sql": "d65778fd7bfa0733e936a622a9ca4ff88e4dc62f8acab2346fed68fcd339ff38",
    "sqlite/0003_dnc_numbers.sql": "119fc3d8b43158ac8d8aa7a2fa19fa9043acf666d922248f7896029c96fa4f4f",
    "sqlite/0004_leads_waits_for.sql": "6125d66944bf732b91ae3153ea7573c7f131f09ffe91b8d8f43d6acb388946de",
    "sqlite/0005_audit_facts.sql": "f2b454fdaa9dcc5278c079d2c41e6674ecc04ac6651c6871ccc700a7e10dcc4d",
    "sqlite/0006_dnc_versions.sql": "56d86cd1f6a69f576e1eb229f475c3c5c889aa081733152ca7e32fa12b24c37f",
    "sqlite/0007_leads_dial_until.sql": "4e94f8109d7ae59e1e700f33bb0884c7107570d3d49f991b2449fa23e543728d",
    "sqlite/0008_leads_consent_index.sql": "d263017c1232febf33f61acfd47872ae24425d558e55d61c4bb7a38e919a149d",
    "sqlite/0009_leads_claim_token.sql": "3c1f2cccd4bd3c158e87e11e1c73fd5e1033ff7ca4a2f0e483eb7ca07029510b",
    "sqlite/0010_stats.sql": "4aedeaf17e7f569aebfd133b994b4ee142a363069044807d9d7aadfc16b83fcc",
    "sqlite/0011_leads_source.sql": "b8c06a8609f77792b4034175b4b9fd1a73f0e900d883d5d599b9e01da4b68585",
    "sqlite/0012_refused.sql": "e3a71d3e7b58cb3c9782b0124d5fde07faa6937995f47728f10869e56fc27e21",
    "sqlite/0013_leads_removals_index.sql": "709c19fda680a38f77e7a722bba23c95a5af62c4d7d10f56be45fecf409a7246",
    "sqlite/0014_status_indexes.sql": "9feb65a4b0f168bac44ea9fb2251285af7806b713146a04426d27fe7942c006a",
    "sqlite/0015_sink_ledger.sql": "2bbc819a1d4cc69dfb436292671c731d1a4ada6a2a81c71200dbe96ac880eb4e",
    "sqlite/0016_sink_ledger_ref.sql": "875dc783d7a11b43a22b8af45ee476f2bcd068f1638e9897485207ecc3aef5e6",
    "sqlite/0017_leads_doubt_number.sql": "24a125163c2464b1fbcb97810918fb9a3adb166ed825ef8b52dc71c3de4a96a3",
    "sqlite/0018_leads_rowid.sql": "0f6ecd37727397dba70385ffa952e25c1622c53906ece7b54352d47087615977",
    "postgres/0001_initial.sql": "57547165a7a98e5cae6f4488fef62a9cc4a0470c540088972255d797c491eadf",
    "postgres/0002_leads_waits_for.sql": "6125d66944bf732b91ae3153ea7573c7f131f09ffe91b8d8f43d6acb388946de",
    "postgres/0003_audit_facts.sql": "f2b454fdaa9dcc5278c079d2c41e6674ecc04ac6651c6871ccc700a7e10dcc4d",
    "postgres/0004_dnc_versions.sql": "d6ea96baa765d8b7daac45765d687d25f6d535034765889c02e6924bcf3c6658",
    "postgres/0005_leads_dial_until.sql": "2d12ad07e3a06701e58f4f57aed083d2ac7000194a06cffb8f264d2059045bdc",
    "postgres/0006_leads_consent_index.sql": "4e644d6e09690131bfc38cfad5dbeb56e41edf03411526f0d5408ae502ff330a",
    "postgres/0007_repair_indexes.sql": "801478c36a99a2ec186ec6cf68517c7bb057bf0b6c4b6444756e2e1a7c59c70f",
    "postgres/0008_replica_versions.sql": "4e1ce971a45c92a8df5663c253c0cedc28ebf73ebf91c76a762dc5007f69855e",
    "postgres/0009_leads_claim_token.sql": "3c1f2cccd4bd3c158e87e11e1c73fd5e1033ff7ca4a2f0e483eb7ca07029510b",
    "postgres/0010_stats.sql": "44e6e8147e6dd7e4afbdf64b3e849ca8802c4884ecc0ad1f265f63f2aa590cee",
    "postgres/0011_leads_removals_index.sql": "7b3df93c0f19eaf86ca5653b7cd071f841c106f83cd5d4200447a6e7605d744f",
    "postgres/0012_leads_source.sql": "b8c06a8609f77792b4034175b4b9fd1a73f0e900d883d5d599b9e01da4b68585",
    "postgres/0013_refused.sql": "32f311bbef55f7f62f36e0828630956b356d14c6b17214c207bedf2551aa37a2",
    "postgres/0014_status_indexes.sql": "184587563bf786a917df7a9ac5da77968b2f7a72c1e3e749ad8ddee86891d35f",
    "postgres/0015_sink_ledger.sql": "646a55da153f63558cdf0763ad4945b5389706b0a99229c733d3cb75398a3074",
    "postgres/0016_sink_ledger_ref.sql": "2cf1b98eb9256e91d12486972ce1573524ac88761f1184c255f03fa0ddf1995b",
    "postgres/0017_leads_doubt_number.sql": "e31f5596c63223fa92de03a8305035f335787fc09478cfdc65ee9a1e47a5286f",
    "postgres/0018_leads_phone_columns.sql": "00c7e3e73609d4589ff543e3e2d680e2e407d76a4b01ec465e56a2b58c72beec",
    "postgres/0019_leads_fewer_indexes.sql": "35ddb5a81575a860f61cd117f22e2a38f0770560a2e33e549efafe4f4b34d2a4",
}


@pytest.mark.parametrize("database", migrations.DATABASES)
def test_the_loader_finds_every_file_numbered_without_a_gap(database: str) -> None:
    on_disk = sorted(p.name for p in (FOLDER / database).glob("*.sql"))
    loaded = migrations.load(database)
    assert [m.name for m in loaded] == on_disk
    assert [m.number for m in loaded] == list(range(1, len(on_disk) + 1))
    assert all(m.sql.strip() for m in loaded)


def test_no_released_migration_file_was_edited() -> None:
    shipped = {
        f"{database}/{m.name}": m.sha256
        for database in migrations.DATABASES
        for m in migrations.load(database)
    }
    changed = sorted(name for name, sha in RELEASED.items() if shipped.get(name) != sha)
    assert not changed, f"released migrations edited or removed (write a new file): {changed}"
    unlisted = sorted(set(shipped) - set(RELEASED))
    assert not unlisted, f"new migration files: add their sha256 to RELEASED: {unlisted}"


def test_the_checksum_is_the_files_bytes() -> None:
    [first, *_] = migrations.load("sqlite")
    data = (FOLDER / "sqlite" / first.name).read_bytes()
    assert first.sha256 == hashlib.sha256(data).hexdigest()


# -- SQLite ------------------------------------------------------------------------------


def applied(db: Path) -> list[tuple[int, str, str | None]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT number, name, sha256 FROM migrations ORDER BY number"
        ).fetchall()


async def test_a_new_sqlite_store_records_every_step_with_its_checksum(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    await store.open()
    state = await store.schema_state()
    await store.close()
    shipped = migrations.load("sqlite")
    assert applied(tmp_path / "state.db") == [(m.number, m.name, m.sha256) for m in shipped]
    assert (state.at, state.knows, state.edited) == (len(shipped), len(shipped), [])


async def test_a_store_made_before_checksums_is_recorded_without_them_and_not_warned(
    tmp_path: Path,
) -> None:
    db = tmp_path / "state.db"
    store = SqliteStore(db)
    await store.open()
    await store.close()
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE migrations")  # as a store of the previous syncd has it
    store = SqliteStore(db)
    await store.open()
    state = await store.schema_state()
    await store.close()
    assert [sha for _, _, sha in applied(db)] == [None] * state.knows
    assert state.edited == []


async def test_a_step_the_store_ran_differently_is_reported_edited_after_release(
    tmp_path: Path,
) -> None:
    db = tmp_path / "state.db"
    store = SqliteStore(db)
    await store.open()
    await store.close()
    with sqlite3.connect(db) as conn:  # the store ran a 0003 other than the one shipped
        conn.execute("UPDATE migrations SET sha256 = ? WHERE number = 3", ("ab" * 32,))
    store = SqliteStore(db)
    with capture_logs() as logs:
        await store.open()
    state = await store.schema_state()
    await store.close()
    [warning] = state.edited
    assert "sqlite/0003_dnc_numbers.sql was edited after release" in warning
    assert [e["warning"] for e in logs if e["event"] == "state.migration.edited"] == [warning]


def store_one_step_ahead(db: Path) -> int:
    """Record a step past what this syncd knows, as a newer syncd's migration would."""
    ahead = len(migrations.load("sqlite")) + 1
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO migrations (number, name, sha256, applied_at) VALUES (?, ?, ?, 0)",
            (ahead, f"{ahead:04d}_future.sql", "cd" * 32),
        )
    return ahead


async def test_run_once_refuses_a_store_one_step_past_this_syncd(tmp_path: Path) -> None:
    config = jodo_config(tmp_path, "http://127.0.0.1:9")  # never reached
    db = tmp_path / "state" / "state.db"
    db.parent.mkdir()
    store = SqliteStore(db)
    await store.open()
    await store.close()
    ahead = store_one_step_ahead(db)
    before = applied(db)

    done = run_cli("run", "--once", "-c", str(config))

    assert done.returncode == 1, done.stderr
    said = done.stdout + done.stderr
    assert f"this syncd knows schema {ahead - 1}" in said
    assert f"is at schema {ahead}: upgrade syncd to one that knows schema {ahead}" in said
    assert applied(db) == before  # the refused syncd migrated nothing
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == ahead - 1


# -- PostgreSQL ---------------------------------------------------------------------------


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = new_schema()
    yield name
    await drop_schema(name)


async def connect(schema: str) -> asyncpg.Connection:
    url = dsn_of(pg_url())
    conn = await asyncpg.connect(url, server_settings={"search_path": schema})
    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    return conn


async def indexes(schema: str) -> dict[str, str]:
    conn = await connect(schema)
    try:
        rows = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1", schema
        )
    finally:
        await conn.close()
    return {r["indexname"]: r["indexdef"] for r in rows}


async def test_a_store_an_early_migration_1_made_gets_its_missing_indexes(schema: str) -> None:
    """Migration 1 as shipped before it was edited in place: no leads_inflight, and
    leads_outbox without `key`; the store recorded schema 6 and no checksums."""
    steps = migrations.load("postgres")
    early = (
        steps[0]
        .sql.replace("    CREATE INDEX leads_inflight ON leads (lease_holder)"
                     " WHERE state = 'inflight';\n", "")
        .replace("leads (sink, state, next_at, key)", "leads (sink, state, next_at)")
    )  # fmt: skip
    assert early != steps[0].sql
    conn = await connect(schema)
    try:
        async with conn.transaction():
            await conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            for number, sql in enumerate([early, *(s.sql for s in steps[1:6])], start=1):
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_version VALUES ($1)", number)
    finally:
        await conn.close()
    before = await indexes(schema)
    assert "leads_inflight" not in before and "next_at, key" not in before["leads_outbox"]

    store = PostgresStore(pg_url(), schema=schema)
    await store.open()
    try:
        state = await store.schema_state()
    finally:
        await store.close()

    after = await indexes(schema)
    assert after["leads_outbox"].endswith("(sink, state, next_at, key)")
    # step 7 made leads_inflight, step 19 dropped it (claims are renewed by sink): the
    # store ends with the indexes of a store made new
    assert after == await indexes_of_a_new_store(schema)
    assert (state.at, state.edited) == (len(steps), [])


async def indexes_of_a_new_store(named_as: str) -> dict[str, str]:
    """Return the indexes of a store made new, their definitions naming schema ``named_as``."""
    schema = new_schema()
    store = PostgresStore(pg_url(), schema=schema)
    await store.open()
    await store.close()
    try:
        made = await indexes(schema)
    finally:
        await drop_schema(schema)
    return {name: sql.replace(f" {schema}.", f" {named_as}.") for name, sql in made.items()}


async def test_a_new_postgres_store_records_every_step_and_repairs_nothing(schema: str) -> None:
    store = PostgresStore(pg_url(), schema=schema)
    await store.open()
    try:
        state = await store.schema_state()
    finally:
        await store.close()
    conn = await connect(schema)
    try:
        rows = await conn.fetch("SELECT number, name, sha256 FROM migrations ORDER BY number")
    finally:
        await conn.close()
    shipped = migrations.load("postgres")
    assert [tuple(r) for r in rows] == [(m.number, m.name, m.sha256) for m in shipped]
    assert (state.at, state.knows, state.edited) == (len(shipped), len(shipped), [])


async def test_a_replica_older_than_the_store_refuses_to_start_naming_both_versions(
    schema: str,
) -> None:
    store = PostgresStore(pg_url(), schema=schema)
    await store.open()
    await store.close()
    ahead = len(migrations.load("postgres")) + 1
    conn = await connect(schema)
    try:
        await conn.execute(
            "INSERT INTO migrations (number, name, sha256, applied_at) VALUES ($1, $2, $3, 0)",
            ahead,
            f"{ahead:04d}_future.sql",
            "cd" * 32,
        )
    finally:
        await conn.close()
    older = PostgresStore(pg_url(), schema=schema)
    with pytest.raises(StoreError) as refused:
        await older.open()
    assert f"this syncd knows schema {ahead - 1}, the state store" in str(refused.value)
    assert f"is at schema {ahead}: upgrade syncd" in str(refused.value)


async def test_status_lists_each_replica_with_its_syncd_and_schema(
    tmp_path: Path, schema: str
) -> None:
    config = jodo_config(tmp_path, "http://127.0.0.1:9")
    text = config.read_text().replace(
        "[state]\n", f'[state]\nurl = "{pg_url()}"\nschema_name = "{schema}"\n', 1
    )
    config.write_text(text)
    replica = PostgresStore(pg_url(), schema=schema)
    await replica.open()
    try:
        await replica.heartbeat()
        conn = await connect(schema)
        try:  # a replica of the previous syncd, started before the last step
            await conn.execute(
                "INSERT INTO replicas (holder, host, pid, started_at, seen_at, syncd_version,"
                " knows_schema) VALUES ('old-host:1:abcdef', 'old-host', 1, 0,"
                " extract(epoch from clock_timestamp()), '0.0.9', $1)",
                replica_knows := len(migrations.load("postgres")) - 1,
            )
        finally:
            await conn.close()
        shown = run_cli("status", "-c", str(config), env=cli_env(COLUMNS="200"))
    finally:
        await replica.close()

    assert shown.returncode == 0, shown.stderr
    out = " ".join(shown.stdout.split())
    knows = len(migrations.load("postgres"))
    assert f"store schema {knows} (this syncd knows {knows})" in out
    rows = {
        cells[0]: cells[1:3]
        for line in shown.stdout.splitlines()
        if len(cells := [c.strip() for c in line.strip("│ ").split("│")]) >= 3
    }
    assert rows[replica.holder] == [__version__, str(knows)]
    assert rows["old-host:1:abcdef"] == ["0.0.9", str(replica_knows)]
    assert (
        f"warning: replica old-host:1:abcdef runs syncd 0.0.9, built for schema {replica_knows}"
        in out
    )
