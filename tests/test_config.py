"""Configuration: every problem reported with its field path; secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd.config import apply_env_overlay, load_settings
from syncd.errors import ConfigError
from tests.conftest import run_cli

VALID = """
[state]
path = "state/state.db"

[[sources]]
name = "crm"
kind = "csv_drop"
inbox = "inbox"

[[sinks]]
name = "jodo-main"
kind = "jodo"
url = "http://127.0.0.1:9443/CustomerWebServices/handleCustomerWS"
apikey = "env:T_JODO_KEY"
servicekey = "VoiceProcess"
updateparam = "{updateparam}"

[[routes]]
source = "crm"
sink = "jodo-main"
default_region = "IN"
[routes.map]
key = "id"
phone = "phone"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "syncd.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_config_loads_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.format(updateparam="customercode"))
    settings = load_settings(path, environ={"T_JODO_KEY": "secret-key"})
    assert settings.state.path == tmp_path / "state" / "state.db"
    assert settings.source("crm").inbox == tmp_path / "inbox"  # type: ignore[attr-defined]
    sink = settings.sink("jodo-main")
    assert sink.updateparam == "customercode"  # type: ignore[attr-defined]
    assert sink.apikey.get_secret_value() == "secret-key"  # type: ignore[attr-defined]
    assert "secret-key" not in repr(settings)


def test_bad_choice_is_reported_with_its_field_path(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.format(updateparam="phone"))
    with pytest.raises(ConfigError) as err:
        load_settings(path, environ={"T_JODO_KEY": "k"})
    assert (
        "sinks[0].updateparam: must be one of mobilenumber, customercode, crmuniquefield"
        in err.value.problems
    )


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = VALID.format(updateparam="phone").replace(
        'default_region = "IN"', 'default_region = "india"'
    )
    text = text.replace('sink = "jodo-main"\n', 'sink = "nowhere"\n').replace(
        'servicekey = "VoiceProcess"', 'servicekey = "VoiceProcess"\nbatch_sise = 10'
    )
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text), environ={})
    problems = "\n".join(err.value.problems)
    assert "sinks[0].apikey: environment variable T_JODO_KEY is not set" in problems
    assert "sinks[0].updateparam: must be one of" in problems
    assert "sinks[0].batch_sise: unknown setting" in problems
    assert "routes[0].sink: no sink named 'nowhere'" in problems
    assert "routes[0].default_region: must be a two-letter ISO country code" in problems


def test_check_command_exits_2_with_problems_and_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.format(updateparam="phone"))
    result = run_cli("check", "-c", str(path))
    assert result.returncode == 2
    assert "sinks[0].updateparam: must be one of" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_reports_unreadable_toml_with_the_file_name(tmp_path: Path) -> None:
    path = write(tmp_path, "[state\npath = 1")
    result = run_cli("check", "-c", str(path))
    assert result.returncode == 2
    assert str(path) in result.stderr and "not valid TOML" in result.stderr


def test_check_accepts_the_shipped_example() -> None:
    root = Path(__file__).resolve().parent.parent
    from tests.conftest import cli_env

    result = run_cli(
        "check", "-c", str(root / "config" / "jodo.example.toml"), env=cli_env(JODO_APIKEY="x")
    )
    assert result.returncode == 0, result.stderr


def test_environment_overrides_fields_and_list_items_by_index_or_name(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.format(updateparam="customercode"))
    env = {
        "T_JODO_KEY": "k",
        "SYNCD_SINKS__JODO_MAIN__BATCH_SIZE": "42",
        "SYNCD_SINKS__0__SERVICEKEY": "Sales",
        "SYNCD_STATE__PATH": str(tmp_path / "elsewhere.db"),
        "SYNCD_TEST_PG_URL": "postgresql://ignored",  # not configuration
    }
    settings = load_settings(path, environ=env)
    sink = settings.sink("jodo-main")
    assert sink.batch_size == 42
    assert sink.servicekey == "Sales"  # type: ignore[attr-defined]
    assert settings.state.path == tmp_path / "elsewhere.db"


def test_configuration_entirely_from_environment() -> None:
    raw = apply_env_overlay(
        {},
        {
            "SYNCD_SOURCES__0__NAME": "crm",
            "SYNCD_SOURCES__0__KIND": "csv_drop",
            "SYNCD_SOURCES__0__INBOX": "/tmp/inbox",
        },
    )
    assert raw == {"sources": [{"name": "crm", "kind": "csv_drop", "inbox": "/tmp/inbox"}]}


def test_file_secrets_are_read_from_the_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "jodo").write_text("from-a-file\n", encoding="utf-8")
    text = VALID.format(updateparam="customercode").replace('"env:T_JODO_KEY"', '"file:jodo"')
    settings = load_settings(
        write(tmp_path, text), environ={"CREDENTIALS_DIRECTORY": str(tmp_path / "creds")}
    )
    assert settings.sink("jodo-main").apikey.get_secret_value() == "from-a-file"  # type: ignore[attr-defined]


def test_missing_secret_file_is_named_but_never_its_content(tmp_path: Path) -> None:
    text = VALID.format(updateparam="customercode").replace(
        '"env:T_JODO_KEY"', '"file:/nonexistent/key"'
    )
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text), environ={})
    assert "sinks[0].apikey: cannot read secret file /nonexistent/key" in err.value.problems[0]


def test_an_environment_list_index_past_the_end_is_refused_at_once(tmp_path: Path) -> None:
    # Before, SYNCD_SINKS__99999999__… built a list of 100 million items (GBs of memory).
    path = write(tmp_path, VALID.format(updateparam="customercode"))
    env = {"T_JODO_KEY": "k", "SYNCD_SINKS__99999999__BATCH_SIZE": "5"}
    with pytest.raises(ConfigError) as err:
        load_settings(path, environ=env)
    assert "index 99999999: the list has 1 item(s)" in str(err.value.problems)
    added = load_settings(path, environ={"T_JODO_KEY": "k", "SYNCD_SINKS__0__BATCH_SIZE": "5"})
    assert added.sink("jodo-main").batch_size == 5


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_an_infinite_timeout_is_refused(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, VALID.format(updateparam="customercode"))
    with pytest.raises(ConfigError) as err:
        load_settings(path, environ={"T_JODO_KEY": "k", "SYNCD_SINKS__0__TIMEOUT_S": value})
    assert any("sinks[0].timeout_s" in problem for problem in err.value.problems)
