"""Instant pulls from a PostgreSQL CRM: its trigger NOTIFYs, the daemon pulls at once.

The CRM is a table on the test PostgreSQL; the trigger is what `syncd sql trigger`
prints, installed as a DBA would (psql-like, one script); the daemon runs as a
process with a pull schedule and a push tick of 300 s, so a row that reaches the
dialer within the deadline was pulled because the notification woke the pull.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from syncd.sources.sql_trigger import default_channel, table_of, trigger_sql
from tests.conftest import Simulated, cli_env, database_url, run_cli
from tests.support.configs import daemon_head, jodo_sink
from tests.test_daemon import wait_until

DEADLINE_S = 60.0  # far below the 300 s schedule: only a notification pulls within it

SOURCE = """
[[sources]]
name = "crm"
kind = "sql"
url = "env:CRM_DB_URL"
query = "SELECT id, phone, first_name, modified_at FROM {table}"
key_column = "id"
cursor_column = "modified_at"
overlap_s = 0
{listen}
[sources.schedule]
interval_s = 300

"""

ROUTE = """
[[routes]]
source = "crm"
sink = "jodo"
default_region = "IN"
[routes.map]
key = "id"
phone = "phone"
first_name = "first_name"
"""


def pg_dsn() -> str:
    return database_url("SYNCD_TEST_PG_URL").replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture
async def crm_table() -> AsyncIterator[str]:
    table = f"crm_listen_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(pg_dsn())
    await conn.execute(
        f"CREATE TABLE {table} (id bigint PRIMARY KEY, phone text, first_name text,"
        " modified_at timestamp NOT NULL DEFAULT now())"
    )
    try:
        yield table
    finally:
        await conn.execute(f"DROP TABLE {table} CASCADE")
        for name in ("syncd_notify_crm", "syncd_notify_crm_leads"):
            await conn.execute(f"DROP FUNCTION IF EXISTS {name}() CASCADE")
        await conn.close()


def write_config(tmp_path: Path, table: str, jodo_url: str, listen: str = "syncd_crm") -> Path:
    path = tmp_path / "syncd.toml"
    line = f'listen = "{listen}"' if listen else ""
    text = (
        daemon_head(tmp_path / "state" / "state.db")
        + SOURCE.format(table=table, listen=line)
        + jodo_sink(jodo_url)
        + ROUTE
    )
    path.write_text(text, encoding="utf-8")
    return path


def env() -> dict[str, str]:
    return cli_env(CRM_DB_URL=pg_dsn())


async def execute(sql: str, *args: Any) -> None:
    conn = await asyncpg.connect(pg_dsn())
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


@pytest.fixture
def daemon_of(start_daemon: Any) -> Iterator[Any]:
    def start(path: Path) -> Any:
        daemon = start_daemon(path, env())
        daemon.wait_for("daemon.ready")
        return daemon

    yield start


async def test_a_row_the_crm_inserts_reaches_the_dialer_without_waiting_for_the_schedule(
    tmp_path: Path, crm_table: str, jodo: Simulated, daemon_of: Any
) -> None:
    config = write_config(tmp_path, crm_table, jodo.url)
    printed = run_cli("sql", "trigger", "-c", str(config), "--source", "crm", env=env())
    assert printed.returncode == 0, printed.stderr
    assert "pg_notify('syncd_crm', '')" in printed.stdout  # an empty payload: no lead data
    await execute(printed.stdout)  # the DBA runs it
    await execute(f"INSERT INTO {crm_table} (id, phone) VALUES (0, '9845012340')")
    daemon = await asyncio.to_thread(daemon_of, config)
    await asyncio.to_thread(daemon.wait_for, "source.listening", source="crm")
    await asyncio.to_thread(  # the first pull, at the start
        wait_until, lambda: "0" in jodo.sim.received(), DEADLINE_S, lambda: daemon.events[-10:]
    )

    await execute(
        f"INSERT INTO {crm_table} (id, phone, first_name) VALUES (1, '9845012345', 'Asha')"
    )
    await asyncio.to_thread(
        wait_until, lambda: "1" in jodo.sim.received(), DEADLINE_S, lambda: daemon.events[-10:]
    )
    await execute(f"UPDATE {crm_table} SET first_name = 'Ravi', modified_at = now() WHERE id = 1")
    await asyncio.to_thread(
        wait_until, lambda: jodo.sim.received().get("1") == 2, DEADLINE_S, lambda: daemon.events
    )
    assert jodo.sim.records()[-1]["fname"] == "Ravi"
    assert daemon.stop() == 0


async def test_a_lost_listening_connection_is_said_and_listened_again_with_a_pull(
    tmp_path: Path, crm_table: str, jodo: Simulated, daemon_of: Any
) -> None:
    config = write_config(tmp_path, crm_table, jodo.url)
    await execute(run_cli("sql", "trigger", "-c", str(config), "--source", "crm", env=env()).stdout)
    daemon = await asyncio.to_thread(daemon_of, config)
    await asyncio.to_thread(daemon.wait_for, "source.listening", source="crm")

    # the DBA's maintenance: every session listening on the channel is cut off; a row
    # inserted meanwhile notified no one
    await execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = 'syncd listen crm'"
    )
    await execute(
        f"INSERT INTO {crm_table} (id, phone, first_name) VALUES (2, '9845012346', 'Meera')"
    )
    lost = await asyncio.to_thread(daemon.wait_for, "source.listen.lost", source="crm")
    assert "schedule" in lost["action"]
    await asyncio.to_thread(daemon.wait_for, "source.listen.resumed", source="crm")
    await asyncio.to_thread(
        wait_until, lambda: "2" in jodo.sim.received(), DEADLINE_S, lambda: daemon.events[-10:]
    )
    assert daemon.stop() == 0


async def test_metrics_say_whether_a_source_listens_0_while_its_connection_is_lost(
    tmp_path: Path, crm_table: str, jodo: Simulated, start_daemon: Any
) -> None:
    # the CRM's own user, which the DBA can lock out: the lost connection stays lost
    role = f"syncd_crm_{uuid.uuid4().hex[:8]}"
    await execute(f"CREATE ROLE {role} LOGIN")
    await execute(f"GRANT SELECT ON {crm_table} TO {role}")
    config = write_config(tmp_path, crm_table, jodo.url)
    await execute(run_cli("sql", "trigger", "-c", str(config), "--source", "crm", env=env()).stdout)
    as_role = cli_env(CRM_DB_URL=pg_dsn().replace("://postgres@", f"://{role}@", 1))
    try:
        daemon = start_daemon(config, as_role)
        await asyncio.to_thread(daemon.wait_for, "daemon.ready")
        await asyncio.to_thread(daemon.wait_for, "source.listening", source="crm")

        def listening(value: str) -> bool:
            text = httpx.get(f"{daemon.base_url}/metrics", timeout=30).text
            return f'syncd_source_listening{{source="crm"}} {value}' in text

        await asyncio.to_thread(wait_until, lambda: listening("1.0"), DEADLINE_S)
        await execute(f"ALTER ROLE {role} NOLOGIN")
        await execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'syncd listen crm'"
        )
        await asyncio.to_thread(daemon.wait_for, "source.listen.lost", source="crm")
        await asyncio.to_thread(wait_until, lambda: listening("0.0"), DEADLINE_S)

        await execute(f"ALTER ROLE {role} LOGIN")
        await asyncio.to_thread(daemon.wait_for, "source.listen.resumed", source="crm")
        await asyncio.to_thread(wait_until, lambda: listening("1.0"), DEADLINE_S)
        assert daemon.stop() == 0
    finally:
        await execute(f"ALTER ROLE {role} NOLOGIN")
        await execute(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
        )
        await execute(f"DROP OWNED BY {role}")
        await execute(f"DROP ROLE {role}")


def test_listen_is_refused_for_a_mysql_crm_with_what_to_do_instead(tmp_path: Path) -> None:
    config = write_config(tmp_path, "leads", "http://127.0.0.1:9")
    checked = run_cli(
        "check", "-c", str(config), env=cli_env(CRM_DB_URL="mysql://root@127.0.0.1/test")
    )
    assert checked.returncode == 2
    assert "listen works with a PostgreSQL CRM only" in checked.stderr + checked.stdout
    assert "interval_s" in checked.stderr + checked.stdout


def test_the_trigger_of_a_join_needs_the_table_named(tmp_path: Path) -> None:
    config = write_config(tmp_path, "leads l JOIN owners o ON o.id = l.owner", "http://x")
    bare = run_cli("sql", "trigger", "-c", str(config), "--source", "crm", env=env())
    assert bare.returncode == 2 and "--table" in bare.stderr
    named = run_cli(
        "sql", "trigger", "-c", str(config), "--source", "crm", "--table", "crm.leads", env=env()
    )
    assert named.returncode == 0 and "ON crm.leads" in named.stdout


TABLES = [
    ("SELECT id, phone FROM crm_lead", "crm_lead"),
    ("select id from public.crm_lead where active", "public.crm_lead"),
    ("SELECT l.id FROM leads l JOIN owners o ON o.id = l.owner", None),
    ("SELECT l.id FROM leads l, owners o WHERE o.id = l.owner", None),
    ("SELECT id FROM (SELECT * FROM leads) AS x", "leads"),
    ("SELECT id FROM leads WHERE id IN (SELECT lead FROM flags)", None),
    ('SELECT id FROM "Leads"', None),
]


@pytest.mark.parametrize(("query", "table"), TABLES)
def test_the_table_a_query_reads_is_found_only_when_it_is_one_plain_name(
    query: str, table: str | None
) -> None:
    assert table_of(query) == table


def test_a_channel_is_named_after_its_source_and_a_bad_one_is_refused() -> None:
    assert default_channel("CRM-leads.eu") == "syncd_crm_leads_eu"
    with pytest.raises(ValueError, match="channel"):
        trigger_sql("crm", "Robert'); DROP TABLE x; --", "leads")
    with pytest.raises(ValueError, match="plain name"):
        trigger_sql("crm", "syncd_crm", "leads; DROP TABLE x")
