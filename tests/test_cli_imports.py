"""`syncd status` and `syncd --help` load what they use, not the whole of syncd.

An operator's `syncd status` took a second on an empty store, most of it importing the
dialers' HTTP clients, the daemon's web server and scheduler and the phone library it
never calls. The command line imports a command's module only once the arguments name
it (syncd.cli.commands); these tests keep it so: each runs the real command in a fresh
interpreter and reads which modules it loaded.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from syncd.config import load_settings
from syncd.state import open_store
from tests.conftest import ROOT
from tests.support.reliability import (
    ameyo_sink,
    jodo_sink,
    ucontact_sink,
    vendor_env,
    write_config,
)

# Run `syncd ARGS` in this interpreter, then write the modules it loaded (and its exit code).
PROBE = """
import json, sys
from syncd.cli.commands import main
out, args, code = sys.argv[1], sys.argv[2:], None
try:
    code = main(args)
except SystemExit as exc:  # --help
    code = exc.code
finally:
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""

# What no reading of the store needs: the dialers' HTTP stack, the daemon's web server,
# scheduler and metrics, the phone library, other databases' drivers, the engine.
HEAVY = (
    "httpx",
    "starlette",
    "uvicorn",
    "apscheduler",
    "prometheus_client",
    "phonenumbers",
    "rphonenumbers",
    "asyncpg",
    "sqlalchemy",
    "pydantic_settings",
    "syncd.net",
    "syncd.daemon.service",
    "syncd.daemon.scheduler",
    "syncd.daemon.probes",
    "syncd.run.engine",
    "syncd.run.push",
    "syncd.run.pull",
    "syncd.core.gate",
    "syncd.core.mapping",
    "syncd.simulators",
)
# Of a vendor's package, status reads its config model and its reading of refusals.
VENDOR_PARTS = ("config", "codes")


def loaded_by(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), *args],
        capture_output=True,
        text=True,
        env=vendor_env(),
        cwd=ROOT,
        timeout=120,
    )
    found: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    found["stderr"] = done.stderr
    return found


def heavy_in(modules: list[str]) -> list[str]:
    heavy = [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    parts = [m.split(".") for m in modules if m.startswith("syncd.sinks.")]
    vendor = [".".join(p) for p in parts if len(p) == 4 and p[3] not in VENDOR_PARTS]
    return heavy + vendor


def a_store_of_every_dialer(tmp_path: Path) -> Path:
    sinks = [jodo_sink("http://127.0.0.1:9"), ameyo_sink("http://127.0.0.1:9")]
    sinks.append(ucontact_sink("http://127.0.0.1:9"))
    writeback = {"name": "crm-files", "kind": "csv", "outbox": str(tmp_path / "out")}
    config = write_config(tmp_path, sinks, writebacks=[writeback])

    async def create() -> None:
        store = await open_store(load_settings(config, environ=vendor_env()).state)
        await store.close()

    asyncio.run(create())
    return config


def test_status_loads_neither_the_dialers_clients_nor_the_daemon(tmp_path: Path) -> None:
    config = a_store_of_every_dialer(tmp_path)
    for args in (["status", "-c", str(config)], ["status", "--json", "-c", str(config)]):
        found = loaded_by(tmp_path, *args)
        assert found["code"] == 0, found["stderr"]
        assert heavy_in(found["modules"]) == [], args
        # what it does read: every vendor's config model and its refusals' codes
        assert {"syncd.sinks.jodo.codes", "syncd.sinks.ucontact.config"} <= set(found["modules"])


def test_help_loads_no_configuration_logging_or_terminal_library(tmp_path: Path) -> None:
    for args in (["--help"], ["status", "--help"], []):
        found = loaded_by(tmp_path, *args)
        assert found["code"] in (0, 2), found["stderr"]
        light = ("pydantic", "structlog", "rich", "syncd.config", "syncd.logs", "syncd.state")
        assert heavy_in(found["modules"]) == [], args
        assert [m for m in found["modules"] if m.split(".")[0] in light[:3]] == [], args
        assert not set(light[3:]) & set(found["modules"]), args


def test_every_command_names_a_function_the_dispatch_finds() -> None:
    from syncd.cli.commands import _command, _handler, _parser

    parser = _parser()
    argv = {
        "run": ["run"],
        "run --once": ["run", "--once"],
        "run --dry-run": ["run", "--dry-run"],
        "check": ["check"],
        "status": ["status"],
        "rejects": ["rejects"],
        "audit": ["audit"],
        "explain": ["explain", "K1"],
        "retry": ["retry", "--sink", "jodo"],
        "ack": ["ack", "--sink", "jodo", "--all"],
        "backup": ["backup", "copy.db"],
        "state copy": ["state", "copy", "--to", "postgresql://db/x"],
        "sql trigger": ["sql", "trigger", "--source", "crm"],
        "gate explain": ["gate", "explain", "+919820012345"],
        "simulate": ["simulate", "jodo"],
        "demo": ["demo"],
    }
    for name, args in argv.items():
        assert callable(_command(_handler(parser.parse_args(args)))), name
