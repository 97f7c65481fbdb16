"""structlog setup: JSON lines when not on a terminal, readable lines on one.

Event names are stable and namespaced (``sink.push.failed``); context goes in
keywords. ``run_id``, ``source`` and ``sink`` are bound via contextvars.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO, cast

import structlog
from rich.console import Console
from rich.text import Text

from syncd.config import LogConfig
from syncd.core.reasons import SHARED_LEVELS, shown_key
from syncd.core.scrub import scrub

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog for the process (idempotent)."""
    global _JSON, _OUT
    out = stream or sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    _JSON = as_json
    _OUT = _Routed(out)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_secrets,
        _personal_keys,
    ]
    renderer: Any
    if as_json:
        processors.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    journal = to_journal(out)
    processors.append(_Prioritised(renderer) if journal else renderer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        # A TextIO in all structlog uses (write, flush), not in its type.
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _OUT)),
        cache_logger_on_first_use=False,
    )
    # Third-party loggers (httpx, uvicorn, apscheduler) speak stdlib logging.
    handler = logging.StreamHandler(_OUT)
    text = "%(levelname)s %(name)s %(message)s"
    handler.setFormatter(_PrioritisedFormatter(text) if journal else logging.Formatter(text))
    logging.basicConfig(level=max(_LEVELS[level], logging.WARNING), handlers=[handler], force=True)


# The syslog priorities journald reads from a "<N>" line prefix (sd-daemon(3)): without
# them every line is stored at the stream's level and `journalctl -p err` finds nothing.
_PRIORITIES = {"critical": 2, "error": 3, "exception": 3, "warning": 4, "info": 6, "debug": 7}


def to_journal(out: TextIO) -> bool:
    """Return True when ``out`` is systemd's journal stream ($JOURNAL_STREAM = dev:inode).

    Compared with the stream itself, as systemd.exec(5) asks: a child whose output
    was redirected elsewhere inherits the variable but must not write prefixes.
    """
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        stat = os.fstat(out.fileno())
    except (OSError, ValueError):  # io.UnsupportedOperation is a ValueError (no fd)
        return False
    return (stat.st_dev, stat.st_ino) == (int(device), int(inode))


class _Prioritised:
    """A structlog renderer whose lines start with their journald priority."""

    def __init__(self, renderer: Any) -> None:
        self.renderer = renderer

    def __call__(self, logger: Any, name: str, event: dict[str, Any]) -> str:
        priority = _PRIORITIES.get(str(event.get("level", name)), 6)
        return f"<{priority}>{self.renderer(logger, name, event)}"


class _PrioritisedFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"<{_PRIORITIES.get(record.levelname.lower(), 6)}>{super().format(record)}"


_JSON = False  # whether configure() chose JSON lines


def as_json() -> bool:
    """Return True when configure() chose JSON lines (a machine reads them: no bars)."""
    return _JSON


class _Routed(io.TextIOBase):
    """The log stream: ``out``, or while a progress bar is shown, the bar's console.

    A line written straight to the terminal lands wherever the bar left the cursor and
    the bar's next redraw overwrites it; printed through the bar's console it goes above
    the bar, whole. Whole lines only: a line's parts may come in several writes.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.console: Console | None = None
        self._partial = ""

    def write(self, text: str) -> int:
        console = self.console
        if console is None:
            return self.out.write(text)
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            # soft_wrap: the terminal wraps a long line; rich inserting newlines would
            # split it as badly as the bar did.
            console.print(Text.from_ansi(line), soft_wrap=True, highlight=False)
        return len(text)

    def flush(self) -> None:
        if self.console is None:
            self.out.flush()

    def isatty(self) -> bool:
        return self.out.isatty()

    def fileno(self) -> int:
        return self.out.fileno()


_OUT = _Routed(sys.stderr)


@contextmanager
def through(console: Console) -> Iterator[None]:
    """Print log lines through ``console`` (a progress bar's) while the block runs.

    Only when the logs go to a terminal: logs sent to a file or a pipe stay there.
    """
    routed = _OUT
    if not routed.isatty() or routed.console is not None:
        yield
        return
    routed.out.flush()
    routed.console = console
    try:
        yield
    finally:
        routed.console = None
        if routed._partial:
            routed.out.write(routed._partial)
            routed._partial = ""


def fatal(message: str, exit_code: int) -> None:
    """Report why the command ends: a JSON log line in JSON mode, plain text otherwise.

    A log shipper reads only JSON lines; a person at a terminal reads text.
    """
    if _JSON:
        structlog.get_logger("syncd").error("syncd.fatal", reason=message, exit_code=exit_code)
    else:
        prefix = "<3>" if to_journal(sys.stderr) else ""
        print(f"{prefix}syncd: {message}", file=sys.stderr)


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


def _personal_keys(_: Any, level: str, event: dict[str, Any]) -> dict[str, Any]:
    # A lead key that is an e-mail address or a phone number (a CRM keyed by mobile
    # number) is personal data: info and warning lines name it by its hash
    # (syncd.core.reasons.shown_key); debug lines keep it.
    if event.get("level", level) not in SHARED_LEVELS:
        return event
    key = event.get("key")
    if isinstance(key, str):
        event["key"] = shown_key(key)
    keys = event.get("keys")
    if isinstance(keys, list | tuple):
        event["keys"] = [shown_key(k) if isinstance(k, str) else k for k in keys]
    return event


def bind(**values: Any) -> None:
    structlog.contextvars.bind_contextvars(**values)
