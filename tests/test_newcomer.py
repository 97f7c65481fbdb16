"""What a newcomer hits first (issue 28, point 8), each tried the way they would: README's
commands, `--help`, the simulator, the example configs, the journal, the health port,
a phone cell that says "n/a", `make demo`."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx

from syncd.config import HealthConfig, RetentionConfig
from tests.conftest import ROOT, Simulated, cli_env, daemon_config, drop_csv, jodo_config, run_cli
from tests.support.reliability import wait_until

README = (ROOT / "README.md").read_text(encoding="utf-8")
EXAMPLES = sorted((ROOT / "config").glob("*.example.toml"))


def secrets_of(example: Path) -> set[str]:
    """Return the environment variables an example config reads (its live lines only)."""
    live = [line.split("#", 1)[0] for line in example.read_text(encoding="utf-8").splitlines()]
    return set(re.findall(r'"env:([A-Z0-9_]+)"', "\n".join(live)))


def without_example_secrets() -> dict[str, str]:
    """Return a CLI environment as a newcomer's shell has it: none of the examples' secrets."""
    names = set().union(*(secrets_of(e) for e in EXAMPLES))
    return {k: v for k, v in cli_env().items() if k not in names}


# -- README --------------------------------------------------------------------------


def test_readme_check_command_passes_as_written() -> None:
    commands = [
        line.split("  #", 1)[0]
        for line in README.splitlines()
        # the quick start's, on a shipped example (the reference lines name "my.toml")
        if re.match(r"^(\w+=\S+ )*syncd check ", line) and " config/" in line
    ]
    assert commands, "README gives no `syncd check` command"
    for command in commands:
        words = shlex.split(command)
        assigned = dict(w.split("=", 1) for w in words if re.match(r"^\w+=", w))
        argv = words[len(assigned) + 1 :]  # after "syncd"

        done = run_cli(*argv, env={**without_example_secrets(), **assigned})

        assert done.returncode == 0, f"{command}: {done.stderr}"
        assert done.stdout.startswith("configuration ok")


def test_readme_names_every_secret_each_example_reads() -> None:
    for example in EXAMPLES:
        for name in secrets_of(example):
            assert f"`{name}`" in README, f"README does not say {example.name} reads ${name}"


# -- syncd check, --help --------------------------------------------------------------


def test_check_writes_only_its_report_on_stdout() -> None:
    done = run_cli(
        "check",
        "-c",
        str(ROOT / "config" / "jodo.example.toml"),
        env=cli_env(JODO_APIKEY="x", SYNCD_LOG__LEVEL="debug"),
    )

    assert done.returncode == 0, done.stderr
    report = ("configuration ok", "phone numbers validated by", "WARNING: sink", "sink ", "status")
    strays = [line for line in done.stdout.splitlines() if not line.startswith(report)]
    assert not strays, strays  # no log line (phones.backend was one) among the report's


def test_help_lists_every_command_in_its_summary() -> None:
    done = run_cli("--help")

    assert done.returncode == 0
    commands = re.search(r"\{([a-z,-]+)\}", done.stdout)
    assert commands is not None
    summary = done.stdout.split("\n\n")[1]  # the paragraph under the usage
    missing = [c for c in commands.group(1).split(",") if c not in summary]
    assert not missing, summary
    assert summary.rstrip().endswith("."), summary


# -- the simulator ---------------------------------------------------------------------


def test_a_simulator_on_port_0_says_the_port_it_listens_on() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "simulate", "jodo", "--port", "0"],
        stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        found = re.search(r"on (http://127\.0\.0\.1:(\d+))", first)
        assert found is not None, first
        url, port = found.group(1), int(found.group(2))
        answered = wait_until(lambda: _answers(f"{url}/_sim/state"), timeout=20)
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
    assert port != 0 and answered


def _answers(url: str) -> bool:
    try:
        return httpx.get(url).status_code == 200
    except httpx.HTTPError:
        return False


# -- the example configs ----------------------------------------------------------------


def test_each_example_shows_health_and_retention_at_their_defaults() -> None:
    for example in EXAMPLES:
        raw = tomllib.loads(example.read_text(encoding="utf-8"))

        assert "health" in raw and "retention" in raw, example.name
        # What the example says is what syncd does without it: no surprise either way.
        defaults = {**HealthConfig().model_dump(), **RetentionConfig().model_dump()}
        for key, value in {**raw["health"], **raw["retention"]}.items():
            assert defaults[key] == value, f"{example.name}: {key} = {value!r}"


# -- the journal ----------------------------------------------------------------------------


def test_log_lines_carry_their_syslog_priority_when_stderr_is_the_journal(
    tmp_path: Path, jodo: Simulated
) -> None:
    config = jodo_config(tmp_path, jodo.url)  # JSON log lines on stderr

    def run(*args: str, journal: bool) -> list[str]:
        log = tmp_path / "journal.log"
        with log.open("w") as out:
            stat = os.fstat(out.fileno())
            # systemd names the stream it connected; a stream elsewhere keeps plain lines.
            ino = stat.st_ino if journal else stat.st_ino + 1
            subprocess.run(
                [sys.executable, "-m", "syncd", *args, "-c", str(config)],
                stdout=subprocess.DEVNULL, stderr=out, timeout=120, cwd=ROOT,
                env=cli_env(JOURNAL_STREAM=f"{stat.st_dev}:{ino}"),
            )  # fmt: skip
        return log.read_text().splitlines()

    failed = run("explain", "K1", journal=True)  # no store yet: an error
    ran = run("run", "--once", journal=True)
    plain = run("run", "--once", journal=False)

    assert next(line for line in failed if '"syncd.fatal"' in line).startswith("<3>{")
    priorities = {"error": "3", "warning": "4", "info": "6", "debug": "7"}
    read = [(line[1], json.loads(line[3:])["level"]) for line in ran]
    assert ran and all(priority == priorities[level] for priority, level in read), ran
    assert ("6", "info") in read
    assert plain and all(line.startswith("{") for line in plain), plain


# -- the health port --------------------------------------------------------------------------


def test_the_bare_address_of_the_health_port_leads_to_the_status_page(
    tmp_path: Path, jodo: Simulated, start_daemon: Any
) -> None:
    daemon = start_daemon(daemon_config(tmp_path, jodo.url))
    daemon.wait_for("daemon.ready")

    bare = httpx.get(f"{daemon.base_url}/")
    followed = httpx.get(f"{daemon.base_url}/", follow_redirects=True)
    assert daemon.stop() == 0

    assert bare.status_code in (302, 303, 307) and bare.headers["location"] == "status"
    assert followed.status_code == 200 and str(followed.url).endswith("/status")
    assert "syncd status" in followed.text


# -- a phone cell that says n/a -----------------------------------------------------------------


def test_a_phone_cell_written_n_a_is_refused_quoting_the_cell(
    tmp_path: Path, jodo: Simulated
) -> None:
    config = jodo_config(tmp_path, jodo.url)
    drop_csv(
        tmp_path / "inbox",
        "leads.csv",
        "id,phone,first,last,email,callback\nN1,n/a,Asha,Rao,,\nN2,98200 12345; none,Ravi,Iyer,,\n",
    )

    ran = run_cli("run", "--once", "-c", str(config))
    rejects = run_cli("rejects", "-c", str(config))

    assert ran.returncode == 0, ran.stderr
    reasons = {r["key"]: r["reason"] for r in csv.DictReader(io.StringIO(rejects.stdout))}
    assert list(reasons) == ["N1"], reasons
    assert reasons["N1"].startswith("invalid phone 'n/a'"), reasons
    assert reasons["N1"].endswith("in column 'phone'"), reasons
    assert "invalid phone 'n'" not in ran.stdout + ran.stderr


# -- make demo ---------------------------------------------------------------------------------


def test_a_cold_make_demo_installs_syncd_without_the_dev_toolchain(tmp_path: Path) -> None:
    def plan(target: str) -> list[str]:
        done = subprocess.run(
            ["make", "-n", "-C", str(ROOT), target, f"VENV={tmp_path / 'venv'}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return [line for line in done.stdout.splitlines() if "pip install" in line]

    demo, test = plan("demo"), plan("test")

    assert demo and not any("[dev]" in line for line in demo), demo
    assert any(re.search(r"install .*-e \.$", line) for line in demo), demo
    assert any("'.[dev]'" in line for line in test), test  # make test still gets its tools
