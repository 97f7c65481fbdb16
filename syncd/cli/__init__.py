"""The `syncd` command line."""

from syncd.cli.commands import main

__all__ = ["main"]
