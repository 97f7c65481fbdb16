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
        path = Path(value[5:])
        if not path.is_absolute() and environ.get("CREDENTIALS_DIRECTORY"):
            path = Path(environ["CREDENTIALS_DIRECTORY"]) / path
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            if lenient:
                return UNSET
            raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
    return value


Secret = Annotated[SecretStr, BeforeValidator(resolve_secret)]
"""A setting whose value must never be shown: repr and logs print ``**********``."""
