"""structlog setup: JSON lines when not on a terminal, readable lines on one.

Event names are stable and namespaced (``sink.push.failed``); context goes in
keywords. ``run_id``, ``source`` and ``sink`` are bound via contextvars.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from syncd.config import LogConfig
from syncd.core.scrub import scrub

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog for the process (idempotent)."""
    global _JSON
    out = stream or sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    _JSON = as_json
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_secrets,
    ]
    if as_json:
        processors += [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False),
        ]
    else:
        processors += [structlog.dev.ConsoleRenderer(colors=out.isatty())]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Third-party loggers (httpx, uvicorn, apscheduler) speak stdlib logging.
    logging.basicConfig(
        level=max(_LEVELS[level], logging.WARNING),
        stream=out,
        format="%(levelname)s %(name)s %(message)s",
        force=True,
    )


_JSON = False  # whether configure() chose JSON lines


def fatal(message: str, exit_code: int) -> None:
    """Report why the command ends: a JSON log line in JSON mode, plain text otherwise.

    A log shipper reads only JSON lines; a person at a terminal reads text.
    """
    if _JSON:
        structlog.get_logger("syncd").error("syncd.fatal", reason=message, exit_code=exit_code)
    else:
        print(f"syncd: {message}", file=sys.stderr)


def configure_from(log: LogConfig) -> None:
    """Configure logging from the config's [log] section (level, format, stream)."""
    configure(log.level, log.format, stream=sys.stdout if log.stream == "stdout" else sys.stderr)


_SECRET_KEYS = ("password", "apikey", "api_key", "token", "secret", "hash_key", "authorization")


def _drop_secrets(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    # Code never logs secrets; a key that looks like one is masked, and every text is
    # scrubbed of the configured secrets (a vendor's answer may echo them).
    for key in list(event):
        if any(s in key.lower() for s in _SECRET_KEYS):
            event[key] = "**********"
        elif isinstance(event[key], str):
            event[key] = scrub(event[key], limit=20_000)
    return event


def bind(**values: Any) -> None:
    structlog.contextvars.bind_contextvars(**values)
