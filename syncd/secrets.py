"""Secret values from the environment or files, never from the config text itself.

A secret setting holds either a literal, ``env:NAME`` or ``file:/path``. A relative
``file:`` path is read from ``$CREDENTIALS_DIRECTORY`` (systemd's ``LoadCredential=``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, SecretStr, ValidationInfo

# What a secret reads as in commands that never talk to the service it is for
# (`status`, `explain`, `retry`, the dry run's sinks): they must work without it.
UNSET = "<not needed by this command>"


def resolve_secret(value: object, info: ValidationInfo) -> object:
    """Return the secret text that ``env:`` / ``file:`` points at, or the value itself.

    The environment comes from the validation context (``{"environ": …}``) when
    given, so loading a config never depends on hidden process state in tests.
    """
    if isinstance(value, SecretStr) or not isinstance(value, str):
        return value
    context = info.context if isinstance(info.context, dict) else {}
    environ: Mapping[str, str] = context.get("environ", os.environ)
    lenient = bool(context.get("lenient_secrets"))
    if value.startswith("env:"):
        name = value[4:]
        if name not in environ:
            if lenient:
                return UNSET
            raise ValueError(f"environment variable {name} is not set")
        return environ[name]
    if value.startswith("file:"):
        path = secret_path(value, environ)
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            if lenient:
                return UNSET
            raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
    return value


def secret_path(ref: str, environ: Mapping[str, str]) -> Path:
    """Return the file a ``file:`` reference reads (relative: under $CREDENTIALS_DIRECTORY)."""
    path = Path(ref[5:])
    if not path.is_absolute() and environ.get("CREDENTIALS_DIRECTORY"):
        path = Path(environ["CREDENTIALS_DIRECTORY"]) / path
    return path


def secret_problem(ref: str, environ: Mapping[str, str]) -> str | None:
    """Return why an ``env:`` / ``file:`` reference cannot be read, and how to fix it.

    None when it reads (a literal always does). Never quotes the secret's value:
    `syncd check --online` prints this for every secret of a config.
    """
    if ref.startswith("env:"):
        name = ref[4:]
        if name in environ:
            return None if environ[name] else f"environment variable {name} is empty: set it"
        return (
            f"environment variable {name} is not set: set it where syncd runs (the unit's "
            "Environment=/EnvironmentFile=, the container's env)"
        )
    if not ref.startswith("file:"):
        return None
    path = secret_path(ref, environ)
    try:
        with path.open("rb") as fh:
            empty = not fh.read().strip()
    except OSError as exc:
        if not path.is_absolute():
            return (
                f"cannot read secret file {path}: {exc.strerror}: a relative file: path is "
                "read from $CREDENTIALS_DIRECTORY, which is not set here (systemd sets it for "
                "LoadCredential=): run the check with the unit's credentials "
                "(systemd/README.md), or set CREDENTIALS_DIRECTORY to the folder holding it"
            )
        return (
            f"cannot read secret file {path}: {exc.strerror}: put the secret there, readable "
            "by the user syncd runs as (chmod/chown, or LoadCredential= under systemd)"
        )
    return f"secret file {path} is empty: write the secret in it" if empty else None


Secret = Annotated[SecretStr, BeforeValidator(resolve_secret)]
"""A setting whose value must never be shown: repr and logs print ``**********``."""
