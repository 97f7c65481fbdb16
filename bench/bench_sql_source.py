"""Benchmark: syncd's SQL source against a minimal streaming prototype, in one sitting.

Builds an Odoo-shaped ``crm_lead`` table on PostgreSQL and a vtiger-shaped join on
MariaDB/MySQL (each in a schema/database of its own, dropped afterwards), then, per
database:

1. ``syncd run --once`` from the table into a Jodo simulator (the initial sync);
2. a minimal prototype on the same rows into a second simulator: one streaming cursor,
   a blake2b hash per row, SQLite state, rphonenumbers validation, batched POSTs;
3. 1% of the rows changed, ``syncd run --once`` (the incremental pull);
4. ``syncd run --once --full`` (every row read again, nothing to push).

It prints what it measures for people, then one ``FIGURE {json}`` line per figure:
the initial sync's ratio to the prototype, and ``--full``'s pull cost per row against
the incremental pull's (issue 27's targets: ≤ 1.5× each).

    python bench/bench_sql_source.py                       # both databases, 100k rows
    python bench/bench_sql_source.py --source mysql --rows 1000000
    python bench/bench_sql_source.py --syncd-path /tmp/base   # another checkout's syncd

Database URLs: SYNCD_BENCH_PG_URL (default postgresql://postgres@127.0.0.1:5432/test),
SYNCD_BENCH_MYSQL_URL (default mysql://root@127.0.0.1:3306/test).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sync import free_port, wait_http
from prototype_csv import post
from tree_memory import measured_child

PG_URL = os.environ.get("SYNCD_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("SYNCD_BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")

# -- the CRM tables ------------------------------------------------------------------------

# Phones the way CRM users type them; one in fifty is no number at all.
PG_PHONE = (
    "CASE WHEN g % 50 = 7 THEN 'n/a'"
    " WHEN g % 5 = 0 THEN '98' || lpad(((g * 7919) % 100000000)::text, 8, '0')"
    " WHEN g % 5 = 1 THEN '+91 98' || lpad(((g * 7919) % 100000000)::text, 8, '0')"
    " WHEN g % 5 = 2 THEN '0091-98' || lpad(((g * 7919) % 100000000)::text, 8, '0')"
    " ELSE '098' || lpad(((g * 7919) % 100000000)::text, 8, '0') END"
)
MY_PHONE = (
    "CASE WHEN seq % 50 = 7 THEN 'n/a'"
    " WHEN seq % 5 = 0 THEN CONCAT('98', LPAD((seq * 7919) % 100000000, 8, '0'))"
    " WHEN seq % 5 = 1 THEN CONCAT('+91 98', LPAD((seq * 7919) % 100000000, 8, '0'))"
    " WHEN seq % 5 = 2 THEN CONCAT('0091-98', LPAD((seq * 7919) % 100000000, 8, '0'))"
    " ELSE CONCAT('098', LPAD((seq * 7919) % 100000000, 8, '0')) END"
)


@dataclass
class Crm:
    """One CRM shape on one database: how to build it, query it and change 1% of it."""

    kind: str  # postgresql | mysql
    url: str
    space: str  # the schema (PostgreSQL) or database (MariaDB) holding the tables
    build: list[str]
    query: str
    key: str
    cursor: str
    change: list[str]
    drop: str
    sync_index: str  # the index on (cursor, key) a DBA may add for syncd


def odoo(rows: int, space: str) -> Crm:
    """Odoo's crm_lead on PostgreSQL: one wide table, ~50 leads per write_date second."""
    t = f"{space}.crm_lead"
    return Crm(
        "postgresql",
        PG_URL,
        space,
        [
            f"CREATE SCHEMA {space}",
            f"CREATE TABLE {t} (id serial PRIMARY KEY, name varchar NOT NULL,"
            " partner_name varchar, contact_name varchar, email_from varchar, phone varchar,"
            " mobile varchar, street varchar, city varchar, zip varchar, country_id int,"
            " user_id int, team_id int, stage_id int, type varchar NOT NULL DEFAULT 'lead',"
            " active boolean DEFAULT true, priority varchar, description text,"
            " create_date timestamp, write_date timestamp)",
            f"INSERT INTO {t} (id, name, partner_name, contact_name, email_from, phone, mobile,"
            " street, city, zip, country_id, user_id, team_id, stage_id, type, active, priority,"
            " description, create_date, write_date)"
            " SELECT g, 'Lead ' || g, 'Company ' || (g % 997), 'Contact ' || g,"
            f" 'lead' || g || '@example.com', CASE WHEN g % 3 = 0 THEN '022 2345 6789' END,"
            f" {PG_PHONE}, g || ' MG Road',"
            " (ARRAY['Mumbai','Pune','Delhi','Chennai','Kolkata','Bengaluru'])[g % 6 + 1],"
            " lpad((400000 + g % 1000)::text, 6, '0'), 104, g % 40 + 1, g % 5 + 1, g % 6 + 1,"
            " CASE WHEN g % 20 = 0 THEN 'opportunity' ELSE 'lead' END, true, '1',"
            " repeat('A note about the lead. ', 4),"
            " timestamp '2026-01-01' + g * interval '1 second',"
            " timestamp '2026-11-01' + (g / 50) * interval '1 second'"
            f" FROM generate_series(1::bigint, {rows}) AS g",
            # Odoo's own indexes on crm_lead (write_date has none: see --sync-index).
            f"CREATE INDEX crm_lead_user_id_index ON {t} (user_id)",
            f"CREATE INDEX crm_lead_team_id_index ON {t} (team_id)",
            f"CREATE INDEX crm_lead_stage_id_index ON {t} (stage_id)",
            f"ANALYZE {t}",
        ],
        f"SELECT id, contact_name, partner_name, email_from, phone, mobile, city, write_date"
        f" FROM {t} WHERE type = 'lead' AND active",
        "id",
        "write_date",
        [
            f"UPDATE {t} SET contact_name = contact_name || ' (edited)',"
            f" write_date = (SELECT max(write_date) FROM {t}) + interval '1 hour'"
            " WHERE id % 100 = 0"
        ],
        f"DROP SCHEMA IF EXISTS {space} CASCADE",
        f"CREATE INDEX crm_lead_sync ON {t} (write_date, id)",
    )


def vtiger(rows: int, space: str) -> Crm:
    """vtiger's leads on MariaDB: crmentity joined to three detail tables."""
    d = space
    return Crm(
        "mysql",
        MYSQL_URL,
        space,
        [
            f"CREATE DATABASE {d} CHARACTER SET utf8mb4",
            f"CREATE TABLE {d}.vtiger_crmentity (crmid INT NOT NULL PRIMARY KEY,"
            " smcreatorid INT NOT NULL DEFAULT 0, smownerid INT NOT NULL DEFAULT 0,"
            " setype VARCHAR(30) NOT NULL, description TEXT, createdtime DATETIME NOT NULL,"
            " modifiedtime DATETIME NOT NULL, deleted INT NOT NULL DEFAULT 0,"
            # vtiger's own indexes (modifiedtime has none: see --sync-index).
            " label VARCHAR(255), KEY crmentity_smcreatorid_idx (smcreatorid),"
            " KEY crmentity_deleted_idx (deleted),"
            " KEY crm_ownerid_del_setype_idx (smownerid, deleted, setype)) ENGINE=InnoDB",
            f"CREATE TABLE {d}.vtiger_leaddetails (leadid INT NOT NULL PRIMARY KEY,"
            " lead_no VARCHAR(100), email VARCHAR(100), firstname VARCHAR(40),"
            " lastname VARCHAR(80), company VARCHAR(100), leadstatus VARCHAR(50),"
            " converted INT NOT NULL DEFAULT 0) ENGINE=InnoDB",
            f"CREATE TABLE {d}.vtiger_leadaddress (leadaddressid INT NOT NULL PRIMARY KEY,"
            " city VARCHAR(30), code VARCHAR(30), state VARCHAR(30), country VARCHAR(30),"
            " phone VARCHAR(50), mobile VARCHAR(50), lane VARCHAR(250)) ENGINE=InnoDB",
            f"CREATE TABLE {d}.vtiger_leadscf (leadid INT NOT NULL PRIMARY KEY,"
            " cf_product VARCHAR(50)) ENGINE=InnoDB",
            f"INSERT INTO {d}.vtiger_crmentity (crmid, smcreatorid, smownerid, setype,"
            " description, createdtime, modifiedtime, deleted, label)"
            " SELECT seq, 1, seq % 40 + 1, 'Leads', REPEAT('A note about the lead. ', 4),"
            " TIMESTAMP '2026-01-01 00:00:00' + INTERVAL seq SECOND,"
            " TIMESTAMP '2026-11-01 00:00:00' + INTERVAL (seq DIV 50) SECOND,"
            f" IF(seq % 97 = 0, 1, 0), CONCAT('Lead ', seq) FROM seq_1_to_{rows}",
            f"INSERT INTO {d}.vtiger_leaddetails SELECT seq, CONCAT('LEA', seq),"
            " CONCAT('lead', seq, '@example.com'), CONCAT('First', seq % 1000),"
            " CONCAT('Last', seq), CONCAT('Company ', seq % 997), 'Not Contacted',"
            f" IF(seq % 20 = 0, 1, 0) FROM seq_1_to_{rows}",
            f"INSERT INTO {d}.vtiger_leadaddress SELECT seq,"
            " ELT(seq % 6 + 1, 'Mumbai', 'Pune', 'Delhi', 'Chennai', 'Kolkata', 'Bengaluru'),"
            " LPAD(400000 + seq % 1000, 6, '0'), 'MH', 'India',"
            f" IF(seq % 3 = 0, '022 2345 6789', NULL), {MY_PHONE}, CONCAT(seq, ' MG Road')"
            f" FROM seq_1_to_{rows}",
            f"INSERT INTO {d}.vtiger_leadscf SELECT seq, CONCAT('P', seq % 13)"
            f" FROM seq_1_to_{rows}",
            f"ANALYZE TABLE {d}.vtiger_crmentity, {d}.vtiger_leaddetails,"
            f" {d}.vtiger_leadaddress, {d}.vtiger_leadscf",
        ],
        "SELECT e.crmid, d.firstname AS contact_name, d.lastname, d.email AS email_from,"
        " a.phone, a.mobile, a.city, cf.cf_product, e.modifiedtime"
        f" FROM {d}.vtiger_leaddetails d"
        f" JOIN {d}.vtiger_crmentity e ON e.crmid = d.leadid"
        f" JOIN {d}.vtiger_leadaddress a ON a.leadaddressid = d.leadid"
        f" LEFT JOIN {d}.vtiger_leadscf cf ON cf.leadid = d.leadid"
        " WHERE e.deleted = 0 AND d.converted = 0",
        "crmid",
        "modifiedtime",
        [
            f"UPDATE {d}.vtiger_leaddetails d JOIN {d}.vtiger_crmentity e ON e.crmid = d.leadid"
            " SET d.firstname = CONCAT(d.firstname, ' (edited)'),"
            " e.modifiedtime = TIMESTAMP '2026-12-01 00:00:00' WHERE d.leadid % 100 = 0"
        ],
        f"DROP DATABASE IF EXISTS {d}",
        f"CREATE INDEX crmentity_sync ON {d}.vtiger_crmentity (modifiedtime, crmid)",
    )


async def run_sql(url: str, statements: list[str]) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from syncd.crm_db import async_url

    engine = create_async_engine(async_url(url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


# -- syncd -----------------------------------------------------------------------------------

CONFIG = """\
[state]
path = "{state}"
[log]
level = "info"
format = "json"
[[sources]]
name = "crm"
kind = "sql"
url = "env:BENCH_CRM_URL"
query = "{query}"
key_column = "{key}"
cursor_column = "{cursor}"
page_size = {page_size}
[[sinks]]
name = "jodo"
kind = "jodo"
url = "http://127.0.0.1:{port}/CustomerWebServices/handleCustomerWS"
apikey = "env:BENCH_JODO_APIKEY"
servicekey = "VoiceProcess"
updateparam = "crmuniquefield"
batch_size = {batch_size}
push_concurrency = {concurrency}
outcomes = {{ enabled = false }}
agents = {{ enabled = false }}
[[routes]]
source = "crm"
sink = "jodo"
default_region = "IN"
[routes.map]
key = "{key}"
phone = "mobile"
alt_phones = ["phone"]
first_name = "contact_name"
email = "email_from"
[routes.map.fields]
city = "city"
"""


@dataclass
class Run:
    wall: float
    cpu: float  # the measured process tree's user + sys seconds (waited-for children)
    rss_mb: float  # its largest process's peak RSS
    rc: int
    stages: dict[str, float]
    rows_read: int
    statements: int = 0  # sent to the CRM (the source-alone read counts them)

    def line(self, label: str) -> str:
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in self.stages.items())
        return (
            f"  {label:<22} {self.wall:7.1f}s wall  cpu {self.cpu:6.1f}s  peak RSS "
            f"{self.rss_mb:5.0f} MB  rows read {self.rows_read:>9,}  exit {self.rc}"
            + (f"\n  {'':<22} stages: {stages}" if stages else "")
        )


def measure(cmd: list[str], env: dict[str, str]) -> Run:
    """Run ``cmd`` in a fresh child and return its wall time, CPU, peak RSS and log facts."""
    done = measured_child(cmd, env)
    stages: dict[str, float] = {}
    rows = statements = 0
    for line in done.stderr.splitlines() + done.stdout.splitlines():
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "run.phase":
            stages[event["phase"]] = float(event["seconds"])
        elif event.get("event") in ("source.pull.finished", "prototype.finished"):
            rows += int(event.get("rows", 0))
            statements += int(event.get("statements", 0))
        elif event.get("event") == "prototype.stage":
            stages[event["stage"]] = float(event["seconds"])
    if done.rc:
        print(done.stderr[-3000:], file=sys.stderr)
    return Run(done.wall, done.cpu, done.rss_mb, done.rc, stages, rows, statements)


# -- the minimal prototype ---------------------------------------------------------------------


def to_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


async def stream_rows(url: str, query: str, chunk: int) -> AsyncIterator[list[tuple[Any, ...]]]:
    """Yield the query's rows through one server-side cursor, ``chunk`` at a time."""
    from syncd.crm_db import async_url

    parsed = async_url(url)
    if parsed.get_backend_name() == "postgresql":
        import asyncpg

        conn = await asyncpg.connect(
            host=parsed.host, port=parsed.port, user=parsed.username, database=parsed.database
        )
        try:
            async with conn.transaction():
                cursor = await conn.cursor(query)
                while rows := await cursor.fetch(chunk):
                    yield [tuple(r) for r in rows]
        finally:
            await conn.close()
        return
    import asyncmy
    from asyncmy.cursors import SSCursor

    myconn = await asyncmy.connect(
        host=parsed.host,
        port=parsed.port or 3306,
        user=parsed.username,
        database=parsed.database,
        charset="utf8mb4",
        autocommit=True,
    )
    try:
        async with myconn.cursor(SSCursor) as cur:
            await cur.execute(query)
            # asyncmy's reader has no flow control: hold the socket while a chunk is worked.
            while rows := await cur.fetchmany(chunk):
                myconn._transport.pause_reading()
                yield list(rows)
                myconn._transport.resume_reading()
    finally:
        myconn.close()


async def prototype(args: dict[str, Any]) -> None:
    """Stream, hash, keep state in SQLite, validate phones, POST in batches; log the rows."""
    import httpx
    import rphonenumbers

    started = time.perf_counter()
    state = sqlite3.connect(args["state"])
    state.execute("CREATE TABLE IF NOT EXISTS leads (key TEXT PRIMARY KEY, hash BLOB)")
    state.execute("CREATE TABLE IF NOT EXISTS cursor (id INTEGER PRIMARY KEY, value TEXT)")
    query = f"SELECT * FROM ({args['query']}) AS p ORDER BY p.{args['cursor']}, p.{args['key']}"
    sim = f"http://127.0.0.1:{args['port']}/CustomerWebServices/handleCustomerWS"
    rows_read = 0
    pushed = 0
    limit = asyncio.Semaphore(args["concurrency"])

    def e164(raw: str) -> str | None:
        if not raw.strip():
            return None
        try:
            number = rphonenumbers.parse(raw, "IN")
        except rphonenumbers.NumberParseException:
            return None
        if not rphonenumbers.is_valid_number(number):
            return None
        return str(rphonenumbers.format_number(number, rphonenumbers.PhoneNumberFormat.E164))

    def record(row: dict[str, str]) -> dict[str, str] | None:
        """Return the dialer record, or None when the lead's phone is no number (as syncd:
        the alternate number is checked and sent, but does not stand in for the phone)."""
        mobile, alternate = e164(row["mobile"]), e164(row["phone"])
        if mobile is None:
            return None
        out = {
            "leadnumber": row[args["key"]],
            "mobilenumber": mobile,
            "firstname": row["contact_name"],
            "email": row["email_from"],
            "city": row["city"],
        }
        if alternate is not None:
            out["alternatenumber1"] = alternate
        return out

    async with httpx.AsyncClient(timeout=60) as client:
        async for rows in stream_rows(args["url"], query, args["page_size"]):
            header: list[str] = args["header"]
            texts = [[to_text(v) for v in row] for row in rows]
            keyed = {t[header.index(args["key"])]: t for t in texts}
            hashes = {
                k: hashlib.blake2b("\x1f".join(t).encode(), digest_size=16).digest()
                for k, t in keyed.items()
            }
            stored: dict[str, bytes] = {}
            keys = list(hashes)
            for i in range(0, len(keys), 30_000):
                part = keys[i : i + 30_000]
                marks = ",".join("?" * len(part))
                stored.update(
                    state.execute(f"SELECT key, hash FROM leads WHERE key IN ({marks})", part)
                )
            changed = [k for k, h in hashes.items() if stored.get(k) != h]
            records = [
                r for k in changed if (r := record(dict(zip(header, keyed[k], strict=True))))
            ]
            batches = [
                records[i : i + args["batch_size"]]
                for i in range(0, len(records), args["batch_size"])
            ]
            await asyncio.gather(*(post(client, sim, limit, b) for b in batches))
            pushed += len(records)
            with state:
                state.executemany(
                    "INSERT INTO leads VALUES (?, ?) ON CONFLICT (key) DO UPDATE"
                    " SET hash = excluded.hash",
                    [(k, hashes[k]) for k in changed],
                )
                state.execute(
                    "INSERT OR REPLACE INTO cursor VALUES (1, ?)", (texts[-1][0] if texts else "",)
                )
            rows_read += len(rows)
    state.close()
    seconds = round(time.perf_counter() - started, 3)
    print(json.dumps({"event": "prototype.stage", "stage": "all", "seconds": seconds}))
    print(json.dumps({"event": "prototype.finished", "rows": rows_read, "pushed": pushed}))


async def source_read(args: dict[str, Any]) -> None:
    """Read every row through syncd's SqlSource alone (no mapping, no store): the source's
    own cost, and how many statements it sent the database."""
    from sqlalchemy import event

    from syncd.sources.sql import SqlSource, SqlSourceConfig

    config = SqlSourceConfig(
        name="crm",
        url=args["url"],
        query=args["query"],
        key_column=args["key"],
        cursor_column=args["cursor"],
        page_size=args["page_size"],
    )
    source = SqlSource(config)
    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    event.listen(source.engine().sync_engine, "before_cursor_execute", count)
    started = time.perf_counter()
    rows = 0
    try:
        async for chunk in source.chunks(None, full=True):
            if chunk.failed:
                raise SystemExit(chunk.failed)
            rows += chunk.rows_read
    finally:
        await source.close()
    seconds = round(time.perf_counter() - started, 3)
    print(json.dumps({"event": "prototype.stage", "stage": "read", "seconds": seconds}))
    print(json.dumps({"event": "prototype.finished", "rows": rows, "statements": statements}))


# -- the sitting -----------------------------------------------------------------------------


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def figure(db: str, name: str, value: float, unit: str, rows: int, *, index: bool) -> None:
    print(
        "FIGURE "
        + json.dumps(
            {
                "db": db,
                "figure": name,
                "value": round(value, 4),
                "unit": unit,
                "rows": rows,
                "sync_index": index,
                "load": load(),
            }
        ),
        flush=True,
    )


def simulator(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "syncd", "simulate", "jodo", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_http(f"http://127.0.0.1:{port}/_sim/state")
    return sim, port


def held(port: int) -> int:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sim/state") as reply:
        return len(json.load(reply)["processes"]["VoiceProcess"]["records"])


def sitting(crm: Crm, args: argparse.Namespace, work: Path, env: dict[str, str]) -> None:
    db = crm.kind
    fig = functools.partial(figure, index=args.sync_index)
    rows = args.rows
    index = "with" if args.sync_index else "without"
    print(f"\n== {db}: {crm.space}, {rows:,} rows, {index} a (cursor, key) index (load {load()})")
    sims: list[subprocess.Popen[bytes]] = []
    try:
        t = time.perf_counter()
        asyncio.run(run_sql(crm.url, crm.build + ([crm.sync_index] if args.sync_index else [])))
        print(f"  built in {time.perf_counter() - t:.1f}s", flush=True)
        sim, port = simulator(env)
        proto_sim, proto_port = simulator(env)
        sims += [sim, proto_sim]
        config = work / f"{db}.toml"
        config.write_text(
            CONFIG.format(
                state=work / f"{db}-state" / "state.db",
                query=crm.query,
                key=crm.key,
                cursor=crm.cursor,
                page_size=args.page_size,
                port=port,
                batch_size=args.batch_size,
                concurrency=args.concurrency,
            ),
            encoding="utf-8",
        )
        run_env = {**env, "BENCH_CRM_URL": crm.url}
        syncd = [sys.executable, "-m", "syncd", "run", "--once", "-c", str(config)]
        header = [crm.key, "contact_name", "partner_name", "email_from", "phone", "mobile"]
        header += ["city", crm.cursor]
        if db == "mysql":
            header = [crm.key, "contact_name", "lastname", "email_from", "phone", "mobile"]
            header += ["city", "cf_product", crm.cursor]
        proto_args = {
            "url": crm.url,
            "query": crm.query,
            "key": crm.key,
            "cursor": crm.cursor,
            "header": header,
            "port": proto_port,
            "state": str(work / f"{db}-proto.db"),
            "page_size": args.page_size,
            "batch_size": args.batch_size,
            "concurrency": args.concurrency,
        }
        proto = [sys.executable, str(Path(__file__)), "--prototype-run", json.dumps(proto_args)]

        read = measure(
            [sys.executable, str(Path(__file__)), "--read-run", json.dumps(proto_args)], run_env
        )
        print(read.line("syncd's source alone"), flush=True)
        fig(db, "source_read_s", read.stages.get("read", 0.0), "s", read.rows_read)
        fig(db, "source_statements", read.statements, "statements", read.rows_read)
        if args.only_read:
            return
        initial = measure(syncd, run_env)
        print(initial.line("syncd initial"), flush=True)
        first = measure(proto, run_env)
        print(first.line("prototype initial"), flush=True)
        print(f"  simulators hold {held(port):,} (syncd) and {held(proto_port):,} (prototype)")
        asyncio.run(run_sql(crm.url, crm.change))
        incremental = measure(syncd, run_env)
        print(incremental.line("syncd incremental (1%)"), flush=True)
        full = measure([*syncd, "--full"], run_env)
        print(full.line("syncd --full"), flush=True)

        fig(db, "syncd_initial_s", initial.wall, "s", initial.rows_read)
        fig(db, "syncd_initial_pull_s", initial.stages.get("pull", 0.0), "s", rows)
        fig(db, "syncd_initial_push_s", initial.stages.get("push", 0.0), "s", rows)
        fig(db, "prototype_initial_s", first.wall, "s", first.rows_read)
        fig(db, "initial_ratio_to_prototype", initial.wall / first.wall, "x", rows)
        fig(db, "incremental_rows_read", incremental.rows_read, "rows", rows)
        fig(db, "incremental_pull_us_per_row", per_row(incremental) * 1e6, "us", rows)
        fig(db, "full_pull_us_per_row", per_row(full) * 1e6, "us", full.rows_read)
        fig(db, "full_pull_s", full.stages.get("pull", 0.0), "s", full.rows_read)
        fig(db, "full_to_incremental_per_row", per_row(full) / per_row(incremental), "x", rows)
    finally:
        for sim in sims:
            sim.terminate()
            sim.wait(10)
        asyncio.run(run_sql(crm.url, [crm.drop]))


def per_row(run: Run) -> float:
    """Return the pull stage's seconds per row read."""
    return run.stages.get("pull", 0.0) / max(run.rows_read, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=["postgresql", "mysql", "both"], default="both")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--syncd-path", type=Path, help="run the syncd package found here (a baseline checkout)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--sync-index",
        action="store_true",
        help="add an index on (change time, key); neither CRM ships one",
    )
    parser.add_argument(
        "--only-read", action="store_true", help="time syncd's source reading the table, no more"
    )
    parser.add_argument("--prototype-run", help=argparse.SUPPRESS)
    parser.add_argument("--read-run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prototype_run:
        asyncio.run(prototype(json.loads(args.prototype_run)))
        return
    if args.read_run:
        asyncio.run(source_read(json.loads(args.read_run)))
        return
    env = {**os.environ, "BENCH_JODO_APIKEY": "test_org"}
    # Every child imports the syncd measured (this checkout's unless told), whatever the
    # virtualenv's own install points at.
    checkout = args.syncd_path or Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = str(checkout.resolve())
    work = Path(tempfile.mkdtemp(prefix="syncd-bench-sql-"))
    space = f"syncd_bench_{uuid.uuid4().hex[:8]}"
    print(f"bench_sql_source: {args.rows:,} rows, syncd from {checkout}")
    try:
        if args.source in ("postgresql", "both"):
            sitting(odoo(args.rows, space), args, work, env)
        if args.source in ("mysql", "both"):
            sitting(vtiger(args.rows, space), args, work, env)
    finally:
        if args.keep:
            print(f"work folder: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
