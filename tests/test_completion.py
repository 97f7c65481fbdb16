"""`syncd completion SHELL`: a completion script written from the CLI's own parser."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_cli

SUBCOMMANDS = ("run", "check", "status", "rejects", "audit", "explain", "retry", "backup")


def completed(script: Path, *words: str) -> list[str]:
    """Return what bash offers after ``syncd WORDS`` (the last word being typed), with
    ``script`` sourced the way a user's ~/.bashrc sources it."""
    line = " ".join(("syncd", *words))
    drive = f"""
source {script}
COMP_WORDS=(syncd {" ".join(words)})
COMP_CWORD={len(words)}
COMP_LINE="{line}"
COMP_POINT=${{#COMP_LINE}}
_shtab_syncd syncd "{words[-1]}" "{words[-2] if len(words) > 1 else "syncd"}"
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", drive],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return done.stdout.split()


def test_the_bash_script_parses_and_completes_subcommands_and_options(tmp_path: Path) -> None:
    result = run_cli("completion", "bash")
    assert result.returncode == 0, result.stderr
    script = tmp_path / "syncd.bash"
    script.write_text(result.stdout, encoding="utf-8")
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr

    offered = completed(script, "")
    assert set(SUBCOMMANDS) | {"completion", "simulate", "demo"} <= set(offered), offered
    assert sorted(completed(script, "st")) == ["state", "status"]
    assert {"--once", "--full", "--deadline", "--dry-run", "--config"} <= set(
        completed(script, "run", "--")
    )
    assert sorted(completed(script, "completion", "")) == ["bash", "tcsh", "zsh"]


@pytest.mark.parametrize("shell", ["zsh", "tcsh"])
def test_zsh_and_tcsh_scripts_name_the_subcommands(shell: str, tmp_path: Path) -> None:
    result = run_cli("completion", shell)
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in SUBCOMMANDS)
    if shell == "zsh" and shutil.which("zsh"):  # where the shell is installed, it parses it
        script = tmp_path / "_syncd"
        script.write_text(result.stdout, encoding="utf-8")
        syntax = subprocess.run(["zsh", "-n", str(script)], capture_output=True, text=True)
        assert syntax.returncode == 0, syntax.stderr


def test_an_unknown_shell_is_refused_with_the_choices() -> None:
    result = run_cli("completion", "cmd.exe")
    assert result.returncode == 2
    assert "invalid choice: 'cmd.exe'" in result.stderr and "bash" in result.stderr
