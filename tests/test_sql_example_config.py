"""The shipped SQL CRM example config is valid once its secrets are in the environment."""

from __future__ import annotations

from tests.conftest import ROOT, cli_env, run_cli

EXAMPLE = str(ROOT / "config" / "sql-crm.example.toml")


def test_the_sql_crm_example_passes_check_with_its_secrets_set() -> None:
    env = cli_env(
        CRM_DB_URL="mysql://syncd:pw-in-env@crm-db/crm",
        JODO_APIKEY="key",
        CRM_HOOK_SECRET="hook-secret",
    )

    done = run_cli("check", "-c", EXAMPLE, env=env)

    assert done.returncode == 0, done.stderr
    assert "1 source(s), 1 sink(s), 1 route(s), 4 writeback(s)" in done.stdout


def test_the_sql_crm_example_names_each_missing_secret() -> None:
    done = run_cli("check", "-c", EXAMPLE, env=cli_env(JODO_APIKEY="key"))

    assert done.returncode == 2
    assert "sources[0].url: environment variable CRM_DB_URL is not set" in done.stderr
    assert "writebacks[2].secret: environment variable CRM_HOOK_SECRET is not set" in done.stderr


def test_an_unsupported_database_url_is_named_without_its_password() -> None:
    env = cli_env(
        CRM_DB_URL="oracle://scott:tiger-pw@crm-db/orcl", JODO_APIKEY="k", CRM_HOOK_SECRET="s"
    )

    done = run_cli("check", "-c", EXAMPLE, env=env)

    assert done.returncode == 2
    assert "sources[0].url: database driver 'oracle' is not supported" in done.stderr
    assert "tiger-pw" not in done.stderr + done.stdout
