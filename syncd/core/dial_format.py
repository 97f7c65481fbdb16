"""A sink's ``dial_format`` setting: how a trunk wants a number dialled (e164, 00,
national, prefix:<digits>). Parsed here, without the phone library, so that loading a
configuration does not load it; ``core.phones.format_dial`` dials by it."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DialFormat:
    style: str  # e164 | 00 | national | prefix
    prefix: str = ""


def parse_dial_format(value: str) -> DialFormat:
    """Return the parsed ``dial_format`` setting or raise ValueError naming the choices."""
    if value in ("e164", "00", "national"):
        return DialFormat(value)
    if value.startswith("prefix:") and re.fullmatch(r"[0-9*#]{0,8}", value[7:]):
        return DialFormat("prefix", value[7:])
    raise ValueError(
        "must be one of e164, 00, national, prefix:<digits> (e.g. prefix:011), got " + repr(value)
    )
