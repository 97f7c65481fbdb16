"""`syncd check --online`: every secret, source, dialer, writeback and the store tried,
through the CLI, against the Jodo simulator and temp folders (issue 28, point 5)."""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.simulators.jodo.api import JodoSimulator, create_app
from syncd.simulators.server import running
from tests.conftest import Simulated, cli_env, run_cli

WRONG_KEY = "not-the-key-5d1f"  # must never be printed
EXIT_ONLINE = 4

ROUTE = """
[[routes]]
source = "{source}"
sink = "{sink}"
default_region = "IN"
[routes.map]
key = "id"
phone = "phone"
"""


def webhook(name: str, url: str) -> str:
    return f"""
[[writebacks]]
name = "{name}"
kind = "webhook"
url = "{url}"
secret = "env:TEST_JODO_APIKEY"
"""


def jodo_sink(name: str, url: str, apikey: str) -> str:
    return f"""
[[sinks]]
name = "{name}"
kind = "jodo"
url = "{url}/CustomerWebServices/handleCustomerWS"
apikey = "{apikey}"
servicekey = "VoiceProcess"
media = 12
updateparam = "crmuniquefield"
"""


def crm_db(path: Path) -> Path:
    """Write a CRM database with a leads table (and nothing else) and return its path."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE leads (id TEXT PRIMARY KEY, phone TEXT, status TEXT)")
        db.execute("INSERT INTO leads VALUES ('L1', '+919820012345', '')")
    return path


def sql_source(name: str, url: str, query: str = "SELECT id, phone FROM leads") -> str:
    return f"""
[[sources]]
name = "{name}"
kind = "sql"
url = "{url}"
query = "{query}"
key_column = "id"
"""


def sql_writeback(name: str, url: str, statement: str) -> str:
    return f"""
[[writebacks]]
name = "{name}"
kind = "sql"
url = "{url}"
statement = "{statement}"
"""


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound but not listening: a connection to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def write(tmp_path: Path, *parts: str) -> Path:
    path = tmp_path / "syncd.toml"
    state = tmp_path / "state" / "state.db"
    path.write_text(f'[state]\npath = "{state}"\n' + "".join(parts), encoding="utf-8")
    return path


def good_parts(tmp_path: Path, url: str) -> list[str]:
    db = crm_db(tmp_path / "crm.db")
    (tmp_path / "inbox").mkdir()
    return [
        f'\n[[sources]]\nname = "drop"\nkind = "csv_drop"\ninbox = "{tmp_path / "inbox"}"\n',
        sql_source("crm", f"sqlite:///{db}"),
        jodo_sink("jodo", url, "env:TEST_JODO_APIKEY"),
        ROUTE.format(source="drop", sink="jodo"),
        ROUTE.format(source="crm", sink="jodo"),
        sql_writeback(
            "crm-status", f"sqlite:///{db}", "UPDATE leads SET status = :status WHERE id = :key"
        ),
        f'\n[[writebacks]]\nname = "files"\nkind = "csv"\noutbox = "{tmp_path / "out"}"\n',
        webhook("hook", f"{url}/crm-hook"),
    ]


def test_a_good_config_passes_every_online_check_and_writes_nothing(
    tmp_path: Path, jodo: Simulated
) -> None:
    config = write(tmp_path, *good_parts(tmp_path, jodo.url))

    done = run_cli("check", "--online", "-c", str(config))

    assert done.returncode == 0, done.stdout + done.stderr
    assert "online: all 9 check(s) passed" in done.stdout, done.stdout
    for part in (
        "secret sinks[0].apikey (env:TEST_JODO_APIKEY): read",
        "state store (sqlite): ",
        "sources[0] drop (csv_drop): inbox",
        "sources[1] crm (sql): the database answered the query's first row",
        "sinks[0] jodo (jodo): getProcessData answered",
        "writebacks[0] crm-status (sql): the database compiled 1 statement(s)",
        "writebacks[1] files (csv): outbox",
        "writebacks[2] hook (webhook): ",
        "answered OPTIONS with HTTP",
    ):
        assert part in done.stdout, done.stdout
    # Nothing was pushed, created or written: the dialer saw one read, the CRM is as it was.
    assert set(jodo.sim.requests) == {"getProcessData"}
    assert not (tmp_path / "state").exists()
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in (tmp_path / "inbox").iterdir()) == []
    with sqlite3.connect(tmp_path / "crm.db") as db:
        assert db.execute("SELECT status FROM leads").fetchall() == [("",)]


def test_a_disposing_login_the_dialer_lacks_fails_the_check_naming_dispositions_login(
    tmp_path: Path, jodo: Simulated
) -> None:
    """A CRM deletion is disposed as ``dispositions.login``: a login Jodo does not
    have refuses every removal at run time, so the check asks userStatus first."""
    disposing = (
        '[sinks.dispositions]\nlogin = "closer"\n'
        "on_delete = { dispomasterid = 1, disporeasonid = 2 }\n"
    )
    parts = good_parts(tmp_path, jodo.url)
    parts[2] += disposing
    config = write(tmp_path, *parts)

    missing = run_cli("check", "--online", "-c", str(config))
    jodo.sim.set_agent_status("closer", 1)
    present = run_cli("check", "--online", "-c", str(config))

    assert missing.returncode == EXIT_ONLINE, missing.stdout + missing.stderr
    assert "FAILED  sinks[0] jodo (jodo): " in missing.stdout, missing.stdout
    assert "'closer'" in missing.stdout and "User not found" in missing.stdout, missing.stdout
    assert "fix sinks[0].dispositions.login" in missing.stdout, missing.stdout
    assert present.returncode == 0, present.stdout + present.stderr
    assert "login 'closer' (dispositions.login) found" in present.stdout, present.stdout
    assert set(jodo.sim.requests) == {"getProcessData", "userStatus"}  # reads only


def test_every_broken_part_is_named_with_its_field_in_one_run(
    tmp_path: Path, jodo: Simulated, closed_port: int
) -> None:
    db = crm_db(tmp_path / "crm.db")
    missing_secret = tmp_path / "credentials" / "jodo_c_apikey"
    config = write(
        tmp_path,
        f'\n[[sources]]\nname = "drop"\nkind = "csv_drop"\ninbox = "{tmp_path / "no-inbox"}"\n',
        sql_source("gone-db", f"sqlite:///{tmp_path / 'no-such-dir' / 'crm.db'}"),
        sql_source("bad-query", f"sqlite:///{db}", "SELECT id, phone FROM no_such_table"),
        jodo_sink("jodo-a", f"http://127.0.0.1:{closed_port}", "env:TEST_JODO_APIKEY"),
        jodo_sink("jodo-b", jodo.url, "env:WRONG_JODO_APIKEY"),
        jodo_sink("jodo-c", jodo.url, f"file:{missing_secret}"),
        ROUTE.format(source="drop", sink="jodo-a"),
        ROUTE.format(source="gone-db", sink="jodo-b"),
        ROUTE.format(source="bad-query", sink="jodo-c"),
        sql_writeback(
            "crm-status",
            f"sqlite:///{db}",
            "UPDATE leads SET dialer_status = :status WHERE id = :key",
        ),
        webhook("hook", f"http://127.0.0.1:{closed_port}/crm-hook"),
    )

    done = run_cli("check", "--online", "-c", str(config), env=cli_env(WRONG_JODO_APIKEY=WRONG_KEY))

    out = done.stdout
    assert done.returncode == EXIT_ONLINE, out + done.stderr

    def failed(part: str, *words: str) -> None:
        head = f"  FAILED  {part}: "
        line = next((line for line in out.splitlines() if line.startswith(head)), "")
        assert line, f"{part} not reported as failed:\n{out}"
        for word in words:
            assert word in line, f"{word!r} not in {line!r}"

    failed("sources[0] drop (csv_drop)", "does not exist", "fix sources[0].inbox")
    failed("sources[1] gone-db (sql)", "cannot connect to the database", "fix sources[1].url")
    failed(
        "sources[2] bad-query (sql)",
        "the database refused the query",
        "no such table",
        "fix sources[2].query",
    )
    failed("sinks[0] jodo-a (jodo)", "cannot reach it", f":{closed_port}", "sinks[0].url")
    failed("sinks[1] jodo-b (jodo)", "apikey", "code 1107", "fix sinks[1].apikey")
    failed(
        f"secret sinks[2].apikey (file:{missing_secret})",
        "cannot read secret file",
        "No such file",
    )
    assert "skipped sinks[2] jodo-c (jodo): not tried: a secret of sinks[2]" in out, out
    failed(
        "writebacks[0] crm-status (sql)",
        "no such column: dialer_status",
        "fix writebacks[0].statement",
    )
    failed("writebacks[1] hook (webhook)", "cannot reach", "fix writebacks[1].url")
    assert "ok      state store (sqlite)" in out, out
    assert "online: 8 of 13 check(s) failed (exit 4)" in out, out
    assert WRONG_KEY not in out + done.stderr
    assert "Traceback" not in done.stderr
    # The good dialer was only read from, and only by the sink with the wrong key.
    assert set(jodo.sim.requests) == {"getProcessData"}


def test_a_relative_file_secret_outside_systemd_says_where_it_is_read_from(
    tmp_path: Path, jodo: Simulated
) -> None:
    (tmp_path / "inbox").mkdir()
    config = write(
        tmp_path,
        f'\n[[sources]]\nname = "drop"\nkind = "csv_drop"\ninbox = "{tmp_path / "inbox"}"\n',
        jodo_sink("jodo", jodo.url, "file:jodo_apikey"),
        ROUTE.format(source="drop", sink="jodo"),
    )
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "jodo_apikey").write_text("test_org\n", encoding="utf-8")

    outside = run_cli("check", "--online", "-c", str(config))
    inside = run_cli(
        "check",
        "--online",
        "-c",
        str(config),
        env=cli_env(CREDENTIALS_DIRECTORY=str(credentials)),
    )

    assert outside.returncode == EXIT_ONLINE, outside.stdout + outside.stderr
    assert "$CREDENTIALS_DIRECTORY, which is not set here" in outside.stdout
    assert "fix" not in outside.stderr  # not an invalid config: the secret's line says it
    assert inside.returncode == 0, inside.stdout + inside.stderr
    assert "sinks[0] jodo (jodo): getProcessData answered" in inside.stdout


def test_a_dialer_that_never_answers_is_reported_within_the_timeout(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        config = write(
            tmp_path,
            f'\n[[sources]]\nname = "drop"\nkind = "csv_drop"\ninbox = "{tmp_path / "inbox"}"\n',
            jodo_sink("jodo", f"http://127.0.0.1:{port}", "env:TEST_JODO_APIKEY"),
            ROUTE.format(source="drop", sink="jodo"),
        )
        started = time.monotonic()
        done = run_cli("check", "--online", "--timeout", "1", "-c", str(config))
        took = time.monotonic() - started

    assert done.returncode == EXIT_ONLINE, done.stdout + done.stderr
    assert "sinks[0] jodo (jodo): no answer within 1 s from http://127.0.0.1:" in done.stdout
    assert "check sinks[0].url" in done.stdout
    assert took < 15, took  # the interpreter's start included; the sink's own timeout is 30 s


def test_an_unreachable_postgresql_store_names_state_url(tmp_path: Path, closed_port: int) -> None:
    (tmp_path / "inbox").mkdir()
    sim = JodoSimulator()
    with running(create_app(sim)) as url:
        path = tmp_path / "syncd.toml"
        path.write_text(
            f'[state]\nurl = "postgresql://syncd@127.0.0.1:{closed_port}/syncd"\n'
            f'\n[[sources]]\nname = "drop"\nkind = "csv_drop"\ninbox = "{tmp_path / "inbox"}"\n'
            + jodo_sink("jodo", url, "env:TEST_JODO_APIKEY")
            + ROUTE.format(source="drop", sink="jodo"),
            encoding="utf-8",
        )
        done = run_cli("check", "--online", "-c", str(path))

    assert done.returncode == EXIT_ONLINE, done.stdout + done.stderr
    assert "FAILED  state store (postgresql): cannot connect to the store" in done.stdout
    assert "fix state.url" in done.stdout
    assert "ok      sinks[0] jodo (jodo)" in done.stdout  # the store did not block the rest


def test_ameyo_is_logged_in_to_and_read_and_a_wrong_password_names_auth(tmp_path: Path) -> None:
    from syncd.simulators.ameyo.api import AmeyoSimulator
    from syncd.simulators.ameyo.api import create_app as ameyo_app
    from tests.test_ameyo_cli import write_config

    sim = AmeyoSimulator(users={"syncd": "secret"}, dialing=False)
    with running(ameyo_app(sim)) as url:
        config = write_config(tmp_path, url)
        good = run_cli(
            "check", "--online", "-c", str(config), env=cli_env(TEST_AMEYO_PASSWORD="secret")
        )
        bad = run_cli(
            "check", "--online", "-c", str(config), env=cli_env(TEST_AMEYO_PASSWORD=WRONG_KEY)
        )

    assert good.returncode == 0, good.stdout + good.stderr
    assert "ok      sinks[0] ameyo (ameyo): logged in; lead 1 of campaign 1 found" in good.stdout
    assert bad.returncode == EXIT_ONLINE, bad.stdout + bad.stderr
    assert (
        "FAILED  sinks[0] ameyo (ameyo): the dialer refused the sink: login as 'syncd'"
        in bad.stdout
    )
    assert "fix sinks[0].auth.user_id or sinks[0].auth.password" in bad.stdout
    assert WRONG_KEY not in bad.stdout + bad.stderr
    assert sim.customer_list() == []  # read only


def test_ucontact_is_logged_in_to_and_its_campaign_looked_up_without_storing(
    tmp_path: Path,
) -> None:
    from tests.support.ucontact import served
    from tests.test_ucontact_cli import write_config

    with served() as (sim, url):
        config = write_config(tmp_path, url)
        good = run_cli(
            "check", "--online", "-c", str(config), env=cli_env(TEST_UCONTACT_PASSWORD="secret")
        )
        bad = run_cli(
            "check", "--online", "-c", str(config), env=cli_env(TEST_UCONTACT_PASSWORD=WRONG_KEY)
        )

    assert good.returncode == 0, good.stdout + good.stderr
    assert "ok      sinks[0] uc (ucontact): logged in; campaign 'Ventas->' found" in good.stdout
    assert bad.returncode == EXIT_ONLINE, bad.stdout + bad.stderr
    assert "FAILED  sinks[0] uc (ucontact): the dialer refused the login" in bad.stdout
    assert "fix sinks[0].user or sinks[0].password" in bad.stdout
    assert WRONG_KEY not in bad.stdout + bad.stderr
    assert sim.uploads_made() == []
    assert not (tmp_path / "state").exists()


async def test_a_sql_writeback_is_compiled_by_postgresql_and_mysql_never_run() -> None:
    # SQLite EXPLAINs in the CLI tests above; PostgreSQL prepares, MariaDB/MySQL EXPLAIN.
    import asyncpg
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from syncd.errors import CheckFailed
    from syncd.state.postgres import dsn_of
    from syncd.writeback.sql import SqlWriteback, SqlWritebackConfig
    from tests.conftest import database_url
    from tests.support.stores import drop_schema, new_schema, pg_url

    async def verdicts(url: str, table: str) -> list[str]:
        said = []
        for column in ("status", "no_such_column"):
            statement = f"UPDATE {table} SET {column} = :status WHERE id = :key"
            config = SqlWritebackConfig(name="w", kind="sql", url=url, statement=statement)
            try:
                said.append(await SqlWriteback(config).probe())
            except CheckFailed as exc:
                said.append(f"FAILED {exc.reason} / {exc.settings}")
        return said

    schema = new_schema()
    conn = await asyncpg.connect(dsn_of(pg_url()))
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(f"CREATE TABLE {schema}.leads (id text PRIMARY KEY, status text)")
        await conn.execute(f"INSERT INTO {schema}.leads VALUES ('L1', '')")
        ok, bad = await verdicts(pg_url(), f"{schema}.leads")
        assert await conn.fetchval(f"SELECT status FROM {schema}.leads") == ""
    finally:
        await conn.close()
        await drop_schema(schema)
    assert ok.startswith("the database compiled 1 statement(s)"), ok
    assert 'column "no_such_column"' in bad and "('statement',)" in bad, bad

    mysql = database_url("SYNCD_TEST_MYSQL_URL")
    table = new_schema()
    engine = create_async_engine(mysql)
    try:
        async with engine.begin() as c:
            await c.execute(text(f"CREATE TABLE {table} (id VARCHAR(20) PRIMARY KEY, status TEXT)"))
            await c.execute(text(f"INSERT INTO {table} VALUES ('L1', '')"))
        ok, bad = await verdicts(mysql, table)
        async with engine.connect() as c:
            assert (await c.execute(text(f"SELECT status FROM {table}"))).scalar() == ""
    finally:
        async with engine.begin() as c:
            await c.execute(text(f"DROP TABLE IF EXISTS {table}"))
        await engine.dispose()
    assert ok.startswith("the database compiled 1 statement(s)"), ok
    assert "Unknown column 'no_such_column'" in bad, bad
