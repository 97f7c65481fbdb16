"""The `syncd` command's exit codes (syncd.cli.commands lists what each means)."""

from __future__ import annotations

from syncd.run.lock import EXIT_LOCKED

EXIT_OK, EXIT_PENDING, EXIT_CONFIG = 0, 1, 2
EXIT_ONLINE = 4  # `check --online`: the file is valid, but a part of it does not work here
EXIT_READER_GONE = 141  # the shell's code for a writer whose reader left (128 + SIGPIPE)

__all__ = [
    "EXIT_CONFIG",
    "EXIT_LOCKED",
    "EXIT_OK",
    "EXIT_ONLINE",
    "EXIT_PENDING",
    "EXIT_READER_GONE",
]
