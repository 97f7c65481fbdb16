"""What a PostgreSQL CRM installs so that a change of its leads wakes syncd's pull at once.

A statement-level trigger on the CRM's table calls ``pg_notify(channel, '')``: one
notification per statement however many rows it touched, and an empty payload, so
no lead's data ever travels on the channel (anyone who may LISTEN on the database
could read it). PostgreSQL folds identical notifications of one transaction into one
and delivers them only at its commit: the pull that wakes sees the rows.

Pure text: `syncd sql trigger` prints it for the CRM's DBA to review and run;
syncd never changes the CRM's schema itself.
"""

from __future__ import annotations

import re

# An unquoted PostgreSQL identifier (a channel is one): lower case, at most 63 bytes.
CHANNEL = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")
_FROM = re.compile(r"\bFROM\s+([A-Za-z_][A-Za-z0-9_$.]*)", re.IGNORECASE)
_MORE_TABLES = re.compile(r"\bJOIN\b|\bFROM\s+[^\s,()]+\s*(?:(?:AS\s+)?\w+\s*)?,", re.IGNORECASE)


class TriggerError(ValueError):
    """The trigger cannot be written as asked (a table that is not a plain name)."""


def default_channel(source: str) -> str:
    """Return the channel a source listens on when ``listen = true``: ``syncd_<name>``."""
    return "syncd_" + re.sub(r"[^a-z0-9_]", "_", source.lower())[:56]


def table_of(query: str) -> str | None:
    """Return the one table a source's query reads, or None when it reads several (a
    join) or none is plain: the operator then names the table to watch."""
    if _MORE_TABLES.search(query):
        return None
    found = {m.group(1) for m in _FROM.finditer(query)}
    if len(found) != 1:
        return None
    [table] = found
    return table if _TABLE.match(table) else None


def trigger_sql(source: str, channel: str, table: str) -> str:
    """Return the SQL that makes every change to ``table`` notify ``channel``."""
    if not CHANNEL.match(channel):
        raise TriggerError(f"channel {channel!r} is not a lower-case PostgreSQL identifier")
    if not _TABLE.match(table):
        raise TriggerError(f"table {table!r}: give a plain name, optionally schema.table")
    base = channel.removeprefix("syncd_") or channel
    function = f"syncd_notify_{base}"[:63]
    trigger = f"syncd_wake_{base}"[:63]
    return f"""\
-- syncd source {source!r}: wake its pull when {table} changes (review, then run as the
-- table's owner). One notification per statement, empty payload: no lead data is sent.
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{channel}', '');
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS {trigger} ON {table};
CREATE TRIGGER {trigger}
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION {function}();

-- To remove it: DROP TRIGGER {trigger} ON {table}; DROP FUNCTION {function}();
"""
