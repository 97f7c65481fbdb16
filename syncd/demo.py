"""`syncd demo`: three dialer simulators, a sample CRM export, two passes, and what came back.

One CSV export fans out to Jodo, Ameyo and uContact (three routes). The first
`run --once` pushes; the simulators then dial; the second pass polls the call
outcomes back into the state store. Works on a fresh machine with no
configuration: everything lives in one folder.
"""

from __future__ import annotations

import asyncio
import csv
import os
import random
import shutil
import socket
import sys
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from rich.console import Console
from rich.table import Table

from syncd import logs
from syncd.cli.report import print_summary
from syncd.config import load_settings
from syncd.core.summary import RunSummary
from syncd.run.lock import StoreLock
from syncd.run.once import run_once
from syncd.simulators.ameyo import api as ameyo
from syncd.simulators.jodo import api as jodo
from syncd.simulators.jodo.dialing import DialPlan
from syncd.simulators.server import running
from syncd.simulators.ucontact import api as ucontact
from syncd.state import open_store

FIRST = ["Asha", "Ravi", "Meera", "Arjun", "Priya", "Vikram", "Neha", "Kiran", "Sunil", "Divya"]
LAST = ["Sharma", "Patel", "Iyer", "Khan", "Reddy", "Das", "Nair", "Gupta", "Mehta", "Rao"]

CONFIG = """\
# Written by `syncd demo`: a CSV drop folder feeding three dialer simulators.
[state]
path = "state/state.db"

[log]
level = "warning"

[[sources]]
name = "crm-export"
kind = "csv_drop"
inbox = "inbox"
settle_s = 0  # the demo writes its export as name.part and renames it: always whole

[[sinks]]
name = "jodo"
kind = "jodo"
url = "{jodo}/CustomerWebServices/handleCustomerWS"
apikey = "env:SYNCD_DEMO_JODO_APIKEY"
servicekey = "VoiceProcess"
media = "Voice Out"
updateparam = "crmuniquefield"
timezone = "Asia/Kolkata"
dial_format = "00"
batch_size = 100

[[sinks]]
name = "ameyo"
kind = "ameyo"
url = "{ameyo}"
campaign_id = 1
lead_id = 21
timezone = "Asia/Kolkata"
dial_format = "national"
batch_size = 100
auth = {{ mode = "session", user_id = "syncd", password = "env:SYNCD_DEMO_AMEYO_PASSWORD" }}

[[sinks]]
name = "ucontact"
kind = "ucontact"
url = "{ucontact}"
user = "api"
password = "env:SYNCD_DEMO_UCONTACT_PASSWORD"
campaign = "Ventas->"
server_timezone = "Asia/Kolkata"
dial_format = "e164"
batch_size = 100
cdr_lookback_s = 3600
cdr_delay_s = 1  # the demo simulator writes call records at once

[[routes]]
source = "crm-export"
sink = "jodo"
default_region = "IN"
timezone = "Asia/Kolkata"
[routes.map]
key = "lead_id"
phone = "mobile"
alt_phones = ["alt_mobile"]
first_name = "first_name"
last_name = "last_name"
email = "email"
call_at = "callback_at"
[routes.map.fields]
city = "city"

[[routes]]
source = "crm-export"
sink = "ameyo"
default_region = "IN"
timezone = "Asia/Kolkata"
[routes.map]
key = "lead_id"
phone = "mobile"
alt_phones = ["alt_mobile"]
first_name = "first_name"
last_name = "last_name"
email = "email"
call_at = "callback_at"

[[routes]]
source = "crm-export"
sink = "ucontact"
default_region = "IN"
timezone = "Asia/Kolkata"
[routes.map]
key = "lead_id"
phone = "mobile"
first_name = "first_name"
last_name = "last_name"
call_at = "callback_at"
"""

SECRETS = {
    "SYNCD_DEMO_JODO_APIKEY": "test_org",
    "SYNCD_DEMO_AMEYO_PASSWORD": "secret",
    "SYNCD_DEMO_UCONTACT_PASSWORD": "secret",
}


def write_sample_export(path: Path, leads: int, seed: int = 7) -> None:
    """Write a CRM export with mixed phone formats, some invalid numbers and duplicates."""
    rng = random.Random(seed)
    header = [
        "lead_id",
        "first_name",
        "last_name",
        "mobile",
        "alt_mobile",
        "email",
        "city",
        "callback_at",
    ]
    rows: list[list[str]] = []
    for i in range(1, leads + 1):
        digits = f"9{rng.randrange(10**8, 10**9)}"
        mobile = rng.choice(
            [digits, f"+91 {digits[:5]} {digits[5:]}", f"0091-{digits}", f"0{digits}"]
        )
        if rng.random() < 0.05:
            mobile = rng.choice(["12345", "not a number", "", "+91 99"])
        first, last = rng.choice(FIRST), rng.choice(LAST)
        callback = ""
        if rng.random() < 0.1:  # a callback the agent promised for an hour from now
            when = time.gmtime(time.time() + 3600 + 5.5 * 3600)  # written in IST, as the CRM does
            callback = time.strftime("%Y-%m-%d %H:%M:%S", when)
        rows.append(
            [
                f"L{i:05d}",
                first,
                last,
                mobile,
                "",
                f"{first.lower()}.{i}@example.com",
                rng.choice(["Mumbai", "Pune", "Delhi"]),
                callback,
            ]
        )
    for _ in range(max(1, leads // 50)):  # the CRM exported some leads twice
        rows.insert(rng.randrange(len(rows)), list(rng.choice(rows)))
    part = path.with_name(path.name + ".part")
    with part.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    part.rename(path)  # writers drop *.part and rename: the inbox only ever sees whole files


def run_demo(
    folder: Path, *, leads: int = 300, console: Console | None = None, serve: bool = False
) -> int:
    """Return the exit code of the demo's second pass, after printing what happened.

    With ``serve``, the simulators stay up afterwards and the daemon runs on the demo's
    config, its status page's address printed, until Ctrl-C.
    """
    out = console or Console()
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "inbox").mkdir(parents=True)
    for name, value in SECRETS.items():
        os.environ.setdefault(name, value)
    # The dialers stay idle during pass 1 and call everyone before pass 2.
    jodo_sim = jodo.JodoSimulator(
        dial=DialPlan(interval_s=None, retry_s=3600), timezone="Asia/Kolkata"
    )
    ameyo_sim = ameyo.AmeyoSimulator(
        users={"syncd": "secret"},
        dialing=False,
        dial_every_s=0.05,
        dials_per_tick=100,
        timezone="Asia/Kolkata",
    )
    ucontact_sim = ucontact.UContactSimulator(
        users={"api": "secret"}, dial_delay_s=3600, cdr_delay_s=0.0, timezone="Asia/Kolkata"
    )
    with ExitStack() as stack:
        urls = {
            "jodo": stack.enter_context(running(jodo.create_app(jodo_sim))),
            "ameyo": stack.enter_context(running(ameyo.create_app(ameyo_sim))),
            "ucontact": stack.enter_context(running(ucontact.create_app(ucontact_sim))),
        }
        config = folder / "syncd.toml"
        config.write_text(CONFIG.format(**urls), encoding="utf-8")
        export = folder / "inbox" / "leads-export.csv"
        write_sample_export(export, leads)
        out.print(
            f"[bold]syncd demo[/bold]: simulators {', '.join(f'{k} {v}' for k, v in urls.items())}"
        )
        out.print(
            f"config {config}; CRM export {export} ({leads} leads, some invalid, some twice)\n"
        )
        settings = load_settings(config)
        logs.configure_from(settings.log)

        out.print("[bold]pass 1[/bold]: pull the export, push to the three dialers")
        print_summary(_once(settings), out)
        _show_rejects(folder, out)
        held = Table(title="what the dialers now hold", title_justify="left")
        for col in ("dialer", "records", "pushed twice"):
            held.add_column(col)
        j_received = jodo_sim.received()
        a_uploads = ameyo_sim.uploads()
        u_list = ucontact_sim.dial_list()
        held.add_row(
            "jodo", str(len(jodo_sim.records())), str(sum(v > 1 for v in j_received.values()))
        )
        held.add_row("ameyo", str(len(a_uploads)), str(sum(v > 1 for v in a_uploads.values())))
        held.add_row(
            "ucontact",
            f"{len(u_list)} (+{len(ucontact_sim.scheduled())} scheduled)",
            str(sum(v.get("present", 0) > 1 for v in u_list.values())),
        )
        out.print(held)

        out.print("\n[bold]the dialers call[/bold] … then [bold]pass 2[/bold]: poll outcomes back")
        jodo_sim.floor.plan = DialPlan(interval_s=0, retry_s=3600)
        jodo_sim.advance()
        ucontact_sim.dial_now()
        ameyo_sim.floor.dialing = True
        time.sleep(1.0)  # the Ameyo simulator dials on its own clock
        summary = _once(settings)
        for sink, n in summary.outcomes.items():
            out.print(f"  outcomes from {sink}: {n} new or changed")
        _show_outcomes(settings.state.path, out)
        out.print(f"\nTry: syncd status -c {config}    syncd explain L00002 -c {config}")
        if serve:
            return _serve(config, out)
    return summary.exit_code()


def _serve(config: Path, out: Console) -> int:
    """Run the daemon on the demo's config until Ctrl-C; return its exit code."""
    from syncd.daemon.service import run_daemon

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config.write_text(
        f'[health]\nlisten = "127.0.0.1:{port}"\n\n' + config.read_text(encoding="utf-8"),
        encoding="utf-8",
    )
    out.print(
        f"\n[bold]serving[/bold]: the daemon runs on {config}; the simulators stay up.\n"
        f"status page: http://127.0.0.1:{port}/status   "
        f"metrics: http://127.0.0.1:{port}/metrics   (Ctrl-C to stop)",
        highlight=False,
    )
    sys.stdout.flush()
    return run_daemon(load_settings(config), config_path=str(config))


def _once(settings: object) -> RunSummary:
    with StoreLock(settings.state.path):  # type: ignore[attr-defined]
        return asyncio.run(run_once(settings))  # type: ignore[arg-type]


def _show_rejects(folder: Path, out: Console) -> None:
    for path in sorted((folder / "inbox" / "done").glob("*.rejects.csv")):
        lines = path.read_text(encoding="utf-8").splitlines()
        out.print(f"rejected rows, with reasons: {path} ({len(lines) - 1} rows); first 4:")
        for line in lines[1:5]:
            out.print(f"  {line}", markup=False, highlight=False)


def _show_outcomes(state_path: Path, out: Console) -> None:
    async def dump() -> list[dict[str, object]]:
        store = await open_store(str(state_path))
        try:
            return await store.outcome_dump()
        finally:
            await store.close()

    outcomes = asyncio.run(dump())
    counts = Counter((str(o["sink"]), str(o["status"])) for o in outcomes)
    table = Table(title="call outcomes in the state store", title_justify="left")
    for col in ("dialer", "status", "leads"):
        table.add_column(col)
    for (sink, status), n in sorted(counts.items()):
        table.add_row(sink, status, str(n))
    out.print(table)
    examples = Table(title="a few of them", title_justify="left")
    for col in ("dialer", "lead", "status", "disposition", "attempts", "agent", "recording"):
        examples.add_column(col, overflow="fold")
    seen: set[str] = set()
    for o in outcomes:
        if o["sink"] in seen or not o.get("disposition"):
            continue
        seen.add(str(o["sink"]))
        examples.add_row(
            str(o["sink"]),
            str(o["key"]),
            str(o["status"]),
            str(o["disposition"]),
            str(o["attempts"]),
            str(o["agent"] or ""),
            str(o["recording_url"] or ""),
        )
    out.print(examples)
